"""Reliability with real processes and real signals: SIGKILL the gateway at random moments
under sustained ingest; no acknowledged reading is lost and none reaches upstream twice.

The gateway is `tests/gateway/harness.py`: the real Agent, store and forwarder, fed by a
test-only UDP link (`UDPJsonLink`) and forwarding to a file upstream, started, killed and
checked by tests/gateway/crash_harness.py as in test_ingest_crash_coap.py. `Feeder` plays the
nodes: each sends its readings one at a time and resends the same reading (same sequence
number, so the same reading id) until the gateway acknowledges it, as a node keeps a reading
in its buffer until acked.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from tests.gateway.crash_harness import GatewayProcess, check_delivered

TRIALS = 20
NODES = [f"n{i:02d}" for i in range(16)]
SEED = int(os.environ.get("CRASH_SEED", "5683"))
LINK = "[links.coap]\nenabled = false\n"  # the harness's UDPJsonLink instead


async def start(gateway: GatewayProcess) -> int:
    """Start a life; the port its UDPJsonLink bound."""
    (gateway.data / "feeder.port").unlink(missing_ok=True)
    await gateway.start()
    return int((gateway.data / "feeder.port").read_text())


class Feeder(asyncio.DatagramProtocol):
    """The nodes: stop-and-wait per node, resending a reading until it is acknowledged."""

    def __init__(self) -> None:
        self.next_seq = dict.fromkeys(NODES, 0)
        self.acked: set[str] = set()
        self.waiting: dict[tuple[str, int], asyncio.Future[None]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.stopping = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = json.loads(data)
        if "ack" in reply:
            node, seq = reply["ack"]
            self.acked.add(f"{node}:{seq}:0")
            future = self.waiting.get((node, seq))
            if future is not None and not future.done():
                future.set_result(None)

    async def node(self, node: str) -> None:
        loop = asyncio.get_running_loop()
        # A flag, not only cancellation: on Python 3.11 `wait_for` swallows a cancel that
        # lands just as the ack arrives, and the node would go on sending.
        while not self.stopping.is_set():
            seq = self.next_seq[node]
            future = self.waiting[(node, seq)] = loop.create_future()
            message = {"node": node, "seq": seq, "alarm": seq % 10 == 0}
            assert self.transport is not None
            self.transport.sendto(json.dumps(message).encode())
            try:
                await asyncio.wait_for(asyncio.shield(future), 0.3)
            except TimeoutError:
                continue  # no ack: the node keeps the reading and sends it again
            finally:
                self.waiting.pop((node, seq), None)
            self.next_seq[node] = seq + 1

    async def run(self, port: int, seconds: float = 3600.0) -> None:
        """Feed until `stop()` or `seconds`; every node task is finished on return."""
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, remote_addr=("127.0.0.1", port)
        )
        self.transport = transport
        tasks = [asyncio.create_task(self.node(n)) for n in NODES]
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait([stop], timeout=seconds)
        finally:  # also when this is cancelled: the nodes of one trial never outlive it
            self.stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, stop, return_exceptions=True)
            transport.close()

    def stop(self) -> None:
        self.stopping.set()


def test_sigkill_under_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    gateway = GatewayProcess(tmp_path, NODES, link=LINK)
    feeder = Feeder()

    async def trials() -> list[float]:
        kills = []
        for _ in range(TRIALS):
            port = await start(gateway)
            # Kill while readings arrive, are committed, acknowledged and forwarded.
            feeding = asyncio.create_task(feeder.run(port))
            kills.append(await gateway.kill_at_random(rng, 0.05, 0.6))
            feeder.stop()
            await feeding
        # A last life: more ingest, then everything acknowledged must reach upstream.
        port = await start(gateway)
        await feeder.run(port, 0.5)
        await gateway.drain(feeder.acked)
        return kills

    started = time.monotonic()
    kills = gateway.run(trials())
    elapsed = time.monotonic() - started

    assert len(kills) == TRIALS
    assert len(feeder.acked) > 200, "too little ingest to mean anything"
    check_delivered(gateway, feeder.acked, feeder.next_seq, lambda n, s: f"{n}:{s}:0", SEED)
    # The upstream's dedup did absorb resends (a crash between its fsync and the store's
    # delivery mark), at most one batch in flight per crash.
    resent = sum(n - 1 for n in gateway.upstream_attempts().values())
    assert resent <= TRIALS * 20
    assert gateway.wal_checkpointed()
    print(
        f"\n{TRIALS} SIGKILLs in {elapsed:.1f} s: {len(feeder.acked)} readings acknowledged, "
        f"all upstream once; {resent} resends absorbed by upstream dedup"
    )


def test_sigterm_flushes_and_exits_cleanly(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, NODES, link=LINK)
    feeder = Feeder()

    async def run() -> int:
        port = await start(gateway)
        await feeder.run(port, 0.3)
        code = await gateway.stop(signal.SIGTERM)
        assert "STOPPING=1" in gateway.notifications()
        return code

    assert gateway.run(run()) == 0, gateway.logs()
    assert feeder.acked and feeder.acked <= gateway.stored()
    assert gateway.wal_checkpointed()

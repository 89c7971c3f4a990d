"""Reliability with real processes and real signals: SIGKILL the gateway at random moments
under sustained ingest; no acknowledged reading is lost and none reaches upstream twice.

The gateway is `tests/gateway/harness.py`: the real Agent, store and forwarder, fed by a
test-only UDP link (`UDPJsonLink`) and forwarding to a file upstream. `Feeder` plays the
nodes: each sends its readings one at a time and resends the same reading (same sequence
number, so the same reading id) until the gateway acknowledges it, as a node keeps a reading
in its buffer until acked. To run this against the real CoAP link later, start the harness
with that link and give `Feeder` a CoAP+OSCORE client in `send`; the checks stay as they are.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway import registry
from gateway.registry import Node
from gateway.store import connect
from gateway.store.db import apply_schema

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 20
NODES = [f"n{i:02d}" for i in range(16)]
SEED = int(os.environ.get("CRASH_SEED", "5683"))


class Gateway:
    """One gateway process at a time on the same data folder, watched through sd_notify."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            'data_dir = "data"\n'
            "[links.coap]\nenabled = false\n"
            "[http]\nenabled = false\n"
            "[sinks.spool]\nenabled = false\n"
            "[forwarding]\nbatch_size = 20\nbatch_time_s = 0.02\n"
            "retry_base_s = 0.05\nretry_max_s = 0.2\ndrain_max_rate = 100000\n"
            '[logging]\nlevel = "WARNING"\n'
        )
        self.upstream = tmp_path / "upstream.jsonl"
        self.notify_path = tmp_path / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.setblocking(False)
        self.log = (tmp_path / "gateway.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.data.mkdir()
        conn = connect(self.data / "gateway.db")
        apply_schema(conn, [registry.SCHEMA])
        for node in NODES:
            registry.add_node(conn, Node(node, "leak", "coap"))
        conn.close()

    async def start(self) -> int:
        (self.data / "feeder.port").unlink(missing_ok=True)
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.gateway.harness", str(self.config), str(self.upstream)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 20
        while True:
            try:
                message = (await asyncio.wait_for(loop.sock_recv(self.notify, 4096), 0.2)).decode()
            except TimeoutError:
                message = ""
            if "READY=1" in message:
                return int((self.data / "feeder.port").read_text())
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway did not start:\n{self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "gateway.log").read_text(errors="replace")[-3000:]

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.to_thread(self.proc.wait, 20)


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


def upstream_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_under_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    gateway = Gateway(tmp_path)
    feeder = Feeder()

    async def trials() -> list[float]:
        kills = []
        for _ in range(TRIALS):
            port = await gateway.start()
            # Kill while readings arrive, are committed, acknowledged and forwarded.
            moment = rng.uniform(0.05, 0.6)
            feeding = asyncio.create_task(feeder.run(port))
            await asyncio.sleep(moment)
            assert await gateway.stop(signal.SIGKILL) == -signal.SIGKILL
            kills.append(moment)
            feeder.stop()
            await feeding
        # A last life: more ingest, then everything acknowledged must reach upstream.
        port = await gateway.start()
        await feeder.run(port, 0.5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ids = {line["id"] for line in upstream_lines(gateway.upstream)}
            if feeder.acked <= ids:
                break
            await asyncio.sleep(0.1)
        assert await gateway.stop(signal.SIGTERM) == 0, gateway.logs()
        return kills

    started = time.monotonic()
    kills = asyncio.run(trials())
    elapsed = time.monotonic() - started

    lines = upstream_lines(gateway.upstream)
    ids = [line["id"] for line in lines]
    copies = Counter(ids)
    assert len(kills) == TRIALS
    assert len(feeder.acked) > 200, "too little ingest to mean anything"
    # No acknowledged reading lost...
    assert feeder.acked - set(ids) == set(), f"seed {SEED}: lost {feeder.acked - set(ids)}"
    # ...none upstream twice...
    assert [i for i, n in copies.items() if n > 1] == []
    # ...nothing invented, and each node's readings arrived in order.
    sent = {f"{n}:{s}:0" for n, top in feeder.next_seq.items() for s in range(top + 1)}
    assert set(ids) <= sent
    for node in NODES:
        seqs = [line["seq"] for line in lines if line["node"] == node]
        assert seqs == sorted(seqs), node
    # The upstream's dedup did absorb resends (a crash between its fsync and the store's
    # delivery mark), at most one batch in flight per crash.
    attempts = Counter((gateway.upstream.parent / "upstream.jsonl.attempts").read_text().split())
    resent = sum(n - 1 for n in attempts.values())
    assert resent <= TRIALS * 20
    # The store agrees: everything acknowledged is there, and nothing is left to forward.
    with sqlite3.connect(gateway.data / "gateway.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT reading_id FROM readings")}
        pending = conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
    assert feeder.acked <= stored
    assert pending == 0
    # The orderly stop checkpointed the WAL into the main file.
    wal = gateway.data / "gateway.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    print(
        f"\n{TRIALS} SIGKILLs in {elapsed:.1f} s: {len(feeder.acked)} readings acknowledged, "
        f"all upstream once; {resent} resends absorbed by upstream dedup"
    )


def test_sigterm_flushes_and_exits_cleanly(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path)
    feeder = Feeder()

    async def run() -> int:
        port = await gateway.start()
        await feeder.run(port, 0.3)
        code = await gateway.stop(signal.SIGTERM)
        messages = []
        while True:
            try:
                messages.append(gateway.notify.recv(4096).decode())
            except BlockingIOError:
                break
        assert "STOPPING=1" in messages
        return code

    assert asyncio.run(run()) == 0, gateway.logs()
    with sqlite3.connect(gateway.data / "gateway.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT reading_id FROM readings")}
    assert feeder.acked and feeder.acked <= stored
    wal = gateway.data / "gateway.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0

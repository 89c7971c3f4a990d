"""SIGKILL the gateway at random moments while nodes post OSCORE-protected uplinks to its REAL
CoAP link; no reading acknowledged with a 2.04 is ever lost, and none reaches upstream twice.

The gateway is the real Agent with its configured CoAP link (aiocoap + OSCORE, the store, the
forwarder), run by this module as a process (`python -m tests.gateway.test_ingest_crash_coap
CONFIG UPSTREAM`) and forwarding to tests/gateway/harness.py's `FileUpstream`, which
deduplicates on the reading id as the city platform does and logs every attempt.

The nodes are CPython asyncio tasks built on our protocol/ code (protocol.oscore and
oscore_client, the code the firmware runs), one UDP socket each, stop-and-wait as the firmware:
a reading (with its record counter `seq`, so its id is `<node>:<seq>`) goes in one confirmable
POST; a missing answer means the same datagram again (a CoAP retransmission); after a crash the
restarted gateway, whose replay window was not written back, answers with a protected 4.01
Echo and the node repeats under a fresh sequence number: same reading, same id, a new OSCORE
message. Only a verified 2.04 counts as acknowledged.
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
from gateway.security import NodeKeys, write_node_context
from gateway.store import connect
from gateway.store.db import apply_schema
from protocol import cbor, coap, oscore, schema
from protocol.oscore_client import DONE, SEND, Exchange

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 20
NODES = [f"c{i:02d}" for i in range(12)]
GATEWAY_ID = b"\x01"
SALT = bytes(range(8))
SEED = int(os.environ.get("CRASH_SEED", "7252"))
ANSWER_TIMEOUT_S = 0.25  # the node's retransmission timer (short: loopback, a busy test box)


def kid_of(node: str) -> bytes:
    return bytes((0x40 + NODES.index(node),))


def secret_of(node: str) -> bytes:
    return bytes((kid_of(node)[0] + i) & 0xFF for i in range(16))


class CoAPGateway:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.port = _free_port()
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            'data_dir = "data"\n'
            f'[links.coap]\nenabled = true\nbind = "127.0.0.1"\nport = {self.port}\n'
            "[http]\nenabled = false\n"
            "[sinks.spool]\nenabled = false\n"
            "[forwarding]\nbatch_size = 20\nbatch_time_s = 0.02\n"
            "retry_base_s = 0.05\nretry_max_s = 0.2\ndrain_max_rate = 100000\n"
            '[logging]\nlevel = "ERROR"\n'
        )
        self.upstream = tmp_path / "upstream.jsonl"
        self.notify_path = tmp_path / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.setblocking(False)
        self.log = (tmp_path / "gateway.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.data.mkdir()
        for node in NODES:
            keys = NodeKeys(kid_of(node), secret_of(node), SALT)
            write_node_context(self.data / "oscore", node, keys, GATEWAY_ID)
        conn = connect(self.data / "gateway.db")
        apply_schema(conn, [registry.SCHEMA])
        for node in NODES:
            registry.add_node(conn, Node(node, "leak", "coap"))
        conn.close()

    async def start(self) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), PYTHONPATH=str(ROOT))
        module = "tests.gateway.test_ingest_crash_coap"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, str(self.config), str(self.upstream)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 30
        while True:
            try:
                message = (await asyncio.wait_for(loop.sock_recv(self.notify, 4096), 0.2)).decode()
            except TimeoutError:
                message = ""
            if "READY=1" in message:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway did not start:\n{self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "gateway.log").read_text(errors="replace")[-3000:]

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.to_thread(self.proc.wait, 30)


class NodeSocket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(data)


class Nodes:
    """Stop-and-wait nodes; `acked` holds every reading id the gateway acknowledged."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.contexts = {
            n: oscore.SecurityContext(secret_of(n), kid_of(n), GATEWAY_ID, SALT) for n in NODES
        }
        self.next_seq = dict.fromkeys(NODES, 0)
        self.acked: set[str] = set()
        self.echo_rounds = 0
        self.retransmissions = 0

    def request(self, node: str, seq: int) -> bytes:
        body = cbor.dumps(
            schema.encode_uplink({"type": "leak", "volume_l": seq, "flow_lh": 0, "seq": seq})
        )
        mid = self.rng.randrange(0x10000)
        options = coap.uri_path_options("u")
        options.append((coap.CONTENT_FORMAT, coap.uint_bytes(coap.FORMAT_CBOR)))
        return coap.Message(
            coap.CON, coap.POST, mid, mid.to_bytes(2, "big"), options, body
        ).encode()

    async def node(self, node: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            NodeSocket, remote_addr=("127.0.0.1", port)
        )
        try:
            while True:
                seq = self.next_seq[node]
                if await self.exchange(node, seq, transport, protocol):
                    self.acked.add(f"{node}:{seq}")
                    self.next_seq[node] = seq + 1
        finally:
            transport.close()

    async def exchange(
        self, node: str, seq: int, transport: asyncio.DatagramTransport, sock: NodeSocket
    ) -> bool:
        """One reading until a verified answer (True for 2.04) or a failed exchange."""
        exchange = Exchange(self.contexts[node], self.request(node, seq))
        out: bytes | None = exchange.first()
        while True:
            if out is not None:
                transport.sendto(out)
                sent = out
            try:
                # Not `wait_for`: on Python 3.11 it swallows a cancellation that lands just as
                # the answer arrives, and `run_for` would wait forever for this node to stop.
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    data = await sock.inbox.get()
            except TimeoutError:
                self.retransmissions += 1
                out = sent  # the same datagram again: a CoAP retransmission
                continue
            message = coap.decode(data)
            if message.token != coap.decode(sent).token:
                continue  # a late answer to an earlier request
            if message.type == coap.CON:
                transport.sendto(coap.ack_for(message).encode())
            try:
                action, result = exchange.on_response(data, self.rng.randrange(0x10000))
            except ValueError:
                return False  # the exchange failed: the reading stays, a new exchange follows
            if action == DONE:
                return bool(coap.decode(result).code == coap.CHANGED)
            if action == SEND:
                self.echo_rounds += exchange.echo_retried
                out = result
            else:
                out = None

    async def run_for(self, port: int, seconds: float) -> None:
        tasks = [asyncio.create_task(self.node(n, port)) for n in NODES]
        try:
            await asyncio.sleep(seconds)
        finally:  # also when this is cancelled: a node must never run twice
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pending_count(gateway: CoAPGateway) -> int:
    with sqlite3.connect(gateway.data / "gateway.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])


def upstream_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_under_coap_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    gateway = CoAPGateway(tmp_path)
    nodes = Nodes(rng)

    async def trials() -> None:
        # The nodes keep going through every crash and restart, retransmitting to a dead port
        # and then to the next gateway, as nodes in the field would.
        feeding = asyncio.create_task(nodes.run_for(gateway.port, 3600.0))
        for _ in range(TRIALS):
            await gateway.start()
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            assert await gateway.stop(signal.SIGKILL) == -signal.SIGKILL
            await asyncio.sleep(rng.uniform(0.0, 0.3))  # down for a moment
        # A last life: more ingest, then all that was acknowledged must reach upstream.
        await gateway.start()
        await asyncio.sleep(0.5)
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        # ...and whatever else was committed (readings whose 2.04 the cancelled nodes never
        # saw are stored too, and go upstream like the rest)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            upstream = {line["id"] for line in upstream_lines(gateway.upstream)}
            if nodes.acked <= upstream and pending_count(gateway) == 0:
                break
            await asyncio.sleep(0.1)
        assert await gateway.stop(signal.SIGTERM) == 0, gateway.logs()

    started = time.monotonic()
    asyncio.run(trials())
    elapsed = time.monotonic() - started

    lines = upstream_lines(gateway.upstream)
    ids = [line["id"] for line in lines]
    assert len(nodes.acked) > 100, "too little ingest to mean anything"
    assert nodes.echo_rounds >= TRIALS // 2, "restarts should have asked for Echo"
    # No acknowledged reading lost, none upstream twice, nothing invented, in order per node.
    assert nodes.acked - set(ids) == set(), f"seed {SEED}: lost {nodes.acked - set(ids)}"
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    sent = {f"{n}:{s}" for n, top in nodes.next_seq.items() for s in range(top + 1)}
    assert set(ids) <= sent
    for node in NODES:
        seqs = [line["seq"] for line in lines if line["node"] == node]
        assert seqs == sorted(seqs), node
    with sqlite3.connect(gateway.data / "gateway.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT reading_id FROM readings")}
        pending = conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
    assert nodes.acked <= stored and pending == 0
    # The orderly stop wrote every used context's replay window back.
    for node in NODES:
        sequence = json.loads((gateway.data / "oscore" / node / "sequence.json").read_text())
        assert sequence["received"] != "unknown", node
    print(
        f"\n{TRIALS} SIGKILLs of the CoAP gateway in {elapsed:.1f} s: {len(nodes.acked)} "
        f"readings acknowledged, all upstream once; {nodes.echo_rounds} Echo rounds, "
        f"{nodes.retransmissions} retransmissions"
    )


def main(argv: list[str]) -> None:
    """The gateway process of this test: the real Agent and CoAP link, a file upstream."""
    from gateway.agent import Agent
    from gateway.config import load
    from tests.gateway.harness import FileUpstream

    config = load(Path(argv[0]))
    agent = Agent(config, sinks=[FileUpstream(Path(argv[1]))])
    asyncio.run(agent.run())


if __name__ == "__main__":
    main(sys.argv[1:])

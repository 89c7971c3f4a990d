"""SIGKILL the gateway at random moments while nodes post OSCORE-protected uplinks to its REAL
CoAP link; no reading acknowledged with a 2.04 is ever lost, and none reaches upstream twice.

The gateway is the real Agent with its configured CoAP link (aiocoap + OSCORE, the store, the
forwarder), run as a process (`python -m tests.gateway.harness CONFIG UPSTREAM
--configured-links`) and forwarding to that module's `FileUpstream`, which deduplicates on the
reading id as the city platform does and logs every attempt. Starting, killing and the checks
afterwards are tests/gateway/crash_harness.py's, shared with test_crash.py.

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
import socket
import time
from pathlib import Path
from typing import Any

from gateway.security import NodeKeys, write_node_context
from protocol import cbor, coap, oscore, schema
from protocol.oscore_client import DONE, SEND, Exchange
from tests.gateway.crash_harness import GatewayProcess, check_delivered

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


def coap_gateway(tmp_path: Path, port: int) -> GatewayProcess:
    """The harness gateway with its real CoAP link on `port`, every node's context written."""
    gateway = GatewayProcess(
        tmp_path,
        NODES,
        link=f'[links.coap]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\n',
        log_level="ERROR",
        harness_args=["--configured-links"],
    )
    for node in NODES:
        keys = NodeKeys(kid_of(node), secret_of(node), SALT)
        write_node_context(gateway.data / "oscore", node, keys, GATEWAY_ID)
    return gateway


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


def test_sigkill_under_coap_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    port = _free_port()
    gateway = coap_gateway(tmp_path, port)
    nodes = Nodes(rng)

    async def trials() -> None:
        # The nodes keep going through every crash and restart, retransmitting to a dead port
        # and then to the next gateway, as nodes in the field would.
        feeding = asyncio.create_task(nodes.run_for(port, 3600.0))
        for _ in range(TRIALS):
            await gateway.start()
            await gateway.kill_at_random(rng, 0.05, 0.5)
            await asyncio.sleep(rng.uniform(0.0, 0.3))  # down for a moment
        # A last life: more ingest, then all that was acknowledged must reach upstream...
        await gateway.start()
        await asyncio.sleep(0.5)
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        # ...and whatever else was committed (readings whose 2.04 the cancelled nodes never
        # saw are stored too, and go upstream like the rest)
        await gateway.drain(nodes.acked)

    started = time.monotonic()
    gateway.run(trials())
    elapsed = time.monotonic() - started

    assert len(nodes.acked) > 100, "too little ingest to mean anything"
    assert nodes.echo_rounds >= TRIALS // 2, "restarts should have asked for Echo"
    check_delivered(gateway, nodes.acked, nodes.next_seq, lambda n, s: f"{n}:{s}", SEED)
    # The orderly stop wrote every used context's replay window back.
    for node in NODES:
        sequence = json.loads((gateway.data / "oscore" / node / "sequence.json").read_text())
        assert sequence["received"] != "unknown", node
    print(
        f"\n{TRIALS} SIGKILLs of the CoAP gateway in {elapsed:.1f} s: {len(nodes.acked)} "
        f"readings acknowledged, all upstream once; {nodes.echo_rounds} Echo rounds, "
        f"{nodes.retransmissions} retransmissions"
    )

"""A tiny gateway stand-in for the node tests, run as its own process (so it can be SIGKILLed):

    python -m tests.firmware.node_peer coap KEYS_DIR PORT LOG DOWNLINKS
    python -m tests.firmware.node_peer lora KEYS_DIR MEDIUM_PORT LOG DOWNLINKS X Y SF [SCALE]

`coap`: aiocoap with OscoreSiteWrapper serving POST /u on 127.0.0.1:PORT. `lora`: a radio on
the simulated medium at (X, Y), listening on 868.1 MHz SF/125 kHz and answering in the node's
RX window through gateway.security's frame functions: its answer starts RX_DELAY_MS after the
uplink ended (firmware/node/loralink.py), on the medium's clock (SCALE: its --time-scale).
Either way, every accepted uplink is decoded with cbor2 + protocol.schema and appended to LOG
as one JSON line {"node", "seqno", "records", "con"} ("con": a confirmable LoRa frame; None
over UDP), and the response carries the downlink records waiting in the JSON file DOWNLINKS (a list;
emptied once sent). Prints READY once listening.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, cast

import aiocoap
import cbor2
from aiocoap import resource
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from gateway.security import (
    FrameRefused,
    load_credentials,
    protect_reply,
    release,
    request_seqno,
    require_node,
    unprotect_frame,
)
from protocol import schema

RX_DELAY_MS = 1000  # firmware/node/loralink.py RX_DELAY_MS (test_node_lora checks they agree)


class Peer:
    def __init__(self, log: Any, downlinks: Path) -> None:
        self.log = log
        self.downlinks = downlinks

    def accept(
        self, node: str, seqno: int | None, payload: bytes, confirmable: bool | None = None
    ) -> bytes:
        records = schema.decode_uplink(cbor2.loads(payload))
        entry = {"node": node, "seqno": seqno, "records": records, "con": confirmable}
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()
        os.fsync(self.log.fileno())
        pending = json.loads(self.downlinks.read_text()) if self.downlinks.exists() else []
        if not pending:
            return b""
        self.downlinks.write_text("[]")
        if pending == ["garbage"]:
            return b"\xff\x00not cbor"
        return bytes(cbor2.dumps(schema.encode_downlink(pending)))


class Uplinks(resource.Resource):  # type: ignore[misc]
    def __init__(self, peer: Peer) -> None:
        super().__init__()
        self.peer = peer

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        node = require_node(request)
        answer = self.peer.accept(node, request_seqno(request), request.payload)
        return aiocoap.Message(code=aiocoap.CHANGED, payload=answer)


async def serve_coap(keys: Path, port: int, peer: Peer, stop: asyncio.Event) -> None:
    credentials = load_credentials(keys)
    site = resource.Site()
    site.add_resource(["u"], Uplinks(peer))
    context = await aiocoap.Context.create_server_context(
        OscoreSiteWrapper(site, credentials), bind=("127.0.0.1", port)
    )
    print("READY", flush=True)
    await stop.wait()
    await context.shutdown()
    release(credentials)


class LoRaGateway(asyncio.DatagramProtocol):
    def __init__(
        self,
        peer: Peer,
        credentials: Any,
        medium: tuple[str, int],
        pos: list[float],
        sf: int,
        *,
        scale: float = 1.0,
    ) -> None:
        self.channel = {"freq": 868100000, "sf": sf, "bw": 125000}
        self.peer = peer
        self.credentials = credentials
        self.medium = medium
        self.pos = pos
        self.delay_s = RX_DELAY_MS / 1000 / scale
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.listen()

    def send(self, msg: dict[str, Any]) -> None:
        assert self.transport is not None
        msg.update(self.channel, pos=self.pos)
        self.transport.sendto(json.dumps(msg).encode(), self.medium)

    def listen(self) -> None:
        self.send({"op": "listen", "ms": 600000})

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = json.loads(data)
        if msg["op"] == "txdone":
            self.listen()
            return
        if msg["op"] != "rx":
            return
        # the uplink just ended: the answer must start RX_DELAY_MS from now, when the node opens
        # its receiver (answering any earlier or later, it would not hear it)
        due = asyncio.get_running_loop().time() + self.delay_s
        frame = bytes.fromhex(msg["data"])
        try:
            req = unprotect_frame(self.credentials, frame)
        except FrameRefused as e:
            if e.reply is not None:
                self.answer_at(due, e.reply)
            return
        con = req.outer.mtype == aiocoap.CON
        answer = self.peer.accept(req.node_id, req.seqno, req.request.payload, con)
        reply = aiocoap.Message(code=aiocoap.CHANGED, payload=answer)
        self.answer_at(due, protect_reply(req, reply))

    def answer_at(self, due: float, frame: bytes) -> None:
        asyncio.get_running_loop().call_at(
            due, self.send, {"op": "tx", "data": frame.hex(), "t": 0}
        )


async def serve_lora(
    keys: Path,
    port: int,
    peer: Peer,
    stop: asyncio.Event,
    *,
    pos: list[float],
    sf: int,
    scale: float = 1.0,
) -> None:
    credentials = load_credentials(keys)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: LoRaGateway(peer, credentials, ("127.0.0.1", port), pos, sf, scale=scale),
        local_addr=("127.0.0.1", 0),
    )
    print("READY", flush=True)
    await stop.wait()
    transport.close()
    release(credentials)


async def main(argv: list[str]) -> None:
    mode, keys, port, log_path, downlinks = argv[:5]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with Path(log_path).open("a") as log:
        peer = Peer(log, Path(downlinks))
        if mode == "coap":
            await serve_coap(Path(keys), int(port), peer, stop)
        else:
            pos = [float(argv[5]), float(argv[6])]
            scale = float(argv[8]) if len(argv) > 8 else 1.0
            await serve_lora(
                Path(keys), int(port), peer, stop, pos=pos, sf=int(argv[7]), scale=scale
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

"""A mains-powered lamp (kind lighting) on the sim board at real speed: the PIR through the
board's control socket lights the lamp within 100 ms; the presence event reaches the gateway;
the gateway's OSCORE-protected wake-up (aiocoap client, Echo round after the lamp's boot)
brings the lamp up; the lamp keeps listening and never sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import aiocoap
import cbor2
import pytest
from aiocoap import oscore

from hil.simboard import SimNode
from protocol import coap, schema
from protocol import oscore as node_oscore
from tests.firmware.node_support import (
    GATEWAY_KID,
    SALT,
    SECRET,
    MediumProcess,
    Peer,
    free_port,
    need_micropython,
    write_keys,
)

EPOCH = 1_700_000_000


class Lamp:
    def __init__(self, tmp: Path, oscore_cfg: dict[str, Any], gateway_port: int) -> None:
        self.control = free_port()
        self.listen = free_port()
        self.node = SimNode(tmp / "lamp")
        self.node.config(
            {
                "node_id": "lamp-1",
                "kind": "lighting",
                "link": "coap",
                "coap": {"host": "127.0.0.1", "port": gateway_port, "listen_port": self.listen},
                "oscore": oscore_cfg,
                "kind_config": {
                    "min_level_pct": 20,
                    "max_level_pct": 100,
                    "hold_s": 1,
                    "fade_ms": 300,
                },
            }
        )
        self.node.board(speed=1, epoch_s=EPOCH, control_port=self.control)
        self.node.scenario({"start": EPOCH, "signals": {"pin:39": 0}})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2)

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendto(json.dumps(msg).encode(), ("127.0.0.1", self.control))

    def duty(self) -> int | None:
        for _ in range(10):  # the board may not have bound its control socket yet
            self.send({"get": "outputs"})
            try:
                reply = json.loads(self.sock.recvfrom(65536)[0])
                break
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.2)
        else:
            raise AssertionError("the board's control socket does not answer")
        value = reply["outputs"].get("pwm:25")
        return None if value is None else int(value)

    def settled(self, timeout: float = 5.0) -> int:
        """The duty once the start-up fade is over (two readings 300 ms apart agree)."""
        deadline = time.monotonic() + timeout
        last = self.duty()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.duty()
            if now is not None and now == last and now > 0:
                return now
            last = now
        raise AssertionError("the lamp never settled")

    def wait_duty(self, check: Any, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            duty = self.duty()
            if duty is not None and check(duty):
                return duty
            time.sleep(0.005)
        raise AssertionError(f"lamp duty {self.duty()} never matched")


@pytest.fixture
def lamp_and_gateway(tmp_path: Path) -> Iterator[tuple[Lamp, Peer, Path]]:
    need_micropython()
    keys = tmp_path / "keys"
    oscore_cfg = write_keys(keys, "lamp-1", b"\x02")
    # the gateway's client side of the same context, for the wake-ups (a copy: aiocoap keeps
    # a lock on the folder the server loaded)
    client = tmp_path / "client-keys"
    shutil.copytree(keys / "lamp-1", client, ignore=shutil.ignore_patterns("lock", "sequence*"))
    port = free_port()
    peer = Peer("coap", keys, port, tmp_path)
    lamp = Lamp(tmp_path, oscore_cfg, port)
    lamp.node.start()
    yield lamp, peer, client
    lamp.node.stop()
    peer.stop()


def events(peer: Peer, name: str) -> list[dict[str, Any]]:
    return [r for r in peer.records() if r["type"] == "event" and r["event"] == name]


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_presence_lights_the_lamp_at_once_and_tells_the_gateway(lamp_and_gateway: Any) -> None:
    lamp, peer, _ = lamp_and_gateway
    wait_for(peer.uplinks)  # booted: the first status is in
    resting = lamp.settled()  # min level at night (no time sync yet)
    start = time.monotonic()
    lamp.send({"set": {"pin:39": 1}})
    lamp.wait_duty(lambda d: d > resting, timeout=1.0)
    latency_ms = (time.monotonic() - start) * 1000
    assert latency_ms < 100, latency_ms
    assert lamp.wait_duty(lambda d: d == 65535, timeout=3.0) == 65535  # the fade reached max
    presence = wait_for(lambda: events(peer, "presence"), timeout=2.0)
    assert presence[0]["count"] == 1
    # nobody around any more: after hold_s the lamp fades back to its resting level
    lamp.send({"set": {"pin:39": 0}})
    assert lamp.wait_duty(lambda d: d == resting, timeout=8.0) == resting


async def push(client_keys: Path, port: int, records: list[dict[str, Any]]) -> aiocoap.Message:
    context = await aiocoap.Context.create_client_context()
    try:
        security = oscore.FilesystemSecurityContext(str(client_keys))
        context.client_credentials[f"coap://127.0.0.1:{port}/*"] = security
        payload = cbor2.dumps(schema.encode_downlink(records))
        request = aiocoap.Message(
            code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/d", payload=payload
        )
        return await asyncio.wait_for(context.request(request).response, 10)
    finally:
        await context.shutdown()
        security._destroy()  # aiocoap's own release: store the sequence number, unlock


def test_the_gateway_wakes_the_lamp_through_oscore(lamp_and_gateway: Any) -> None:
    lamp, peer, client_keys = lamp_and_gateway
    wait_for(peer.uplinks)
    resting = lamp.settled()
    command = {"type": "command", "command": "wake", "duration_s": 1}
    response = asyncio.run(push(client_keys, lamp.listen, [command]))
    # the first request after the lamp's boot met an Echo challenge; aiocoap answered it
    assert response.code == aiocoap.CHANGED
    assert lamp.wait_duty(lambda d: d == 65535, timeout=3.0) == 65535
    # a wake-up is not a detection: no presence event goes back to the gateway
    time.sleep(0.3)
    assert events(peer, "presence") == []
    assert lamp.wait_duty(lambda d: d == resting, timeout=6.0) == resting
    # a second push needs no Echo any more, and a bad one is refused without harm
    again = asyncio.run(push(client_keys, lamp.listen, [command]))
    assert again.code == aiocoap.CHANGED
    proc = lamp.node.proc
    assert proc is not None and proc.poll() is None  # still running
    proc.kill()
    output = proc.communicate()[0]
    assert output.count("Echo challenge") == 1  # the first push only
    assert "push refused" not in output


@contextlib.contextmanager
def lora_lamp(tmp_path: Path) -> Iterator[tuple[SimNode, Lamp, MediumProcess, Path]]:
    """Lamp lamp-7 on LoRa in continuous receive on a real-time medium, started: (its sim
    node, its control, the medium, the keys folder)."""
    need_micropython()
    keys = tmp_path / "keys"
    oscore_cfg = write_keys(keys, "lamp-7", b"\x07")
    medium = MediumProcess("--time-scale", "1")
    try:
        control = free_port()
        node = SimNode(tmp_path / "lamp")
        node.config(
            {
                "node_id": "lamp-7",
                "kind": "lighting",
                "link": "lora",
                "oscore": oscore_cfg,
                "kind_config": {"hold_s": 1, "fade_ms": 300},
            }
        )
        node.board(
            speed=1,
            epoch_s=EPOCH,
            control_port=control,
            medium=["127.0.0.1", medium.port],
            position=[0, 0],
        )
        node.scenario({"start": EPOCH, "signals": {}})
        lamp = Lamp.__new__(Lamp)
        lamp.control = control
        lamp.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lamp.sock.settimeout(2)
        node.start()
        try:
            yield node, lamp, medium, keys
        finally:
            node.stop()
    finally:
        medium.stop()


def test_a_lamp_on_lora_hears_the_gateway_in_continuous_receive(tmp_path: Path) -> None:
    """The gateway's push as a LoRa frame (what gateway/links/lora.py sends): a protected CON
    POST /d heard in continuous receive, answered in a frame, Echo round after the boot."""
    with lora_lamp(tmp_path) as (_node, lamp, medium, keys):
        resting = lamp.settled()
        answers = asyncio.run(lora_push(keys / "lamp-7", medium.port))
        assert [a.code for a in answers] == [aiocoap.UNAUTHORIZED, aiocoap.CHANGED]
        assert answers[0].opt.echo is not None  # the challenge after the lamp's boot
        assert lamp.wait_duty(lambda d: d == 65535, timeout=3.0) == 65535
        assert lamp.wait_duty(lambda d: d == resting, timeout=6.0) == resting
        # the lamp's answers went through its duty-cycle ledger and on the air
        frames = medium.stats()["senders"]["0,0"]["M"]["frames"]
    assert frames >= 3  # its boot status, then the two answers


async def lora_push(context_dir: Path, medium_port: int) -> list[aiocoap.Message]:
    """Send POST /d twice if needed (Echo), as a gateway radio at (300, 0) on the medium."""
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[bytes] = asyncio.Queue()

    where = {"pos": [300, 0], "freq": 868100000, "sf": 7, "bw": 125000}

    class GatewayRadio(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: Any) -> None:
            msg = json.loads(data)
            if msg["op"] == "rx":
                frames.put_nowait(bytes.fromhex(msg["data"]))
            elif msg["op"] == "txdone":  # back to receiving: the medium keeps no sender listening
                listen = {"op": "listen", "ms": 5000, **where}
                self.transport.sendto(json.dumps(listen).encode(), addr)

    transport, _ = await loop.create_datagram_endpoint(GatewayRadio, local_addr=("127.0.0.1", 0))
    security = oscore.FilesystemSecurityContext(str(context_dir))
    answers = []
    try:
        echo = None
        for mid in (0x1000, 0x1001):
            message = aiocoap.Message(
                code=aiocoap.POST,
                uri_path=("d",),
                payload=cbor2.dumps(schema.encode_downlink({"type": "command", "command": "wake"})),
            )
            if echo is not None:
                message.opt.echo = echo
            protected, request_id = security.protect(message)
            protected.mtype = aiocoap.CON
            protected.mid = mid
            protected.token = bytes([mid & 0xFF])
            tx = {"op": "tx", **where, "data": protected.encode().hex(), "t": 0}
            transport.sendto(json.dumps(tx).encode(), ("127.0.0.1", medium_port))
            while True:
                frame = await asyncio.wait_for(frames.get(), 5)
                answer = aiocoap.Message.decode(frame)
                if answer.mid == mid and answer.mtype == aiocoap.ACK:
                    break
            plain, _ = security.unprotect(answer, request_id)
            answers.append(plain)
            echo = plain.opt.echo
            if plain.code != aiocoap.UNAUTHORIZED:
                break
    finally:
        transport.close()
        security._destroy()
    return answers


def test_a_lora_lamp_stays_silent_for_frames_that_are_not_its_own(tmp_path: Path) -> None:
    """In continuous receive a lamp hears every node's uplinks and the gateway's pushes to the
    other lamps: it answers none of them (the sub-band's duty cycle is shared) and counts them,
    and still answers the gateway's own push with the Echo round after its boot."""
    with lora_lamp(tmp_path) as (node, lamp, medium, keys):
        lamp.settled()
        heard, answers = asyncio.run(strangers_then_push(keys / "lamp-7", medium.port))
        proc = node.proc
        assert proc is not None and proc.poll() is None
        proc.kill()
        output = proc.communicate()[0]
    assert [a.code for a in answers] == [aiocoap.UNAUTHORIZED, aiocoap.CHANGED]
    # what the lamp put on the air, heard by a radio next to it: the two answers to the
    # gateway's push, nothing for the three strangers' frames
    answered = [m.mid for m in heard if m.mtype == aiocoap.ACK]
    assert 0x1000 in answered and 0x1001 in answered
    assert not set(answered) & set(STRANGER_MIDS), answered
    assert "push refused" not in output
    ignored = [line for line in output.splitlines() if "push: ignored" in line]
    assert [line.split()[3] for line in ignored] == [
        "UnknownContext",  # another node's uplink: its own kid
        "DecryptionFailed",  # a push to another lamp: the gateway's kid, another key
        "NotProtected",  # plain CoAP
    ]
    assert ignored[-1].endswith("(3 so far)")


STRANGER_MIDS = (0x2001, 0x2002, 0x2003)


def stranger_frames() -> list[bytes]:
    body = cbor2.dumps(schema.encode_downlink({"type": "command", "command": "wake"}))
    path_u, path_d = [(coap.URI_PATH, b"u")], [(coap.URI_PATH, b"d")]
    uplink = coap.Message(coap.NON, coap.POST, STRANGER_MIDS[0], b"\x01", path_u, b"\xa0")
    push = coap.Message(coap.CON, coap.POST, STRANGER_MIDS[1], b"\x02", path_d, body)
    plain = coap.Message(coap.CON, coap.POST, STRANGER_MIDS[2], b"\x03", path_d, body)
    neighbour = node_oscore.SecurityContext(SECRET, b"\x08", GATEWAY_KID, SALT)  # a node's uplink
    other_lamp = node_oscore.SecurityContext(bytes(16), GATEWAY_KID, b"\x09", SALT)  # lamp 9's key
    return [
        neighbour.protect_request(uplink.encode()),
        other_lamp.protect_request(push.encode()),
        plain.encode(),
    ]


async def strangers_then_push(
    context_dir: Path, medium_port: int
) -> tuple[list[aiocoap.Message], list[aiocoap.Message]]:
    """Three frames not for the lamp, each sent once the previous one ended, then the gateway's
    push (lora_push); and every frame a radio 10 m from the lamp heard from it meanwhile."""
    loop = asyncio.get_running_loop()
    done: asyncio.Queue[None] = asyncio.Queue()
    from_lamp: asyncio.Queue[aiocoap.Message] = asyncio.Queue()
    channel = {"freq": 868100000, "sf": 7, "bw": 125000}

    class Radio(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            msg = json.loads(data)
            if msg["op"] == "txdone":
                done.put_nowait(None)
            elif msg["op"] == "rx" and msg["from"] == [0, 0]:
                from_lamp.put_nowait(aiocoap.Message.decode(bytes.fromhex(msg["data"])))

    medium = ("127.0.0.1", medium_port)
    stranger, _ = await loop.create_datagram_endpoint(Radio, local_addr=("127.0.0.1", 0))
    bystander, _ = await loop.create_datagram_endpoint(Radio, local_addr=("127.0.0.1", 0))
    heard = []
    try:
        listen = {"op": "listen", "pos": [10, 0], "ms": 60000, **channel}
        bystander.sendto(json.dumps(listen).encode(), medium)
        for frame in stranger_frames():
            tx = {"op": "tx", "pos": [200, 0], "t": 0, "data": frame.hex()}
            stranger.sendto(json.dumps({**tx, **channel}).encode(), medium)
            await asyncio.wait_for(done.get(), 5)  # on the air to its end: the next one
        answers = await lora_push(context_dir, medium_port)
        # the lamp's last answer reached the bystander too: anything it sent before is in
        while not any(m.mid == 0x1001 for m in heard):
            heard.append(await asyncio.wait_for(from_lamp.get(), 5))
    finally:
        stranger.close()
        bystander.close()
    return heard, answers

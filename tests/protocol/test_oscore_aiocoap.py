"""Live OSCORE interop with aiocoap on 127.0.0.1, both halves of ours against an independent peer.

- Our client (protocol.oscore + oscore_client over a UDP socket, inside MicroPython through the
  bridge, and on CPython) against an aiocoap OSCORE server process: exchange, replay, wrong
  key, flipped bit, unknown kid, and Echo recovery after the server is SIGKILLed.
- aiocoap's OSCORE client against a server built on protocol.oscore (run by `micropython` and
  by `python`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiocoap
import pytest

from gateway.security import NodeKeys, write_node_context
from protocol import coap
from tests.support.interp import ROOT, micropython_binary

SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")
SALT = bytes.fromhex("0a0b0c0d0e0f1011")
GATEWAY_ID = b"\x01"
NODE_ID = b"\x07"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr and proc.stderr.read()}")


class AiocoapServer:
    def __init__(self, keys_dir: Path, port: int, log: Path) -> None:
        self.args = [sys.executable, "-m", "tests.support.oscore_aiocoap_server"]
        self.args += [str(keys_dir), str(port), str(log)]
        self.log = log
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_ready(self.proc)

    def stop(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        self.proc = None

    def accepted(self) -> list[str]:
        """Payloads (hex) the resource accepted, in order, one line per acceptance."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line.split()[2] for line in lines]

    def seqnos(self) -> list[int]:
        return [int(line.split()[1]) for line in self.log.read_text().splitlines()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AiocoapServer]:
    keys = tmp_path / "keys"
    write_node_context(keys, "leak-1", NodeKeys(NODE_ID, SECRET, SALT), GATEWAY_ID)
    write_node_context(keys, "bin-2", NodeKeys(b"\x08", bytes(16), SALT), GATEWAY_ID)
    srv = AiocoapServer(keys, free_udp_port(), tmp_path / "accepted.log")
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop(signal.SIGKILL)


def decode(data: bytes | None) -> coap.Message:
    assert data is not None, "no answer"
    return coap.decode(data)


def test_protected_exchange_and_refusals(interp, server: AiocoapServer) -> None:
    udp = interp.module("tests.support.oscore_node")
    port = int(server.args[-2])
    node = udp.UDPNode(port, SECRET, NODE_ID, GATEWAY_ID, SALT)

    assert node.post("r", b"a1") == (coap.CHANGED, b"ok:a1", False, 1)
    assert server.accepted() == ["6131"]

    # The same datagram again from another source port: OSCORE's replay window refuses it
    # (aiocoap answers an unprotected 4.01, RFC 8613 §7.4).
    answer = decode(node.send_raw(node.sent[-1]))
    assert (answer.code, answer.payload) == (coap.UNAUTHORIZED, b"Replay detected")
    assert answer.option(coap.OSCORE) is None

    wrong_key = udp.UDPNode(port, bytes(16), NODE_ID, GATEWAY_ID, SALT)
    answer = decode(node.send_raw(wrong_key.protect("r", b"wrong key")))
    assert (answer.code, answer.payload) == (coap.BAD_REQUEST, b"Decryption failed")

    frame = bytearray(node.protect("r", b"flipped"))
    frame[-3] ^= 0x10
    answer = decode(node.send_raw(bytes(frame)))
    assert (answer.code, answer.payload) == (coap.BAD_REQUEST, b"Decryption failed")

    stranger = udp.UDPNode(port, SECRET, b"\x09", GATEWAY_ID, SALT)
    answer = decode(node.send_raw(stranger.protect("r", b"unknown kid")))
    assert (answer.code, answer.payload) == (coap.UNAUTHORIZED, b"Security context not found")

    # OscoreSiteWrapper passes unprotected requests through; the resource must refuse them.
    plain = coap.Message(coap.CON, coap.POST, 7, b"p", coap.uri_path_options("r"), b"x")
    assert decode(node.send_raw(plain.encode())).code == coap.UNAUTHORIZED

    assert node.post("r", b"a2")[:2] == (coap.CHANGED, b"ok:a2")
    # A slow resource: empty ACK first (Exchange says WAIT), then a separate CON response.
    assert node.post("slow", b"a3") == (coap.CHANGED, b"ok:a3", False, 1)
    assert server.accepted() == ["6131", "6132", "6133"]
    for n in (node, wrong_key, stranger):
        n.close()


def test_echo_recovery_after_sigkill(interp, server: AiocoapServer) -> None:
    udp = interp.module("tests.support.oscore_node")
    port = int(server.args[-2])
    node = udp.UDPNode(port, SECRET, NODE_ID, GATEWAY_ID, SALT)
    assert node.post("r", b"before")[:2] == (coap.CHANGED, b"ok:before")
    before = node.sent[-1]

    server.stop(signal.SIGKILL)  # the replay window in RAM is lost
    server.start()

    # A replay of the old request cannot be judged by a window that is gone: aiocoap answers
    # with a protected 4.01 Echo challenge and does not run the resource.
    answer = decode(node.send_raw(before))
    assert answer.option(coap.OSCORE) is not None
    assert server.accepted() == [b"before".hex()]

    code, payload, echo_retried, sends = node.post("r", b"after")
    assert (code, payload) == (coap.CHANGED, b"ok:after")
    assert echo_retried and sends == 2  # 4.01 Echo, then the repeat with Echo inside

    # The repeat with the right Echo set the new window; everything older is a replay now.
    challenged, repeated = node.sent[-2], node.sent[-1]
    for old in (before, challenged, repeated):
        answer = decode(node.send_raw(old))
        assert (answer.code, answer.payload) == (coap.UNAUTHORIZED, b"Replay detected")
    assert node.post("r", b"after2") == (coap.CHANGED, b"ok:after2", False, 1)

    # Nothing was accepted twice. The resource saw each request's own sequence number
    # (gateway.security.request_seqno): 1 went to the challenged attempt, 2 to its repeat.
    assert server.accepted() == [b"before".hex(), b"after".hex(), b"after2".hex()]
    assert server.seqnos() == [0, 2, 3]

    # An orderly stop writes the replay window back: the next start needs no Echo.
    server.stop(signal.SIGTERM)
    sequence = json.loads((server.log.parent / "keys" / "leak-1" / "sequence.json").read_text())
    assert isinstance(sequence["received"], dict)
    server.start()
    assert node.post("r", b"calm") == (coap.CHANGED, b"ok:calm", False, 1)
    answer = decode(node.send_raw(node.sent[-1]))
    assert (answer.code, answer.payload) == (coap.UNAUTHORIZED, b"Replay detected")
    node.close()


# -- aiocoap's client against our server half ------------------------------------------------


def _client_context_dir(path: Path, secret: bytes) -> Path:
    path.mkdir(mode=0o700)
    settings = {"sender-id_hex": NODE_ID.hex(), "recipient-id_hex": GATEWAY_ID.hex()}
    (path / "settings.json").write_text(json.dumps(settings))
    fd = os.open(path / "secret.json", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"secret_hex": secret.hex(), "salt_hex": SALT.hex()}, f)
    return path


async def _aiocoap_client_session(port: int, basedir: Path) -> list[tuple[str, bytes]]:
    client = await aiocoap.Context.create_client_context()
    try:
        client.client_credentials.load_from_dict(
            {f"coap://127.0.0.1:{port}/*": {"oscore": {"basedir": str(basedir)}}}
        )
        out = []
        uri = f"coap://127.0.0.1:{port}"
        for i in range(4):
            get = aiocoap.Message(code=aiocoap.GET, uri=uri + "/hello")
            hello = await client.request(get).response
            out.append((str(hello.code), hello.payload))
            body = f"reading {i}".encode()
            msg = aiocoap.Message(code=aiocoap.POST, uri=uri + "/echo", payload=body)
            echo = await client.request(msg).response
            out.append((str(echo.code), echo.payload))
        return out
    finally:
        await client.shutdown()


def test_aiocoap_client_against_our_server(interp, tmp_path: Path) -> None:
    if interp.name == "micropython":
        binary = micropython_binary()
        assert binary is not None
        cmd = [binary, "tests/support/oscore_udp_server.py"]
    else:
        cmd = [sys.executable, "-u", "tests/support/oscore_udp_server.py"]
    port = free_udp_port()
    cmd += [SECRET.hex(), SALT.hex(), GATEWAY_ID.hex(), NODE_ID.hex(), str(port)]
    env = dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_ready(proc)
        basedir = _client_context_dir(tmp_path / "client", SECRET)
        results = asyncio.run(_aiocoap_client_session(port, basedir))
    finally:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    assert results == [
        r
        for i in range(4)
        for r in (("2.05 Content", b"Hello World!"), ("2.04 Changed", f"{i} gnidaer".encode()))
    ], err
    accepted = [line.split() for line in out.splitlines() if line.startswith("ACCEPT")]
    assert [a[1] for a in accepted] == ["/hello", "/echo"] * 4
    # aiocoap's client numbers its requests 0, 1, 2...; our replay window took each once.
    assert [int(a[2]) for a in accepted] == list(range(8))
    assert "REFUSE" not in out

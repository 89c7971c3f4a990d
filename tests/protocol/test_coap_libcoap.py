"""Interop with libcoap (Debian libcoap3-bin), an independent CoAP implementation, on 127.0.0.1.

Our requests go to `coap-server-notls` and its responses are decoded with our codec; in the
[micropython] variant the encoding, the UDP exchange (tests/support/coap_peer.py) and the
decoding all run inside the micropython process, as on a node. The other way round,
`coap-client-notls` talks to a small responder built on our codec and prints what it answered.
"""

import shutil
import socket
import subprocess
import time

import pytest

SERVER = "coap-server-notls"
CLIENT = "coap-client-notls"
LOOPBACK = "127.0.0.1"


def require(command):
    path = shutil.which(command)
    if path is None:
        pytest.fail(f"{command} is missing: `make test` installs Debian's libcoap3-bin")
    return path


def free_port(tcp_too=False):
    """A port free on 127.0.0.1 for UDP (and TCP: coap-server listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = udp.getsockname()[1]
            if not tcp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


def answers_ping(port):
    # an Empty CON (RFC 7252 §4.3 "CoAP ping"); a live server answers with RST, same mid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(bytes.fromhex("4000beef"), (LOOPBACK, port))
        try:
            return sock.recvfrom(64)[0] == bytes.fromhex("7000beef")
        except OSError:
            return False


@pytest.fixture(scope="module")
def libcoap_port():
    binary = require(SERVER)
    for _ in range(3):
        port = free_port(tcp_too=True)
        server = subprocess.Popen(
            [binary, "-A", LOOPBACK, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while server.poll() is None and time.monotonic() < deadline:
            if answers_ping(port):
                yield port
                server.terminate()
                server.wait(timeout=5)
                return
        server.kill()
        server.wait()
    pytest.fail(f"{SERVER} did not come up on {LOOPBACK}")


@pytest.fixture
def coap(interp):
    return interp.module("protocol.coap")


@pytest.fixture
def peer(interp):
    return interp.module("tests.support.coap_peer")


def ask(coap, peer, port, request):
    return coap.decode(peer.exchange(port, request.encode()))


def get_with_libcoap(port, path, out_file):
    # -o: the payload exactly as received (on a pipe, stdout gets an extra newline)
    subprocess.run(
        [require(CLIENT), "-B", "5", "-o", str(out_file), f"coap://{LOOPBACK}:{port}{path}"],
        capture_output=True,
        timeout=20,
        check=True,
    )
    return out_file.read_bytes()


# ---- our requests, libcoap's server ---------------------------------------------------------


def test_get_well_known_core(coap, peer, libcoap_port, tmp_path):
    request = coap.Message(
        coap.CON, coap.GET, 0x5101, b"\x51\x01", coap.uri_path_options("/.well-known/core")
    )
    assert request.encode() == bytes.fromhex("4201510151 01bb2e77656c6c2d6b6e6f776e04636f7265")
    response = ask(coap, peer, libcoap_port, request)
    assert (response.type, response.code, response.mid) == (coap.ACK, coap.CONTENT, 0x5101)
    assert response.token == b"\x51\x01"
    assert coap.uint_value(response.option(coap.CONTENT_FORMAT)) == coap.FORMAT_LINK
    assert response.payload.startswith(b'</>;title="General Info"')
    assert b"</time>" in response.payload
    # libcoap's own client reads the same document
    assert response.payload == get_with_libcoap(
        libcoap_port, "/.well-known/core", tmp_path / "core"
    )


def test_non_request_gets_a_non_response(coap, peer, libcoap_port):
    request = coap.Message(coap.NON, coap.GET, 0x5102, b"\x0b\x0c\x0d")
    response = ask(coap, peer, libcoap_port, request)
    assert (response.type, response.code, response.token) == (
        coap.NON,
        coap.CONTENT,
        b"\x0b\x0c\x0d",
    )
    assert b"libcoap" in response.payload


def test_unknown_path_is_not_found(coap, peer, libcoap_port):
    request = coap.Message(coap.CON, coap.GET, 0x5103, b"\x01", coap.uri_path_options("/no/such"))
    response = ask(coap, peer, libcoap_port, request)
    assert (response.type, response.code, response.mid) == (coap.ACK, coap.NOT_FOUND, 0x5103)


def test_ping_is_answered_with_reset(coap, peer, libcoap_port):
    response = ask(coap, peer, libcoap_port, coap.Message(coap.CON, coap.EMPTY, 0x5104))
    assert (response.type, response.code, response.mid) == (coap.RST, coap.EMPTY, 0x5104)
    assert (response.token, response.options, response.payload) == (b"", [], b"")


def test_unknown_critical_option_is_a_bad_option(coap, peer, libcoap_port):
    # 2049 is odd, so critical (§5.4.1), and needs the 2-byte delta extension
    request = coap.Message(coap.CON, coap.GET, 0x5105, b"\x02", [(2049, b"\x08\x00")])
    response = ask(coap, peer, libcoap_port, request)
    assert (response.type, response.code, response.mid) == (coap.ACK, coap.BAD_OPTION, 0x5105)


def test_put_then_get(coap, peer, interp, libcoap_port):
    body = ("leak=1 from " + interp.name).encode()
    text = [(coap.CONTENT_FORMAT, coap.uint_bytes(coap.FORMAT_TEXT))]
    path = coap.uri_path_options("/example_data")
    put = coap.Message(coap.CON, coap.PUT, 0x5106, b"\x03", path + text, body)
    response = ask(coap, peer, libcoap_port, put)
    assert response.type == coap.ACK
    assert response.code in (coap.CREATED, coap.CHANGED)
    got = ask(coap, peer, libcoap_port, coap.Message(coap.CON, coap.GET, 0x5107, b"\x04", path))
    assert (got.code, got.payload) == (coap.CONTENT, body)


def test_block2_transfer_reassembles(coap, peer, libcoap_port):
    whole = ask(
        coap,
        peer,
        libcoap_port,
        coap.Message(
            coap.CON, coap.GET, 0x5200, b"\x05", coap.uri_path_options("/.well-known/core")
        ),
    ).payload
    received = b""
    for number in range(64):
        options = coap.uri_path_options("/.well-known/core")
        options.append((coap.BLOCK2, coap.block_bytes(number, False, 0)))  # 16-byte blocks
        response = ask(
            coap,
            peer,
            libcoap_port,
            coap.Message(coap.CON, coap.GET, 0x5201 + number, b"\x06", options),
        )
        assert response.code == coap.CONTENT
        got_number, more, szx = coap.block_parts(response.option(coap.BLOCK2))
        assert (got_number, szx) == (number, 0)
        received += response.payload
        if not more:
            break
        assert len(response.payload) == 16
    assert number > 2 and received == whole


# ---- libcoap's client, our responder ----------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        ([], "/sensors/leak?id=7&x", b"0.01 /sensors/leak?id=7&x"),
        (["-N"], "/status", b"0.01 /status"),
        (["-m", "put", "-e", "wet", "-t", "0"], "/leak/probe", b"0.03 /leak/probe"),
    ],
)
def test_libcoap_client_against_our_responder(coap, peer, case, tmp_path):
    flags, path, expected = case
    port = free_port()
    printed = tmp_path / "payload"
    responder = peer.Responder(port)
    try:
        client = subprocess.Popen(
            [
                require(CLIENT),
                "-B",
                "5",
                "-o",
                str(printed),
                *flags,
                f"coap://{LOOPBACK}:{port}{path}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        raw = responder.answer_one(5.0)
        _, err = client.communicate(timeout=10)
    finally:
        responder.close()
    assert client.returncode == 0, err
    # what libcoap received is the payload our codec encoded
    assert printed.read_bytes() == expected
    request = coap.decode(raw)
    assert request.type == (coap.NON if "-N" in flags else coap.CON)
    assert coap.uri_path(request) == path.split("?")[0]
    queries = path.split("?")[1].split("&") if "?" in path else []
    assert request.option_values(coap.URI_QUERY) == [q.encode() for q in queries]
    if "-e" in flags:
        assert request.payload == b"wet"
        assert coap.uint_value(request.option(coap.CONTENT_FORMAT)) == coap.FORMAT_TEXT
    # and the request re-encodes to libcoap's bytes exactly
    assert request.encode() == raw

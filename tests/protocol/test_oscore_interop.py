"""Property: our OSCORE and aiocoap's agree on random requests and responses, both ways round.

Each example runs a request/response exchange twice: our node with aiocoap as the gateway, then
aiocoap as the node with our gateway side, with random Class E and U options, codes and
payloads. What comes out of the far side must be what went in. Our half runs in the interpreter
under test; aiocoap's contexts are FilesystemSecurityContexts, as on the gateway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap import oscore as aoscore
from aiocoap.message import Direction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import coap

SECRET = bytes.fromhex("55" * 16)
SALT = bytes.fromhex("a1a2a3a4a5a6a7a8")
NODE_ID = b"\x42"
GATEWAY_ID = b""

ascii_text = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=12)


def uint() -> st.SearchStrategy[bytes]:
    return st.integers(0, 0xFFFF).map(coap.uint_bytes)


REQUEST_OPTIONS = st.lists(
    st.one_of(
        st.tuples(st.just(coap.URI_HOST), ascii_text.map(str.encode)),
        st.tuples(st.just(coap.URI_PORT), uint()),
        st.tuples(st.just(coap.URI_PATH), ascii_text.map(str.encode)),
        st.tuples(st.just(coap.URI_QUERY), ascii_text.map(str.encode)),
        st.tuples(st.just(coap.CONTENT_FORMAT), uint()),
        st.tuples(st.just(coap.ACCEPT), uint()),
        st.tuples(st.just(coap.ETAG), st.binary(min_size=1, max_size=8)),
        st.tuples(st.just(coap.IF_MATCH), st.binary(max_size=8)),
        st.tuples(st.just(coap.ECHO), st.binary(min_size=1, max_size=40)),
        st.tuples(st.just(2000), st.binary(max_size=20)),  # unknown: Class E by default
    ),
    max_size=6,
).map(lambda opts: _single(opts, (coap.URI_HOST, coap.URI_PORT, coap.CONTENT_FORMAT)))

RESPONSE_OPTIONS = st.lists(
    st.one_of(
        st.tuples(st.just(coap.CONTENT_FORMAT), uint()),
        st.tuples(st.just(coap.MAX_AGE), uint()),
        st.tuples(st.just(coap.ETAG), st.binary(min_size=1, max_size=8)),
        st.tuples(st.just(coap.LOCATION_PATH), ascii_text.map(str.encode)),
        st.tuples(st.just(coap.ECHO), st.binary(min_size=1, max_size=40)),
    ),
    max_size=4,
).map(lambda opts: _single(opts, (coap.CONTENT_FORMAT, coap.MAX_AGE, coap.ECHO)))


def _single(options: list[tuple[int, bytes]], once: tuple[int, ...]) -> list[tuple[int, bytes]]:
    # aiocoap keeps non-repeatable options once; a fair comparison generates them once
    seen: set[int] = set()
    out = []
    for number, value in options:
        if number in once and number in seen:
            continue
        seen.add(number)
        out.append((number, value))
    return out


def _context_dir(path: Path, sender: bytes, recipient: bytes) -> Path:
    path.mkdir()
    settings_ = {"sender-id_hex": sender.hex(), "recipient-id_hex": recipient.hex()}
    (path / "settings.json").write_text(json.dumps(settings_))
    fd = os.open(path / "secret.json", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"secret_hex": SECRET.hex(), "salt_hex": SALT.hex()}, f)
    return path


@pytest.fixture
def peers(interp: Any, tmp_path: Path) -> Any:
    oscore = interp.module("protocol.oscore")
    aio_gateway = aoscore.FilesystemSecurityContext(
        str(_context_dir(tmp_path / "gw", GATEWAY_ID, NODE_ID))
    )
    aio_node = aoscore.FilesystemSecurityContext(
        str(_context_dir(tmp_path / "node", NODE_ID, GATEWAY_ID))
    )
    ours_node = oscore.SecurityContext(SECRET, NODE_ID, GATEWAY_ID, SALT)
    ours_gateway = oscore.SecurityContext(SECRET, GATEWAY_ID, NODE_ID, SALT)
    yield ours_node, ours_gateway, aio_node, aio_gateway
    aio_gateway._destroy()
    aio_node._destroy()


def _aio_fields(message: aiocoap.Message) -> tuple[int, list[tuple[int, bytes]], bytes]:
    options = [(int(o.number), o.encode()) for o in message.opt.option_list()]
    return int(message.code), options, bytes(message.payload)


def _ours_fields(
    data: bytes, drop: tuple[int, ...] = ()
) -> tuple[int, list[tuple[int, bytes]], bytes]:
    m = coap.decode(data)
    return m.code, sorted((o for o in m.options if o[0] not in drop), key=lambda o: o[0]), m.payload


CLASS_U = (coap.URI_HOST, coap.URI_PORT)


def _outgoing(data: bytes) -> aiocoap.Message:
    message = aiocoap.Message.decode(data)
    message.direction = Direction.OUTGOING
    message.remote = None
    return message


def _wire(message: aiocoap.Message, like: bytes) -> bytes:
    header = coap.decode(like)
    message.mtype = aiocoap.Type(header.type)
    message.mid = header.mid
    message.token = header.token
    return bytes(message.encode())


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    code=st.sampled_from([coap.GET, coap.POST, coap.PUT, coap.DELETE, coap.FETCH]),
    options=REQUEST_OPTIONS,
    payload=st.binary(max_size=40),
    response_code=st.sampled_from([coap.CONTENT, coap.CHANGED, coap.NOT_FOUND, 0xA0]),
    response_options=RESPONSE_OPTIONS,
    response_payload=st.binary(max_size=40),
    mid=st.integers(0, 0xFFFF),
    token=st.binary(max_size=8),
)
def test_our_halves_against_aiocoap(
    peers: Any,
    *,
    code: int,
    options: list[tuple[int, bytes]],
    payload: bytes,
    response_code: int,
    response_options: list[tuple[int, bytes]],
    response_payload: bytes,
    mid: int,
    token: bytes,
) -> None:
    ours_node, ours_gateway, aio_node, aio_gateway = peers
    request = coap.Message(coap.CON, code, mid, token, options, payload).encode()
    response = coap.Message(
        coap.ACK, response_code, mid, token, response_options, response_payload
    ).encode()

    # Our node -> aiocoap gateway -> our node
    protected = ours_node.protect_request(request)
    outer = aiocoap.Message.decode(protected)
    plain, request_id = aio_gateway.unprotect(outer)
    # aiocoap hands over the decrypted part only; the Class U options stay outside, visible
    assert _aio_fields(plain) == _ours_fields(request, drop=CLASS_U)
    assert [o for o in _ours_fields(protected)[1] if o[0] != coap.OSCORE] == [
        o for o in _ours_fields(request)[1] if o[0] in CLASS_U
    ]
    answer, _ = aio_gateway.protect(_outgoing(response), request_id)
    got = ours_node.unprotect_response(
        _wire(answer, response), request_id.kid, request_id.partial_iv
    )
    assert got == response

    # aiocoap node -> our gateway -> aiocoap node
    protected_msg, node_request_id = aio_node.protect(_outgoing(request))
    got, piv = ours_gateway.unprotect_request(_wire(protected_msg, request))
    # aiocoap takes Uri-Port for part of the transport address and does not send it
    assert _ours_fields(got) == _ours_fields(request, drop=(coap.URI_PORT,))
    assert coap.decode(got).mid == mid and coap.decode(got).token == token
    assert piv == node_request_id.partial_iv
    protected = ours_gateway.protect_response(response, NODE_ID, piv)
    plain, _ = aio_node.unprotect(aiocoap.Message.decode(protected), node_request_id)
    assert _aio_fields(plain) == _ours_fields(response)

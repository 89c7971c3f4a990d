"""The CoAP link's own request routing (gateway/links/coap.py `UplinkSite`, `GuardedSite`):
`POST /u` goes straight to the uplink resource and the inner request renders in the request's
task, so what does not take that way is checked here to still be answered as aiocoap's `Site`
and OSCORE wrapper answer it: protected, with the resource's refusal (4.04 for a path
nobody serves, 4.05 for a method /u does not take), nothing stored and no refusal counted;
and a valid uplink from the same context afterwards is committed (its sequence numbers were
accepted in order).

Peers: our protocol.oscore (CPython) over a plain UDP socket, against a running gateway.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import cbor, coap, oscore, schema
from tests.gateway.link_support import GATEWAY_ID, SALT, LiveGateway, secret_of

KID = b"\x11"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    gw = LiveGateway(tmp_path, {"leak-01": ("leak", KID)}).start()
    yield gw
    gw.close()


def exchange(
    gw: LiveGateway, node: oscore.SecurityContext, code: int, path: str, payload: bytes, *, mid: int
) -> coap.Message:
    """One protected confirmable request; the answer's inner message (outer 2.04 checked)."""
    token = mid.to_bytes(2, "big")
    plain = coap.Message(coap.CON, code, mid, token, coap.uri_path_options(path), payload)
    protected = node.protect_request(plain.encode())
    piv, _, _ = oscore.decode_option(coap.decode(protected).option(coap.OSCORE))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5.0)
        s.sendto(protected, ("127.0.0.1", gw.port))
        while True:
            answer = coap.decode(s.recvfrom(2048)[0])
            if answer.code != coap.EMPTY:  # an empty ACK: the response follows on its own
                break
    if answer.type == coap.CON:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(coap.ack_for(answer).encode(), ("127.0.0.1", gw.port))
    assert answer.token == token and answer.option(coap.OSCORE) is not None
    return coap.decode(node.unprotect_response(answer.encode(), KID, piv))


def test_other_paths_and_methods_get_protected_refusals_then_uplinks_still_commit(
    gateway: LiveGateway,
) -> None:
    node = oscore.SecurityContext(secret_of(KID), KID, GATEWAY_ID, SALT)
    reading = cbor.dumps(schema.encode_uplink({"type": "leak", "volume_l": 5, "flow_lh": 0}))

    assert exchange(gateway, node, coap.POST, "x", reading, mid=1).code == coap.NOT_FOUND
    assert exchange(gateway, node, coap.POST, "u/more", reading, mid=2).code == coap.NOT_FOUND
    assert exchange(gateway, node, coap.GET, "u", b"", mid=3).code == coap.METHOD_NOT_ALLOWED
    assert gateway.stored() == {}
    assert gateway.all_refusals() == {}

    answer = exchange(gateway, node, coap.POST, "u", reading, mid=4)
    assert answer.code == coap.CHANGED
    assert len(gateway.stored()) == 1

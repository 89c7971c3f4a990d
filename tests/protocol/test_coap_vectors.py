"""Datagrams from other CoAP stacks' test suites (tests/protocol/coap_vectors.py) against
protocol/coap.py, under CPython and MicroPython."""

import pytest

from tests.protocol.coap_vectors import ACCEPTED, REJECTED, STABLE_ORDER

# what our error text says for each kind of rejection the vectors name
REASONS = {
    "truncated": "cut short",
    "token": "token cut short",
    "token length": "token length",
    "marker": "payload marker with no payload",
    "Empty": "Empty message",
    "version": "version",
    "option number": "does not fit 16 bits",
    "delta nibble": "delta nibble 15",
    "extended": "extended option delta cut short",
    "fuzz": "",
}


@pytest.fixture
def coap(interp):
    return interp.module("protocol.coap")


@pytest.mark.parametrize("vector", ACCEPTED, ids=[v[0] for v in ACCEPTED])
def test_accepted_datagram_decodes_to_the_asserted_fields(coap, vector):
    _, wire, fields, round_trips = vector
    message = coap.decode(wire)
    got = {
        "type": message.type,
        "code": message.code,
        "mid": message.mid,
        "token": message.token,
        "options": message.options,
        "payload": message.payload,
    }
    assert got == fields
    if round_trips:
        # the wire format has exactly one encoding per message, so this is bit-exact
        assert message.encode() == wire
        assert coap.Message(**fields).encode() == wire
    else:
        with pytest.raises(ValueError):
            message.encode()


@pytest.mark.parametrize("vector", REJECTED, ids=[v[0] for v in REJECTED])
def test_rejected_datagram_raises_coap_decode_error(coap, vector):
    _, wire, why = vector
    with pytest.raises(coap.CoAPDecodeError) as info:
        coap.decode(wire)
    assert REASONS[why] in str(info.value)


@pytest.mark.parametrize("vector", STABLE_ORDER, ids=[v[0] for v in STABLE_ORDER])
def test_options_are_ordered_stably(coap, vector):
    _, inserted, expected = vector
    options = [(number, bytes([value])) for number, value in inserted]
    wire = coap.Message(0, 1, 0x1234, options=options).encode()
    assert coap.decode(wire).options == [(n, bytes([v])) for n, v in expected]

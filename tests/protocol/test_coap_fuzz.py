"""Fuzzing decode(): random mutations of valid datagrams only ever give a Message or a
CoAPDecodeError, agree with a reference reading of RFC 7252 §3 written here apart from the
codec, and every datagram that decodes re-encodes to itself.

The batch runs inside the interpreter under test (tests/support/coap_peer.outcomes), so the
MicroPython variant costs one bridge call per batch.
"""

import io
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol.coap_vectors import ACCEPTED
from tests.protocol.test_coap import HAND_CHECKED
from tests.protocol.test_coap_aiocoap import RFC_LENGTHS
from tests.support import coap_peer as local_peer
from tests.support.interp import MicroPython

MUTANTS = 2500
INTERESTING = [0x00, 0x0C, 0x0D, 0x0E, 0x0F, 0xC0, 0xD0, 0xE0, 0xF0, 0xFF, 0x40, 0x48, 0x49]


def reference_verdict(data):
    """None if RFC 7252 §3 accepts the datagram, else why not (a stream reading, not a copy
    of the codec's index arithmetic)."""
    if len(data) < 4:
        return "short"
    if data[0] >> 6 != 1:
        return "version"
    token_length = data[0] & 0x0F
    if token_length > 8:
        return "token length"
    if data[1] == 0:
        # an Empty message is the header alone, its token length 0 (§3, §4.1)
        return None if len(data) == 4 and token_length == 0 else "Empty with content"
    stream = io.BytesIO(data[4:])
    if len(stream.read(token_length)) < token_length:
        return "token"
    number = 0
    while True:
        head = stream.read(1)
        if not head:
            return None
        if head == b"\xff":
            return None if stream.read(1) else "bare marker"
        values = []
        for nibble in (head[0] >> 4, head[0] & 0x0F):
            if nibble == 15:
                return "nibble 15"
            size = {13: 1, 14: 2}.get(nibble, 0)
            extension = stream.read(size)
            if len(extension) < size:
                return "extension"
            if size == 0:
                values.append(nibble)
            else:
                values.append(int.from_bytes(extension, "big") + (13 if size == 1 else 269))
        delta, length = values
        number += delta
        if number > 0xFFFF:
            return "option number"
        if len(stream.read(length)) < length:
            return "value"


def breaks_a_length_rule(options):
    return any(
        n in RFC_LENGTHS and not RFC_LENGTHS[n][0] <= len(v) <= RFC_LENGTHS[n][1]
        for n, v in options
    )


def seeds():
    return [wire for _, wire, _, _ in ACCEPTED] + [case[-1] for case in HAND_CHECKED]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        pos = rng.randrange(len(data)) if data else 0
        if kind == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            data[pos] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif kind == 2:
            data.insert(pos, rng.choice(INTERESTING))
        elif kind == 3 and data:
            del data[pos]
        elif kind == 4:
            del data[pos:]
        elif kind == 5:
            data += bytes([0xFF]) if rng.random() < 0.5 else bytes([rng.randrange(256)])
        elif kind == 6 and data:
            data[pos:pos] = data[pos : pos + rng.randrange(1, 6)]
    return bytes(data)


def check_batch(peer, datagrams):
    # in slices: one bridge line per few hundred datagrams keeps MicroPython's JSON small
    results = []
    for start in range(0, len(datagrams), 250):
        results += peer.outcomes(datagrams[start : start + 250])
    assert len(results) == len(datagrams)
    accepted = 0
    for data, result in zip(datagrams, results, strict=True):
        kind = result[0]
        assert kind in ("message", "rejected"), (data.hex(), result)
        verdict = reference_verdict(data)
        if kind == "rejected":
            assert verdict is not None, ("rejected a well-formed datagram", data.hex(), result)
            continue
        accepted += 1
        assert verdict is None, ("accepted a format error", verdict, data.hex())
        _, type_, code, mid, token, options, _, again = result
        assert (type_, code, mid) == (data[0] >> 4 & 3, data[1], data[2] << 8 | data[3])
        assert token == data[4 : 4 + (data[0] & 0x0F)]
        if again is None:
            assert breaks_a_length_rule(options), data.hex()
        else:
            assert again == data
    # the same answers, word for word, as CPython gives
    assert results == local_peer.outcomes(datagrams)
    return accepted


def test_mutated_datagrams(interp):
    peer = interp.module("tests.support.coap_peer")
    rng = random.Random(7252)
    base = seeds()
    datagrams = [mutate(rng, rng.choice(base)) for _ in range(MUTANTS)]
    accepted = check_batch(peer, datagrams)
    # the mix must exercise both sides, or it proves little
    assert MUTANTS // 10 < accepted < MUTANTS - MUTANTS // 10


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            # a plausible header, then anything: reaches the option parser more often
            st.tuples(st.integers(0x40, 0x7F), st.integers(1, 255), st.binary(max_size=60)).map(
                lambda t: bytes([t[0], t[1], 0, 1]) + t[2]
            ),
        ),
        min_size=40,
        max_size=40,
    )
)
def test_random_datagrams(interp, datagrams):
    check_batch(interp.module("tests.support.coap_peer"), datagrams)


def test_large_datagrams_end_quickly(interp):
    peer = interp.module("tests.support.coap_peer")
    header = bytes.fromhex("40010000")
    start = time.monotonic()
    # 8192 empty options numbered 0: accepted, one option per byte
    assert peer.summary(header + bytes(8192)) == ("message", 8192, 0)
    # deltas of 268 overflow the 16-bit option number within a few hundred bytes
    assert peer.summary(header + b"\xd0\xff" * 32766)[0] == "rejected"
    # a value length claiming 65804 bytes in a short datagram fails at once
    assert peer.summary(header + b"\x0e\xff\xff" + bytes(100))[0] == "rejected"
    # the largest UDP datagram, all empty options: CPython holds them; MicroPython's default
    # heap may not, and that ends in CoAPDecodeError too, never MemoryError
    result = peer.summary(header + bytes(65503))
    assert result == ("message", 65503, 0) or (
        interp.name == "micropython"
        and result == ("rejected", "datagram needs more memory than is free")
    )
    assert time.monotonic() - start < 20


@pytest.fixture
def small_heap():
    # a heap the size a node can spare, in a process of our own (the shared one keeps its size)
    mp = MicroPython(heapsize="128K")
    yield mp
    mp.close()


def test_a_small_heap_rejects_what_it_cannot_hold(small_heap):
    peer = small_heap.module("tests.support.coap_peer")
    header = bytes.fromhex("40010000")
    # a full-size datagram (RFC 7252 §4.6: 1152 bytes) of empty options fits
    assert peer.summary(header + bytes(1148)) == ("message", 1148, 0)
    for hostile in (bytes(4000), b"\x01\x00" * 1500):
        assert peer.summary(header + hostile) == (
            "rejected",
            "datagram needs more memory than is free",
        )
        # and the interpreter carries on
        assert peer.summary(header + bytes.fromhex("b161ff01")) == ("message", 1, 1)

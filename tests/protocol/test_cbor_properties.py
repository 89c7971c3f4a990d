"""protocol.cbor held to cbor2 with hypothesis, in both directions, and fuzzed.

Each example is one bridge round trip on MicroPython, so example counts stay moderate here;
the in-process fuzz helper runs thousands of inputs per call.
"""

import io

import cbor2
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from tests.protocol.cbor_vectors_host import (
    cbor2_order_agrees,
    contains_tag,
    norm,
    ref_encode,
    simple_key_beside_int,
    to_cbor2,
    to_interp,
    values,
)

# the interp fixture is one interpreter for the whole test, not per example: that is intended
PROPERTY = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Hypothesis probes the first argument of a test (hasattr on it): that must be `interp`, a
# local object, not a proxy whose attribute reads travel to MicroPython.
def codec(interp):
    return interp.module("protocol.cbor")


def bmp_only(x):
    """The test bridge mangles characters past U+FFFF on the way in (see dumps_text)."""
    if isinstance(x, str):
        return all(ord(c) <= 0xFFFF for c in x)
    if isinstance(x, (list, tuple)):
        return all(bmp_only(i) for i in x)
    if isinstance(x, dict):
        return all(bmp_only(k) and bmp_only(v) for k, v in x.items())
    if hasattr(x, "tag"):
        return bmp_only(x.value)
    return True


@PROPERTY
@given(value=values)
@example(value={24: 0, -1: 0, "a": 0, 100000: 0})  # where cbor2's canonical order differs
@example(value=[float("nan"), -0.0, 65504.0, 65505.0, 1e-40, 2**64, -(2**64) - 1])
def test_our_bytes_are_preferred_deterministic_and_read_by_cbor2(interp, value):
    cbor = codec(interp)
    assume(bmp_only(value))
    data = cbor.dumps(to_interp(cbor, value))
    assert norm(cbor2.loads(data)) == norm(value)
    # RFC 8949 4.2.1 deterministic encoding, from an independent reference encoder
    assert data == ref_encode(value)
    if cbor2_order_agrees(value):
        assert data == cbor2.dumps(to_cbor2(value), canonical=True)
    else:
        event("cbor2 orders a map differently (RFC 7049 length-first)")


@PROPERTY
@given(value=values, canonical=st.booleans())
def test_cbor2_bytes_decode_to_the_same_value(interp, value, canonical):
    cbor = codec(interp)
    # cbor2 without canonical writes every float as a double: the wide forms decode too
    data = cbor2.dumps(to_cbor2(value), canonical=canonical)
    assert norm(cbor.loads(data)) == norm(value)


@PROPERTY
@given(text=st.text(max_size=40))
def test_text_with_any_code_point(interp, text):
    cbor = codec(interp)
    vec = interp.module("tests.protocol.cbor_vectors")
    data = cbor2.dumps(text)
    assert cbor.loads(data) == text
    assert vec.dumps_text(text.encode()) == data


def decode_both(cbor, data):
    """(ours, ours_error, cbor2's, cbor2_failed) for one input."""
    try:
        ours, error = cbor.loads(data), None
    except ValueError as e:
        # only our own error may come out, never IndexError, struct.error, RuntimeError...
        assert type(e).__name__ == "CBORDecodeError", repr(e)
        ours, error = None, str(e)
    try:
        # cbor2.loads ignores trailing bytes; read one item and check nothing is left
        stream = io.BytesIO(data)
        theirs = cbor2.CBORDecoder(stream, read_size=1).decode()
        failed = stream.tell() != len(data)
    except Exception:  # noqa: BLE001 - cbor2 also refuses on tag semantics (dates etc.)
        theirs, failed = None, True
    return ours, error, theirs, failed


def agree_with_cbor2(ours, error, theirs, failed):
    if error is None and not contains_tag(ours) and not simple_key_beside_int(ours):
        # accepted here with no uninterpreted tag inside: cbor2 must read the same value
        assert not failed
        assert norm(ours) == norm(theirs)
    if error is not None and not failed:
        # what cbor2 accepts but we refuse is only what the node deliberately bounds
        assert "nesting" in error or "unhashable" in error, error


@settings(PROPERTY, max_examples=300)
@given(data=st.binary(max_size=48))
def test_random_bytes(interp, data):
    agree_with_cbor2(*decode_both(codec(interp), data))


def mutated(draw_from):
    seeds = [cbor2.dumps(v, canonical=True) for v in draw_from]
    return st.tuples(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255), st.integers(0, 3)), max_size=3),
    ).map(_mutate)


def _mutate(args):
    data, edits = args
    buf = bytearray(data)
    for where, byte, op in edits:
        pos = where % (len(buf) + 1)
        if op == 0 and buf:
            buf[pos % len(buf)] = byte
        elif op == 1:
            buf.insert(pos, byte)
        elif op == 2:
            del buf[pos:]
        elif buf:
            buf[pos % len(buf)] = (byte & 0xE0) | 24 + (byte & 7)  # head with a long argument
    return bytes(buf)


SEED_VALUES = [
    {0: 1, 1: 2, 2: 123456, 3: -40, 4: [1, 2, 3]},
    ["a", {"b": "c"}, b"\x00\x01", 1.5, -4.1, 2**70, None, True],
    {"Fun": True, "Amt": -2, "x": [[[]]], "y": {1: {2: 3}}},
    cbor2.CBORTag(1000, [1, "\u00fc\u6c34\U00010151"]),
]


@settings(PROPERTY, max_examples=300)
@given(data=mutated(SEED_VALUES))
# simple(0) beside the key 0, as MicroPython hands it back (an object the bridge keeps there)
@example(data=b"\xa5\x00\x01\xe0\x02\x02\x1a\x00\x01\xe2@\x038'\x04\x83\x01\x02\x03")
def test_mutated_valid_items(interp, data):
    agree_with_cbor2(*decode_both(codec(interp), data))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_in_process_fuzz(interp, seed):
    vec = interp.module("tests.protocol.cbor_vectors")
    accepted, rejected, slowest_us = vec.fuzz(seed, 4000)
    assert accepted + rejected == 4000
    assert accepted > 200 and rejected > 2000  # both paths are really exercised
    # bounded time: nothing in a 50-byte input can take long (generous for a busy machine)
    assert slowest_us < 100_000


def test_simple_zero_and_zero_are_distinct_map_keys(interp):
    # found by the mutation property: cbor2 merges these two keys; RFC 8949 keeps them apart
    cbor = codec(interp)
    value = cbor.loads(bytes([0xA2, 0xE0, 0x01, 0x00, 0x02]))
    assert len(value) == 2
    assert value[0] == 2

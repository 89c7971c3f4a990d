"""protocol.cbor against RFC 8949: Appendix A and F.1, preferred serialisation, deterministic
map order, the error paths and the resource bounds. Every test runs on CPython and MicroPython."""

import random
import struct
import time

import cbor2
import pytest

from protocol.cbor import Simple, Tag
from tests.protocol.cbor_vectors import (
    APPENDIX_A,
    BAD_UTF8,
    GOOD_UTF8,
    appendix_f_items,
)
from tests.protocol.cbor_vectors_host import kind, norm, ref_encode, to_interp

U64 = 1 << 64


@pytest.fixture
def cbor(interp):
    return interp.module("protocol.cbor")


@pytest.fixture
def vec(interp):
    return interp.module("tests.protocol.cbor_vectors")


def raises_decode_error(cbor, data):
    with pytest.raises(cbor.CBORDecodeError) as info:
        cbor.loads(data)
    return str(info.value)


# -- RFC 8949 Appendix A --------------------------------------------------------------------


def test_appendix_a_is_complete():
    assert len(APPENDIX_A) == 81  # Table 6 of RFC 8949 (RFC 7049's simple(24) is gone)
    assert len({h for h, _, _ in APPENDIX_A}) == 81


@pytest.mark.parametrize(
    ("encoded", "value", "preferred"), APPENDIX_A, ids=[v[0] for v in APPENDIX_A]
)
def test_appendix_a(cbor, vec, encoded, value, preferred):
    data = bytes.fromhex(encoded)
    decoded = cbor.loads(data)
    assert norm(decoded) == norm(value)
    # re-encoding gives the example itself, or its preferred form where the example is not
    expected = bytes.fromhex(preferred or encoded)
    assert vec.reencode(data) == expected
    if isinstance(value, str):
        assert vec.dumps_text(value.encode()) == expected
    else:
        assert cbor.dumps(to_interp(cbor, value)) == expected
    # and cbor2 reads the preferred form as the same value as the example
    theirs, again = cbor2.loads(data), cbor2.loads(expected)
    assert again == theirs or (again != again and theirs != theirs)


@pytest.mark.parametrize(
    ("encoded", "value", "preferred"), APPENDIX_A, ids=[v[0] for v in APPENDIX_A]
)
def test_appendix_a_truncated_or_extended_is_rejected(cbor, encoded, value, preferred):
    data = bytes.fromhex(encoded)
    for cut in range(len(data)):
        raises_decode_error(cbor, data[:cut])
    assert "after the CBOR item" in raises_decode_error(cbor, data + b"\x00")


# -- RFC 8949 Appendix F.1 ------------------------------------------------------------------


def test_appendix_f_is_complete():
    items = appendix_f_items()
    assert len(items) == 94
    assert len({h for _, h in items}) == 94


@pytest.mark.parametrize(
    ("group", "encoded"), appendix_f_items(), ids=[h for _, h in appendix_f_items()]
)
def test_appendix_f_not_well_formed(cbor, group, encoded):
    raises_decode_error(cbor, bytes.fromhex(encoded))
    with pytest.raises(cbor2.CBORDecodeError):  # the reference agrees the vector is bad
        cbor2.loads(bytes.fromhex(encoded))


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("1c", "reserved additional information"),
        ("fe", "reserved additional information"),
        ("ff", "break outside"),
        ("81ff", "break outside"),
        ("bf00ff", "break outside"),
        ("f81f", "below 32"),
        ("5f00ff", "bad chunk"),
        ("7f7f6100ffff", "bad chunk"),
        ("1f", "indefinite length with major type 0"),
        ("df", "indefinite length with major type 6"),
        ("9f", "not closed by a break"),
        ("5a00000002", "claims 2"),
    ],
)
def test_errors_say_what_is_wrong(cbor, encoded, reason):
    assert reason in raises_decode_error(cbor, bytes.fromhex(encoded))


# -- text strings: UTF-8 is checked here, MicroPython's decode does not ---------------------


@pytest.mark.parametrize("utf8", BAD_UTF8)
def test_invalid_utf8_is_rejected(cbor, utf8):
    raw = bytes.fromhex(utf8)
    head = bytes([0x60 + len(raw)])
    assert "UTF-8" in raises_decode_error(cbor, head + raw)
    assert "UTF-8" in raises_decode_error(cbor, b"\x7f" + head + raw + b"\xff")
    assert "UTF-8" in raises_decode_error(cbor, b"\x81" + head + raw)
    # the same bytes as a byte string are fine
    assert cbor.loads(bytes([0x40 + len(raw)]) + raw) == raw


@pytest.mark.parametrize(("utf8", "text"), GOOD_UTF8)
def test_boundary_code_points_decode(cbor, vec, utf8, text):
    raw = bytes.fromhex(utf8)
    data = bytes([0x60 + len(raw)]) + raw
    assert cbor.loads(data) == text
    assert vec.dumps_text(raw) == data
    assert cbor.loads(b"\x7f" + data + data + b"\xff") == text + text


def test_a_character_split_across_chunks_is_rejected(cbor):
    # each chunk of an indefinite text string must be valid UTF-8 on its own (RFC 8949 3.2.3)
    raises_decode_error(cbor, bytes.fromhex("7f61c361bcff"))
    assert cbor.loads(bytes.fromhex("7f62c3bcff")) == "\u00fc"


# -- integers and floats: preferred serialisation -------------------------------------------

INTS = [
    0,
    1,
    23,
    24,
    255,
    256,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**63,
    U64 - 1,
    U64,
    U64 + 1,
    2**100,
    10**40,
]


@pytest.mark.parametrize("n", INTS + [-1 - n for n in INTS] + [-n for n in INTS if n])
def test_integers(cbor, n):
    data = cbor2.dumps(n, canonical=True)
    assert cbor.dumps(n) == data
    assert cbor.loads(data) == n


def test_bignum_tags(cbor):
    assert cbor.loads(bytes.fromhex("c240")) == 0
    assert cbor.loads(bytes.fromhex("c340")) == -1
    assert cbor.loads(bytes.fromhex("c243000001")) == 1  # leading zeros are allowed on decode
    assert cbor.loads(bytes.fromhex("c35f4101ff")) == -2
    for bad in ("c260", "c280", "c2a0", "c300", "c2c24101"):
        assert "needs a byte string" in raises_decode_error(cbor, bytes.fromhex(bad))
    assert cbor.dumps(2**70) == bytes.fromhex("c249400000000000000000")
    assert cbor.dumps(-(2**70) - 1) == bytes.fromhex("c349400000000000000000")


HALF_MIN = 2.0**-24
FLOATS = [
    0.0,
    1.0,
    1.5,
    65504.0,
    65505.0,
    65520.0,
    131008.0,
    HALF_MIN,
    HALF_MIN * 3,
    HALF_MIN / 2,
    2.0**-14,
    2.0**-14 - HALF_MIN,
    2.0**-15,
    2.0**-14 + HALF_MIN,
    1 + 2.0**-10,
    1 + 2.0**-11,
    1 + 2.0**-23,
    1 + 2.0**-24,
    2.0**-126,
    2.0**-149,
    2.0**-150,
    3.4028234663852886e38,
    3.4028235677973366e38,
    1e-40,
    5e-324,
    1.7976931348623157e308,
    0.1,
    1 / 3,
    100000.0,
    1e300,
    float("inf"),
]


@pytest.mark.parametrize("x", FLOATS + [-x for x in FLOATS])
def test_floats_take_the_shortest_exact_width(cbor, x):
    data = cbor2.dumps(x, canonical=True)
    assert cbor.dumps(x) == data
    back = cbor.loads(data)
    assert struct.pack(">d", back) == struct.pack(">d", x)
    # every wider encoding of the same value decodes to it too
    assert struct.pack(">d", cbor.loads(b"\xfb" + struct.pack(">d", x))) == struct.pack(">d", x)


def test_nan_is_always_the_half_quiet_nan(cbor):
    for bits in ("7ff8000000000000", "fff8000000000000", "7ff0000000000001", "7ff4000000000000"):
        nan = struct.unpack(">d", bytes.fromhex(bits))[0]
        assert cbor.dumps(nan) == bytes.fromhex("f97e00")
    for data in ("f97e00", "f9fe00", "f97c01", "fa7fc00000", "faffffffff", "fb7ff8000000000001"):
        x = cbor.loads(bytes.fromhex(data))
        assert x != x


def test_every_half_float_decodes_without_struct_e(vec):
    # the reference here is CPython's struct 'e'; the codec under test does not use it
    step = 0x2000  # keeps each bridge reply small enough for the micropython heap
    for start in range(0, 0x10000, step):
        got = vec.half_decodings(start, start + step)
        for i in range(step):
            h = start + i
            want = struct.unpack(">e", bytes([h >> 8, h & 0xFF]))[0]
            x = struct.unpack(">d", got[8 * i : 8 * i + 8])[0]
            if want != want:
                assert x != x, hex(h)
            else:
                assert struct.pack(">d", x) == struct.pack(">d", want), hex(h)


def test_every_half_float_value_encodes_as_that_half(vec):
    got = b"".join(vec.half_encodings(start, start + 0x4000) for start in range(0, 0x10000, 0x4000))
    assert len(got) == 3 * 0x10000
    for h in range(0x10000):
        nan = (h & 0x7C00) == 0x7C00 and (h & 0x3FF)
        want = b"\xf9\x7e\x00" if nan else bytes([0xF9, h >> 8, h & 0xFF])
        assert got[3 * h : 3 * h + 3] == want, hex(h)


# -- maps: RFC 8949 4.2.1 order -------------------------------------------------------------


def test_map_order_is_bytewise_order_of_encoded_keys(cbor):
    # a tuple key encodes as an array; decoding one back is refused (lists are unhashable)
    value = {"b": 1, "a": 2, 10: 3, -1: 4, b"x": 5, 100: 6, "aa": 7, 1.5: 8, (1,): 9, None: 11}
    expected = bytes.fromhex("aa0a03186406200441780561610261620162616107810109f60bf93e0008")
    assert cbor.dumps(value) == expected
    items = list(value.items())
    for seed in range(5):
        random.Random(seed).shuffle(items)
        assert cbor.dumps(dict(items)) == expected
    assert "unhashable" in raises_decode_error(cbor, expected)
    del value[(1,)]
    assert cbor.loads(cbor.dumps(value)) == value


def test_integer_keys_in_order(cbor):
    keys = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, U64 - 1]
    keys += [-1 - k for k in keys]
    for extra in ([], [U64], [-U64 - 1], ["k"]):  # beyond 64 bits the keys are tagged
        items = [(k, i) for i, k in enumerate(keys + extra)]
        for seed in range(3):
            random.Random(seed).shuffle(items)
            value = dict(items)
            assert cbor.dumps(value) == ref_encode(value)
    # non-negative ascending, then negative descending
    assert cbor.dumps({-2: 0, 3: 0, -1: 0, 0: 0}) == bytes.fromhex("a40000030020002100")


def test_nested_maps_are_sorted_too(cbor):
    value = {"z": {2: 0, 1: 0}, "y": [{"b": 0, "a": 0}], "x": Tag(7, {-5: 0, 5: 0})}
    assert cbor.dumps(value) == ref_encode(value)


def test_duplicate_keys_keep_the_last_value_like_cbor2(cbor):
    data = bytes.fromhex("a201010102")
    assert cbor.loads(data) == {1: 2} == cbor2.loads(data)


@pytest.mark.parametrize(
    "encoded", ["a18000", "a1a000", "bf8000ff", "a1c1800000", "a19fff00", "a1a1000000"]
)
def test_unhashable_map_keys_are_rejected(cbor, encoded):
    assert "unhashable" in raises_decode_error(cbor, bytes.fromhex(encoded))


def test_hashable_compound_keys_decode(cbor):
    assert cbor.loads(bytes.fromhex("a1c1010a")) == {Tag(1, 1): 10}
    decoded = cbor.loads(bytes.fromhex("a2f00af40b"))
    assert norm(decoded) == norm({Simple(16): 10, False: 11})


# -- simple values and tags -----------------------------------------------------------------


def test_simple_values(cbor):
    for n in [*range(20), 23, *range(32, 256)]:
        data = bytes([0xE0 + n]) if n < 24 else bytes([0xF8, n])
        value = cbor.loads(data)
        assert kind(value) == "Simple"
        assert value.value == n
        assert cbor.dumps(value) == data
        assert cbor.dumps(cbor.Simple(n)) == data
    assert cbor.loads(b"\xf7").value == cbor.UNDEFINED.value == 23
    for n in (-1, 20, 21, 22, 24, 31, 256):
        with pytest.raises(ValueError):
            cbor.Simple(n)


def test_simple_and_tag_objects(interp, cbor, vec):
    builtins = interp.module("builtins")
    assert builtins.repr(cbor.Simple(16)) == "Simple(16)"
    assert builtins.repr(Tag(5, [1, "a"])) == "Tag(5, [1, 'a'])"
    assert cbor.loads(cbor.dumps(Tag(5, [1, "a"]))) == Tag(5, [1, "a"])
    # equality and hashing as the interpreter under test computes them
    assert vec.compare(Tag(5, "a"), Tag(5, "a")) == (True, False, True)
    assert vec.compare(Tag(5, "a"), Tag(5, "b"))[:2] == (False, True)
    assert vec.compare(Tag(5, 1), Tag(6, 1))[:2] == (False, True)
    assert vec.compare(Tag(5, 1), 1)[:2] == (False, True)
    assert vec.compare(cbor.Simple(16), cbor.Simple(16)) == (True, False, True)
    assert vec.compare(cbor.Simple(16), cbor.Simple(17))[:2] == (False, True)
    assert vec.compare(cbor.Simple(16), 16)[:2] == (False, True)
    assert vec.compare(cbor.Simple(16), Tag(16, None))[:2] == (False, True)


def test_tags(cbor):
    assert cbor.loads(bytes.fromhex("dbffffffffffffffff00")) == Tag(U64 - 1, 0)
    assert cbor.dumps(Tag(U64 - 1, 0)) == bytes.fromhex("dbffffffffffffffff00")
    nested = Tag(100, Tag(1000, Tag(70000, [Tag(5, b"")])))
    data = cbor.dumps(nested)
    assert data == bytes.fromhex("d864d903e8da0001117081c540")
    assert cbor.loads(data) == nested
    assert cbor.dumps(Tag(2, b"\x01")) == b"\xc2\x41\x01"  # a Tag is written as given
    for bad in (Tag(-1, 0), Tag(U64, 0)):
        with pytest.raises(ValueError):
            cbor.dumps(bad)


# -- accepted inputs and rejected values ----------------------------------------------------


@pytest.mark.parametrize(
    "as_", ["bytearray", "memoryview", "memoryview of bytearray", "memoryview slice"]
)
def test_bytes_like_input(vec, as_):
    assert vec.loads_as(as_, bytes.fromhex("a26161016162820203")) == {"a": 1, "b": [2, 3]}
    assert vec.loads_as(as_, bytes.fromhex("7f657374726561646d696e67ff")) == "streaming"
    assert vec.loads_as(as_, bytes.fromhex("5f42010243030405ff")) == b"\x01\x02\x03\x04\x05"
    assert vec.loads_as(as_, bytes.fromhex("fb3ff199999999999a")) == 1.1
    assert vec.loads_as(as_, bytes.fromhex("1bffffffffffffffff")) == U64 - 1


@pytest.mark.parametrize("as_", ["bytearray", "memoryview"])
def test_bytes_like_values_encode_as_byte_strings(vec, as_):
    assert vec.dumps_as(as_, b"ab") == b"\x42ab"
    assert vec.dumps_as(as_, b"x" * 300) == b"\x59\x01\x2c" + b"x" * 300
    assert vec.dumps_as("memoryview slice", b"ab") == b"\x81\x42ab"


def test_non_bytes_input_is_a_type_error(cbor):
    for data in ("a0", 5, [0], None):
        with pytest.raises(Exception) as info:
            cbor.loads(data)
        assert kind(info.value) == "TypeError"


@pytest.mark.parametrize("what", ["set", "object"])
def test_unencodable_types_are_a_type_error(vec, what):
    assert vec.encode_error(what) == "TypeError"


def test_empty_input_is_rejected(cbor):
    assert "truncated" in raises_decode_error(cbor, b"")


# -- bounds: depth and allocation -----------------------------------------------------------


def nested(opener, closer, depth, inner=b"\x00"):
    return opener * depth + inner + closer * depth


@pytest.mark.parametrize(
    ("opener", "closer", "inner"),
    [
        (b"\x81", b"", b"\x00"),  # arrays
        (b"\x9f", b"\xff", b"\x00"),  # indefinite arrays
        (b"\xa1\x00", b"", b"\x00"),  # maps (in value position)
        (b"\xbf\x00", b"\xff", b"\x00"),  # indefinite maps
        (b"\xc1", b"", b"\x00"),  # tags
        (b"\xd8\x64", b"", b"\x80"),  # tags around an empty array
    ],
)
def test_nesting_limit(cbor, opener, closer, inner):
    limit = cbor.MAX_DEPTH
    assert limit == 16
    depth = limit - 1 if inner == b"\x80" else limit
    cbor.loads(nested(opener, closer, depth, inner))
    assert "nesting" in raises_decode_error(cbor, nested(opener, closer, depth + 1, inner))
    # far deeper than any interpreter's recursion: still our error, not RuntimeError
    start = time.perf_counter()
    assert "nesting" in raises_decode_error(cbor, nested(opener, closer, 5000, inner))
    assert time.perf_counter() - start < 2


def test_nesting_limit_on_encode(interp, cbor, vec):
    value = 0
    for _ in range(16):
        value = [value]
    assert cbor.loads(cbor.dumps(value)) == value
    with pytest.raises(ValueError, match="nesting"):
        cbor.dumps([value])
    with pytest.raises(ValueError, match="nesting"):
        cbor.dumps(Tag(1, {"a": value}))
    assert vec.encode_error("cycle") == "ValueError"
    assert vec.encode_error("dict cycle") == "ValueError"


HUGE = [
    "9b000000010000000000",  # 10 bytes claiming 2**32 array items
    "9bffffffffffffffff00",
    "9affffffff00",
    "bb000000010000000000",  # 2**32 map entries
    "ba8000000000",
    "5bffffffffffffffff00",  # byte string of 2**64-1 bytes
    "5a7fffffff00",
    "7b000000010000000061",
    "5f5affffffff00ff",  # inside an indefinite string
    "9f9b0000000100000000ff",
    "c29affffffff",
    "8299ffff00",
    "a1009a00010000",
]


@pytest.mark.parametrize("encoded", HUGE)
def test_huge_length_claims_fail_at_once(cbor, encoded):
    start = time.perf_counter()
    message = raises_decode_error(cbor, bytes.fromhex(encoded))
    assert time.perf_counter() - start < 0.5
    assert "claims" in message or "truncated" in message

"""CBOR test vectors (RFC 8949 Appendix A and F.1) and helpers that run inside MicroPython.

Imported by tests on CPython and, through the bridge, inside the `micropython` process, so it
is written in the subset both share. The helpers do many decodes in one call where a bridge
round trip per input would be too slow (fuzzing, every half-precision pattern, heap use).
"""

import struct

from protocol.cbor import CBORDecodeError, Simple, Tag, dumps, loads
from tests.protocol.cbor_vectors_heap import TYPICAL_MESSAGES

INF = float("inf")
NAN = float("nan")

# RFC 8949 Appendix A, Table 6, in order: (encoded hex, decoded value, hex that `dumps` gives
# for that value when it differs from the example: a wider float than preferred, or an
# indefinite length, which preferred serialisation writes as definite).
APPENDIX_A = [
    ("00", 0, None),
    ("01", 1, None),
    ("0a", 10, None),
    ("17", 23, None),
    ("1818", 24, None),
    ("1819", 25, None),
    ("1864", 100, None),
    ("1903e8", 1000, None),
    ("1a000f4240", 1000000, None),
    ("1b000000e8d4a51000", 1000000000000, None),
    ("1bffffffffffffffff", 18446744073709551615, None),
    ("c249010000000000000000", 18446744073709551616, None),
    ("3bffffffffffffffff", -18446744073709551616, None),
    ("c349010000000000000000", -18446744073709551617, None),
    ("20", -1, None),
    ("29", -10, None),
    ("3863", -100, None),
    ("3903e7", -1000, None),
    ("f90000", 0.0, None),
    ("f98000", -0.0, None),
    ("f93c00", 1.0, None),
    ("fb3ff199999999999a", 1.1, None),
    ("f93e00", 1.5, None),
    ("f97bff", 65504.0, None),
    ("fa47c35000", 100000.0, None),
    ("fa7f7fffff", 3.4028234663852886e38, None),
    ("fb7e37e43c8800759c", 1.0e300, None),
    ("f90001", 5.960464477539063e-8, None),
    ("f90400", 0.00006103515625, None),
    ("f9c400", -4.0, None),
    ("fbc010666666666666", -4.1, None),
    ("f97c00", INF, None),
    ("f97e00", NAN, None),
    ("f9fc00", -INF, None),
    ("fa7f800000", INF, "f97c00"),
    ("fa7fc00000", NAN, "f97e00"),
    ("faff800000", -INF, "f9fc00"),
    ("fb7ff0000000000000", INF, "f97c00"),
    ("fb7ff8000000000000", NAN, "f97e00"),
    ("fbfff0000000000000", -INF, "f9fc00"),
    ("f4", False, None),
    ("f5", True, None),
    ("f6", None, None),
    ("f7", Simple(23), None),
    ("f0", Simple(16), None),
    ("f8ff", Simple(255), None),
    ("c074323031332d30332d32315432303a30343a30305a", Tag(0, "2013-03-21T20:04:00Z"), None),
    ("c11a514b67b0", Tag(1, 1363896240), None),
    ("c1fb41d452d9ec200000", Tag(1, 1363896240.5), None),
    ("d74401020304", Tag(23, b"\x01\x02\x03\x04"), None),
    ("d818456449455446", Tag(24, b"dIETF"), None),
    (
        "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
        Tag(32, "http://www.example.com"),
        None,
    ),
    ("40", b"", None),
    ("4401020304", b"\x01\x02\x03\x04", None),
    ("60", "", None),
    ("6161", "a", None),
    ("6449455446", "IETF", None),
    ("62225c", '"\\', None),
    ("62c3bc", "\u00fc", None),
    ("63e6b0b4", "\u6c34", None),
    ("64f0908591", "\U00010151", None),
    ("80", [], None),
    ("83010203", [1, 2, 3], None),
    ("8301820203820405", [1, [2, 3], [4, 5]], None),
    (
        "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
        list(range(1, 26)),
        None,
    ),
    ("a0", {}, None),
    ("a201020304", {1: 2, 3: 4}, None),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}, None),
    ("826161a161626163", ["a", {"b": "c"}], None),
    (
        "a56161614161626142616361436164614461656145",
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
        None,
    ),
    ("5f42010243030405ff", b"\x01\x02\x03\x04\x05", "450102030405"),
    ("7f657374726561646d696e67ff", "streaming", "6973747265616d696e67"),
    ("9fff", [], "80"),
    ("9f018202039f0405ffff", [1, [2, 3], [4, 5]], "8301820203820405"),
    ("9f01820203820405ff", [1, [2, 3], [4, 5]], "8301820203820405"),
    ("83018202039f0405ff", [1, [2, 3], [4, 5]], "8301820203820405"),
    ("83019f0203ff820405", [1, [2, 3], [4, 5]], "8301820203820405"),
    (
        "9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff",
        list(range(1, 26)),
        "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
    ),
    ("bf61610161629f0203ffff", {"a": 1, "b": [2, 3]}, "a26161016162820203"),
    ("826161bf61626163ff", ["a", {"b": "c"}], "826161a161626163"),
    ("bf6346756ef563416d7421ff", {"Fun": True, "Amt": -2}, "a263416d74216346756ef5"),
]

# RFC 8949 Appendix F.1: examples of CBOR data items that are not well-formed (94 in all).
APPENDIX_F = [
    (
        "End of input in a head",
        "18, 19, 1a, 1b, 19 01, 1a 01 02, 1b 01 02 03 04 05 06 07, 38, 58, 78, 98, "
        "9a 01 ff 00, b8, d8, f8, f9 00, fa 00 00, fb 00 00 00",
    ),
    (
        "Definite-length strings with short data",
        "41, 61, 5a ff ff ff ff 00, 5b ff ff ff ff ff ff ff ff 01 02 03, 7a ff ff ff ff 00, "
        "7b 7f ff ff ff ff ff ff ff 01 02 03",
    ),
    (
        "Definite-length maps and arrays not closed with enough items",
        "81, 81 81 81 81 81 81 81 81 81, 82 00, a1, a2 01 02, a1 00, a2 00 00 00",
    ),
    ("Tag number not followed by tag content", "c0"),
    ("Indefinite-length strings not closed by a break stop code", "5f 41 00, 7f 61 00"),
    (
        "Indefinite-length maps and arrays not closed by a break stop code",
        "9f, 9f 01 02, bf, bf 01 02 01 02, 81 9f, 9f 80 00, 9f 9f 9f 9f 9f ff ff ff ff, "
        "9f 81 9f 81 9f 9f ff ff ff",
    ),
    (
        "Reserved additional information values",
        "1c, 1d, 1e, 3c, 3d, 3e, 5c, 5d, 5e, 7c, 7d, 7e, 9c, 9d, 9e, bc, bd, be, dc, dd, de, "
        "fc, fd, fe",
    ),
    ("Reserved two-byte encodings of simple values", "f8 00, f8 01, f8 18, f8 1f"),
    (
        "Indefinite-length string chunks not of the correct type",
        "5f 00 ff, 5f 21 ff, 5f 61 00 ff, 5f 80 ff, 5f a0 ff, 5f c0 00 ff, 5f e0 ff, 7f 41 00 ff",
    ),
    ("Indefinite-length string chunks not definite length", "5f 5f 41 00 ff ff, 7f 7f 61 00 ff ff"),
    ("Break occurring on its own outside of an indefinite-length item", "ff"),
    (
        "Break occurring in a definite-length array or map or a tag",
        "81 ff, 82 00 ff, a1 ff, a1 ff 00, a1 00 ff, a2 00 00 ff, 9f 81 ff, "
        "9f 82 9f 81 9f 9f ff ff ff ff",
    ),
    (
        "Break in an indefinite-length map that would lead to an odd number of items",
        "bf 00 ff, bf 00 00 00 ff",
    ),
    ("Major type 0, 1, 6 with additional information 31", "1f, 3f, df"),
]


def appendix_f_items():
    """[(group label, hex)] for every Appendix F.1 example."""
    out = []
    for label, items in APPENDIX_F:
        for item in items.split(","):
            out.append((label, item.replace(" ", "")))
    return out


# Text strings whose UTF-8 is not well-formed (RFC 3629): each is wrapped as a definite
# text string and as the only chunk of an indefinite one.
BAD_UTF8 = [
    "80",  # continuation byte with no lead
    "bf",
    "c0af",  # overlong "/"
    "c1bf",  # overlong
    "e080af",  # overlong 3-byte
    "f08080af",  # overlong 4-byte
    "eda080",  # U+D800, a surrogate
    "edbfbf",  # U+DFFF
    "f4908080",  # U+110000, past the last code point
    "f5808080",  # lead byte that can never occur
    "ff",
    "fe",
    "c3",  # truncated 2-byte sequence
    "e6b0",  # truncated 3-byte sequence
    "f09085",  # truncated 4-byte sequence
    "c328",  # lead byte followed by a non-continuation
    "e628b0",
    "6161c3",  # valid text, then a truncated sequence
]

GOOD_UTF8 = [
    ("7f", "\u007f"),
    ("c280", "\u0080"),
    ("dfbf", "\u07ff"),
    ("e0a080", "\u0800"),
    ("ed9fbf", "\ud7ff"),
    ("ee8080", "\ue000"),
    ("efbfbd", "\ufffd"),
    ("efbfbf", "\uffff"),
    ("f0908080", "\U00010000"),
    ("f48fbfbf", "\U0010ffff"),
]

# -- helpers run where the codec runs ------------------------------------------------------


def _ticks():
    import time

    if hasattr(time, "ticks_us"):
        return time.ticks_us()
    return time.perf_counter_ns() // 1000


def _elapsed_us(start):
    import time

    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(time.ticks_us(), start)
    return time.perf_counter_ns() // 1000 - start


class _Random:
    """xorshift32: the same inputs on both interpreters for one seed."""

    def __init__(self, seed):
        self.state = (seed & 0xFFFFFFFF) or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return self.next() % n


_FUZZ_SEEDS = None


def _seeds():
    global _FUZZ_SEEDS  # noqa: PLW0603 - built once, on first use, to keep import cheap
    if _FUZZ_SEEDS is None:
        _FUZZ_SEEDS = [bytes.fromhex(h) for h, _, _ in APPENDIX_A]
        _FUZZ_SEEDS.append(dumps(TYPICAL_MESSAGES[0]))
        _FUZZ_SEEDS.append(bytes.fromhex("9b0000000100000000"))
        _FUZZ_SEEDS.append(bytes.fromhex("bf7f6161ff9f5f4101ffff20ff"))
    return _FUZZ_SEEDS


def fuzz_input(rng):
    """One input: random bytes, or a valid item mutated (bytes changed, cut, inserted, spliced)."""
    if rng.below(4) == 0:
        return bytes([rng.below(256) for _ in range(rng.below(24))])
    seeds = _seeds()
    data = bytearray(seeds[rng.below(len(seeds))])
    for _ in range(1 + rng.below(3)):
        op = rng.below(5)
        pos = rng.below(len(data) + 1)
        if op == 0 and data:
            data[pos % len(data)] = rng.below(256)
        elif op == 1:
            data = data[:pos]
        elif op == 2:
            data[pos:pos] = bytes([rng.below(256)])
        elif op == 3:
            other = seeds[rng.below(len(seeds))]
            data[pos:pos] = other[: rng.below(len(other) + 1)]
        elif data:
            # a head byte with a large argument: the allocation bounds' favourite prey
            data[pos % len(data)] = (rng.below(8) << 5) | (24 + rng.below(8))
    return bytes(data)


def fuzz(seed, count):
    """Decode `count` generated inputs. Returns (accepted, rejected, slowest microseconds).

    Anything but a value or CBORDecodeError is an AssertionError naming the input. An accepted
    input must survive a round trip: dumps of its value decodes to a value that encodes the same.
    """
    rng = _Random(seed)
    accepted = rejected = slowest = 0
    for _ in range(count):
        data = fuzz_input(rng)
        start = _ticks()
        try:
            value = loads(data)
        except CBORDecodeError:
            rejected += 1
            continue
        except Exception as e:  # noqa: BLE001 - that is the finding
            raise AssertionError(data.hex() + " raised " + type(e).__name__ + ": " + str(e))  # noqa: B904
        finally:
            slowest = max(slowest, _elapsed_us(start))
        accepted += 1
        again = dumps(value)
        if dumps(loads(again)) != again:
            raise AssertionError(data.hex() + " does not re-encode stably")
    return accepted, rejected, slowest


def half_decodings(start, stop):
    """loads() of every half float f9xxxx with xxxx in [start, stop), packed as doubles."""
    out = bytearray()
    for h in range(start, stop):
        out.extend(struct.pack(">d", loads(bytes([0xF9, h >> 8, h & 0xFF]))))
    return bytes(out)


def half_encodings(start, stop):
    """dumps() of the value of every half pattern in [start, stop), concatenated."""
    out = bytearray()
    for h in range(start, stop):
        out.extend(dumps(loads(bytes([0xF9, h >> 8, h & 0xFF]))))
    return bytes(out)


def loads_as(kind, data):
    """loads() of data handed over as a bytearray, a memoryview, or a slice of a larger view
    (the bridge itself only carries bytes)."""
    if kind == "bytearray":
        return loads(bytearray(data))
    if kind == "memoryview":
        return loads(memoryview(data))
    if kind == "memoryview of bytearray":
        return loads(memoryview(bytearray(data)))
    if kind == "memoryview slice":
        return loads(memoryview(b"\xff\xff" + data + b"\xff")[2:-1])
    raise ValueError(kind)


def encode_error(kind):
    """The class name of what dumps() raises for a value the bridge cannot carry."""
    values = {
        "set": lambda: {1, 2},
        "object": object,
        "cycle": None,
        "dict cycle": None,
    }
    if kind == "cycle":
        value = []
        value.append(value)
    elif kind == "dict cycle":
        value = {}
        value[0] = [value]
    else:
        value = values[kind]()
    try:
        dumps(value)
    except Exception as e:  # noqa: BLE001 - the class is the answer
        return type(e).__name__
    return None


def dumps_as(kind, data):
    """dumps() of data as a bytearray or memoryview value."""
    if kind == "bytearray":
        return dumps(bytearray(data))
    if kind == "memoryview":
        return dumps(memoryview(data))
    if kind == "memoryview slice":
        return dumps([memoryview(b"\xff" + data + b"\xff")[1:-1]])
    raise ValueError(kind)


def compare(a, b):
    """(a == b, a != b, hash(a) == hash(b)) as this interpreter sees them."""
    return a == b, a != b, hash(a) == hash(b)


def reencode(data):
    """dumps(loads(data)) without the value leaving this interpreter."""
    return dumps(loads(data))


def dumps_text(utf8):
    """dumps() of the str these UTF-8 bytes spell, made here: the test bridge's JSON carries
    characters past U+FFFF as surrogate pairs, which MicroPython's json decodes wrongly."""
    return dumps(utf8.decode("utf-8"))

"""CBOR (RFC 8949) for MicroPython and CPython.

`dumps(obj) -> bytes` writes preferred serialisation with deterministic map order (RFC 8949
§4.2.1); `loads(data)` decodes one well-formed item from bytes, bytearray or memoryview and
rejects everything else with `CBORDecodeError`.

Python value <-> CBOR:
  int <-> major 0/1, or tags 2/3 (bignums) beyond 64 bits
  bytes (bytearray, memoryview on encode) <-> byte string;  str <-> text string
  list (tuple on encode) <-> array;  dict <-> map;  float <-> half/single/double
  False, True, None <-> simple 20, 21, 22;  Simple(n) <-> any other simple value
  (UNDEFINED is Simple(23));  Tag(n, value) <-> any tag other than 2 and 3.

Decoding keeps the last value of a repeated map key (as cbor2 does) and refuses a map key
Python cannot hash (an array or a map) with CBORDecodeError.

Written for a 64 KB heap: the decoder reads its input in place (through a memoryview for a
bytearray), copies each string once, and never allocates more than the input can justify (a
count is checked against the bytes left before anything is built); nesting is capped at
MAX_DEPTH on both sides, so recursion stays shallow and ends in our own error rather than
MicroPython's RuntimeError.
"""

import struct

MAX_DEPTH = 16  # arrays, maps and tags nested inside one another

_U64 = 1 << 64
_NEG_U64 = -_U64  # precomputed: negating a big int allocates each time on MicroPython
_INF = float("inf")
_NEG_INF = -_INF
_NAN = float("nan")


class CBORDecodeError(ValueError):
    pass


class Tag:
    """A tag number and its content, for every tag except the bignums (2, 3)."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    """A simple value that has no Python counterpart: 0-19, 23 (undefined) and 32-255."""

    def __init__(self, value):
        # 20-22 are False/True/None; 24-31 are reserved or have no one-item meaning
        if not (0 <= value < 20 or value == 23 or 32 <= value < 256):
            raise ValueError("no simple value %r" % (value,))
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __hash__(self):
        return hash(self.value) ^ 0x5AA5

    def __repr__(self):
        return "Simple(%d)" % self.value


UNDEFINED = Simple(23)


# -- encoding ---------------------------------------------------------------------------------


def dumps(obj):
    buf = bytearray()
    _encode(buf, obj, 0)
    return bytes(buf)


def _head(buf, major, n):
    # preferred serialisation: the shortest argument that holds n
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.append(n >> 8)
        buf.append(n & 0xFF)
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.append(n >> 24)
        buf.append((n >> 16) & 0xFF)
        buf.append((n >> 8) & 0xFF)
        buf.append(n & 0xFF)
    else:
        buf.append(mt | 27)
        buf.extend(n.to_bytes(8, "big"))


def _encode(buf, obj, depth):
    # identity tests first: bool is not an int subclass on MicroPython, but it is on CPython.
    # One isinstance per type (noqa SIM101 below): MicroPython builds a tuple of classes
    # afresh on every call.
    if obj is None:
        buf.append(0xF6)
    elif obj is False:
        buf.append(0xF4)
    elif obj is True:
        buf.append(0xF5)
    elif isinstance(obj, int):
        _int(buf, obj)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _head(buf, 3, len(b))
        buf.extend(b)
    elif isinstance(obj, float):
        _float(buf, obj)
    elif isinstance(obj, bytes) or isinstance(obj, bytearray):  # noqa: SIM101
        _head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, memoryview):
        obj = bytes(obj)  # len() of a memoryview counts elements, not bytes
        _head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, Simple):
        if obj.value < 24:
            buf.append(0xE0 | obj.value)
        else:
            buf.append(0xF8)
            buf.append(obj.value)
    else:
        if depth >= MAX_DEPTH:
            raise ValueError("CBOR nesting deeper than %d" % MAX_DEPTH)
        depth += 1
        if isinstance(obj, list) or isinstance(obj, tuple):  # noqa: SIM101
            _head(buf, 4, len(obj))
            for x in obj:
                _encode(buf, x, depth)
        elif isinstance(obj, dict):
            _map(buf, obj, depth)
        elif isinstance(obj, Tag):
            tag = obj.tag
            if not isinstance(tag, int) or tag is True or tag is False:
                raise TypeError("tag number must be an int")
            if not 0 <= tag < _U64:
                raise ValueError("tag number out of range: %r" % (tag,))
            _head(buf, 6, tag)
            _encode(buf, obj.value, depth)
        else:
            raise TypeError("cannot encode %s as CBOR" % type(obj).__name__)


def _int(buf, n):
    if n >= 0:
        major = 0
    else:
        major = 1
        n = -1 - n
    if n < _U64:
        _head(buf, major, n)
        return
    size = 0  # no int.bit_length on MicroPython
    m = n
    while m:
        m >>= 8
        size += 1
    buf.append(0xC2 + major)  # tag 2 (positive) or 3 (negative) bignum
    _head(buf, 2, size)
    buf.extend(n.to_bytes(size, "big"))


def _float(buf, x):
    if x != x:  # noqa: PLR0124 - NaN is the one float unequal to itself; no math import
        buf.extend(b"\xf9\x7e\x00")  # NaN in its preferred half form
        return
    if x == _INF or x == _NEG_INF:  # noqa: PLR1714, SIM109 - no tuple built per call
        buf.extend(b"\xf9\x7c\x00" if x > 0 else b"\xf9\xfc\x00")
        return
    try:
        single = struct.pack(">f", x)
        exact = struct.unpack(">f", single)[0] == x
    except OverflowError:  # CPython refuses out-of-range; MicroPython gives inf (not exact)
        exact = False
    if not exact:
        buf.append(0xFB)
        buf.extend(struct.pack(">d", x))
        return
    bits = int.from_bytes(single, "big")
    half = _half_of_single(bits)
    if half < 0:
        buf.append(0xFA)
        buf.extend(single)
    else:
        buf.append(0xF9)
        buf.append(half >> 8)
        buf.append(half & 0xFF)


def _half_of_single(bits):
    """The half-precision bits holding the same value as these single bits, or -1."""
    sign = (bits >> 16) & 0x8000
    exp = (bits >> 23) & 0xFF
    mant = bits & 0x7FFFFF
    if exp == 0:
        return sign if mant == 0 else -1  # single subnormals are far below half's range
    e = exp - 127
    if -14 <= e <= 15:
        if mant & 0x1FFF:
            return -1
        return sign | ((e + 15) << 10) | (mant >> 13)
    if -24 <= e < -14:
        # half subnormal: value = m * 2**-24 with m = (1.mant) * 2**(e + 24)
        shift = -1 - e
        full = mant | 0x800000
        if full & ((1 << shift) - 1):
            return -1
        return sign | (full >> shift)
    return -1


def _map(buf, d, depth):
    _head(buf, 5, len(d))
    keys = list(d)
    for k in keys:
        if type(k) is not int or not _NEG_U64 <= k < _U64:
            break
    else:
        # For 64-bit ints, bytewise order of the encodings is the non-negative keys ascending,
        # then the negative ones descending (-1 is 0x20, -2 is 0x21...): one in-place numeric
        # sort gives both runs, no encoded copies needed.
        keys.sort()
        n = len(keys)
        first = 0
        while first < n and keys[first] < 0:
            first += 1
        i = first
        while i < n:
            _int(buf, keys[i])
            _encode(buf, d[keys[i]], depth)
            i += 1
        i = first
        while i:
            i -= 1
            _int(buf, keys[i])
            _encode(buf, d[keys[i]], depth)
        return
    # A well-formed item is never a prefix of another, so sorting key+value encodings sorts
    # by encoded key (RFC 8949 §4.2.1); it is also a total order, so MicroPython's unstable
    # sort still gives the same bytes every time.
    pairs = []
    for k in keys:
        pair = bytearray()
        _encode(pair, k, depth)
        _encode(pair, d[k], depth)
        pairs.append(pair)
    pairs.sort()
    for pair in pairs:
        buf.extend(pair)


# -- decoding ---------------------------------------------------------------------------------


def loads(data):
    # Bytes are read in place; a bytearray through a memoryview, so that a string is copied
    # once (slice of a view, then bytes) rather than twice.
    if isinstance(data, bytearray):
        data = memoryview(data)
    elif not isinstance(data, bytes):
        if not isinstance(data, memoryview):
            raise TypeError("CBOR input must be bytes, bytearray or memoryview")
        if getattr(data, "format", "B") != "B":  # CPython views of wider items
            data = data.cast("B")
    dec = _Decoder(data)
    value = dec.item(0)
    if dec.pos != dec.end:
        raise CBORDecodeError("%d bytes after the CBOR item" % (dec.end - dec.pos))
    return value


class _Decoder:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def arg(self, ai):
        """The argument after an initial byte whose additional information is ai; -1 for 31."""
        if ai < 24:
            return ai
        pos = self.pos
        if ai == 24:
            if pos >= self.end:
                raise CBORDecodeError("truncated CBOR head")
            self.pos = pos + 1
            return self.buf[pos]
        if ai == 31:
            return -1
        if ai > 27:
            raise CBORDecodeError("reserved additional information %d" % ai)
        size = 1 << (ai - 24)
        if pos + size > self.end:
            raise CBORDecodeError("truncated CBOR head")
        self.pos = pos + size
        b = self.buf
        if size == 2:
            return (b[pos] << 8) | b[pos + 1]
        if size == 4:
            return (b[pos] << 24) | (b[pos + 1] << 16) | (b[pos + 2] << 8) | b[pos + 3]
        return int.from_bytes(b[pos : pos + 8], "big")

    def need(self, count, what):
        # every element, byte or character occupies at least one input byte
        if count > self.end - self.pos:
            raise CBORDecodeError(
                "%s claims %d, only %d bytes left" % (what, count, self.end - self.pos)
            )

    def item(self, depth):
        if self.pos >= self.end:
            raise CBORDecodeError("truncated CBOR item")
        ib = self.buf[self.pos]
        self.pos += 1
        major = ib >> 5
        ai = ib & 31
        arg = self.arg(ai)
        if arg < 0 and (major < 2 or major >= 6):
            if major == 7:
                raise CBORDecodeError("break outside an indefinite-length item")
            raise CBORDecodeError("indefinite length with major type %d" % major)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major < 4:
            return self.string(major, arg)
        if major == 7:
            return self.simple(ai, arg)
        if depth >= MAX_DEPTH:
            raise CBORDecodeError("CBOR nesting deeper than %d" % MAX_DEPTH)
        depth += 1
        if major == 4:
            out = []
            if arg >= 0:
                self.need(arg, "array")
                while arg:  # a counted loop allocates no range object
                    out.append(self.item(depth))
                    arg -= 1
            else:
                while not self.at_break():
                    out.append(self.item(depth))
            return out
        if major == 5:
            entries = {}  # type: dict
            if arg >= 0:
                self.need(2 * arg, "map")
                while arg:
                    self.put(entries, depth)
                    arg -= 1
            else:
                while not self.at_break():
                    self.put(entries, depth)
            return entries
        value = self.item(depth)
        if arg in (2, 3):
            if not isinstance(value, bytes):
                raise CBORDecodeError("bignum tag %d needs a byte string" % arg)
            n = int.from_bytes(value, "big")
            return n if arg == 2 else -1 - n
        return Tag(arg, value)

    def at_break(self):
        if self.pos >= self.end:
            raise CBORDecodeError("indefinite-length item not closed by a break")
        if self.buf[self.pos] == 0xFF:
            self.pos += 1
            return True
        return False

    def put(self, out, depth):
        key = self.item(depth)
        value = self.item(depth)
        try:
            out[key] = value
        except TypeError:
            raise CBORDecodeError("map key of unhashable type %s" % type(key).__name__)

    def string(self, major, arg):
        if arg >= 0:
            return self.chunk(major, arg)
        chunks = []
        while not self.at_break():
            ib = self.buf[self.pos]
            self.pos += 1
            if ib >> 5 != major or ib & 31 == 31:
                raise CBORDecodeError("bad chunk in an indefinite-length string")
            chunks.append(self.chunk(major, self.arg(ib & 31)))
        return (b"" if major == 2 else "").join(chunks)

    def chunk(self, major, size):
        self.need(size, "string")
        pos = self.pos
        self.pos = pos + size
        raw = self.buf[pos : pos + size]
        if not isinstance(raw, bytes):
            raw = bytes(raw)
        if major == 2:
            return raw
        try:
            text = raw.decode("utf-8")
        except UnicodeError:
            raise CBORDecodeError("invalid UTF-8 in a text string")
        # MicroPython decodes without checking; equal lengths mean pure ASCII, valid anyway
        if len(text) != size and not _utf8_valid(raw):
            raise CBORDecodeError("invalid UTF-8 in a text string")
        return text

    def simple(self, ai, arg):
        if ai < 20:
            return Simple(ai)
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            return UNDEFINED
        if ai == 24:
            if arg < 32:
                raise CBORDecodeError("two-byte simple value %d below 32" % arg)
            return Simple(arg)
        if ai == 25:
            return _half(arg)
        # the argument's bytes are the float itself: read them again as one
        size = 1 << (ai - 24)
        return struct.unpack_from(">f" if ai == 26 else ">d", self.buf, self.pos - size)[0]


def _half(h):
    # struct's 'e' format is missing from some MicroPython builds, so half floats by hand
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        v = mant * 5.960464477539063e-08  # 2**-24, exact in binary
    elif exp == 31:
        v = _INF if mant == 0 else _NAN
    else:
        v = (mant + 1024) * 2.0 ** (exp - 25)
    return -v if h & 0x8000 else v


def _utf8_valid(b):
    """RFC 3629 well-formedness: no overlong forms, no surrogates, nothing above U+10FFFF."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            more = 1
        elif 0xE0 <= c <= 0xEF:
            more = 2
            if c == 0xE0:
                lo = 0xA0  # below is an overlong form
            elif c == 0xED:
                hi = 0x9F  # above are the UTF-16 surrogates
        elif 0xF0 <= c <= 0xF4:
            more = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F  # above is past U+10FFFF
        else:
            return False
        if i + more >= n:
            return False
        c = b[i + 1]
        if c < lo or c > hi:
            return False
        for j in range(i + 2, i + more + 1):
            if b[j] & 0xC0 != 0x80:
                return False
        i += more + 1
    return True

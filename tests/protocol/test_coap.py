"""protocol/coap.py: exact wire bytes, every format error, checks on encode, the helpers.

Every test body runs under CPython and under MicroPython (the `interp` fixture).
"""

import pytest
from aiocoap.numbers import codes as aiocoap_codes
from aiocoap.numbers import optionnumbers as aiocoap_options

h = bytes.fromhex


@pytest.fixture
def coap(interp):
    return interp.module("protocol.coap")


@pytest.fixture
def peer(interp):
    return interp.module("tests.support.coap_peer")


def fields_of(message):
    return (
        message.type,
        message.code,
        message.mid,
        message.token,
        list(message.options),
        message.payload,
    )


def error_name(info):
    return type(info.value).__name__


# ---- exact wire bytes, checked by hand against RFC 7252 §3 -------------------------------------

HAND_CHECKED = [
    # (type, code, mid, token, options, payload, wire); options as given, wire in number order
    # A GET as in RFC 7252 Appendix A (Figure 16): CON, mid 0x7d34, Uri-Path "temperature"
    (0, 0x01, 0x7D34, b"", [(11, b"temperature")], b"", h("40017d34bb") + b"temperature"),
    # its piggybacked answer: ACK 2.05, payload after the 0xFF marker
    (2, 0x45, 0x7D34, b"", [], b"22.3 C", h("60457d34ff") + b"22.3 C"),
    # NON POST, 2-byte token, Uri-Path then Content-Format 60 (delta 1), CBOR payload
    (
        1,
        0x02,
        0x0102,
        b"\xaa\xbb",
        [(12, b"\x3c"), (11, b"r")],
        h("a10102"),
        h("52020102aabb") + h("b172113c") + h("ffa10102"),
    ),
    # delta steps: 12 (nibble), 1, 268 (13 + 255), 269 (14 + 0x0000), 64985 (14 + 0xfccc)
    (
        0,
        0x01,
        1,
        b"",
        [(65535, b""), (550, b""), (281, b""), (13, b""), (12, b"")],
        b"",
        h("40010001") + h("c0") + h("10") + h("d0ff") + h("e00000") + h("e0fccc"),
    ),
    # length steps on one unregistered option: 12, 13 (13 + 0), 268 (13 + 255), 269 (14 + 0)
    (
        1,
        0x03,
        0xFFFF,
        b"",
        [(65000, b"a" * 12), (65000, b"b" * 13), (65000, b"c" * 268), (65000, b"d" * 269)],
        b"",
        h("5003ffff")
        + h("ecfcdb")
        + b"a" * 12
        + h("0d00")
        + b"b" * 13
        + h("0dff")
        + b"c" * 268
        + h("0e0000")
        + b"d" * 269,
    ),
    # repeats keep their relative order while numbers are sorted
    (
        0,
        0x01,
        0x0A0B,
        b"\x01",
        [(15, b"b=2"), (11, b"x"), (15, b"a=1"), (11, b"y")],
        b"",
        h("41010a0b01") + h("b178") + h("0179") + h("43") + b"b=2" + h("03") + b"a=1",
    ),
    # Empty messages: the 4-byte header only
    (0, 0x00, 0xABCD, b"", [], b"", h("4000abcd")),
    (3, 0x00, 0x0001, b"", [], b"", h("70000001")),
    # 8-byte token (the longest) and a 5.03
    (2, 0xA3, 0x1234, b"12345678", [], b"", h("68a31234") + b"12345678"),
]


def sorted_stably(options):
    return [o for _, o in sorted(enumerate(options), key=lambda io: (io[1][0], io[0]))]


@pytest.mark.parametrize("case", HAND_CHECKED, ids=lambda c: c[-1][:12].hex())
def test_encode_gives_the_hand_checked_bytes(coap, case):
    type_, code, mid, token, options, payload, wire = case
    message = coap.Message(type_, code, mid, token, options, payload)
    assert message.encode() == wire
    # encoding sorts a copy: the message keeps the order it was given
    assert list(message.options) == options


@pytest.mark.parametrize("case", HAND_CHECKED, ids=lambda c: c[-1][:12].hex())
def test_decode_gives_the_fields_back_in_wire_order(coap, case):
    type_, code, mid, token, options, payload, wire = case
    message = coap.decode(wire)
    assert fields_of(message) == (type_, code, mid, token, sorted_stably(options), payload)


def test_longest_option_value_the_format_can_carry(coap):
    # 65535 + 269 bytes: length nibble 14 with extension 0xffff; one byte more cannot be framed
    longest = bytes(range(256)) * 257 + bytes(12)
    assert len(longest) == 65804
    wire = coap.Message(1, 0x02, 7, options=[(2048, longest)]).encode()
    assert wire[:8] == h("50020007") + h("ee") + (2048 - 269).to_bytes(2, "big") + h("ff")
    assert wire[8] == 0xFF and len(wire) == 9 + 65804
    assert coap.decode(wire).options == [(2048, longest)]
    with pytest.raises(ValueError):
        coap.Message(1, 0x02, 7, options=[(2048, longest + b"x")]).encode()


def test_decode_accepts_bytearray_memoryview_and_a_slice(coap, peer):
    wire = h("6145bc90714461626364ff") + b"temp = 22.5 C"
    expected = fields_of(coap.decode(wire))
    for kind in ("bytearray", "memoryview", "slice"):
        assert fields_of(peer.decode_from(kind, wire)) == expected


def test_option_number_65535_is_the_last(coap):
    wire = h("40010000") + h("e0fef2") + b""
    assert coap.decode(wire).options == [(65535, b"")]
    assert coap.Message(0, 1, 0, options=[(65535, b"")]).encode() == wire


# ---- every message format error ------------------------------------------------------------

REJECTED = {
    "empty datagram": b"",
    "1 byte": h("40"),
    "3 bytes": h("400100"),
    "version 0": h("00010000"),
    "version 2": h("80010000"),
    "version 3": h("c0010000"),
    "token length 9": h("49010000") + bytes(9),
    "token length 12": h("4c010000") + bytes(12),
    "token length 13 (RFC 8974 extended, not RFC 7252)": h("4d010000") + bytes(16),
    "token length 14": h("4e010000") + bytes(300),
    "token length 15": h("4f010000") + bytes(15),
    "token length 15 and nothing else": h("4f010000"),
    "token cut short": h("44010000aabb"),
    "token missing entirely": h("48010000"),
    "option value cut short": h("40010000b36162"),
    "option value missing": h("40010000b1"),
    "1-byte delta extension missing": h("40010000d0"),
    "2-byte delta extension missing": h("40010000e0"),
    "2-byte delta extension half there": h("40010000e001"),
    "1-byte length extension missing": h("40010000bd"),
    "2-byte length extension missing": h("40010000be"),
    "2-byte length extension half there": h("40010000be00"),
    "delta and length extensions, length missing": h("40010000dd05"),
    "delta nibble 15, length 0": h("40010000f0"),
    "delta nibble 15, length 1": h("40010000f161"),
    "delta nibble 15 after an option": h("40010000b161f3616263"),
    "length nibble 15, delta 0": h("400100000f"),
    "length nibble 15, delta 11": h("40010000bf") + bytes(15),
    "length nibble 15, delta 13": h("40010000df00") + bytes(15),
    "payload marker, no payload": h("40010000ff"),
    "options, marker, no payload": h("42010000aabbb161ff"),
    "Empty with a token": h("41000000aa"),
    "Empty with an option": h("40000000b161"),
    "Empty with a payload": h("40000000ff01"),
    "Empty with a bare marker": h("40000000ff"),
    "Empty ACK with a token": h("61000000aa"),
    "Empty with a token length but no token": h("41000000"),
    "option number past 65535 in one step": h("40010000e0ffff"),
    "option number past 65535 in two steps": h("40010000e0fef210"),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_decode_rejects_format_errors(coap, name):
    with pytest.raises(coap.CoAPDecodeError):
        coap.decode(REJECTED[name])


def test_decode_error_is_a_value_error(coap):
    assert issubclass(coap.CoAPDecodeError, ValueError)
    with pytest.raises(ValueError):
        coap.decode(h("40010000ff"))


def test_decode_wants_bytes(coap):
    with pytest.raises(Exception) as info:
        coap.decode("@\x01\x00\x00")
    assert error_name(info) == "TypeError"


# ---- checks on encode ----------------------------------------------------------------------

BAD_MESSAGES = {
    "type 4": (4, 1, 0, b"", [], b""),
    "type -1": (-1, 1, 0, b"", [], b""),
    "type True": (True, 1, 0, b"", [], b""),
    "code 256": (0, 256, 0, b"", [], b""),
    "code -1": (0, -1, 0, b"", [], b""),
    "mid 65536": (0, 1, 65536, b"", [], b""),
    "mid -1": (0, 1, -1, b"", [], b""),
    "token of 9 bytes": (0, 1, 0, bytes(9), [], b""),
    "Empty with a token": (0, 0, 0, b"t", [], b""),
    "Empty with an option": (0, 0, 0, b"", [(11, b"a")], b""),
    "Empty with a payload": (2, 0, 0, b"", [], b"p"),
    "option number 65536": (0, 1, 0, b"", [(65536, b"")], b""),
    "option number -1": (0, 1, 0, b"", [(-1, b"")], b""),
    "option value past 65804 bytes": (0, 1, 0, b"", [(2048, bytes(65805))], b""),
    # RFC 7252 §5.10 (and RFCs 7641, 7959, 8613, 8768, 9175) length ranges
    "empty ETag": (2, 0x45, 0, b"", [(4, b"")], b""),
    "ETag of 9 bytes": (2, 0x45, 0, b"", [(4, bytes(9))], b""),
    "empty Uri-Host": (0, 1, 0, b"", [(3, b"")], b""),
    "If-None-Match with a value": (0, 3, 0, b"", [(5, b"\x00")], b""),
    "Uri-Path of 256 bytes": (0, 1, 0, b"", [(11, b"p" * 256)], b""),
    "Content-Format of 3 bytes": (0, 2, 0, b"", [(12, b"\x00\x00\x3c")], b""),
    "Observe of 4 bytes": (0, 1, 0, b"", [(6, bytes(4))], b""),
    "Max-Age of 5 bytes": (2, 0x45, 0, b"", [(14, bytes(5))], b""),
    "Block2 of 4 bytes": (0, 1, 0, b"", [(23, bytes(4))], b""),
    "Proxy-Uri of 1035 bytes": (0, 1, 0, b"", [(35, b"u" * 1035)], b""),
    "Hop-Limit empty": (0, 1, 0, b"", [(16, b"")], b""),
    "OSCORE of 256 bytes": (0, 2, 0, b"", [(9, bytes(256))], b""),
    "Echo empty": (0, 2, 0, b"", [(252, b"")], b""),
    "Echo of 41 bytes": (0, 2, 0, b"", [(252, bytes(41))], b""),
    "Request-Tag of 9 bytes": (0, 2, 0, b"", [(292, bytes(9))], b""),
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_encode_refuses_what_the_rfcs_forbid(coap, name):
    message = coap.Message(*BAD_MESSAGES[name])
    with pytest.raises(ValueError):
        message.encode()


def test_encode_accepts_the_edges_of_those_ranges(coap):
    edges = [
        (4, bytes(8)),
        (3, b"h"),
        (5, b""),
        (11, b"p" * 255),
        (12, b""),
        (6, bytes(3)),
        (35, b"u" * 1034),
        (16, b"\x10"),
        (9, b""),
        (252, bytes(40)),
        (292, b""),
    ]
    message = coap.Message(0, 1, 0, options=edges)
    assert coap.decode(message.encode()).options == sorted_stably(edges)


def test_values_must_be_bytes(coap):
    for args in [
        (0, 1, 0, "token"),
        (0, 1, 0, b"", [(11, "path")]),
        (0, 1, 0, b"", [(12, 60)]),
        (0, 2, 0, b"", [], "payload"),
    ]:
        with pytest.raises(Exception) as info:
            coap.Message(*args)
        assert error_name(info) == "TypeError"


def test_bytearray_and_memoryview_values_are_taken_as_bytes(coap, peer):
    message = coap.Message(0, 2, 9, bytearray(b"t"), [(11, bytearray(b"a"))], bytearray(b"p"))
    assert fields_of(message) == (0, 2, 9, b"t", [(11, b"a")], b"p")
    assert message.encode() == h("41020009") + b"t" + h("b161ff") + b"p"


# ---- Message behaviour -----------------------------------------------------------------------


def test_equality_compares_every_field(coap, peer):
    # == and != are asked inside the interpreter under test (peer.compare)
    base = (0, 1, 0x1234, b"tk", [(11, b"a"), (11, b"b")], b"pl")
    one = coap.Message(*base)
    assert peer.compare(one, coap.Message(*base)) == (True, False)
    assert peer.compare(one, coap.decode(one.encode())) == (True, False)
    for index, changed in enumerate([1, 2, 0x1235, b"tK", [(11, b"b"), (11, b"a")], b""]):
        other = list(base)
        other[index] = changed
        assert peer.compare(one, coap.Message(*other)) == (False, True), index
    assert peer.compare(one, b"not a message") == (False, True)


def test_repr_names_the_parts(coap, interp):
    builtins = interp.module("builtins")
    message = coap.Message(
        0, 1, 0x1234, b"\x0a\x0b", [(11, b"temp"), (12, b"\x3c"), (2049, b"\x08")], b"x" * 40
    )
    text = builtins.repr(message)
    for part in ["CON", "0.01", "mid=4660", "token=0a0b", "Uri-Path=b'temp'", "Content-Format="]:
        assert part in text, (part, text)
    assert "Option2049=b'\\x08'" in text
    assert "(40 bytes)" in text and "x" * 33 not in text
    assert "ACK 2.05" in builtins.repr(coap.Message(2, 0x45, 1))


def test_a_message_has_no_hash(coap, interp):
    builtins = interp.module("builtins")
    with pytest.raises(Exception) as info:
        builtins.hash(coap.Message(0, 1, 0))
    assert error_name(info) == "TypeError"


def test_option_lookup(coap):
    message = coap.Message(0, 1, 0, options=[(11, b"a"), (15, b"q"), (11, b"b")])
    assert message.option(11) == b"a"
    assert message.option(12) is None
    assert message.option(12, b"\x00") == b"\x00"
    assert message.option_values(11) == [b"a", b"b"]
    assert message.option_values(60) == []


# ---- helpers -------------------------------------------------------------------------------

# aiocoap tests/test_encoding.py TestUintOption: the same values and bytes
UINTS = [(0, b""), (1, b"\x01"), (2, b"\x02"), (40, b"\x28"), (50, b"\x32"), (255, b"\xff")]
UINTS += [(256, b"\x01\x00"), (1000, b"\x03\xe8"), (65535, b"\xff\xff"), (2**32 - 1, b"\xff" * 4)]


def test_uint_option_values(coap):
    for value, wire in UINTS:
        assert coap.uint_bytes(value) == wire
        assert coap.uint_value(wire) == value
    # a sender uses the fewest bytes, a receiver takes leading zeros too (RFC 7252 §3.2)
    assert coap.uint_value(b"\x00\x00\x05") == 5
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError):
            coap.uint_bytes(bad)


def test_uri_path_split_and_join(coap):
    cases = [
        ("/", []),
        ("", []),
        ("/sensors/leak", [b"sensors", b"leak"]),
        ("sensors/leak", [b"sensors", b"leak"]),
        ("/.well-known/core", [b".well-known", b"core"]),
        ("/a//b", [b"a", b"", b"b"]),
        ("/a/", [b"a", b""]),
        ("/caf\u00e9", ["caf\u00e9".encode()]),
    ]
    for path, segments in cases:
        options = coap.uri_path_options(path)
        assert options == [(11, s) for s in segments], path
        joined = coap.uri_path(options)
        assert joined == "/" + path.lstrip("/"), path
    mixed = coap.Message(0, 1, 0, options=[(3, b"host"), (11, b"a"), (15, b"x=1"), (11, b"b")])
    assert coap.uri_path(mixed) == "/a/b"


def test_block_option_values(coap):
    # RFC 7959 §2.2: NUM << 4 | M << 3 | SZX, as a uint
    assert coap.block_bytes(0, False, 0) == b""
    assert coap.block_bytes(0, True, 2) == b"\x0a"
    assert coap.block_bytes(1, False, 6) == b"\x16"
    assert coap.block_bytes(2**20 - 1, True, 6) == b"\xff\xff\xfe"
    assert coap.block_parts(b"\x0a") == (0, True, 2)
    assert coap.block_parts(b"\xff\xff\xfe") == (2**20 - 1, True, 6)
    assert coap.block_parts(b"") == (0, False, 0)
    for bad in [(0, False, 7), (2**20, False, 0), (-1, False, 0)]:
        with pytest.raises(ValueError):
            coap.block_bytes(*bad)


def test_ack_for_a_request(coap):
    request = coap.Message(0, 1, 0x0101, b"tok", coap.uri_path_options("/x"))
    empty = coap.ack_for(request)
    assert fields_of(empty) == (2, 0, 0x0101, b"", [], b"")
    assert empty.encode() == h("60000101")
    answer = coap.ack_for(request, coap.CONTENT, [(12, b"")], b"ok")
    assert fields_of(answer) == (2, 0x45, 0x0101, b"tok", [(12, b"")], b"ok")


def test_message_ids_count_and_wrap(coap):
    ids = coap.MessageIds(65534)
    assert [ids.next() for _ in range(4)] == [65534, 65535, 0, 1]
    starts = {coap.MessageIds().next() for _ in range(8)}
    assert all(0 <= s <= 0xFFFF for s in starts) and len(starts) > 1


def test_new_token(coap):
    assert len(coap.new_token()) == 4
    assert len(coap.new_token(8)) == 8
    assert coap.new_token() != coap.new_token()


def test_code_text(coap):
    assert coap.code_text(0x45) == "2.05"
    assert coap.code_text(0xA3) == "5.03"
    assert coap.code_text(0x01) == "0.01"


# ---- constants agree with an independent table (aiocoap's) -----------------------------------

CODE_NAMES = [
    "EMPTY", "GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "CREATED", "DELETED", "VALID",
    "CHANGED", "CONTENT", "CONTINUE", "BAD_REQUEST", "UNAUTHORIZED", "BAD_OPTION", "FORBIDDEN",
    "NOT_FOUND", "METHOD_NOT_ALLOWED", "NOT_ACCEPTABLE", "REQUEST_ENTITY_INCOMPLETE",
    "PRECONDITION_FAILED", "REQUEST_ENTITY_TOO_LARGE", "UNSUPPORTED_CONTENT_FORMAT",
    "TOO_MANY_REQUESTS", "INTERNAL_SERVER_ERROR", "NOT_IMPLEMENTED", "BAD_GATEWAY",
    "SERVICE_UNAVAILABLE", "GATEWAY_TIMEOUT", "PROXYING_NOT_SUPPORTED",
]  # fmt: skip
OPTION_NAMES = [
    "IF_MATCH", "URI_HOST", "ETAG", "IF_NONE_MATCH", "OBSERVE", "URI_PORT", "LOCATION_PATH",
    "OSCORE", "URI_PATH", "CONTENT_FORMAT", "MAX_AGE", "URI_QUERY", "HOP_LIMIT", "ACCEPT",
    "LOCATION_QUERY", "BLOCK2", "BLOCK1", "SIZE2", "PROXY_URI", "PROXY_SCHEME", "SIZE1", "ECHO",
    "NO_RESPONSE", "REQUEST_TAG",
]  # fmt: skip


def test_constants_match_aiocoap(coap):
    for name in CODE_NAMES:
        assert getattr(coap, name) == int(getattr(aiocoap_codes.Code, name)), name
    for name in OPTION_NAMES:
        assert getattr(coap, name) == int(getattr(aiocoap_options.OptionNumber, name)), name
    assert (coap.CON, coap.NON, coap.ACK, coap.RST) == (0, 1, 2, 3)
    assert coap.IPATCH == 0x07  # RFC 8132 §2; aiocoap has no name for it

"""CoAP datagrams taken from other CoAP stacks' test suites, as data.

Only the datagram bytes and the field values those tests assert are carried over; each entry
names the repository, file and test it comes from. Where a stack is more lenient than RFC 7252
(it accepts what the RFC calls a message format error), the entry says so and we follow the RFC.

ACCEPTED: (source, wire, fields, round_trips). `fields` is what decode() must give;
`round_trips` is False where the message is well-formed but carries an option value whose
length a sender must not use (RFC 7252 §5.10), which Message.encode() refuses.
REJECTED: (source, wire, why): decode() must raise CoAPDecodeError.
STABLE_ORDER: (source, options as inserted, options in the order the wire must carry them).
"""

CON, NON, ACK, RST = 0, 1, 2, 3


def code(cls, detail):
    return cls << 5 | detail


def fields(type, code, mid, token=b"", options=(), payload=b""):  # noqa: PLR0917 - as Message
    return {
        "type": type,
        "code": code,
        "mid": mid,
        "token": token,
        "options": list(options),
        "payload": payload,
    }


h = bytes.fromhex

LIBCOAP = "obgm/libcoap tests/test_pdu.c "
AIOCOAP = "chrysn/aiocoap tests/test_encoding.py "
GO_COAP = "plgd-dev/go-coap udp/coder/coder_test.go "
CALIFORNIUM = (
    "eclipse-californium/californium californium-core/src/test/java/org/eclipse/californium/"
    "core/network/serialization/DataParserTest.java "
)
COAP_LITE = "martindisch/coap-lite src/packet.rs "
COAP_PACKET = "coapjs/coap-packet test.js "

LIBCOAP_LOCATION_PATH = (
    b"coap://example.com/12345/%3Fxyz/3048234234/23402348234/239084234-23/%AB%30%af/+123/"
    b"hfksdh/23480-234-98235/1204/243546345345243/0198sdn3-a-3///aff0934/97u2141/0002/"
    b"3932423532/56234023/----/=1234=/098141-9564643/21970-----/"
    b"82364923472wererewr0-921-39123-34/"
)

# written in decimal in the go-coap test
GO_COAP_NON_400 = h("58806baa86ed9e849613139f4814d20e17e7a0b79180b10e5214d2")

GO_COAP_PAYLOAD = h(
    "70739fbf627065781a636f61703a2f2f31302e3131322e3131322e31303a35373934"
    "30ffbf627065781e636f61702b7463703a2f2f31302e3131322e3131322e31303a34"
    "36333633ffffffff"
)

ACCEPTED = [
    # ---- libcoap: parser tests (t_parse_*) and encoder tests (t_encode_*) ---------------------
    (LIBCOAP + "t_parse_pdu1", h("40019334"), fields(CON, code(0, 1), 0x9334), True),
    (
        LIBCOAP + "t_parse_pdu2",
        h("55691234") + b"token",
        fields(NON, 0x69, 0x1234, b"token"),
        True,
    ),
    (
        LIBCOAP + "t_parse_pdu5 (option 0 empty, option 12 one byte)",
        h("55731234") + b"token" + h("00c100"),
        fields(NON, 0x73, 0x1234, b"token", [(0, b""), (12, b"\x00")]),
        True,
    ),
    (
        LIBCOAP + "t_parse_pdu7",
        h("55731234") + b"token" + h("00c100ff") + b"payload",
        fields(NON, 0x73, 0x1234, b"token", [(0, b""), (12, b"\x00")], b"payload"),
        True,
    ),
    (
        LIBCOAP + "t_parse_pdu8",
        h("50731234ff") + b"payload",
        fields(NON, 0x73, 0x1234, payload=b"payload"),
        True,
    ),
    (LIBCOAP + "t_parse_pdu11 (Empty ACK)", h("60001234"), fields(ACK, 0, 0x1234), True),
    (LIBCOAP + "t_parse_pdu12 (Empty RST)", h("70001234"), fields(RST, 0, 0x1234), True),
    (
        LIBCOAP + "t_encode_pdu1",
        h("45011234") + b"token",
        fields(CON, code(0, 1), 0x1234, b"token"),
        True,
    ),
    (
        LIBCOAP + "t_encode_pdu4 (Uri-Host 18 bytes, empty Uri-Path, option 8000)",
        h("609912343d05") + b"fancyproxy.coap.me" + h("84") + b"path" + h("00e81e28") + b"fancyopt",
        fields(
            ACK,
            0x99,
            0x1234,
            options=[(3, b"fancyproxy.coap.me"), (11, b"path"), (11, b""), (8000, b"fancyopt")],
        ),
        True,
    ),
    (
        LIBCOAP + "t_encode_pdu5 (8-byte token, If-Match, Accept)",
        h("68841234") + b"12345678" + h("18") + b"ABCDEFGH" + h("d10312"),
        fields(ACK, code(4, 4), 0x1234, b"12345678", [(1, b"ABCDEFGH"), (17, b"\x12")]),
        True,
    ),
    (
        LIBCOAP + "t_encode_pdu6",
        h("50021234ff") + b"12345678",
        fields(NON, code(0, 2), 0x1234, payload=b"12345678"),
        True,
    ),
    (LIBCOAP + "t_encode_pdu7", h("40431234"), fields(CON, code(2, 3), 0x1234), True),
    (
        LIBCOAP + "t_encode_pdu8",
        h("424312340001ff00"),
        fields(CON, code(2, 3), 0x1234, b"\x00\x01", payload=b"\x00"),
        True,
    ),
    (
        LIBCOAP + "t_encode_pdu9 (ETag, If-None-Match, Proxy-Uri)",
        h("6044123448") + b"someetag" + h("10dd1104") + b"someratherlonguri" + h("ff") + b"data",
        fields(
            ACK,
            code(2, 4),
            0x1234,
            options=[(4, b"someetag"), (5, b""), (35, b"someratherlonguri")],
            payload=b"data",
        ),
        True,
    ),
    (
        LIBCOAP + "t_encode_pdu10 (255-byte Location-Path)",
        h("6244123400008df2")
        + LIBCOAP_LOCATION_PATH
        + h("0d01")
        + b"//492403--098/"
        + h("c1")
        + b"*"
        + h("ff")
        + b"data",
        fields(
            ACK,
            code(2, 4),
            0x1234,
            b"\x00\x00",
            [(8, LIBCOAP_LOCATION_PATH), (8, b"//492403--098/"), (20, b"*")],
            b"data",
        ),
        True,
    ),
    # ---- aiocoap -------------------------------------------------------------------------------
    (AIOCOAP + "test_encode msg1 / test_decode rawdata1", h("40000000"), fields(CON, 0, 0), True),
    (
        AIOCOAP + "test_encode msg2 / test_decode rawdata2",
        h("6145bc90714461626364ff") + b"temp = 22.5 C",
        fields(ACK, code(2, 5), 0xBC90, b"q", [(4, b"abcd")], b"temp = 22.5 C"),
        True,
    ),
    # ---- go-coap -------------------------------------------------------------------------------
    (GO_COAP + "TestMarshalMessage (empty)", bytes([64, 0, 0, 0]), fields(CON, 0, 0), True),
    (
        GO_COAP + "TestMarshalMessage (GET)",
        bytes([64, 1, 0, 0]),
        fields(CON, code(0, 1), 0),
        True,
    ),
    (
        GO_COAP + "TestMarshalMessage (GET, payload)",
        bytes([64, 1, 0, 0, 0xFF, 0x1]),
        fields(CON, code(0, 1), 0, payload=b"\x01"),
        True,
    ),
    (
        GO_COAP + "TestMarshalMessage (GET, token, payload)",
        bytes([67, 1, 0, 0, 0x1, 0x2, 0x3, 0xFF, 0x1]),
        fields(CON, code(0, 1), 0, b"\x01\x02\x03", payload=b"\x01"),
        True,
    ),
    (
        GO_COAP + "TestMarshalMessage (NON 4.00, ETag, empty Content-Format, Block2, Size2)",
        GO_COAP_NON_400,
        fields(
            NON,
            code(4, 0),
            27562,
            h("86ed9e849613139f"),
            [(4, h("14d20e17e7a0b791")), (12, b""), (23, b"\x0e"), (28, h("14d2"))],
        ),
        True,
    ),
    (
        GO_COAP + "TestMarshalMessage (Uri-Path a/b/c/d/e, Content-Format text/plain)",
        bytes([67, 1, 0, 0, 1, 2, 3, 177, 97, 1, 98, 1, 99, 1, 100, 1, 101, 16, 255, 1]),
        fields(
            CON,
            code(0, 1),
            0,
            b"\x01\x02\x03",
            [(11, b"a"), (11, b"b"), (11, b"c"), (11, b"d"), (11, b"e"), (12, b"")],
            b"\x01",
        ),
        True,
    ),
    (
        GO_COAP + "TestUnmarshalMessage (2.05, options 2049 and 2053 via 2-byte delta)",
        h("484562a28da2290c180fb54a485e10a388000000008227105227106116e206dd0800420800ff")
        + GO_COAP_PAYLOAD,
        fields(
            CON,
            code(2, 5),
            25250,
            h("8da2290c180fb54a"),
            [
                (4, h("5e10a38800000000")),
                (12, h("2710")),
                (17, h("2710")),
                (23, h("16")),
                (2049, h("0800")),
                (2053, h("0800")),
            ],
            GO_COAP_PAYLOAD,
        ),
        True,
    ),
    (
        GO_COAP + "TestUnmarshalMessage (Observe, repeated Uri-Path)",
        h("48010000b0354cf5d972240d60556c69676874056c69676874"),
        fields(
            CON,
            code(0, 1),
            0,
            h("b0354cf5d972240d"),
            [(6, b""), (11, b"light"), (11, b"light")],
        ),
        True,
    ),
    (
        GO_COAP + "FuzzDecode seed 1 (ETag, Max-Age, payload)",
        bytes([0x40, 0x1, 0x30, 0x39, 0x46]) + b"weetag" + bytes([0xA1, 0x3, 0xFF]) + b"hi",
        fields(CON, code(0, 1), 0x3039, options=[(4, b"weetag"), (14, b"\x03")], payload=b"hi"),
        True,
    ),
    # ---- Californium: its parser also judges codes and option semantics; the codec only
    # judges the format, so these decode (the message layer answers with RST or 4.02) --------
    (
        CALIFORNIUM + "testParseMessageDetectsIllegalCodeClass (1.01, reserved class)",
        h("40210010"),
        fields(CON, code(1, 1), 0x10),
        True,
    ),
    (
        CALIFORNIUM + "testParseMessageDetectsIllegalCode (0.08, unassigned method)",
        h("40080010"),
        fields(CON, code(0, 8), 0x10),
        True,
    ),
    (
        CALIFORNIUM + "testParseMessageDetectsIllegalResponseCode (2.08)",
        h("40480010"),
        fields(CON, code(2, 8), 0x10),
        True,
    ),
    (
        CALIFORNIUM + "testParseMessageDetectsMalformedRst (RST 4.01: not Empty, a layer rule)",
        h("70810010"),
        fields(RST, code(4, 1), 0x10),
        True,
    ),
    (
        CALIFORNIUM + "testParseMessageDetectsBadOption (4-byte Uri-Port: a bad option)",
        h("40010010 7401020304".replace(" ", "")),
        fields(CON, code(0, 1), 0x10, options=[(7, h("01020304"))]),
        False,
    ),
    (
        CALIFORNIUM + "testParseMessageDetectsUnknownCriticalOption (option 25)",
        h("40010010d10c64"),
        fields(CON, code(0, 1), 0x10, options=[(25, b"d")]),
        True,
    ),
    (
        CALIFORNIUM + "testParseMessageIgnoresUnknownElectiveOption (24, 24, Proxy-Uri)",
        h("40010010d10b640165b461626364"),
        fields(CON, code(0, 1), 0x10, options=[(24, b"d"), (24, b"e"), (35, b"abcd")]),
        True,
    ),
    # ---- coap-lite -----------------------------------------------------------------------------
    (
        COAP_LITE + "test_decode_packet_with_options / test_encode_packet_with_options",
        h("4401849e515577e8b248690454657374 43613d31".replace(" ", "")),
        fields(
            CON,
            code(0, 1),
            33950,
            h("515577e8"),
            [(11, b"Hi"), (11, b"Test"), (15, b"a=1")],
        ),
        True,
    ),
    (
        COAP_LITE + "test_decode_packet_with_payload / test_encode_packet_with_payload",
        h("644513fdd0e24dacff48656c6c6f"),
        fields(ACK, code(2, 5), 5117, h("d0e24dac"), payload=b"Hello"),
        True,
    ),
    # ---- coap-packet (datagrams built by the test code, written out here) ----------------------
    (
        COAP_PACKET + "'both number and length extended by one byte' (option 42, 20 bytes)",
        h("4001002add1d07") + bytes(20) + h("ff") + bytes(5),
        fields(CON, code(0, 1), 42, options=[(42, bytes(20))], payload=bytes(5)),
        True,
    ),
    (
        COAP_PACKET + "'two-byte extended number' (option 1024)",
        h("4001002ae302f3000000ff") + bytes(5),
        fields(CON, code(0, 1), 42, options=[(1024, bytes(3))], payload=bytes(5)),
        True,
    ),
    (
        COAP_PACKET + "'two-byte extended length' (If-Match of 1024 bytes: longer than 8)",
        h("4001002a1e02f3") + bytes(1024) + h("ff") + bytes(5),
        fields(CON, code(0, 1), 42, options=[(1, bytes(1024))], payload=bytes(5)),
        False,
    ),
    (
        COAP_PACKET + "'should parse an empty message'",
        h("5000002a"),
        fields(NON, 0, 42),
        True,
    ),
]

# libcoap t_parse_pdu15 (OSS-Fuzz case for issue #199), rows as in the source.
LIBCOAP_PDU15 = bytes(
    [64, 91, 91, 91, 139, 91, 91, 91, 91, 91, 91, 91, 91, 91, 91, 0]
    + [0] * 11
    + [91, 91, 224, 224, 224]
    + [224] * 16
    + [224] * 12
    + [1, 0, 0, 0]
    + [0, 0, 0, 0, 224, 192]
    + [224] * 10
    + [224] * 8
    + [228]
    + [224] * 7
    + [224] * 9
    + [91] * 7
    + [91] * 16 * 5
    + [91] * 7
    + [224] * 9
    + [224] * 16
    + [224] * 6
    + [1, 0, 0, 0, 0, 0, 0, 0, 224, 224]
    + [224] * 16
    + [224] * 5
)

# libcoap t_parse_pdu17: 252 options each with delta 268 push the option number past 65535.
LIBCOAP_PDU17 = h("40019334") + b"\xd0\xff" * 252 + bytes(4)

REJECTED = [
    (LIBCOAP + "t_parse_pdu3 (option runs past the end)", h("53691234") + b"token", "truncated"),
    (LIBCOAP + "t_parse_pdu4 (token length 9)", h("59691234") + b"token1234", "token length"),
    (LIBCOAP + "t_parse_pdu4 (token length 15)", h("5f691234") + b"token1234", "token length"),
    (
        LIBCOAP + "t_parse_pdu6 (option length past the end)",
        h("55731234") + b"token" + h("00c100aef003"),
        "truncated",
    ),
    (LIBCOAP + "t_parse_pdu9 (RST 0.00 with a bare marker)", h("70001234ff"), "Empty"),
    (
        LIBCOAP + "t_parse_pdu10 (options, marker, no payload)",
        h("53731234") + b"tok" + h("3161c100ff"),
        "marker",
    ),
    (LIBCOAP + "t_parse_pdu13 (RST with payload)", h("70001234ff") + b"content", "Empty"),
    (LIBCOAP + "t_parse_pdu14 (ACK 0.00 with payload)", h("60001234ff") + b"content", "Empty"),
    (LIBCOAP + "t_parse_pdu15 (OSS-Fuzz #199)", LIBCOAP_PDU15, "fuzz"),
    (LIBCOAP + "t_parse_pdu16 (token length 10, no token)", h("5a0a5b5b"), "token length"),
    (LIBCOAP + "t_parse_pdu17 (option number overflow)", LIBCOAP_PDU17, "option number"),
    (
        AIOCOAP + "test_encode msg5 (aiocoap encodes an Empty CON with option 1234; §4.1 forbids)",
        h("40000000e403c5") + b"abcd",
        "Empty",
    ),
    (AIOCOAP + "test_decode rawdata3 (nibble 15 after an Empty header)", h("40000000f0"), "Empty"),
    (AIOCOAP + "test_decode rawdata4 (delta 14, no extension)", h("40000000e0"), "Empty"),
    (AIOCOAP + "test_decode rawdata5 (option of 4 absent bytes)", h("4000000004"), "Empty"),
    # the three above again as GET, so the option error itself is what is rejected
    (AIOCOAP + "test_decode rawdata3, code 0.01", h("40010000f0"), "delta nibble"),
    (AIOCOAP + "test_decode rawdata4, code 0.01", h("40010000e0"), "extended"),
    (AIOCOAP + "test_decode rawdata5, code 0.01", h("4001000004"), "truncated"),
    (
        GO_COAP + "TestUnmarshalMessage 1 (go-coap accepts the bare marker; §3 forbids it)",
        GO_COAP_NON_400 + b"\xff",
        "marker",
    ),
    (
        CALIFORNIUM + "testParseMessageDetectsMalformedOption",
        h("4001001024010203"),
        "truncated",
    ),
    (
        CALIFORNIUM + "testParseMessageDetectsMalformedToken",
        h("4801001024010203"),
        "token",
    ),
    (CALIFORNIUM + "testParseMessageDetectsMissingPayload", h("40010010ff"), "marker"),
    (COAP_PACKET + "'should throw if it reads version two'", h("8001002aff"), "version"),
    (
        COAP_PACKET + "'should parse the empty payload' (coap-packet accepts; §3 forbids)",
        h("5001002aff"),
        "marker",
    ),
    (
        COAP_PACKET + "'should raise an error if an empty message is longer than 5'",
        h("5000002a00"),
        "Empty",
    ),
]

STABLE_ORDER = [
    (
        LIBCOAP + "t_encode_pdu14 (repeated numbers keep their insertion order)",
        [
            (53, 59),
            (52, 56),
            (51, 53),
            (50, 50),
            (51, 54),
            (52, 57),
            (52, 58),
            (51, 55),
            (50, 51),
            (50, 52),
        ],
        [
            (50, 50),
            (50, 51),
            (50, 52),
            (51, 53),
            (51, 54),
            (51, 55),
            (52, 56),
            (52, 57),
            (52, 58),
            (53, 59),
        ],
    ),
    (
        LIBCOAP + "t_encode_pdu15 (numbers across the 13 and 269 extension steps)",
        [
            (300, 59),
            (13, 56),
            (10, 53),
            (7, 50),
            (11, 54),
            (268, 57),
            (269, 58),
            (12, 55),
            (8, 51),
            (9, 52),
        ],
        [
            (7, 50),
            (8, 51),
            (9, 52),
            (10, 53),
            (11, 54),
            (12, 55),
            (13, 56),
            (268, 57),
            (269, 58),
            (300, 59),
        ],
    ),
]

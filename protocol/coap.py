"""CoAP message codec (RFC 7252 §3) for MicroPython and CPython.

`Message(type, code, mid, token=b"", options=(), payload=b"")` is one datagram: `type` is CON,
NON, ACK or RST, `code` one int (class << 5 | detail), `options` a list of `(number, value)`
pairs with `value` as bytes, in wire order with repeats kept. `.encode()` checks the message
and writes it with the options ordered by number (repeats keep their relative order);
`decode(data)` reads bytes, bytearray or memoryview and raises `CoAPDecodeError` for every
message format error, never another exception.

Option values stay raw bytes on both sides: `uint_bytes`/`uint_value` convert the uint ones,
`uri_path_options`/`uri_path` the Uri-Path segments, `block_bytes`/`block_parts` Block1/2.
`ack_for`, `new_token` and `MessageIds` help build exchanges; `code_text` prints 2.05 style.

decode() enforces the format only (§3): reserved code classes, a non-Empty RST, unknown
critical options or option values of the wrong length all decode, and the message layer
answers them (RST, 4.02). encode() also refuses option value lengths a sender must not use.
"""

CON = 0
NON = 1
ACK = 2
RST = 3

# Codes: class << 5 | detail, written as c.dd in the RFCs.
EMPTY = 0x00  # 0.00
GET = 0x01
POST = 0x02
PUT = 0x03
DELETE = 0x04
FETCH = 0x05  # RFC 8132
PATCH = 0x06
IPATCH = 0x07
CREATED = 0x41  # 2.01
DELETED = 0x42  # 2.02
VALID = 0x43  # 2.03
CHANGED = 0x44  # 2.04
CONTENT = 0x45  # 2.05
CONTINUE = 0x5F  # 2.31, RFC 7959
BAD_REQUEST = 0x80  # 4.00
UNAUTHORIZED = 0x81  # 4.01 (OSCORE: unknown context, replay, Echo required)
BAD_OPTION = 0x82  # 4.02
FORBIDDEN = 0x83  # 4.03
NOT_FOUND = 0x84  # 4.04
METHOD_NOT_ALLOWED = 0x85  # 4.05
NOT_ACCEPTABLE = 0x86  # 4.06
REQUEST_ENTITY_INCOMPLETE = 0x88  # 4.08
PRECONDITION_FAILED = 0x8C  # 4.12
REQUEST_ENTITY_TOO_LARGE = 0x8D  # 4.13
UNSUPPORTED_CONTENT_FORMAT = 0x8F  # 4.15
TOO_MANY_REQUESTS = 0x9D  # 4.29, RFC 8516
INTERNAL_SERVER_ERROR = 0xA0  # 5.00
NOT_IMPLEMENTED = 0xA1  # 5.01
BAD_GATEWAY = 0xA2  # 5.02
SERVICE_UNAVAILABLE = 0xA3  # 5.03
GATEWAY_TIMEOUT = 0xA4  # 5.04
PROXYING_NOT_SUPPORTED = 0xA5  # 5.05

# Option numbers (RFC 7252 §12.2 and the RFCs named).
IF_MATCH = 1
URI_HOST = 3
ETAG = 4
IF_NONE_MATCH = 5
OBSERVE = 6  # RFC 7641
URI_PORT = 7
LOCATION_PATH = 8
OSCORE = 9  # RFC 8613
URI_PATH = 11
CONTENT_FORMAT = 12
MAX_AGE = 14
URI_QUERY = 15
HOP_LIMIT = 16  # RFC 8768
ACCEPT = 17
LOCATION_QUERY = 20
BLOCK2 = 23  # RFC 7959
BLOCK1 = 27
SIZE2 = 28
PROXY_URI = 35
PROXY_SCHEME = 39
SIZE1 = 60
ECHO = 252  # RFC 9175
NO_RESPONSE = 258  # RFC 7967
REQUEST_TAG = 292  # RFC 9175

# Content-Format ids used by this project.
FORMAT_TEXT = 0
FORMAT_LINK = 40
FORMAT_JSON = 50
FORMAT_CBOR = 60
FORMAT_SENML_JSON = 110
FORMAT_SENML_CBOR = 112

PAYLOAD_MARKER = 0xFF

# Value lengths (min, max) a sender must respect (RFC 7252 §5.10 and the RFCs above). A
# receiver treats an out-of-range value as an unrecognised option (§5.4.3), not as a format
# error, so only encode() enforces this table.
_VALUE_LENGTHS = {
    IF_MATCH: (0, 8),
    URI_HOST: (1, 255),
    ETAG: (1, 8),
    IF_NONE_MATCH: (0, 0),
    OBSERVE: (0, 3),
    URI_PORT: (0, 2),
    LOCATION_PATH: (0, 255),
    OSCORE: (0, 255),
    URI_PATH: (0, 255),
    CONTENT_FORMAT: (0, 2),
    MAX_AGE: (0, 4),
    URI_QUERY: (0, 255),
    HOP_LIMIT: (1, 1),
    ACCEPT: (0, 2),
    LOCATION_QUERY: (0, 255),
    BLOCK2: (0, 3),
    BLOCK1: (0, 3),
    SIZE2: (0, 4),
    PROXY_URI: (1, 1034),
    PROXY_SCHEME: (1, 255),
    SIZE1: (0, 4),
    ECHO: (1, 40),
    NO_RESPONSE: (0, 1),
    REQUEST_TAG: (0, 8),
}

_MAX_FIELD = 65535 + 269  # largest option delta or length the 2-byte extension can carry


class CoAPDecodeError(ValueError):
    pass


def _as_bytes(value, what):
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError("%s must be bytes, not %s" % (what, type(value).__name__))


def _check_int(value, low, high, what):
    # bool first: on CPython it is an int, and True must not pass as type 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError("%s must be an int in %d..%d, got %r" % (what, low, high, value))


def _field(value):
    """The 4-bit nibble and extension bytes for an option delta or length (§3.1)."""
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    value -= 269
    return 14, bytes((value >> 8, value & 0xFF))


def _in_number_order(options):
    previous = -1
    for number, _ in options:
        if number < previous:
            break
        previous = number
    else:
        return options
    # MicroPython's sort is not stable: the index keeps repeated options in their given order
    order = sorted(range(len(options)), key=lambda i: (options[i][0], i))
    return [options[i] for i in order]


class Message:
    # The positional order is the header's order, the API both sides were promised.
    def __init__(self, type, code, mid, token=b"", options=(), payload=b""):  # noqa: PLR0917
        self.type = type
        self.code = code
        self.mid = mid
        self.token = _as_bytes(token, "token")
        self.options = [(number, _as_bytes(value, "option value")) for number, value in options]
        self.payload = _as_bytes(payload, "payload")

    def option(self, number, default=None):
        """The first value of option `number`, or `default` when it is absent."""
        for n, value in self.options:
            if n == number:
                return value
        return default

    def option_values(self, number):
        return [value for n, value in self.options if n == number]

    def encode(self):
        _check_int(self.type, 0, 3, "type")
        _check_int(self.code, 0, 255, "code")
        _check_int(self.mid, 0, 0xFFFF, "message id")
        token = _as_bytes(self.token, "token")
        payload = _as_bytes(self.payload, "payload")
        if len(token) > 8:
            raise ValueError("token is %d bytes; at most 8" % len(token))
        options = []
        for number, value in self.options:
            _check_int(number, 0, 0xFFFF, "option number")
            value = _as_bytes(value, "option value")
            limits = _VALUE_LENGTHS.get(number)
            if limits is not None and not limits[0] <= len(value) <= limits[1]:
                raise ValueError(
                    "option %d value is %d bytes; it must be %d..%d"
                    % (number, len(value), limits[0], limits[1])
                )
            if len(value) > _MAX_FIELD:
                raise ValueError("option %d value is too long to encode" % number)
            options.append((number, value))
        if self.code == EMPTY and (token or options or payload):
            raise ValueError("an Empty message (0.00) carries no token, options or payload")
        out = bytearray(
            (0x40 | self.type << 4 | len(token), self.code, self.mid >> 8, self.mid & 0xFF)
        )
        out += token
        previous = 0
        for number, value in _in_number_order(options):
            delta, delta_ext = _field(number - previous)
            length, length_ext = _field(len(value))
            out.append(delta << 4 | length)
            out += delta_ext
            out += length_ext
            out += value
            previous = number
        if payload:
            out.append(PAYLOAD_MARKER)
            out += payload
        return bytes(out)

    def __eq__(self, other):
        return (
            isinstance(other, Message)
            and self.type == other.type
            and self.code == other.code
            and self.mid == other.mid
            and self.token == other.token
            and list(self.options) == list(other.options)
            and self.payload == other.payload
        )

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        # Messages are changed in place (built up, re-sent with a new mid): not usable as keys.
        raise TypeError("a CoAP Message is mutable and has no hash")

    def __repr__(self):
        parts = [_TYPE_NAMES[self.type] if self.type in (0, 1, 2, 3) else str(self.type)]
        parts.append(code_text(self.code) if isinstance(self.code, int) else repr(self.code))
        parts.append("mid=%r" % (self.mid,))
        if self.token:
            parts.append("token=" + self.token.hex())
        names = _option_names()
        for number, value in self.options:
            parts.append("%s=%r" % (names.get(number, "Option%s" % (number,)), value))
        if self.payload:
            payload = self.payload
            shown = repr(payload[:32]) + (
                "...(%d bytes)" % len(payload) if len(payload) > 32 else ""
            )
            parts.append("payload=" + shown)
        return "<Message %s>" % " ".join(parts)


_TYPE_NAMES = ("CON", "NON", "ACK", "RST")


def _option_names():
    # Built on demand: only repr() needs the names, and a node should not keep them in RAM.
    return {
        IF_MATCH: "If-Match",
        URI_HOST: "Uri-Host",
        ETAG: "ETag",
        IF_NONE_MATCH: "If-None-Match",
        OBSERVE: "Observe",
        URI_PORT: "Uri-Port",
        LOCATION_PATH: "Location-Path",
        OSCORE: "OSCORE",
        URI_PATH: "Uri-Path",
        CONTENT_FORMAT: "Content-Format",
        MAX_AGE: "Max-Age",
        URI_QUERY: "Uri-Query",
        HOP_LIMIT: "Hop-Limit",
        ACCEPT: "Accept",
        LOCATION_QUERY: "Location-Query",
        BLOCK2: "Block2",
        BLOCK1: "Block1",
        SIZE2: "Size2",
        PROXY_URI: "Proxy-Uri",
        PROXY_SCHEME: "Proxy-Scheme",
        SIZE1: "Size1",
        ECHO: "Echo",
        NO_RESPONSE: "No-Response",
        REQUEST_TAG: "Request-Tag",
    }


def decode(data):
    """One CoAP datagram -> Message; any message format error -> CoAPDecodeError."""
    try:
        return _decode(data)
    except MemoryError:
        # RFC 7252 sets no limit on the number of options; a datagram of thousands of empty
        # options can outgrow a node's heap. Drop it like any undecodable datagram.
        raise CoAPDecodeError("datagram needs more memory than is free")


def _decode(data):
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise TypeError("decode() wants bytes, bytearray or memoryview")
    end = len(data)
    if end < 4:
        raise CoAPDecodeError("%d bytes is shorter than the 4-byte header" % end)
    first = data[0]
    if first >> 6 != 1:
        raise CoAPDecodeError("version %d; only 1 exists" % (first >> 6))
    token_length = first & 0x0F
    if token_length > 8:
        raise CoAPDecodeError("token length %d is reserved (9-15)" % token_length)
    code = data[1]
    if code == EMPTY and (end != 4 or token_length):
        raise CoAPDecodeError("an Empty message (0.00) has a token or bytes after the message id")
    pos = 4 + token_length
    if pos > end:
        raise CoAPDecodeError("token cut short")
    token = data[4:pos]
    options = []
    number = 0
    payload = b""
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte == PAYLOAD_MARKER:
            if pos == end:
                raise CoAPDecodeError("payload marker with no payload")
            payload = data[pos:]
            break
        delta = byte >> 4
        length = byte & 0x0F
        # nibble 15 is only legal as the whole 0xFF marker byte (§3.1)
        if delta == 15:
            raise CoAPDecodeError("option delta nibble 15 is reserved")
        if length == 15:
            raise CoAPDecodeError("option length nibble 15 is reserved")
        if delta == 13:
            if pos >= end:
                raise CoAPDecodeError("extended option delta cut short")
            delta = data[pos] + 13
            pos += 1
        elif delta == 14:
            if pos + 2 > end:
                raise CoAPDecodeError("extended option delta cut short")
            delta = (data[pos] << 8 | data[pos + 1]) + 269
            pos += 2
        if length == 13:
            if pos >= end:
                raise CoAPDecodeError("extended option length cut short")
            length = data[pos] + 13
            pos += 1
        elif length == 14:
            if pos + 2 > end:
                raise CoAPDecodeError("extended option length cut short")
            length = (data[pos] << 8 | data[pos + 1]) + 269
            pos += 2
        number += delta
        if number > 0xFFFF:
            raise CoAPDecodeError("option number %d does not fit 16 bits" % number)
        if pos + length > end:
            raise CoAPDecodeError("option %d value cut short" % number)
        # an empty slice would be a fresh object on MicroPython: share the one empty bytes
        options.append((number, data[pos : pos + length] if length else b""))
        pos += length
    message = Message(first >> 4 & 3, code, data[2] << 8 | data[3])
    message.token = token
    message.options = options
    message.payload = payload
    return message


def code_text(code):
    """2.05 style: class, dot, two-digit detail."""
    return "%d.%02d" % (code >> 5, code & 0x1F)


def uint_bytes(value):
    """A uint option value in the fewest bytes (0 is the empty string, RFC 7252 §3.2)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a uint option value is a non-negative int, got %r" % (value,))
    size = 0
    rest = value
    while rest:
        size += 1
        rest >>= 8
    return value.to_bytes(size, "big")


def uint_value(data):
    """A uint option value back to int; leading zero bytes are allowed on receipt."""
    return int.from_bytes(bytes(data), "big")


def uri_path_options(path):
    """'/sensors/temp' -> [(URI_PATH, b'sensors'), (URI_PATH, b'temp')] (RFC 7252 §6.4).

    '' and '/' give no option; other empty segments ('a//b', 'a/') are kept. The segments
    are taken as they are: no percent-decoding.
    """
    if path.startswith("/"):
        path = path[1:]
    if not path:
        return []
    return [(URI_PATH, segment.encode()) for segment in path.split("/")]


def uri_path(options):
    """The Uri-Path options of a message (or an options list) joined as '/a/b' (§6.5).

    Segments are decoded as UTF-8; CPython raises ValueError (UnicodeDecodeError) for
    invalid UTF-8, MicroPython does not check.
    """
    if isinstance(options, Message):
        options = options.options
    return "/" + "/".join(value.decode() for number, value in options if number == URI_PATH)


def block_bytes(num, more, szx):
    """A Block1/Block2 value (RFC 7959 §2.2): block number, more flag, size 2**(szx + 4)."""
    if not 0 <= szx <= 6 or not 0 <= num < 1 << 20:
        raise ValueError("block number 0..2**20-1 and size exponent 0..6")
    return uint_bytes(num << 4 | (8 if more else 0) | szx)


def block_parts(data):
    """A Block1/Block2 value -> (num, more, szx)."""
    value = uint_value(data)
    return value >> 4, bool(value & 8), value & 7


def ack_for(request, code=EMPTY, options=(), payload=b""):
    """The ACK to a CON: empty, or a piggybacked response carrying the request's token."""
    token = request.token if code != EMPTY else b""
    return Message(ACK, code, request.mid, token, options, payload)


def new_token(length=4):
    """A random token; 4 bytes make a guessed match unlikely on a low-rate link (§5.3.1)."""
    import os

    return os.urandom(length)


class MessageIds:
    """Message ids counting up from a random start, wrapping at 16 bits (§4.4)."""

    def __init__(self, start=None):
        if start is None:
            start = uint_value(new_token(2))
        self._next = start & 0xFFFF

    def next(self):
        mid = self._next
        self._next = (mid + 1) & 0xFFFF
        return mid

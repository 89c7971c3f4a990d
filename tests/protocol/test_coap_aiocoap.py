"""protocol/coap.py against aiocoap's codec, both ways (hypothesis).

Ours -> aiocoap: what `Message.encode()` writes, `aiocoap.Message.decode` reads back as the same
type, code, mid, token, options (number and bytes, in order) and payload. aiocoap -> ours: what
aiocoap encodes, `decode()` reads as aiocoap meant it, and re-encoding gives aiocoap's bytes.

aiocoap turns option values into typed values (uint, text, block tuples) and re-encodes them
when asked for bytes, so the generated values are the ones that survive that: uints in the
fewest bytes, text as UTF-8. Each example crosses the MicroPython bridge once or twice, so the
example counts stay moderate. The tests take `interp` rather than the module proxy: hypothesis
probes its arguments' attributes, which a remote module would answer with a remote error.
"""

import warnings

import aiocoap
from aiocoap import optiontypes
from aiocoap.numbers.optionnumbers import OptionNumber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# RFC 7252 §5.10 and later RFCs: the value lengths a sender may use (what encode() enforces),
# written out here independently of protocol/coap.py.
RFC_LENGTHS = {
    1: (0, 8), 3: (1, 255), 4: (1, 8), 5: (0, 0), 6: (0, 3), 7: (0, 2), 8: (0, 255),
    9: (0, 255), 11: (0, 255), 12: (0, 2), 14: (0, 4), 15: (0, 255), 16: (1, 1), 17: (0, 2),
    20: (0, 255), 23: (0, 3), 27: (0, 3), 28: (0, 4), 35: (1, 1034), 39: (1, 255), 60: (0, 4),
    252: (1, 40), 258: (0, 1), 292: (0, 8),
}  # fmt: skip
REGISTERED = sorted({*RFC_LENGTHS, 13, 19, 21, 31, 548})
UINT_FORMATS = (optiontypes.UintOption, optiontypes.BlockOption, optiontypes.ContentFormatOption)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    # the `interp` fixture is a stateless handle: sharing it across examples is what we want
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def minimal_uint(value):
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def option_value(number):
    low, high = RFC_LENGTHS.get(number, (0, 300))
    form = OptionNumber(number).format
    if form in UINT_FORMATS:
        smallest = 0 if low == 0 else 256 ** (low - 1)
        return st.integers(smallest, 256 ** min(high, 4) - 1).map(minimal_uint)
    if form is optiontypes.StringOption:
        text = st.text(max_size=min(high, 40)).map(str.encode)
        return text.filter(lambda b: low <= len(b) <= high)
    # opaque: now and then long enough for the 1- and 2-byte length extensions
    return st.one_of(
        st.binary(min_size=low, max_size=min(high, 16)),
        st.binary(min_size=min(low + 13, high), max_size=high),
    )


option_numbers = st.one_of(st.sampled_from(REGISTERED), st.integers(0, 65535))
options = st.lists(
    option_numbers.flatmap(lambda n: option_value(n).map(lambda v: (n, v))), max_size=8
)


@st.composite
def messages(draw):
    type_ = draw(st.integers(0, 3))
    code = draw(st.integers(0, 255))
    mid = draw(st.integers(0, 0xFFFF))
    if code == 0:  # Empty: the header alone
        return (type_, code, mid, b"", [], b"")
    token = draw(st.binary(max_size=8))
    payload = draw(st.one_of(st.binary(max_size=24), st.binary(max_size=400)))
    return (type_, code, mid, token, draw(options), payload)


def in_wire_order(options):
    return [o for _, o in sorted(enumerate(options), key=lambda io: (io[1][0], io[0]))]


def aiocoap_view(message):
    return (
        int(message.mtype),
        int(message.code),
        message.mid,
        bytes(message.token),
        [(int(o.number), o.encode()) for o in message.opt.option_list()],
        bytes(message.payload),
    )


def our_view(message):
    return (
        message.type,
        message.code,
        message.mid,
        message.token,
        list(message.options),
        message.payload,
    )


def aiocoap_message(type_, code, mid, token, options, payload):  # noqa: PLR0917 - header order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        message = aiocoap.Message(mtype=type_, code=code, mid=mid, token=token, payload=payload)
    for number, value in options:
        message.opt.add_option(OptionNumber(number).create_option(decode=value))
    return message


@PROPERTY
@given(messages())
def test_what_we_encode_aiocoap_decodes_identically(interp, message):
    coap = interp.module("protocol.coap")
    type_, code, mid, token, opts, payload = message
    wire = coap.Message(*message).encode()
    theirs = aiocoap.Message.decode(wire)
    assert aiocoap_view(theirs) == (type_, code, mid, token, in_wire_order(opts), payload)


@PROPERTY
@given(messages())
def test_what_aiocoap_encodes_we_decode_identically(interp, message):
    coap = interp.module("protocol.coap")
    theirs = aiocoap_message(*message)
    wire = theirs.encode()
    ours = coap.decode(wire)
    assert our_view(ours) == aiocoap_view(theirs)
    # one message, one encoding: both encoders write the same bytes
    assert ours.encode() == wire


unregistered = st.tuples(
    st.integers(293, 65535).filter(lambda n: n != 548), st.binary(max_size=700)
)


@settings(PROPERTY, max_examples=60)
@given(
    st.integers(1, 255),
    st.lists(unregistered, min_size=1, max_size=4),
    st.binary(min_size=1, max_size=64),
)
def test_long_unregistered_options_both_ways(interp, code, opts, payload):
    # no length rule applies to these: long values and 2-byte deltas and lengths
    coap = interp.module("protocol.coap")
    theirs = aiocoap_message(0, code, 7, b"\x01", opts, payload)
    wire = theirs.encode()
    assert our_view(coap.decode(wire)) == aiocoap_view(theirs)
    assert coap.Message(0, code, 7, b"\x01", opts, payload).encode() == wire


@PROPERTY
@given(messages())
def test_decode_of_encode_is_identity(interp, message):
    coap = interp.module("protocol.coap")
    type_, code, mid, token, opts, payload = message
    decoded = coap.decode(coap.Message(*message).encode())
    assert our_view(decoded) == (type_, code, mid, token, in_wire_order(opts), payload)

"""OSCORE's wire details (RFC 8613 §5-§6): the errors, the OSCORE option, the AAD, and the
conversions between a CoAP message and the plaintext OSCORE encrypts. protocol/oscore.py puts
them together into a security context; the names are re-exported there.
"""

from protocol import cbor, coap
from protocol.oscore_seq import MAX_SEQNO

ALG_AES_CCM_16_64_128 = 10  # COSE algorithm id
KEY_LEN = 16
NONCE_LEN = 13
TAG_LEN = 8
MAX_ID_LEN = NONCE_LEN - 6  # 7: an ID longer than this cannot be placed in the nonce (§5.2)

_FLAG_KID = 0x08
_FLAG_KID_CONTEXT = 0x10
_FLAGS_RESERVED = 0xE0


class OSCOREError(ValueError):
    """Base of every OSCORE failure."""


class MalformedMessage(OSCOREError):
    """Not a well-formed OSCORE message (CoAP format, OSCORE option, outer options, plaintext)."""


class NotProtected(MalformedMessage):
    """The message carries no OSCORE option."""


class UnknownContext(OSCOREError):
    """The 'kid' or 'kid context' does not belong to this security context."""


class ReplayDetected(OSCOREError):
    """The request's sequence number was received before or is below the replay window."""


class DecryptionFailed(OSCOREError):
    """The AEAD tag does not verify: wrong key, wrong request binding or altered message."""


def piv_bytes(seqno):
    """A sender sequence number as a Partial IV: big-endian, fewest bytes, 0 -> b'\\x00'."""
    if seqno < 0 or seqno > MAX_SEQNO:
        raise ValueError("sequence number out of range 0..2^40-1")
    size = 1
    while seqno >> (8 * size):
        size += 1
    return seqno.to_bytes(size, "big")


def encode_option(piv, kid, kid_context):
    """The OSCORE option value (§6.1); None leaves a field out."""
    flags = len(piv) if piv else 0
    if kid is not None:
        flags |= _FLAG_KID
    if kid_context is not None:
        flags |= _FLAG_KID_CONTEXT
    if not flags:
        return b""
    out = bytearray((flags,))
    if piv:
        out += piv
    if kid_context is not None:
        if len(kid_context) > 255:
            raise ValueError("kid context longer than 255 bytes")
        out.append(len(kid_context))
        out += kid_context
    if kid is not None:
        out += kid
    return bytes(out)


def decode_option(value):
    """OSCORE option value -> (piv, kid_context, kid), None for each absent field."""
    if not value:
        return None, None, None
    flags = value[0]
    if flags & _FLAGS_RESERVED:
        raise MalformedMessage("OSCORE option: reserved flag bits set")
    n = flags & 0x07
    if n > 5:
        raise MalformedMessage("OSCORE option: Partial IV length %d is reserved" % n)
    if flags == 0:
        raise MalformedMessage("OSCORE option: all flags zero but the value is not empty")
    pos = 1 + n
    if pos > len(value):
        raise MalformedMessage("OSCORE option: Partial IV cut short")
    piv = value[1:pos] if n else None
    kid_context = None
    if flags & _FLAG_KID_CONTEXT:
        if pos >= len(value):
            raise MalformedMessage("OSCORE option: kid context length missing")
        end = pos + 1 + value[pos]
        if end > len(value):
            raise MalformedMessage("OSCORE option: kid context cut short")
        kid_context = value[pos + 1 : end]
        pos = end
    kid = None
    if flags & _FLAG_KID:
        kid = value[pos:]
    elif pos != len(value):
        raise MalformedMessage("OSCORE option: bytes after the last field")
    return piv, kid_context, kid


def aad(request_kid, request_piv):
    # Enc_structure = ["Encrypt0", h'', external_aad]; external_aad = bstr .cbor aad_array
    # (§5.4); no Class I options exist.
    external = cbor.dumps([1, [ALG_AES_CCM_16_64_128], request_kid, request_piv, b""])
    return cbor.dumps(["Encrypt0", b"", external])


def decode_outer(data):
    try:
        return coap.decode(data)
    except ValueError as e:
        raise MalformedMessage("CoAP: %s" % e)


def is_request_code(code):
    return 1 <= code <= 31


def is_response_code(code):
    return 64 <= code <= 191  # classes 2, 4 and 5


def plaintext_of(code, options, payload):
    # §5.3: the code byte, then the Class E options and payload exactly as CoAP writes them
    # after its header. Encoding a header-only message and dropping mid and token bytes
    # reuses the codec's option encoder (delta/length, ordering, value-length checks).
    encoded = coap.Message(coap.CON, code, 0, b"", options, payload).encode()
    return encoded[1:2] + encoded[4:]


def plaintext_as_is(code, data):
    # When every option of a message is Class E, its encoded options and payload are the
    # plaintext byte for byte (CoAP's option encoding is unique), so it is copied once
    # instead of being encoded again.
    start = 4 + (data[0] & 0x0F)
    out = bytearray(len(data) - start + 1)
    out[0] = code
    out[1:] = memoryview(data)[start:]
    return out


def with_header(template, plaintext):
    # The reverse: outer header and token around the decrypted code, options and payload.
    token = template.token
    out = bytearray(3 + len(token) + len(plaintext))
    out[0] = 0x40 | template.type << 4 | len(token)
    out[1] = plaintext[0]
    out[2] = template.mid >> 8
    out[3] = template.mid & 0xFF
    out[4 : 4 + len(token)] = token
    out[4 + len(token) :] = memoryview(plaintext)[1:]
    return bytes(out)


def decode_inner(plaintext, want_request):
    code = plaintext[0]
    if want_request and not is_request_code(code):
        raise MalformedMessage("decrypted code %d is not a request code" % code)
    if not want_request and not is_response_code(code):
        raise MalformedMessage("decrypted code %d is not a response code" % code)
    try:
        inner = coap.decode(bytes((0x40, code, 0, 0)) + plaintext[1:])
    except ValueError as e:
        raise MalformedMessage("decrypted options: %s" % e)
    for number, _ in inner.options:
        if number == coap.OSCORE:
            raise MalformedMessage("OSCORE option inside the ciphertext (nesting)")
    return inner


def split_outer(message, allowed):
    """The single OSCORE option value and the outer options kept; refuses anything else."""
    if message.option(coap.OSCORE) is None:
        raise NotProtected("no OSCORE option")
    oscore_value = None
    kept = []
    observe = None
    for number, value in message.options:
        if number == coap.OSCORE:
            if oscore_value is not None:
                raise MalformedMessage("more than one OSCORE option")
            oscore_value = value
        elif number == coap.OBSERVE:
            if observe is not None:
                raise MalformedMessage("more than one outer Observe option")
            observe = value
        elif number in allowed:
            kept.append((number, value))
        else:
            raise MalformedMessage("option %d is not allowed outside the ciphertext" % number)
    return oscore_value, kept, observe


def encode_plain(template, code, options, payload):
    try:
        return coap.Message(
            template.type, code, template.mid, template.token, options, payload
        ).encode()
    except ValueError as e:
        raise MalformedMessage("decrypted message: %s" % e)

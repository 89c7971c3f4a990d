"""OSCORE (RFC 8613) with AES-CCM-16-64-128 and HKDF-SHA256, on MicroPython and CPython.

    ctx = SecurityContext(master_secret, sender_id, recipient_id, master_salt=b"", id_context=None)
    ctx.sender_key, ctx.recipient_key, ctx.common_iv                       # bytes
    ctx.protect_request(coap_bytes, seqno=None) -> bytes                   # None: next number
    ctx.unprotect_request(data) -> (coap_bytes, request_piv)
    ctx.protect_response(coap_bytes, request_kid, request_piv, seqno=None) -> bytes
                                             # None: the request's nonce, no Partial IV
    ctx.unprotect_response(data, request_kid, request_piv) -> coap_bytes

Messages go in and out as encoded CoAP datagrams. Every failure is a `ValueError` subclass
(`OSCOREError` and below) whose name and text say why: malformed, unknown context, replay,
decryption failed. A `seqno` given explicitly is used as it is and the sender counter is left
alone (the RFC 8613 Appendix C vectors need 20; a response with its own Partial IV takes one
from `ctx.new_seqno()`). On a node, `sequence=SenderSequence(store, step)` keeps the counter
across deep sleep and power loss (protocol/oscore_seq.py) and protocol/oscore_client.py runs
an exchange with Echo recovery.

Options (§4.1): Uri-Host, Uri-Port and Proxy-Scheme stay outside (Class U); Observe goes both
inside and outside; everything else, known or not, is encrypted (Class E) - Uri-Path,
Content-Format, Echo among them. Proxy-Uri must be split into Uri-* options by the caller.
On receipt this code is stricter than §8.2/§8.4 step 1, which say to discard outer Class E
options: an outer option that no OSCORE peer of ours sends (anything but Uri-Host, Uri-Port,
Proxy-Scheme, Observe and, on an Observe response, Max-Age) refuses the message, so a
tampered message is never half-accepted. Observe: FETCH outside with Observe inside and out
on registration, empty inner Observe on notifications, whose Observe value the client gets
from their Partial IV; ordering notifications (the Notification Number of §7.4.1) is left to
the caller, as the nodes do not observe.
"""

from protocol import cbor, ccm, coap
from protocol.hkdf import hkdf_expand, hkdf_extract
from protocol.oscore_seq import (  # noqa: F401 - re-exported: the firmware builds on these
    MAX_SEQNO,
    MemorySequenceStore,
    ReplayWindow,
    SenderSequence,
    SequenceExhausted,
)
from protocol.oscore_wire import (  # noqa: F401 - the errors and helpers are part of this API
    ALG_AES_CCM_16_64_128,
    KEY_LEN,
    MAX_ID_LEN,
    NONCE_LEN,
    TAG_LEN,
    DecryptionFailed,
    MalformedMessage,
    NotProtected,
    OSCOREError,
    ReplayDetected,
    UnknownContext,
    aad,
    decode_inner,
    decode_option,
    decode_outer,
    encode_option,
    encode_plain,
    is_request_code,
    is_response_code,
    piv_bytes,
    plaintext_as_is,
    plaintext_of,
    split_outer,
    with_header,
)

_OUTER_REQUEST = (coap.URI_HOST, coap.URI_PORT, coap.PROXY_SCHEME)


def _derive(prk, ident, id_context, kind, length):
    info = cbor.dumps([ident, id_context, ALG_AES_CCM_16_64_128, kind, length])
    return hkdf_expand(prk, info, length)


class SecurityContext:
    """One OSCORE security context (§3): the common, sender and recipient parts.

    `sequence` is a `SenderSequence` (default: RAM only, starting at 0); give one backed by
    flash + RTC memory on a node. `replay_window` defaults to a fresh 32-entry window.
    """

    # The positional order is the API external conformance checks call.
    def __init__(
        self,
        master_secret,
        sender_id,
        recipient_id,
        master_salt=b"",
        id_context=None,
        *,
        sequence=None,
        replay_window=None,
    ):
        if len(sender_id) > MAX_ID_LEN or len(recipient_id) > MAX_ID_LEN:
            raise ValueError("sender and recipient ids are at most %d bytes" % MAX_ID_LEN)
        self.sender_id = bytes(sender_id)
        self.recipient_id = bytes(recipient_id)
        self.id_context = None if id_context is None else bytes(id_context)
        prk = hkdf_extract(master_salt, master_secret)
        self.sender_key = _derive(prk, self.sender_id, self.id_context, "Key", KEY_LEN)
        self.recipient_key = _derive(prk, self.recipient_id, self.id_context, "Key", KEY_LEN)
        self.common_iv = _derive(prk, b"", self.id_context, "IV", NONCE_LEN)
        self._sender_aes = ccm.block_cipher(self.sender_key)
        self._recipient_aes = ccm.block_cipher(self.recipient_key)
        self.sequence = sequence if sequence is not None else SenderSequence()
        self.replay_window = replay_window if replay_window is not None else ReplayWindow()

    def nonce(self, id_piv, piv):
        """§5.2: length of ID_PIV, ID_PIV and PIV left-padded, XOR the Common IV."""
        out = bytearray(self.common_iv)
        out[0] ^= len(id_piv)
        pos = NONCE_LEN - 5 - len(id_piv)
        for b in id_piv:
            out[pos] ^= b
            pos += 1
        pos = NONCE_LEN - len(piv)
        for b in piv:
            out[pos] ^= b
            pos += 1
        return bytes(out)

    def new_seqno(self):
        """Take the next sender sequence number (for a response with its own Partial IV)."""
        return self.sequence.next()

    # -- requests ------------------------------------------------------------------------

    def protect_request(self, coap_bytes, seqno=None):
        message = decode_outer(coap_bytes)
        if not is_request_code(message.code):
            raise ValueError("protect_request: code %d is not a request" % message.code)
        outer = []
        inner = []
        observe = None
        for option in message.options:
            number = option[0]
            if number == coap.OSCORE:
                raise ValueError("protect_request: already carries an OSCORE option")
            if number == coap.PROXY_URI:
                raise ValueError("protect_request: split Proxy-Uri into Uri-* options first")
            if number in _OUTER_REQUEST:
                outer.append(option)
            else:
                if number == coap.OBSERVE:
                    observe = option[1]
                inner.append(option)
        if outer or observe is not None:
            plaintext = plaintext_of(message.code, inner, message.payload)
        else:
            plaintext = plaintext_as_is(message.code, coap_bytes)
        if seqno is None:
            seqno = self.sequence.next()
        piv = piv_bytes(seqno)
        ciphertext = ccm.encrypt(
            self._sender_aes,
            self.nonce(self.sender_id, piv),
            plaintext,
            aad(self.sender_id, piv),
        )
        outer.append((coap.OSCORE, encode_option(piv, self.sender_id, self.id_context)))
        if observe is not None:
            # §4.1.3.5: Observe inside and out, and FETCH outside since POST cannot observe
            outer.append((coap.OBSERVE, observe))
        outer_code = coap.POST if observe is None else coap.FETCH
        return coap.Message(
            message.type, outer_code, message.mid, message.token, outer, ciphertext
        ).encode()

    def unprotect_request(self, data):
        message = decode_outer(data)
        if message.code not in (coap.POST, coap.FETCH):
            raise MalformedMessage("an OSCORE request is a POST or FETCH outside")
        value, kept, observe = split_outer(message, _OUTER_REQUEST)
        if (observe is not None) != (message.code == coap.FETCH):
            raise MalformedMessage("outer Observe goes with FETCH and only with FETCH")
        piv, kid_context, kid = decode_option(value)
        if piv is None or kid is None:
            raise MalformedMessage("a request needs a Partial IV and a kid")
        if kid != self.recipient_id:
            raise UnknownContext("kid %s is not this context's recipient" % kid.hex())
        if kid_context is not None and kid_context != self.id_context:
            raise UnknownContext("kid context %s does not match" % kid_context.hex())
        if len(message.payload) < TAG_LEN + 1:
            raise MalformedMessage("ciphertext shorter than a code byte and the tag")
        seqno = int.from_bytes(piv, "big")
        if not self.replay_window.is_fresh(seqno):
            raise ReplayDetected("replay: sequence number %d seen before or too old" % seqno)
        plaintext = self._open(self.nonce(self.recipient_id, piv), aad(kid, piv), message)
        inner = decode_inner(plaintext, True)
        # Verified: only now may the number count as received (§8.2 step 6).
        self.replay_window.mark(seqno)
        if not kept:
            return with_header(message, plaintext), piv
        kept.extend(inner.options)
        return encode_plain(message, inner.code, kept, inner.payload), piv

    # -- responses -----------------------------------------------------------------------

    def protect_response(self, coap_bytes, request_kid, request_piv, seqno=None):
        message = decode_outer(coap_bytes)
        if not is_response_code(message.code):
            raise ValueError("protect_response: code %d is not a response" % message.code)
        inner = []
        outer = []
        outer_code = coap.CHANGED
        for option in message.options:
            number = option[0]
            if number == coap.OSCORE:
                raise ValueError("protect_response: already carries an OSCORE option")
            if number == coap.OBSERVE:
                outer_code = coap.CONTENT  # §4.1.3.5: 2.05 outside for notifications
                # §4.1.3.5.2: the inner Observe of a notification is empty; the value rides
                # outside for proxies; the client orders notifications by Partial IV.
                inner.append((coap.OBSERVE, b""))
                outer.append(option)
            else:
                inner.append(option)
        if outer:
            plaintext = plaintext_of(message.code, inner, message.payload)
        else:
            plaintext = plaintext_as_is(message.code, coap_bytes)
        if seqno is None:
            piv = None
            nonce = self.nonce(request_kid, request_piv)
        else:
            piv = piv_bytes(seqno)
            nonce = self.nonce(self.sender_id, piv)
        ciphertext = ccm.encrypt(self._sender_aes, nonce, plaintext, aad(request_kid, request_piv))
        outer.append((coap.OSCORE, encode_option(piv, None, None)))
        return coap.Message(
            message.type, outer_code, message.mid, message.token, outer, ciphertext
        ).encode()

    def unprotect_response(self, data, request_kid, request_piv):
        message = decode_outer(data)
        if message.code not in (coap.CHANGED, coap.CONTENT):
            raise MalformedMessage("an OSCORE response is 2.04 or 2.05 outside")
        value, kept, observe = split_outer(message, (coap.MAX_AGE,))
        if kept and observe is None:
            raise MalformedMessage("outer Max-Age only goes with Observe")
        piv, kid_context, kid = decode_option(value)
        if kid is not None and kid != self.recipient_id:
            raise UnknownContext("response kid %s is not this context's recipient" % kid.hex())
        if kid_context is not None and kid_context != self.id_context:
            raise UnknownContext("kid context %s does not match" % kid_context.hex())
        if len(message.payload) < TAG_LEN + 1:
            raise MalformedMessage("ciphertext shorter than a code byte and the tag")
        if piv is None:
            id_piv = request_kid
            nonce_piv = request_piv
        else:
            id_piv = self.recipient_id
            nonce_piv = piv
        plaintext = self._open(
            self.nonce(id_piv, nonce_piv), aad(request_kid, request_piv), message
        )
        inner = decode_inner(plaintext, False)
        if piv is None or inner.option(coap.OBSERVE) is None:
            return with_header(message, plaintext)
        # §4.1.3.5.2: a notification's order is its Partial IV; give it as the Observe value
        # (three low bytes) the way CoAP clients expect.
        options = inner.options
        for i in range(len(options)):
            if options[i][0] == coap.OBSERVE:
                options[i] = (coap.OBSERVE, piv[-3:].lstrip(b"\x00"))
        return encode_plain(message, inner.code, options, inner.payload)

    def _open(self, nonce, aad, message):
        try:
            return ccm.decrypt(self._recipient_aes, nonce, message.payload, aad)
        except ccm.TagMismatch:
            raise DecryptionFailed("decryption failed: authentication tag mismatch")

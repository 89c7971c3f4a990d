"""A node's OSCORE request/response exchange, with Echo recovery (RFC 9175, RFC 8613 B.1.2).

The firmware loop is small and the helper says what to do next:

    exchange = Exchange(ctx, coap_request_bytes)
    out = exchange.first()
    send(out)
    while True:
        data = receive()
        action, out = exchange.on_response(data)
        if action == DONE:
            break                           # out: the verified plain CoAP response
        if action == SEND:
            send(out)                       # a new protected request (new message id)
        # WAIT: an empty ACK; the response follows as a separate CON: keep receiving

A response that arrives as a separate CON (the gateway took longer than its empty-ACK delay,
e.g. for a durable commit) is handled like a piggybacked one; the caller then acknowledges it
with `coap.ack_for(coap.decode(data))`, because acknowledging is CoAP messaging, not OSCORE.

Two answers make the helper ask for one more request, each at most once per exchange:

- a *protected* 4.01 carrying Echo: the gateway lost its replay window (restart) and wants
  proof of freshness. The request goes again with a fresh sequence number and that Echo value
  inside the ciphertext.
- an *unprotected* 4.01 ("replay detected"): anyone on the path could have sent it, so it
  proves nothing and changes nothing but this: the request goes again, protected afresh with
  a new sequence number (the first may really have been a duplicate of an older one).

Anything else that is not a verifiable OSCORE response raises an `OSCOREError` subclass
(`NotProtected` for other unprotected answers, `EchoFailed` when the retry is used up); the
caller treats that exchange as failed and keeps its reading for the next attempt.
"""

from protocol import coap
from protocol.oscore import NotProtected, OSCOREError, piv_bytes

DONE = 0
SEND = 1
WAIT = 2


class EchoFailed(OSCOREError):
    """The gateway asked for Echo (or signalled a replay) again after the one retry."""


class Exchange:
    def __init__(self, context, request):
        self.context = context
        self._request = coap.decode(request)
        self.echo_retried = False
        self.fresh_retried = False
        self.request_kid = None
        self.request_piv = None

    def first(self):
        """The protected request to send."""
        return self._protect()

    def _protect(self):
        ctx = self.context
        seqno = ctx.new_seqno()
        # The response is bound to this request by its kid and Partial IV (§5.4).
        self.request_kid = ctx.sender_id
        self.request_piv = piv_bytes(seqno)
        return ctx.protect_request(self._request.encode(), seqno)

    def _again(self, next_mid, echo):
        req = self._request
        req.mid = (req.mid + 1) & 0xFFFF if next_mid is None else next_mid
        if echo is not None:
            options = [o for o in req.options if o[0] != coap.ECHO]
            options.append((coap.ECHO, echo))
            req.options = options
        return SEND, self._protect()

    def on_response(self, data, next_mid=None):
        """(DONE, plain response bytes), (SEND, protected request bytes) or (WAIT, None).

        `next_mid` is the message id for a repeated request (default: the last one + 1), so
        the gateway's CoAP layer does not take it for a retransmission of the first.
        """
        message = coap.decode(data)
        if message.code == coap.EMPTY:
            if message.type == coap.ACK:
                return WAIT, None
            raise NotProtected("the gateway reset the exchange")
        if message.option(coap.OSCORE) is None:
            if message.code == coap.UNAUTHORIZED and not self.fresh_retried:
                self.fresh_retried = True
                return self._again(next_mid, None)
            if message.code == coap.UNAUTHORIZED:
                raise EchoFailed("unprotected 4.01 again after a fresh request")
            raise NotProtected("unprotected %s response" % coap.code_text(message.code))
        plain = self.context.unprotect_response(data, self.request_kid, self.request_piv)
        response = coap.decode(plain)
        echo = response.option(coap.ECHO)
        if response.code == coap.UNAUTHORIZED and echo is not None:
            if self.echo_retried:
                raise EchoFailed("protected 4.01 Echo again after the Echo retry")
            self.echo_retried = True
            return self._again(next_mid, echo)
        return DONE, plain

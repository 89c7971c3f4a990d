# CoAP test helpers that run on MicroPython as well as CPython (the MicroPython subset).
#
# The interop tests import this through the `interp` fixture, so in the [micropython] variant
# the UDP traffic, the encoding and the decoding all happen inside the micropython process:
# what libcoap answers is what a node would see.
import socket

from protocol import coap


def _address(host, port):
    return socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]


def exchange(port, datagram, timeout_s=3.0, host="127.0.0.1"):
    """Send one datagram to host:port and return the first datagram that comes back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout_s)
        sock.sendto(datagram, _address(host, port))
        data, _ = sock.recvfrom(1500)
        return bytes(data)
    finally:
        sock.close()


def describe(request):
    """What the responder answers: method, path and query, e.g. b'0.01 /a/b?x=1&y'."""
    text = coap.code_text(request.code) + " " + coap.uri_path(request)
    queries = [value.decode() for value in request.option_values(coap.URI_QUERY)]
    if queries:
        text += "?" + "&".join(queries)
    return text.encode()


class Responder:
    """A tiny CoAP server built on our codec: it answers each request with its description."""

    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(_address(host, port))

    def answer_one(self, timeout_s=5.0):
        """Serve one datagram; return the raw request bytes."""
        self.sock.settimeout(timeout_s)
        data, peer = self.sock.recvfrom(1500)
        request = coap.decode(data)
        if request.code == coap.EMPTY:
            # a CoAP ping (Empty CON) is answered with a Reset (RFC 7252 §4.3)
            reply = coap.Message(coap.RST, coap.EMPTY, request.mid)
        else:
            options = [(coap.CONTENT_FORMAT, coap.uint_bytes(coap.FORMAT_TEXT))]
            if request.type == coap.CON:
                reply = coap.ack_for(request, coap.CONTENT, options, describe(request))
            else:
                reply = coap.Message(
                    coap.NON,
                    coap.CONTENT,
                    (request.mid + 1) & 0xFFFF,
                    request.token,
                    options,
                    describe(request),
                )
        self.sock.sendto(reply.encode(), peer)
        return bytes(data)

    def close(self):
        self.sock.close()


def compare(a, b):
    """(a == b, a != b), evaluated here: the bridge keeps messages remote."""
    return (a == b, a != b)


def decode_from(kind, data):
    """decode() fed a bytearray, a memoryview, or a memoryview slice of a larger buffer."""
    if kind == "bytearray":
        return coap.decode(bytearray(data))
    if kind == "memoryview":
        return coap.decode(memoryview(data))
    buffer = bytearray(b"junk") + bytearray(data) + bytearray(b"tail")
    return coap.decode(memoryview(buffer)[4 : 4 + len(data)])


def summary(data):
    """decode() with a small answer: ("message", options, payload bytes) or ("rejected", why)."""
    try:
        message = coap.decode(data)
    except coap.CoAPDecodeError as e:
        return ("rejected", str(e))
    return ("message", len(message.options), len(message.payload))


def outcomes(datagrams):
    """decode() each datagram; one summary per datagram, so a fuzz batch is one bridge call.

    ("message", fields..., re-encoded bytes or None when encode() refuses with ValueError)
    ("rejected", message) for CoAPDecodeError; ("crash", class name, text) for anything else.
    """
    results = []
    for data in datagrams:
        try:
            message = coap.decode(data)
        except coap.CoAPDecodeError as e:
            results.append(("rejected", str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - the point is to report any other failure
            results.append(("crash", type(e).__name__, str(e)))
            continue
        try:
            again = message.encode()
        except ValueError:
            again = None
        results.append(
            (
                "message",
                message.type,
                message.code,
                message.mid,
                message.token,
                [tuple(option) for option in message.options],
                message.payload,
                again,
            )
        )
    return results

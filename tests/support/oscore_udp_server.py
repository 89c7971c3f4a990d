# A small CoAP/UDP OSCORE server built on protocol.oscore, for the interop test with aiocoap's
# OSCORE client. Written in the MicroPython subset; runs under `micropython` and `python`:
#
#     micropython tests/support/oscore_udp_server.py SECRET SALT SERVER_ID CLIENT_ID PORT
#
# (byte strings in hex). Binds 127.0.0.1:PORT (MicroPython's sockets have no getsockname, so
# the caller picks the port) and prints "READY"; then for every request prints
# "ACCEPT <path> <seqno> <payload hex>" or "REFUSE <error class>". Resources: GET /hello ->
# 2.05 "Hello World!", POST /echo -> 2.04 with the payload reversed.
import socket
import sys

from protocol import coap, oscore

# RFC 8613 §7.4 / §8.2: the unprotected answers a server MAY give for OSCORE failures
_ERRORS = (
    (oscore.ReplayDetected, coap.UNAUTHORIZED, b"Replay detected"),
    (oscore.UnknownContext, coap.UNAUTHORIZED, b"Security context not found"),
    (oscore.NotProtected, coap.UNAUTHORIZED, b"OSCORE required"),
    (oscore.DecryptionFailed, coap.BAD_REQUEST, b"Decryption failed"),
    (oscore.MalformedMessage, coap.BAD_OPTION, b"Failed to decode COSE"),
)


def _reply_header(outer):
    kind = coap.ACK if outer.type == coap.CON else coap.NON
    return kind, outer.mid, outer.token


def handle(request):
    path = coap.uri_path(request)
    if path == "/hello" and request.code == coap.GET:
        return coap.CONTENT, [(coap.CONTENT_FORMAT, b"")], b"Hello World!"
    if path == "/echo" and request.code == coap.POST:
        return coap.CHANGED, [], bytes(reversed(request.payload))
    return coap.NOT_FOUND, [], b""


def answer(ctx, data):
    try:
        plain, piv = ctx.unprotect_request(data)
    except oscore.OSCOREError as e:
        print("REFUSE", type(e).__name__)
        try:
            outer = coap.decode(data)
        except ValueError:
            return None  # not even CoAP: nothing to answer
        for error, code, text in _ERRORS:
            if isinstance(e, error):
                kind, mid, token = _reply_header(outer)
                # Max-Age 0: no intermediary should cache an OSCORE error (§8.2)
                options = [(coap.MAX_AGE, b"")]
                return coap.Message(kind, code, mid, token, options, text).encode()
        return None
    request = coap.decode(plain)
    code, options, payload = handle(request)
    seqno = int.from_bytes(piv, "big")
    print("ACCEPT", coap.uri_path(request), seqno, request.payload.hex() or "-")
    kind, mid, token = _reply_header(request)
    response = coap.Message(kind, code, mid, token, options, payload).encode()
    return ctx.protect_response(response, ctx.recipient_id, piv)


def main(argv):
    secret, salt, server_id, client_id = (bytes.fromhex(a) for a in argv[1:5])
    ctx = oscore.SecurityContext(secret, server_id, client_id, salt)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(socket.getaddrinfo("127.0.0.1", int(argv[5]))[0][-1])
    print("READY")
    while True:
        data, address = sock.recvfrom(1500)
        out = answer(ctx, data)
        if out is not None:
            sock.sendto(out, address)


if __name__ == "__main__":
    main(sys.argv)

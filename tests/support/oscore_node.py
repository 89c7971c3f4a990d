# A node's side of OSCORE over real UDP, for tests: runs on MicroPython (through the bridge)
# and on CPython. Written in the MicroPython subset, like protocol/.
import socket

from protocol import coap, oscore
from protocol.oscore_client import DONE, SEND, Exchange


def is_oscore_error(name):
    """Whether protocol.oscore's class `name` is an OSCOREError (the bridge keeps only the
    name and the ValueError family of a remote exception, so the check runs here)."""
    return issubclass(getattr(oscore, name), oscore.OSCOREError)


class UDPNode:
    """An OSCORE client node talking CoAP/UDP to 127.0.0.1:port."""

    def __init__(self, port, master_secret, sender_id, recipient_id, master_salt=b""):
        self.context = oscore.SecurityContext(master_secret, sender_id, recipient_id, master_salt)
        self.address = socket.getaddrinfo("127.0.0.1", port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.mid = 0x2000
        self.sent = []  # every protected datagram, for replay tests

    def _mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def _receive(self, sock, mid, token):
        # Skip anything that is not about this request (a late duplicate, say). A separate
        # response (CON) is acknowledged here: CoAP messaging, below OSCORE.
        while True:
            data = sock.recvfrom(1024)[0]
            message = coap.decode(data)
            if message.type == coap.CON and message.token == token:
                sock.sendto(coap.ack_for(message).encode(), self.address)
                return data
            if message.type == coap.ACK and message.mid == mid:
                return data

    def post(self, path, payload):
        """One confirmable POST through Exchange: (code, payload, echo_retried, sends)."""
        mid = self._mid()
        token = b"\x70" + bytes((mid & 0xFF,))
        plain = coap.Message(
            coap.CON, coap.POST, mid, token, coap.uri_path_options(path), payload
        ).encode()
        exchange = Exchange(self.context, plain)
        out = exchange.first()
        sends = 0
        while True:
            if out is not None:
                self.sent.append(out)
                sends += 1
                self.sock.sendto(out, self.address)
                mid = coap.decode(out).mid
            data = self._receive(self.sock, mid, token)
            action, result = exchange.on_response(data, self._mid())
            if action == DONE:
                answer = coap.decode(result)
                return answer.code, answer.payload, exchange.echo_retried, sends
            out = result if action == SEND else None

    def protect(self, path, payload):
        """A protected POST that is not sent (for tampering tests)."""
        mid = self._mid()
        plain = coap.Message(
            coap.CON, coap.POST, mid, b"\x71", coap.uri_path_options(path), payload
        ).encode()
        return self.context.protect_request(plain)

    def send_raw(self, data):
        """Send one datagram from a new socket (a new source port, as an attacker would, so
        the server's CoAP duplicate detection does not answer from its cache) and return the
        raw answer, or None after the timeout."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(3)
        try:
            sock.sendto(data, self.address)
            try:
                return sock.recvfrom(1024)[0]
            except OSError:
                return None
        finally:
            sock.close()

    def close(self):
        self.sock.close()

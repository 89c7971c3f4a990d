# The CoAP link over UDP (WiFi): one confirmable, OSCORE-protected POST per uplink, with RFC 7252
# reliability: first timeout random in [ACK_TIMEOUT, ACK_TIMEOUT x 1.5], doubled after each of
# MAX_RETRANSMIT retransmissions; NSTART 1 (one exchange at a time: this client is synchronous);
# a random token and a fresh message id per request; responses matched on message id (ACK, RST)
# and token (piggybacked or separate response); Echo recovery through protocol.oscore_client.

import os

from micropython import const

from firmware.node.link import LinkDown, Refused, finish, request  # noqa: F401 - re-exported
from protocol import coap, oscore_client

# A separate response (after an empty ACK) may take the gateway a store commit; wait this long
_SEPARATE_TIMEOUT_MS = const(10000)
_IDLE_MS = const(20)


def _nothing():
    pass


class CoAPLink:
    name = "coap"

    def __init__(self, board, cfg, context):
        self.board = board
        self.server = (cfg["host"], cfg["port"])
        self.path = cfg["path"]
        self.ack_timeout_ms = cfg["ack_timeout_ms"]
        self.max_retransmit = cfg["max_retransmit"]
        self.context = context
        self.mids = coap.MessageIds()
        self.udp = board.udp(cfg.get("listen_port", 0))
        self.sends = 0
        self.feed = _nothing  # the runtime's watchdog feed, called once per transmission
        # an always-on node's background work (lamp fades), run every IDLE_MS while waiting
        self.idle = None
        # requests from the gateway that arrive while this client waits (a lamp's wake-ups)
        self.requests = []  # type: list
        self.rssi_dbm = None
        self.snr_db = None

    def max_payload(self):
        return 1024  # RFC 7252 §4.6 without path MTU knowledge

    def exchange(self, payload, confirmed=True):
        """POST the payload; the response payload once the gateway has committed it."""
        req = request(self.mids, coap.CON, self.path, payload)
        ex = oscore_client.Exchange(self.context, req.encode())
        out = ex.first()
        while True:
            msg = coap.decode(out)
            data = self._transmit(out, msg.mid, msg.token)
            action, out = ex.on_response(data, self.mids.next())
            if action == oscore_client.DONE:
                self.rssi_dbm = self.board.wlan_rssi()
                return finish(out)

    def _transmit(self, data, mid, token):
        board = self.board
        # RFC 7252 §4.2: initial timeout uniformly in [ACK_TIMEOUT, ACK_TIMEOUT * 1.5]
        timeout = self.ack_timeout_ms + self.ack_timeout_ms * os.urandom(1)[0] // 510
        for _ in range(self.max_retransmit + 1):
            self.feed()
            self.udp.sendto(data, self.server)
            self.sends += 1
            deadline = board.ticks_add(board.ticks_ms(), timeout)
            while True:
                left = board.ticks_diff(deadline, board.ticks_ms())
                if left <= 0:
                    break
                reply = self._match(self.recvfrom(left), mid, token)
                if reply == b"":
                    return self._separate(token)
                if reply is not None:
                    return reply
            timeout *= 2
        raise LinkDown("no answer after %d sends" % (self.max_retransmit + 1))

    def recvfrom(self, timeout_ms):
        """(datagram, sender) or None; with an idle hook, in slices of IDLE_MS that run it."""
        if self.idle is None:
            return self.udp.recvfrom(timeout_ms)
        self.idle()
        return self.udp.recvfrom(min(timeout_ms, _IDLE_MS))

    def _match(self, got, mid, token):
        """The response bytes if `got` answers us, b"" for an empty ACK, None to keep waiting."""
        if got is None:
            return None
        pkt = got[0]
        try:
            msg = coap.decode(pkt)
        except ValueError:
            return None  # not CoAP: ignore, as §4.2 says for undecodable messages
        if msg.type == coap.RST and msg.mid == mid:
            raise LinkDown("reset by the gateway")
        if msg.type == coap.ACK and msg.mid == mid:
            if msg.code == coap.EMPTY:
                return b""
            return pkt if msg.token == token else None
        if msg.type in (coap.CON, coap.NON) and msg.token == token and msg.code >> 5 >= 2:
            self._ack(msg)
            return pkt
        if msg.type in (coap.CON, coap.NON) and 0 < msg.code < 32:
            self.requests.append(got)  # a request to this node: the server part answers it
            return None
        if msg.type == coap.CON:
            # a confirmable message that is not ours: reject it (§4.2)
            self.udp.sendto(coap.Message(coap.RST, coap.EMPTY, msg.mid).encode(), self.server)
        return None

    def _separate(self, token):
        board = self.board
        deadline = board.ticks_add(board.ticks_ms(), _SEPARATE_TIMEOUT_MS)
        while board.ticks_diff(deadline, board.ticks_ms()) > 0:
            got = self.recvfrom(board.ticks_diff(deadline, board.ticks_ms()))
            if got is None:
                continue
            pkt = got[0]
            try:
                msg = coap.decode(pkt)
            except ValueError:
                continue
            if msg.type in (coap.CON, coap.NON) and msg.token == token:
                self._ack(msg)
                return pkt
        raise LinkDown("separate response never came")

    def _ack(self, msg):
        if msg.type == coap.CON:
            self.udp.sendto(coap.ack_for(msg).encode(), self.server)

    def close(self):
        self.udp.close()

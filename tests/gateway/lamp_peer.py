# A mains-powered lamp for the link tests, in the MicroPython subset (it runs inside the bridge's
# micropython process, and on CPython). Its uplinks are OSCORE-protected POSTs like any node's;
# the gateway's wake-ups are served by the firmware's own lamp server (firmware/node/mains.py
# Server, with firmware/node/downlink.py applying them) on the same UDP socket, as on a lamp.
import socket
import time

from firmware.node import mains
from firmware.node.mains import Server
from protocol import coap, oscore
from protocol.oscore_client import DONE, SEND, Exchange

# The lamp code reports to its console with print(); inside the test bridge stdout carries the
# bridge's own replies, so the console lines are kept here instead.
console = []


def _console(*args):
    console.append(" ".join(str(a) for a in args))


mains.print = _console


class LightingKind:
    """Records the commands the downlink code hands to the kind."""

    def __init__(self):
        self.commands = []

    def command(self, record, now):
        self.commands.append(record)
        return {}

    def configure(self, changes):
        pass


class LampNode:
    """What firmware/node/downlink.py needs of the node runtime."""

    def __init__(self):
        self.cfg = {"kind": "lighting", "kind_config": {}}
        self.kind = LightingKind()
        self.errors = []
        self.acks = []
        self.state = {}
        self.reboot = False
        self.identify_s = 0
        self.queued = []  # (record, priority) the runtime would send in its next uplink

    def queue(self, msg, alarm=False):
        self.queued.append((dict(msg), alarm))

    def now(self):
        return int(time.time())

    def error(self, text):
        self.errors.append(text)

    def take(self, out):
        return 60


class Lamp:
    def __init__(self, port, master_secret, sender_id, recipient_id, master_salt):
        self.context = oscore.SecurityContext(master_secret, sender_id, recipient_id, master_salt)
        self.gateway = socket.getaddrinfo("127.0.0.1", port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
        self.node = LampNode()
        self.server = Server(self.node, self.context)
        self.mid = 0x4000
        self.requests = []  # requests heard while waiting for a response

    def _mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def post(self, path, payload):
        """One confirmable POST; (code, payload) of the verified response."""
        mid = self._mid()
        token = b"\x6c" + bytes((mid & 0xFF,))
        plain = coap.Message(
            coap.CON, coap.POST, mid, token, coap.uri_path_options(path), payload
        ).encode()
        exchange = Exchange(self.context, plain)
        out = exchange.first()
        self.sock.settimeout(5)
        while True:
            if out is not None:
                self.sock.sendto(out, self.gateway)
                mid = coap.decode(out).mid
            while True:
                data, addr = self.sock.recvfrom(1024)
                message = coap.decode(data)
                if message.type == coap.ACK and message.mid == mid:
                    break
                if 0 < message.code < 32:
                    self.requests.append((data, addr))
            action, result = exchange.on_response(data, self._mid())
            if action == DONE:
                answer = coap.decode(result)
                return answer.code, answer.payload
            out = result if action == SEND else None

    def serve(self, timeout_ms, commands=1):
        """Serve the gateway's requests until `commands` have been applied or time runs out;
        returns the commands applied so far (dicts as protocol.schema decodes them)."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while len(self.node.kind.commands) < commands:
            while self.requests:
                data, addr = self.requests.pop(0)
                self._handle(data, addr)
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                break
            self.sock.settimeout(left / 1000)
            try:
                data, addr = self.sock.recvfrom(1024)
            except OSError:
                break
            self._handle(data, addr)
        return self.node.kind.commands

    def _handle(self, data, addr):
        def reply(out):
            self.sock.sendto(out, addr)

        self.server.handle(data, reply)

    def close(self):
        self.sock.close()


class LoRaLamp:
    """A lamp in continuous receive on the simulated medium (hil/medium.py datagrams): it
    answers the gateway's pushed requests with the firmware's lamp server, over the air."""

    def __init__(self, medium_port, position, channel, keys):
        master_secret, sender_id, recipient_id, master_salt = keys
        import json

        self.json = json
        self.context = oscore.SecurityContext(master_secret, sender_id, recipient_id, master_salt)
        self.medium = socket.getaddrinfo("127.0.0.1", medium_port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
        self.position = list(position)
        self.channel = dict(channel)
        self.node = LampNode()
        self.server = Server(self.node, self.context, radio=True)  # silent to strangers
        self.frames_sent = 0

    def _send(self, op, **fields):
        msg = {"op": op, "pos": self.position}
        msg.update(self.channel)
        msg.update(fields)
        self.sock.sendto(self.json.dumps(msg).encode(), self.medium)

    def listen(self):
        self._send("listen", ms=10000)

    def serve(self, timeout_ms, commands=1):
        """Receive continuously until `commands` were applied; answers go out as frames."""
        self.listen()
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while len(self.node.kind.commands) < commands:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                break
            self.sock.settimeout(left / 1000)
            try:
                msg = self.json.loads(self.sock.recvfrom(4096)[0])
            except OSError:
                break
            if msg.get("op") == "rx":
                self.server.handle(bytes.fromhex(msg["data"]), self._transmit)
            elif msg.get("op") == "txdone":
                self.listen()
        return self.node.kind.commands

    def _transmit(self, frame):
        self.frames_sent += 1
        self._send("tx", data=frame.hex(), t=0)

    def close(self):
        self._send("idle")
        self.sock.close()

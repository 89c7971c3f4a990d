# The sim board's LoRa radio: a client of the simulated radio medium (hil/medium.py, which
# documents the datagrams) with the API of firmware/drivers/sx127x.SX127x, so the node's LoRa
# link cannot tell it from the SX1276.

import json
import select
import socket
import time
from binascii import hexlify, unhexlify

# Like the SX127x, the radio hears nothing after TxDone until it is told to receive: the medium
# keeps no sender listening, so the node's RX window (receive, RX_DELAY_MS after TxDone) and a
# lamp's continuous receive (start_receive) are all it gets.
# How long the medium keeps a continuous receiver without hearing from it (real ms)
_LEASE_MS = 10000


class SimRadio:
    def __init__(
        self,
        board,
        *,
        freq_hz=868100000,
        sf=7,
        bw_hz=125000,
        cr=1,
        preamble=8,
        explicit_header=True,
        crc=True,
        ldro=None,
        power_dbm=14,
        sync_word=0x12,
        **_unused,
    ):
        self._board = board
        self.freq_hz = freq_hz
        self.sf = sf
        self.bw_hz = bw_hz
        self.cr = cr
        self.preamble = preamble
        self.explicit_header = explicit_header
        self.crc = crc
        self.ldro = ldro
        self.power_dbm = power_dbm
        self.rssi_dbm = None
        self.snr_db = None
        self.frames_sent = 0
        self.crc_errors = 0
        self._medium = None
        self._pending_tx = False
        self._lease_ms = 0
        medium = board.settings.get("medium")
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        if medium:
            self._medium = socket.getaddrinfo(medium[0], medium[1])[0][-1]

    def begin(self):
        return True

    def _msg(self, op, **fields):
        fields["op"] = op
        fields["pos"] = self._board.settings.get("position", [0, 0])
        fields["freq"] = self.freq_hz
        fields["sf"] = self.sf
        fields["bw"] = self.bw_hz
        if self._medium is not None:
            self._sock.sendto(json.dumps(fields).encode(), self._medium)

    def _next(self, real_ms):
        if not self._poll.poll(max(0, int(real_ms))):
            return None
        try:
            return json.loads(self._sock.recv(2048))
        except ValueError:
            return None

    def _drain(self):
        while self._next(0) is not None:
            pass

    # -- transmit ----------------------------------------------------------------------------
    def start_send(self, payload):
        self._drain()
        self._msg(
            "tx",
            cr=self.cr,
            preamble=self.preamble,
            header=bool(self.explicit_header),
            crc=bool(self.crc),
            ldro=self.ldro,
            power=self.power_dbm,
            t=self._board.epoch_ms(),
            data=hexlify(bytes(payload)).decode(),
        )
        self._pending_tx = True
        self.frames_sent += 1

    def tx_done(self):
        if not self._pending_tx:
            return True
        msg = self._next(0)
        while msg is not None:
            if msg.get("op") == "txdone":
                self._pending_tx = False
                return True
            msg = self._next(0)
        return self._medium is None

    def send(self, payload, timeout_ms=10000):
        begun = self._board.epoch_ms()
        try:
            return self._send(payload, timeout_ms)
        finally:
            self._board.radio_ms += self._board.epoch_ms() - begun

    def _send(self, payload, timeout_ms):
        self.start_send(payload)
        if self._medium is None:
            self._pending_tx = False
            return True
        # the medium answers after the frame's airtime on its own time scale, not the board's:
        # wait in real time
        end = time.ticks_add(time.ticks_ms(), timeout_ms)
        while time.ticks_diff(end, time.ticks_ms()) > 0:
            msg = self._next(20)
            self._board.service()
            if msg is not None and msg.get("op") == "txdone":
                self._pending_tx = False
                return True
        return False

    # -- receive -----------------------------------------------------------------------------
    def _take(self, msg):
        self.rssi_dbm = msg.get("rssi")
        self.snr_db = msg.get("snr")
        return unhexlify(msg["data"])

    def receive(self, timeout_ms):
        """One RX window of timeout_ms board time; the frame or None."""
        board = self._board
        self._msg("listen", ms=int(timeout_ms / board.speed) + 50)
        begun = board.epoch_ms()
        end = begun + timeout_ms
        try:
            while True:
                left = end - board.epoch_ms()
                if left <= 0:
                    return None
                board.service()
                msg = self._next(max(1, int(min(left, 20 * board.speed) / board.speed)))
                if msg is not None and msg.get("op") == "rx":
                    return self._take(msg)
        finally:
            self._msg("idle")
            board.radio_ms += board.epoch_ms() - begun

    def start_receive(self, continuous=True):
        self._msg("listen", ms=_LEASE_MS)
        self._lease_ms = self._board.epoch_ms()

    def poll(self):
        board = self._board
        if board.epoch_ms() - self._lease_ms > _LEASE_MS * board.speed / 2:
            self.start_receive()
        msg = self._next(0)
        while msg is not None:
            if msg.get("op") == "rx":
                return self._take(msg)
            msg = self._next(0)
        return None

    def sleep(self):
        self._msg("idle")

    def standby(self):
        self._msg("idle")

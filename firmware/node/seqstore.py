# Durable counters for protocol.oscore_seq.SenderSequence (RFC 8613 Appendix B.1.1): the OSCORE
# sender sequence number and the node's record counter (the schema's `seq`). Both must never
# repeat, across deep sleep and power loss.
#
#   live value   in RTC memory (node/rtcstate.py), written before each number is used
#   reservation  in a flash file of two slots, [value u64 BE, crc32 u32 BE] each, written
#                alternately; the larger valid one wins. A power cut can tear only the slot
#                being written, and that write happens before any number it covers is used, so
#                the older slot is still a safe place to resume from.

import struct
from binascii import crc32

from micropython import const

from firmware.node import rtcstate

_SLOT = const(12)


class SeqStore:
    def __init__(self, board, state, key, filename):
        self.board = board
        self.state = state  # the runtime's RTC dict, saved by rtcstate.save
        self.key = key
        self.filename = filename
        self.flash_writes = 0
        self._slots = [None, None]
        try:
            with board.open(filename, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        for i in range(2):
            part = data[i * _SLOT : (i + 1) * _SLOT]
            if len(part) == _SLOT and crc32(part[:8]) == struct.unpack(">I", part[8:])[0]:
                self._slots[i] = struct.unpack(">Q", part[:8])[0]

    def load_reserved(self):
        best = None
        for v in self._slots:
            if v is not None and (best is None or v > best):
                best = v
        return best

    def save_reserved(self, value):
        a, b = self._slots
        # overwrite the slot holding the smaller (or no) value
        i = 0 if a is None or (b is not None and a <= b) else 1
        body = struct.pack(">Q", value)
        slot = body + struct.pack(">I", crc32(body))
        try:
            f = self.board.open(self.filename, "r+b")
        except OSError:
            f = self.board.open(self.filename, "w+b")
            f.write(bytes(2 * _SLOT))
        f.seek(i * _SLOT)
        f.write(slot)
        f.flush()
        f.close()
        self._slots[i] = value
        self.flash_writes += 1

    def load_live(self):
        return self.state.get(self.key)

    def save_live(self, value):
        self.state[self.key] = value
        rtcstate.save_counters(self.board, self.state)

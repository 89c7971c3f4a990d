# Store-and-forward: a bounded ring of fixed-size records in one flash file, surviving a power
# loss in the middle of a write.
#
# Slot layout (SLOT = 64 bytes; slot n lives at offset n * SLOT):
#   0      state   0xA5 live, 0x00 sent (acknowledged by the gateway), anything else empty
#   1      flags   bit 0: alarm
#   2..5   seq     record counter (u32 BE), the schema's `seq`: the gateway's stable reading id
#   6..9   taken   epoch s when the reading was taken (u32 BE): its age when sent
#   10     length  of the payload, at most MAX_PAYLOAD
#   11..   payload the record as a CBOR map with the schema's integer keys
#   then   crc32 (u32 BE) of bytes 1 .. end of payload (not of the state byte, which changes)
#
# Power loss: a record is written in two steps, bytes 1..63 first and the state byte 0xA5
# last, then flushed; only an empty or sent slot (or, when the ring is full, the oldest routine
# record, given up already) is ever overwritten. A cut in the first step leaves the slot's old
# state byte: an empty or sent slot stays so (a sent record is never brought back to life by a
# new state byte over its old contents), an evicted record fails its CRC and is skipped. A cut
# between the steps loses only the record whose append had not returned. Marking records sent
# rewrites the state byte alone (one byte cannot tear); a sent mark lost to a power cut only
# means a record goes twice, with the same seq, and the gateway drops the duplicate.
#
# Flash writes: one flash commit (flush) per record stored, one per acknowledged batch.
# Drain order: alarms first, then routine records, each oldest first.

import struct
from binascii import crc32

from micropython import const

SLOT = const(64)
HEADER = const(11)
MAX_PAYLOAD = const(49)  # SLOT - HEADER - 4 (crc)
LIVE = const(0xA5)
SENT = const(0x00)
FLAG_ALARM = const(1)


class Ring:
    def __init__(self, board, name="ring.bin", slots=64):
        self.board = board
        self.slots = slots
        self.flash_commits = 0
        self.dropped = 0  # routine records evicted because the ring was full
        self.torn = 0  # slots found torn at start-up
        # per slot: seq of a live record, -1 when free (empty or sent)
        self._seq = [-1] * slots
        self._alarm = bytearray(slots)
        self._taken = [0] * slots
        self.max_seq = -1
        try:
            f = board.open(name, "r+b")
        except OSError:
            f = board.open(name, "w+b")
        self._f = f
        self._scan()

    def _scan(self):
        f = self._f
        buf = bytearray(SLOT)
        f.seek(0)
        present = 0
        for n in range(self.slots):
            got = f.readinto(buf)
            if not got or got < SLOT:
                break
            present += 1
            state = buf[0]
            if state not in (LIVE, SENT):
                continue
            length = buf[10]
            if length > MAX_PAYLOAD:
                self.torn += state == LIVE
                continue
            end = HEADER + length
            if crc32(memoryview(buf)[1:end]) != struct.unpack(">I", buf[end : end + 4])[0]:
                self.torn += state == LIVE
                continue
            seq, taken = struct.unpack(">II", buf[2:10])
            self.max_seq = max(self.max_seq, seq)
            if state == LIVE:
                self._seq[n] = seq
                self._alarm[n] = buf[1] & FLAG_ALARM
                self._taken[n] = taken
        if present < self.slots:
            # a new file, or one cut short while it was being created: pad it with empty slots
            f.seek(present * SLOT)
            f.write(bytes(SLOT * (self.slots - present)))
            self._commit()

    def _commit(self):
        self._f.flush()
        self.flash_commits += 1

    def __len__(self):
        return self.slots - self._seq.count(-1)

    def alarms(self):
        return sum(1 for n in range(self.slots) if self._seq[n] >= 0 and self._alarm[n])

    def _victim(self):
        """The slot to write: a free one, else the oldest routine record, else the oldest."""
        oldest = -1
        oldest_routine = -1
        for n in range(self.slots):
            seq = self._seq[n]
            if seq < 0:
                return n
            if oldest < 0 or seq < self._seq[oldest]:
                oldest = n
            if not self._alarm[n] and (oldest_routine < 0 or seq < self._seq[oldest_routine]):
                oldest_routine = n
        self.dropped += 1
        return oldest_routine if oldest_routine >= 0 else oldest

    def append(self, payload, seq, taken_s, alarm=False):
        """Store one record durably; when this returns it survives a power loss."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError("ring: record of %d bytes > %d" % (len(payload), MAX_PAYLOAD))
        n = self._victim()
        buf = bytearray(SLOT)
        buf[0] = LIVE
        buf[1] = FLAG_ALARM if alarm else 0
        struct.pack_into(">IIB", buf, 2, seq, taken_s & 0xFFFFFFFF, len(payload))
        end = HEADER + len(payload)
        buf[HEADER:end] = payload
        struct.pack_into(">I", buf, end, crc32(memoryview(buf)[1:end]))
        # the slot is marked free in RAM first: if the write fails half-way it is not live
        self._seq[n] = -1
        f = self._f
        f.seek(n * SLOT + 1)
        f.write(memoryview(buf)[1:])
        f.seek(n * SLOT)
        f.write(b"\xa5")
        self._commit()
        self._seq[n] = seq
        self._alarm[n] = 1 if alarm else 0
        self._taken[n] = taken_s
        self.max_seq = max(self.max_seq, seq)

    def pending(self, limit=64):
        """Slots to send next, in drain order: alarms then routine, each oldest first."""
        alarms = []  # type: list
        routine = []  # type: list
        for n in range(self.slots):
            if self._seq[n] >= 0:
                (alarms if self._alarm[n] else routine).append((self._seq[n], n))
        # seqs are unique, so the unstable sort cannot reorder equals
        alarms.sort()
        routine.sort()
        out = [e[1] for e in alarms]
        for e in routine:
            if len(out) >= limit:
                break
            out.append(e[1])
        return out[:limit]

    def is_alarm(self, n):
        return bool(self._alarm[n])

    def read(self, n):
        """(seq, taken_s, alarm, payload bytes) of slot n."""
        buf = bytearray(SLOT)
        self._f.seek(n * SLOT)
        self._f.readinto(buf)
        length = buf[10]
        payload = bytes(buf[HEADER : HEADER + length])
        return self._seq[n], self._taken[n], bool(self._alarm[n]), payload

    def mark_sent(self, slots):
        """The gateway acknowledged these slots' records: free them with one flash commit."""
        if not slots:
            return
        for n in slots:
            if self._seq[n] >= 0:
                self._f.seek(n * SLOT)
                self._f.write(b"\x00")
                self._seq[n] = -1
        self._commit()

    def close(self):
        self._f.close()

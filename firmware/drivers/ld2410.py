# Hi-Link LD2410 24 GHz presence radar, UART 256000 8N1 (serial protocol manual V1.02).
# Report frames: header F4 F3 F2 F1, data length (2 bytes LE), data, tail F8 F7 F6 F5. The data
# of a basic report (13 bytes) is: type 0x02 (0x01 in engineering mode, which appends per-gate
# energies), head 0xAA, target state (0 none, 1 moving, 2 stationary, 3 both), moving target
# distance cm (LE16), moving energy, stationary distance cm (LE16), stationary energy, detection
# distance cm (LE16), tail 0x55, check 0x00. Command ACK frames (FD FC FB FA ... 04 03 02 01)
# share the line and are skipped.
import struct

from micropython import const

HEADER = b"\xf4\xf3\xf2\xf1"
TAIL = b"\xf8\xf7\xf6\xf5"
TYPE_ENGINEERING = const(0x01)
TYPE_BASIC = const(0x02)
HEAD = const(0xAA)
MAX_DATA = const(64)  # an engineering report is 35 bytes; anything longer is noise
KEEP = const(128)  # bytes kept between polls while a frame is incomplete
TARGET = ("state", "moving_cm", "moving_energy", "static_cm", "static_energy", "detect_cm")


def parse(buf):
    """(list of target dicts, bytes consumed) from a byte string."""
    found: list = []
    i = 0
    n = len(buf)
    while True:
        j = buf.find(HEADER, i)
        if j < 0:
            # keep a possible partial header at the end
            return found, max(i, n - 3)
        if j + 6 > n:
            return found, j
        length = buf[j + 4] | buf[j + 5] << 8
        if length > MAX_DATA:
            i = j + 1
            continue
        end = j + 6 + length
        if end + 4 > n:
            return found, j  # wait for the rest
        if buf[end : end + 4] != TAIL:
            i = j + 1
            continue
        data = buf[j + 6 : end]
        if length >= 13 and data[0] in (TYPE_BASIC, TYPE_ENGINEERING) and data[1] == HEAD:
            values = struct.unpack("<BHBHBH", data[2:11])
            target = {}
            for k in range(len(TARGET)):
                target[TARGET[k]] = values[k]
            found.append(target)
        i = end + 4


class LD2410:
    def __init__(self, uart):
        self.uart = uart
        self._buf = b""
        self.target = None
        self.frames = 0

    @property
    def presence(self):
        return self.target is not None and self.target["state"] != 0

    def poll(self):
        """Read what the UART holds; the newest target report, or None when none arrived."""
        newest = None
        while self.uart.any():
            chunk = self.uart.read(self.uart.any())
            if not chunk:
                break
            buf = self._buf + chunk
            targets, used = parse(buf)
            self._buf = buf[used:][-KEEP:]
            if targets:
                self.frames += len(targets)
                newest = targets[-1]
        if newest is not None:
            self.target = newest
        return newest

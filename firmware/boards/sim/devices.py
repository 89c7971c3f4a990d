# Bus-level models of the parts the drivers talk to, answering as their datasheets say, so the
# real drivers run unchanged on the sim board. Values come from the scenario (sim/scenario.py).

import struct

# machine.I2C raises OSError(ENODEV) when nothing acknowledges the address
_ENODEV = 19
_UART_FIFO = 256  # ESP32 UART RX ring default: older bytes are lost when nobody reads


class QMC5883L:
    """QMC5883L 3-axis magnetometer (QST datasheet rev. C): 0x00-0x05 X/Y/Z little-endian,
    0x06 status (DRDY bit 0, OVL bit 1, DOR bit 2), 0x07-0x08 temperature, 0x09 control 1
    (mode bits 1:0, 01 = continuous), 0x0A control 2 (SOFT_RST bit 7), 0x0B SET/RESET period,
    0x0D chip id 0xFF."""

    ADDR = 0x0D

    def __init__(self, signals):
        self.signals = signals
        self.regs = bytearray(14)
        self.regs[0x0D] = 0xFF

    def present(self):
        return self.signals().get("mag") is not None

    def read(self, reg, n):
        sig = self.signals()
        mag = sig.get("mag") or (0, 0, 0)
        continuous = self.regs[0x09] & 0x03 == 0x01
        over = False
        for i in range(3):
            v = int(mag[i])
            if v > 32767 or v < -32768:
                over = True
                v = 32767 if v > 0 else -32768
            struct.pack_into("<h", self.regs, 2 * i, v)
        struct.pack_into("<h", self.regs, 7, int(sig.get("mag_temp", 0)))
        status = 0
        if continuous:
            status |= 0x01
        if over:
            status |= 0x02
        self.regs[0x06] = status
        out = bytearray(n)
        for i in range(n):
            # the address pointer auto-increments through the register file
            out[i] = self.regs[(reg + i) % len(self.regs)]
        return bytes(out)

    def write(self, reg, data):
        for i in range(len(data)):
            r = reg + i
            if r == 0x0A and data[i] & 0x80:
                self.regs[0x09] = 0
                self.regs[0x0A] = 0
                continue
            if r < len(self.regs) and r != 0x0D:
                self.regs[r] = data[i]


class SimI2C:
    def __init__(self, devices):
        self.devices = devices  # addr -> model

    def _dev(self, addr):
        dev = self.devices.get(addr)
        if dev is None or not dev.present():
            raise OSError(_ENODEV)
        return dev

    def scan(self):
        return [a for a in sorted(self.devices) if self.devices[a].present()]

    def readfrom_mem(self, addr, reg, n):
        return self._dev(addr).read(reg, n)

    def readfrom_mem_into(self, addr, reg, buf):
        data = self._dev(addr).read(reg, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, reg, buf):
        self._dev(addr).write(reg, buf)

    def writeto(self, addr, buf):
        if len(buf):
            self._dev(addr).write(buf[0], buf[1:])
        else:
            self._dev(addr)
        return 1

    def readfrom(self, addr, n):
        return self._dev(addr).read(0, n)


class A02YYUW:
    """DFRobot A02YYUW (and JSN-SR04T in its serial modes): a 4-byte frame 0xFF, distance high,
    distance low, sum of the three bytes (low 8 bits), every 100 ms; with a trigger byte (0x55
    for the JSN-SR04T mode 2) one frame per trigger instead."""

    PERIOD_MS = 100

    def __init__(self, signals):
        self.signals = signals
        self.last_ms = None
        self.triggered = 0

    def frame(self):
        mm = self.signals().get("range_mm")
        if mm is None:
            return b""
        mm = max(0, min(0xFFFF, int(mm)))
        hi = mm >> 8
        lo = mm & 0xFF
        return bytes((0xFF, hi, lo, (0xFF + hi + lo) & 0xFF))

    def produce(self, now_ms):
        if self.triggered:
            self.triggered = 0
            return self.frame()
        if self.last_ms is not None and now_ms - self.last_ms < self.PERIOD_MS:
            return b""
        self.last_ms = now_ms
        return self.frame()

    def received(self, data):
        if 0x55 in data:
            self.triggered = 1


class LD2410:
    """HLK-LD2410 24 GHz radar, basic target report (engineering mode off), every 100 ms:
    F4 F3 F2 F1, length 13 (LE), 0x02 0xAA, state, moving cm (LE16), moving energy, static cm
    (LE16), static energy, detection cm (LE16), 0x55 0x00, F8 F7 F6 F5."""

    PERIOD_MS = 100

    def __init__(self, signals):
        self.signals = signals
        self.last_ms = None

    def produce(self, now_ms):
        if self.last_ms is not None and now_ms - self.last_ms < self.PERIOD_MS:
            return b""
        self.last_ms = now_ms
        t = self.signals().get("radar")
        if t is None:
            return b""
        body = struct.pack(
            "<BBBHBHBHBB",
            0x02,
            0xAA,
            int(t.get("state", 0)),
            int(t.get("moving_cm", 0)),
            int(t.get("moving_energy", 0)),
            int(t.get("static_cm", 0)),
            int(t.get("static_energy", 0)),
            int(t.get("detect_cm", 0)),
            0x55,
            0x00,
        )
        return b"\xf4\xf3\xf2\xf1" + struct.pack("<H", len(body)) + body + b"\xf8\xf7\xf6\xf5"

    def received(self, data):
        pass  # commands (engineering mode, gates) are acknowledged by nothing here


class SimUART:
    def __init__(self, device, now_ms, poll):
        self.device = device
        self.now_ms = now_ms
        self.poll = poll
        self.rx = bytearray()
        self.written = bytearray()

    def _fill(self):
        self.poll()
        if self.device is not None:
            self.rx.extend(self.device.produce(self.now_ms()))
        if len(self.rx) > _UART_FIFO:
            self.rx = self.rx[len(self.rx) - _UART_FIFO :]

    def any(self):
        self._fill()
        return len(self.rx)

    def read(self, n=-1):
        self._fill()
        if not self.rx:
            return None
        if n is None or n < 0:
            n = len(self.rx)
        out = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return out

    def readinto(self, buf):
        data = self.read(len(buf))
        if data is None:
            return None
        for i in range(len(data)):
            buf[i] = data[i]
        return len(data)

    def write(self, buf):
        self.written.extend(buf)
        if self.device is not None:
            self.device.received(bytes(buf))
        return len(buf)


class SimSPI:
    """An SPI bus with nothing on it (the sim's LoRa radio is the medium client, not an SX1276
    register model): reads come back as 0x00."""

    def write(self, buf):
        pass

    def read(self, n, write=0):
        return bytes(n)

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = 0

    def write_readinto(self, wbuf, rbuf):
        for i in range(len(rbuf)):
            rbuf[i] = 0

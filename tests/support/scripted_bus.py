# Scripted buses and parts for driver tests. Runs on MicroPython (the drivers' tests build these
# inside the bridge's micropython process and hand them to the drivers) and on CPython.
#
# Each part model answers as its datasheet says the chip does, and logs what the driver wrote,
# so a test asserts exact register writes and frames. Nothing here imports machine.


class Clock:
    """A scripted time source: sleeping advances it; nothing else does unless a test says so."""

    def __init__(self, start_ms=0):
        self.us = start_ms * 1000
        self.sleeps = 0

    def ticks_ms(self):
        return self.us // 1000

    def ticks_us(self):
        return self.us

    def sleep_ms(self, ms):
        self.sleeps += 1
        self.us += ms * 1000

    def sleep_us(self, us):
        self.sleeps += 1
        self.us += us

    def advance_ms(self, ms):
        self.us += ms * 1000


class Pin:
    """A GPIO line: value() reads the level (or the next scripted level), value(v) records."""

    def __init__(self, level=0, script=None):
        self.level = level
        self.script = list(script) if script else []
        self.writes = []
        self.handler = None
        self.trigger = None

    def value(self, v=None):
        if v is None:
            if self.script:
                self.level = self.script.pop(0)
            return self.level
        self.writes.append(1 if v else 0)
        self.level = 1 if v else 0
        return None

    def irq(self, handler=None, trigger=None):
        self.handler = handler
        self.trigger = trigger

    def edge(self, level=1):
        """Set the level and run the IRQ handler, as an edge on the line would."""
        self.level = level
        if self.handler is not None:
            self.handler(self)


class ADC:
    def __init__(self, counts=0, uv=None):
        self.counts = counts  # an int, or a list read in turn (the last one repeats)
        self.reads = 0

    def _next(self, v):
        self.reads += 1
        if isinstance(v, list):
            return v.pop(0) if len(v) > 1 else v[0]
        return v

    def read_u16(self):
        return self._next(self.counts)


class CalibratedADC(ADC):
    """An ADC with read_uv(), as the ESP32 port offers (eFuse-calibrated microvolts)."""

    def __init__(self, uv):
        ADC.__init__(self, 0)
        self.uv = uv

    def read_uv(self):
        return self._next(self.uv)


class PWM:
    def __init__(self):
        self.duties = []

    def duty_u16(self, v=None):
        if v is None:
            return self.duties[-1] if self.duties else 0
        self.duties.append(v)
        return None


class PulseTimer:
    """Stands in for machine.time_pulse_us: returns scripted widths, logs the calls."""

    def __init__(self, widths, clock=None):
        self.widths = list(widths)
        self.calls = []
        self.clock = clock

    def __call__(self, pin, level, timeout_us):
        self.calls.append((level, timeout_us))
        us = self.widths.pop(0) if self.widths else -2
        if self.clock is not None:
            self.clock.sleep_us(us if us > 0 else timeout_us)
        return us


# -- SPI ------------------------------------------------------------------------------------


class SPI:
    """Full-duplex byte exchange with one device, which must be selected by its CS pin."""

    def __init__(self, device):
        self.device = device

    def _xfer(self, b):
        if not self.device.selected:
            raise OSError("SPI transfer with CS high")
        return self.device.xfer(b)

    def write(self, buf):
        for b in buf:
            self._xfer(b)

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = self._xfer(write)

    def write_readinto(self, wbuf, rbuf):
        for i in range(len(wbuf)):
            rbuf[i] = self._xfer(wbuf[i])


class ChipSelect:
    """The CS line of an SPI device: low starts a transaction, high ends it."""

    def __init__(self, device):
        self.device = device
        self.level = 1
        self.transactions = 0

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v == 0 and self.level == 1:
            self.device.selected = True
            self.device.addr = None
            self.transactions += 1
        elif v == 1 and self.level == 0:
            self.device.selected = False
        self.level = v
        return None


# SX1276 register values after reset (datasheet register map, LoRa mode column)
SX1276_RESET = {
    0x01: 0x01,  # FSK, STANDBY
    0x06: 0x6C,  # 434 MHz
    0x07: 0x80,
    0x09: 0x4F,
    0x0B: 0x2B,
    0x0C: 0x20,
    0x0E: 0x80,
    0x0F: 0x00,
    0x1D: 0x72,
    0x1E: 0x70,
    0x1F: 0x64,
    0x21: 0x08,
    0x22: 0x01,
    0x23: 0xFF,
    0x26: 0x04,
    0x31: 0xC3,
    0x37: 0x0A,
    0x39: 0x12,
    0x42: 0x12,
    0x4D: 0x84,
}


class SX1276:
    """SX1276 LoRa register model (datasheet rev. 7): reset values, RegOpMode rules, FIFO with
    RegFifoAddrPtr auto-increment, IRQ flags cleared by writing ones, TX and RX sequencing."""

    def __init__(self, version=0x12, tx_polls=3, rx_timeout_polls=5):
        self.regs = bytearray(0x80)
        for reg, value in SX1276_RESET.items():
            self.regs[reg] = value
        self.regs[0x42] = version
        self.fifo = bytearray(256)
        self.selected = False
        self.addr = None
        self.writing = False
        self.log = []  # (register, value) for every byte written, FIFO included
        self.sent = []  # frames transmitted
        self.inbox = []  # frames waiting to be heard: (payload, pkt_rssi, pkt_snr, crc_ok)
        self.tx_polls = tx_polls  # IRQ-flag reads until TxDone (None: never)
        self.rx_timeout_polls = rx_timeout_polls
        self._countdown = 0
        self.modes = []  # every RegOpMode value written

    def xfer(self, b):
        if self.addr is None:
            self.addr = b & 0x7F
            self.writing = bool(b & 0x80)
            return 0
        reg = self.addr
        if reg != 0x00:
            self.addr = (reg + 1) & 0x7F  # bursts auto-increment, except on RegFifo
        if self.writing:
            self._write(reg, b)
            return 0
        return self._read(reg)

    def mode(self):
        return self.regs[0x01] & 0x07

    def writes_to(self, reg):
        return [v for r, v in self.log if r == reg]

    def _write(self, reg, v):
        self.log.append((reg, v))
        if reg == 0x00:
            ptr = self.regs[0x0D]
            self.fifo[ptr] = v
            self.regs[0x0D] = (ptr + 1) & 0xFF
        elif reg == 0x12:
            self.regs[0x12] &= ~v & 0xFF
        elif reg == 0x01:
            self._op_mode(v)
        elif reg in (0x10, 0x13, 0x19, 0x1A, 0x42):
            pass  # read-only
        else:
            self.regs[reg] = v

    def _op_mode(self, v):
        old = self.regs[0x01]
        if (v ^ old) & 0x80 and old & 0x07 != 0:
            v = (v & 0x7F) | (old & 0x80)  # LongRangeMode is only writable in SLEEP
        self.regs[0x01] = v
        self.modes.append(v)
        m = v & 0x07
        if m == 0x03:
            base = self.regs[0x0E]
            n = self.regs[0x22]
            self.sent.append(bytes(self.fifo[(base + i) & 0xFF] for i in range(n)))
            self._countdown = self.tx_polls
        elif m == 0x06:
            self._countdown = self.rx_timeout_polls

    def _read(self, reg):
        if reg == 0x00:
            ptr = self.regs[0x0D]
            self.regs[0x0D] = (ptr + 1) & 0xFF
            return self.fifo[ptr]
        if reg == 0x12:
            self._advance()
        return self.regs[reg]

    def _advance(self):
        # Time passes for the chip between polls of RegIrqFlags.
        m = self.mode()
        if not self.regs[0x01] & 0x80:
            return
        if m == 0x03 and self._countdown is not None:
            self._countdown -= 1
            if self._countdown <= 0:
                self.regs[0x12] |= 0x08  # TxDone, and the chip returns to STANDBY
                self.regs[0x01] = (self.regs[0x01] & 0xF8) | 0x01
        elif m in (0x05, 0x06) and self.inbox:
            payload, rssi, snr, crc_ok = self.inbox.pop(0)
            base = self.regs[0x0F]
            for i in range(len(payload)):
                self.fifo[(base + i) & 0xFF] = payload[i]
            self.regs[0x10] = base
            self.regs[0x13] = len(payload)
            self.regs[0x19] = snr & 0xFF
            self.regs[0x1A] = rssi
            self.regs[0x12] |= 0x50 | (0 if crc_ok else 0x20)  # RxDone, ValidHeader
            if m == 0x06:
                self.regs[0x01] = (self.regs[0x01] & 0xF8) | 0x01
        elif m == 0x06:
            self._countdown -= 1
            if self._countdown <= 0:
                self.regs[0x12] |= 0x80  # RxTimeout
                self.regs[0x01] = (self.regs[0x01] & 0xF8) | 0x01

    def dio0(self):
        """The DIO0 line: RxDone or TxDone as RegDioMapping1 bits 7-6 select."""
        return _Dio0(self)

    def deliver(self, payload, pkt_rssi=60, pkt_snr=36, crc_ok=True):
        """A frame on the air, heard at the next RX poll (pkt_snr in quarter dB)."""
        self.inbox.append((bytes(payload), pkt_rssi, pkt_snr, crc_ok))


class _Dio0:
    def __init__(self, chip):
        self.chip = chip
        self.reads = 0

    def value(self):
        self.reads += 1
        chip = self.chip
        chip._advance()  # time passes for the chip while the host watches the line
        mapping = chip.regs[0x40] >> 6
        flag = 0x40 if mapping == 0 else 0x08 if mapping == 1 else 0
        return 1 if chip.regs[0x12] & flag else 0


def sx1276(**kwargs):
    """(spi, cs, chip) wired together."""
    chip = SX1276(**kwargs)
    return SPI(chip), ChipSelect(chip), chip


# -- I2C ------------------------------------------------------------------------------------


class I2C:
    """machine.I2C's memory API over device models keyed by address; OSError(ENODEV) when
    nothing acknowledges, as the ESP32 port raises."""

    def __init__(self, devices):
        self.devices = devices
        self.log = []  # ("w" | "r", addr, reg, bytes)

    def _dev(self, addr):
        dev = self.devices.get(addr)
        if dev is None or not dev.present:
            raise OSError(19)
        return dev

    def readfrom_mem(self, addr, reg, n):
        data = self._dev(addr).read(reg, n)
        self.log.append(("r", addr, reg, data))
        return data

    def writeto_mem(self, addr, reg, buf):
        self._dev(addr).write(reg, bytes(buf))
        self.log.append(("w", addr, reg, bytes(buf)))

    def writes(self):
        return [(e[2], e[3]) for e in self.log if e[0] == "w"]


class QMC5883L:
    """QMC5883L register model (datasheet rev. C): samples queued by the test become the data
    registers when the status register is polled in continuous mode; reading data clears
    DRDY; soft reset clears the control registers."""

    def __init__(self):
        self.regs = bytearray(14)
        self.regs[0x0D] = 0xFF
        self.present = True
        self.samples = []  # (x, y, z, overflow)
        self.temp = 0

    def push(self, x, y, z, overflow=False):
        self.samples.append((x, y, z, overflow))

    def read(self, reg, n):
        continuous = self.regs[0x09] & 0x03 == 0x01
        if reg == 0x06 and continuous and self.samples and not self.regs[0x06] & 0x01:
            x, y, z, ovl = self.samples.pop(0)
            for i, v in ((0, x), (2, y), (4, z)):
                word = v & 0xFFFF
                self.regs[i] = word & 0xFF
                self.regs[i + 1] = word >> 8
            self.regs[0x06] = 0x01 | (0x02 if ovl else 0)
        t = self.temp & 0xFFFF
        self.regs[0x07] = t & 0xFF
        self.regs[0x08] = t >> 8
        out = bytes(self.regs[(reg + i) % 14] for i in range(n))
        if reg < 0x06:
            self.regs[0x06] &= ~0x03 & 0xFF  # data read: DRDY (and OVL) clear
        return out

    def write(self, reg, data):
        for i in range(len(data)):
            r = reg + i
            if r == 0x0A and data[i] & 0x80:
                for k in range(0x0D):
                    self.regs[k] = 0
                continue
            if r < 0x0D and r not in (0x06, 0x07, 0x08):
                self.regs[r] = data[i]


# -- UART -----------------------------------------------------------------------------------


class UART:
    """Bytes arrive when the scripted clock reaches their time; writes are logged, and a reply
    can be scripted for a byte the host writes (e.g. a ranger's 0x55 trigger)."""

    def __init__(self, clock=None):
        self.clock = clock
        self.rx = b""
        self.later = []  # (at_ms, bytes), in time order
        self.written = b""
        self.replies = {}  # written byte -> (delay_ms, reply)
        self.reads = 0

    def _now(self):
        return self.clock.ticks_ms() if self.clock is not None else 0

    def feed(self, data, at_ms=None):
        if at_ms is None:
            self.rx += bytes(data)
        else:
            self.later.append((at_ms, bytes(data)))

    def reply(self, byte, data, delay_ms=0):
        self.replies[byte] = (delay_ms, bytes(data))

    def _arrive(self):
        now = self._now()
        while self.later and self.later[0][0] <= now:
            self.rx += self.later.pop(0)[1]

    def any(self):
        self._arrive()
        return len(self.rx)

    def read(self, n=None):
        self._arrive()
        self.reads += 1
        if not self.rx:
            return None
        if n is None:
            n = len(self.rx)
        out = self.rx[:n]
        self.rx = self.rx[n:]
        return out

    def write(self, buf):
        buf = bytes(buf)
        self.written += buf
        for b in buf:
            if b in self.replies:
                delay, data = self.replies[b]
                self.feed(data, self._now() + delay)
        return len(buf)


def a02yyuw_frame(mm):
    hi = mm >> 8 & 0xFF
    lo = mm & 0xFF
    return bytes((0xFF, hi, lo, (0xFF + hi + lo) & 0xFF))


class Recorder:
    """A callback that remembers its calls (arguments as a tuple each)."""

    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)

# The board side of the ULP pulse counter (program: ulp_pulse.S, assembled by tools/ulp.py into
# the image's /ulp_pulse.py: BINARY and the word address of each data word). The hardware comes
# in as arguments (esp32.ULP(), machine.mem32), so this module imports neither.
#
# Started once per cold boot; the ULP timer then keeps running it through deep sleeps and soft
# resets, counting without waking the CPU. The CPU only reads its words afterwards.

RTC_SLOW_MEM = 0x50000000
PERIOD_US = 50000  # a sample every 50 ms: a reed's shortest half-pulse at full flow is ~300 ms
DEBOUNCE = 2  # samples in a row (50-100 ms): a bounce or a spike lasts one sample at most
UNIT_S = 1  # quiet time is kept in seconds
DRY_S = 3600  # a zero-flow hour (firmware/kinds/leak.py)

# The RTC IO MUX (ESP32 TRM, RTC IO; rtc_io_reg.h): GPIO -> (pad register, MUX_SEL bit,
# FUN_IE bit, RTC GPIO number). MUX_SEL routes the pad to the RTC domain, FUN_IE enables its
# input, as ESP-IDF's rtc_gpio_init + INPUT_ONLY do; RTC_GPIO_IN then shows it at 14 + number.
# Only the input-only pins 34-39 (no pulls, no output driver to leave off): the meter's reed
# needs an external pull-up there anyway (docs/hil-wiring.md).
_RTCIO = 0x3FF48400
PADS = {
    36: (_RTCIO + 0x7C, 27, 19, 0),
    37: (_RTCIO + 0x7C, 26, 14, 1),
    38: (_RTCIO + 0x7C, 25, 9, 2),
    39: (_RTCIO + 0x7C, 24, 4, 3),
    34: (_RTCIO + 0x80, 29, 23, 4),
    35: (_RTCIO + 0x80, 28, 18, 5),
}


def program():
    """The assembled program the image carries, or None (an image built without it)."""
    try:
        import ulp_pulse  # type: ignore[import-not-found]
    except ImportError:
        return None
    return ulp_pulse


class Counter:
    kept = True  # the count lives in RTC slow memory: deep sleep does not lose it

    def __init__(self, mem32, prog, gpio):
        self._m = mem32
        self._p = prog
        self.gpio = gpio

    def _word(self, addr):
        return self._m[RTC_SLOW_MEM + 4 * addr] & 0xFFFF  # the upper half is the ST's PC

    def running(self):
        """The program is in RTC slow memory, set up for this pin (a deep-sleep or soft-reset
        wake finds it running; a power-on finds noise there)."""
        p = self._p
        b = p.BINARY
        text = b[6] | b[7] << 8
        for i in range(0, text, 4):
            word = b[12 + i] | b[13 + i] << 8 | b[14 + i] << 16 | b[15 + i] << 24
            if self._m[RTC_SLOW_MEM + i] & 0xFFFFFFFF != word:
                return False
        return self._word(p.IO) == PADS[self.gpio][3] and self._word(p.UNIT) > 0

    def start(self, ulp):
        """Load and start the program; returns what an intact earlier run had counted."""
        m = self._m
        p = self._p
        before = self.value() if self.running() else 0
        reg, mux, ie, rtc = PADS[self.gpio]
        m[reg] = m[reg] | (1 << mux) | (1 << ie)
        ulp.set_wakeup_period(0, PERIOD_US)
        ulp.load_binary(0, p.BINARY)
        base = RTC_SLOW_MEM
        m[base + 4 * p.IO] = rtc
        m[base + 4 * p.DEBOUNCE] = DEBOUNCE
        m[base + 4 * p.UNIT] = UNIT_S * 1000000 // PERIOD_US
        m[base + 4 * p.DRY_UNITS] = DRY_S // UNIT_S
        ulp.run(4 * p.ENTRY)
        return before

    def value(self):
        """Pulses since the program was loaded (32 bits, read under the program's seq lock)."""
        p = self._p
        for _ in range(8):
            seq = self._word(p.SEQ)
            hi = self._word(p.COUNT_HI)
            lo = self._word(p.COUNT_LO)
            if not seq & 1 and self._word(p.SEQ) == seq:
                return hi << 16 | lo
        raise OSError("ulp: the count kept changing")

    def quiet_s(self):
        """Seconds since the last pulse (65535: that long or longer)."""
        return self._word(self._p.QUIET) * UNIT_S

    def dry(self):
        """Zero-flow hours seen so far (16 bits, wraps): differences tell new ones."""
        return self._word(self._p.DRY)

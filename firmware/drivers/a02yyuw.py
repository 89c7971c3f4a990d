# DFRobot A02YYUW waterproof ultrasonic ranger, and the JSN-SR04T in its serial modes (UART
# 9600 8N1). Each frame is four bytes: 0xFF, distance high, distance low, and the low 8 bits of
# the sum of the first three. The A02YYUW sends on its own: a processed (steadier) value every
# 100-300 ms with RX left high, a real-time one every 100 ms with RX held low. The JSN-SR04T in
# mode 3 measures once per 0x55 byte received (jsnsr04t.py).
import time

from micropython import const

HEADER = const(0xFF)
FRAME_LEN = const(4)
POLL_MS = 10


def parse(buf):
    """(last valid distance in mm or None, bytes consumed): resyncs on a bad checksum."""
    found = None
    i = 0
    n = len(buf)
    while i + FRAME_LEN <= n:
        if buf[i] != HEADER:
            i += 1
            continue
        if (buf[i] + buf[i + 1] + buf[i + 2]) & 0xFF != buf[i + 3]:
            i += 1  # a data byte of 0xFF looked like a header, or noise: slide by one
            continue
        found = buf[i + 1] << 8 | buf[i + 2]
        i += FRAME_LEN
    return found, i


class A02YYUW:
    def __init__(
        self, uart, *, trigger_byte=None, min_mm=30, max_mm=4500, ticks_ms=None, sleep_ms=None
    ):
        self.uart = uart
        self.trigger_byte = trigger_byte
        self.min_mm = min_mm
        self.max_mm = max_mm
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._sleep_ms = sleep_ms or time.sleep_ms
        self.bad_frames = 0

    def read_mm(self, timeout_ms=500):
        """A fresh distance in mm, or None (no frame in time, or outside the sensor's range)."""
        uart = self.uart
        # what waits in the UART buffer was measured before we asked: drop it
        while uart.any():
            if not uart.read(uart.any()):
                break
        if self.trigger_byte is not None:
            uart.write(bytes((self.trigger_byte,)))
        buf = b""
        start = self._ticks_ms()
        while True:
            chunk = uart.read(uart.any()) if uart.any() else None
            if chunk:
                buf += chunk
                mm, used = parse(buf)
                buf = buf[used:]
                if mm is not None:
                    return mm if self.min_mm <= mm <= self.max_mm else None
            if time.ticks_diff(self._ticks_ms(), start) >= timeout_ms:
                return None
            self._sleep_ms(POLL_MS)

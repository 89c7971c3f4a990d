# Passive infrared motion sensor (HC-SR501, AM312 and the like): a digital output that goes
# high on motion and stays high for the module's hold time. A rising edge is a detection; edges
# closer than debounce_ms to the last accepted one are contact noise or a retrigger and are
# ignored. Either attach() an IRQ callback or poll().
import time

IRQ_RISING = 1  # machine.Pin.IRQ_RISING on the ESP32 port; boards may pass their own


class PIR:
    def __init__(self, pin, *, debounce_ms=50, ticks_ms=None):
        self.pin = pin
        self.debounce_ms = debounce_ms
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._last = None  # ticks of the last accepted edge
        self._level = 0
        self._callback = None
        self.detections = 0

    def motion(self):
        return bool(self.pin.value())

    def _accept(self, now_ms):
        last = self._last
        if last is not None and time.ticks_diff(now_ms, last) < self.debounce_ms:
            return False
        self._last = now_ms
        self.detections += 1
        return True

    def attach(self, callback, trigger=IRQ_RISING):
        """callback(now_ms) on each debounced rising edge (soft IRQ context: keep it short)."""
        self._callback = callback
        self.pin.irq(handler=self._edge, trigger=trigger)

    def _edge(self, pin):
        now = self._ticks_ms()
        # a spike shorter than the IRQ latency has already gone: not a detection
        if self.pin.value() and self._accept(now) and self._callback is not None:
            self._callback(now)

    def poll(self, now_ms=None):
        """True once per debounced rising edge seen by polling the level."""
        level = 1 if self.pin.value() else 0
        rising = level and not self._level
        self._level = level
        if not rising:
            return False
        return self._accept(self._ticks_ms() if now_ms is None else now_ms)

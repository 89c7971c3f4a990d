# Water-meter pulse input: a reed contact or an optical reflex head gives one pulse per fixed
# volume. A counter from the board (on the ESP32 the ULP coprocessor's program, counting in
# deep sleep too, or PCNT while awake) is preferred; otherwise the pin's IRQ counts in
# software, ignoring edges closer than debounce_ms to the last one (a reed bounces for about
# a millisecond; a meter at full flow gives at most a few pulses per second).
#
# A counter that watches the meter through deep sleep (the ULP) also knows the quiet time:
# quiet_s() (seconds since the last pulse, 65535 at most) and dry() (quiet runs that reached
# an hour, cumulative, wrapping at 16 bits). Counters without them (PCNT, the IRQ path, a
# board that cannot tell) give None: the IRQ path sees only the awake part of a cycle.
import time

IRQ_FALLING = 2  # reed to ground with a pull-up: the pulse is a falling edge


class PulseCounter:
    def __init__(self, pin=None, *, counter=None, debounce_ms=20, counter_bits=0, ticks_ms=None):
        if (pin is None) == (counter is None):
            raise ValueError("pulse: give a pin or a counter")
        self.pin = pin
        self.counter = counter
        self.debounce_ms = debounce_ms
        self.counter_bits = counter_bits  # width of a counter that wraps (0: it does not)
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._soft = 0
        self._last_edge = None
        self._raw = None
        self._total = 0

    def attach(self, trigger=IRQ_FALLING):
        if self.pin is not None:
            self.pin.irq(handler=self._edge, trigger=trigger)

    def _edge(self, pin):
        # runs in IRQ context: no allocation beyond the small int of ticks_ms
        now = self._ticks_ms()
        last = self._last_edge
        if last is None or time.ticks_diff(now, last) >= self.debounce_ms:
            self._soft += 1
            self._last_edge = now

    def count(self):
        """Pulses counted since this object was made (or since the board's counter began)."""
        if self.counter is None:
            return self._soft
        raw = self.counter.value()
        if not self.counter_bits:
            return raw
        if self._raw is not None:
            self._total += (raw - self._raw) & ((1 << self.counter_bits) - 1)
        self._raw = raw
        return self._total

    def quiet_s(self):
        """Seconds since the last pulse as the board's counter saw it, or None."""
        get = getattr(self.counter, "quiet_s", None)
        return get() if get is not None else None

    def dry(self):
        """Zero-flow hours the board's counter has seen (16 bits, wraps), or None."""
        get = getattr(self.counter, "dry", None)
        return get() if get is not None else None

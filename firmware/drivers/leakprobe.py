# Leak (water) probe: two exposed electrodes on the floor. Either a comparator board with a
# digital output (wet at `wet_level`), or the electrodes in a divider on an ADC: water conducts
# and pulls the reading below `wet_below`; it reads dry again only above wet_below + hysteresis,
# so a damp film does not make the alarm chatter. With a `power` pin the probe is excited only
# while it is read, which stops electrolysis eating the electrodes.
import time


class LeakProbe:
    def __init__(
        self,
        pin=None,
        *,
        adc=None,
        power=None,
        wet_level=0,
        wet_below=20000,
        hysteresis=2000,
        settle_ms=1,
        sleep_ms=None,
    ):
        if (pin is None) == (adc is None):
            raise ValueError("leakprobe: give a pin or an adc")
        self.pin = pin
        self.adc = adc
        self.power = power
        self.wet_level = wet_level
        self.wet_below = wet_below
        self.hysteresis = hysteresis
        self.settle_ms = settle_ms
        self._sleep_ms = sleep_ms or time.sleep_ms
        self.is_wet = False
        self.last_raw = None

    def wet(self):
        if self.power is not None:
            self.power.value(1)
            self._sleep_ms(self.settle_ms)
        try:
            if self.adc is not None:
                raw = self.adc.read_u16()
                self.last_raw = raw
                limit = self.wet_below + (self.hysteresis if self.is_wet else 0)
                self.is_wet = raw < limit
            else:
                self.is_wet = self.pin.value() == self.wet_level
        finally:
            if self.power is not None:
                self.power.value(0)
        return self.is_wet

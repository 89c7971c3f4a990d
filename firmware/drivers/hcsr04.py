# HC-SR04 ultrasonic ranger (and JSN-SR04T mode 1): a 10 us high pulse on TRIG starts a burst
# of eight 40 kHz cycles; ECHO then stays high for the round trip of the sound. The caller
# supplies pulse_us (machine.time_pulse_us on a board: the width of the next pulse at `level`,
# negative on timeout), so the driver never touches machine.
import time

TRIGGER_US = 10
MIN_MM = 20  # datasheet: 2 cm to 400 cm
MAX_MM = 4000


class HCSR04:
    def __init__(self, trigger, echo, pulse_us, *, sleep_us=None, timeout_us=30000):
        self.trigger = trigger
        self.echo = echo
        self.pulse_us = pulse_us
        self._sleep_us = sleep_us or time.sleep_us
        # 30 ms covers 5 m and back; the module itself gives up after about 38 ms
        self.timeout_us = timeout_us
        trigger.value(0)

    def echo_us(self):
        """Round-trip time in us, or a negative number when no echo came."""
        self.trigger.value(0)
        self._sleep_us(2)
        self.trigger.value(1)
        self._sleep_us(TRIGGER_US)
        self.trigger.value(0)
        return self.pulse_us(self.echo, 1, self.timeout_us)

    def read_mm(self, temp_c_x10=200):
        """Distance in mm, or None (no echo, or outside 2-400 cm). The speed of sound is
        331.3 m/s + 0.606 m/s per degree C; temp_c_x10 is the air temperature in tenths."""
        us = self.echo_us()
        if us <= 0:
            return None
        speed_mm_s = 331300 + 606 * temp_c_x10 // 10  # in mm/s
        mm = us * speed_mm_s // 2000000  # half the round trip; us -> s
        return mm if MIN_MM <= mm <= MAX_MM else None

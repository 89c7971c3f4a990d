# JSN-SR04T waterproof ultrasonic ranger in a serial mode. Mode 2 (R27 = 47 k) sends a frame
# every 100 ms by itself; mode 3 (R27 = 120 k, the low-power choice for a sleeping node)
# measures once per 0x55 byte received. Both answer with the A02YYUW's frame (0xFF, high, low,
# sum). Blind below about 25 cm. (In mode 1, no R27, it is an HC-SR04: see hcsr04.py.)
from firmware.drivers.a02yyuw import A02YYUW

TRIGGER = 0x55


class JSNSR04T(A02YYUW):
    def __init__(
        self, uart, *, triggered=True, min_mm=250, max_mm=4500, ticks_ms=None, sleep_ms=None
    ):
        A02YYUW.__init__(
            self,
            uart,
            trigger_byte=TRIGGER if triggered else None,
            min_mm=min_mm,
            max_mm=max_mm,
            ticks_ms=ticks_ms,
            sleep_ms=sleep_ms,
        )

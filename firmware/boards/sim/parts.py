# The sim board's GPIO, ADC, PWM, pulse counter, watchdog and flash files (board.py builds
# them; values come from the scenario, outputs go to the board's observers).


class FlashFile:
    def __init__(self, board, f):
        self._board = board
        self._f = f

    def write(self, data):
        return self._board._flash_write(self._f, data)

    def read(self, *n):
        return self._f.read(*n)

    def readinto(self, buf):
        return self._f.readinto(buf)

    def seek(self, *args):
        return self._f.seek(*args)

    def tell(self):
        return self._f.tell()

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class Watchdog:
    def __init__(self, board):
        self._board = board
        self._file = board._p("wdt")

    def feed(self):
        board = self._board
        board._check_watchdog()
        board._wdt[1] = board.epoch_ms()
        # the launcher kills a process whose feed file goes stale (a loop stuck outside the board)
        with open(self._file, "w") as f:
            f.write(str(int(board._wdt[0] / board.speed)))


class Pin:
    def __init__(self, board, id, mode, pull, value):
        self._board = board
        self.id = id
        self._key = "pin:" + str(id)
        self._out = mode == "out"
        self._pull = pull
        self._level = 0
        self._handler = None
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            if self._out:
                return self._level
            self._board.service()
            return self._read()
        self._level = 1 if v else 0
        self._board.output(self._key, self._level)
        return None

    def _read(self):
        level = self._board.signals().get(self._key)
        if level is None:
            return 1 if self._pull == "up" else 0
        return 1 if level else 0

    def irq(self, handler=None, trigger=3):
        self._handler = handler
        self._trigger = trigger
        self._last = self._read()
        if self not in self._board._irq_pins:
            self._board._irq_pins.append(self)

    def check(self):
        level = self._read()
        if level == self._last or self._handler is None:
            self._last = level
            return
        self._last = level
        if (level and self._trigger & 1) or (not level and self._trigger & 2):
            self._handler(self)


class ADC:
    FULL_SCALE_UV = 3300000

    def __init__(self, board, pin):
        self._board = board
        self._key = "adc:" + str(pin)

    def read_uv(self):
        self._board.service()
        return int(self._board.signals().get(self._key, 0))

    def read_u16(self):
        uv = self.read_uv()
        return max(0, min(65535, uv * 65535 // self.FULL_SCALE_UV))


class PWM:
    def __init__(self, board, pin, freq, duty):
        self._board = board
        self._key = "pwm:" + str(pin)
        self._freq = freq
        self._duty = -1
        self.duty_u16(duty)

    def duty_u16(self, v=None):
        if v is None:
            return self._duty
        v = max(0, min(65535, int(v)))
        if v != self._duty:
            self._duty = v
            self._board.output(self._key, v)
        return None

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        return None

    def deinit(self):
        self.duty_u16(0)


class PulseCounter:
    # Stands for the ESP32's ULP counter (boards/esp32/ulp.py): started at power-on, counting
    # through deep sleep, and knowing the quiet time, worked out from the scenario's pulses.
    def __init__(self, board, pin):
        self._board = board
        self._pin = pin
        self._key = "pulses:" + pin
        self._base = board.scenario.at(board._power_on_ms / 1000).get(self._key, 0)

    def value(self):
        return self._board.signals().get(self._key, 0) - self._base

    def _quiet(self):
        b = self._board
        return b.scenario.quiet(self._pin, b._power_on_ms / 1000, b.epoch_ms() / 1000)

    def quiet_s(self):
        return self._quiet()[0]

    def dry(self):
        return self._quiet()[1]

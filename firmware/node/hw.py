# The drivers a kind needs, built from the board and its pin map (config "pins" overrides the
# board's PINS key by key). A sensor that is absent or fails to start is left out: the kind
# then reads None for it, and the status reports the node as it is rather than not at all.
# release() undoes what sensors() switched on; node/app.py drops this module and the drivers
# once the kind has sampled.
#
# The bin's ranger (A02YYUW on a UART) is where a battery node would spend its awake time, so:
#   - "ranger_power" in the pin map: a load switch that powers it only while it ranges (8 mA);
#     after switching it on the CPU light-sleeps RANGER_WARMUP_MS;
#   - between frames the CPU light-sleeps (_PacedUART): a UART loses what arrives while the
#     ESP32 light-sleeps, so only from a frame just read until RANGER_GUARD_MS before the next
#     (the sensor sends one every RANGER_PERIOD_MS), then it waits awake (the ESP32 board
#     idles at 80 MHz in such waits);
#   - fewer pings when the readings agree (_Settled).
# Importable on CPython (tools and hil compute ntc_uv here): no MicroPython-only imports.

import math

RANGER_PERIOD_MS = 100  # A02YYUW: a real-time frame every 100 ms (processed: 100-300 ms)
RANGER_GUARD_MS = 20  # awake this long before the next frame is due (period jitter, wake-up)
# Not in the A02YYUW datasheet: the first frame is assumed to come about one output period after
# power-up; the driver's 500 ms timeout covers a slower part, awake
RANGER_WARMUP_MS = 100
STABLE_MM = 10  # readings this close together settle the median (1.25 % of an 800 mm span)


def pins(board, cfg):
    merged = dict(board.pins)
    merged.update(cfg.get("pins") or {})
    return merged


def _try(errors, role, build):
    try:
        return build()
    except (OSError, ValueError, ImportError) as e:
        errors.append("sensor %s: %s" % (role, e))
        return None


def _meter(board, p):
    from firmware.drivers.pulse import PulseCounter

    return PulseCounter(counter=board.pulse_counter(p["meter"]), ticks_ms=board.ticks_ms)


def _probe(board, p):
    from firmware.drivers.leakprobe import LeakProbe

    return LeakProbe(adc=board.adc(p["probe"]), sleep_ms=board.sleep_ms)


def _mag(board, p):
    from firmware.drivers.qmc5883l import QMC5883L

    bus = p["i2c"]
    mag = QMC5883L(board.i2c(bus["bus"], bus["scl"], bus["sda"]), sleep_ms=board.sleep_ms)
    mag.begin()
    return mag


def _ranger(board, p, samples):
    from firmware.drivers.a02yyuw import A02YYUW

    bus = p["ranger_uart"]
    uart = _PacedUART(board, board.uart(bus["bus"], bus["tx"], bus["rx"], 9600))
    power = p.get("ranger_power")
    if power is not None:
        uart.power = board.pin(power, "out", None, 1)
        board.light_sleep_ms(RANGER_WARMUP_MS)
        # nothing in the buffer can be stale: the sensor was off until just now (a frame cut
        # by the light sleep fails its checksum and is skipped by the driver)
        uart.fresh = True
    return _Settled(A02YYUW(uart, ticks_ms=board.ticks_ms, sleep_ms=uart.sleep_ms), samples, uart)


class _PacedUART:
    """The ranger's UART and the waits between its polls: a light sleep while no frame can
    arrive, an awake wait while one may."""

    def __init__(self, board, uart):
        self.board = board
        self.uart = uart
        self.power = None
        self.last = None  # ticks_ms of the last fresh frame (set by _Settled)
        self.fresh = False  # the next any() is the driver's look for stale frames: skip it
        self.read = uart.read
        self.write = uart.write

    def any(self):
        if self.fresh:
            self.fresh = False
            return 0
        return self.uart.any()

    def sleep_ms(self, ms):
        board = self.board
        if self.last is not None:
            due = board.ticks_add(self.last, RANGER_PERIOD_MS - RANGER_GUARD_MS)
            quiet = board.ticks_diff(due, board.ticks_ms())
            if quiet > ms:
                board.light_sleep_ms(quiet)
                return
        board.sleep_ms(ms)

    def close(self):
        if self.power is not None:
            self.power.value(0)


class _Settled:
    """read_mm() of a ranger that stops pinging once the first k = samples // 2 + 1 readings
    all lie within STABLE_MM: the median of all `samples` readings lies between the lowest and
    the highest of any k of them, so it can differ from theirs by STABLE_MM at most; their
    median stands in for the readings not taken."""

    def __init__(self, ranger, samples, uart):
        self.ranger = ranger
        self.need = samples // 2 + 1
        self.uart = uart
        self.got = []  # type: list | None
        self.settled = None
        self.pings = 0

    def read_mm(self):
        if self.settled is not None:
            return self.settled
        mm = self.ranger.read_mm()
        self.pings += 1
        if mm is not None:
            self.uart.last = self.uart.board.ticks_ms()  # a frame just came: pace the next
        got = self.got
        if got is not None:
            if mm is None:
                self.got = None  # an invalid reading: take them all
            else:
                got.append(mm)
                if len(got) == self.need and self.need > 1:
                    if max(got) - min(got) <= STABLE_MM:
                        got.sort()
                        self.settled = got[len(got) // 2]
                    self.got = None
        return mm

    def close(self):
        self.uart.close()


def _radar(board, p):
    from firmware.drivers.ld2410 import LD2410

    bus = p["radar_uart"]
    return LD2410(board.uart(bus["bus"], bus["tx"], bus["rx"], 256000))


def _pir(board, p):
    from firmware.drivers.pir import PIR

    return PIR(board.pin(p["pir"], "in"), ticks_ms=board.ticks_ms)


class Thermistor:
    """An NTC (10 kOhm at 25 C, B 3950) from the ADC pin to ground under a 10 kOhm resistor
    from 3.3 V: the bin's fire sensor. read_c_x10() -> tenths of a degree C."""

    R_FIXED = 10000
    R25 = 10000
    BETA = 3950
    SUPPLY_UV = 3300000

    def __init__(self, adc):
        self.adc = adc

    def read_c_x10(self):
        uv = self.adc.read_uv()
        if uv <= 0 or uv >= self.SUPPLY_UV:
            return None  # open or shorted sensor
        r = self.R_FIXED * uv / (self.SUPPLY_UV - uv)
        inv_t = 1 / 298.15 + math.log(r / self.R25) / self.BETA
        return round((1 / inv_t - 273.15) * 10)


def ntc_uv(c_x10):
    """The ADC microvolts Thermistor reads as c_x10 (for scenarios and tests)."""
    t = c_x10 / 10 + 273.15
    r = Thermistor.R25 * math.exp(Thermistor.BETA * (1 / t - 1 / 298.15))
    return int(Thermistor.SUPPLY_UV * r / (r + Thermistor.R_FIXED))


def sensors(board, cfg, kind_name, errors, samples=5):
    """role -> driver for the kind's SENSORS; failures are appended to errors. release() them
    after sampling. samples: the readings the bin kind takes per wake."""
    p = pins(board, cfg)
    out = {}
    if kind_name == "leak":
        out["meter"] = _try(errors, "meter", lambda: _meter(board, p))
        out["probe"] = _try(errors, "probe", lambda: _probe(board, p))
    elif kind_name == "occupancy":
        out["mag"] = _try(errors, "mag", lambda: _mag(board, p))
    elif kind_name == "lighting":
        out["pir"] = _try(errors, "pir", lambda: _pir(board, p))
        out["radar"] = _try(errors, "radar", lambda: _radar(board, p))
    elif kind_name == "binfill":
        out["ranger"] = _try(errors, "ranger", lambda: _ranger(board, p, samples))
        out["temp"] = _try(errors, "temp", lambda: Thermistor(board.adc(p["temp"])))
        out["tilt"] = _try(errors, "tilt", lambda: board.pin(p["tilt"], "in", "down"))
    for role in list(out):
        if out[role] is None:
            del out[role]
    return out


def release(sensors):
    """Switch off what sensors() switched on (the ranger's power)."""
    for role in sensors:
        close = getattr(sensors[role], "close", None)
        if close is not None and role == "ranger":
            close()


def lamp(board, cfg, errors):
    def build():
        from firmware.drivers.lamp import Lamp

        return Lamp(board.pwm(pins(board, cfg)["lamp"], 1000, 0))

    return _try(errors, "lamp", build)


def battery(board, cfg, errors):
    def build():
        from firmware.drivers.battery import Battery

        b = cfg.get("battery") or {}
        return Battery(
            board.adc(pins(board, cfg)["battery"]),
            r_top=b.get("r_top", 1000000),
            r_bottom=b.get("r_bottom", 1000000),
        )

    return _try(errors, "battery", build)

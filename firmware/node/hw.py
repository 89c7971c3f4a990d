# The drivers a kind needs, built from the board and its pin map (config "pins" overrides the
# board's PINS key by key). A sensor that is absent or fails to start is left out: the kind
# then reads None for it, and the status reports the node as it is rather than not at all.

import math


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


def _ranger(board, p):
    from firmware.drivers.a02yyuw import A02YYUW

    bus = p["ranger_uart"]
    uart = board.uart(bus["bus"], bus["tx"], bus["rx"], 9600)
    return A02YYUW(uart, ticks_ms=board.ticks_ms, sleep_ms=board.sleep_ms)


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


def sensors(board, cfg, kind_name, errors):
    """role -> driver for the kind's SENSORS; failures are appended to errors."""
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
        out["ranger"] = _try(errors, "ranger", lambda: _ranger(board, p))
        out["temp"] = _try(errors, "temp", lambda: Thermistor(board.adc(p["temp"])))
        out["tilt"] = _try(errors, "tilt", lambda: board.pin(p["tilt"], "in", "down"))
    for role in list(out):
        if out[role] is None:
            del out[role]
    return out


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
            r_top=b.get("r_top", 100000),
            r_bottom=b.get("r_bottom", 100000),
        )

    return _try(errors, "battery", build)

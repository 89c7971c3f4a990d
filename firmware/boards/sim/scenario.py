# Scripted sensors for the sim board: what each input reads at a given moment of virtual time.
#
# scenario.json: {"start": epoch_s, "signals": {...}, "timeline": [[t_s, {...}], ...]}
# where t_s counts from "start" (0 if absent, so times are then absolute epoch seconds), and the
# control socket adds entries at the moment they arrive (kept in .sim/signals.json so a deep-sleep
# restart still sees them).
#
# Signal names:
#   "pin:N"          digital level of input pin N (0/1)
#   "adc:N"          microvolts on ADC pin N
#   "pulses:N"       total rising edges seen on pin N since the scenario began (sets the count)
#   "pulse_rate:N"   edges per second on pin N from then on (the count integrates it)
#   "mag"            [x, y, z] raw QMC5883L counts
#   "mag_temp"       QMC5883L raw temperature register value
#   "range_mm"       what an ultrasonic ranger measures (None or absent: no echo)
#   "radar"          LD2410 target: {"state": 0-3, "moving_cm", "moving_energy", "static_cm",
#                    "static_energy", "detect_cm"}

import json


def _pin_of(key):
    return key[key.index(":") + 1 :]


class Scenario:
    def __init__(self, data, extra=None):
        self.start = data.get("start", 0)
        self.base = data.get("signals", {})
        steps = []  # type: list
        for entry in data.get("timeline", ()):
            steps.append((self.start + entry[0], len(steps), entry[1]))
        for entry in extra or ():
            steps.append((entry[0], len(steps), entry[1]))
        # list.sort is not stable on MicroPython: the insertion index keeps ties in file order
        steps.sort()
        self.steps = steps

    def add(self, at_s, changes):
        self.steps.append((at_s, len(self.steps), changes))
        self.steps.sort()

    def at(self, t_s):
        """Every signal's value at virtual time t_s (epoch seconds, float allowed)."""
        values = {}  # type: dict
        counts = {}  # type: dict  # pin -> [count, rate, since_s]
        self._apply(values, counts, self.start, self.base)
        for step in self.steps:
            if step[0] > t_s:
                break
            self._apply(values, counts, step[0], step[2])
        for pin, c in counts.items():
            values["pulses:" + pin] = int(c[0] + c[1] * (t_s - c[2]))
        return values

    def _apply(self, values, counts, at_s, changes):
        for key, value in changes.items():
            if key.startswith("pulses:") or key.startswith("pulse_rate:"):
                pin = _pin_of(key)
                c = counts.get(pin)
                if c is None:
                    c = counts[pin] = [0, 0, at_s]
                c[0] = c[0] + c[1] * (at_s - c[2])
                c[2] = at_s
                if key.startswith("pulses:"):
                    c[0] = value
                else:
                    c[1] = value
            else:
                values[key] = value


def first_level(sc, pin, level, start_ms, end_ms):
    """When an armed wake-up pin first shows its level (or a scripted edge arrives) between
    going to sleep and the timer wake-up; None if it does not."""
    start_s = start_ms / 1000
    end_s = (end_ms if end_ms is not None else start_ms + 86400000) / 1000
    before = sc.at(start_s)
    if before.get("pin:" + pin) == level:
        return start_ms
    times = [start_s] + [s[0] for s in sc.steps if start_s < s[0] <= end_s] + [end_s]
    count0 = before.get("pulses:" + pin, 0)
    for i in range(1, len(times)):
        now = sc.at(times[i])
        if now.get("pin:" + pin) == level:
            return int(times[i] * 1000)
        if now.get("pulses:" + pin, 0) > count0:
            # bisect inside the interval for the first new edge
            lo, hi = times[i - 1], times[i]
            while hi - lo > 0.001:
                mid = (lo + hi) / 2
                if sc.at(mid).get("pulses:" + pin, 0) > count0:
                    hi = mid
                else:
                    lo = mid
            return int(hi * 1000)
    return None


def load(path, extra_path):
    data = _read_json(path) or {}
    extra = _read_json(extra_path) or []
    return Scenario(data, extra)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

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

DRY_S = 3600  # a quiet run this long is one dry hour (boards/esp32/ulp.py DRY_S)
QUIET_MAX = 65535  # the ULP's 16-bit quiet time saturates there


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

    def quiet(self, pin, since_s, t_s):
        """What the ESP32's ULP counter, started at since_s, knows at t_s of pin's pulses:
        (whole seconds since the last pulse or its start, capped at QUIET_MAX; the quiet runs
        that reached DRY_S, wrapping at 16 bits). The pulses are where the count at() gives
        steps up, found per stretch of constant rate rather than one by one (a day at a few
        pulses a second is hundreds of thousands of them)."""
        kp = "pulses:" + pin
        kr = "pulse_rate:" + pin
        run = [since_s, 0]  # the last pulse (or the start), dry hours
        c = [0, 0, self.start]  # count, rate, since: as _apply keeps them
        for step in [(self.start, -1, self.base)] + self.steps:
            if step[0] > t_s:
                break
            changes = step[2]
            if kp in changes or kr in changes:
                _advance(run, c, step[0], since_s)
                if kp in changes:
                    if step[0] >= since_s and int(changes[kp]) > int(c[0]):
                        _pulse(run, step[0])  # set higher: that many pulses at once
                    c[0] = changes[kp]
                if kr in changes:
                    c[1] = changes[kr]
        _advance(run, c, t_s, since_s)
        if t_s - run[0] >= DRY_S:
            run[1] += 1  # the run going on now has reached an hour
        return min(QUIET_MAX, int(t_s - run[0])), run[1] & 0xFFFF

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


def _pulse(run, at_s):
    if at_s - run[0] >= DRY_S:
        run[1] += 1
    run[0] = at_s


def _advance(run, c, to_s, since_s):
    # The pulses of a constant-rate stretch up to to_s (those before since_s not counted),
    # then the count moved on to to_s as _apply moves it.
    x, r, a = c
    if r > 0 and to_s > since_s:
        if a < since_s:
            x += r * (since_s - a)
            a = since_s
        n = int(x + r * (to_s - a)) - int(x)
        if n > 0:
            first = a + (int(x) + 1 - x) / r
            _pulse(run, first)
            if n > 1:
                if 1 / r >= DRY_S:
                    run[1] += n - 1  # every gap of the stretch is a dry hour
                run[0] = first + (n - 1) / r
    c[0] = c[0] + c[1] * (to_s - c[2])
    c[2] = to_s


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

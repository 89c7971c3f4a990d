# Leak kind: a water meter's pulses -> volume and flow, continuous-flow detection, wet probe.
#
# Continuous flow, the signature of a leak behind a meter:
#   suspected  24 h pass without a single zero-flow hour (an hour with no pulse at all);
#   confirmed  the night minimum flow (the lowest hourly flow between 00:00 and 06:00 local
#              time) stays above `night_flow_lh` for `confirm_nights` (2) nights running;
#   cleared    after a clean night (night minimum at or below the threshold), which also
#              restarts the 24 h clock. A zero-flow hour clears a suspicion, not a confirmation.
# A zero-flow hour, when the board's counter watched the meter asleep (the ESP32's ULP: inputs
# "quiet_s" and "dry", see drivers/pulse.py): its dry-hour count moved since the last wake, or
# the quiet run going on now (or at the last wake) is an hour long. quiet_s dates the last
# pulse to the second, so a quiet hour between two pulses that fall in different wake
# intervals counts wherever the wakes fall. Without them the node sees its meter only at its
# wakes: "no pulse for an hour" then means the count did not move across wakes spanning at
# least an hour.
# Either way each interval's litres go to the clock hour in which the interval ends. Night
# logic waits for the gateway's time sync (tod_s).
from firmware.kinds import ack_alarms, command_name, due, merge, raise_alarm, result

HOUR = 3600
DAY = 86400
NIGHT_END_HOUR = 6
NONE, SUSPECTED, CONFIRMED = 0, 1, 2
LEAK_STATES = ("none", "suspected", "confirmed")  # protocol.schema names, by state code
FLOW_MAX_LH = 1000000

DEFAULTS = {
    "pulse_ml": 1000,  # meter constant; 1 L per pulse is the common reed output
    "report_s": 900,
    "night_flow_lh": 1,  # the night minimum must stay ABOVE this to count as a leak night
    "confirm_nights": 2,
    "remind_s": 6 * HOUR,
}
CHECKS = {
    "pulse_ml": (1, 1000000),
    "report_s": (60, DAY),
    "night_flow_lh": (0, FLOW_MAX_LH),
    "confirm_nights": (1, 30),
    "remind_s": (60, 7 * DAY),
}
SENSORS = ("meter", "probe")


def _fresh():
    return {
        "n": 0,  # pulses counted since installation
        "c": -1,  # last raw counter value (-1: none yet)
        "t": -1,  # node time of that reading
        "dry": 0,  # last pulse: the wake at which the count moved, or to the second (quiet_s)
        "dc": -1,  # the counter's dry-hour count at the last wake (-1: it gave none)
        "zero": 0,  # last time a zero-flow hour was seen
        "ls": NONE,
        "run": 0,  # nights running above the threshold
        "nh": -1,  # clock hour being accumulated, its litres (ml) and covered seconds
        "nml": 0,
        "ncov": 0,
        "nmin": -1,  # lowest hourly flow (mL/h) of the night in progress, hours seen
        "nhrs": 0,
        "last": -1,  # night minimum of the last evaluated night (mL/h)
        "nday": -1,  # node time of that night's midnight
        "rep": -1,  # time of the last reading
        "al": {},
    }


class Leak:
    NAME = "leak"

    def __init__(self, config=None, state=None):
        self.cfg = merge(None, DEFAULTS, config or {}, CHECKS)
        self.s = _fresh()
        if state:
            self.s.update(state)  # keys a newer firmware added keep their fresh values
        self.flow_lh = 0

    def configure(self, changes):
        self.cfg = merge(self.cfg, DEFAULTS, changes, CHECKS)
        return self.cfg

    def save(self):
        return self.s

    def read(self, sensors):
        inputs: dict = {"pulses": None, "wet": None, "quiet_s": None, "dry": None}
        meter = sensors.get("meter")
        probe = sensors.get("probe")
        try:
            if meter is not None:
                inputs["pulses"] = meter.count()
                inputs["quiet_s"] = meter.quiet_s()
                inputs["dry"] = meter.dry()
            if probe is not None:
                inputs["wet"] = probe.wet()
        except OSError:
            pass
        return inputs

    def sample(self, sensors, now_s, tod_s=None):
        return self.step(self.read(sensors), now_s, tod_s)

    def step(self, inputs, now_s, tod_s=None):
        s = self.s
        cfg = self.cfg
        count = inputs.get("pulses")
        clean = False
        if count is not None:
            clean = self._count(count, now_s, tod_s, inputs.get("quiet_s"), inputs.get("dry"))
        if s["run"] >= cfg["confirm_nights"]:
            s["ls"] = CONFIRMED
        elif clean:
            s["ls"] = NONE
        elif s["ls"] != CONFIRMED:
            s["ls"] = SUSPECTED if now_s - s["zero"] >= DAY else NONE

        out = result()
        if due(s["rep"], now_s, cfg["report_s"]):
            s["rep"] = now_s
            out["reading"] = self.reading(inputs.get("wet"))
        out["wake_s"] = max(1, s["rep"] + cfg["report_s"] - now_s)
        remind = cfg["remind_s"]
        wet = bool(inputs.get("wet"))
        raise_alarm(out, s["al"], "probe_wet", wet, now_s, remind_s=remind)
        night = self.night_flow_lh()
        confirmed = s["ls"] == CONFIRMED
        raise_alarm(out, s["al"], "leak_confirmed", confirmed, now_s, remind_s=remind, value=night)
        return out

    def night_flow_lh(self):
        """The last evaluated night's minimum flow in whole L/h, None before the first."""
        last = self.s["last"]
        return min(last // 1000, FLOW_MAX_LH) if last >= 0 else None

    def reading(self, wet):
        s = self.s
        return {
            "type": "leak",
            "volume_l": s["n"] * self.cfg["pulse_ml"] // 1000,
            "flow_lh": self.flow_lh,
            "night_flow_lh": self.night_flow_lh(),
            "leak": LEAK_STATES[s["ls"]],
            "probe_wet": bool(wet),
        }

    def command(self, cmd, now_s):
        name, cmd = command_name(cmd)
        if name == "ack_alarm":
            ack_alarms(self.s["al"], cmd)
            return result(wake_s=max(1, self.s["rep"] + self.cfg["report_s"] - now_s))
        raise ValueError("leak: command not handled: " + str(name))

    def _count(self, count, now_s, tod_s, quiet=None, dry=None):
        # Returns True when this wake closed a clean night.
        s = self.s
        if s["c"] < 0:
            s["c"] = count
            s["t"] = s["dry"] = s["zero"] = now_s
            if quiet is not None and dry is not None:
                s["dry"] = now_s - quiet
                s["dc"] = dry
            return False
        # A counter below its last value restarted (power loss): all it holds is new.
        delta = count - s["c"] if count >= s["c"] else count
        dt = now_s - s["t"]
        s["c"] = count
        s["t"] = now_s
        s["n"] += delta
        ml = delta * self.cfg["pulse_ml"]
        self.flow_lh = min(ml * HOUR // (dt * 1000), FLOW_MAX_LH) if dt > 0 else 0
        if quiet is not None and dry is not None:
            self._quiet(now_s, now_s - dt, quiet, dry)
        else:
            s["dc"] = -1  # a later wake with a dry count has nothing to compare it with
            if delta:
                s["dry"] = now_s
            elif now_s - s["dry"] >= HOUR:
                s["zero"] = now_s
        if tod_s is None or dt <= 0:
            return False
        return self._night(ml, dt, tod_s)

    def _quiet(self, now_s, prev_s, quiet, dry):
        # The counter watched the meter between wakes. A zero-flow hour was going on at some
        # moment since the last wake if the quiet run now is an hour long, or the one at the
        # last wake was (it ended since), or the dry-hour count moved (a run reached its hour
        # since). "zero" is then now, or else the first second after the last wake: a run that
        # ended since was still going on then, while the pulse that ended it is somewhere
        # between that wake and the last pulse (dating it at the last pulse would start the
        # 24 h clock up to a wake interval late). A run that reached its hour since is dated
        # at most that early.
        s = self.s
        last = s["dc"]
        was = prev_s - s["dry"] >= HOUR
        s["dc"] = dry
        s["dry"] = now_s - quiet
        if quiet >= HOUR:
            s["zero"] = now_s
        elif was or (last >= 0 and dry != last and dry > 0):
            # Up: new dry hours. Down: the count restarted (the ULP is reloaded after a reset or
            # a power loss), and all it holds is new, as with the pulse count. A 16-bit wrap
            # to 0 would be missed: once in 7 years of a dry hour every hour at worst.
            s["zero"] = max(s["zero"], prev_s + 1)

    def _night(self, ml, dt, tod_s):
        s = self.s
        hour = ((tod_s - 1) % DAY) // HOUR  # the hour in which this interval ends
        clean = False
        if dt >= NIGHT_END_HOUR * HOUR:
            # Slept through most of a night: what was gathered cannot be compared.
            s["nmin"] = -1
            s["nhrs"] = 0
            s["nh"] = -1
        if hour != s["nh"]:
            if 0 <= s["nh"] < NIGHT_END_HOUR and s["ncov"] >= HOUR // 2:
                rate = s["nml"] * HOUR // s["ncov"]
                if s["nmin"] < 0 or rate < s["nmin"]:
                    s["nmin"] = rate
                s["nhrs"] += 1
            if 0 <= s["nh"] < NIGHT_END_HOUR <= hour:
                clean = self._end_night(s["t"] - tod_s)
            s["nh"] = hour
            s["nml"] = 0
            s["ncov"] = 0
        s["nml"] += ml
        s["ncov"] += dt
        return clean

    def _end_night(self, midnight_s):
        s = self.s
        clean = False
        # "running" means consecutive: a night the node slept through breaks the run
        if s["nday"] >= 0 and abs(midnight_s - s["nday"] - DAY) > HOUR:
            s["run"] = 0
        s["nday"] = midnight_s
        if s["nhrs"] >= NIGHT_END_HOUR // 2:
            s["last"] = s["nmin"]
            # whole L/h on both sides, as the reading reports it
            if s["nmin"] // 1000 > self.cfg["night_flow_lh"]:
                s["run"] += 1
            else:
                s["run"] = 0
                s["zero"] = s["t"]
                clean = True
        else:
            s["run"] = 0  # a night without enough data breaks "two nights running"
        s["nmin"] = -1
        s["nhrs"] = 0
        return clean

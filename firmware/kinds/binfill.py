# Bin fill kind: an ultrasonic ranger in the lid looks down at the rubbish.
#
# Each wake takes `samples` range readings and keeps their median (a single echo off a bag's
# edge or the bin wall must not move the level). Fill is linear between `depth_mm` (empty) and
# `full_mm` (full). Readings go out every `report_s`, every `report_half_s` from half full and
# every `report_high_s` from `high_pct`; `full_pct` raises an alarm at once. A temperature at or
# above `fire_c_x10`, or a rise of `fire_rise_c_x10` since the last wake, raises the fire alarm
# (it clears when the temperature is back under the threshold and near where it started). A
# tilted bin (tilt switch) raises bin_tilt; an open lid (a range far past the bottom: the
# sensor in the lid looks elsewhere) freezes the level; both are reported at once. "Emptied" is
# a fall of `empty_drop_pct` from the peak to at most `empty_pct`; the "bin_emptied" command
# says so from the collection crew's side.
from firmware.kinds import ack_alarms, command_name, merge, raise_alarm, result

LID_MARGIN_MM = 150  # a range this far past the bottom is not the bin's contents
HALF_PCT = 50

DEFAULTS = {
    "depth_mm": 1000,
    "full_mm": 200,
    "samples": 5,
    "sample_s": 900,
    "report_s": 14400,
    "report_half_s": 3600,
    "report_high_s": 900,
    "high_pct": 75,
    "full_pct": 90,
    "fire_c_x10": 700,
    "fire_rise_c_x10": 150,
    "empty_drop_pct": 30,
    "empty_pct": 20,
    "remind_s": 6 * 3600,
}
CHECKS = {
    "depth_mm": (100, 10000),
    "full_mm": (0, 9900),
    "samples": (1, 15),
    "sample_s": (10, 86400),
    "report_s": (60, 7 * 86400),
    "report_half_s": (60, 7 * 86400),
    "report_high_s": (60, 7 * 86400),
    "high_pct": (1, 100),
    "full_pct": (1, 100),
    "fire_c_x10": (0, 1250),
    "fire_rise_c_x10": (1, 1000),
    "empty_drop_pct": (1, 100),
    "empty_pct": (0, 100),
    "remind_s": (60, 7 * 86400),
}
SENSORS = ("ranger", "temp", "tilt")


def _check(cfg):
    if cfg["full_mm"] >= cfg["depth_mm"]:
        raise ValueError("config: full_mm not above the bottom (depth_mm)")
    return cfg


def median(values):
    """Median of the readings that are not None, or None when fewer than half are valid."""
    good = [v for v in values if v is not None]
    if not good or len(good) * 2 < len(values):
        return None
    good.sort()
    n = len(good)
    mid = n // 2
    if n % 2:
        return good[mid]
    return (good[mid - 1] + good[mid]) // 2


class BinFill:
    NAME = "binfill"

    def __init__(self, config=None, state=None):
        self.cfg = _check(merge(None, DEFAULTS, config or {}, CHECKS))
        self.s: dict = {
            "fill": -1,  # last known fill % and median distance (-1: none yet)
            "dist": -1,
            "peak": 0,  # highest fill since the last emptying
            "temp": None,  # temperature at the last wake, tenths of a degree
            "tbase": None,  # temperature before a fire spike
            "fire": 0,
            "lid": 0,
            "tilt": 0,
            "rep": -1,
            "al": {},
        }
        if state:
            self.s.update(state)

    def configure(self, changes):
        self.cfg = _check(merge(self.cfg, DEFAULTS, changes, CHECKS))
        return self.cfg

    def save(self):
        return self.s

    def read(self, sensors):
        inputs: dict = {"ranges_mm": [], "temp_c_x10": None, "tilt": None}
        ranger = sensors.get("ranger")
        if ranger is not None:
            for _ in range(self.cfg["samples"]):
                try:
                    inputs["ranges_mm"].append(ranger.read_mm())
                except OSError:
                    inputs["ranges_mm"].append(None)
        try:
            temp = sensors.get("temp")
            if temp is not None:
                inputs["temp_c_x10"] = temp.read_c_x10()
            tilt = sensors.get("tilt")
            if tilt is not None:
                inputs["tilt"] = bool(tilt.value())
        except OSError:
            pass
        return inputs

    def sample(self, sensors, now_s, tod_s=None):
        return self.step(self.read(sensors), now_s, tod_s)

    def fill_for(self, dist_mm):
        cfg = self.cfg
        pct = (cfg["depth_mm"] - dist_mm) * 100 // (cfg["depth_mm"] - cfg["full_mm"])
        return max(0, min(100, pct))

    def report_interval(self, fill):
        cfg = self.cfg
        if fill >= cfg["high_pct"]:
            return cfg["report_high_s"]
        if fill >= HALF_PCT:
            return cfg["report_half_s"]
        return cfg["report_s"]

    def step(self, inputs, now_s, tod_s=None):
        s = self.s
        cfg = self.cfg
        out = result()
        dist = median(inputs.get("ranges_mm") or [])
        lid = 1 if dist is not None and dist > cfg["depth_mm"] + LID_MARGIN_MM else 0
        tilt = 1 if inputs.get("tilt") else 0
        changed = lid != s["lid"] or tilt != s["tilt"]
        s["lid"] = lid
        s["tilt"] = tilt
        if dist is not None and not lid and not tilt:
            s["dist"] = dist
            fill = self.fill_for(dist)
            if s["peak"] - fill >= cfg["empty_drop_pct"] and fill <= cfg["empty_pct"]:
                out["events"].append({"type": "event", "event": "bin_emptied"})
                s["peak"] = fill
            s["peak"] = max(s["peak"], fill)
            s["fill"] = fill
        self._fire(inputs.get("temp_c_x10"))

        fill = s["fill"]
        remind = cfg["remind_s"]
        al = s["al"]
        raise_alarm(
            out, al, "bin_full", fill >= cfg["full_pct"], now_s, remind_s=remind, value=fill
        )
        fire = s["fire"] == 1
        raise_alarm(out, al, "bin_fire", fire, now_s, remind_s=remind, value=s["temp"])
        raise_alarm(out, al, "bin_tilt", tilt == 1, now_s, remind_s=remind)

        every = self.report_interval(max(fill, 0))
        if fill >= 0 and (s["rep"] < 0 or changed or now_s - s["rep"] >= every - every // 10):
            out["reading"] = self.reading()
            s["rep"] = now_s
        next_report = s["rep"] + every - now_s if s["rep"] >= 0 else cfg["sample_s"]
        out["wake_s"] = max(1, min(cfg["sample_s"], next_report))
        return out

    def _fire(self, temp):
        s = self.s
        cfg = self.cfg
        last = s["temp"]
        s["temp"] = temp
        if temp is None:
            return
        if not s["fire"]:
            rise = last is not None and temp - last >= cfg["fire_rise_c_x10"]
            if temp >= cfg["fire_c_x10"] or rise:
                s["fire"] = 1
                s["tbase"] = last if last is not None else temp
        elif temp < cfg["fire_c_x10"] and temp - s["tbase"] < cfg["fire_rise_c_x10"] // 2:
            s["fire"] = 0
            s["tbase"] = None

    def reading(self):
        """The binfill record; None until a first valid distance (both fields are required)."""
        s = self.s
        if s["fill"] < 0:
            return None
        temp = s["temp"]
        if temp is not None:
            temp = max(-400, min(1250, temp))
        return {
            "type": "binfill",
            "fill_pct": s["fill"],
            "distance_mm": s["dist"],
            "temperature_c_x10": temp,
            "lid_open": s["lid"] == 1,
            "tilted": s["tilt"] == 1,
        }

    def command(self, cmd, now_s):
        name, cmd = command_name(cmd)
        out = result(wake_s=max(1, self.cfg["sample_s"]))
        if name == "bin_emptied":
            self.s["peak"] = 0
            # the full alarm can fire again; a bin still full says so on the next wake
            self.s["al"].pop("bin_full", None)
            out["wake_s"] = 1  # measure now: the crew is at the bin
        elif name == "ack_alarm":
            ack_alarms(self.s["al"], cmd)
        else:
            raise ValueError("binfill: command not handled: " + str(name))
        return out

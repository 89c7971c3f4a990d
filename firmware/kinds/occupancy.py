# Occupancy kind: a parked car bends the earth's field under a QMC5883L magnetometer.
#
# Samples are in nT (read() converts the driver's counts with its lsb_per_gauss), so thresholds
# do not depend on the chip's range. The distance of a sample from the baseline (the empty
# spot's field) decides: at or above `threshold_ut` the spot looks occupied, below
# `hysteresis_pct` of it the spot looks free, and between the two the state holds. A change is
# accepted once `debounce` consecutive samples agree and the first of them is at least
# `debounce_s` old; while one is pending the node wakes after `confirm_s`. While the spot is
# clearly free the baseline follows slow drift (temperature, a nearby structure) by
# 1 / 2**drift_shift of the difference per sample. "recalibrate" takes a new baseline from the
# next `cal_samples` samples; the spot must be empty then (as at installation).
from firmware.kinds import command_name, due, merge, result

FREE, OCCUPIED, UNKNOWN = 0, 1, 2
SPOT_STATES = ("free", "occupied", "unknown")  # protocol.schema names, by state code
HEALTH = ("ok", "degraded", "failed")
OK, DEGRADED, FAILED = 0, 1, 2
FAULTS_TO_UNKNOWN = 3  # one I2C glitch must not report a change
NT_PER_GAUSS = 100000
SCALE = 16  # the baseline keeps 4 fraction bits so slow drift is not rounded away

DEFAULTS = {
    "sample_s": 10,
    "confirm_s": 2,
    "report_s": 3600,  # heartbeat when nothing changes
    "threshold_ut": 8,  # a car over an in-ground sensor moves the field by 10-100 uT
    "hysteresis_pct": 60,
    "debounce": 2,
    "debounce_s": 0,
    "drift_shift": 6,
    "cal_samples": 4,
}
CHECKS = {
    "sample_s": (1, 3600),
    "confirm_s": (1, 600),
    "report_s": (10, 86400),
    "threshold_ut": (1, 1000),
    "hysteresis_pct": (1, 100),
    "debounce": (1, 20),
    "debounce_s": (0, 600),
    "drift_shift": (1, 15),
    "cal_samples": (1, 64),
}
SENSORS = ("mag",)


def _fresh():
    return {
        "b": [0, 0, 0],  # baseline, nT x SCALE
        "cal": 0,  # calibration samples still to take, and their sums (nT)
        "acc": [0, 0, 0],
        "st": UNKNOWN,
        "cand": UNKNOWN,  # state waiting for debounce: samples that agreed, since when
        "cnt": 0,
        "csince": 0,
        "chg": 0,  # changes since the last reading
        "tchg": -1,
        "rep": -1,
        "h": OK,
        "fails": 0,
    }


def _toward_zero(num, shift):
    # >> floors, which would pull the baseline down by one unit per sample when below it
    return num >> shift if num >= 0 else -((-num) >> shift)


class Occupancy:
    NAME = "occupancy"

    def __init__(self, config=None, state=None):
        self.cfg = merge(None, DEFAULTS, config or {}, CHECKS)
        self.s = _fresh()
        if state:
            self.s.update(state)
        else:
            self.s["cal"] = self.cfg["cal_samples"]

    def configure(self, changes):
        self.cfg = merge(self.cfg, DEFAULTS, changes, CHECKS)
        return self.cfg

    def save(self):
        return self.s

    def read(self, sensors):
        mag = sensors.get("mag")
        if mag is None:
            return {"mag_nt": None, "health": FAILED}
        try:
            xyz = mag.read()
        except OSError:
            return {"mag_nt": None, "health": FAILED}
        if xyz is None:  # the chip flagged an overflow: the field is past its range
            return {"mag_nt": None, "health": DEGRADED}
        lsb = mag.lsb_per_gauss
        nt = (
            xyz[0] * NT_PER_GAUSS // lsb,
            xyz[1] * NT_PER_GAUSS // lsb,
            xyz[2] * NT_PER_GAUSS // lsb,
        )
        return {"mag_nt": nt, "health": OK}

    def sample(self, sensors, now_s, tod_s=None):
        return self.step(self.read(sensors), now_s, tod_s)

    def step(self, inputs, now_s, tod_s=None):
        s = self.s
        cfg = self.cfg
        out = result()
        if s["tchg"] < 0:
            s["tchg"] = now_s
        xyz = inputs.get("mag_nt")
        s["h"] = inputs.get("health", OK if xyz is not None else FAILED)
        if xyz is None:
            s["fails"] += 1
            if s["fails"] >= FAULTS_TO_UNKNOWN:
                self._change(UNKNOWN, now_s, out)
        else:
            s["fails"] = 0
            if s["cal"] > 0:
                self._calibrate(xyz, now_s, out)
            else:
                self._detect(xyz, now_s, out)

        if due(s["rep"], now_s, cfg["report_s"]):
            out["reading"] = self.reading(now_s)
            s["rep"] = now_s
            s["chg"] = 0
        if s["cal"] > 0 or s["cnt"] > 0:
            out["wake_s"] = cfg["confirm_s"]
        else:
            out["wake_s"] = max(1, min(cfg["sample_s"], s["rep"] + cfg["report_s"] - now_s))
        return out

    def reading(self, now_s):
        s = self.s
        return {
            "type": "occupancy",
            "state": SPOT_STATES[s["st"]],
            "changes": min(s["chg"], 0xFFFF),
            "since_change_s": now_s - s["tchg"],
            "magnetometer": HEALTH[s["h"]],
        }

    def command(self, cmd, now_s):
        name, cmd = command_name(cmd)
        out = result(wake_s=self.cfg["confirm_s"])
        if name == "recalibrate":
            self.s["cal"] = self.cfg["cal_samples"]
            self.s["acc"] = [0, 0, 0]
            self.s["cnt"] = 0
            self._change(UNKNOWN, now_s, out)
            return out
        if name == "ack_alarm":
            return out  # occupancy raises no alarms
        raise ValueError("occupancy: command not handled: " + str(name))

    def deviation_nt2(self, xyz):
        """Squared distance of a sample (nT) from the baseline, in nT squared."""
        b = self.s["b"]
        total = 0
        for i in range(3):
            d = (xyz[i] * SCALE - b[i]) // SCALE
            total += d * d
        return total

    def _calibrate(self, xyz, now_s, out):
        s = self.s
        acc = s["acc"]
        for i in range(3):
            acc[i] += xyz[i]
        s["cal"] -= 1
        if s["cal"] == 0:
            n = self.cfg["cal_samples"]
            s["b"] = [acc[i] * SCALE // n for i in range(3)]
            s["acc"] = [0, 0, 0]
            s["cnt"] = 0
            self._change(FREE, now_s, out)

    def _detect(self, xyz, now_s, out):
        s = self.s
        cfg = self.cfg
        on = cfg["threshold_ut"] * 1000
        off = on * cfg["hysteresis_pct"] // 100
        d2 = self.deviation_nt2(xyz)
        if d2 >= on * on:
            seen = OCCUPIED
        elif d2 < off * off:
            seen = FREE
        else:
            seen = s["st"]  # inside the hysteresis band nothing changes
        if seen == s["st"]:
            s["cnt"] = 0
            if seen == FREE and d2 < off * off:
                b = s["b"]
                for i in range(3):
                    b[i] += _toward_zero(xyz[i] * SCALE - b[i], cfg["drift_shift"])
            return
        if seen != s["cand"] or s["cnt"] == 0:
            s["cand"] = seen
            s["cnt"] = 0
            s["csince"] = now_s
        s["cnt"] += 1
        if s["cnt"] >= cfg["debounce"] and now_s - s["csince"] >= cfg["debounce_s"]:
            s["cnt"] = 0
            self._change(seen, now_s, out)

    def _change(self, state, now_s, out):
        s = self.s
        if state == s["st"]:
            return
        s["st"] = state
        s["chg"] += 1
        s["tchg"] = now_s
        out["events"].append({"type": "event", "event": "spot_change", "state": SPOT_STATES[state]})

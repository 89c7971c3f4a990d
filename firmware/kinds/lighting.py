# Lighting kind: a street lamp that brightens for passers-by and saves energy otherwise.
#
# At night the lamp rests at `min_level_pct`; a detection (PIR edge, radar target, or a "wake"
# from the gateway when a walker comes from a neighbouring lamp) fades it up to `max_level_pct`
# over `fade_ms`, holds it `hold_s` after the last detection, then fades back over `fade_ms`.
# By day it sits at `day_level_pct` and detections are only counted. Night is the window
# [night_start_min, night_end_min) in local minutes (the gateway's time sync); until the first
# sync the lamp assumes night, the safe side for people on a path.
#
# The fast path (presence -> fade started) runs in the caller's IRQ or reader context and
# touches only the lamp driver, so the light moves at the next 20 ms tick whatever the network
# does. Energy integrates the lamp's duty (an LED driver's power follows duty, not perceived
# level) times `rated_w` over the ticks.
import time

from firmware.kinds import ack_alarms, command_name, due, merge, raise_alarm, result

FADE_TICK_MS = 20
IDLE_TICK_MS = 1000
MINUTES_PER_DAY = 1440
ACC_PER_WH = 1000 * 3600 * 1000  # acc unit: power per mille x ms x W
STEP_S = 60  # the slow path (schedule, readings) runs at least this often

DEFAULTS = {
    "min_level_pct": 20,
    "max_level_pct": 100,
    "day_level_pct": 0,
    "hold_s": 60,
    "fade_ms": 1000,
    "night_start_min": 18 * 60,
    "night_end_min": 7 * 60,
    "rated_w": 40,
    "report_s": 900,
    "event_gap_s": 10,  # one presence event per gap is enough for the gateway
    "remind_s": 6 * 3600,
}
CHECKS = {
    "min_level_pct": (0, 100),
    "max_level_pct": (0, 100),
    "day_level_pct": (0, 100),
    "hold_s": (0, 3600),
    "fade_ms": (0, 60000),
    "night_start_min": (0, MINUTES_PER_DAY - 1),
    "night_end_min": (0, MINUTES_PER_DAY - 1),
    "rated_w": (1, 2000),
    "report_s": (10, 86400),
    "event_gap_s": (0, 3600),
    "remind_s": (60, 7 * 86400),
}
SENSORS = ("pir", "radar")


def _check(cfg):
    if cfg["min_level_pct"] > cfg["max_level_pct"]:
        raise ValueError("config: min_level_pct above max_level_pct")
    return cfg


class Lighting:
    NAME = "lighting"

    def __init__(self, config=None, state=None, lamp=None, ticks_ms=None):
        self.cfg = _check(merge(None, DEFAULTS, config or {}, CHECKS))
        self.lamp = lamp
        self._ticks = ticks_ms or time.ticks_ms
        self.s: dict = {"det": 0, "acc": 0, "rep": -1, "al": {}}
        if state:
            self.s.update(state)
        self.night = True
        self.held = False
        self._hold_end = 0
        self._last_tick: int | None = None
        self._last_event: int | None = None
        self._since_event = 0
        self._events = []
        self._flag = None
        self.fault = False

    def configure(self, changes):
        self.cfg = _check(merge(self.cfg, DEFAULTS, changes, CHECKS))
        self.tick(self._ticks())  # a new resting level applies at once
        return self.cfg

    def save(self):
        return self.s

    def base(self):
        """The resting level now: min_level_pct at night, day_level_pct by day."""
        return self.cfg["min_level_pct"] if self.night else self.cfg["day_level_pct"]

    def is_night(self, tod_s):
        if tod_s is None:
            return True
        start = self.cfg["night_start_min"]
        end = self.cfg["night_end_min"]
        minute = (tod_s // 60) % MINUTES_PER_DAY
        if start == end:
            return True
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end

    # -- fast path --------------------------------------------------------------------------
    def presence(self, now_ms, detected=True, hold_s=None):
        """A detection (or, detected=False, a wake-up from the gateway). Returns True when it
        queued a presence event that the runtime should send now."""
        cfg = self.cfg
        queued = False
        if detected:
            self.s["det"] += 1
            self._since_event += 1
            gap = cfg["event_gap_s"] * 1000
            if self._last_event is None or time.ticks_diff(now_ms, self._last_event) >= gap:
                self._last_event = now_ms
                count = min(self._since_event, 0xFFFF)
                self._events.append({"type": "event", "event": "presence", "count": count})
                self._since_event = 0
                queued = True
        if self.night:
            hold_ms = (cfg["hold_s"] if hold_s is None else hold_s) * 1000
            end = time.ticks_add(now_ms, hold_ms)
            if not self.held or time.ticks_diff(end, self._hold_end) > 0:
                self._hold_end = end
            self.held = True
            lamp = self.lamp
            if lamp is not None and lamp.target() != cfg["max_level_pct"]:
                self._integrate(now_ms)
                lamp.fade(cfg["max_level_pct"], cfg["fade_ms"], now_ms)
        if self._flag is not None:
            self._flag.set()  # cut run()'s idle wait short: the fade needs its ticks now
        return queued

    def tick(self, now_ms):
        """Advance the fade and the hold; returns the ms until the next tick is wanted."""
        self._integrate(now_ms)
        lamp = self.lamp
        if lamp is None:
            return IDLE_TICK_MS
        if self.held and time.ticks_diff(now_ms, self._hold_end) >= 0:
            self.held = False
        # not held: converge on the resting level (after a hold, at start-up, when the
        # schedule or the profile changes)
        if not self.held and lamp.target() != self.base():
            lamp.fade(self.base(), self.cfg["fade_ms"], now_ms)
        lamp.update(now_ms)
        if lamp.fading:
            return FADE_TICK_MS
        if self.held:
            return max(1, min(IDLE_TICK_MS, time.ticks_diff(self._hold_end, now_ms)))
        return IDLE_TICK_MS

    async def run(self):
        """The lamp's own task: ticks the fade, woken early by presence()."""
        import asyncio

        self._flag = asyncio.ThreadSafeFlag()
        while True:
            wait = self.tick(self._ticks())
            try:
                await asyncio.wait_for_ms(self._flag.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def _integrate(self, now_ms):
        if self._last_tick is not None and self.lamp is not None:
            dt = time.ticks_diff(now_ms, self._last_tick)
            if dt > 0:
                self.s["acc"] += self.lamp.power_pm() * dt * self.cfg["rated_w"]
        self._last_tick = now_ms

    # -- slow path --------------------------------------------------------------------------
    def read(self, sensors):
        inputs: dict = {"presence": None, "lamp_fault": None}
        try:
            pir = sensors.get("pir")
            if pir is not None:
                inputs["presence"] = pir.motion()
            radar = sensors.get("radar")
            if radar is not None:
                radar.poll()
                inputs["presence"] = bool(inputs["presence"]) or radar.presence
        except OSError:
            pass
        return inputs

    def sample(self, sensors, now_s, tod_s=None):
        return self.step(self.read(sensors), now_s, tod_s)

    def step(self, inputs, now_s, tod_s=None):
        cfg = self.cfg
        now_ms = self._ticks()
        if inputs.get("lamp_fault") is not None:
            self.fault = bool(inputs["lamp_fault"])
        night = self.is_night(tod_s)
        if night != self.night:
            self.night = night
            if not night:
                self.held = False  # daylight ends a hold at once
        if inputs.get("presence"):
            self.presence(now_ms)
        self.tick(now_ms)
        s = self.s
        out = result(wake_s=max(1, min(STEP_S, cfg["report_s"])))
        out["events"] = self._events
        self._events = []
        if due(s["rep"], now_s, cfg["report_s"]):
            out["reading"] = self.reading()
            s["rep"] = now_s
            s["det"] = 0
        raise_alarm(out, s["al"], "lamp_fault", self.fault, now_s, remind_s=cfg["remind_s"])
        return out

    def energy_wh(self):
        return self.s["acc"] // ACC_PER_WH

    def reading(self):
        energy = self.energy_wh()
        self.s["acc"] -= energy * ACC_PER_WH  # the remainder carries into the next report
        return {
            "type": "lighting",
            "detections": min(self.s["det"], 0xFFFF),
            "level_pct": self.lamp.level if self.lamp is not None else 0,
            "energy_wh": energy,
            "lamp_fault": self.fault,
        }

    def command(self, cmd, now_s):
        name, cmd = command_name(cmd)
        out = result(wake_s=1)
        if name == "wake":
            self.presence(self._ticks(), False, cmd.get("duration_s"))
        elif name == "ack_alarm":
            ack_alarms(self.s["al"], cmd)
        else:
            raise ValueError("lighting: command not handled: " + str(name))
        return out

"""The story the city block plays, as data: what each sensor sees and when.

From Monday 20:00 to Wednesday 07:00 (local time; the demo's clock is UTC):

- Monday 21:00, and again Tuesday 21:30 the other way, a walker crosses the park; each lamp's
  PIR sees her as she passes, and the gateway lights the lamps ahead of her.
- Monday 23:00 a pipe starts leaking under the sports hall: its meter keeps counting through
  both nights (leak suspected after 24 h without a zero-flow hour, confirmed after two nights
  whose minimum flow stays above the threshold). The other meters only count by day.
- Bins fill by day and in the evening (the park entrance bin is full on Monday night); the
  collection round passes at 06:30 and empties every bin over 40 %.
- Cars park on the reserved spots and leave: a resident overnight, short Shop-and-Go stops.

Times are virtual Unix seconds. `sensors(spec)` is the node's `.sim/scenario.json` (signal names
of firmware/boards/sim/scenario.py), so battery nodes read their inputs from their own clock
across deep sleeps. The walker is not in there: lamps run without sleeping on a clock of their
own, so the demo drives their PIR pins live through each board's control socket (`Walk`).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

from tools.demo.city_block import LAMP_SPACING_M, NodeSpec

HOUR = 3600
START_S = 1748894400  # Monday 2 June 2025 20:00 UTC
END_S = START_S + 35 * HOUR  # Wednesday 07:00
LEAK_START_S = START_S + 3 * HOUR  # Monday 23:00
LEAK_LH = 25  # a leak worth finding: 600 L a day
COLLECTIONS_S = (START_S + 10 * HOUR + 1800, START_S + 34 * HOUR + 1800)  # 06:30
COLLECT_OVER_PCT = 40
EMPTY_LEFT_PCT = 4
BIN_DEPTH_MM = 1000  # binfill defaults: empty at 1000 mm, full at 200 mm
BIN_FULL_MM = 200
WALK_SPEED_MPS = 1.4
PIR_RANGE_M = 6.0  # the PIR sees a walker this far from the lamp
PIR_HOLD_S = 2.0  # and holds its output this long after the last motion
GATE_M = 20.0  # from the park gate to the first lamp
# Installers switch the nodes on one after the other: a block powering up in the same second
# would collide on the LoRa channel and lose those first frames (NON as they are)
POWER_UP_GAP_S = 20.0

# Earth's field at the spot and with a car over the sensor, QMC5883L counts at 8 G range
# (3000 counts per gauss): a car bends it by about 45 uT, the threshold is 8 uT.
MAG_FREE = (600, -300, 1200)
MAG_CAR = (900, -150, 2500)
# Visits per spot, hours after Monday 20:00: (arrives, leaves)
VISITS = (
    ((0.67, 12.17), (14.0, 15.5)),  # a resident overnight, then a mid-morning errand
    ((12.33, 12.75), (13.5, 13.83), (16.17, 16.67), (21.0, 21.42)),  # Shop-and-Go stops
    ((17.0, 20.5),),
    ((0.25, 0.83), (15.0, 15.33), (22.0, 22.5)),
    ((11.75, 21.67),),
    ((23.0, 34.83),),
)

# Water use of a public building by local hour, L/h (the sports hall's own scale is 1.0)
USE_LH = {7: 150, 8: 150, 9: 60, 10: 60, 11: 60, 12: 120, 13: 120, 14: 60, 15: 60}
USE_LH.update({16: 60, 17: 60, 18: 30, 19: 30})


def hour_of(t_s: float) -> int:
    return int(t_s // HOUR) % 24


def clock_text(t_s: float, seconds: bool = False) -> str:
    """'Mon 21:00' (the demo's local time is UTC)."""
    return time.strftime("%a %H:%M:%S" if seconds else "%a %H:%M", time.gmtime(t_s))


@dataclass(frozen=True)
class Walk:
    """A walker crossing the park path from one end to the other."""

    start_s: float  # virtual time she enters the park
    lamps: tuple[str, ...]  # lamp ids in the order she passes them
    spacing_m: float = LAMP_SPACING_M
    speed_mps: float = WALK_SPEED_MPS

    def arrival_s(self, k: int) -> float:
        """Seconds after the start when she is under the k-th lamp she passes (0-based)."""
        return (GATE_M + k * self.spacing_m) / self.speed_mps

    @property
    def duration_s(self) -> float:
        return self.arrival_s(len(self.lamps) - 1) + GATE_M / self.speed_mps

    def pir_windows(self) -> list[tuple[str, float, float]]:
        """(lamp, PIR on, PIR off) in seconds after the start."""
        reach = PIR_RANGE_M / self.speed_mps
        return [
            (lamp, self.arrival_s(k) - reach, self.arrival_s(k) + reach + PIR_HOLD_S)
            for k, lamp in enumerate(self.lamps)
        ]


@dataclass(frozen=True)
class Cue:
    at_s: float
    text: str


def fill_series(index: int) -> list[tuple[float, float]]:
    """(virtual time, fill %) steps of bin `index` (1-based): it fills by day and in the
    evening, and the collection round empties it when it is over COLLECT_OVER_PCT."""
    fill = 75.0 if index == 1 else 15.0 + 12.0 * (index % 4)
    evening = 8.0 if index == 1 else 2.0 + index % 3
    day = 3.0 + index % 4
    steps = [(float(START_S), fill)]
    t = START_S
    while t < END_S:
        h = hour_of(t)
        rate = evening if 20 <= h < 22 else day if 7 <= h < 20 else 0.0
        t += HOUR
        fill = min(100.0, fill + rate)
        for collect in COLLECTIONS_S:
            if t - HOUR < collect <= t and fill >= COLLECT_OVER_PCT:
                steps.append((float(collect), float(EMPTY_LEFT_PCT)))
                fill = EMPTY_LEFT_PCT + rate * (t - collect) / HOUR
        steps.append((float(t), round(fill, 1)))
    return steps


def range_mm(fill_pct: float) -> int:
    return round(BIN_DEPTH_MM - fill_pct / 100 * (BIN_DEPTH_MM - BIN_FULL_MM))


def water_lh(index: int, t_s: float, leaking: bool) -> float:
    scale = 1.0 if index == 1 else 0.5 + 0.25 * (index % 5)
    use = USE_LH.get(hour_of(t_s), 0) * scale
    if leaking and t_s >= LEAK_START_S:
        use += LEAK_LH
    return use


def visits(index: int) -> list[tuple[float, float]]:
    """(arrives, leaves) virtual times of the cars on spot `index` (1-based)."""
    template = VISITS[(index - 1) % len(VISITS)]
    shift = 0.5 * ((index - 1) // len(VISITS))  # a second row of spots, half an hour later
    return [(START_S + (a + shift) * HOUR, START_S + (b + shift) * HOUR) for a, b in template]


def _timeline(steps: list[tuple[float, dict[str, Any]]]) -> list[list[Any]]:
    return [[round(t - START_S, 3), change] for t, change in steps]


def sensors(spec: NodeSpec) -> dict[str, Any]:
    """The node's .sim/scenario.json."""
    battery_uv = 1_600_000 + 10_000 * (spec.index % 7)  # 3.2-3.3 V behind a 1:2 divider
    base: dict[str, Any] = {"adc:36": battery_uv}
    steps: list[tuple[float, dict[str, Any]]] = []
    if spec.kind == "leak":
        base["adc:35"] = 3_000_000  # the leak probe is dry
        changes = sorted({*range(START_S, END_S + HOUR, HOUR), LEAK_START_S})
        for t in changes:
            lh = water_lh(spec.index, t, spec.leaking)
            steps.append((t, {"pulse_rate:34": round(lh / 3600, 6)}))  # 1 L a pulse
    elif spec.kind == "binfill":
        # the node's own thermistor formula (firmware code, so not type-checked here)
        ntc_uv = importlib.import_module("firmware.node.hw").ntc_uv
        base["adc:39"] = int(ntc_uv(180 + 5 * spec.index))  # 18 degrees C and a little more
        base["pin:4"] = 0  # upright
        for t, fill in fill_series(spec.index):
            steps.append((t, {"range_mm": range_mm(fill)}))
    elif spec.kind == "occupancy":
        base["mag"] = list(MAG_FREE)
        for arrives, leaves in visits(spec.index):
            steps.append((arrives, {"mag": list(MAG_CAR)}))
            steps.append((leaves, {"mag": list(MAG_FREE)}))
    else:
        base["pin:39"] = 0  # the PIR: driven live by the walker (Walk)
    return {"start": START_S, "signals": base, "timeline": _timeline(steps)}


class Story:
    """The scripted side of the demo for one block: walks, narration cues, time syncs."""

    def __init__(self, specs: list[NodeSpec]) -> None:
        self.specs = specs
        self.start_s = START_S
        self.end_s = END_S
        lamp_ids = tuple(s.node_id for s in specs if s.kind == "lighting")
        self.walks = [
            Walk(START_S + 1 * HOUR, lamp_ids),
            Walk(START_S + 25 * HOUR + 1800, tuple(reversed(lamp_ids))),
        ]
        self.cues = self._cues()
        self.power_on_s = {
            spec.node_id: START_S + POWER_UP_GAP_S * i for i, spec in enumerate(specs)
        }

    def _cues(self) -> list[Cue]:
        cues = []
        leaking = [s for s in self.specs if s.leaking]
        for walk in self.walks:
            gate = "west" if walk.lamps[0].endswith("01") else "east"
            cues.append(
                Cue(walk.start_s, f"a walker enters the park by the {gate} gate (slow motion)")
            )
        for spec in leaking:
            cues.append(
                Cue(
                    LEAK_START_S,
                    f"a pipe starts leaking in the {spec.place} ({spec.node_id}):"
                    f" {LEAK_LH} L/h, day and night",
                )
            )
        for collect in COLLECTIONS_S:
            cues.append(
                Cue(collect, f"the collection round passes: bins over {COLLECT_OVER_PCT} % emptied")
            )
        cues.append(Cue(START_S + 11 * HOUR, "morning: the buildings open, water flows"))
        return sorted(cues, key=lambda c: c.at_s)

    def emptied_bins(self) -> list[str]:
        """Bins the collection round empties at least once (what the gateway should see)."""
        out = []
        for spec in self.specs:
            if spec.kind == "binfill":
                series = fill_series(spec.index)
                if any(f == EMPTY_LEFT_PCT for _, f in series):
                    out.append(spec.node_id)
        return out

    def time_sync(self, node_id: str) -> dict[str, Any]:
        """The downlink that gives a battery node the local time (night rules need it),
        queued before it first reports: the node's power-on time plus the second or so of
        virtual time its first life takes."""
        unix_s = round(self.power_on_s[node_id]) + 2
        return {"type": "time", "unix_s": unix_s, "utc_offset_min": 0}

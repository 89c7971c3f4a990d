"""The live narration, told from what reached upstream, and the facts the story showed.

The narrator reads the readings the gateway forwarded (the MQTT broker's messages, or the
local spool's JSON lines, fed by tools/demo/upstream.py) and the lamps' light output (their
boards' observer sockets), and turns them into short lines:

    Mon 23:00  story     a pipe starts leaking in the sports hall (meter-01): 25 L/h
    Tue 23:04  meter-01  leak SUSPECTED: 24 h without one hour of zero flow (25 L/h now)

`Facts` keeps what a test (tests/demo/) and the final summary check: which nodes reported,
the alarms raised, bins emptied, cars parked, lamps lit ahead of the walker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tools.demo.city_block import NodeSpec
from tools.demo.scenario import Walk, clock_text

LIT_DUTY = 32768  # a lamp above half duty is lit for a walker (it rests near 3 % at night)

ALARM_TEXT = {
    "leak_confirmed": "LEAK CONFIRMED: the night minimum stayed above the threshold two nights"
    " running",
    "bin_full": "bin FULL",
    "probe_wet": "leak probe WET",
    "bin_fire": "FIRE in the bin",
    "bin_tilt": "bin knocked over",
    "lamp_fault": "lamp fault",
    "battery_low": "battery low",
}


@dataclass
class Facts:
    nodes: int = 0
    reporting: list[str] = field(default_factory=list)
    records: int = 0
    by_link: dict[str, int] = field(default_factory=dict)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    leak_suspected: list[str] = field(default_factory=list)
    leak_confirmed: list[str] = field(default_factory=list)
    bins_full: list[str] = field(default_factory=list)
    bins_emptied: list[str] = field(default_factory=list)
    cars_parked: list[str] = field(default_factory=list)
    cars_left: list[str] = field(default_factory=list)
    presence_events: int = 0
    walks: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WalkWatch:
    """One walk: when the walker reached each lamp and when each lamp lit (real seconds)."""

    walk: Walk
    started_real: float
    rate: float  # virtual seconds per real second during the walk
    arrived: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # its own PIR saw her
    lit: dict[str, float] = field(default_factory=dict)


class Narrator:
    def __init__(
        self,
        specs: list[NodeSpec],
        clock: Callable[[], float],
        say: Callable[[str], None] = print,
        when: Callable[[str, float, float], float | None] | None = None,
    ) -> None:
        self.specs = {s.node_id: s for s in specs}
        self.clock = clock
        self.when = when  # (node, wall time received, age) -> city time it was observed
        self._at: float | None = None
        self.say = say
        self.facts = Facts(nodes=len(specs))
        self._seen: set[str] = set()
        self._leak_state: dict[str, str] = {}
        self._night: dict[str, int | None] = {}
        self._fill: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._spot: dict[str, str] = {}
        self._active: set[tuple[str, str]] = set()
        self._walk: WalkWatch | None = None
        self._lamp_duty: dict[str, int] = {}

    def line(self, who: str, text: str, seconds: bool = False) -> None:
        at = self._at if self._at is not None else self.clock()
        self.say(f"{clock_text(at, seconds):<12}  {who:<9} {text}")

    def _observed(self, node: str, rec: dict[str, Any], data: dict[str, Any]) -> float | None:
        """When the node saw it, on the story's clock (the age is on the node's own clock)."""
        if self.when is None:
            return None
        try:
            received = datetime.fromisoformat(str(rec["receivedAt"])).timestamp()
        except (KeyError, ValueError):
            return None
        return self.when(node, received, float(data.get("age_s") or 0))

    # -- readings from upstream ----------------------------------------------------------------
    def record(self, rec: dict[str, Any]) -> None:
        node = str(rec.get("node", ""))
        data = rec.get("data") or {}
        kind = str(rec.get("kind", ""))
        if node not in self.specs:
            return
        self.facts.records += 1
        spec = self.specs[node]
        if node not in self._seen:
            self._seen.add(node)
            self.facts.reporting = sorted(self._seen)
            self.facts.by_link[spec.link] = self.facts.by_link.get(spec.link, 0) + 1
            if len(self._seen) == len(self.specs):
                links = ", ".join(f"{n} over {k}" for k, n in sorted(self.facts.by_link.items()))
                self.line("gateway", f"all {len(self.specs)} nodes are reporting ({links})")
        handler = getattr(self, "_on_" + kind, None)
        if handler is not None:
            self._at = self._observed(node, rec, data)
            try:
                handler(spec, data)
            finally:
                self._at = None

    def _on_leak(self, spec: NodeSpec, data: dict[str, Any]) -> None:
        node = spec.node_id
        state = str(data.get("leak", "none"))
        before = self._leak_state.get(node, "none")
        self._leak_state[node] = state
        night = data.get("night_flow_lh")
        if night is not None and night != self._night.get(node) and night > 1:
            self.line(node, f"night minimum {night} L/h: water ran all night in the {spec.place}")
        self._night[node] = night
        if state == before:
            return
        if state == "suspected":
            if node not in self.facts.leak_suspected:
                self.facts.leak_suspected.append(node)
            self.line(
                node,
                "leak SUSPECTED: 24 h without one hour of zero flow"
                f" ({data.get('flow_lh', '?')} L/h now)",
            )
        elif state == "none" and before != "none":
            self.line(node, "no leak any more: a clean night")

    def _on_binfill(self, spec: NodeSpec, data: dict[str, Any]) -> None:
        fill = data.get("fill_pct")
        if isinstance(fill, int):
            self._fill[spec.node_id] = fill
            self._peak[spec.node_id] = max(self._peak.get(spec.node_id, 0), fill)

    def _on_occupancy(self, spec: NodeSpec, data: dict[str, Any]) -> None:
        self._spot_state(spec, str(data.get("state", "")))

    def _spot_state(self, spec: NodeSpec, state: str) -> None:
        node = spec.node_id
        before = self._spot.get(node)
        self._spot[node] = state
        if state == before or (before is None and state == "free"):
            return
        if state == "occupied":
            self.facts.cars_parked.append(node)
            self.line(node, f"a car parks ({spec.place})")
        elif state == "free" and before == "occupied":
            self.facts.cars_left.append(node)
            self.line(node, "the car leaves: the spot is free")

    def _on_event(self, spec: NodeSpec, data: dict[str, Any]) -> None:
        event = data.get("event")
        node = spec.node_id
        if event == "spot_change":
            self._spot_state(spec, str(data.get("state", "")))
        elif event == "presence":
            self.facts.presence_events += 1
            self.line(node, "sees someone: presence event, the gateway wakes its neighbours", True)
        elif event == "bin_emptied":
            peak = self._peak.get(node)
            self._peak[node] = 0
            if node not in self.facts.bins_emptied:
                self.facts.bins_emptied.append(node)
            was = f" (it was {peak} % full)" if peak else ""
            self.line(node, f"emptied by the collection round{was}")

    def _on_alarm(self, spec: NodeSpec, data: dict[str, Any]) -> None:
        node = spec.node_id
        name = str(data.get("alarm", ""))
        active = bool(data.get("active", True))
        key = (node, name)
        self.facts.alarms.append({"node": node, "alarm": name, "active": active})
        if active:
            if key in self._active:
                return  # a reminder
            self._active.add(key)
            if name == "leak_confirmed" and node not in self.facts.leak_confirmed:
                self.facts.leak_confirmed.append(node)
            if name == "bin_full" and node not in self.facts.bins_full:
                self.facts.bins_full.append(node)
            value = data.get("value")
            detail = ""
            if name == "leak_confirmed" and value is not None:
                detail = f" ({value} L/h at night)"
            elif name == "bin_full" and value is not None:
                detail = f" ({value} %)"
            self.line(node, f"ALARM {ALARM_TEXT.get(name, name)}{detail} [{spec.place}]")
        elif key in self._active:
            self._active.discard(key)
            self.line(node, f"alarm {name} cleared")

    # -- the walker and the lamps --------------------------------------------------------------
    def walk_started(self, walk: Walk, real: float, rate: float) -> None:
        self._walk = WalkWatch(walk, real, rate)
        for lamp in walk.lamps:  # one still lit from before counts as lit from the start
            if self._lamp_duty.get(lamp, 0) >= LIT_DUTY:
                self._walk.lit[lamp] = real

    def walker_seen(self, lamp: str, real: float) -> None:
        """The walker came into the range of this lamp's PIR."""
        watch = self._walk
        if watch is None or lamp in watch.seen:
            return
        watch.seen[lamp] = real
        lit = watch.lit.get(lamp)
        if lit is not None and lit < real:
            ahead = (real - lit) * watch.rate
            self.line(
                lamp, f"already lit by the gateway {ahead:.0f} s before the walker came", True
            )

    def walker_at(self, lamp: str, real: float) -> None:
        watch = self._walk
        if watch is not None and lamp not in watch.arrived:
            watch.arrived[lamp] = real

    def lamp_output(self, lamp: str, key: str, value: Any, real: float) -> None:
        if not key.startswith("pwm:") or not isinstance(value, int):
            return
        self._lamp_duty[lamp] = value
        watch = self._walk
        if watch is not None and lamp not in watch.lit and value >= LIT_DUTY:
            watch.lit[lamp] = real

    def walk_ended(self) -> dict[str, Any] | None:
        watch = self._walk
        self._walk = None
        if watch is None:
            return None
        ahead: dict[str, float] = {}
        late: list[str] = []
        for lamp in watch.walk.lamps[1:]:  # the first lamp sees her itself
            # lit ahead: before its own PIR saw her, so the gateway's wake-up did it
            lit, seen = watch.lit.get(lamp), watch.seen.get(lamp)
            if lit is not None and seen is not None and lit < seen:
                ahead[lamp] = round((seen - lit) * watch.rate, 1)
            else:
                late.append(lamp)
        summary = {
            "lamps": list(watch.walk.lamps),
            "lit_ahead": ahead,
            "not_lit_ahead": late,
            "lit": sorted(watch.lit),
        }
        self.facts.walks.append(summary)
        if ahead:
            first = min(ahead.values())
            self.line(
                "park",
                f"the walker is out: {len(ahead)} of {len(watch.walk.lamps) - 1} lamps ahead of"
                f" her were lit before she got there (the closest call {first:.0f} s)",
            )
        else:
            self.line("park", "the walker is out, but no lamp was lit ahead of her")
        return summary

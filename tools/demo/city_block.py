"""The simulated city block: which nodes stand where, of which kind, on which link.

A block of N nodes has all four kinds: street lamps along the park path (at least three, so a
walker passes one lamp with two more ahead), water meters of public buildings, reserved
parking spots (PMR and Shop-and-Go) and smart bins. Within each battery kind the links
alternate, CoAP over WiFi first, then LoRa, so both links carry every battery kind; lamps
are on WiFi, or alternate too with `lora_lamps` (see `build`).

Positions are metres east and north of the gateway (the radio medium computes path loss from
them); `location` turns them into the "lat,lon" text the registry and the web page show,
around the Parc de Bruxelles. Pure data: nothing here starts a process or writes a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KINDS = ("lighting", "leak", "occupancy", "binfill")
PREFIX = {"lighting": "lamp", "leak": "meter", "occupancy": "spot", "binfill": "bin"}
MIN_NODES = 6  # three lamps and one of each other kind
MAX_NODES = 240  # OSCORE sender ids are one byte here; far more than 2 cores can run anyway
ORIGIN_LAT, ORIGIN_LON = 50.8445, 4.3640
LAMP_SPACING_M = 25.0
PARK_PATH_Y_M = 120.0
PARK_PATH_X0_M = 80.0

BUILDINGS = (
    "sports hall",
    "town hall",
    "public library",
    "primary school",
    "swimming pool",
    "day nursery",
    "community centre",
    "fire station",
)
SPOTS = (
    "PMR spot, Rue Royale 12",
    "Shop-and-Go, Rue Royale 14",
    "PMR spot, Rue Ducale 3",
    "Shop-and-Go, Rue Ducale 5",
    "PMR spot, Place des Palais",
    "Shop-and-Go, Rue de la Loi 2",
)
BINS = (
    "park entrance",
    "playground",
    "bus stop Trone",
    "fountain",
    "kiosk",
    "north gate",
)


@dataclass(frozen=True)
class Periods:
    """How often the battery kinds wake, in virtual seconds. A faster clock needs longer
    periods, or the city's processes would not keep up on two cores (see `periods_for`)."""

    meter_report_s: int = 900
    spot_sample_s: int = 600
    bin_sample_s: int = 900


def periods_for(speed: float, battery_nodes: int) -> Periods:
    """Wake periods that keep the battery nodes under about a dozen lives a real second.

    One life of a battery node (start the interpreter, sample, protect, send, sleep) costs about
    60 ms of CPU with precompiled modules; a dozen a second leaves room for the gateway and
    the lamps on two cores. Periods are whole divisors of an hour, which the leak rules need
    (they reason in clock hours), and never longer than an hour.
    """
    lives_per_s = 12.0
    needed = speed * max(1, battery_nodes) / lives_per_s
    choices = (600, 900, 1200, 1800, 3600)

    def pick(base: int) -> int:
        for c in choices:
            if c >= base and c >= needed:
                return c
        return choices[-1]

    return Periods(meter_report_s=pick(900), spot_sample_s=pick(600), bin_sample_s=pick(900))


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    kind: str  # one of KINDS
    link: str  # "coap" or "lora"
    index: int  # 1-based within its kind
    position: tuple[float, float]  # metres east, north of the gateway
    place: str
    kid: bytes  # the node's OSCORE sender id
    kind_config: dict[str, Any] = field(default_factory=dict)
    neighbours: tuple[str, ...] = ()
    leaking: bool = False  # the meter whose pipe bursts in the story

    @property
    def battery(self) -> bool:
        return self.kind != "lighting"

    @property
    def location(self) -> str:
        lat = ORIGIN_LAT + self.position[1] / 111_320
        lon = ORIGIN_LON + self.position[0] / (111_320 * math.cos(math.radians(ORIGIN_LAT)))
        return f"{lat:.6f},{lon:.6f}"

    def registry_config(self) -> dict[str, Any]:
        """The node's entry config in the gateway registry."""
        config: dict[str, Any] = {"kind_config": dict(self.kind_config)}
        if self.neighbours:
            config["neighbours"] = list(self.neighbours)
        return config


def counts(nodes: int) -> dict[str, int]:
    """How many of each kind a block of `nodes` has."""
    if not MIN_NODES <= nodes <= MAX_NODES:
        raise ValueError(f"a city block has {MIN_NODES} to {MAX_NODES} nodes, not {nodes}")
    lamps = max(3, round(nodes / 4))
    rest = nodes - lamps
    share = {"leak": rest // 3, "occupancy": rest // 3, "binfill": rest // 3}
    for kind in ("leak", "occupancy", "binfill")[: rest % 3]:
        share[kind] += 1
    return {"lighting": lamps, **share}


def _name(kind: str, index: int) -> str:
    return f"{PREFIX[kind]}-{index:02d}"


def build(
    nodes: int, periods: Periods | None = None, *, lora_lamps: bool = False
) -> list[NodeSpec]:
    """The block's nodes, lamps first, in a stable order (kids 1, 2, ...).

    Lamps are on WiFi unless `lora_lamps`: a lamp on LoRa currently answers the requests it
    overhears for other nodes with an unprotected 4.01 (firmware/node/mains.py), which the
    gateway's LoRa push takes for the answer of the lamp it meant (gateway/links/lora.py) and
    battery nodes take for the gateway's answer; the light then often fails to run ahead.
    """
    periods = periods or Periods()
    specs: list[NodeSpec] = []
    per_kind = counts(nodes)
    for kind in KINDS:
        n = per_kind[kind]
        for i in range(1, n + 1):
            link = "coap" if i % 2 or (kind == "lighting" and not lora_lamps) else "lora"
            specs.append(_spec(kind, i, n, link=link, kid=len(specs) + 1, periods=periods))
    return specs


def _spec(kind: str, i: int, n: int, *, link: str, kid: int, periods: Periods) -> NodeSpec:
    node_id = _name(kind, i)
    if kind == "lighting":
        # The park path runs west to east; a lamp wakes the two lamps on either side, so the
        # light runs ahead of a walker coming from either gate.
        neighbours = tuple(_name(kind, j) for j in (i - 2, i - 1, i + 1, i + 2) if 1 <= j <= n)
        return NodeSpec(
            node_id,
            kind,
            link,
            i,
            (PARK_PATH_X0_M + (i - 1) * LAMP_SPACING_M, PARK_PATH_Y_M),
            f"park path, lamp {i}",
            bytes([kid]),
            {"hold_s": 90, "report_s": 900},
            neighbours,
        )
    angle = 2 * math.pi * (i - 1) / max(1, n)
    if kind == "leak":
        return NodeSpec(
            node_id,
            kind,
            link,
            i,
            (round(300 * math.cos(angle), 1), round(-200 + 150 * math.sin(angle), 1)),
            BUILDINGS[(i - 1) % len(BUILDINGS)] + _suffix(i, len(BUILDINGS)),
            bytes([kid]),
            {"report_s": periods.meter_report_s},
            leaking=i == 1,
        )
    if kind == "occupancy":
        return NodeSpec(
            node_id,
            kind,
            link,
            i,
            (-150.0 + 12.0 * (i - 1), -40.0),
            SPOTS[(i - 1) % len(SPOTS)] + _suffix(i, len(SPOTS)),
            bytes([kid]),
            # a car is seen within one sample; a change is confirmed 30 s later
            {"sample_s": periods.spot_sample_s, "report_s": 3600, "confirm_s": 30},
        )
    return NodeSpec(
        node_id,
        kind,
        link,
        i,
        (round(60 + 140 * math.cos(angle), 1), round(160 + 60 * math.sin(angle), 1)),
        "bin at the " + BINS[(i - 1) % len(BINS)] + _suffix(i, len(BINS)),
        bytes([kid]),
        {"sample_s": periods.bin_sample_s, "report_high_s": periods.bin_sample_s},
    )


def _suffix(i: int, size: int) -> str:
    return f" ({(i - 1) // size + 1})" if i > size else ""


def by_id(specs: list[NodeSpec]) -> dict[str, NodeSpec]:
    return {s.node_id: s for s in specs}


def lamps(specs: list[NodeSpec]) -> list[NodeSpec]:
    return [s for s in specs if s.kind == "lighting"]

"""What the pages show, computed from the agent's parts: node health, the overview, gateway facts.

Node health, one of HEALTH:
  alarm   an alarm of the node is active, or not yet acknowledged
  silent  never heard, or nothing for SILENT_FACTOR x its reporting interval
  late    nothing for LATE_FACTOR x its interval (plus GRACE_S for clocks and retries)
  ok      otherwise
The reporting interval is the node's `report_s` from its registry configuration, else the
firmware's default for its kind.

Beside its health, a node may report a condition in its latest status record (CONDITIONS):
  safe_mode  it restarted too often and now only sends its status: someone must visit it
  error      the error text it reports (a configuration or downlink it refused, a crash)
Both come and go with the node's status records (gateway/store/status.py) and show next to
the health; the node list filters on them as it does on health.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import config as config_module
from gateway.registry import LINKS, Node
from gateway.store.status import NodeState

if TYPE_CHECKING:
    from gateway.agent import Agent

HEALTH = ("ok", "late", "silent", "alarm")
CONDITIONS = ("safe_mode", "error")
KINDS = ("leak", "occupancy", "lighting", "binfill")
# The firmware's default `report_s` per kind (firmware/kinds/*.py DEFAULTS).
DEFAULT_INTERVAL_S = {"leak": 900, "occupancy": 3600, "lighting": 900, "binfill": 14400}
FALLBACK_INTERVAL_S = 3600
LATE_FACTOR = 2.0
SILENT_FACTOR = 6.0
GRACE_S = 60.0

# Keys whose values never reach a page, wherever they appear (configuration, node settings).
SECRET_KEY = re.compile(r"secret|password|passwd|token|salt|master|private|credential", re.I)
_URL_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def redact(text: str) -> str:
    """Drop the user:password part of any URL in a text shown on a page."""
    return _URL_USERINFO.sub("***@", text)


def interval_s(node: Node) -> float:
    value = node.config.get("report_s")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return float(DEFAULT_INTERVAL_S.get(node.kind, FALLBACK_INTERVAL_S))


def health(node: Node, state: NodeState | None, alarms: int, now: float) -> str:
    if alarms:
        return "alarm"
    if state is None:
        return "silent"
    age = now - state.last_seen
    interval = interval_s(node)
    if age > SILENT_FACTOR * interval + GRACE_S:
        return "silent"
    if age > LATE_FACTOR * interval + GRACE_S:
        return "late"
    return "ok"


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: Node
    state: NodeState | None
    health: str
    alarms: int


async def node_rows(agent: Agent, attention: Mapping[str, int], now: float) -> list[NodeRow]:
    states = {s.node_id: s for s in await agent.status.all()}
    rows = []
    for node in agent.registry.nodes():
        state, alarms = states.get(node.node_id), attention.get(node.node_id, 0)
        rows.append(NodeRow(node, state, health(node, state, alarms, now), alarms))
    return rows


def has_condition(state: NodeState | None, condition: str) -> bool:
    if state is None:
        return False
    if condition == "safe_mode":
        return state.safe_mode
    return condition == "error" and state.error is not None


def condition_counts(rows: Sequence[NodeRow]) -> dict[str, int]:
    return {c: sum(1 for r in rows if has_condition(r.state, c)) for c in CONDITIONS}


def filter_rows(
    rows: Sequence[NodeRow], kind: str = "", status: str = "", link: str = "", text: str = ""
) -> list[NodeRow]:
    needle = text.strip().lower()
    return [
        r
        for r in rows
        if (not kind or r.node.kind == kind)
        and (
            not status
            or r.health == status
            or (status in CONDITIONS and has_condition(r.state, status))
        )
        and (not link or r.node.link == link)
        and (not needle or needle in r.node.node_id.lower() or needle in r.node.location.lower())
    ]


def health_table(rows: Sequence[NodeRow]) -> dict[str, dict[str, int]]:
    """kind -> health -> count, every kind present in the registry plus the four known."""
    kinds = list(KINDS) + sorted({r.node.kind for r in rows} - set(KINDS))
    table = {k: dict.fromkeys(HEALTH, 0) for k in kinds}
    for r in rows:
        table[r.node.kind][r.health] += 1
    return {k: v for k, v in table.items() if sum(v.values()) or k in KINDS}


@dataclass(frozen=True, slots=True)
class SinkView:
    name: str
    state: str
    queue: int
    oldest_at: float | None
    parked: int
    last_success_at: float | None
    errors: int
    failures: int
    last_error: str | None
    last_error_at: float | None


async def buffer_health(agent: Agent) -> tuple[Any, list[SinkView]]:
    stats = await agent.store.stats()
    sinks = []
    for forwarder in agent.forwarders:
        name = forwarder.sink.name
        errors = agent.metrics.registry.get_sample_value(
            "city_gateway_upstream_errors_total", {"sink": name}
        )
        h = forwarder.health
        sinks.append(
            SinkView(
                name=name,
                state=h.state,
                queue=stats.pending.get(name, 0),
                oldest_at=stats.oldest_pending_at.get(name),
                parked=stats.parked.get(name, 0),
                last_success_at=h.last_success_at,
                errors=int(errors or 0),
                failures=h.failures,
                last_error=redact(h.last_error) if h.last_error else None,
                last_error_at=h.last_error_at,
            )
        )
    return stats, sinks


@functools.cache  # fixed while the process runs; reading package metadata is slow
def versions() -> tuple[tuple[str, str], ...]:
    found = [("Python", platform.python_version()), ("SQLite", sqlite3.sqlite_version)]
    for dist, label in (
        ("city-sensor-network", "gateway"),
        ("aiohttp", "aiohttp"),
        ("aiocoap", "aiocoap"),
        ("cbor2", "cbor2"),
        ("paho-mqtt", "paho-mqtt"),
    ):
        try:
            found.append((label, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            continue
    from protocol import schema  # noqa: PLC0415 -- untyped MicroPython-subset module

    found.append(("protocol schema", str(schema.SCHEMA_VERSION)))
    found.append(("platform", f"{platform.system()} {platform.machine()}"))
    return tuple(found)


def config_summary(agent: Agent) -> list[tuple[str, str]]:
    """The configuration as dotted keys and values, secrets and URL credentials removed."""
    flat: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        if SECRET_KEY.search(prefix.rsplit(".", 1)[-1]) and not prefix.endswith("_file"):
            flat.append((prefix, "***"))
            return
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        flat.append((prefix, redact(text)))

    walk("", config_module.summary(agent.config))
    return flat


def node_config(node: Node) -> list[tuple[str, str]]:
    """A node's registry configuration for display, secrets left out."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif SECRET_KEY.search(prefix) or "oscore" in prefix.lower():
            return
        else:
            out.append((prefix, redact(str(value))))

    walk("", node.config)
    return out


def links(agent: Agent) -> list[tuple[str, bool, str]]:
    """(name, running, settings) of every link the gateway knows."""
    running = {link.name for link in agent.links}
    cfg = agent.config.links
    lora = cfg.lora
    details = {
        "coap": f"UDP {cfg.coap.bind}:{cfg.coap.port}" if cfg.coap.enabled else "off",
        "lora": (
            f"{lora.mode}, {lora.frequency_mhz} MHz, SF{lora.spreading_factor},"
            f" {lora.bandwidth_khz:g} kHz, 4/{lora.coding_rate}, {lora.tx_power_dbm} dBm"
            if lora.mode != "off"
            else "off"
        ),
    }
    return [(name, name in running, details.get(name, "")) for name in LINKS]


def uptime_s(agent: Agent) -> float:
    return time.monotonic() - agent.started_at

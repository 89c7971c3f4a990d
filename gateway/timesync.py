"""Time sync: the gateway gives each node the local time, by itself.

Nodes have no reliable clock, yet the leak kind's night window (00:00-06:00 local) and the
lamps' night schedule need local time. A node takes it from a `time` downlink (protocol/schema.py:
`unix_s`, `utc_offset_min`) and carries it forward on its own clock (firmware/node/app.py
`set_time`), in RTC memory across deep sleep and resets, but not across a power loss: then its
status starts again from `boot_count` 1 and a small `uptime_s` (both count from power-on).

A `time` downlink is queued for a node that has none pending when

- the gateway knows of no sync since the node (re)started: never synced, or a status shows the
  node lost its clock after the last sync went out (its boot count or uptime went backwards, or
  its uptime says it powered on after that sync);
- its last sync is older than `time_sync.period_s` (a node's RTC crystal drifts), or the site's
  UTC offset has changed since (daylight saving time).

The decision follows each committed uplink (a pipeline listener), so the record goes out in the
node's next response; lamps always listen, so theirs is pushed at once (gateway/links/wake.py
`Pusher`). A node that refused one is asked again only after `period_s`.

What the gateway knows of past syncs lives in the downlink queue itself: finished downlinks stay
there a week (gateway/downlinks.py), so a restart neither forgets a sync nor repeats one. What
the nodes' statuses said is kept in memory only; after a restart a node that lost its clock
meanwhile is caught by its next status (its uptime).

The record must carry the time at which it goes out, not the time it was queued: a sleepy node
takes it at its next uplink, maybe an hour later. `fresh()` sets the `unix_s` of the records
queued here to the moment of sending; links call it just before encoding. Records queued by
others (an operator, the demo's virtual clock) go out as they were written.

With no `time_sync.time_zone` configured the gateway sends no time (local time in the wrong
zone would be worse than none: lamps assume night, leak night rules wait), and says so at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from gateway.config import TimeSyncConfig
from gateway.downlinks import Downlink, Downlinks
from gateway.links.base import Uplink
from gateway.records import Reading
from gateway.registry import Registry

log = logging.getLogger(__name__)

ORIGIN = "time-sync"  # origin of the downlinks queued here: `fresh` gives them the send time
PENDING = ("queued", "sent")
# How far a node's power-on (its status's observation time minus uptime_s, on the gateway's
# clock) may come after the sync's departure before it counts as a restart since: RTC slow
# clocks of sleeping ESP32s drift by up to a few percent, and a status may wait in a buffer.
RESTART_SLACK_S = 120.0
RESTART_SLACK_FRACTION = 0.05


def utc_offset_min(zone: zoneinfo.ZoneInfo, at: float) -> int:
    """The zone's offset from UTC at Unix time `at`, in minutes (daylight saving included)."""
    offset = datetime.fromtimestamp(at, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return int(offset.total_seconds() // 60)


def time_record(zone: zoneinfo.ZoneInfo, now: float) -> dict[str, object]:
    """The `time` downlink record for Unix time `now`."""
    return {"type": "time", "unix_s": int(now), "utc_offset_min": utc_offset_min(zone, now)}


def is_time(downlink: Downlink) -> bool:
    return downlink.command.get("type") == "time"


def fresh(downlinks: Sequence[Downlink], now: float) -> list[Downlink]:
    """The downlinks as they should go out at `now`: a time sync queued here carries `now`
    (to the nearest second) instead of the moment it was queued; everything else unchanged."""
    departs = round(now)
    out = []
    for downlink in downlinks:
        if (
            is_time(downlink)
            and downlink.origin == ORIGIN
            and downlink.command.get("unix_s") != departs
            and now > downlink.created_at
        ):
            out.append(replace(downlink, command={**downlink.command, "unix_s": departs}))
        else:
            out.append(downlink)
    return out


@dataclass
class _Clock:
    """What the gateway knows of one node's clock."""

    synced_at: float | None = None  # departure of the last time downlink the node confirmed
    offset_min: int | None = None  # the UTC offset that one carried
    pending: set[int] = field(default_factory=set)  # time downlinks queued or sent
    refused_at: float | None = None  # the node refused one then: wait a period
    boots: int | None = None  # boot_count and uptime_s of the newest status seen
    uptime_s: int | None = None
    status_at: float = float("-inf")  # when that status was observed (gateway clock)


class TimeSync:
    """Queues `time` downlinks (module docstring); `run()` is its one background task."""

    def __init__(
        self,
        settings: TimeSyncConfig,
        registry: Registry,
        downlinks: Downlinks,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.zone = zoneinfo.ZoneInfo(settings.time_zone)
        self.period_s = settings.period_s
        self.registry = registry
        self.downlinks = downlinks
        self.clock = clock
        self.queued = 0  # time downlinks queued so far
        self.restarts = 0  # node restarts that lost a synced clock
        self._clocks: dict[str, _Clock] = {}
        self._wanted: asyncio.Queue[str] = asyncio.Queue()
        self._waiting: set[str] = set()  # nodes in `_wanted`, each once

    # -- listeners (on the loop, synchronous) --------------------------------------------------

    def on_uplink(self, uplink: Uplink, fresh_readings: int) -> None:
        """Pipeline listener: note what the node's statuses say, then decide (in `run`)."""
        if self.registry.get(uplink.node_id) is None:
            return
        clock = self._clocks.setdefault(uplink.node_id, _Clock())
        statuses = [r for r in uplink.readings if r.kind == "status"]
        for status in sorted(statuses, key=lambda r: r.observed_at):
            self._saw_status(uplink.node_id, clock, status)
        if uplink.node_id not in self._waiting:
            self._waiting.add(uplink.node_id)
            self._wanted.put_nowait(uplink.node_id)

    def on_downlink(self, downlink: Downlink) -> None:
        """Downlinks listener: follow the node's time downlinks, whoever queued them."""
        if not is_time(downlink):
            return
        d = downlink
        if d.state == "refused":
            log.warning("%s refused its time sync: %s", d.node_id, d.reason or "?")
        departed = d.sent_at or d.confirmed_at or d.created_at
        at = self.clock() if d.state == "refused" else departed
        self._follow(d.node_id, d.id, d.state, at, d.command.get("utc_offset_min", 0))

    def _follow(self, node_id: str, downlink_id: int, state: str, at: float, offset: Any) -> None:
        """One time downlink's state: pending, confirmed (it went out `at`), or refused."""
        clock = self._clocks.setdefault(node_id, _Clock())
        if state in PENDING:
            clock.pending.add(downlink_id)
            return
        clock.pending.discard(downlink_id)
        if state == "confirmed" and (clock.synced_at is None or at >= clock.synced_at):
            clock.synced_at = at
            clock.offset_min = offset if isinstance(offset, int) else 0
            clock.refused_at = None
        elif state == "refused":
            clock.refused_at = at

    def _saw_status(self, node_id: str, clock: _Clock, status: Reading) -> None:
        boots, uptime = status.data.get("boot_count"), status.data.get("uptime_s")
        if not isinstance(boots, int) or not isinstance(uptime, int):
            return
        if status.observed_at <= clock.status_at:
            return  # older than one seen already (a resend): says nothing new
        # both count from power-on: either going backwards means a new life
        went_back = (clock.boots is not None and boots < clock.boots) or (
            clock.uptime_s is not None and uptime < clock.uptime_s
        )
        powered_on_at = status.observed_at - uptime
        slack = RESTART_SLACK_S + RESTART_SLACK_FRACTION * uptime
        after_sync = clock.synced_at is not None and powered_on_at > clock.synced_at + slack
        clock.boots, clock.uptime_s, clock.status_at = boots, uptime, status.observed_at
        if clock.synced_at is not None and (went_back or after_sync):
            log.info("%s restarted since its last time sync: its clock is lost", node_id)
            self.restarts += 1
            clock.synced_at = clock.offset_min = None

    # -- the background task -------------------------------------------------------------------

    def why_due(self, node_id: str, now: float) -> str | None:
        """Why the node needs a time downlink now, or None."""
        clock = self._clocks.get(node_id)
        if clock is None or clock.pending:
            return None
        if clock.refused_at is not None and now - clock.refused_at < self.period_s:
            return None
        if clock.synced_at is None:
            return "no time since it started"
        if now - clock.synced_at >= self.period_s:
            return f"last sync {now - clock.synced_at:.0f} s ago"
        if clock.offset_min != utc_offset_min(self.zone, now):
            return "the UTC offset changed"
        return None

    async def run(self) -> None:
        await self._load()
        while True:
            node_id = await self._wanted.get()
            try:
                await self._decide(node_id)
            finally:
                self._wanted.task_done()

    async def join(self) -> None:
        """Wait until every uplink seen so far has been decided on (tests)."""
        await self._wanted.join()

    async def _decide(self, node_id: str) -> None:
        self._waiting.discard(node_id)
        now = self.clock()
        reason = self.why_due(node_id, now)
        if reason is None or self.registry.get(node_id) is None:
            return
        try:
            await self.downlinks.enqueue(node_id, time_record(self.zone, now), origin=ORIGIN)
        except Exception:  # the store is closing or failing: the next uplink asks again
            log.exception("time sync for %s not queued", node_id)
            return
        self.queued += 1
        log.info("time sync queued for %s (%s)", node_id, reason)

    async def _load(self) -> None:
        """What the downlink queue remembers of time downlinks (a week of them), read from its
        table: the queue also holds every lamp's wake-ups, far too many to load them all."""
        now = self.clock()

        def work(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT id, node_id, command, state, sent_at, confirmed_at, created_at,"
                " expires_at FROM downlinks WHERE command LIKE '%\"time\"%' ORDER BY id"
            ).fetchall()

        for row in await self.downlinks.db.read(work):
            downlink_id, node_id, body, state, sent_at, confirmed_at, created_at, expires = row
            command = json.loads(body)
            if command.get("type") != "time" or (state in PENDING and expires <= now):
                continue
            if state == "refused":
                at = confirmed_at or sent_at or created_at
            else:
                at = sent_at or confirmed_at or created_at
            self._follow(node_id, downlink_id, state, at, command.get("utc_offset_min", 0))


def install(
    settings: TimeSyncConfig,
    registry: Registry,
    downlinks: Downlinks,
    uplink_listeners: list[Callable[[Uplink, int], None]],
    spawn: Callable[[str, Awaitable[None]], object],
) -> TimeSync | None:
    """Hook a TimeSync into the pipeline's and the downlinks' listeners, and start its task
    with `spawn` (the agent's: cancelled at shutdown). None when no time zone is configured."""
    if not settings.time_zone:
        log.warning(
            "time_sync.time_zone is not set: nodes get no local time from this gateway (leak"
            " night rules wait for it, lamps keep their night level)"
        )
        return None
    sync = TimeSync(settings, registry, downlinks)
    downlinks.listeners.append(sync.on_downlink)
    uplink_listeners.append(sync.on_uplink)
    spawn("time-sync", sync.run())
    log.info("time sync: %s, every %.0f s", settings.time_zone, settings.period_s)
    return sync

"""Time sync (gateway/timesync.py): the gateway gives nodes the local time by itself.

A real downlink queue and registry on SQLite, the pipeline's listener fed uplinks decoded from
the wire schema as a link decodes them, and a clock the test moves: a node never synced gets
one `time` downlink (and no second while one is pending), a synced node gets another after the
period, after a power cycle (its status's boot count and uptime), or when daylight saving time
changes the offset; a restart remembers what the queue remembers. Then the agent wiring, and
the configuration's checks. The LoRa paths (a lamp pushed at once, a sleepy node's RX window)
are in test_timesync_lora.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest

from gateway.agent import Agent
from gateway.config import ConfigError, TimeSyncConfig
from gateway.downlinks import SCHEMA as DOWNLINKS_SCHEMA
from gateway.downlinks import Downlink, Downlinks
from gateway.links.base import Uplink
from gateway.registry import SCHEMA as REGISTRY_SCHEMA
from gateway.registry import Node, Registry
from gateway.store import Database
from gateway.timesync import ORIGIN, TimeSync, fresh, time_record, utc_offset_min
from gateway.uplink import decode_uplink
from protocol import schema
from tests.gateway.fakes import MemorySink, eventually, loopback, make_config

BRUSSELS = zoneinfo.ZoneInfo("Europe/Brussels")
WINTER = datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp()  # 13:00 in Brussels
HOUR = 3600.0
DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Site:
    """One gateway's registry, downlink queue and time sync on one database."""

    def __init__(self, db: Database, clock: Clock, sync: TimeSync) -> None:
        self.db = db
        self.clock = clock
        self.sync = sync
        self.downlinks = sync.downlinks
        self.task = asyncio.get_running_loop().create_task(sync.run())
        self.seq = 0

    def uplink(self, node: str, boots: int | None = None, uptime: int | None = None, age: int = 0):
        """The node's uplink: a reading, and a status when `boots` is given."""
        self.seq += 1
        records: list[dict[str, Any]] = [
            {"type": "leak", "volume_l": self.seq, "flow_lh": 0, "seq": self.seq}
        ]
        if boots is not None:
            self.seq += 1
            status = {"type": "status", "boot_count": boots, "uptime_s": uptime, "age_s": age}
            records.append({**status, "seq": self.seq})
        payload = cbor2.dumps(schema.encode_uplink(records))
        uplink: Uplink = decode_uplink(node, self.seq, payload, self.clock(), link="coap")
        self.sync.on_uplink(uplink, len(records))  # as the pipeline calls it after the commit

    async def syncs(self, node: str | None = None) -> list[Downlink]:
        """The time downlinks queued so far, oldest first."""
        await self.sync.join()
        found = await self.downlinks.list(node_id=node)
        return [d for d in reversed(found) if d.command.get("type") == "time"]

    async def deliver(self, node: str) -> list[Downlink]:
        """The node's next response carries its downlinks, and it confirms them."""
        taken = await self.downlinks.take(node)
        await self.downlinks.confirm(node, [d.id for d in taken])
        return taken

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


Body = Callable[[Site], Awaitable[None]]


async def open_site(path: Path, clock: Clock, period_s: float = DAY) -> Site:
    db = Database(path)
    await db.open([REGISTRY_SCHEMA, DOWNLINKS_SCHEMA])
    registry = Registry(db)
    await registry.refresh()
    for node, kind in (("meter-1", "leak"), ("lamp-1", "lighting"), ("bin-1", "binfill")):
        if registry.get(node) is None:  # registered by an earlier run on this database
            await registry.add(Node(node, kind, "coap"))
    await registry.refresh()
    downlinks = Downlinks(db, DAY, clock=clock)
    sync = TimeSync(TimeSyncConfig("Europe/Brussels", period_s), registry, downlinks, clock)
    downlinks.listeners.append(sync.on_downlink)
    return Site(db, clock, sync)


def run(tmp_path: Path, body: Body, now: float = WINTER) -> None:
    async def main() -> None:
        site = await open_site(tmp_path / "g.db", Clock(now))
        try:
            await body(site)
        finally:
            await site.close()
            await site.db.close()

    asyncio.run(main())


def test_a_node_never_synced_gets_the_local_time_once_then_every_period(tmp_path: Path) -> None:
    async def body(site: Site) -> None:
        site.uplink("meter-1", boots=1, uptime=4)
        (first,) = await site.syncs()
        assert (first.node_id, first.origin, first.state) == ("meter-1", ORIGIN, "queued")
        assert first.command == {"type": "time", "unix_s": int(WINTER), "utc_offset_min": 60}
        # more uplinks before its next response: still one pending
        site.clock.now += 60
        site.uplink("meter-1")
        site.uplink("meter-1", boots=2, uptime=64)
        assert len(await site.syncs()) == 1
        site.clock.now += 840
        assert [d.id for d in await site.deliver("meter-1")] == [first.id]
        # synced: an uplink an hour later (a deep-sleep wake-up, same life) asks for nothing
        site.clock.now += HOUR
        site.uplink("meter-1", boots=3, uptime=int(site.clock.now - WINTER) + 4)
        assert len(await site.syncs()) == 1 and site.sync.why_due("meter-1", site.clock()) is None
        # a day after the sync went out: the node's crystal has drifted; set it again
        site.clock.now = WINTER + 900 + DAY
        site.uplink("meter-1")
        queued = await site.syncs()
        assert len(queued) == 2 and queued[1].command["unix_s"] == int(site.clock.now)
        assert site.sync.queued == 2

    run(tmp_path, body)


def test_a_power_cycle_after_the_sync_loses_the_clock(tmp_path: Path) -> None:
    async def body(site: Site) -> None:
        site.uplink("meter-1", boots=1, uptime=10)
        await site.syncs()
        await site.deliver("meter-1")  # synced at WINTER
        for wake in range(2, 6):  # deep-sleep wake-ups: boot count up, uptime on: same life
            site.clock.now += 900
            site.uplink("meter-1", boots=wake, uptime=10 + int(site.clock.now - WINTER))
        assert len(await site.syncs()) == 1 and site.sync.restarts == 0
        # power cut: the node starts from scratch (boot count 1, a few seconds of uptime)
        site.clock.now += 900
        site.uplink("meter-1", boots=1, uptime=3)
        second = (await site.syncs())[1]
        assert second.command["unix_s"] == int(site.clock.now) and site.sync.restarts == 1
        await site.deliver("meter-1")
        # a watchdog reset keeps RTC memory, hence the clock: boot count on, uptime on
        site.clock.now += 600
        site.uplink("meter-1", boots=2, uptime=603)
        assert len(await site.syncs()) == 2 and site.sync.restarts == 1

    run(tmp_path, body)


def test_after_a_gateway_restart_the_queue_remembers_and_the_uptime_tells(tmp_path: Path) -> None:
    async def main() -> None:
        clock = Clock(WINTER)
        site = await open_site(tmp_path / "g.db", clock)
        for node in ("meter-1", "lamp-1", "bin-1"):
            site.uplink(node, boots=1, uptime=10)
        await site.syncs()
        await site.deliver("meter-1")
        await site.deliver("lamp-1")  # the bin's sync is still waiting for its next uplink
        await site.close()
        await site.db.close()

        clock.now += 2 * HOUR
        site = await open_site(tmp_path / "g.db", clock)
        try:
            # the meter's status: up since before its sync, so its clock is good
            site.uplink("meter-1", boots=9, uptime=10 + 2 * int(HOUR))
            # the bin's sync is still pending: not a second one
            site.uplink("bin-1")
            assert len(await site.syncs()) == 3
            # the lamp powered on again an hour after its sync; no earlier status of it was
            # seen since this gateway started, so its uptime alone tells
            site.uplink("lamp-1", boots=1, uptime=int(HOUR))
            queued = await site.syncs()
            assert [d.node_id for d in queued] == ["meter-1", "lamp-1", "bin-1", "lamp-1"]
            assert queued[-1].command["unix_s"] == int(clock.now)
        finally:
            await site.close()
            await site.db.close()

    asyncio.run(main())


def test_a_status_resent_late_is_not_a_restart(tmp_path: Path) -> None:
    async def body(site: Site) -> None:
        site.uplink("meter-1", boots=4, uptime=5000)
        await site.syncs()
        await site.deliver("meter-1")
        site.clock.now += 900
        site.uplink("meter-1", boots=5, uptime=5900)
        # the status of boot 4, buffered and sent again with its age: older than boot 5's
        site.uplink("meter-1", boots=4, uptime=5000, age=900)
        assert len(await site.syncs()) == 1 and site.sync.restarts == 0

    run(tmp_path, body)


def test_daylight_saving_time_changes_the_offset_and_resyncs(tmp_path: Path) -> None:
    saturday = datetime(2026, 3, 28, 12, 0, tzinfo=UTC).timestamp()  # CET, +60

    async def body(site: Site) -> None:
        site.uplink("lamp-1", boots=1, uptime=10)
        (winter,) = await site.syncs()
        assert winter.command["utc_offset_min"] == 60
        await site.deliver("lamp-1")
        # 29 March 2026, 01:00 UTC: Brussels moves to CEST (+120); 14 h after the sync
        site.clock.now = datetime(2026, 3, 29, 2, 0, tzinfo=UTC).timestamp()
        site.uplink("lamp-1")
        summer = (await site.syncs())[1]
        assert summer.command == {
            "type": "time",
            "unix_s": int(site.clock.now),
            "utc_offset_min": 120,
        }

    run(tmp_path, body, now=saturday)


def test_a_refused_sync_is_not_asked_again_within_the_period(tmp_path: Path) -> None:
    async def body(site: Site) -> None:
        site.uplink("meter-1", boots=1, uptime=10)
        assert len(await site.syncs()) == 1
        (sent,) = await site.downlinks.take("meter-1")
        site.sync.on_downlink(replace(sent, state="refused", reason="invalid"))
        site.clock.now += HOUR
        site.uplink("meter-1")
        assert len(await site.syncs()) == 1
        site.clock.now += DAY
        site.uplink("meter-1")
        assert len(await site.syncs()) == 2

    run(tmp_path, body)


def test_a_time_downlink_queued_by_someone_else_counts(tmp_path: Path) -> None:
    async def body(site: Site) -> None:
        manual = {"type": "time", "unix_s": int(WINTER), "utc_offset_min": 60}
        await site.downlinks.enqueue("meter-1", manual, origin="web:alice")
        site.uplink("meter-1", boots=1, uptime=10)
        assert [d.origin for d in await site.syncs()] == ["web:alice"]  # pending: no second
        await site.deliver("meter-1")
        site.uplink("meter-1")
        assert len(await site.syncs()) == 1  # confirmed: the node has the time
        # a hand-made sync in another zone is set right: the site's zone is the truth
        utc = {"type": "time", "unix_s": int(WINTER), "utc_offset_min": 0}
        await site.downlinks.enqueue("lamp-1", utc, origin="web:alice")
        await site.deliver("lamp-1")
        site.uplink("lamp-1")
        assert [(d.origin, d.command["utc_offset_min"]) for d in await site.syncs("lamp-1")] == [
            ("web:alice", 0),
            (ORIGIN, 60),
        ]

    run(tmp_path, body)


def test_unregistered_nodes_get_nothing(tmp_path: Path) -> None:
    async def body(site: Site) -> None:
        site.uplink("stranger-9", boots=1, uptime=10)
        assert await site.syncs() == []

    run(tmp_path, body)


# -- the record and how it goes out ------------------------------------------------------------


def test_the_time_record_on_the_wire() -> None:
    summer = datetime(2026, 7, 15, 22, 30, tzinfo=UTC).timestamp()
    assert utc_offset_min(BRUSSELS, WINTER) == 60
    assert utc_offset_min(BRUSSELS, summer) == 120
    assert utc_offset_min(zoneinfo.ZoneInfo("America/St_Johns"), WINTER) == -210
    record = time_record(BRUSSELS, summer + 0.9)
    assert record == {"type": "time", "unix_s": int(summer), "utc_offset_min": 120}
    wire = cbor2.dumps(schema.encode_downlink(record), canonical=True)
    # [1, {0: 6 (time), 4: unix_s, 5: 120}]
    assert wire == bytes.fromhex("82 01 a3 00 06 04 1a") + int(summer).to_bytes(4, "big") + (
        bytes.fromhex("05 18 78")
    )
    assert schema.decode_downlink(cbor2.loads(wire)) == [record]


def test_fresh_moves_only_the_gateways_own_time_records_forward() -> None:
    def downlink(command: dict[str, Any], origin: str, created_at: float) -> Downlink:
        return Downlink(
            1, "n", command, origin, created_at, created_at + DAY, "sent", None, None, 1
        )

    queued_at = WINTER - 3599.4
    own = downlink(time_record(BRUSSELS, queued_at), ORIGIN, queued_at)
    manual = downlink({"type": "time", "unix_s": 5, "utc_offset_min": 0}, "demo:time-sync", 0.0)
    other = downlink({"type": "command", "command": "wake"}, ORIGIN, 0.0)
    out = fresh([own, manual, other], WINTER + 0.6)
    assert out[0].command == {"type": "time", "unix_s": int(WINTER) + 1, "utc_offset_min": 60}
    assert out[1:] == [manual, other]
    assert own.command["unix_s"] == int(queued_at)  # the stored command is not touched
    assert fresh([own], queued_at - 1)[0] is own  # a clock stepped back: as queued


# -- the agent ---------------------------------------------------------------------------------


def test_the_agent_runs_it_from_the_pipeline_when_a_time_zone_is_configured(
    tmp_path: Path,
) -> None:
    _, factory = loopback()
    config = make_config(tmp_path, time_sync={"time_zone": "Europe/Brussels"})
    agent = Agent(config, sinks=[MemorySink()], links=[factory])

    async def main() -> None:
        await agent.start()
        try:
            await agent.registry.add(Node("meter-1", "leak", "coap"))
            record = {"type": "status", "boot_count": 1, "uptime_s": 3, "seq": 1}
            payload = cbor2.dumps(schema.encode_uplink([record]))
            now = time.time()
            uplink = decode_uplink("meter-1", 1, payload, now, link="coap")
            assert await agent.pipeline.handle(uplink) == []  # taken before the sync is queued

            async def queued() -> list[Downlink]:
                return await agent.downlinks.list(node_id="meter-1")

            await eventually(queued)
            (sync,) = await queued()
            assert sync.origin == ORIGIN and sync.command["type"] == "time"
            assert abs(sync.command["unix_s"] - now) <= 2
            assert sync.command["utc_offset_min"] == utc_offset_min(BRUSSELS, now)
            # the next uplink's response carries it
            taken = await agent.pipeline.handle(
                decode_uplink("meter-1", 2, payload, now, link="coap")
            )
            assert [d.id for d in taken] == [sync.id]
        finally:
            await agent.shutdown()

    asyncio.run(main())
    assert agent.time_sync is not None and agent.time_sync.queued == 1


def test_without_a_time_zone_the_agent_sends_no_time_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, factory = loopback()
    agent = Agent(make_config(tmp_path), sinks=[MemorySink()], links=[factory])

    async def main() -> None:
        await agent.start()
        await agent.shutdown()

    with caplog.at_level(logging.WARNING, logger="gateway.timesync"):
        asyncio.run(main())
    assert agent.time_sync is None
    assert any("time_sync.time_zone is not set" in r.getMessage() for r in caplog.records)


# -- configuration -----------------------------------------------------------------------------


def test_the_configuration_names_a_bad_time_zone(tmp_path: Path) -> None:
    default = make_config(tmp_path).time_sync
    assert default == TimeSyncConfig(time_zone="", period_s=86400.0)
    chosen = make_config(tmp_path, time_sync={"time_zone": "Europe/Brussels", "period_s": 7200})
    assert chosen.time_sync == TimeSyncConfig("Europe/Brussels", 7200.0)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"time_zone": "Europe/Brusels"}, "time_sync.time_zone", "unknown time zone"),
        ({"time_zone": "../etc/passwd"}, "time_sync.time_zone", "unknown time zone"),
        ({"time_zone": "Europe"}, "time_sync.time_zone", "unknown time zone"),
        ({"time_zone": 1}, "time_sync.time_zone", "must be a string"),
        ({"period_s": 60}, "time_sync.period_s", "between 600.0 and"),
        ({"period": 3600}, "time_sync.period", "unknown key"),
    ]
    for section, key, problem in cases:
        with pytest.raises(ConfigError) as caught:
            make_config(tmp_path, time_sync=section)
        assert caught.value.key == key and problem in caught.value.problem, caught.value
    with pytest.raises(ConfigError, match='an IANA name such as "Europe/Brussels"'):
        make_config(tmp_path, time_sync={"time_zone": "CET+1"})

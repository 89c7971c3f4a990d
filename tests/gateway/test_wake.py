"""Neighbour wake-ups (gateway/links/wake.py): one presence event wakes each neighbour once,
while the walker is still there.

The same event arrives again when the lamp resends it (a lost answer; records re-packed under
a new OSCORE sequence number keep their `seq`, hence their reading id), and a buffered event
arrives late with its age: neither may wake the neighbours again. Real registry and downlink
queue on a SQLite database; the uplinks are decoded from the wire schema like a link's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import cbor2

from gateway.downlinks import SCHEMA as DOWNLINKS_SCHEMA
from gateway.downlinks import Downlinks
from gateway.links.base import Uplink
from gateway.links.wake import PRESENCE_FRESH_S, SEEN_EVENTS, NeighbourWake
from gateway.registry import SCHEMA as REGISTRY_SCHEMA
from gateway.registry import Node, Registry
from gateway.store import Database
from gateway.uplink import decode_uplink
from protocol import schema

NOW = 1_800_000_000.0
Body = Callable[[NeighbourWake, Downlinks], Awaitable[None]]


def presence(
    node: str, seq: int, *, age_s: int = 0, request_seqno: int | None = None, count: int = 1
) -> Uplink:
    """A lamp's uplink carrying one presence event, as the link decodes it from the wire."""
    record = {"type": "event", "event": "presence", "count": count, "seq": seq, "age_s": age_s}
    payload = cbor2.dumps(schema.encode_uplink([record]))
    piv = seq if request_seqno is None else request_seqno
    return decode_uplink(node, piv, payload, NOW, link="lora")


def run(tmp_path: Path, body: Body) -> None:
    async def main() -> None:
        db = Database(tmp_path / "g.db")
        await db.open([REGISTRY_SCHEMA, DOWNLINKS_SCHEMA])
        registry = Registry(db)
        await registry.add(Node("lamp-1", "lighting", "lora", config={"neighbours": ["lamp-2"]}))
        await registry.add(
            Node("lamp-2", "lighting", "lora", config={"neighbours": ["lamp-1", "lamp-3"]})
        )
        await registry.add(Node("lamp-3", "lighting", "lora"))
        await registry.refresh()
        wake = NeighbourWake(registry, Downlinks(db, 3600.0))
        try:
            await body(wake, wake.downlinks)
        finally:
            await wake.close()
            await db.close()

    asyncio.run(main())


async def wakes(downlinks: Downlinks) -> list[tuple[str, str]]:
    """(woken node, origin) of every wake-up queued, oldest first."""
    return [(d.node_id, d.origin) for d in reversed(await downlinks.list())]


def test_one_event_wakes_each_neighbour_once_however_often_it_arrives(tmp_path: Path) -> None:
    async def body(wake: NeighbourWake, downlinks: Downlinks) -> None:
        wake.after_commit(presence("lamp-2", 7))
        await wake.join()
        assert await wakes(downlinks) == [
            ("lamp-1", "presence:lamp-2"),
            ("lamp-3", "presence:lamp-2"),
        ]
        # Five more arrivals of the same event: the CON retransmission, and resends of the
        # record under new OSCORE sequence numbers (same seq, so the same reading id).
        for piv in (7, 8, 9, 10, 11):
            wake.after_commit(presence("lamp-2", 7, request_seqno=piv))
        await wake.join()
        assert len(await wakes(downlinks)) == 2 and wake.queued == 2
        assert wake.repeated == 5
        # the walker moves on: the next event wakes them again
        wake.after_commit(presence("lamp-2", 8))
        await wake.join()
        assert len(await wakes(downlinks)) == 4

    run(tmp_path, body)


def test_an_event_older_than_a_few_seconds_wakes_nobody(tmp_path: Path) -> None:
    async def body(wake: NeighbourWake, downlinks: Downlinks) -> None:
        # held back through an outage: the walk it reports is over
        wake.after_commit(presence("lamp-1", 3, age_s=40))
        wake.after_commit(presence("lamp-1", 4, age_s=PRESENCE_FRESH_S + 1))
        await wake.join()
        assert await wakes(downlinks) == [] and wake.stale == 2
        # a few seconds late is still ahead of the walker
        wake.after_commit(presence("lamp-1", 5, age_s=PRESENCE_FRESH_S))
        await wake.join()
        assert await wakes(downlinks) == [("lamp-2", "presence:lamp-1")]
        # the stale event resent later is still stale (and now a repeat)
        wake.after_commit(presence("lamp-1", 3, age_s=45, request_seqno=20))
        await wake.join()
        assert len(await wakes(downlinks)) == 1 and wake.repeated == 1

    run(tmp_path, body)


def test_an_uplink_with_a_repeated_and_a_new_event_wakes_once(tmp_path: Path) -> None:
    async def body(wake: NeighbourWake, downlinks: Downlinks) -> None:
        wake.after_commit(presence("lamp-1", 1))
        await wake.join()
        records = [
            {"type": "event", "event": "presence", "count": 1, "seq": 1},
            {"type": "event", "event": "presence", "count": 2, "seq": 2},
        ]
        payload = cbor2.dumps(schema.encode_uplink(records))
        wake.after_commit(decode_uplink("lamp-1", 30, payload, NOW, link="lora"))
        await wake.join()
        assert await wakes(downlinks) == [("lamp-2", "presence:lamp-1")] * 2

    run(tmp_path, body)


def test_the_memory_of_events_is_bounded(tmp_path: Path) -> None:
    async def body(wake: NeighbourWake, downlinks: Downlinks) -> None:
        for seq in range(SEEN_EVENTS + 10):
            wake.after_commit(presence("lamp-3", seq))  # no neighbours: nothing queued
        await wake.join()
        assert len(wake._seen) == SEEN_EVENTS
        assert "lamp-3:9" not in wake._seen and f"lamp-3:{SEEN_EVENTS + 9}" in wake._seen

    run(tmp_path, body)

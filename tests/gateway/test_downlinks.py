"""Downlinks: queued -> sent (in every response until confirmed) -> confirmed, or expired."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.downlinks import SCHEMA, Downlink, Downlinks
from gateway.store import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def open_downlinks(path: Path, clock: Clock) -> Downlinks:
    db = Database(path)
    await db.open([SCHEMA])
    return Downlinks(db, expiry_s=60.0, clock=clock)


def test_life_of_a_downlink(tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        changes: list[tuple[int, str]] = []
        downlinks.listeners.append(lambda d: changes.append((d.id, d.state)))

        first = await downlinks.enqueue("lamp-1", {"profile": "night"}, origin="web:alice")
        second = await downlinks.enqueue("lamp-1", {"identify": 5})
        other = await downlinks.enqueue("bin-3", {"emptied": True})
        assert (first.state, first.expires_at, first.origin) == ("queued", 1060.0, "web:alice")

        clock.now = 1001.0
        taken = await downlinks.take("lamp-1")
        assert [(d.id, d.state, d.sent_at, d.attempts) for d in taken] == [
            (first.id, "sent", 1001.0, 1),
            (second.id, "sent", 1001.0, 1),
        ]
        assert taken[0].command == {"profile": "night"}
        # The node missed that response: the next one carries them again.
        clock.now = 1002.0
        again = await downlinks.take("lamp-1", limit=1)
        assert [(d.id, d.attempts) for d in again] == [(first.id, 2)]

        # Confirmations: only the node's own sent downlinks count.
        confirmed = await downlinks.confirm("lamp-1", [first.id, other.id, 9999])
        assert [(d.id, d.state, d.confirmed_at) for d in confirmed] == [
            (first.id, "confirmed", 1002.0)
        ]
        assert await downlinks.confirm("bin-3", [other.id]) == []  # queued, never sent
        assert [d.id for d in await downlinks.take("lamp-1")] == [second.id]

        listed = await downlinks.list("lamp-1")
        assert [(d.id, d.state) for d in listed] == [(second.id, "sent"), (first.id, "confirmed")]
        assert await downlinks.counts() == {"queued": 1, "sent": 1, "confirmed": 1, "expired": 0}
        assert changes[:3] == [(first.id, "queued"), (second.id, "queued"), (other.id, "queued")]
        assert (first.id, "confirmed") in changes
        await downlinks.db.close()

    asyncio.run(body())


def test_expiry(tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        queued = await downlinks.enqueue("n", {"reboot": True})
        short = await downlinks.enqueue("n", {"identify": 3}, ttl_s=5.0)
        await downlinks.take("n")
        clock.now = 1006.0
        # Past its lifetime a downlink is no longer handed out, even before the sweep runs.
        assert [d.id for d in await downlinks.take("n")] == [queued.id]
        expired = await downlinks.expire()
        assert [(d.id, d.state) for d in expired] == [(short.id, "expired")]
        assert await downlinks.confirm("n", [short.id]) == []  # too late
        clock.now = 1061.0
        assert [d.id for d in await downlinks.expire()] == [queued.id]
        assert await downlinks.take("n") == []
        assert await downlinks.counts() == {"queued": 0, "sent": 0, "confirmed": 0, "expired": 2}
        # Finished downlinks are forgotten after a week.
        clock.now = 1061.0 + 8 * 86400
        await downlinks.expire()
        assert await downlinks.list() == []
        await downlinks.db.close()

    asyncio.run(body())


def test_queue_survives_restart(tmp_path: Path) -> None:
    async def body() -> Downlink:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        queued = await downlinks.enqueue("n", {"interval_s": 600})
        await downlinks.db.close()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        taken = await downlinks.take("n")
        await downlinks.db.close()
        assert [(d.id, d.command) for d in taken] == [(queued.id, {"interval_s": 600})]
        return queued

    asyncio.run(body())

"""The durable store: group commit, acknowledgement after commit, dedup, outbox, parking."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Database
from gateway.store.readings import SCHEMA, Store, database_for
from tests.gateway.fakes import reading

MiB = 1024 * 1024


async def open_store(
    path: Path, sinks: tuple[str, ...] = ("a", "b"), max_bytes: int = 64 * MiB, **options: Any
) -> Store:
    db = database_for(path, max_bytes, **options)
    await db.open([SCHEMA])
    return Store(db, sinks, max_bytes)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def committed_ids(path: Path) -> list[str]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT reading_id FROM readings ORDER BY seq")]


def test_wal_and_synchronous_full(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        mode, sync = await store.db.write_now(
            lambda c: (
                c.execute("PRAGMA journal_mode").fetchone()[0],
                c.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert (mode, sync) == ("wal", 2)  # 2 is FULL: the WAL is fsynced at every commit
        await store.db.close()

    run(body)


def test_add_is_visible_to_other_connections_once_it_returns(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        assert await store.add([reading("n1", 1), reading("n1", 2)]) == 2
        assert committed_ids(tmp_path / "g.db") == ["n1:1:0", "n1:2:0"]
        await store.db.close()

    run(body)


def test_concurrent_adds_share_group_commits(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        counts = await asyncio.gather(*(store.add([reading("n", i)]) for i in range(300)))
        assert counts == [1] * 300
        # 300 writers, a handful of transactions (each one fsync).
        assert store.db.stats.works == 300
        assert store.db.stats.groups <= 10
        assert len(committed_ids(tmp_path / "g.db")) == 300
        await store.db.close()

    run(body)


def test_nothing_is_acknowledged_before_its_commit(tmp_path: Path) -> None:
    """The futures of a group are still pending when COMMIT is about to run, and a group
    whose COMMIT fails acknowledges none of its readings."""

    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        futures: list[asyncio.Future[Any]] = []
        seen_before_commit: list[bool] = []
        fail = {"now": False}

        def before_commit(conn: sqlite3.Connection) -> None:
            seen_before_commit.extend(f.done() for f in futures)
            if fail["now"]:
                raise sqlite3.OperationalError("disk I/O error")

        store.db.before_commit.append(before_commit)
        futures.extend(
            store.db.transact(lambda c, i=i: store.add_in(c, [reading("n", i)])) for i in range(5)
        )
        await asyncio.gather(*futures)
        assert seen_before_commit == [False] * 5

        fail["now"] = True
        doomed = [
            store.db.transact(lambda c, i=i: store.add_in(c, [reading("m", i)])) for i in range(3)
        ]
        results = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(r, sqlite3.OperationalError) for r in results)
        assert committed_ids(tmp_path / "g.db") == [f"n:{i}:0" for i in range(5)]
        fail["now"] = False
        assert await store.add([reading("m", 0)]) == 1  # the store goes on afterwards
        await store.db.close()

    run(body)


def test_a_failing_write_rolls_back_alone(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")

        def bad(conn: sqlite3.Connection) -> None:
            store.add_in(conn, [reading("bad", 1)])
            raise ValueError("half done")

        good = store.db.transact(lambda c: store.add_in(c, [reading("good", 1)]))
        failing = store.db.transact(bad)
        assert await good == [True]
        with pytest.raises(ValueError, match="half done"):
            await failing
        assert committed_ids(tmp_path / "g.db") == ["good:1:0"]
        await store.db.close()

    run(body)


def test_duplicate_reading_id_is_ignored(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        assert await store.add([reading("n", 1), reading("n", 2)]) == 2
        assert await store.add([reading("n", 2), reading("n", 3)]) == 1
        assert await store.all_ids() == ["n:1:0", "n:2:0", "n:3:0"]
        assert [r.reading_id for r in await store.outbox("a", 10)] == ["n:1:0", "n:2:0", "n:3:0"]
        await store.db.close()

    run(body)


def test_outbox_order_and_per_sink_delivery(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        await store.add([reading("x", 1), reading("y", 1), reading("x", 2, alarm=True)])
        await store.add([reading("y", 2)])
        outbox = await store.outbox("a", 10)
        assert [r.reading_id for r in outbox] == ["x:1:0", "y:1:0", "x:2:0", "y:2:0"]
        assert outbox[2].alarm and outbox[2].data == {"seq": 2}
        assert outbox[0].received_at == 1_700_000_001.0
        assert [r.reading_id for r in await store.outbox("a", 2)] == ["x:1:0", "y:1:0"]

        assert await store.mark_delivered("a", ["x:1:0", "y:1:0", "unknown"]) == 2
        assert [r.reading_id for r in await store.outbox("a", 10)] == ["x:2:0", "y:2:0"]
        assert len(await store.outbox("b", 10)) == 4  # the other sink still has everything
        stats = await store.stats()
        assert stats.pending == {"a": 2, "b": 4}
        assert stats.readings == 4 and stats.alarms == 1
        assert stats.oldest_pending_at == {"a": 1_700_000_002.0, "b": 1_700_000_001.0}
        await store.db.close()

    run(body)


def test_parked_readings_leave_the_outbox_and_are_reported(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        await store.add([reading("n", i) for i in range(4)])
        assert await store.park("a", {"n:1:0": "422 entity invalid"}, at=5.0) == 1
        assert [r.reading_id for r in await store.outbox("a", 10)] == ["n:0:0", "n:2:0", "n:3:0"]
        parked = await store.parked("a")
        assert [(p.sink, p.reading.reading_id, p.reason, p.parked_at) for p in parked] == [
            ("a", "n:1:0", "422 entity invalid", 5.0)
        ]
        assert (await store.stats()).parked == {"a": 1, "b": 0}
        assert await store.parked("b") == []
        await store.db.close()

    run(body)


def test_recent_readings_of_a_node(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path / "g.db")
        await store.add([reading("x", i) for i in range(5)] + [reading("y", 9)])
        recent = await store.recent("x", limit=3)
        assert [r.reading_id for r in recent] == ["x:4:0", "x:3:0", "x:2:0"]
        await store.db.close()

    run(body)


def test_removed_sink_releases_its_outbox(tmp_path: Path) -> None:
    async def body() -> None:
        path = tmp_path / "g.db"
        store = await open_store(path, sinks=("a", "b"))
        await store.add([reading("n", 1), reading("n", 2)])
        await store.mark_delivered("a", ["n:1:0"])
        await store.db.close()

        store = await open_store(path, sinks=("a",))
        await store.reconcile_sinks()
        stats = await store.stats()
        assert stats.pending == {"a": 1}
        open_flags = await store.db.read(
            lambda c: c.execute("SELECT reading_id, open FROM readings ORDER BY seq").fetchall()
        )
        assert open_flags == [("n:1:0", 0), ("n:2:0", 1)]
        await store.db.close()

    run(body)


def test_readings_survive_reopening_and_close_checkpoints(tmp_path: Path) -> None:
    async def body() -> None:
        path = tmp_path / "g.db"
        store = await open_store(path)
        await store.add([reading("n", i) for i in range(50)])
        await store.db.close()
        wal = Path(f"{path}-wal")
        assert not wal.exists() or wal.stat().st_size == 0  # checkpointed into the main file
        store = await open_store(path)
        assert len(await store.outbox("b", 100)) == 50
        await store.db.close()

    run(body)


def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    async def body() -> None:
        db = Database(tmp_path / "g.db")
        await db.open([SCHEMA])
        await db.close()
        with pytest.raises(RuntimeError, match="closed"):
            db.transact(lambda c: None)

    run(body)

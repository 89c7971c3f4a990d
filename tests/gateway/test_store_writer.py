"""The database's writer process (gateway/store/writer.py): batches marked `writer_process`
commit there, answered in order; a write fails alone; a child that dies fails only the group
it held and the thread takes over until a new child starts; close() and the parent's death
both end the child; the store's bound holds for the readings it writes."""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.downlinks import SCHEMA as DOWNLINKS_SCHEMA
from gateway.downlinks import Downlinks
from gateway.links.base import Receipts, Uplink
from gateway.pipeline import UplinkWrite, UplinkWrites
from gateway.store import Database
from gateway.store.db import DatabaseClosed
from gateway.store.readings import SCHEMA, Store, database_for
from gateway.store.status import SCHEMA as STATUS_SCHEMA
from gateway.store.status import NodeReport
from gateway.store.writer import WriterProcess
from tests.gateway import writer_batches
from tests.gateway.fakes import reading
from tests.gateway.writer_batches import DIE, Notes, notes

ROOT = Path(__file__).resolve().parents[2]


async def open_db(path: Path, **options: object) -> Database:
    db = Database(path, writer_process=True, **options)  # type: ignore[arg-type]
    await db.open([writer_batches.SCHEMA])
    assert db.writer_process is not None, "the writer process did not start"
    return db


def gone(pid: int, timeout_s: float) -> bool:
    """Whether process `pid` has exited (or exits within the timeout): its pidfd turns
    readable at its exit, an event rather than a poll."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)


def test_batches_commit_in_the_writer_process_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        db = await open_db(tmp_path / "g.db")
        child = db.writer_process
        batch = Notes()
        texts = [f"note {i}" for i in range(300)]
        results = await asyncio.gather(*(db.submit(batch, text) for text in texts))
        # Each caller got its own row (ids follow submission order), written by the child.
        assert [note_id for note_id, _ in results] == list(range(1, 301))
        assert {pid for _, pid in results} == {child}
        assert child != os.getpid()
        assert notes(str(tmp_path / "g.db")) == texts
        assert db.stats.process_groups == db.stats.groups and 1 <= db.stats.groups <= 10
        # Writes that are not process batches stay on the thread, ordered by SQLite.
        assert await db.transact(lambda conn: os.getpid()) == os.getpid()
        await db.close()

    asyncio.run(body())


def test_a_failing_write_fails_alone(tmp_path: Path) -> None:
    async def body() -> None:
        db = await open_db(tmp_path / "g.db")
        batch = Notes()
        await db.submit(batch, "dup:1")
        texts = ["a", "b", "dup:1", "c"]
        outcomes = await asyncio.gather(
            *(db.submit(batch, t) for t in texts), return_exceptions=True
        )
        assert isinstance(outcomes[2], sqlite3.IntegrityError)  # pickled back to its caller
        assert all(isinstance(o, tuple) for i, o in enumerate(outcomes) if i != 2)
        assert notes(str(tmp_path / "g.db")) == ["dup:1", "a", "b", "c"]
        assert db.writer_process is not None  # one bad write does not cost the child
        await db.close()

    asyncio.run(body())


def test_an_item_that_does_not_pickle_fails_its_group_only(tmp_path: Path) -> None:
    async def body() -> None:
        db = await open_db(tmp_path / "g.db")
        with pytest.raises(TypeError, match="writer process"):
            await db.submit(Notes(), lambda: None)  # type: ignore[arg-type, misc]
        _, pid = await db.submit(Notes(), "next")
        assert pid == db.writer_process and notes(str(tmp_path / "g.db")) == ["next"]
        await db.close()

    asyncio.run(body())


def test_a_child_dying_mid_group_fails_that_group_and_the_thread_takes_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        # One write per group, so the writes behind the fatal one wait in the queue.
        db = await open_db(tmp_path / "g.db", max_group=1)
        child = db.writer_process
        assert child is not None
        batch = Notes(die_in=child)
        acknowledged = await db.submit(batch, "before")
        fatal = db.submit(batch, DIE)
        queued = [db.submit(batch, f"after {i}") for i in range(3)]
        with pytest.raises(DatabaseClosed):
            await fatal
        behind = await asyncio.gather(*queued)
        # The queued writes went to the thread, in order; so does everything later.
        assert {pid for _, pid in behind} == {os.getpid()}
        assert (await db.submit(batch, "later"))[1] == os.getpid()
        assert db.writer_process is None
        assert gone(child, 10)
        # Nothing acknowledged is lost, the dead group left nothing behind.
        assert acknowledged[1] == child
        assert notes(str(tmp_path / "g.db")) == ["before", "after 0", "after 1", "after 2", "later"]
        assert db.healthy
        await db.close()

    asyncio.run(body())
    assert any("writer process exited" in r.getMessage() for r in caplog.records)


def test_a_new_writer_process_takes_the_batches_back_after_one_dies(tmp_path: Path) -> None:
    async def body() -> None:
        db = await open_db(tmp_path / "g.db", respawn_delays_s=(0.2, 0.2))
        first = db.writer_process
        assert first is not None
        batch = Notes(die_in=first)
        with pytest.raises(DatabaseClosed):
            await db.submit(batch, DIE)
        assert (await db.submit(batch, "meanwhile"))[1] == os.getpid()  # the thread, at once
        second = await started_again(db, first)
        assert (await db.submit(batch, "again"))[1] == second
        assert notes(str(tmp_path / "g.db")) == ["meanwhile", "again"]
        await db.close()
        assert gone(first, 10) and gone(second, 10)

    asyncio.run(body())


def test_a_writer_process_that_will_not_start_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        db = await open_db(tmp_path / "g.db", respawn_delays_s=(0.05, 0.1))
        first = db.writer_process
        assert first is not None
        real_start = WriterProcess.start
        tries: list[float] = []

        async def failing_twice(*args: object, **kw: object) -> WriterProcess:
            tries.append(asyncio.get_running_loop().time())
            if len(tries) <= 2:
                raise OSError("no more processes")
            return await real_start(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(WriterProcess, "start", failing_twice)
        with pytest.raises(DatabaseClosed):
            await db.submit(Notes(die_in=first), DIE)
        second = await started_again(db, first)
        assert len(tries) == 3
        assert tries[2] - tries[1] >= 0.09  # the delay grew after the first failure
        assert (await db.submit(Notes(), "back"))[1] == second
        await db.close()

    asyncio.run(body())


def test_close_stops_a_pending_restart(tmp_path: Path) -> None:
    async def body() -> None:
        db = await open_db(tmp_path / "g.db", respawn_delays_s=(30.0,))
        first = db.writer_process
        assert first is not None
        with pytest.raises(DatabaseClosed):
            await db.submit(Notes(die_in=first), DIE)
        await asyncio.wait_for(db.close(), 5)  # does not wait out the 30 s
        assert db.writer_process is None

    asyncio.run(body())


async def started_again(db: Database, dead: int, timeout_s: float = 20.0) -> int:
    """The pid of the writer process that replaced `dead`, once it commits the batches."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (pid := db.writer_process) in (None, dead):
        assert asyncio.get_running_loop().time() < deadline, "no new writer process"
        await asyncio.sleep(0.02)
    assert pid is not None
    return pid


def test_close_commits_what_is_queued_and_stops_the_child(tmp_path: Path) -> None:
    async def body() -> None:
        db = await open_db(tmp_path / "g.db")
        child = db.writer_process
        assert child is not None
        pending = [db.submit(Notes(), f"n{i}") for i in range(50)]
        await db.close()
        assert all(p.done() and not p.exception() for p in pending)
        assert gone(child, 0)  # already reaped by close()
        assert len(notes(str(tmp_path / "g.db"))) == 50

    asyncio.run(body())


_PARENT = """
import asyncio, sys
from pathlib import Path
from gateway.store import Database

async def main():
    db = Database(Path(sys.argv[1]), writer_process=True)
    await db.open([])
    print(db.writer_process, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_the_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path / "g.db")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child, 0)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert gone(child, 10), "the writer process outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def _uplink(node: str, seq: int) -> UplinkWrite:
    r = reading(node, seq, pad="x" * 150)
    uplink = Uplink(node, "coap", r.received_at, [r], confirmed_downlinks=Receipts([], {}))
    return UplinkWrite(uplink, NodeReport(node, r.received_at, "coap"), r.received_at)


def test_uplink_writes_pickle_to_what_run_needs(tmp_path: Path) -> None:
    db = database_for(tmp_path / "g.db", 64 * 1024 * 1024)
    writes = UplinkWrites(("a", "b"), Downlinks(db, 60.0))
    copy = pickle.loads(pickle.dumps(writes))
    assert copy.sinks == ("a", "b") and type(copy.downlinks) is Downlinks
    item = pickle.loads(pickle.dumps(_uplink("n1", 1)))
    assert item == _uplink("n1", 1)
    receipts = pickle.loads(pickle.dumps(Receipts([3], {4: "busy"})))
    assert list(receipts) == [3] and receipts.refused == {4: "busy"}


def test_the_bound_holds_for_readings_the_process_writes(tmp_path: Path) -> None:
    limit = 4 * 1024 * 1024

    async def body() -> None:
        evictions: dict[str, int] = {}
        db = database_for(tmp_path / "g.db", limit, writer_process=True)
        await db.open([SCHEMA, STATUS_SCHEMA, DOWNLINKS_SCHEMA])
        store = Store(
            db,
            ("a",),
            limit,
            on_evicted=lambda c, n: evictions.update({c: evictions.get(c, 0) + n}),
        )
        writes = UplinkWrites(store.sinks, Downlinks(db, 60.0))
        peak = 0
        for base in range(0, 14000, 200):
            await asyncio.gather(
                *(db.submit(writes, _uplink("n", i)) for i in range(base, base + 200))
            )
            peak = max(peak, db.disk_bytes())
        assert db.stats.process_groups == db.stats.groups
        assert peak <= limit
        # The evictions were reported on this side (metrics, logs, counters) as they happened.
        stats = await store.stats()
        assert evictions.get("routine", 0) > 0
        assert stats.evicted["routine"] == evictions["routine"]
        assert stats.readings == 14000 - evictions["routine"]
        await db.close()

    asyncio.run(body())

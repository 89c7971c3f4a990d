"""One SQLite database in WAL mode, written through a group committer off the event loop.

Every write is a small function of a connection (`transact(work)`), or an item handed to a
`Batch` (`submit(batch, item)`). Writes that arrive close together run in one transaction on
the single writer thread; every caller's future resolves only after the COMMIT that contains
its write has returned: with `synchronous=FULL` that means the WAL has been fsynced.
Reads run on a second connection in their own thread, so the event loop never blocks on disk.

Why batches: each statement the writer thread runs gives up the GIL while SQLite works and has
to take it back from the event loop afterwards; when the loop is busy (under load, exactly
when it matters) that hand-over waits for the loop's next system call or the interpreter's
switch interval. A group of uplinks written one statement at a time (readings, node health,
downlinks: half a dozen each) waited that many times per uplink, and every wait also delayed
the commit that the uplinks' acknowledgements wait for. A `Batch` writes all the items of a
group with a fixed handful of set-based statements, so the number of hand-overs per group no
longer grows with its size.

Failure isolation: a failing write rolls back alone. Each `transact` work, and each run of
consecutive items of one batch, runs inside its own savepoint (except the first of a group,
for which the transaction itself is started again); when a batch run fails it is rolled back
and its items are run again one by one, each in its own savepoint, so only the faulty one
fails.

Why `synchronous=FULL`: in WAL mode `NORMAL` fsyncs only at checkpoints, so after a power cut
the last transactions before it can be rolled back even though COMMIT returned. A node whose
reading was acknowledged would then have dropped it from its own buffer, and the reading would
be gone. `FULL` fsyncs the WAL on every commit; group commit pays that fsync once per group
rather than once per reading, which is what keeps the throughput (bench/ingest.py measures
both settings and both commit styles in the same run). A process crash (SIGKILL) loses nothing
under either setting; only power loss tells them apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]
Item = TypeVar("Item")
Item_contra = TypeVar("Item_contra", contravariant=True)
Result_co = TypeVar("Result_co", covariant=True)

log = logging.getLogger(__name__)


class DatabaseClosed(RuntimeError):
    """A write was submitted after `close()` started."""


class Batch(Protocol[Item_contra, Result_co]):
    """Writes of one kind that the group committer runs many at a time.

    `run` gets the items of consecutive `submit` calls in submission order, inside the group
    transaction on the writer thread, and returns one result per item, in the same order.
    It should use a fixed number of statements whatever the number of items (see the module
    docstring). If it raises, its changes are rolled back and the items are run again one at
    a time, so the exception reaches only the callers whose items raise on their own.
    """

    def run(
        self, conn: sqlite3.Connection, items: Sequence[Item_contra]
    ) -> Sequence[Result_co]: ...


def connect(
    path: Path,
    *,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    read_only: bool = False,
    wal_autocheckpoint: int = 1000,
    journal_size_limit: int = 4 * 1024 * 1024,
) -> sqlite3.Connection:
    """A connection with the pragmas every user of the gateway database must share.

    Also used directly (synchronously) by the CLI, which may write while the daemon runs: WAL
    lets it, and `busy_timeout` makes it wait for the daemon's short transactions.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not read_only:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot switch to WAL (got {mode!r})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")
    conn.execute(f"PRAGMA journal_size_limit = {int(journal_size_limit)}")
    conn.execute("PRAGMA temp_store = MEMORY")
    if read_only:
        conn.execute("PRAGMA query_only = 1")
    return conn


def apply_schema(conn: sqlite3.Connection, schemas: Sequence[str]) -> None:
    """Create what is missing, in one transaction; every statement is `IF NOT EXISTS`."""
    try:
        conn.executescript("BEGIN IMMEDIATE;\n" + "\n".join(schemas) + "\nCOMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@dataclass
class CommitStats:
    groups: int = 0
    works: int = 0  # writes committed or failed alone: `transact` works and batch items
    batch_runs: int = 0  # calls of `Batch.run` (a run that failed and was split counts once)
    last_commit_s: float = 0.0  # duration of the latest group, BEGIN to COMMIT
    last_commit_at: float = 0.0  # time.time() of the latest commit


@dataclass(slots=True)
class _Write(Generic[T]):
    """One queued write: a work, or an item for a batch."""

    future: asyncio.Future[T]
    work: Work[T] | None = None
    batch: Batch[Any, T] | None = None
    item: Any = None


Outcome = tuple[bool, Any]  # (True, result) or (False, exception)


class Database:
    """The gateway's SQLite file: `transact` and `submit` (group-committed writes) and `read`."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        group_window_s: float = 0.002,
        max_group: int = 1000,
        wal_autocheckpoint: int = 1000,
        journal_size_limit: int = 4 * 1024 * 1024,
    ) -> None:
        self.path = path
        self._synchronous: Literal["FULL", "NORMAL"] = synchronous
        self._window = group_window_s
        self._max_group = max(1, max_group)
        self._wal_autocheckpoint = wal_autocheckpoint
        self._journal_size_limit = journal_size_limit
        # One thread owns the writer connection, another the reader: sqlite3 objects are not
        # shared between threads, and the GIL is released while SQLite works.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="db-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by open()
        self._queue: list[_Write[Any]] = []  # waiting for the next group
        self._queued_at = 0.0  # loop time when the oldest of them arrived
        self._committing: list[_Write[Any]] | None = None  # the group on the writer thread
        self._timer: asyncio.TimerHandle | None = None  # starts the next group
        self._closing = False
        self._broken: BaseException | None = None  # why the committer stopped, if it did
        self.before_commit: list[Callable[[sqlite3.Connection], None]] = []
        self.after_commit: list[Callable[[], None]] = []  # called on the event loop
        self.stats = CommitStats()

    async def open(self, schemas: Sequence[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()

        def open_writer() -> sqlite3.Connection:
            conn = connect(
                self.path,
                synchronous=self._synchronous,
                wal_autocheckpoint=self._wal_autocheckpoint,
                journal_size_limit=self._journal_size_limit,
            )
            apply_schema(conn, schemas)
            return conn

        self._wconn = await loop.run_in_executor(self._writer, open_writer)
        self._rconn = await loop.run_in_executor(
            self._reader, lambda: connect(self.path, read_only=True)
        )
        self._loop = loop

    @property
    def healthy(self) -> bool:
        return self._loop is not None and not self._closing and self._broken is None

    def _enqueue(self, write: _Write[T]) -> asyncio.Future[T]:
        if self._closing or self._loop is None:
            raise DatabaseClosed("the database is closed or closing")
        if self._broken is not None:  # never leave a caller waiting for a commit that cannot come
            raise DatabaseClosed(f"the group committer has stopped: {self._broken!r}")
        if not self._queue:
            self._queued_at = self._loop.time()
        self._queue.append(write)
        if self._committing is None:
            if len(self._queue) >= self._max_group:
                self._start_group()
            elif self._timer is None:
                self._schedule_group()
        return write.future

    def transact(self, work: Work[T]) -> asyncio.Future[T]:
        """Run `work` in the next group transaction; the future resolves after its COMMIT."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        return self._enqueue(_Write(future, work=work))

    def submit(self, batch: Batch[Item, T], item: Item) -> asyncio.Future[T]:
        """Hand `item` to `batch` in the next group; the future resolves after its COMMIT."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        return self._enqueue(_Write(future, batch=batch, item=item))

    async def read(self, work: Work[T]) -> T:
        assert self._rconn is not None, "open() first"
        conn = self._rconn
        return await asyncio.get_running_loop().run_in_executor(self._reader, work, conn)

    def write_now(self, work: Work[T]) -> asyncio.Future[T]:
        """Run on the writer thread outside any group (maintenance such as a checkpoint)."""
        assert self._wconn is not None, "open() first"
        conn = self._wconn
        return asyncio.get_running_loop().run_in_executor(self._writer, work, conn)

    async def flush(self) -> None:
        """Return once everything submitted so far has committed."""
        await self.transact(lambda conn: None)

    # -- group scheduling (on the loop: no task of its own, one thread hop each way per group) --

    def _schedule_group(self) -> None:
        """Start the next group once its oldest write has waited `group_window_s` for company.

        After a commit the writes that arrived meanwhile have usually waited that long already
        and go at once; to an idle writer, a lone write waits the window (a few ms) so that
        the writes arriving close behind it share its fsync.
        """
        assert self._loop is not None
        delay = self._queued_at + self._window - self._loop.time()
        if delay <= 0 or len(self._queue) >= self._max_group:
            self._start_group()
        else:
            self._timer = self._loop.call_later(delay, self._start_group)

    def _start_group(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._committing is not None or not self._queue:
            return
        group = self._queue[: self._max_group]
        del self._queue[: self._max_group]  # any left over are older than the window by now
        self._committing = group
        loop = self._loop
        assert loop is not None

        def committed(done: concurrent.futures.Future[list[Outcome]]) -> None:
            # On the writer thread: the one hop back to the loop for the whole group.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(self._group_done, group, done)

        self._writer.submit(self._run_group, group).add_done_callback(committed)

    def _group_done(
        self, group: list[_Write[Any]], done: concurrent.futures.Future[list[Outcome]]
    ) -> None:
        self._committing = None
        try:
            outcomes = done.result()
            committed = True
        except BaseException as exc:  # noqa: BLE001 -- COMMIT failed (disk full, I/O error)
            log.error("group commit of %d writes failed: %s", len(group), exc)
            outcomes, committed = [(False, exc)] * len(group), False
        if self._queue:  # keep the writer busy while this group's callers resume
            self._schedule_group()
        try:
            for write, (ok, value) in zip(group, outcomes, strict=True):
                if write.future.done():  # the caller gave up waiting; it committed anyway
                    continue
                if ok:
                    write.future.set_result(value)
                else:
                    write.future.set_exception(value)
        except BaseException as exc:  # a bug here: stop rather than leave callers hanging
            self._break(exc)
            raise
        if committed:
            for callback in self.after_commit:
                try:
                    callback()
                except Exception:  # a listener's bug must not stop the committer
                    log.exception("after-commit callback %r failed", callback)

    def _break(self, exc: BaseException) -> None:
        log.critical("the group committer stopped: %r", exc)
        self._broken = exc
        waiting, self._queue = self._queue, []
        for write in waiting:
            if not write.future.done():
                write.future.set_exception(DatabaseClosed(f"the group committer stopped: {exc!r}"))

    # -- the writer thread ---------------------------------------------------------------------

    def _run_group(self, group: list[_Write[Any]]) -> list[Outcome]:
        conn = self._wconn
        assert conn is not None
        start = time.perf_counter()
        outcomes: list[Outcome] = []
        runs = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            i = 0
            while i < len(group):
                first = i == 0
                batch = group[i].batch
                if batch is None:
                    work = group[i].work
                    assert work is not None
                    outcomes.append(_attempt(conn, work, first))
                    i += 1
                    continue
                end = i + 1
                while end < len(group) and group[end].batch is batch:
                    end += 1
                outcomes.extend(_run_batch(conn, batch, [w.item for w in group[i:end]], first))
                runs += 1
                i = end
            for hook in self.before_commit:
                hook(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.stats.groups += 1
        self.stats.works += len(group)
        self.stats.batch_runs += runs
        self.stats.last_commit_s = time.perf_counter() - start
        self.stats.last_commit_at = time.time()
        return outcomes

    def disk_bytes(self) -> int:
        """What the database occupies on disk now: main file, WAL and shared-memory index."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    async def close(self) -> None:
        """Commit what is queued, checkpoint the WAL into the main file, close both sides."""
        if self._loop is None:
            self._writer.shutdown()
            self._reader.shutdown()
            return
        if not self._closing:
            if self._broken is not None:
                log.error("the group committer had stopped; %d writes dropped", len(self._queue))
            else:
                # Until nothing is queued or committing: a caller resumed by one flush may
                # have written again.
                await self.flush()
                while self._queue or self._committing is not None:
                    await self.flush()
            self._closing = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        loop = asyncio.get_running_loop()
        rconn, wconn = self._rconn, self._wconn
        if rconn is not None:
            await loop.run_in_executor(self._reader, rconn.close)
        if wconn is not None:

            def checkpoint_and_close() -> None:
                try:
                    wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    wconn.close()

            await loop.run_in_executor(self._writer, checkpoint_and_close)
        self._rconn = self._wconn = None
        self._writer.shutdown()
        self._reader.shutdown()


def _attempt(conn: sqlite3.Connection, work: Work[Any], first: bool) -> Outcome:
    """Run one write so that, if it fails, its changes alone are undone.

    A savepoint around it does that, at the price of two statements (see the module docstring
    on why statements count). The first write of a transaction needs none: the transaction
    itself is started again instead.
    """
    if not first:
        return _in_savepoint(conn, work)
    try:
        return (True, work(conn))
    except Exception as exc:  # noqa: BLE001 -- handed to that write's caller
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        return (False, exc)


def _in_savepoint(conn: sqlite3.Connection, work: Work[Any]) -> Outcome:
    conn.execute("SAVEPOINT work")
    try:
        value = work(conn)
    except Exception as exc:  # noqa: BLE001 -- handed to that write's caller
        conn.execute("ROLLBACK TO work")
        conn.execute("RELEASE work")
        return (False, exc)
    conn.execute("RELEASE work")
    return (True, value)


def _run_batch(
    conn: sqlite3.Connection, batch: Batch[Any, Any], items: list[Any], first: bool
) -> list[Outcome]:
    def run_all(c: sqlite3.Connection) -> list[Any]:
        results = list(batch.run(c, items))
        if len(results) != len(items):
            raise RuntimeError(f"{batch!r} returned {len(results)} results for {len(items)}")
        return results

    ok, value = _attempt(conn, run_all, first)
    if ok:
        return [(True, result) for result in value]
    if len(items) == 1:
        return [(False, value)]
    log.warning("a batch of %d writes failed (%s); retrying them one by one", len(items), value)
    outcomes = []
    for item in items:

        def alone(c: sqlite3.Connection, item: Any = item) -> Any:
            (result,) = batch.run(c, [item])
            return result

        outcomes.append(_in_savepoint(conn, alone))
    return outcomes

"""One SQLite database in WAL mode, written through group commits off the event loop.

Every write is a small function of a connection (`transact(work)`), or an item handed to a
`Batch` (`submit(batch, item)`). Writes that arrive close together run in one transaction
(gateway/store/groups.py), and every caller's future resolves only after the COMMIT that
contains its write has returned: with `synchronous=FULL` that means the WAL has been fsynced.
Reads run on a second connection in their own thread, so the event loop never blocks on disk.

Two writers: `transact` works run on a writer thread; batches marked `writer_process = True`
(the uplinks: gateway/pipeline.py `UplinkWrites`) run in a writer process when the database is
opened with `writer_process=True` (gateway/store/writer.py says why: the GIL). Each has its own
group committer; SQLite orders their transactions (WAL allows one writer at a time,
`busy_timeout` makes the other wait). If the process cannot start or dies, its batches go to
the thread, and the gateway goes on; a dead process is started again after a growing delay.
`commit_hooks` run before every COMMIT on either writer (the store's size bound);
`before_commit` hooks only on the thread.

Why batches: on the writer thread every statement costs a GIL hand-over with the event loop,
and a group of uplinks written one statement at a time cost half a dozen per uplink. A
`Batch` writes all the items of a group with a fixed handful of set-based statements,
whatever the group's size (in the writer process too: fewer statements, shorter commits).

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
from typing import Any, Literal, TypeVar

from gateway.store.groups import Batch, CommitHook, GroupCommitter, Outcome, Write, run_group
from gateway.store.writer import Reply, WriterProcess

T = TypeVar("T")
Item = TypeVar("Item")
Work = Callable[[sqlite3.Connection], T]

# After the writer process dies its batches go to the thread, and a new process is started
# after these delays, one per death in a row; a child that lived RESPAWN_RESET_S starts over.
RESPAWN_DELAYS_S = (1.0, 5.0, 30.0, 60.0)
RESPAWN_RESET_S = 600.0

__all__ = [
    "Batch",
    "CommitHook",
    "CommitStats",
    "Database",
    "DatabaseClosed",
    "apply_schema",
    "connect",
]

log = logging.getLogger(__name__)


class DatabaseClosed(RuntimeError):
    """A write was submitted after `close()` started (or the committer has stopped)."""


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
    groups: int = 0  # on both writers
    works: int = 0  # writes committed or failed alone: `transact` works and batch items
    process_groups: int = 0  # of which committed by the writer process
    last_commit_s: float = 0.0  # duration of the latest group, BEGIN to COMMIT
    last_commit_at: float = 0.0  # time.time() of the latest commit


class Database:
    """The gateway's SQLite file: `transact`/`submit` (group-committed writes) and `read`."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        group_window_s: float = 0.002,
        max_group: int = 1000,
        wal_autocheckpoint: int = 1000,
        journal_size_limit: int = 4 * 1024 * 1024,
        writer_process: bool = False,
        respawn_delays_s: Sequence[float] = RESPAWN_DELAYS_S,
    ) -> None:
        self.path = path
        self._synchronous: Literal["FULL", "NORMAL"] = synchronous
        self._window = group_window_s
        self._max_group = max(1, max_group)
        self._wal_autocheckpoint = wal_autocheckpoint
        self._journal_size_limit = journal_size_limit
        self._want_process = writer_process
        # One thread owns the writer connection, another the reader: sqlite3 objects are not
        # shared between threads, and the GIL is released while SQLite works.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="db-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: GroupCommitter | None = None
        self._process: GroupCommitter | None = None  # None: batches go to the thread
        self._child: WriterProcess | None = None
        self._child_since = 0.0  # monotonic time the child started
        self._respawn_delays = tuple(respawn_delays_s) or RESPAWN_DELAYS_S
        self._respawns = 0  # restarts since the last child that lived RESPAWN_RESET_S
        self._respawn: asyncio.Task[None] | None = None
        self._group_ids = 0
        self._closing = False
        self._broken: BaseException | None = None  # why the committer stopped, if it did
        self.before_commit: list[Callable[[sqlite3.Connection], None]] = []  # thread only
        self.commit_hooks: list[CommitHook] = []  # both writers (see CommitHook)
        self._sent_hooks: list[CommitHook] = []  # those of the group in the writer process
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
        self._thread = GroupCommitter(
            loop, self._window, self._max_group, self._dispatch_thread, self._committed
        )
        if self._want_process:
            await self._start_process()

    async def _start_process(self) -> None:
        settings = {
            "path": str(self.path),
            "synchronous": self._synchronous,
            "wal_autocheckpoint": self._wal_autocheckpoint,
            "journal_size_limit": self._journal_size_limit,
        }
        try:
            self._child = await WriterProcess.start(
                settings, self._process_reply, self._process_exit
            )
        except (OSError, RuntimeError, TimeoutError, EOFError) as exc:
            log.warning("no writer process (%s): its batches are written by the thread", exc)
            return
        assert self._loop is not None
        self._child_since = time.monotonic()
        self._process = GroupCommitter(
            self._loop, self._window, self._max_group, self._dispatch_process, self._committed
        )

    @property
    def healthy(self) -> bool:
        return self._thread is not None and not self._closing and self._broken is None

    @property
    def writer_process(self) -> int | None:
        """The writer process's pid while it commits the batches, else None."""
        return self._child.pid if self._child is not None and self._process else None

    def _enqueue(self, write: Write[T], to_process: bool = False) -> asyncio.Future[T]:
        if self._closing or self._thread is None:
            raise DatabaseClosed("the database is closed or closing")
        if self._broken is not None:  # never leave a caller waiting for a commit that cannot come
            raise DatabaseClosed(f"the group committer has stopped: {self._broken!r}")
        committer = self._process if to_process and self._process is not None else self._thread
        committer.add(write)
        return write.future

    def transact(self, work: Work[T]) -> asyncio.Future[T]:
        """Run `work` in the next group transaction; the future resolves after its COMMIT."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        return self._enqueue(Write(future, work=work))

    def submit(self, batch: Batch[Item, T], item: Item) -> asyncio.Future[T]:
        """Hand `item` to `batch` in the next group; the future resolves after its COMMIT."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        to_process = bool(getattr(batch, "writer_process", False))
        return self._enqueue(Write(future, batch=batch, item=item), to_process)

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
        if self._process is not None:
            await self._process.drained()
        await self.transact(lambda conn: None)

    def _committed(self) -> None:
        for callback in self.after_commit:
            try:
                callback()
            except Exception:  # a listener's bug must not stop the committer
                log.exception("after-commit callback %r failed", callback)

    # -- the writer thread ---------------------------------------------------------------------

    def _dispatch_thread(self, group: list[Write[Any]]) -> None:
        loop, committer = self._loop, self._thread
        assert loop is not None and committer is not None

        hooks = list(self.commit_hooks)

        def finished(done: concurrent.futures.Future[tuple[list[Outcome], list[Any]]]) -> None:
            # On the writer thread: the one hop back to the loop for the whole group.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(self._thread_done, committer, group, hooks, done)

        self._writer.submit(self._run_group, group, hooks).add_done_callback(finished)

    def _thread_done(
        self,
        committer: GroupCommitter,
        group: list[Write[Any]],
        hooks: list[CommitHook],
        done: concurrent.futures.Future[tuple[list[Outcome], list[Any]]],
    ) -> None:
        try:
            outcomes, results = done.result()
            committed = True
        except BaseException as exc:  # noqa: BLE001 -- COMMIT failed (disk full, I/O error)
            log.error("group commit of %d writes failed: %s", len(group), exc)
            outcomes, results, committed = [(False, exc)] * len(group), [], False
        self._settle(committer, group, outcomes, committed)
        self._report(hooks, results)

    def _report(self, hooks: list[CommitHook], results: list[Any]) -> None:
        for hook, result in zip(hooks, results, strict=False):
            try:
                hook.report(result)
            except Exception:  # committed already: a reporting bug must not stop the committer
                log.exception("commit hook report %r failed", hook.report)

    def _settle(
        self,
        committer: GroupCommitter,
        group: list[Write[Any]],
        outcomes: list[Outcome],
        committed: bool,
    ) -> None:
        try:
            committer.done(group, outcomes, committed)
        except BaseException as exc:  # a bug here: stop rather than leave callers hanging
            self._break(exc)
            raise

    def _run_group(
        self, group: list[Write[Any]], hooks: list[CommitHook]
    ) -> tuple[list[Outcome], list[Any]]:
        conn = self._wconn
        assert conn is not None
        start = time.perf_counter()
        done = run_group(conn, group, self.before_commit, [hook.check for hook in hooks])
        self._count(len(group), time.perf_counter() - start)
        return done

    def _count(self, writes: int, seconds: float) -> None:
        self.stats.groups += 1
        self.stats.works += writes
        self.stats.last_commit_s = seconds
        self.stats.last_commit_at = time.time()

    def _break(self, exc: BaseException) -> None:
        log.critical("the group committer stopped: %r", exc)
        self._broken = exc
        for committer in (self._thread, self._process):
            if committer is None:
                continue
            for write in committer.take_queue():
                if not write.future.done():
                    stopped = DatabaseClosed(f"the group committer stopped: {exc!r}")
                    write.future.set_exception(stopped)

    # -- the writer process --------------------------------------------------------------------

    def _dispatch_process(self, group: list[Write[Any]]) -> None:
        assert self._child is not None and self._process is not None
        runs: list[tuple[Any, list[Any]]] = []
        for write in group:
            if runs and runs[-1][0] is write.batch:
                runs[-1][1].append(write.item)
            else:
                runs.append((write.batch, [write.item]))
        self._group_ids += 1
        self._sent_hooks = list(self.commit_hooks)
        try:
            self._child.send(self._group_ids, runs, [hook.check for hook in self._sent_hooks])
        except TypeError as exc:  # something that does not pickle: a bug, fail this group
            log.error("group of %d writes not sent to the writer process: %s", len(group), exc)
            self._settle(self._process, group, [(False, exc)] * len(group), False)

    def _process_reply(self, reply: Reply) -> None:
        group_id, outcomes, results, seconds = reply
        committer = self._process
        if committer is None or committer.in_flight is None or group_id != self._group_ids:
            log.error("unexpected reply %d from the writer process", group_id)
            return
        group = committer.in_flight
        if isinstance(outcomes, BaseException):
            log.error("group commit of %d writes failed: %s", len(group), outcomes)
            self._settle(committer, group, [(False, outcomes)] * len(group), False)
            return
        hooks = self._sent_hooks  # settling may send the next group, with its own
        self.stats.process_groups += 1
        self._count(len(group), seconds)
        self._settle(committer, group, outcomes, True)
        self._report(hooks, results or [])

    def _process_exit(self, code: int | None) -> None:
        committer, self._process = self._process, None
        if committer is None:
            return
        if not self._closing:
            log.error("the writer process exited (%s): the thread writes its batches now", code)
            if time.monotonic() - self._child_since >= RESPAWN_RESET_S:
                self._respawns = 0
            self._respawn_later()
        # The queued writes first: settling the lost group would otherwise start the next.
        queued = committer.take_queue()
        lost = committer.in_flight
        if lost is not None:  # its COMMIT may or may not have happened: the callers retry
            gone = DatabaseClosed(f"the writer process exited ({code}) during this commit")
            self._settle(committer, lost, [(False, gone)] * len(lost), False)
        for write in queued:
            if write.future.done():
                continue
            if self._thread is None or self._broken is not None or self._closing:
                write.future.set_exception(DatabaseClosed(f"the writer process exited ({code})"))
            else:
                self._thread.add(write)

    def _respawn_later(self) -> None:
        """Start a new writer process after a delay that grows while children keep dying
        (a fault that kills every child must not turn into a fork loop)."""
        if self._closing or self._broken is not None or self._loop is None:
            return
        delay = self._respawn_delays[min(self._respawns, len(self._respawn_delays) - 1)]
        self._respawns += 1
        self._respawn = self._loop.create_task(self._respawn_after(delay))

    async def _respawn_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if self._closing or self._broken is not None:
            return
        await self._start_process()
        if self._process is None:
            self._respawn_later()
        elif self._child is not None:
            log.warning("writer process %d started: it writes the batches again", self._child.pid)

    # -- closing -------------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """What the database occupies on disk now: main file, WAL and shared-memory index."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    async def close(self) -> None:
        """Commit what is queued, stop the writer process, checkpoint the WAL, close."""
        if self._thread is None:
            self._writer.shutdown()
            self._reader.shutdown()
            return
        if not self._closing:
            if self._broken is not None:
                log.error("the group committer had stopped: queued writes were dropped")
            else:
                # Until nothing is queued or committing: a caller resumed by one flush may
                # have written again.
                await self.flush()
                while not self._thread.idle or (self._process and not self._process.idle):
                    await self.flush()
            self._closing = True
            self._thread.cancel_timer()
            if self._respawn is not None:
                self._respawn.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._respawn
            if self._child is not None:
                await self._child.close()
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

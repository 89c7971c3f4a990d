"""One SQLite database in WAL mode, written through a group committer off the event loop.

Every write is a small function of a connection (`transact(work)`). Works that arrive close
together run in one transaction on the single writer thread, each inside its own savepoint (a
failing work rolls back alone), and every caller's future resolves only after the COMMIT that
contains its work has returned: with `synchronous=FULL` that means the WAL has been fsynced.
Reads run on a second connection in their own thread, so the event loop never blocks on disk.

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

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]

log = logging.getLogger(__name__)


class DatabaseClosed(RuntimeError):
    """A write was submitted after `close()` started."""


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
    works: int = 0
    last_commit_s: float = 0.0  # duration of the latest group, BEGIN to COMMIT
    last_commit_at: float = 0.0  # time.time() of the latest commit


class Database:
    """The gateway's SQLite file: `transact` (group-committed writes) and `read`."""

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
        self._queue: list[tuple[Work[Any], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
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
        self._task = asyncio.create_task(self._commit_loop(), name="db-group-commit")

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    def transact(self, work: Work[T]) -> asyncio.Future[T]:
        """Run `work` in the next group transaction; the future resolves after its COMMIT."""
        if self._closing or self._task is None:
            raise DatabaseClosed("the database is closed or closing")
        if self._task.done():  # never leave a caller waiting for a commit that cannot come
            raise DatabaseClosed("the group committer has stopped")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        self._wake.set()
        return future

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

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            if self._window > 0 and len(self._queue) < self._max_group:
                # Let the writes that arrive within a few ms share this group's fsync.
                await asyncio.sleep(self._window)
            group = self._queue[: self._max_group]
            del self._queue[: self._max_group]
            if self._queue:
                self._wake.set()
            try:
                outcomes = await loop.run_in_executor(self._writer, self._run_group, group)
            except Exception as exc:  # noqa: BLE001 -- COMMIT failed (disk full, I/O error)
                log.error("group commit of %d writes failed: %s", len(group), exc)
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                if future.done():  # the caller gave up waiting; the work committed anyway
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            for callback in self.after_commit:
                try:
                    callback()
                except Exception:  # a listener's bug must not stop the committer
                    log.exception("after-commit callback %r failed", callback)

    def _run_group(self, group: list[tuple[Work[Any], asyncio.Future[Any]]]) -> list[Any]:
        conn = self._wconn
        assert conn is not None
        start = time.perf_counter()
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for work, _ in group:
                conn.execute("SAVEPOINT work")
                try:
                    value = work(conn)
                except Exception as exc:  # noqa: BLE001 -- handed to that work's caller
                    conn.execute("ROLLBACK TO work")
                    conn.execute("RELEASE work")
                    outcomes.append((False, exc))
                else:
                    conn.execute("RELEASE work")
                    outcomes.append((True, value))
            for hook in self.before_commit:
                hook(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.stats.groups += 1
        self.stats.works += len(group)
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
        if self._task is None:
            self._writer.shutdown()
            self._reader.shutdown()
            return
        if not self._closing:
            if self._task.done():
                log.error("the group committer had stopped; %d writes dropped", len(self._queue))
            else:
                await self.flush()
            self._closing = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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

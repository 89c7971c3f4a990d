"""Group commit, both halves: forming groups on the event loop, running one in a transaction.

`GroupCommitter` (event loop side): writes queue up; a group starts once its oldest write has
waited the window (or at once when it is full), one group at a time is committing, and every
caller's future resolves only when the group's COMMIT has returned. How a group is committed
is left to a `dispatch` function: on the database's writer thread, or in its writer process
(gateway/store/writer.py).

`run_group` (transaction side, on the writer thread or in the writer process): one
transaction for the whole group. A failing write rolls back alone: each `transact` work, and
each run of consecutive items of one `Batch`, runs in its own savepoint, except the first of
the transaction, for which the transaction itself is started again (a savepoint costs two
statements, and statements are what the writer pays for; see gateway/store/db.py). A batch run
that fails is rolled back and its items are run again one by one, so only the faulty one fails.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]
Item_contra = TypeVar("Item_contra", contravariant=True)
Result_co = TypeVar("Result_co", covariant=True)
Outcome = tuple[bool, Any]  # (True, result) or (False, the exception for that caller)

log = logging.getLogger(__name__)


class Batch(Protocol[Item_contra, Result_co]):
    """Writes of one kind that the group committer runs many at a time.

    `run` gets the items of consecutive `Database.submit` calls in submission order, inside
    the group transaction, and returns one result per item, in the same order. It should use
    a fixed number of statements whatever the number of items. If it raises, its changes are
    rolled back and the items are run again one at a time, so the exception reaches only the
    callers whose items raise on their own.

    A batch whose class sets `writer_process = True` may be run in the database's writer
    process: it must then pickle (usually through `__reduce__`, to a copy holding only what
    `run` needs), and so must its items and results.
    """

    def run(
        self, conn: sqlite3.Connection, items: Sequence[Item_contra]
    ) -> Sequence[Result_co]: ...


@dataclass(frozen=True, slots=True)
class CommitHook:
    """Work for the end of every group transaction, on whichever writer commits it.

    `check` runs inside the transaction, after the group's writes and before COMMIT (the
    store's size bound evicts there, so the commit that would cross it does not): it must
    pickle when the database has a writer process. `report` gets its result on the event
    loop once that transaction has committed (the logs and metrics of what `check` did).
    """

    check: Callable[[sqlite3.Connection], Any]
    report: Callable[[Any], None]


@dataclass(slots=True)
class Write(Generic[T]):
    """One queued write: a work, or an item for a batch."""

    future: asyncio.Future[T]
    work: Work[T] | None = None
    batch: Batch[Any, T] | None = None
    item: Any = None


class GroupCommitter:
    """One queue of writes, committed in groups by `dispatch`, which must later call `done`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window_s: float,
        max_group: int,
        dispatch: Callable[[list[Write[Any]]], None],
        committed: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.window_s = window_s
        self.max_group = max(1, max_group)
        self.dispatch = dispatch
        self.committed = committed  # called on the loop after each group that committed
        self.queue: list[Write[Any]] = []  # waiting for the next group
        self.in_flight: list[Write[Any]] | None = None  # the group being committed
        self._queued_at = 0.0  # loop time when the oldest queued write arrived
        self._timer: asyncio.TimerHandle | None = None
        self._drained: list[asyncio.Future[None]] = []

    @property
    def idle(self) -> bool:
        return not self.queue and self.in_flight is None

    def add(self, write: Write[Any]) -> None:
        if not self.queue:
            self._queued_at = self.loop.time()
        self.queue.append(write)
        if self.in_flight is None:
            if len(self.queue) >= self.max_group:
                self.start()
            elif self._timer is None:
                self._schedule()

    def _schedule(self) -> None:
        """Start the next group once its oldest write has waited the window for company.

        After a commit, the writes that arrived meanwhile have usually waited that long
        already and go at once; to an idle committer a lone write waits the window (a few ms)
        so that the writes arriving close behind it share its fsync.
        """
        delay = self._queued_at + self.window_s - self.loop.time()
        if delay <= 0 or len(self.queue) >= self.max_group:
            self.start()
        else:
            self._timer = self.loop.call_later(delay, self.start)

    def start(self) -> None:
        self.cancel_timer()
        if self.in_flight is not None or not self.queue:
            return
        group = self.queue[: self.max_group]
        del self.queue[: self.max_group]  # any left over have waited long enough already
        self.in_flight = group
        self.dispatch(group)

    def done(self, group: list[Write[Any]], outcomes: Sequence[Outcome], committed: bool) -> None:
        """The group's transaction is over: resolve its callers, start the next group."""
        assert group is self.in_flight
        self.in_flight = None
        if self.queue:  # keep the writer busy while this group's callers resume
            self._schedule()
        for write, (ok, value) in zip(group, outcomes, strict=True):
            if write.future.done():  # the caller gave up waiting; it committed anyway
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)
        if committed:
            self.committed()
        if self.idle:
            for waiter in self._drained:
                if not waiter.done():
                    waiter.set_result(None)
            self._drained.clear()

    async def drained(self) -> None:
        """Return once nothing is queued or committing."""
        if self.idle:
            return
        waiter = self.loop.create_future()
        self._drained.append(waiter)
        await waiter

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def take_queue(self) -> list[Write[Any]]:
        """Hand the queued (not yet dispatched) writes over to another committer."""
        self.cancel_timer()
        queued, self.queue = self.queue, []
        return queued


def run_group(
    conn: sqlite3.Connection,
    group: Sequence[Write[Any]],
    before_commit: Sequence[Callable[[sqlite3.Connection], None]] = (),
    checks: Sequence[Callable[[sqlite3.Connection], Any]] = (),
) -> tuple[list[Outcome], list[Any]]:
    """One transaction for the group: its outcomes and the `checks`' results, in order.

    Raises if BEGIN, a check or COMMIT fails (then nothing is committed)."""

    def write_all() -> list[Outcome]:
        outcomes: list[Outcome] = []
        i = 0
        while i < len(group):
            first = i == 0
            batch = group[i].batch
            if batch is None:
                work = group[i].work
                assert work is not None
                outcomes.append(attempt(conn, work, first))
                i += 1
                continue
            end = i + 1
            while end < len(group) and group[end].batch is batch:
                end += 1
            outcomes.extend(run_batch(conn, batch, [w.item for w in group[i:end]], first))
            i = end
        for hook in before_commit:
            hook(conn)
        return outcomes

    return _transaction(conn, write_all, checks)


def run_batches(
    conn: sqlite3.Connection,
    runs: Sequence[tuple[Batch[Any, Any], list[Any]]],
    checks: Sequence[Callable[[sqlite3.Connection], Any]] = (),
) -> tuple[list[Outcome], list[Any]]:
    """`run_group` for a group of batch items only, as (batch, items) runs (the writer
    process gets them so: a batch pickled once per run, not once per item)."""

    def write_all() -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index, (batch, items) in enumerate(runs):
            outcomes.extend(run_batch(conn, batch, items, first=index == 0))
        return outcomes

    return _transaction(conn, write_all, checks)


def _transaction(
    conn: sqlite3.Connection,
    write_all: Callable[[], list[Outcome]],
    checks: Sequence[Callable[[sqlite3.Connection], Any]],
) -> tuple[list[Outcome], list[Any]]:
    """BEGIN, the writes, the checks, COMMIT; all rolled back if any of it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes = write_all()
        results = [check(conn) for check in checks]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes, results


def attempt(conn: sqlite3.Connection, work: Work[Any], first: bool) -> Outcome:
    """Run one write so that, if it fails, its changes alone are undone."""
    if not first:
        return in_savepoint(conn, work)
    try:
        return (True, work(conn))
    except Exception as exc:  # noqa: BLE001 -- handed to that write's caller
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        return (False, exc)


def in_savepoint(conn: sqlite3.Connection, work: Work[Any]) -> Outcome:
    conn.execute("SAVEPOINT work")
    try:
        value = work(conn)
    except Exception as exc:  # noqa: BLE001 -- handed to that write's caller
        conn.execute("ROLLBACK TO work")
        conn.execute("RELEASE work")
        return (False, exc)
    conn.execute("RELEASE work")
    return (True, value)


def run_batch(
    conn: sqlite3.Connection, batch: Batch[Any, Any], items: list[Any], first: bool
) -> list[Outcome]:
    def run_all(c: sqlite3.Connection) -> list[Any]:
        results = list(batch.run(c, items))
        if len(results) != len(items):
            raise RuntimeError(f"{batch!r} returned {len(results)} results for {len(items)}")
        return results

    ok, value = attempt(conn, run_all, first)
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

        outcomes.append(in_savepoint(conn, alone))
    return outcomes

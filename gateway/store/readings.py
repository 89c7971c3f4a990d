"""Durable, bounded store of readings with per-sink delivery tracking.

Tables:
- `readings`: one row per reading, `seq` in commit order (so "in order per node" is "by seq"),
  `reading_id` unique (a resend after a crash is ignored, not an error), `open` is 1 while
  some sink still has to take it (or parked it) and 0 once every sink has it.
- `pending(sink, seq)`: the outbox of each sink; a row disappears when the sink delivers.
- `parked(sink, seq, reason)`: poison readings a sink rejected; they leave the outbox at once
  so they never block it, and stay listed for the operator.
- `counters`: totals that must survive restarts (evictions by class).

Bound: when the pages in use pass the budget, whole rows are evicted in this order, oldest
first within each class: readings every sink already has ("delivered"), then undelivered
routine readings, then undelivered alarms. Every eviction is counted (metrics and `counters`)
and undelivered ones are logged as warnings.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.records import Reading
from gateway.store.db import CommitHook, Database

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    reading_id TEXT NOT NULL UNIQUE,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    received_at REAL NOT NULL,
    age_s INTEGER NOT NULL,
    alarm INTEGER NOT NULL,
    open INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_node ON readings(node_id, seq);
CREATE INDEX IF NOT EXISTS readings_alarm ON readings(alarm, seq);
CREATE INDEX IF NOT EXISTS readings_open ON readings(open, seq);
CREATE TABLE IF NOT EXISTS pending(
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY(sink, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_seq ON pending(seq);
CREATE TABLE IF NOT EXISTS parked(
    seq INTEGER NOT NULL,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    parked_at REAL NOT NULL,
    PRIMARY KEY(seq, sink)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters(
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

EVICTION_CLASSES = ("delivered", "routine", "alarm")
Eviction = tuple[str, int, int, int]  # class, readings evicted, first and last seq
_READING_COLUMNS = "reading_id, node_id, kind, received_at, age_s, data, alarm"
# Set-based writes for `Store.add_in`: rows come from one JSON array parameter. A reading's
# data is a JSON object inside that array, and json_extract returns it as compact JSON text,
# exactly as json.dumps(data, separators=(",", ":"), sort_keys=True) writes it.
_STORED_AMONG = (
    "SELECT reading_id FROM readings WHERE reading_id IN (SELECT value FROM json_each(?))"
)
_INSERT_READINGS = (
    "INSERT INTO readings(reading_id, node_id, kind, received_at, age_s, alarm, open, data)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), ?1, json_extract(value, '$[6]')"
    " FROM json_each(?2) ORDER BY key"
)
_FILL_OUTBOXES = (
    "INSERT INTO pending(sink, seq) SELECT s.value, r.seq FROM json_each(?1) AS s, readings AS r"
    " WHERE r.seq >= ?2"
)


@dataclass(frozen=True, slots=True)
class Parked:
    sink: str
    reading: Reading
    reason: str
    parked_at: float


@dataclass
class StoreStats:
    readings: int
    alarms: int
    pending: dict[str, int]  # per sink
    parked: dict[str, int]  # per sink
    oldest_pending_at: dict[str, float | None]  # received_at of each sink's next reading
    evicted: dict[str, int]  # per class, since the database was created
    used_bytes: int
    disk_bytes: int
    max_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """How the configured bound on disk use is shared out.

    The file on disk is the main database, its WAL and the WAL's shared-memory index. The
    WAL is checkpointed at a quarter of its share (and truncated back to that), leaving the
    rest for the transaction that crosses the mark. The main file only grows when the pages
    in use outgrow it, so eviction starts `headroom` below its share: room for the pages one
    commit group adds before the next eviction runs.
    """

    max_bytes: int
    wal_bytes: int
    headroom: int
    evict_above: int  # pages in use, in bytes, that trigger eviction
    evict_to: int  # eviction stops here (a few % lower, so it does not run on every commit)

    @property
    def wal_checkpoint_pages(self) -> int:
        return max(16, self.wal_bytes // 4 // 4096)

    @property
    def journal_size_limit(self) -> int:
        return self.wal_bytes // 4


def budget(max_bytes: int) -> Budget:
    wal = min(max(max_bytes // 4, 1024 * 1024), 64 * 1024 * 1024)
    headroom = min(max(max_bytes // 16, 256 * 1024), 4 * 1024 * 1024)
    shm = 128 * 1024
    above = max(max_bytes - wal - shm - headroom, 64 * 1024)
    return Budget(max_bytes, wal, headroom, above, int(above * 0.97))


def database_for(path: Path, max_bytes: int, **options: Any) -> Database:
    """A Database whose WAL checkpointing fits the bound `max_bytes`."""
    b = budget(max_bytes)
    return Database(
        path,
        wal_autocheckpoint=b.wal_checkpoint_pages,
        journal_size_limit=b.journal_size_limit,
        **options,
    )


def _row_to_reading(row: Sequence[Any]) -> Reading:
    reading_id, node_id, kind, received_at, age_s, data, alarm = row
    return Reading(
        reading_id=reading_id,
        node_id=node_id,
        kind=kind,
        received_at=received_at,
        age_s=age_s,
        data=json.loads(data),
        alarm=bool(alarm),
    )


class Store:
    """Readings: durable add, per-sink outbox, delivery marks, parking, bounded size."""

    def __init__(
        self,
        db: Database,
        sinks: Sequence[str],
        max_bytes: int,
        on_evicted: Callable[[str, int], None] | None = None,
    ) -> None:
        self.db = db
        self.sinks = tuple(sinks)
        self.max_bytes = max_bytes
        self.budget = budget(max_bytes)
        self._on_evicted = on_evicted
        db.commit_hooks.append(CommitHook(Evictor(self.budget), self._report_evictions))

    async def reconcile_sinks(self) -> None:
        """Forget the outbox of sinks no longer configured, so they hold nothing back."""
        sinks = self.sinks

        def work(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            marks = ",".join("?" * len(sinks)) or "''"
            stale = conn.execute(
                f"SELECT sink, COUNT(*) FROM pending WHERE sink NOT IN ({marks}) GROUP BY sink",
                sinks,
            ).fetchall()
            if stale:
                conn.execute(f"DELETE FROM pending WHERE sink NOT IN ({marks})", sinks)
                conn.execute(
                    "UPDATE readings SET open = 0 WHERE open = 1 AND NOT EXISTS "
                    "(SELECT 1 FROM pending p WHERE p.seq = readings.seq) AND NOT EXISTS "
                    "(SELECT 1 FROM parked k WHERE k.seq = readings.seq)"
                )
            return [(str(s), int(n)) for s, n in stale]

        for sink, count in await self.db.transact(work):
            log.warning("sink %r is no longer configured: dropped its outbox of %d", sink, count)

    # -- writes (the *_in functions run inside a group transaction on the writer thread) ----

    def add_in(self, conn: sqlite3.Connection, readings: Iterable[Reading]) -> list[bool]:
        """Insert readings; for each, whether it was new (see `add_readings_in`)."""
        return add_readings_in(conn, self.sinks, readings)

    async def add(self, readings: Sequence[Reading]) -> int:
        """Store readings durably; returns how many were new once their group has committed."""
        fresh = await self.db.transact(lambda conn: self.add_in(conn, readings))
        return sum(fresh)

    async def mark_delivered(self, sink: str, reading_ids: Iterable[str]) -> int:
        ids = list(reading_ids)

        def work(conn: sqlite3.Connection) -> int:
            done = 0
            for rid in ids:
                row = conn.execute(
                    "SELECT seq FROM readings WHERE reading_id = ?", (rid,)
                ).fetchone()
                if row is None:
                    continue
                cursor = conn.execute(
                    "DELETE FROM pending WHERE sink = ? AND seq = ?", (sink, row[0])
                )
                done += cursor.rowcount
                _close_if_done(conn, row[0])
            return done

        return await self.db.transact(work)

    async def park(self, sink: str, reasons: Mapping[str, str], at: float) -> int:
        """Take rejected readings out of `sink`'s outbox for good, keeping the reason."""
        items = list(reasons.items())

        def work(conn: sqlite3.Connection) -> int:
            parked = 0
            for rid, reason in items:
                row = conn.execute(
                    "SELECT seq FROM readings WHERE reading_id = ?", (rid,)
                ).fetchone()
                if row is None:
                    continue
                cursor = conn.execute(
                    "DELETE FROM pending WHERE sink = ? AND seq = ?", (sink, row[0])
                )
                if cursor.rowcount:
                    conn.execute(
                        "INSERT OR REPLACE INTO parked(seq, sink, reason, parked_at)"
                        " VALUES (?, ?, ?, ?)",
                        (row[0], sink, reason[:500], at),
                    )
                    parked += 1
            return parked

        return await self.db.transact(work)

    # -- reads ---------------------------------------------------------------------------------

    async def outbox(self, sink: str, limit: int) -> list[Reading]:
        """The oldest readings `sink` has yet to take, in commit order (so in order per node)."""

        def work(conn: sqlite3.Connection) -> list[Reading]:
            rows = conn.execute(
                f"SELECT {_READING_COLUMNS} FROM pending p JOIN readings r ON r.seq = p.seq"
                " WHERE p.sink = ? ORDER BY p.seq LIMIT ?",
                (sink, limit),
            ).fetchall()
            return [_row_to_reading(row) for row in rows]

        return await self.db.read(work)

    async def recent(self, node_id: str, limit: int = 100) -> list[Reading]:
        """A node's latest readings, newest first (for the web page's chart)."""

        def work(conn: sqlite3.Connection) -> list[Reading]:
            rows = conn.execute(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE node_id = ?"
                " ORDER BY seq DESC LIMIT ?",
                (node_id, limit),
            ).fetchall()
            return [_row_to_reading(row) for row in rows]

        return await self.db.read(work)

    async def all_ids(self) -> list[str]:
        """Every stored reading id in commit order (tests and diagnostics)."""
        return await self.db.read(
            lambda conn: [
                r[0] for r in conn.execute("SELECT reading_id FROM readings ORDER BY seq")
            ]
        )

    async def parked(self, sink: str | None = None, limit: int = 100) -> list[Parked]:
        def work(conn: sqlite3.Connection) -> list[Parked]:
            where, args = ("WHERE k.sink = ?", (sink, limit)) if sink else ("", (limit,))
            rows = conn.execute(
                f"SELECT k.sink, k.reason, k.parked_at, {_READING_COLUMNS} FROM parked k"
                f" JOIN readings r ON r.seq = k.seq {where} ORDER BY k.parked_at DESC LIMIT ?",
                args,
            ).fetchall()
            return [Parked(row[0], _row_to_reading(row[3:]), row[1], row[2]) for row in rows]

        return await self.db.read(work)

    async def stats(self) -> StoreStats:
        sinks = self.sinks

        def work(conn: sqlite3.Connection) -> StoreStats:
            readings, alarms = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(alarm), 0) FROM readings"
            ).fetchone()
            pending = dict.fromkeys(sinks, 0)
            pending.update(conn.execute("SELECT sink, COUNT(*) FROM pending GROUP BY sink"))
            parked = dict.fromkeys(sinks, 0)
            parked.update(conn.execute("SELECT sink, COUNT(*) FROM parked GROUP BY sink"))
            oldest: dict[str, float | None] = {}
            for sink in sinks:
                row = conn.execute(
                    "SELECT r.received_at FROM pending p JOIN readings r ON r.seq = p.seq"
                    " WHERE p.sink = ? ORDER BY p.seq LIMIT 1",
                    (sink,),
                ).fetchone()
                oldest[sink] = row[0] if row else None
            return StoreStats(
                readings=readings,
                alarms=alarms,
                pending=pending,
                parked=parked,
                oldest_pending_at=oldest,
                evicted=_evicted_totals(conn),
                used_bytes=_used_bytes(conn),
                disk_bytes=self.db.disk_bytes(),
                max_bytes=self.max_bytes,
            )

        return await self.db.read(work)

    # -- the bound -----------------------------------------------------------------------------

    def _report_evictions(self, evictions: list[Eviction]) -> None:
        """On the loop, once the commit that evicted them has returned."""
        for cls, count, first, last in evictions:
            level = logging.INFO if cls == "delivered" else logging.WARNING
            log.log(
                level,
                "store full: evicted %d %s readings (seq %d..%d) to stay under %d bytes",
                count,
                cls,
                first,
                last,
                self.max_bytes,
                extra={"evicted": count, "class": cls},
            )
            if self._on_evicted is not None:
                self._on_evicted(cls, count)


@dataclass(frozen=True)
class Evictor:
    """Before each commit, on whichever writer commits it (a `CommitHook` check, so it
    pickles: the budget is all it holds): if over budget, evict a few % below it
    (hysteresis); returns what it evicted, for `Store._report_evictions`."""

    budget: Budget

    def __call__(self, conn: sqlite3.Connection) -> list[Eviction]:
        used = _used_bytes(conn)
        if used <= self.budget.evict_above:
            return []
        target = self.budget.evict_to
        total = conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        chunk = max(16, total // 200)
        evicted = dict.fromkeys(EVICTION_CLASSES, 0)
        ranges: dict[str, list[int]] = {}
        while used > target:
            victims = _oldest_evictable(conn, chunk)
            if victims is None:
                log.error("store over budget (%d bytes used) with no reading left to evict", used)
                break
            cls, seqs = victims
            _delete(conn, seqs)
            evicted[cls] += len(seqs)
            span = ranges.setdefault(cls, [seqs[0], seqs[-1]])
            span[0], span[1] = min(span[0], seqs[0]), max(span[1], seqs[-1])
            used = _used_bytes(conn)
        done: list[Eviction] = []
        for cls, count in evicted.items():
            if not count:
                continue
            conn.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (f"evicted_{cls}", count),
            )
            first, last = ranges[cls]
            done.append((cls, count, first, last))
        return done


def _used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of pages holding data: free pages are reused before the file grows.

    One statement, as it runs before every commit (see gateway/store/db.py on why the writer
    counts statements)."""
    (used,) = conn.execute(
        "SELECT (p.page_count - f.freelist_count) * s.page_size"
        " FROM pragma_page_count() AS p, pragma_freelist_count() AS f, pragma_page_size() AS s"
    ).fetchone()
    return int(used)


_EVICTION_ORDER = (("delivered", "open = 0"), ("routine", "alarm = 0"), ("alarm", "1"))


def _oldest_evictable(conn: sqlite3.Connection, chunk: int) -> tuple[str, list[int]] | None:
    """The first non-empty class in eviction order, and up to `chunk` of its oldest seqs."""
    for cls, where in _EVICTION_ORDER:
        sql = f"SELECT seq FROM readings WHERE {where} ORDER BY seq LIMIT ?"
        seqs = [row[0] for row in conn.execute(sql, (chunk,))]
        if seqs:
            return cls, seqs
    return None


def _evicted_totals(conn: sqlite3.Connection) -> dict[str, int]:
    totals = dict.fromkeys(EVICTION_CLASSES, 0)
    for name, value in conn.execute("SELECT name, value FROM counters WHERE name LIKE 'evicted_%'"):
        totals[name.removeprefix("evicted_")] = value
    return totals


def _delete(conn: sqlite3.Connection, seqs: list[int]) -> None:
    rows = [(s,) for s in seqs]
    conn.executemany("DELETE FROM pending WHERE seq = ?", rows)
    conn.executemany("DELETE FROM parked WHERE seq = ?", rows)
    conn.executemany("DELETE FROM readings WHERE seq = ?", rows)


def _close_if_done(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute(
        "UPDATE readings SET open = 0 WHERE seq = ? AND NOT EXISTS"
        " (SELECT 1 FROM pending WHERE seq = ?)"
        " AND NOT EXISTS (SELECT 1 FROM parked WHERE seq = ?)",
        (seq, seq, seq),
    )


def add_readings_in(
    conn: sqlite3.Connection, sinks: Sequence[str], readings: Iterable[Reading]
) -> list[bool]:
    """Insert readings; for each, whether it was new (a duplicate id is ignored).

    Set-based, for a whole commit group's readings at once (the pipeline's batch): one
    statement inserts them and one fills the sinks' outboxes. A reading id already stored
    (a resend) makes the insert fail as a whole, which undoes it; only then are the stored
    ids looked up and the new readings inserted alone. Each reading's data is serialised
    once, inside the one JSON document the insert reads its rows from.
    """
    readings = list(readings)
    rows: dict[str, tuple[Any, ...]] = {}  # by id: the same id twice, the first one counts
    fresh = []
    for r in readings:
        fresh.append(r.reading_id not in rows)
        if fresh[-1]:
            rows[r.reading_id] = (
                r.reading_id, r.node_id, r.kind, r.received_at, r.age_s, r.alarm, r.data
            )  # fmt: skip
    try:
        _insert(conn, sinks, list(rows.values()))
    except sqlite3.IntegrityError:  # some were stored before: this is the rare path
        ids = json.dumps(list(rows))
        stored = {row[0] for row in conn.execute(_STORED_AMONG, (ids,))}
        _insert(conn, sinks, [row for rid, row in rows.items() if rid not in stored])
        seen = set(stored)
        fresh = []
        for r in readings:
            fresh.append(r.reading_id not in seen)
            seen.add(r.reading_id)
    return fresh


def _insert(conn: sqlite3.Connection, sinks: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    document = json.dumps(rows, separators=(",", ":"), sort_keys=True, allow_nan=False)
    cursor = conn.execute(_INSERT_READINGS, (1 if sinks else 0, document))
    if sinks:
        # One statement, no conflict: AUTOINCREMENT gave the rows consecutive seqs, the
        # highest being the last insert's rowid.
        assert cursor.lastrowid is not None
        first_seq = cursor.lastrowid - len(rows) + 1
        conn.execute(_FILL_OUTBOXES, (json.dumps(sinks), first_seq))

"""Alarms as field staff see them: episodes raised by nodes, acknowledged on the page.

Nodes send `alarm` records (protocol.schema): `active` true when a condition starts (and again
as a reminder while nobody acknowledged it), false when it clears. Here each (node, alarm)
has episodes: the first active record opens one, reminders update it, an inactive record
closes it (the condition cleared), and the next active record opens a new one. An episode is
*open* until someone acknowledges it with a comment, even once cleared: somebody should look.

The episodes are derived from the stored readings by `sync()`, which follows a cursor over the
readings' commit order inside one transaction (cursor and episodes move together), so it is
idempotent, survives a crash at any point and catches up at start.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS web_alarms(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL,
    alarm TEXT NOT NULL,
    active INTEGER NOT NULL,
    value INTEGER,
    raised_at REAL NOT NULL,
    last_at REAL NOT NULL,
    cleared_at REAL,
    reports INTEGER NOT NULL DEFAULT 1,
    acked_at REAL,
    acked_by TEXT,
    comment TEXT,
    downlink_id INTEGER
);
CREATE INDEX IF NOT EXISTS web_alarms_node ON web_alarms(node_id, alarm, id);
CREATE INDEX IF NOT EXISTS web_alarms_open ON web_alarms(acked_at, id);
CREATE TABLE IF NOT EXISTS web_cursor(
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

BATCH = 1000  # alarm readings folded per transaction
KEEP_EPISODES = 5000  # acknowledged episodes kept for the page; open ones are never dropped
_COLUMNS = (
    "id, node_id, alarm, active, value, raised_at, last_at, cleared_at, reports, acked_at,"
    " acked_by, comment, downlink_id"
)


@dataclass(frozen=True, slots=True)
class Episode:
    id: int
    node_id: str
    alarm: str
    active: bool
    value: int | None
    raised_at: float
    last_at: float
    cleared_at: float | None
    reports: int
    acked_at: float | None
    acked_by: str | None
    comment: str | None
    downlink_id: int | None

    @property
    def open(self) -> bool:
        return self.acked_at is None


def _episode(row: Sequence[Any]) -> Episode:
    values = list(row)
    values[3] = bool(values[3])
    return Episode(*values)


def fold_in(conn: sqlite3.Connection) -> list[str]:
    """Fold alarm readings committed since the cursor into episodes; the nodes touched."""
    row = conn.execute("SELECT value FROM web_cursor WHERE name = 'alarms'").fetchone()
    cursor = int(row[0]) if row else 0
    rows = conn.execute(
        "SELECT seq, node_id, received_at - age_s, data FROM readings"
        " WHERE alarm = 1 AND seq > ? AND kind = 'alarm' ORDER BY seq LIMIT ?",
        (cursor, BATCH),
    ).fetchall()
    touched: list[str] = []
    for seq, node_id, at, data in rows:
        cursor = seq
        try:
            message = json.loads(data)
            name = str(message["alarm"])
        except (ValueError, KeyError, TypeError):
            continue  # the schema validated it before it was stored; be safe anyway
        active = message.get("active", True) is not False
        value = message.get("value") if isinstance(message.get("value"), int) else None
        _apply(conn, node_id, name, active=active, value=value, at=float(at))
        touched.append(node_id)
    if rows:
        conn.execute(
            "INSERT INTO web_cursor(name, value) VALUES ('alarms', ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (cursor,),
        )
        _prune(conn)
    return touched


def _apply(
    conn: sqlite3.Connection,
    node_id: str,
    name: str,
    *,
    active: bool,
    value: int | None,
    at: float,
) -> None:
    latest = conn.execute(
        "SELECT id, active FROM web_alarms WHERE node_id = ? AND alarm = ? ORDER BY id DESC"
        " LIMIT 1",
        (node_id, name),
    ).fetchone()
    if active:
        if latest is None or not latest[1]:
            conn.execute(
                "INSERT INTO web_alarms(node_id, alarm, active, value, raised_at, last_at)"
                " VALUES (?, ?, 1, ?, ?, ?)",
                (node_id, name, value, at, at),
            )
        else:
            conn.execute(
                "UPDATE web_alarms SET last_at = MAX(last_at, ?), value = COALESCE(?, value),"
                " reports = reports + 1 WHERE id = ?",
                (at, value, latest[0]),
            )
    elif latest is not None and latest[1]:
        conn.execute(
            "UPDATE web_alarms SET active = 0, cleared_at = ?, last_at = MAX(last_at, ?)"
            " WHERE id = ?",
            (at, at, latest[0]),
        )
    # A clear with no episode open (its raise was evicted or never seen): nothing to show.


def _prune(conn: sqlite3.Connection) -> None:
    conn.execute(
        "DELETE FROM web_alarms WHERE acked_at IS NOT NULL AND active = 0 AND id <= ("
        " SELECT id FROM web_alarms WHERE acked_at IS NOT NULL AND active = 0"
        " ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (KEEP_EPISODES,),
    )


class Alarms:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def sync(self) -> list[str]:
        """Catch up with every alarm reading committed so far; the nodes whose alarms moved."""
        touched: list[str] = []
        while True:
            batch = await self.db.transact(fold_in)
            touched.extend(batch)
            if len(batch) < BATCH:
                return touched

    async def episodes(
        self, open_only: bool = False, node_id: str | None = None, limit: int = 200
    ) -> list[Episode]:
        """Open episodes first (newest first), then acknowledged ones (newest first)."""

        def work(conn: sqlite3.Connection) -> list[Episode]:
            where, args = [], []
            if open_only:
                where.append("acked_at IS NULL")
            if node_id is not None:
                where.append("node_id = ?")
                args.append(node_id)
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM web_alarms {clause}"
                " ORDER BY acked_at IS NOT NULL, id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [_episode(r) for r in rows]

        return await self.db.read(work)

    async def count_open(self) -> int:
        return await self.db.read(
            lambda conn: int(
                conn.execute("SELECT COUNT(*) FROM web_alarms WHERE acked_at IS NULL").fetchone()[0]
            )
        )

    async def get(self, episode_id: int) -> Episode | None:
        def work(conn: sqlite3.Connection) -> Episode | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM web_alarms WHERE id = ?", (episode_id,)
            ).fetchone()
            return _episode(row) if row else None

        return await self.db.read(work)

    async def attention(self) -> dict[str, int]:
        """Per node: episodes that are active or not yet acknowledged (node health 'alarm')."""

        def work(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT node_id, COUNT(*) FROM web_alarms WHERE active = 1 OR acked_at IS NULL"
                " GROUP BY node_id"
            )
            return {str(node): int(count) for node, count in rows}

        return await self.db.read(work)

    async def acknowledge(
        self, episode_id: int, username: str, comment: str, at: float
    ) -> Episode | None:
        """Mark an open episode acknowledged; None if it does not exist or was already."""

        def work(conn: sqlite3.Connection) -> Episode | None:
            cursor = conn.execute(
                "UPDATE web_alarms SET acked_at = ?, acked_by = ?, comment = ?"
                " WHERE id = ? AND acked_at IS NULL",
                (at, username, comment, episode_id),
            )
            if cursor.rowcount == 0:
                return None
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM web_alarms WHERE id = ?", (episode_id,)
            ).fetchone()
            return _episode(row)

        return await self.db.transact(work)

    async def link_downlink(self, episode_id: int, downlink_id: int) -> None:
        await self.db.transact(
            lambda conn: conn.execute(
                "UPDATE web_alarms SET downlink_id = ? WHERE id = ?", (downlink_id, episode_id)
            )
        )

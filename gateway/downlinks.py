"""Downlinks: a durable queue per node of commands and configuration for the node.

Life of a downlink:
  queued    -- accepted (web page action, CLI, another node's presence event)
  sent      -- handed to the link in the response to an uplink (or the node's RX window);
               it stays eligible and goes out again with every response until confirmed,
               because a sleepy node may have missed that response
  confirmed -- the node listed its id in a later uplink (`confirm`), the only proof it acted
  expired   -- not confirmed within its lifetime (`downlinks.expiry_s` unless given)

The pipeline calls `take_in` and `confirm_in` inside the same group transaction that stores
the uplink's readings, so one fsync covers the whole exchange.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.store.db import Database

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS downlinks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL,
    command TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    state TEXT NOT NULL,
    sent_at REAL,
    confirmed_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS downlinks_node ON downlinks(node_id, state, id);
CREATE INDEX IF NOT EXISTS downlinks_open ON downlinks(state, expires_at);
"""

STATES = ("queued", "sent", "confirmed", "expired")
KEEP_FINISHED_S = 7 * 86400  # confirmed/expired downlinks stay visible this long
_COLUMNS = (
    "id, node_id, command, origin, created_at, expires_at, state, sent_at, confirmed_at, attempts"
)


@dataclass(frozen=True, slots=True)
class Downlink:
    id: int
    node_id: str
    command: Mapping[str, Any]  # what the link encodes for the node (protocol schema)
    origin: str  # who asked for it, for the audit trail
    created_at: float
    expires_at: float
    state: str
    sent_at: float | None
    confirmed_at: float | None
    attempts: int


def _downlink(row: Sequence[Any]) -> Downlink:
    values = list(row)
    values[2] = json.loads(values[2])
    return Downlink(*values)


class Downlinks:
    def __init__(
        self, db: Database, expiry_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.expiry_s = expiry_s
        self.clock = clock
        # Called on the loop with each downlink whose state changed (web page, metrics, and
        # links that can push at once to nodes that always listen).
        self.listeners: list[Callable[[Downlink], None]] = []

    def notify(self, downlinks: Iterable[Downlink]) -> None:
        for downlink in downlinks:
            for listener in self.listeners:
                try:
                    listener(downlink)
                except Exception:  # the state change is committed; report, do not fail it
                    log.exception("downlink listener %r failed", listener)

    async def enqueue(
        self,
        node_id: str,
        command: Mapping[str, Any],
        ttl_s: float | None = None,
        origin: str = "",
    ) -> Downlink:
        now = self.clock()
        expires = now + (self.expiry_s if ttl_s is None else ttl_s)
        body = json.dumps(dict(command), separators=(",", ":"), sort_keys=True)

        def work(conn: sqlite3.Connection) -> Downlink:
            cursor = conn.execute(
                "INSERT INTO downlinks(node_id, command, origin, created_at, expires_at, state)"
                " VALUES (?, ?, ?, ?, ?, 'queued')",
                (node_id, body, origin, now, expires),
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM downlinks WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
            return _downlink(row)

        downlink = await self.db.transact(work)
        self.notify([downlink])
        return downlink

    def take_in(
        self, conn: sqlite3.Connection, node_id: str, now: float, limit: int = 8
    ) -> list[Downlink]:
        """The node's unconfirmed, unexpired downlinks (oldest first), now marked sent."""
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM downlinks WHERE node_id = ? AND state IN ('queued', 'sent')"
            " AND expires_at > ? ORDER BY id LIMIT ?",
            (node_id, now, limit),
        ).fetchall()
        taken = []
        for row in rows:
            conn.execute(
                "UPDATE downlinks SET state = 'sent', sent_at = ?, attempts = attempts + 1"
                " WHERE id = ?",
                (now, row[0]),
            )
            d = _downlink(row)
            taken.append(replace(d, state="sent", sent_at=now, attempts=d.attempts + 1))
        return taken

    def confirm_in(
        self, conn: sqlite3.Connection, node_id: str, ids: Iterable[int], now: float
    ) -> list[Downlink]:
        """Confirm the node's own sent downlinks among `ids`; others' ids are ignored."""
        confirmed = []
        for downlink_id in ids:
            cursor = conn.execute(
                "UPDATE downlinks SET state = 'confirmed', confirmed_at = ?"
                " WHERE id = ? AND node_id = ? AND state = 'sent'",
                (now, downlink_id, node_id),
            )
            if cursor.rowcount:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM downlinks WHERE id = ?", (downlink_id,)
                ).fetchone()
                confirmed.append(_downlink(row))
        return confirmed

    async def take(self, node_id: str, limit: int = 8) -> list[Downlink]:
        now = self.clock()
        taken = await self.db.transact(lambda conn: self.take_in(conn, node_id, now, limit))
        self.notify(taken)
        return taken

    async def confirm(self, node_id: str, ids: Iterable[int]) -> list[Downlink]:
        """The confirmation hook: the node's uplink listed these downlink ids as applied."""
        now, wanted = self.clock(), list(ids)
        confirmed = await self.db.transact(lambda conn: self.confirm_in(conn, node_id, wanted, now))
        self.notify(confirmed)
        return confirmed

    async def expire(self) -> list[Downlink]:
        """Mark overdue downlinks expired and forget long-finished ones."""
        now = self.clock()

        def work(conn: sqlite3.Connection) -> list[Downlink]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM downlinks WHERE state IN ('queued', 'sent')"
                " AND expires_at <= ?",
                (now,),
            ).fetchall()
            conn.executemany(
                "UPDATE downlinks SET state = 'expired' WHERE id = ?", [(r[0],) for r in rows]
            )
            conn.execute(
                "DELETE FROM downlinks WHERE state IN ('confirmed', 'expired') AND created_at < ?",
                (now - KEEP_FINISHED_S,),
            )
            return [replace(_downlink(r), state="expired") for r in rows]

        expired = await self.db.transact(work)
        self.notify(expired)
        return expired

    async def list(
        self, node_id: str | None = None, states: Sequence[str] = STATES, limit: int = 100
    ) -> list[Downlink]:
        """Newest first, for the web page."""
        wanted = [s for s in states if s in STATES]

        def work(conn: sqlite3.Connection) -> list[Downlink]:
            marks = ",".join("?" * len(wanted)) or "''"
            where = f"state IN ({marks})"
            args: list[Any] = list(wanted)
            if node_id is not None:
                where += " AND node_id = ?"
                args.append(node_id)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM downlinks WHERE {where} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [_downlink(r) for r in rows]

        return await self.db.read(work)

    async def counts(self) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            counts = dict.fromkeys(STATES, 0)
            counts.update(conn.execute("SELECT state, COUNT(*) FROM downlinks GROUP BY state"))
            return counts

        return await self.db.read(work)

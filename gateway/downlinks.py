"""Downlinks: a durable queue per node of commands and configuration for the node.

Life of a downlink:
  queued    -- accepted (web page action, CLI, another node's presence event)
  sent      -- handed to the link in the response to an uplink (or the node's RX window);
               it stays eligible and goes out again with every response until the node
               answers, because a sleepy node may have missed that response
  confirmed -- the node listed its id in an `ack` record's `confirm` (protocol/schema.py),
               the only proof it acted; or a node that always listens answered 2.04 to it
  refused   -- the node listed its id in an ack's `refused`; `reason` says why
  expired   -- no answer within its lifetime (`downlinks.expiry_s` unless given). An ack
               that arrives later still settles it: the node's word is the truth

Two numbers name a downlink: `id`, the gateway's row (web page, audit trail, `confirm`), and
`wire_id`, what travels in the record's `id` key: a 16-bit counter per node (1, 2, ... 65535,
then 1 again, skipping numbers still open), so it costs one to three bytes on the air. The
node's acks name wire ids; `settle_in` matches them to that node's newest row with the number.

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
    attempts INTEGER NOT NULL DEFAULT 0,
    wire_id INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS downlinks_node ON downlinks(node_id, state, id);
CREATE INDEX IF NOT EXISTS downlinks_open ON downlinks(state, expires_at);
CREATE INDEX IF NOT EXISTS downlinks_wire ON downlinks(node_id, wire_id, id);
CREATE TABLE IF NOT EXISTS downlink_numbers(
    node_id TEXT PRIMARY KEY,
    last INTEGER NOT NULL
) WITHOUT ROWID;
"""

STATES = ("queued", "sent", "confirmed", "refused", "expired")
FINISHED = ("confirmed", "refused", "expired")
KEEP_FINISHED_S = 7 * 86400  # finished downlinks stay visible this long
WIRE_IDS = 0xFFFF  # wire ids run 1..65535 (0 is never given: "no id" stays unambiguous)
_COLUMNS = (
    "id, node_id, command, origin, created_at, expires_at, state, sent_at, confirmed_at,"
    " attempts, wire_id, reason"
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
    wire_id: int = 0  # the id the node sees (protocol/schema.py downlink key 1)
    reason: str = ""  # why the node refused it (protocol.schema.REFUSALS)


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
                "INSERT INTO downlinks(node_id, command, origin, created_at, expires_at, state,"
                " wire_id) VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                (node_id, body, origin, now, expires, _next_wire_id(conn, node_id)),
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

    def settle_in(
        self,
        conn: sqlite3.Connection,
        node_id: str,
        confirmed: Iterable[int],
        refused: Mapping[int, str],
        now: float,
    ) -> list[Downlink]:
        """Apply a node's acks: `confirmed` wire ids it applied, `refused` {wire id: reason}.

        Only a downlink this gateway sent to this node is settled (an id never sent, another
        node's, or one already answered the same way changes nothing). A refusal wins over a
        confirmation: it is the node's own word, while a 2.04 to a push only says it arrived.
        Returns the downlinks whose state changed.
        """
        changed = []
        for wire_id in confirmed:
            if wire_id in refused:
                continue
            row = self._answered(conn, node_id, wire_id, ("sent", "expired"))
            if row is not None:
                conn.execute(
                    "UPDATE downlinks SET state = 'confirmed', confirmed_at = ? WHERE id = ?",
                    (now, row.id),
                )
                changed.append(replace(row, state="confirmed", confirmed_at=now))
        for wire_id, reason in refused.items():
            row = self._answered(conn, node_id, wire_id, ("sent", "expired", "confirmed"))
            if row is not None:
                conn.execute(
                    "UPDATE downlinks SET state = 'refused', reason = ? WHERE id = ?",
                    (reason, row.id),
                )
                changed.append(replace(row, state="refused", reason=reason))
                log.warning(
                    "%s refused downlink %d (#%d, %s): %s",
                    node_id,
                    wire_id,
                    row.id,
                    row.command.get("type", "?"),
                    reason,
                )
        return changed

    @staticmethod
    def _answered(
        conn: sqlite3.Connection, node_id: str, wire_id: int, states: Sequence[str]
    ) -> Downlink | None:
        # The node's newest downlink with this number (older ones may share it after the
        # counter wrapped), if it went out and its state may still change.
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM downlinks WHERE node_id = ? AND wire_id = ?"
            " ORDER BY id DESC LIMIT 1",
            (node_id, wire_id),
        ).fetchone()
        if row is None:
            return None
        downlink = _downlink(row)
        if downlink.sent_at is None or downlink.state not in states:
            return None
        return downlink

    def confirm_in(
        self, conn: sqlite3.Connection, node_id: str, ids: Iterable[int], now: float
    ) -> list[Downlink]:
        """The pipeline's call with `Uplink.confirmed_downlinks`: the node's wire ids, and,
        when `ids` is a gateway.links.base.Receipts, its refusals too (see `settle_in`)."""
        refused: Mapping[int, str] = getattr(ids, "refused", {})
        return self.settle_in(conn, node_id, ids, refused, now)

    def confirm_rows_in(
        self, conn: sqlite3.Connection, node_id: str, ids: Iterable[int], now: float
    ) -> list[Downlink]:
        """Confirm the node's sent downlinks by the gateway's row ids (`Downlink.id`): for a
        proof the gateway itself holds, such as a lamp's 2.04 to a pushed request."""
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
        """Confirm by the gateway's row ids (`Downlink.id`): see `confirm_rows_in`."""
        now, wanted = self.clock(), list(ids)
        confirmed = await self.db.transact(
            lambda conn: self.confirm_rows_in(conn, node_id, wanted, now)
        )
        self.notify(confirmed)
        return confirmed

    async def settle(
        self, node_id: str, confirmed: Iterable[int] = (), refused: Mapping[int, str] | None = None
    ) -> list[Downlink]:
        """`settle_in` in a transaction of its own: the node's acks, by wire id."""
        now, wanted, refusals = self.clock(), list(confirmed), dict(refused or {})
        changed = await self.db.transact(
            lambda conn: self.settle_in(conn, node_id, wanted, refusals, now)
        )
        self.notify(changed)
        return changed

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
                "DELETE FROM downlinks WHERE state IN ('confirmed', 'refused', 'expired')"
                " AND created_at < ?",
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


def _next_wire_id(conn: sqlite3.Connection, node_id: str) -> int:
    """The node's next wire id, skipping numbers its open downlinks still hold. The counter
    lives in a table of its own so that deleting old rows never makes a number come back
    early (a node could take a new downlink for an old one it had answered)."""
    row = conn.execute("SELECT last FROM downlink_numbers WHERE node_id = ?", (node_id,)).fetchone()
    number = int(row[0]) if row else 0
    for _ in range(WIRE_IDS):
        number = number % WIRE_IDS + 1
        taken = conn.execute(
            "SELECT 1 FROM downlinks WHERE node_id = ? AND wire_id = ?"
            " AND state IN ('queued', 'sent') LIMIT 1",
            (node_id, number),
        ).fetchone()
        if taken is None:
            break
    conn.execute(
        "INSERT INTO downlink_numbers(node_id, last) VALUES (?, ?)"
        " ON CONFLICT(node_id) DO UPDATE SET last = excluded.last",
        (node_id, number),
    )
    return number

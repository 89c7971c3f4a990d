"""Per-node health for the field staff page: the latest state and a short history.

`node_state` holds one row per node (last seen, link, radio quality, battery, firmware);
`node_history` appends one row per uplink and keeps the newest `HISTORY_PER_NODE` per node, so
it stays small whatever the uplink rate. `node_condition` holds what the node's latest `status`
record said about itself: the error it reports (a config or downlink it refused, a crash) and
whether it is in safe mode (protocol/schema.py, firmware/node/status.py). A status without an
error clears the error; uplinks without a status leave the row alone. Plain tables: the web
page may query them directly through `Database.read`.

`node_condition` is a table of its own rather than columns of `node_state`: `CREATE TABLE IF
NOT EXISTS` brings it to a database made before it (no migration), and the usual batch (no
status record in it: statuses come daily, or with an error) costs no statement for it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.db import Database

HISTORY_PER_NODE = 500
_PRUNE_EVERY = 50  # prune a node's history once every this many of its uplinks

# The history is pruned by a trigger on the node's uplink count, so it costs no statement of
# its own in the writer (see gateway/store/db.py on why statements are counted). Dropped and
# created again at every start, so the trigger always has the constants above.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS node_state(
    node_id TEXT PRIMARY KEY,
    last_seen REAL NOT NULL,
    link TEXT NOT NULL,
    rssi_dbm REAL,
    snr_db REAL,
    battery_mv INTEGER,
    firmware TEXT,
    uplinks INTEGER NOT NULL DEFAULT 0,
    last_alarm_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS node_history(
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    at REAL NOT NULL,
    link TEXT NOT NULL,
    rssi_dbm REAL,
    snr_db REAL,
    battery_mv INTEGER,
    firmware TEXT
);
CREATE INDEX IF NOT EXISTS node_history_node ON node_history(node_id, id);
CREATE TABLE IF NOT EXISTS node_condition(
    node_id TEXT PRIMARY KEY,
    status_at REAL NOT NULL,
    error TEXT,
    safe_mode INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
DROP TRIGGER IF EXISTS node_history_prune;
CREATE TRIGGER node_history_prune AFTER UPDATE OF uplinks ON node_state
WHEN NEW.uplinks % {_PRUNE_EVERY} = 0
BEGIN
    DELETE FROM node_history WHERE node_id = NEW.node_id AND id <= (
        SELECT id FROM node_history WHERE node_id = NEW.node_id
        ORDER BY id DESC LIMIT 1 OFFSET {HISTORY_PER_NODE}
    );
END;
"""


@dataclass(frozen=True, slots=True)
class NodeCondition:
    """What a node's `status` record says about itself."""

    error: str | None = None  # printable ASCII, at most protocol.schema.ERROR_LEN characters
    safe_mode: bool = False


def condition_of(readings: Iterable[Any]) -> NodeCondition | None:
    """The condition an uplink's readings (gateway.records.Reading) report: from its last
    `status` record; None when it carries none (the last reported condition then stands)."""
    found = None
    for reading in readings:
        if reading.kind == "status":
            error = reading.data.get("error")
            found = NodeCondition(
                error=error if isinstance(error, str) and error else None,
                safe_mode=reading.data.get("safe_mode") is True,
            )
    return found


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one uplink tells about its node's health."""

    node_id: str
    at: float
    link: str
    rssi_dbm: float | None = None
    snr_db: float | None = None
    battery_mv: int | None = None  # None here: not in this uplink; the state keeps the last known
    firmware: str | None = None
    alarm: bool = False
    condition: NodeCondition | None = None  # None: no status record in this uplink


@dataclass(frozen=True, slots=True)
class NodeState:
    node_id: str
    last_seen: float
    link: str
    rssi_dbm: float | None
    snr_db: float | None
    battery_mv: int | None
    firmware: str | None
    uplinks: int
    last_alarm_at: float | None
    # From the node's latest status record (node_condition); never reported: None, False.
    error: str | None = None
    safe_mode: bool = False
    status_at: float | None = None


# Both statements read the reports from one JSON array of
# [node_id, at, link, rssi_dbm, snr_db, battery_mv, firmware, alarm_at] rows, in order, so a
# node with two uplinks in one batch ends with the state of the later one.
_UPSERT_STATE = (
    "INSERT INTO node_state(node_id, last_seen, link, rssi_dbm, snr_db, battery_mv, firmware,"
    " uplinks, last_alarm_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), json_extract(value, '$[6]'), 1, json_extract(value, '$[7]')"
    " FROM json_each(?) WHERE true ORDER BY key"  # `WHERE` tells ON CONFLICT from a join's ON
    " ON CONFLICT(node_id) DO UPDATE SET last_seen = excluded.last_seen,"
    " link = excluded.link, rssi_dbm = COALESCE(excluded.rssi_dbm, rssi_dbm),"
    " snr_db = COALESCE(excluded.snr_db, snr_db),"
    " battery_mv = COALESCE(excluded.battery_mv, battery_mv),"
    " firmware = COALESCE(excluded.firmware, firmware), uplinks = uplinks + 1,"
    " last_alarm_at = COALESCE(excluded.last_alarm_at, last_alarm_at)"
)
_APPEND_HISTORY = (
    "INSERT INTO node_history(node_id, at, link, rssi_dbm, snr_db, battery_mv, firmware)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), json_extract(value, '$[6]')"
    " FROM json_each(?) ORDER BY key"
)
# From a JSON array of [node_id, at, error, safe_mode] rows, in order (the later status wins).
_UPSERT_CONDITION = (
    "INSERT INTO node_condition(node_id, status_at, error, safe_mode)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]')"
    " FROM json_each(?) WHERE true ORDER BY key"
    " ON CONFLICT(node_id) DO UPDATE SET status_at = excluded.status_at,"
    " error = excluded.error, safe_mode = excluded.safe_mode"
)
_SELECT_STATE = (
    "SELECT s.node_id, s.last_seen, s.link, s.rssi_dbm, s.snr_db, s.battery_mv, s.firmware,"
    " s.uplinks, s.last_alarm_at, c.error, COALESCE(c.safe_mode, 0), c.status_at"
    " FROM node_state AS s LEFT JOIN node_condition AS c USING (node_id)"
)


def record_many_in(conn: sqlite3.Connection, reports: Sequence[NodeReport]) -> None:
    """Update the nodes' state and append to their history (inside a group transaction):
    two statements for any number of reports, a third when any carries a status record."""
    if not reports:
        return
    rows = []
    for r in reports:
        alarm_at = r.at if r.alarm else None
        rows.append(
            (r.node_id, r.at, r.link, r.rssi_dbm, r.snr_db, r.battery_mv, r.firmware, alarm_at)
        )
    document = json.dumps(rows, separators=(",", ":"), allow_nan=False)
    conn.execute(_UPSERT_STATE, (document,))
    conn.execute(_APPEND_HISTORY, (document,))
    conditions = [
        (r.node_id, r.at, r.condition.error, int(r.condition.safe_mode))
        for r in reports
        if r.condition is not None
    ]
    if conditions:
        conn.execute(_UPSERT_CONDITION, (json.dumps(conditions, separators=(",", ":")),))


def record_in(conn: sqlite3.Connection, report: NodeReport) -> None:
    """Update the node's state and append to its history (inside a group transaction)."""
    record_many_in(conn, (report,))


def _state(row: tuple[Any, ...]) -> NodeState:
    node_id, last_seen, link, rssi, snr, battery, firmware, uplinks, alarm_at, error, safe, at = row
    return NodeState(
        node_id, last_seen, link, rssi, snr, battery, firmware, uplinks, alarm_at,
        error=error, safe_mode=bool(safe), status_at=at,
    )  # fmt: skip


class NodeStatus:
    """Read side of node health for the web page and /metrics."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[NodeState]:
        return await self.db.read(
            lambda conn: [
                _state(row) for row in conn.execute(_SELECT_STATE + " ORDER BY s.node_id")
            ]
        )

    async def get(self, node_id: str) -> NodeState | None:
        def work(conn: sqlite3.Connection) -> NodeState | None:
            row = conn.execute(_SELECT_STATE + " WHERE s.node_id = ?", (node_id,)).fetchone()
            return _state(row) if row else None

        return await self.db.read(work)

    async def history(self, node_id: str, limit: int = 100) -> list[NodeReport]:
        """The node's latest reports, newest first."""

        def work(conn: sqlite3.Connection) -> list[NodeReport]:
            rows = conn.execute(
                "SELECT node_id, at, link, rssi_dbm, snr_db, battery_mv, firmware"
                " FROM node_history WHERE node_id = ? ORDER BY id DESC LIMIT ?",
                (node_id, limit),
            ).fetchall()
            return [NodeReport(*row) for row in rows]

        return await self.db.read(work)

    async def in_safe_mode(self) -> list[str]:
        """Ids of the nodes whose latest status says they are in safe mode."""
        return await self.db.read(
            lambda conn: [
                row[0]
                for row in conn.execute(
                    "SELECT node_id FROM node_condition WHERE safe_mode ORDER BY node_id"
                )
            ]
        )

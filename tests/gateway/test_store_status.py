"""Node health for the web page: the latest state keeps the last known values, the history
stays bounded per node, the latest status record sets (and clears) the node's reported error
and safe mode, and a database made before that opens as it was."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.records import Reading
from gateway.store import Database, NodeReport, NodeStatus
from gateway.store.status import (
    HISTORY_PER_NODE,
    SCHEMA,
    NodeCondition,
    condition_of,
    record_in,
    record_many_in,
)


def test_state_and_bounded_history(tmp_path: Path) -> None:
    async def body() -> None:
        db = Database(tmp_path / "g.db")
        await db.open([SCHEMA])
        status = NodeStatus(db)

        await db.transact(
            lambda c: record_in(
                c, NodeReport("n", 10.0, "lora", -101.0, 7.5, 3300, "1.2.0", alarm=True)
            )
        )
        # A later uplink without radio figures or a status message keeps the last known ones.
        await db.transact(lambda c: record_in(c, NodeReport("n", 20.0, "lora")))
        state = await status.get("n")
        assert state is not None
        assert (state.last_seen, state.rssi_dbm, state.snr_db, state.battery_mv) == (
            20.0, -101.0, 7.5, 3300,
        )  # fmt: skip
        assert (state.firmware, state.uplinks, state.last_alarm_at) == ("1.2.0", 2, 10.0)
        assert [r.at for r in await status.history("n")] == [20.0, 10.0]
        assert await status.get("other") is None

        def many(conn: object) -> None:
            for i in range(3 * HISTORY_PER_NODE):
                record_in(conn, NodeReport("n", 100.0 + i, "coap", battery_mv=3000))  # type: ignore[arg-type]
                record_in(conn, NodeReport("m", 100.0 + i, "coap"))  # type: ignore[arg-type]

        await db.transact(many)
        counts = await db.read(
            lambda c: dict(c.execute("SELECT node_id, COUNT(*) FROM node_history GROUP BY node_id"))
        )
        # Pruned as it goes: never far above the bound, whatever the number of uplinks.
        assert HISTORY_PER_NODE <= counts["n"] <= HISTORY_PER_NODE + 100
        assert HISTORY_PER_NODE <= counts["m"] <= HISTORY_PER_NODE + 100
        newest = await status.history("n", limit=1)
        assert newest[0].at == 100.0 + 3 * HISTORY_PER_NODE - 1
        assert [s.node_id for s in await status.all()] == ["m", "n"]
        await db.close()

    asyncio.run(body())


def _status(node: str, at: float, error: str | None = None, safe: bool = False) -> NodeReport:
    return NodeReport(node, at, "coap", condition=NodeCondition(error, safe))


def test_the_latest_status_sets_and_clears_the_error_and_safe_mode(tmp_path: Path) -> None:
    async def body() -> None:
        db = Database(tmp_path / "g.db")
        await db.open([SCHEMA])
        status = NodeStatus(db)
        await db.transact(lambda c: record_in(c, NodeReport("n", 5.0, "coap")))
        fresh = await status.get("n")
        assert fresh is not None
        assert (fresh.error, fresh.safe_mode, fresh.status_at) == (None, False, None)

        await db.transact(lambda c: record_in(c, _status("n", 10.0, "cfg refused: report_s")))
        # An uplink with no status record says nothing about the node's condition.
        await db.transact(lambda c: record_in(c, NodeReport("n", 20.0, "coap")))
        state = await status.get("n")
        assert state is not None
        assert (state.error, state.safe_mode, state.status_at) == (
            "cfg refused: report_s",
            False,
            10.0,
        )

        # Two statuses in one group: the later one wins, as for the rest of the state.
        await db.transact(
            lambda c: record_many_in(
                c, [_status("n", 30.0, "safe mode: boot loop", True), _status("m", 30.0)]
            )
        )
        assert await status.in_safe_mode() == ["n"]
        # A later status without an error and out of safe mode clears both.
        await db.transact(lambda c: record_in(c, _status("n", 40.0)))
        states = {s.node_id: s for s in await status.all()}
        assert (states["n"].error, states["n"].safe_mode, states["n"].status_at) == (
            None,
            False,
            40.0,
        )
        assert (states["m"].error, states["m"].safe_mode) == (None, False)
        assert await status.in_safe_mode() == []
        await db.close()

    asyncio.run(body())


def test_the_condition_comes_from_the_uplinks_last_status_record() -> None:
    def reading(kind: str, **data: object) -> Reading:
        return Reading(f"n:{kind}", "n", kind, 0.0, 0, {"type": kind, **data})

    assert condition_of([reading("leak", volume_l=1, flow_lh=0)]) is None
    assert condition_of(
        [
            reading("status", error="first", safe_mode=False),
            reading("status", error="second", safe_mode=True),
        ]
    ) == NodeCondition("second", True)
    # Absent fields (protocol.schema defaults): no error, not in safe mode.
    assert condition_of([reading("status", uptime_s=1, boot_count=1)]) == NodeCondition()


# node_state and node_history as the schema made them before node_condition existed.
OLD_SCHEMA = """
CREATE TABLE node_state(
    node_id TEXT PRIMARY KEY, last_seen REAL NOT NULL, link TEXT NOT NULL, rssi_dbm REAL,
    snr_db REAL, battery_mv INTEGER, firmware TEXT, uplinks INTEGER NOT NULL DEFAULT 0,
    last_alarm_at REAL
) WITHOUT ROWID;
CREATE TABLE node_history(
    id INTEGER PRIMARY KEY, node_id TEXT NOT NULL, at REAL NOT NULL, link TEXT NOT NULL,
    rssi_dbm REAL, snr_db REAL, battery_mv INTEGER, firmware TEXT
);
CREATE INDEX node_history_node ON node_history(node_id, id);
INSERT INTO node_state VALUES ('old', 1.0, 'lora', -99.0, 5.0, 3500, '1.0.0', 7, NULL);
"""


def test_a_database_made_by_the_old_schema_opens_and_keeps_its_nodes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)

    async def body() -> None:
        db = Database(path)
        await db.open([SCHEMA])
        status = NodeStatus(db)
        old = await status.get("old")
        assert old is not None
        assert (old.battery_mv, old.uplinks, old.error, old.safe_mode) == (3500, 7, None, False)
        await db.transact(lambda c: record_in(c, _status("old", 2.0, "dl 3 refused", True)))
        now = await status.get("old")
        assert now is not None
        assert (now.uplinks, now.error, now.safe_mode, now.status_at) == (
            8,
            "dl 3 refused",
            True,
            2.0,
        )
        await db.close()

    asyncio.run(body())

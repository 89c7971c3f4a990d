"""Node health for the web page: the latest state keeps the last known values, the history
stays bounded per node."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.store import Database, NodeReport, NodeStatus
from gateway.store.status import HISTORY_PER_NODE, SCHEMA, record_in


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

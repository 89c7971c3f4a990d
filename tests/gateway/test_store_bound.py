"""The store's bound: disk use stays under the configured size; eviction order is
delivered readings first, then undelivered routine readings, then alarms; all counted."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.store.readings import SCHEMA, Store, database_for
from tests.gateway.fakes import reading

MAX = 4 * 1024 * 1024
PAD = "x" * 150  # readings of a realistic size (a JSON document with a few fields)


async def open_store(path: Path, evictions: dict[str, int]) -> Store:
    db = database_for(path, MAX)
    await db.open([SCHEMA])
    return Store(
        db,
        ("a", "b"),
        MAX,
        on_evicted=lambda c, n: evictions.__setitem__(c, evictions.get(c, 0) + n),
    )


async def fill(store: Store, start: int, count: int, alarm_every: int = 0) -> int:
    """Add `count` readings in groups like concurrent uplinks; the highest disk use seen."""
    peak = 0
    for base in range(start, start + count, 200):
        batch = [
            reading("n", i, alarm=bool(alarm_every) and i % alarm_every == 0, pad=PAD)
            for i in range(base, min(base + 200, start + count))
        ]
        await asyncio.gather(*(store.add(batch[k : k + 10]) for k in range(0, len(batch), 10)))
        peak = max(peak, store.db.disk_bytes())
    return peak


def test_eviction_order_and_bound(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        evictions: dict[str, int] = {}
        store = await open_store(tmp_path / "g.db", evictions)
        # Phase 1: 3,000 readings every sink already has.
        await fill(store, 0, 3000)
        ids = await store.all_ids()
        await store.mark_delivered("a", ids)
        await store.mark_delivered("b", ids)
        # Phase 2: the upstream is gone; readings pile up, one alarm in 50.
        peak = await fill(store, 3000, 14000, alarm_every=50)
        assert peak <= MAX

        stats = await store.stats()
        assert stats.disk_bytes <= MAX
        kept = await store.all_ids()
        kept_seqs = [int(i.split(":")[1]) for i in kept]
        # Every delivered reading went first, every alarm survived, and the routine readings
        # kept are the newest ones.
        assert evictions["delivered"] == 3000
        assert "alarm" not in evictions
        alarms = {i for i in range(3000, 17000) if i % 50 == 0}
        assert alarms <= set(kept_seqs)
        routine_kept = sorted(set(kept_seqs) - alarms)
        assert routine_kept == [i for i in range(routine_kept[0], 17000) if i not in alarms]
        assert evictions["routine"] == 14000 - len(alarms) - len(routine_kept)
        assert len(kept) == stats.readings == 17000 - sum(evictions.values())
        # Persisted totals match what the metrics hook saw.
        assert stats.evicted == {"delivered": 3000, "routine": evictions["routine"], "alarm": 0}
        assert stats.pending == {"a": len(kept), "b": len(kept)}
        await store.db.close()

    with caplog.at_level(logging.INFO, logger="gateway.store.readings"):
        asyncio.run(body())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("routine readings" in r.getMessage() for r in warnings)


def test_alarms_go_last_and_oldest_first(tmp_path: Path) -> None:
    async def body() -> None:
        evictions: dict[str, int] = {}
        store = await open_store(tmp_path / "g.db", evictions)
        await fill(store, 0, 100)  # routine, undelivered
        peak = await fill(store, 100, 16000, alarm_every=1)  # nothing but alarms
        assert peak <= MAX
        assert evictions["routine"] == 100
        assert evictions["alarm"] > 0
        kept = [int(i.split(":")[1]) for i in await store.all_ids()]
        assert kept == list(range(16100 - len(kept), 16100))
        assert (await store.stats()).evicted["alarm"] == evictions["alarm"]
        await store.db.close()

    asyncio.run(body())

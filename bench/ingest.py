"""Durable ingest: how many readings per second the store commits, and what an ack waits.

Store throughput, measured in one run on the same disk: many concurrent writers (as many
uplinks arrive at once), each waiting for its reading to be durably committed:
  - one transaction per reading, synchronous=FULL (the baseline: naive and durable)
  - group commit, synchronous=FULL (what the gateway does)
  - group commit, synchronous=NORMAL (not durable on power loss; shows what FULL costs)

`BENCH_DIR` picks the folder (default: the system temp folder); it must be on the disk the
gateway would use, since fsync cost is the whole story.

End-to-end CoAP ingest (bench/_ingest_coap.py): OSCORE-protected uplinks through the whole
gateway, committed before the 2.04, against a bare aiocoap OSCORE server that stores nothing,
same load, p50/p99 from request to answer. The goal (issue 5) is at least 0.8x bare. The bare
server is stock aiocoap: it pays the Site's per-request lookup copy and a rendering task per
OSCORE request, which the gateway's CoAP link avoids (gateway/links/coap.py), so the whole
gateway can come out ahead of it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from bench._ingest_coap import coap_rows
from bench.common import table
from gateway.records import Reading
from gateway.store.readings import SCHEMA, Store, database_for

READINGS = 4000
WRITERS = 64  # uplinks in flight at once


def _reading(i: int) -> Reading:
    return Reading(
        reading_id=f"n{i % 200}:{i}:0",
        node_id=f"n{i % 200}",
        kind="leak",
        received_at=1_700_000_000.0 + i,
        age_s=0,
        data={"litres": i * 3, "flow_lph": 12, "leak": False, "battery_mv": 3310},
        alarm=False,
    )


async def _store_run(
    folder: Path, per_reading: bool, synchronous: Literal["FULL", "NORMAL"], count: int
) -> tuple[float, list[float], int]:
    """Readings/s, ack latencies (s), transactions used."""
    path = folder / f"bench-{per_reading}-{synchronous}.db"
    db = database_for(
        path,
        256 * 1024 * 1024,
        synchronous=synchronous,
        group_window_s=0.0 if per_reading else 0.002,
        max_group=1 if per_reading else 1000,
    )
    await db.open([SCHEMA])
    store = Store(db, ("spool",), 256 * 1024 * 1024)
    latencies: list[float] = []
    next_index = iter(range(count))

    async def writer() -> None:
        for i in next_index:
            start = time.perf_counter()
            await store.add([_reading(i)])
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    elapsed = time.perf_counter() - start
    groups = db.stats.groups
    await db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return count / elapsed, latencies, groups


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def store_rows(folder: Path) -> list[list[object]]:
    runs: list[tuple[str, bool, Literal["FULL", "NORMAL"], int]] = [
        ("1 transaction per reading, FULL", True, "FULL", READINGS // 4),
        ("group commit, FULL (gateway)", False, "FULL", READINGS),
        ("group commit, NORMAL (unsafe)", False, "NORMAL", READINGS),
    ]
    rows: list[list[object]] = []
    baseline = None
    for label, per_reading, synchronous, count in runs:
        rate, latencies, groups = asyncio.run(_store_run(folder, per_reading, synchronous, count))
        baseline = baseline or rate
        q = statistics.quantiles(latencies, n=100)
        rows.append(
            [
                label,
                f"{rate:,.0f}",
                f"{rate / baseline:.1f}x",
                f"{count / groups:.1f}",
                _ms(q[49]),
                _ms(q[98]),
            ]
        )
    return rows


# Each scenario: a function of the scratch folder returning table rows.
SCENARIOS: list[Callable[[Path], list[list[object]]]] = [store_rows, coap_rows]


def main() -> None:
    base = os.environ.get("BENCH_DIR") or None
    with tempfile.TemporaryDirectory(prefix="city-gateway-bench-", dir=base) as scratch:
        print(f"store on {scratch}, {WRITERS} concurrent writers, one reading per write")
        rows = [row for scenario in SCENARIOS for row in scenario(Path(scratch))]
    print(
        table(
            ["durable ingest", "readings/s", "vs baseline", "per commit", "p50 ms", "p99 ms"],
            rows,
        )
    )

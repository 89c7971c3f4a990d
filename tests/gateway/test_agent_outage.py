"""Upstream down for a long stretch: the disk stays within its bound, alarms survive, and
afterwards everything left drains in order at the configured rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.agent import Agent
from gateway.links.base import Uplink
from gateway.registry import Node
from tests.gateway.fakes import MemorySink, eventually, loopback, make_config, reading
from tests.gateway.test_agent import provision

MAX = 4 * 1024 * 1024
NODES = [f"w{i:02d}" for i in range(16)]
RATE = 3000.0


def test_long_outage_then_drain(tmp_path: Path) -> None:
    provision(tmp_path, *(Node(n, "leak", "coap") for n in NODES))
    sink = MemorySink()
    links, factory = loopback()
    config = make_config(
        tmp_path,
        store={"max_size": MAX},
        forwarding={
            "batch_size": 200,
            "batch_time_s": 0.01,
            "retry_base_s": 0.05,
            "retry_max_s": 0.1,
            "drain_max_rate": RATE,
        },
    )
    agent = Agent(config, sinks=[sink], links=[factory])
    sink.down = True

    async def main() -> None:
        await agent.start()
        try:
            await body()
        finally:
            await agent.shutdown()

    async def uplink(node: str, first: int, alarm: bool) -> None:
        readings = [reading(node, s, alarm=alarm, pad="p" * 120) for s in range(first, first + 10)]
        await links[0].context.pipeline.handle(Uplink(node, "coap", 0.0, readings=readings))

    async def body() -> None:
        peak = 0
        alarms: set[str] = set()
        for round_ in range(100):  # 100 rounds x 16 nodes x 10 readings = 16,000 readings
            is_alarm = round_ % 25 == 0
            await asyncio.gather(*(uplink(n, round_ * 10, is_alarm) for n in NODES))
            if is_alarm:
                alarms |= {
                    f"{n}:{s}:0" for n in NODES for s in range(round_ * 10, round_ * 10 + 10)
                }
            peak = max(peak, agent.db.disk_bytes())
        stats = await agent.store.stats()
        assert peak <= MAX and stats.disk_bytes <= MAX
        evicted = stats.evicted
        assert evicted["routine"] > 3000 and evicted["alarm"] == 0 and evicted["delivered"] == 0
        metric = agent.metrics.registry.get_sample_value
        assert metric("city_gateway_evictions_total", {"class": "routine"}) == evicted["routine"]
        kept = await agent.store.all_ids()
        assert alarms <= set(kept)  # every alarm survived the outage
        assert len(kept) == 16000 - evicted["routine"]
        assert stats.pending == {"mem": len(kept)}

        sink.down = False
        started = time.monotonic()
        await eventually(lambda: len(sink.accepted) == len(kept), timeout=30.0)
        elapsed = time.monotonic() - started
        # Never faster than the configured rate (one batch of burst allowed)...
        assert elapsed >= (len(kept) - 200) / RATE * 0.95, elapsed
        # ...and not much slower either.
        assert elapsed <= len(kept) / RATE * 2.5 + 1.0, elapsed
        # In commit order, so in order per node.
        assert sink.ids() == kept
        for node in NODES:
            seqs = [r.data["seq"] for r in sink.accepted if r.node_id == node]
            assert seqs == sorted(seqs)

    asyncio.run(main())

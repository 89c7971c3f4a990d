"""Forwarding from the store to a sink: batching, order, retries, drain rate, poison."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.config import ForwardingConfig
from gateway.forwarder import Forwarder, TokenBucket
from gateway.metrics import Metrics
from gateway.records import Reading
from gateway.sinks.base import SendResult
from gateway.store.readings import SCHEMA, Store, database_for
from tests.gateway.fakes import MemorySink, eventually, reading


def settings(**overrides: float) -> ForwardingConfig:
    values = {
        "batch_size": 10,
        "batch_time_s": 0.05,
        "retry_base_s": 0.02,
        "retry_max_s": 0.1,
        "drain_max_rate": 100_000.0,
    }
    values.update(overrides)
    return ForwardingConfig(**values)  # type: ignore[arg-type]


Body = Callable[[Store, MemorySink, Forwarder, Metrics], Awaitable[None]]


def run(tmp_path: Path, body: Body, sink: MemorySink | None = None, **overrides: float) -> None:
    async def main() -> None:
        sink_ = sink or MemorySink()
        db = database_for(tmp_path / "g.db", 64 * 1024 * 1024)
        await db.open([SCHEMA])
        store = Store(db, (sink_.name,), 64 * 1024 * 1024)
        metrics = Metrics((sink_.name,))
        forwarder = Forwarder(sink_, store, settings(**overrides), metrics)
        db.after_commit.append(forwarder.wake)
        forwarder.start()
        try:
            await body(store, sink_, forwarder, metrics)
        finally:
            await forwarder.stop()
            await db.close()

    asyncio.run(main())


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_batches_by_size_then_by_time(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        await store.add([reading("n", i) for i in range(25)])
        await eventually(lambda: len(sink.batches) >= 2)
        assert [len(b) for b in sink.batches[:2]] == [10, 10]
        await asyncio.sleep(0.3)
        assert len(sink.batches) == 2  # 5 left: not a full batch, and the time is not up
        started = time.monotonic()
        await eventually(lambda: len(sink.batches) == 3, timeout=3.0)
        assert time.monotonic() - started > 0.3  # it waited for batch_time_s
        assert sink.batches[2] == [f"n:{i}:0" for i in range(20, 25)]
        await eventually(
            lambda: value(metrics, "city_gateway_readings_out_total", sink="mem") == 25
        )
        assert await store.outbox("mem", 100) == []
        assert fwd.health.state == "up"

    run(tmp_path, body, batch_time_s=1.0)


def test_a_lone_reading_leaves_after_batch_time(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        started = time.monotonic()
        await store.add([reading("n", 1)])
        await eventually(lambda: sink.batches)
        assert 0.15 <= time.monotonic() - started < 1.0
        assert sink.batches == [["n:1:0"]]

    run(tmp_path, body, batch_time_s=0.2)


def test_sink_max_batch_caps_batches(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        await store.add([reading("n", i) for i in range(10)])
        await eventually(lambda: len(sink.accepted) == 10)
        assert max(len(b) for b in sink.batches) == 3

    run(tmp_path, body, sink=MemorySink(max_batch=3), batch_size=50)


def test_backoff_is_exponential_capped_and_jittered(tmp_path: Path) -> None:
    forwarder = Forwarder(
        MemorySink(),
        None,
        settings(retry_base_s=1.0, retry_max_s=8.0),
        Metrics(),
        rng=lambda: 1.0,  # type: ignore[arg-type]
    )
    assert [forwarder.backoff(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    forwarder.rng = lambda: 0.0
    assert [forwarder.backoff(n) for n in range(1, 5)] == [0.5, 1.0, 2.0, 4.0]


def test_outage_then_recovery_in_order(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        sink.down = True
        await store.add([reading(f"n{i % 3}", i) for i in range(30)])
        await eventually(lambda: len(sink.batches) >= 4)
        assert fwd.health.state == "down" and fwd.health.failures >= 4
        assert "connection refused" in (fwd.health.last_error or "")
        assert value(metrics, "city_gateway_upstream_errors_total", sink="mem") >= 4
        assert value(metrics, "city_gateway_sink_up", sink="mem") == 0
        # Every retry starts again from the oldest undelivered reading.
        assert all(b[0] == "n0:0:0" for b in sink.batches)
        sink.down = False
        await eventually(lambda: len(sink.accepted) == 30, timeout=5.0)
        assert sink.ids() == [f"n{i % 3}:{i}:0" for i in range(30)]
        assert fwd.health.state == "up" and fwd.health.failures == 0
        assert value(metrics, "city_gateway_sink_up", sink="mem") == 1

    run(tmp_path, body, retry_base_s=0.01, retry_max_s=0.05)


def test_retries_back_off(tmp_path: Path) -> None:
    attempts: list[float] = []

    class Recording(MemorySink):
        async def send(self, batch: list[Reading]) -> SendResult:  # type: ignore[override]
            attempts.append(time.monotonic())
            return await super().send(batch)

    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        sink.down = True
        await store.add([reading("n", 1)])
        await eventually(lambda: len(attempts) >= 5, timeout=5.0)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        # base 0.04 s doubling, jitter in [50 %, 100 %]: gap k lies in [0.02 * 2^k, 0.04 * 2^k]
        for k, gap in enumerate(gaps[:4]):
            assert 0.02 * 2**k * 0.9 <= gap <= 0.04 * 2**k + 0.1, (k, gap)

    run(tmp_path, body, sink=Recording(), batch_time_s=0.0, retry_base_s=0.04, retry_max_s=10.0)


def test_poison_is_parked_and_never_blocks(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        sink.poison = {"n:0:0": "400 invalid entity", "n:4:0": "too large"}
        await store.add([reading("n", i) for i in range(8)])
        await eventually(lambda: len(sink.accepted) == 6)
        await eventually(
            lambda: value(metrics, "city_gateway_readings_parked_total", sink="mem") == 2
        )
        assert sink.ids() == [f"n:{i}:0" for i in (1, 2, 3, 5, 6, 7)]
        parked = {p.reading.reading_id: p.reason for p in await store.parked("mem")}
        assert parked == {"n:0:0": "400 invalid entity", "n:4:0": "too large"}
        assert await store.outbox("mem", 10) == []
        assert value(metrics, "city_gateway_readings_parked_total", sink="mem") == 2
        await store.add([reading("n", 8)])
        await eventually(lambda: len(sink.accepted) == 7)

    run(tmp_path, body, batch_size=4)


def test_partial_acceptance_is_retried_in_order(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        sink.take_at_most = 3
        await store.add([reading("n", i) for i in range(10)])
        await eventually(lambda: len(sink.accepted) == 10)
        assert sink.ids() == [f"n:{i}:0" for i in range(10)]
        assert sink.batches[1][0] == "n:3:0"  # the next try starts where the sink stopped

    run(tmp_path, body)


def test_a_sink_that_accepts_nothing_is_backed_off(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        sink.take_at_most = 0
        await store.add([reading("n", 1)])
        await asyncio.sleep(0.3)
        # Without backoff this would spin thousands of times.
        assert 2 <= len(sink.batches) <= 8
        assert fwd.health.last_error == "accepted none of the batch"

    run(tmp_path, body, batch_time_s=0.0, retry_base_s=0.05, retry_max_s=0.1)


def test_start_failures_and_sink_bugs_are_retried(tmp_path: Path) -> None:
    calls = {"n": 0}

    class Buggy(MemorySink):
        async def send(self, batch: list[Reading]) -> SendResult:  # type: ignore[override]
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyError("bug in the sink")
            return await super().send(batch)

    sink = Buggy()
    sink.fail_start = 2

    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        await store.add([reading("n", 1)])
        await eventually(lambda: sink.accepted)
        assert sink.started == 1 and calls["n"] == 2
        assert value(metrics, "city_gateway_upstream_errors_total", sink="mem") == 3

    run(tmp_path, body, sink=sink, batch_time_s=0.0)


def test_drain_after_outage_respects_the_rate(tmp_path: Path) -> None:
    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        sink.down = True
        await store.add([reading(f"n{i % 4}", i) for i in range(400)])
        await eventually(lambda: sink.batches)
        sink.down = False
        started = time.monotonic()
        await eventually(lambda: len(sink.accepted) == 400, timeout=10.0)
        elapsed = time.monotonic() - started
        # 400 readings at 200/s with a burst of one batch (20): about (400 - 20) / 200 = 1.9 s
        assert 1.6 <= elapsed <= 2.9, elapsed
        assert sink.ids() == [f"n{i % 4}:{i}:0" for i in range(400)]

    run(tmp_path, body, batch_size=20, drain_max_rate=200.0, retry_base_s=0.01, retry_max_s=0.02)


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10.0, capacity=5, clock=lambda: now[0])
    assert bucket.delay(5) == 0.0
    assert bucket.delay(5) == 0.5
    now[0] = 0.2
    assert bucket.delay(2) == 0.0
    assert abs(bucket.delay(3) - 0.3) < 1e-9


def test_stop_lets_a_send_in_flight_finish(tmp_path: Path) -> None:
    release = asyncio.Event()

    class Slow(MemorySink):
        async def send(self, batch: list[Reading]) -> SendResult:  # type: ignore[override]
            self.sent.set()
            await release.wait()
            return await super().send(batch)

    sink = Slow()

    async def body(store: Store, sink: MemorySink, fwd: Forwarder, metrics: Metrics) -> None:
        await store.add([reading("n", 1)])
        await sink.sent.wait()
        stopping = asyncio.create_task(fwd.stop(grace_s=2.0))
        await asyncio.sleep(0.05)
        assert not stopping.done()
        release.set()
        await stopping
        assert sink.ids() == ["n:1:0"]
        assert await store.outbox("mem", 10) == []  # and it was marked delivered

    run(tmp_path, body, sink=sink, batch_time_s=0.0)

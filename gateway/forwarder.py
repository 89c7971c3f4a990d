"""Forwarding: one loop per sink from the store's outbox to the city platform.

- Batches by size and time: a batch leaves when `batch_size` readings wait, or when the oldest
  has waited `batch_time_s`.
- In order per node: the outbox is read oldest first and nothing is skipped except parked
  readings; readings a send did not take stay at the head of the outbox for the next try.
- Retries with exponential backoff and jitter on `SinkUnavailable` (and on any unexpected
  error from a sink: a bug there must not stop forwarding for good).
- Drains at `drain_max_rate` readings/s: a token bucket paces every send; in normal operation
  ingest is far below the rate, so it only shows after an outage.
- Poison: readings the sink rejects are parked with the reason and never block the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import ForwardingConfig
from gateway.metrics import Metrics
from gateway.sinks.base import Sink, SinkUnavailable
from gateway.store.readings import Store

log = logging.getLogger(__name__)


class TokenBucket:
    """At most `rate` tokens per second, in bursts of at most `capacity`."""

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(1, capacity)
        self.clock = clock
        self.tokens = float(self.capacity)
        self.stamp = clock()

    def delay(self, n: int) -> float:
        """Seconds to wait before `n` tokens are there; takes them when that is 0."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate

    async def take(self, n: int) -> None:
        while (wait := self.delay(min(n, self.capacity))) > 0:
            await asyncio.sleep(wait)


@dataclass
class SinkHealth:
    """What the web page and /healthz show about one sink."""

    state: str = "starting"  # starting, up, down
    failures: int = 0  # consecutive failed attempts
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


class Forwarder:
    def __init__(
        self,
        sink: Sink,
        store: Store,
        config: ForwardingConfig,
        metrics: Metrics,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.sink = sink
        self.store = store
        self.config = config
        self.metrics = metrics
        self.rng = rng
        self.health = SinkHealth()
        self.batch_limit = max(1, min(config.batch_size, sink.max_batch))
        self.bucket = TokenBucket(config.drain_max_rate, self.batch_limit, time.monotonic)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._sending = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """New readings were committed (hooked to the database's after-commit)."""
        self._wake.set()

    def backoff(self, failures: int) -> float:
        """Exponential in consecutive failures, capped, with jitter in [50 %, 100 %]."""
        ceiling = min(self.config.retry_max_s, self.config.retry_base_s * 2 ** (failures - 1))
        return float(ceiling * (0.5 + 0.5 * self.rng()))

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"forward-{self.sink.name}")
        return self._task

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let a send in flight finish (up to `grace_s`), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._task is None:
            return
        if self._sending:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        self._task.cancel()
        # A task that died has been logged (and reported unhealthy) already.
        await asyncio.gather(self._task, return_exceptions=True)

    async def _pause(self, seconds: float | None) -> None:
        """Wait for new readings, a stop, or `seconds` (None: no timeout)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _sleep(self, seconds: float) -> None:
        """Back off; only a stop cuts it short (new readings do not)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _failed(self, error: str) -> float:
        h = self.health
        h.state, h.failures = "down", h.failures + 1
        h.last_error, h.last_error_at = error, time.time()
        self.metrics.upstream_errors.labels(self.sink.name).inc()
        self.metrics.sink_up.labels(self.sink.name).set(0)
        delay = self.backoff(h.failures)
        log.warning(
            "sink %s: %s; retry %d in %.1f s",
            self.sink.name,
            error,
            h.failures,
            delay,
            extra={"sink": self.sink.name, "failures": h.failures},
        )
        return delay

    async def run(self) -> None:
        name = self.sink.name
        while not self._stopping.is_set():
            try:
                await self.sink.start()
                break
            except Exception as exc:  # noqa: BLE001 -- whatever the cause, retry later
                await self._sleep(self._failed(f"start failed: {exc!r}"))
        partial_since: float | None = None
        while not self._stopping.is_set():
            batch = await self.store.outbox(name, self.batch_limit)
            if not batch:
                partial_since = None
                await self._pause(None)
                continue
            if len(batch) < self.batch_limit and self.config.batch_time_s > 0:
                now = time.monotonic()
                partial_since = now if partial_since is None else partial_since
                remaining = partial_since + self.config.batch_time_s - now
                if remaining > 0:
                    await self._pause(remaining)
                    continue
            partial_since = None
            await self.bucket.take(len(batch))
            self._sending = True
            try:
                result = await self.sink.send(batch)
            except SinkUnavailable as exc:
                await self._sleep(self._failed(f"unavailable: {exc}"))
                continue
            except Exception as exc:
                log.exception("sink %s raised unexpectedly", name)
                await self._sleep(self._failed(f"error: {exc!r}"))
                continue
            finally:
                self._sending = False
            ids = {r.reading_id for r in batch}
            delivered = result.delivered & ids
            rejected = {k: v for k, v in result.rejected.items() if k in ids and k not in delivered}
            if delivered:
                await self.store.mark_delivered(name, delivered)
                self.metrics.readings_out.labels(name).inc(len(delivered))
            if rejected:
                await self.store.park(name, rejected, time.time())
                self.metrics.readings_parked.labels(name).inc(len(rejected))
                for rid, reason in list(rejected.items())[:5]:
                    log.warning("sink %s rejected %s: %s (parked)", name, rid, reason)
            if not delivered and not rejected:
                await self._sleep(self._failed("accepted none of the batch"))
                continue
            h = self.health
            h.state, h.failures, h.last_success_at = "up", 0, time.time()
            self.metrics.sink_up.labels(name).set(1)
            self.metrics.last_forward.labels(name).set(h.last_success_at)

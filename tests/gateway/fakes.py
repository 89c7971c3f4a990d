"""Test doubles and builders shared by the gateway tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, from_mapping
from gateway.downlinks import Downlink
from gateway.links.base import LinkContext, Uplink
from gateway.records import Reading
from gateway.sinks.base import SendResult, SinkUnavailable


def make_config(tmp_path: Path, **sections: Any) -> GatewayConfig:
    """Defaults in `tmp_path`, no links, no HTTP, no built-in sink; `sections` override."""
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "links": {"coap": {"enabled": False}},
        "http": {"enabled": False},
        "sinks": {"spool": {"enabled": False}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return from_mapping(raw, source=tmp_path / "gateway.toml")


def reading(
    node: str, seq: int, alarm: bool = False, at: float = 1_700_000_000.0, **data: Any
) -> Reading:
    return Reading(
        reading_id=f"{node}:{seq}:0",
        node_id=node,
        kind="leak",
        received_at=at + seq,
        age_s=0,
        data={"seq": seq, **data},
        alarm=alarm,
    )


class MemorySink:
    """An upstream in memory: can be down, reject some ids as poison, or take only part."""

    def __init__(self, name: str = "mem", max_batch: int = 1000) -> None:
        self.name = name
        self.max_batch = max_batch
        self.accepted: list[Reading] = []
        self.batches: list[list[str]] = []
        self.down = False
        self.fail_start = 0  # how many start() calls fail before one succeeds
        self.poison: dict[str, str] = {}
        self.take_at_most: int | None = None  # accept only the first N of a batch
        self.started = 0
        self.closed = 0
        self.sent = asyncio.Event()

    async def start(self) -> None:
        if self.fail_start:
            self.fail_start -= 1
            raise SinkUnavailable("broker refused the connection")
        self.started += 1

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        assert len(batch) <= self.max_batch
        self.batches.append([r.reading_id for r in batch])
        if self.down:
            raise SinkUnavailable("connection refused")
        result = SendResult()
        for r in batch:
            if r.reading_id in self.poison:
                result.rejected[r.reading_id] = self.poison[r.reading_id]
            elif self.take_at_most is None or len(result.delivered) < self.take_at_most:
                result.delivered.add(r.reading_id)
                self.accepted.append(r)
        self.sent.set()
        return result

    async def close(self) -> None:
        self.closed += 1

    def ids(self) -> list[str]:
        return [r.reading_id for r in self.accepted]


async def eventually(check: Any, timeout: float = 5.0, step: float = 0.01) -> None:
    """Wait until `check()` is true (awaiting it if it is a coroutine function)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)


class LoopbackLink:
    """A link without a wire: the test calls `uplink(...)` as a decoded frame would arrive."""

    name = "coap"

    def __init__(self, context: LinkContext) -> None:
        self.context = context
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def uplink(
        self,
        node: str,
        seqs: Sequence[int] = (),
        alarm: bool = False,
        confirmed: Sequence[int] = (),
        **fields: Any,
    ) -> list[Downlink]:
        return await self.context.pipeline.handle(
            Uplink(
                node_id=node,
                link=self.name,
                received_at=1_700_000_000.0,
                readings=[reading(node, s, alarm=alarm) for s in seqs],
                confirmed_downlinks=confirmed,
                **fields,
            )
        )


def loopback() -> tuple[list[LoopbackLink], Any]:
    """A link factory for Agent(links=[factory]) and the list its links land in."""
    made: list[LoopbackLink] = []

    def factory(context: LinkContext) -> LoopbackLink:
        made.append(LoopbackLink(context))
        return made[-1]

    return made, factory

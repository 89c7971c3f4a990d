"""The narrow interface every upstream sink implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.records import Reading


class SinkUnavailable(Exception):
    """The whole batch could not be sent now (broker down, timeout): retry it later."""


@dataclass
class SendResult:
    """Per-reading outcome of one `Sink.send`.

    Readings in neither set were not accepted this time and are retried later.
    """

    delivered: set[str] = field(default_factory=set)  # reading ids upstream has accepted
    rejected: dict[str, str] = field(default_factory=dict)  # reading id -> reason (poison)


class Sink(Protocol):
    """A destination on the city platform. One instance per configured upstream."""

    name: str
    max_batch: int  # the most readings one `send` may carry (NGSI-LD: 1,000 entities)

    async def start(self) -> None: ...

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        """Send readings (in order per node). Raise SinkUnavailable for a transient failure."""
        ...

    async def close(self) -> None: ...

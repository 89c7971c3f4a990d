"""The unit of data that flows from the store to the sinks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded reading of one node, as committed to the store.

    `reading_id` is stable across crashes and resends: it is derived from the node id and the
    OSCORE sender sequence number of the uplink that carried it (plus its index when one uplink
    carries several buffered readings), so upstream can deduplicate a resend.
    """

    reading_id: str
    node_id: str
    kind: str  # a protocol.schema kind name: "leak", "occupancy", "lighting", "binfill", "status"
    received_at: float  # gateway clock, Unix seconds (nodes have no reliable clock)
    age_s: int  # how long the node held it before sending (store-and-forward)
    data: Mapping[str, Any]  # the validated message from protocol.schema
    alarm: bool = False

    @property
    def observed_at(self) -> float:
        """When the node measured it, on the gateway's clock."""
        return self.received_at - self.age_s

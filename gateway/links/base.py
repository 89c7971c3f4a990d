"""The small interface between a link (CoAP/UDP, LoRa) and the rest of the gateway.

A link module (`gateway/links/coap.py`, `gateway/links/lora.py`) exposes

    def create(context: LinkContext) -> Link

and its Link receives frames, unprotects them (OSCORE), decodes the payload into an `Uplink`
(the decode function is the link side's own: see `PayloadDecoder`), and hands it to
`context.pipeline.handle(uplink)`. That call returns once the uplink's readings are durably
committed, with the node's pending downlinks for the response or RX window. Anything refused
before the pipeline (bad tag, replay, malformed frame...) is reported with
`context.pipeline.refuse(link, reason)` so it is counted; the pipeline itself raises
`UplinkRefused` for unknown nodes and malformed uplinks, and the link answers with an error.

Data flows left to right: link -> security -> decode -> pipeline (store -> ack -> downlinks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.records import Reading

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.downlinks import Downlink, Downlinks
    from gateway.metrics import Metrics
    from gateway.registry import Registry

# Why an uplink was refused; a fixed set so the metric's label values stay bounded.
REFUSAL_REASONS = (
    "malformed",  # not a CoAP/OSCORE frame, or a payload that is not CBOR
    "schema",  # CBOR, but not a message of protocol/schema.py (version, type, key, range)
    "oversized",  # larger than the link accepts
    "unknown_kid",  # OSCORE key id with no security context
    "unknown_node",  # authenticated, but not in the registry
    "bad_tag",  # OSCORE authentication failed (forged or corrupted)
    "replay",  # OSCORE replay window
    "unauthenticated",  # no OSCORE at all where it is required
    "unavailable",  # the store could not commit (disk full, I/O error): the node retries
)


def make_reading_id(node_id: str, seqno: int, index: int = 0) -> str:
    """Stable id of a reading: node, OSCORE sender sequence number of its uplink, position.

    The same uplink resent after a crash has the same sequence number, so the store ignores
    it and upstream can deduplicate on this id.
    """
    return f"{node_id}:{seqno}:{index}"


class Receipts(tuple[int, ...]):
    """What an uplink's `ack` records said about the node's downlinks: the tuple holds the
    ids it applied, `refused` maps the ids it would not apply to the reason (a name from
    protocol.schema.REFUSALS). Ids are the node's (`Downlink.wire_id`), not the gateway's rows.

    A tuple, so code that only confirms keeps working with it; `Downlinks.confirm_in` reads
    `refused` too."""

    refused: Mapping[int, str]

    def __new__(
        cls, confirmed: Iterable[int] = (), refused: Mapping[int, str] | None = None
    ) -> Receipts:
        receipts = super().__new__(cls, confirmed)
        receipts.refused = dict(refused or {})
        return receipts

    def __bool__(self) -> bool:
        # true when the node said anything: `if uplink.confirmed_downlinks:` must not skip an
        # ack that only refuses
        return len(self) > 0 or bool(self.refused)

    def __repr__(self) -> str:
        return f"Receipts({list(self)}, refused={dict(self.refused)})"


@dataclass(frozen=True, slots=True)
class Uplink:
    """One authenticated, decoded uplink from one node."""

    node_id: str
    link: str  # "coap" or "lora"
    received_at: float  # gateway clock, Unix seconds
    readings: Sequence[Reading] = ()
    # Ids of downlinks the node reports as applied (its `ack` records; a Receipts, whose
    # `refused` holds the ones it refused). The node's ids: Downlink.wire_id.
    confirmed_downlinks: Sequence[int] = ()
    rssi_dbm: float | None = None  # radio quality where the link knows it (LoRa)
    snr_db: float | None = None
    battery_mv: int | None = None  # from a status message, when the uplink carries one
    firmware: str | None = None
    max_downlinks: int = 8  # how many downlinks the response can carry (LoRa: few)

    @property
    def refused_downlinks(self) -> Mapping[int, str]:
        """Ids of downlinks the node refused -> why (empty unless a Receipts says so)."""
        refused: Mapping[int, str] = getattr(self.confirmed_downlinks, "refused", {})
        return refused


class UplinkRefused(Exception):
    """The uplink is not accepted; `reason` is one of REFUSAL_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UplinkHandler(Protocol):
    """What a link feeds: the pipeline (gateway/pipeline.py)."""

    async def handle(self, uplink: Uplink) -> list[Downlink]:
        """Commit durably, then return the node's pending downlinks; or raise UplinkRefused."""
        ...

    def refuse(self, link: str, reason: str, node_id: str | None = None, detail: str = "") -> None:
        """Count (and log, rate-limited) a frame refused before it became an Uplink."""
        ...


# The link side's decoder: (authenticated node id, OSCORE sequence number of the request,
# plaintext payload, reception time) -> Uplink, raising UplinkRefused("malformed") when the
# payload is not a valid message. Pluggable so links and their tests can swap it.
PayloadDecoder = Callable[[str, int, bytes, float], Uplink]


class Link(Protocol):
    name: str

    async def start(self) -> None:
        """Bind sockets or open the radio, and start receiving."""
        ...

    async def close(self) -> None:
        """Stop receiving and release everything (OSCORE contexts written back in order)."""
        ...


@dataclass(frozen=True)
class LinkContext:
    """Everything a link may use, handed to its module's `create(context)`."""

    config: GatewayConfig
    pipeline: UplinkHandler
    registry: Registry
    downlinks: Downlinks  # `listeners` tell always-listening nodes about new downlinks at once
    metrics: Metrics


LinkFactory = Callable[[LinkContext], Link]

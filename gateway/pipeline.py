"""The one path every uplink takes once a link has authenticated and decoded it.

registry check -> one group transaction (readings, node health, downlink confirmations,
downlinks taken for the response) -> durable COMMIT -> the link may acknowledge.

Nothing is acknowledged before its transaction has committed: `handle` only returns after
that, and a failed commit raises `UplinkRefused("unavailable")` so the node keeps the readings
and retries.

The uplinks of one commit group are written together (`UplinkWrites`, a `Batch` of the
database): their readings, node states and history rows each in one set-based statement, and
one query finds which of their nodes have downlinks waiting, so the usual uplink (nothing
waiting for its node) costs no statement of its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from gateway.downlinks import Downlink, Downlinks
from gateway.links.base import REFUSAL_REASONS, Receipts, Uplink, UplinkRefused
from gateway.metrics import Metrics
from gateway.records import Reading
from gateway.registry import Registry
from gateway.store.db import DatabaseClosed
from gateway.store.readings import Store, add_readings_in
from gateway.store.status import NodeReport, condition_of, record_many_in

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0  # refusals are logged at most this often per (link, reason)

# Which of a batch's nodes have downlinks `Downlinks.take_in` could hand out: the states it
# takes from. Only those nodes get a `take_in` (and its SELECT) of their own.
_NODES_WITH_DOWNLINKS = (
    "SELECT DISTINCT node_id FROM downlinks WHERE state IN ('queued', 'sent')"
    " AND node_id IN (SELECT value FROM json_each(?))"
)

Written = tuple[int, list[Downlink], list[Downlink]]  # new readings, confirmed, taken


@dataclass(frozen=True, slots=True)
class UplinkWrite:
    uplink: Uplink
    report: NodeReport
    now: float  # the pipeline's clock when the uplink arrived (downlink expiry, confirmation)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled on the event loop for the writer process, every uplink: as plain tuples,
        # which pickle in C, rather than as dataclasses (their generic pickling is Python
        # code, about three times slower).
        u = self.uplink
        uplink = (
            u.node_id, u.link, u.received_at, [_reading_fields(r) for r in u.readings],
            tuple(u.confirmed_downlinks), u.refused_downlinks, u.rssi_dbm, u.snr_db,
            u.battery_mv, u.firmware, u.max_downlinks,
        )  # fmt: skip
        return (_uplink_write, (uplink, _report_fields(self.report), self.now))


# Every field, in order, so that a field added to either class travels too.
_reading_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(Reading)))
_report_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(NodeReport)))


def _uplink_write(uplink: tuple[Any, ...], report: tuple[Any, ...], now: float) -> UplinkWrite:
    node_id, link, received_at, readings, confirmed, refused, *radio, max_downlinks = uplink
    rssi_dbm, snr_db, battery_mv, firmware = radio
    return UplinkWrite(
        Uplink(
            node_id=node_id,
            link=link,
            received_at=received_at,
            readings=[Reading(*fields) for fields in readings],
            confirmed_downlinks=Receipts(confirmed, refused),
            rssi_dbm=rssi_dbm,
            snr_db=snr_db,
            battery_mv=battery_mv,
            firmware=firmware,
            max_downlinks=max_downlinks,
        ),
        NodeReport(*report),
        now,
    )


class UplinkWrites:
    """The writes of a commit group's uplinks, together (a `gateway.store.db.Batch`).

    Committed in the database's writer process when it has one (gateway/store/writer.py):
    it pickles to a copy holding only what `run` needs, the sinks' names and a `Downlinks`
    for its `*_in` methods, which use the connection they are given and nothing of the
    object's own (its database and listeners stay in this process).
    """

    writer_process = True

    def __init__(self, sinks: Sequence[str], downlinks: Downlinks) -> None:
        self.sinks = tuple(sinks)
        self.downlinks = downlinks

    def __reduce__(self) -> tuple[Any, ...]:
        return (_writes_in_writer, (self.sinks,))

    def run(self, conn: sqlite3.Connection, items: Sequence[UplinkWrite]) -> list[Written]:
        fresh = add_readings_in(
            conn, self.sinks, [r for item in items for r in item.uplink.readings]
        )
        record_many_in(conn, [item.report for item in items])
        nodes = json.dumps(list({item.uplink.node_id: None for item in items}))
        waiting = {row[0] for row in conn.execute(_NODES_WITH_DOWNLINKS, (nodes,))}
        written: list[Written] = []
        start = 0
        for item in items:
            uplink, now = item.uplink, item.now
            new = sum(fresh[start : start + len(uplink.readings)])
            start += len(uplink.readings)
            confirmed: list[Downlink] = []
            if uplink.confirmed_downlinks:
                confirmed = self.downlinks.confirm_in(
                    conn, uplink.node_id, uplink.confirmed_downlinks, now
                )
            taken: list[Downlink] = []
            if uplink.node_id in waiting:
                taken = self.downlinks.take_in(conn, uplink.node_id, now, uplink.max_downlinks)
            written.append((new, confirmed, taken))
        return written


def _writes_in_writer(sinks: tuple[str, ...]) -> UplinkWrites:
    return UplinkWrites(sinks, Downlinks.__new__(Downlinks))


@dataclass(frozen=True, slots=True)
class _LinkMetrics:
    """One link's labelled metric children, looked up once rather than on every uplink."""

    readings_in: Counter
    readings_duplicate: Counter
    rssi: Histogram
    snr: Histogram


class Pipeline:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        downlinks: Downlinks,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.downlinks = downlinks
        self.metrics = metrics
        self.clock = clock
        # Called on the loop after each committed uplink with how many readings were new
        # (the web page's live updates hook in here).
        self.listeners: list[Callable[[Uplink, int], None]] = []
        self._last_logged: dict[tuple[str, str], tuple[float, int]] = {}
        self._writes = UplinkWrites(store.sinks, downlinks)
        self._link_metrics: dict[str, _LinkMetrics] = {}

    def _metrics_of(self, link: str) -> _LinkMetrics:
        found = self._link_metrics.get(link)
        if found is None:
            m = self.metrics
            found = self._link_metrics[link] = _LinkMetrics(
                m.readings_in.labels(link),
                m.readings_duplicate.labels(link),
                m.rssi.labels(link),
                m.snr.labels(link),
            )
        return found

    def refuse(self, link: str, reason: str, node_id: str | None = None, detail: str = "") -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.metrics.refusals.labels(link, reason).inc()
        if reason == "unknown_node" and node_id is not None:
            self.registry.note_unknown(node_id)
        now = time.monotonic()
        last, suppressed = self._last_logged.get((link, reason), (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._last_logged[(link, reason)] = (last, suppressed + 1)
            return
        self._last_logged[(link, reason)] = (now, 0)
        log.warning(
            "refused uplink on %s: %s%s%s",
            link,
            reason,
            f" from {node_id}" if node_id else "",
            f" ({detail})" if detail else "",
            extra={"link": link, "reason": reason, "node": node_id, "suppressed": suppressed},
        )

    async def handle(self, uplink: Uplink) -> list[Downlink]:
        started = time.perf_counter()
        if self.registry.get(uplink.node_id) is None:
            self.refuse(uplink.link, "unknown_node", uplink.node_id)
            raise UplinkRefused("unknown_node", uplink.node_id)
        for r in uplink.readings:
            if r.node_id != uplink.node_id:
                strangers = sorted({r.node_id for r in uplink.readings} - {uplink.node_id})
                detail = f"readings of {strangers} in an uplink of {uplink.node_id}"
                self.refuse(uplink.link, "malformed", uplink.node_id, detail)
                raise UplinkRefused("malformed", detail)

        report = NodeReport(
            node_id=uplink.node_id,
            at=uplink.received_at,
            link=uplink.link,
            rssi_dbm=uplink.rssi_dbm,
            snr_db=uplink.snr_db,
            battery_mv=uplink.battery_mv,
            firmware=uplink.firmware,
            alarm=any(r.alarm for r in uplink.readings),
            condition=condition_of(uplink.readings),
        )
        try:
            written = self.store.db.submit(self._writes, UplinkWrite(uplink, report, self.clock()))
            fresh, confirmed, taken = await written
        except (sqlite3.Error, DatabaseClosed) as exc:
            self.refuse(uplink.link, "unavailable", uplink.node_id, str(exc))
            raise UplinkRefused("unavailable", str(exc)) from exc

        self.metrics.ack_seconds.observe(time.perf_counter() - started)
        link_metrics = self._metrics_of(uplink.link)
        link_metrics.readings_in.inc(fresh)
        duplicates = len(uplink.readings) - fresh
        if duplicates:
            link_metrics.readings_duplicate.inc(duplicates)
        if uplink.rssi_dbm is not None:
            link_metrics.rssi.observe(uplink.rssi_dbm)
        if uplink.snr_db is not None:
            link_metrics.snr.observe(uplink.snr_db)
        if confirmed or taken:
            self.downlinks.notify(confirmed + taken)
        for listener in self.listeners:
            try:
                listener(uplink, fresh)
            except Exception:  # committed already: a listener's bug must not fail the ack
                log.exception("uplink listener %r failed", listener)
        return taken

"""The one path every uplink takes once a link has authenticated and decoded it.

registry check -> one group transaction (readings, node health, downlink confirmations,
downlinks taken for the response) -> durable COMMIT -> the link may acknowledge.

Nothing is acknowledged before its transaction has committed: `handle` only returns after
that, and a failed commit raises `UplinkRefused("unavailable")` so the node keeps the readings
and retries.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from gateway.downlinks import Downlink, Downlinks
from gateway.links.base import REFUSAL_REASONS, Uplink, UplinkRefused
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store.db import DatabaseClosed
from gateway.store.readings import Store
from gateway.store.status import NodeReport, record_in

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0  # refusals are logged at most this often per (link, reason)


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
        strangers = {r.node_id for r in uplink.readings} - {uplink.node_id}
        if strangers:
            detail = f"readings of {sorted(strangers)} in an uplink of {uplink.node_id}"
            self.refuse(uplink.link, "malformed", uplink.node_id, detail)
            raise UplinkRefused("malformed", detail)

        now = self.clock()
        report = NodeReport(
            node_id=uplink.node_id,
            at=uplink.received_at,
            link=uplink.link,
            rssi_dbm=uplink.rssi_dbm,
            snr_db=uplink.snr_db,
            battery_mv=uplink.battery_mv,
            firmware=uplink.firmware,
            alarm=any(r.alarm for r in uplink.readings),
        )

        def work(conn: sqlite3.Connection) -> tuple[int, list[Downlink], list[Downlink]]:
            fresh = sum(self.store.add_in(conn, uplink.readings))
            record_in(conn, report)
            confirmed = self.downlinks.confirm_in(
                conn, uplink.node_id, uplink.confirmed_downlinks, now
            )
            taken = self.downlinks.take_in(conn, uplink.node_id, now, uplink.max_downlinks)
            return fresh, confirmed, taken

        try:
            fresh, confirmed, taken = await self.store.db.transact(work)
        except (sqlite3.Error, DatabaseClosed) as exc:
            self.refuse(uplink.link, "unavailable", uplink.node_id, str(exc))
            raise UplinkRefused("unavailable", str(exc)) from exc

        self.metrics.ack_seconds.observe(time.perf_counter() - started)
        self.metrics.readings_in.labels(uplink.link).inc(fresh)
        duplicates = len(uplink.readings) - fresh
        if duplicates:
            self.metrics.readings_duplicate.labels(uplink.link).inc(duplicates)
        if uplink.rssi_dbm is not None:
            self.metrics.rssi.labels(uplink.link).observe(uplink.rssi_dbm)
        if uplink.snr_db is not None:
            self.metrics.snr.labels(uplink.link).observe(uplink.snr_db)
        self.downlinks.notify(confirmed + taken)
        for listener in self.listeners:
            try:
                listener(uplink, fresh)
            except Exception:  # committed already: a listener's bug must not fail the ack
                log.exception("uplink listener %r failed", listener)
        return taken

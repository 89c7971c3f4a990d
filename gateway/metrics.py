"""Prometheus metrics of one agent, in a registry of its own (several agents fit in one test).

Counters move as things happen; gauges about the store (queue depth, disk use) are read from
the database when /metrics is scraped, so they are never stale and cost nothing in between.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.links.base import REFUSAL_REASONS
from gateway.registry import LINKS
from gateway.store.readings import EVICTION_CLASSES

if TYPE_CHECKING:
    from gateway.agent import Agent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, sinks: tuple[str, ...] = ()) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "city_gateway_"
        self.readings_in = Counter(
            p + "readings_in", "Readings durably committed, by link", ["link"], registry=r
        )
        self.readings_duplicate = Counter(
            p + "readings_duplicate", "Resent readings already stored", ["link"], registry=r
        )
        self.readings_out = Counter(
            p + "readings_out", "Readings delivered upstream, by sink", ["sink"], registry=r
        )
        self.readings_parked = Counter(
            p + "readings_parked", "Readings a sink rejected as poison", ["sink"], registry=r
        )
        self.upstream_errors = Counter(
            p + "upstream_errors", "Failed sends to a sink (retried later)", ["sink"], registry=r
        )
        self.refusals = Counter(
            p + "refusals", "Uplinks refused, by link and reason", ["link", "reason"], registry=r
        )
        self.evictions = Counter(
            p + "evictions",
            "Readings evicted to keep the store bounded, by class (delivered, routine, alarm)",
            ["class"],
            registry=r,
        )
        self.downlinks = Counter(
            p + "downlinks", "Downlink state changes, by new state", ["state"], registry=r
        )
        self.duty_cycle_refused = Counter(
            p + "lora_duty_cycle_refused",
            "LoRa frames (replies in RX windows, pushes) not sent: the EU868 duty-cycle ledger"
            " had no airtime left in the sub-band",
            registry=r,
        )
        self.rssi = Histogram(
            p + "rssi_dbm",
            "Received signal strength of uplinks, by link",
            ["link"],
            buckets=(-130, -120, -110, -100, -90, -80, -70, -60, -50, -40, -30),
            registry=r,
        )
        self.snr = Histogram(
            p + "snr_db",
            "Signal-to-noise ratio of uplinks, by link",
            ["link"],
            buckets=(-20, -15, -10, -5, 0, 5, 10, 15),
            registry=r,
        )
        self.ack_seconds = Histogram(
            p + "ack_seconds",
            "From an uplink reaching the pipeline to its durable commit (the ack can go)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=r,
        )
        self.queue_depth = Gauge(
            p + "queue_depth", "Readings waiting for each sink", ["sink"], registry=r
        )
        self.parked = Gauge(p + "parked", "Parked readings kept, by sink", ["sink"], registry=r)
        self.disk_bytes = Gauge(
            p + "store_disk_bytes", "Database, WAL and index size on disk", registry=r
        )
        self.store_max_bytes = Gauge(p + "store_max_bytes", "Configured bound", registry=r)
        self.store_readings = Gauge(p + "store_readings", "Readings held", registry=r)
        self.nodes = Gauge(p + "nodes", "Nodes in the registry", registry=r)
        self.last_forward = Gauge(
            p + "last_forward_timestamp_seconds",
            "When each sink last accepted a batch",
            ["sink"],
            registry=r,
        )
        self.sink_up = Gauge(p + "sink_up", "1 while the last send succeeded", ["sink"], registry=r)
        # Label sets known in advance are exported at zero, so dashboards see them at once.
        for link in LINKS:
            self.readings_in.labels(link)
            for reason in REFUSAL_REASONS:
                self.refusals.labels(link, reason)
        for cls in EVICTION_CLASSES:
            self.evictions.labels(cls)
        for sink in sinks:
            for family in (self.readings_out, self.readings_parked, self.upstream_errors):
                family.labels(sink)

    async def refresh(self, agent: Agent) -> None:
        """Read the gauges that live in the database."""
        stats = await agent.store.stats()
        for sink, depth in stats.pending.items():
            self.queue_depth.labels(sink).set(depth)
        for sink, count in stats.parked.items():
            self.parked.labels(sink).set(count)
        self.disk_bytes.set(stats.disk_bytes)
        self.store_max_bytes.set(stats.max_bytes)
        self.store_readings.set(stats.readings)
        self.nodes.set(len(agent.registry))

    def render(self) -> bytes:
        return generate_latest(self.registry)

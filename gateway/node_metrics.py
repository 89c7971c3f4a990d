"""Gauges of what nodes report about themselves (their status records), read from the
database when /metrics is scraped, like the store gauges of gateway/metrics.py.

A module of its own beside `Metrics`, registered in the same agent registry by
gateway/http.py when it builds the app (the only place /metrics is served).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

if TYPE_CHECKING:
    from gateway.agent import Agent

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, NodeMetrics] = (
    weakref.WeakKeyDictionary()
)


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.safe_mode = Gauge(
            "city_gateway_nodes_safe_mode",
            "Nodes of the registry whose latest status says they are in safe mode",
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> NodeMetrics:
        """The one instance of a registry (a second app on the same agent must not register
        the gauge twice: prometheus_client refuses)."""
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = cls(registry)
        return found

    async def refresh(self, agent: Agent) -> None:
        safe = await agent.status.in_safe_mode()
        # a node removed from the registry keeps its rows until pruned: not counted
        self.safe_mode.set(sum(1 for node_id in safe if agent.registry.get(node_id) is not None))

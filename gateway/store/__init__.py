"""The gateway's durable state in one SQLite file: readings, delivery, node health.

`db` (group commit, reads off the loop), `readings` (the bounded store and per-sink outbox),
`status` (node health). The registry and the downlink queue keep their tables in the same file.
"""

from gateway.store.db import Database, DatabaseClosed, connect
from gateway.store.readings import EVICTION_CLASSES, Parked, Store, StoreStats
from gateway.store.status import NodeReport, NodeState, NodeStatus

__all__ = [
    "EVICTION_CLASSES",
    "Database",
    "DatabaseClosed",
    "NodeReport",
    "NodeState",
    "NodeStatus",
    "Parked",
    "Store",
    "StoreStats",
    "connect",
]

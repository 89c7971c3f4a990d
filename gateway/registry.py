"""The node registry: which nodes this gateway serves, and how.

Nodes live in the gateway database (`nodes` table). The provisioning path is the CLI
(`city-gateway node add ...`), run as the service user: it writes the same SQLite file the
daemon uses (WAL lets both write; SQLite's busy timeout orders them), so no network API, token
or password is needed and the file's permissions (0600, service user) are the authentication.
It works whether or not the daemon is running.

The daemon keeps the nodes in memory (links look a node up on every uplink) and notices
changes made by any process through `registry_version`, which triggers bump on every change
to `nodes`; `refresh()` reloads only when that number moved.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.store.db import Database

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes(
    node_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    link TEXT NOT NULL,
    location TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL DEFAULT '{}',
    key_ref TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry_version(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO registry_version(id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS nodes_added AFTER INSERT ON nodes
BEGIN UPDATE registry_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS nodes_changed AFTER UPDATE ON nodes
BEGIN UPDATE registry_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS nodes_removed AFTER DELETE ON nodes
BEGIN UPDATE registry_version SET version = version + 1; END;
"""

LINKS = ("coap", "lora")
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
UNKNOWN_KEPT = 256  # distinct unknown node ids remembered for the operator


class RegistryError(ValueError):
    """A node field is invalid, or the node exists (add) or does not (update/remove)."""


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    kind: str
    link: str
    location: str = ""
    notes: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    key_ref: str | None = None  # where the security layer finds the node's OSCORE context
    created_at: float = 0.0
    updated_at: float = 0.0

    def validated(self) -> Node:
        if not NODE_ID.fullmatch(self.node_id):
            raise RegistryError(
                f"node id {self.node_id!r}: use 1-64 letters, digits, '_', '.' or '-'"
            )
        if not KIND.fullmatch(self.kind):
            raise RegistryError(f"kind {self.kind!r}: use a lowercase name such as 'leak'")
        if self.link not in LINKS:
            raise RegistryError(f"link {self.link!r}: must be one of {', '.join(LINKS)}")
        if len(self.location) > 200 or len(self.notes) > 2000:
            raise RegistryError("location is limited to 200 characters and notes to 2000")
        if not isinstance(self.config, Mapping):
            raise RegistryError("config must be a JSON object")
        if self.key_ref is not None and not 0 < len(self.key_ref) <= 200:
            raise RegistryError("key_ref must be 1-200 characters")
        return self


@dataclass
class UnknownNode:
    count: int
    first_at: float
    last_at: float


def _node(row: tuple[Any, ...]) -> Node:
    node_id, kind, link, location, notes, config, key_ref, created_at, updated_at = row
    return Node(
        node_id, kind, link, location, notes, json.loads(config), key_ref, created_at, updated_at
    )


# -- synchronous operations on a connection: used by the CLI and inside group transactions --


def add_node(conn: sqlite3.Connection, node: Node, now: float | None = None) -> Node:
    now = time.time() if now is None else now
    node = replace(node.validated(), created_at=now, updated_at=now)
    try:
        conn.execute(
            "INSERT INTO nodes(node_id, kind, link, location, notes, config, key_ref,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                node.node_id,
                node.kind,
                node.link,
                node.location,
                node.notes,
                json.dumps(dict(node.config), sort_keys=True),
                node.key_ref,
                node.created_at,
                node.updated_at,
            ),
        )
    except sqlite3.IntegrityError:
        raise RegistryError(f"node {node.node_id!r} already exists") from None
    return node


def get_node(conn: sqlite3.Connection, node_id: str) -> Node | None:
    row = conn.execute("SELECT * FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    return _node(row) if row else None


def update_node(
    conn: sqlite3.Connection, node_id: str, changes: Mapping[str, Any], now: float | None = None
) -> Node:
    current = get_node(conn, node_id)
    if current is None:
        raise RegistryError(f"node {node_id!r} does not exist")
    allowed = {"kind", "link", "location", "notes", "config", "key_ref"}
    if set(changes) - allowed:
        raise RegistryError(f"cannot change {sorted(set(changes) - allowed)}")
    node = replace(current, **changes, updated_at=time.time() if now is None else now)
    node.validated()
    conn.execute(
        "UPDATE nodes SET kind = ?, link = ?, location = ?, notes = ?, config = ?, key_ref = ?,"
        " updated_at = ? WHERE node_id = ?",
        (
            node.kind,
            node.link,
            node.location,
            node.notes,
            json.dumps(dict(node.config), sort_keys=True),
            node.key_ref,
            node.updated_at,
            node_id,
        ),
    )
    return node


def remove_node(conn: sqlite3.Connection, node_id: str) -> None:
    if conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)).rowcount == 0:
        raise RegistryError(f"node {node_id!r} does not exist")


def list_nodes(conn: sqlite3.Connection) -> list[Node]:
    return [_node(row) for row in conn.execute("SELECT * FROM nodes ORDER BY node_id")]


def version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM registry_version WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


class Registry:
    """The daemon's view: an in-memory copy the links consult on every uplink."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._nodes: dict[str, Node] = {}
        self._version = -1
        self.unknown: OrderedDict[str, UnknownNode] = OrderedDict()
        self.listeners: list[Callable[[], None]] = []  # called on the loop after any change

    def get(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def nodes(self) -> list[Node]:
        return sorted(self._nodes.values(), key=lambda n: n.node_id)

    def __len__(self) -> int:
        return len(self._nodes)

    def note_unknown(self, node_id: str, now: float | None = None) -> None:
        """Remember a refused unknown node id (bounded) so the operator can provision it."""
        now = time.time() if now is None else now
        seen = self.unknown.pop(node_id, None) or UnknownNode(0, now, now)
        seen.count += 1
        seen.last_at = now
        self.unknown[node_id] = seen
        while len(self.unknown) > UNKNOWN_KEPT:
            self.unknown.popitem(last=False)

    async def refresh(self) -> bool:
        """Reload if any process changed the nodes since the last load; True if it did."""

        def work(conn: sqlite3.Connection) -> tuple[int, list[Node]] | None:
            current = version(conn)
            if current == self._version:
                return None
            return current, list_nodes(conn)

        loaded = await self.db.read(work)
        if loaded is None:
            return False
        self._version, nodes = loaded
        before = set(self._nodes)
        self._nodes = {n.node_id: n for n in nodes}
        added, removed = set(self._nodes) - before, before - set(self._nodes)
        if self._version and (added or removed):
            log.info("registry reloaded: %d nodes (+%d -%d)", len(nodes), len(added), len(removed))
        for node_id in added:
            self.unknown.pop(node_id, None)
        for listener in self.listeners:
            listener()
        return True

    async def add(self, node: Node) -> Node:
        added = await self.db.transact(lambda conn: add_node(conn, node))
        await self.refresh()
        return added

    async def update(self, node_id: str, **changes: Any) -> Node:
        updated = await self.db.transact(lambda conn: update_node(conn, node_id, changes))
        await self.refresh()
        return updated

    async def remove(self, node_id: str) -> None:
        await self.db.transact(lambda conn: remove_node(conn, node_id))
        await self.refresh()

"""A real gateway Agent for the link tests, run on an event loop in a thread of its own so a
test can drive blocking peers (a MicroPython node through the bridge, a socket) meanwhile.

    gw = LiveGateway(tmp_path, nodes={"leak-01": ("leak", b"\\x11")}, coap=True)
    gw.start()
    gw.call(gw.agent.downlinks.enqueue("leak-01", {...}))   # run a coroutine on its loop
    gw.refusals("coap", "replay")                           # a metric, read live
    gw.stored()                                              # reading ids committed, read
                                                             # through a connection of its own
    gw.stop()                                                # orderly shutdown
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gateway import registry
from gateway.agent import Agent
from gateway.registry import Node
from gateway.security import NodeKeys, write_node_context
from gateway.store import connect
from gateway.store.db import apply_schema
from tests.gateway.fakes import MemorySink, make_config

T = TypeVar("T")
GATEWAY_ID = b"\x01"
SALT = bytes(range(8))


def secret_of(kid: bytes) -> bytes:
    return bytes((kid[0] ^ i) & 0xFF for i in range(16))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveGateway:
    def __init__(
        self,
        tmp_path: Path,
        nodes: dict[str, tuple[str, bytes]],
        *,
        coap: bool = True,
        lora: dict[str, Any] | None = None,
        unregistered: dict[str, bytes] | None = None,
        node_config: dict[str, dict[str, Any]] | None = None,
        **sections: Any,
    ) -> None:
        self.tmp = tmp_path
        self.port = free_udp_port()
        links: dict[str, Any] = {"coap": {"enabled": coap, "bind": "127.0.0.1", "port": self.port}}
        if lora is not None:
            links["lora"] = lora
        self.config = make_config(tmp_path, links=links, **sections)
        self.nodes = nodes
        keys = self.config.security.keys_dir
        for node_id, (_, kid) in nodes.items():
            write_node_context(keys, node_id, NodeKeys(kid, secret_of(kid), SALT), GATEWAY_ID)
        for node_id, kid in (unregistered or {}).items():  # keys, but not in the registry
            write_node_context(keys, node_id, NodeKeys(kid, secret_of(kid), SALT), GATEWAY_ID)
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        conn = connect(self.config.database_path)
        apply_schema(conn, [registry.SCHEMA])
        for node_id, (kind, _) in nodes.items():
            config = (node_config or {}).get(node_id, {})
            link = "lora" if lora is not None and kind != "coap-only" else "coap"
            link = config.pop("link", link)
            registry.add_node(conn, Node(node_id, kind, link, config=config))
        conn.close()
        self.sink = MemorySink()
        self.agent: Agent | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, **agent_options: Any) -> LiveGateway:
        self.agent = Agent(self.config, sinks=[self.sink], **agent_options)
        self.call(self.agent.start())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.agent is not None:
            self.call(self.agent.shutdown())
            self.agent = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @property
    def metrics(self) -> Any:
        assert self.agent is not None
        return self.agent.metrics

    def refusals(self, link: str, reason: str) -> float:
        return float(self.metrics.refusals.labels(link, reason)._value.get())

    def all_refusals(self) -> dict[tuple[str, str], float]:
        out = {}
        for metric in self.metrics.refusals.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.value:
                    out[(sample.labels["link"], sample.labels["reason"])] = sample.value
        return out

    def stored(self) -> dict[str, dict[str, Any]]:
        """Committed readings, read through a connection of this thread (what survives)."""
        import json

        with sqlite3.connect(self.config.database_path) as conn:
            rows = conn.execute("SELECT reading_id, kind, alarm, data FROM readings").fetchall()
        return {r[0]: {"kind": r[1], "alarm": bool(r[2]), "data": json.loads(r[3])} for r in rows}

    def downlink_states(self) -> dict[int, str]:
        with sqlite3.connect(self.config.database_path) as conn:
            return dict(conn.execute("SELECT id, state FROM downlinks").fetchall())

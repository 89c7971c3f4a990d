"""A running gateway with its web page and simulated nodes reporting, for the page's tests.

The gateway is the real Agent (tests/gateway/link_support.py runs it on a loop in a thread of
its own) with its real CoAP link on 127.0.0.1 and the web page on a free port. Nodes:

- WiFi nodes talk to the real CoAP link over UDP with OSCORE, through the node-side protocol
  code (tests/support/oscore_node.py on CPython): payload encoded by protocol.schema and
  protocol.cbor, as the firmware does; downlinks decoded from the 2.04 the same way.
- LoRa nodes go through the same link step as gateway/links/lora.py, without the radio and
  OSCORE: gateway.uplink.decode_uplink -> pipeline -> encode_downlinks (and they report
  RSSI/SNR, which only the LoRa link knows).

A node's next uplink acks, by id, the downlinks of the previous response: an `ack` record
ahead of its readings, as the firmware sends (protocol/README.md, "Downlink delivery").
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import accounts
from gateway.agent import Agent
from gateway.store.db import apply_schema
from gateway.uplink import decode_uplink, encode_downlinks
from protocol import cbor, coap, schema
from tests.gateway.link_support import GATEWAY_ID, SALT, LiveGateway, secret_of
from tests.support.oscore_node import UDPNode

ACCOUNTS = {
    "olivia": ("operator", "olivia-field-pass-1"),
    "victor": ("viewer", "victor-view-pass-1"),
}
# node id -> (kind, OSCORE kid, link, location)
NODES: dict[str, tuple[str, bytes, str, str]] = {
    "meter-town-hall": ("leak", b"\x21", "coap", "Town hall, Rue Haute 1"),
    "spot-pmr-01": ("occupancy", b"\x22", "coap", "50.8467,4.3525"),
    "bin-grand-place": ("binfill", b"\x23", "coap", "Grand-Place, north corner"),
    "meter-library": ("leak", b"\x24", "coap", "Public library, basement"),
    "lamp-park-03": ("lighting", b"\x31", "lora", "Parc Josaphat, north alley"),
    "lamp-park-04": ("lighting", b"\x32", "lora", "Parc Josaphat, pond"),
    "spot-shop-02": ("occupancy", b"\x33", "lora", "Rue Neuve 12 (Shop & Go)"),
}


@dataclass
class SimNode:
    """A node's application side: what it measures, what it sends, what it was told."""

    node_id: str
    kind: str
    send: Callable[[bytes], bytes]  # uplink payload -> response payload (b"" when none)
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    battery_mv: int = 3640
    firmware: str = "1.4.2"
    received: list[dict[str, Any]] = field(default_factory=list)
    identify_s: int = 0
    report_s: int | None = None
    step: int = 0
    to_ack: list[int] = field(default_factory=list)  # downlink ids applied, for the next uplink
    error: str | None = None  # what its next status reports (firmware/node/status.py)
    safe_mode: bool = False

    def reading(self) -> dict[str, Any]:
        self.step += 1
        n = self.step
        if self.kind == "leak":
            return {
                "type": "leak",
                "volume_l": 120_000 + 35 * n,
                "flow_lh": [12, 30, 18, 44, 25][n % 5],
            }
        if self.kind == "occupancy":
            return {"type": "occupancy", "state": "occupied" if n % 3 else "free", "changes": n}
        if self.kind == "lighting":
            return {"type": "lighting", "level_pct": [20, 80, 100, 60, 20][n % 5], "detections": n}
        return {
            "type": "binfill",
            "fill_pct": min(100, 40 + 9 * n),
            "distance_mm": 900 - 60 * n % 800,
        }

    def status(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": "status",
            "battery_mv": self.battery_mv,
            "uptime_s": 3600 + self.step,
            "boot_count": 3,
            "firmware": self.firmware,
        }
        if self.error is not None:
            record["error"] = self.error
        if self.safe_mode:
            record["safe_mode"] = True
        return record

    def report(
        self, *extra: dict[str, Any], status: bool = True, reading: bool = True
    ) -> list[dict[str, Any]]:
        """One uplink (the ack of what the last one brought, a reading, a status, `extra`
        records; a node in safe mode sends its status alone); the downlinks it brought back
        (without their wire ids)."""
        ack = [{"type": "ack", "confirm": self.to_ack}] if self.to_ack else []
        measured = [self.reading()] if reading else []
        records = [*ack, *measured, *([self.status()] if status else []), *extra]
        for record in records:
            record["seq"] = next(self.seq)
        answer = self.send(bytes(cbor.dumps(schema.encode_uplink(records))))
        self.to_ack = []
        got: list[dict[str, Any]] = schema.decode_downlink(cbor.loads(answer)) if answer else []
        for record in got:
            self.to_ack.append(record.pop("id"))
            self.apply(record)
        self.received.extend(got)
        return got

    def apply(self, record: dict[str, Any]) -> None:
        if record["type"] == "command" and record["command"] == "identify":
            self.identify_s = record.get("duration_s", 10)
        elif record["type"] == "config":
            self.report_s = record.get("report_s", self.report_s)


class WebSite:
    def __init__(self, tmp_path: Path, tls: tuple[Path, Path] | None = None, **sections: Any):
        http: dict[str, Any] = {"enabled": True, "bind": "127.0.0.1", "port": 0}
        if tls is not None:
            http.update(cert_file=str(tls[0]), key_file=str(tls[1]))
        self.gw = LiveGateway(
            tmp_path,
            {node: (kind, kid) for node, (kind, kid, _, _) in NODES.items()},
            node_config={node: {"link": link} for node, (_, _, link, _) in NODES.items()},
            http=http,
            downlinks={"expiry_s": 3600},
            site_id="ixelles",  # default MQTT client id "city-gateway-<site>" must stay <= 23 chars
            **sections,
        )
        conn = sqlite3.connect(self.gw.config.database_path, isolation_level=None)
        apply_schema(conn, [accounts.SCHEMA])
        for name, (role, password) in ACCOUNTS.items():
            accounts.add_account(conn, name, role, password)
        conn.close()
        # The gateway page shows the process's recent INFO lines, as under the real CLI.
        self._level = logging.getLogger("gateway").level
        logging.getLogger("gateway").setLevel(logging.INFO)
        self.gw.start()
        for node, (_, _, _, location) in NODES.items():
            self.call(self.agent.registry.update(node, location=location))
        assert self.agent.http is not None
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{self.agent.http.port}"
        self.udp: list[UDPNode] = []
        self.nodes = {
            node: self._node(node, kind, kid, link) for node, (kind, kid, link, _) in NODES.items()
        }
        self.lora_clock: Callable[[], float] = time.time

    @property
    def agent(self) -> Agent:
        assert self.gw.agent is not None
        return self.gw.agent

    def call(self, coro: Any, timeout: float = 20.0) -> Any:
        return self.gw.call(coro, timeout)

    def _node(self, node_id: str, kind: str, kid: bytes, link: str) -> SimNode:
        if link == "coap":
            udp = UDPNode(self.gw.port, secret_of(kid), kid, GATEWAY_ID, SALT)
            self.udp.append(udp)

            def send_coap(payload: bytes) -> bytes:
                code, answer, _, _ = udp.post("u", payload)
                assert code == coap.CHANGED, f"{node_id}: CoAP answered {code:#x}"
                return bytes(answer)

            return SimNode(node_id, kind, send_coap)
        piv = itertools.count(1)

        def send_lora(payload: bytes) -> bytes:
            return bytes(self.call(self._lora(node_id, next(piv), payload)))

        return SimNode(node_id, kind, send_lora)

    async def _lora(self, node_id: str, piv: int, payload: bytes) -> bytes:
        uplink = decode_uplink(
            node_id, piv, payload, self.lora_clock(), link="lora", rssi_dbm=-97.0, snr_db=6.5
        )
        downlinks = await self.agent.pipeline.handle(uplink)
        answer, _ = encode_downlinks(downlinks, 40)
        return answer

    def downlink_states(self) -> dict[int, str]:
        return self.gw.downlink_states()

    def close(self) -> None:
        if self.gw.thread.is_alive():
            for udp in self.udp:
                udp.close()
            self.gw.close()
        logging.getLogger("gateway").setLevel(self._level)

"""Set up one run of the demo in its folder: the gateway's config, keys, registry and operator
account, and each node's flash and simulated hardware.

    var/demo/run-<time>/
        gateway.toml          the gateway's settings (ports chosen for this run)
        gateway/              its data_dir: gateway.db (registry, readings, downlinks,
                              accounts), oscore/<node>/ (one OSCORE context per node), spool/
        nodes/<node>/         the node's flash: config.json (what `city-node provision`
                              writes), ring.bin, ...; .sim/ its simulated hardware
        logs/                 gateway.log, medium.log, nodes/<node>.log (the consoles)
        summary.json          what the story showed, written when the demo stops

Each node goes through the technician tool's own library (tools/provision.py): its config.json
is built by `node_config` and checked by the firmware's validator, and the gateway side
(OSCORE context folder and registry row) is written in one transaction by `GatewaySide`, with
fresh keys for every run (16-byte master secret, 8-byte salt). Only the USB cable is missing:
the config lands in the sim node's folder, which is its flash. The operator account gets a
password generated here and printed on the console: there is no default password anywhere.
"""

from __future__ import annotations

import importlib
import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import accounts
from gateway.config import GatewayConfig
from gateway.config import load as load_config
from gateway.downlinks import Downlinks
from gateway.security import NodeKeys
from gateway.store.db import Database, apply_schema, connect
from tools import provision as provisioning
from tools.demo.city_block import NodeSpec
from tools.demo.scenario import START_S, Story, sensors

LORA_SF = 7  # a block-sized site: short range, shortest airtime
SITE = "demo"
OPERATOR = "demo"
STATUS_S = 6 * 3600


@dataclass(frozen=True)
class Ports:
    coap: int
    http: int
    medium: int


@dataclass(frozen=True)
class Run:
    folder: Path
    config_path: Path
    config: GatewayConfig
    node_folders: dict[str, Path]
    wifi: dict[str, str]


def gateway_toml(
    ports: Ports,
    mqtt: tuple[str, int] | None,
    client_id: str,
    log_level: str = "INFO",
) -> str:
    """The gateway's config for this run: CoAP and the simulated LoRa medium on 127.0.0.1,
    the web page on `ports.http`, readings to mosquitto when one runs, else to the spool."""
    return f"""\
# Written by `make demo` for this run only.
site_id = "{SITE}"
data_dir = "gateway"

[store]
max_size = "64 MiB"

[links.coap]
bind = "127.0.0.1"
port = {ports.coap}

[links.lora]
mode = "sim"
sim_medium = "127.0.0.1:{ports.medium}"
sim_position = [0, 0]
spreading_factor = {LORA_SF}

[sinks.spool]
enabled = {str(mqtt is None).lower()}

[sinks.mqtt]
enabled = {str(mqtt is not None).lower()}
host = "{mqtt[0] if mqtt else "127.0.0.1"}"
port = {mqtt[1] if mqtt else 1883}
client_id = "{client_id}"

[forwarding]
batch_time_s = 0.2  # the narration follows what reached upstream: keep it prompt

[downlinks]
expiry_s = 3600.0

[http]
bind = "127.0.0.1"
port = {ports.http}

[logging]
level = "{log_level}"
format = "text"
"""


def technician_spec(spec: NodeSpec, ports: Ports, wifi: dict[str, str]) -> provisioning.NodeSpec:
    """What a technician would type into `city-node provision` for this node."""
    return provisioning.NodeSpec(
        node_id=spec.node_id,
        kind=spec.kind,
        link=spec.link,
        location=spec.location,
        notes=spec.place,
        status_s=STATUS_S,
        kind_config=dict(spec.kind_config),
        wifi_ssid=wifi["ssid"],
        wifi_password=wifi["password"],
        gateway_host="127.0.0.1",
        gateway_port=ports.coap,
        lora={"sf": LORA_SF},
    )


def board_settings(
    spec: NodeSpec, ports: Ports, speed: float, wifi: dict[str, str]
) -> dict[str, Any]:
    """The node's .sim/board.json: its simulated hardware (lamps get their sockets later)."""
    return {
        "speed": speed,
        "position": list(spec.position),
        "medium": ["127.0.0.1", ports.medium],
        "unique_id": f"5e0000{spec.kid[0]:06x}",
        "epoch_s": START_S,
        "wlan": dict(wifi),
    }


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


async def provision(
    folder: Path,
    specs: list[NodeSpec],
    story: Story,
    ports: Ports,
    *,
    mqtt: tuple[str, int] | None,
    node_speed: float,
    log_level: str = "INFO",
) -> Run:
    """Write everything a run needs; the gateway is not running yet."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs" / "nodes").mkdir(parents=True, exist_ok=True)
    config_path = folder / "gateway.toml"
    client_id = f"city-demo-{secrets.token_hex(4)}"
    config_path.write_text(gateway_toml(ports, mqtt, client_id, log_level))
    config = load_config(config_path)
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    wifi = {"ssid": "city-demo", "password": secrets.token_urlsafe(12)}
    folders: dict[str, Path] = {}
    gateway_side = provisioning.GatewaySide(config)
    for spec in specs:
        # the technician tool's own steps, minus the USB cable: the node's config.json checked
        # by the firmware's validator, then the key folder and registry row in one transaction
        wanted = technician_spec(spec, ports, wifi)
        keys = NodeKeys.generate(spec.kid)
        node_cfg = provisioning.node_config(wanted, keys)
        errors = _firmware_errors(node_cfg)
        if errors:
            raise ValueError(f"{spec.node_id}: the firmware refuses its config: {errors}")
        gateway_side.register(wanted, keys, spec.registry_config())
        node_folder = folder / "nodes" / spec.node_id
        _write_json(node_folder / "config.json", node_cfg)
        board = board_settings(spec, ports, node_speed, wifi)
        _write_json(node_folder / ".sim" / "board.json", board)
        _write_json(node_folder / ".sim" / "scenario.json", sensors(spec))
        folders[spec.node_id] = node_folder
    await _time_syncs(config, specs, story)
    return Run(folder, config_path, config, folders, wifi)


def _firmware_errors(node_cfg: dict[str, Any]) -> list[str]:
    try:
        return provisioning.firmware_errors(node_cfg)
    except AttributeError:
        # the lighting kind reaches for MicroPython's time.ticks_ms when it is built on
        # CPython: check what can be checked here, the config file itself
        config_module = importlib.import_module("firmware.node.config")
        return list(config_module.validate(dict(node_cfg))[1])


async def _time_syncs(config: GatewayConfig, specs: list[NodeSpec], story: Story) -> None:
    """Each battery node's time sync, queued before it first reports (its night rules need
    the local time, and the gateway sends none by itself)."""
    from gateway.agent import SCHEMAS  # noqa: PLC0415 - the agent's full schema set, once

    db = Database(config.database_path)
    await db.open(SCHEMAS)
    try:
        downlinks = Downlinks(db, config.downlinks.expiry_s)
        for spec in specs:
            if spec.battery:
                sync = story.time_sync(spec.node_id)
                await downlinks.enqueue(spec.node_id, sync, origin="demo:time-sync")
    finally:
        await db.close()


def create_operator(config: GatewayConfig) -> tuple[str, str]:
    """A web page account with the operator role and a fresh random password."""
    password = secrets.token_urlsafe(12)
    conn: sqlite3.Connection = connect(config.database_path)
    try:
        apply_schema(conn, [accounts.SCHEMA])
        conn.execute("BEGIN IMMEDIATE")
        accounts.add_account(conn, OPERATOR, "operator", password)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return OPERATOR, password

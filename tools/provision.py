"""`city-node provision`: give a flashed node its identity, keys and settings, and register it
with the gateway, all or nothing.

Run it on the gateway host as the gateway's service user, with the node on USB:

    sudo -u city-gateway city-node provision --port /dev/ttyUSB0 \\
        --gateway-config /etc/city-gateway/gateway.toml --node-id leak-0042 --kind leak \\
        --link coap --wifi-ssid city --wifi-password ... --gateway-host 192.168.10.1 \\
        --location "Ecole Jaures, meter room"

The steps, and what a failure at each one leaves behind (nothing half-provisioned):

    connect    the REPL, an ESP32 (or the sim board) with the application flashed
    read       the node's current config.json, kept to restore
    prepare    the gateway: the node id is free (or --replace), a free OSCORE key id; fresh key
               material (16-byte master secret, 8-byte salt); the config is checked by the
               firmware's own validator
    stage      config.json.new written to the node and read back: not active yet
    register   one gateway transaction: the key folder and the registry row, committed together
               (the folder is removed if the row cannot be committed)
    activate   config.json.new renamed over config.json on the node (atomic on littlefs), read
               back by hash
    reset      the node restarts with its new identity

A failure in stage removes config.json.new; in register, the transaction rolls back and the key
folder goes; in activate, the registration is undone (with --replace, the previous row and keys
come back) and the node's previous config.json is put back if it had been replaced. The one
window a crash of this tool cannot close is between register and activate (one rename on the
node): `city-node check --gateway-config ...` shows such a node as registered but not
configured, and running provision again with --replace finishes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import registry
from gateway.config import GatewayConfig
from gateway.security import MAX_ID_LEN, NodeKeys, write_node_context
from gateway.store.db import apply_schema, connect
from tools.node import NodeConnection, NodeError

GATEWAY_ID = b""  # the gateway's OSCORE sender id: empty, the shortest (every node's recipient)
KINDS = ("leak", "occupancy", "lighting", "binfill")
LINKS = ("coap", "lora")
CONFIG = "config.json"
STAGED = "config.json.new"
STEPS = ("connect", "read", "prepare", "stage", "register", "activate", "reset")


class ProvisionError(NodeError):
    """Provisioning stopped; `step` says where, and nothing was left half-done."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"provisioning stopped at step '{step}': {message}")
        self.step = step


@dataclass(frozen=True)
class NodeSpec:
    """What the technician decides about a node."""

    node_id: str
    kind: str
    link: str
    location: str = ""
    notes: str = ""
    report_s: int | None = None
    status_s: int | None = None
    kind_config: Mapping[str, Any] = field(default_factory=dict)
    wifi_ssid: str = ""
    wifi_password: str = ""
    gateway_host: str = ""
    gateway_port: int = 5683
    listen_port: int | None = None  # a lamp's own CoAP port for the gateway's wake-ups
    lora: Mapping[str, Any] = field(default_factory=dict)  # firmware config "lora" keys
    extra: Mapping[str, Any] = field(default_factory=dict)  # other config.json keys (pins...)
    neighbours: tuple[str, ...] = ()  # lamps the gateway wakes when this one sees someone

    def check(self) -> None:
        if not registry.NODE_ID.fullmatch(self.node_id):
            raise ValueError(
                f"node id {self.node_id!r}: 1-64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.link not in LINKS:
            raise ValueError(f"link {self.link!r}: one of {', '.join(LINKS)}")
        if self.link == "coap" and not (self.wifi_ssid and self.gateway_host):
            raise ValueError("a CoAP (WiFi) node needs --wifi-ssid and --gateway-host")


@dataclass(frozen=True)
class Registration:
    node_id: str
    kid: bytes
    keys: NodeKeys
    previous: registry.Node | None = None  # what --replace replaced
    previous_keys: Path | None = None  # a copy of the replaced key folder


def node_config(spec: NodeSpec, keys: NodeKeys, gateway_id: bytes = GATEWAY_ID) -> dict[str, Any]:
    """config.json for the node (firmware/node/config.py documents every key)."""
    kind_config = dict(spec.kind_config)
    if spec.report_s is not None:
        kind_config["report_s"] = spec.report_s
    cfg: dict[str, Any] = {
        "node_id": spec.node_id,
        "kind": spec.kind,
        "link": spec.link,
        "kind_config": kind_config,
        "oscore": {
            "secret": keys.master_secret.hex(),
            "salt": keys.master_salt.hex(),
            "sender_id": keys.recipient_id.hex(),
            "recipient_id": gateway_id.hex(),
        },
    }
    if spec.location:
        cfg["location"] = spec.location
    if spec.status_s is not None:
        cfg["status_s"] = spec.status_s
    if spec.link == "coap":
        cfg["wifi"] = {"ssid": spec.wifi_ssid, "password": spec.wifi_password}
        coap: dict[str, Any] = {"host": spec.gateway_host, "port": spec.gateway_port}
        if spec.listen_port is not None:
            coap["listen_port"] = spec.listen_port
        cfg["coap"] = coap
    else:
        cfg["lora"] = dict(spec.lora)
    for key, value in spec.extra.items():
        if key in cfg and isinstance(cfg[key], dict) and isinstance(value, dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def firmware_errors(cfg: Mapping[str, Any]) -> list[str]:
    """The firmware's own verdict on a config (firmware/node/config.py and the kind's checks,
    run here on CPython): a node must never boot with a setting it would drop."""
    config_module = importlib.import_module("firmware.node.config")
    _, errors = config_module.validate(dict(cfg))
    kinds = importlib.import_module("firmware.kinds")
    module_name, class_name = kinds.KINDS[cfg["kind"]]
    kind_class = getattr(importlib.import_module(module_name), class_name)
    # the lamp's kind reads time.ticks_ms unless given a clock: CPython has none
    extra = {"ticks_ms": lambda: 0} if cfg["kind"] == "lighting" else {}
    try:
        kind_class(dict(cfg.get("kind_config") or {}), None, **extra)
    except ValueError as exc:
        errors.append(f"kind_config: {exc}")
    return list(errors)


def kid_of(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


class GatewaySide:
    """The gateway's registry and key folders, written the way `city-gateway node add` and
    gateway.security do (the daemon picks both up while it runs)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.keys_dir = config.security.keys_dir

    def _connect(self) -> sqlite3.Connection:
        os.umask(0o077)  # anything created here is the service user's alone
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = connect(self.config.database_path)
        apply_schema(conn, [registry.SCHEMA])
        return conn

    def used_kids(self) -> set[bytes]:
        used = set()
        if self.keys_dir.is_dir():
            for settings in self.keys_dir.glob("*/settings.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    used.add(bytes.fromhex(json.loads(settings.read_text())["recipient-id_hex"]))
        return used

    def free_kid(self, keep: bytes | None = None) -> bytes:
        """The smallest unused key id (a node re-provisioned with --replace keeps its own)."""
        if keep is not None:
            return keep
        used = self.used_kids()
        n = 1
        while kid_of(n) in used:
            n += 1
        kid = kid_of(n)
        if len(kid) > MAX_ID_LEN:
            raise ValueError("no OSCORE key id left")
        return kid

    def current(self, node_id: str) -> registry.Node | None:
        conn = self._connect()
        try:
            return registry.get_node(conn, node_id)
        finally:
            conn.close()

    def current_kid(self, node_id: str) -> bytes | None:
        settings = self.keys_dir / node_id / "settings.json"
        try:
            return bytes.fromhex(json.loads(settings.read_text())["recipient-id_hex"])
        except (OSError, ValueError, KeyError):
            return None

    def register(
        self, spec: NodeSpec, keys: NodeKeys, summary: Mapping[str, Any], replace: bool = False
    ) -> Registration:
        """Key folder and registry row, committed together or not at all. Without `replace`,
        a node registered meanwhile (another provisioner, the gateway CLI) is refused."""
        conn = self._connect()
        backup: Path | None = None
        folder = self.keys_dir / spec.node_id
        wrote_keys = False
        try:
            conn.execute("BEGIN IMMEDIATE")  # one provisioner at a time from here
            previous = registry.get_node(conn, spec.node_id)
            if previous is not None and not replace:
                raise registry.RegistryError(f"node {spec.node_id!r} already exists")
            clash = keys.recipient_id in self.used_kids()
            if clash and self.current_kid(spec.node_id) != keys.recipient_id:
                raise registry.RegistryError(
                    f"OSCORE key id {keys.recipient_id.hex()} was taken meanwhile: run again"
                )
            if folder.exists():
                backup = self.keys_dir / f".{spec.node_id}.replaced-{os.getpid()}"
                shutil.rmtree(backup, ignore_errors=True)
                shutil.copytree(folder, backup, ignore=shutil.ignore_patterns("lock"))
            node = registry.Node(
                node_id=spec.node_id,
                kind=spec.kind,
                link=spec.link,
                location=spec.location,
                notes=spec.notes,
                config=dict(summary),
                key_ref=spec.node_id,
            )
            if previous is None:
                registry.add_node(conn, node)
            else:
                changes = {
                    "kind": node.kind,
                    "link": node.link,
                    "location": node.location,
                    "notes": node.notes or previous.notes,
                    "config": node.config,
                    "key_ref": node.key_ref,
                }
                registry.update_node(conn, spec.node_id, changes)
            wrote_keys = True
            write_node_context(self.keys_dir, spec.node_id, keys, GATEWAY_ID)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if wrote_keys:
                self._restore_keys(folder, backup)
            elif backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
            raise
        finally:
            conn.close()
        return Registration(spec.node_id, keys.recipient_id, keys, previous, backup)

    def _restore_keys(self, folder: Path, backup: Path | None) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        if backup is not None and backup.exists():
            backup.rename(folder)

    def undo(self, registration: Registration) -> None:
        """Take a registration back: the previous row and keys, or none at all."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if registration.previous is None:
                with contextlib.suppress(registry.RegistryError):
                    registry.remove_node(conn, registration.node_id)
            else:
                old = registration.previous
                fields = ("kind", "link", "location", "notes", "config", "key_ref")
                registry.update_node(
                    conn, old.node_id, {name: getattr(old, name) for name in fields}
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        self._restore_keys(self.keys_dir / registration.node_id, registration.previous_keys)

    def done(self, registration: Registration) -> None:
        if registration.previous_keys is not None:
            shutil.rmtree(registration.previous_keys, ignore_errors=True)


@dataclass
class Outcome:
    spec: NodeSpec
    kid: bytes
    unique_id: str
    firmware: str
    config: dict[str, Any]
    replaced: bool
    when: float = field(default_factory=time.time)

    def label(self) -> str:
        """The label summary for the node's housing and the site log. No secrets."""
        spec = self.spec
        rows = [
            ("node", spec.node_id),
            ("kind", spec.kind),
            ("link", spec.link),
            ("location", spec.location or "-"),
            ("device id", self.unique_id),
            ("OSCORE kid", self.kid.hex()),
            ("firmware", self.firmware),
            ("report every", f"{self.config['kind_config'].get('report_s', 'default')} s"),
            ("status every", f"{self.config.get('status_s', 'default')} s"),
            ("provisioned", time.strftime("%Y-%m-%d %H:%M", time.localtime(self.when))),
        ]
        if spec.link == "coap":
            rows.insert(3, ("gateway", f"{spec.gateway_host}:{spec.gateway_port}"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        inner = max(len(line) for line in lines)
        bar = "+" + "-" * (inner + 2) + "+"
        return "\n".join([bar, *(f"| {line.ljust(inner)} |" for line in lines), bar])


Checkpoint = Callable[[str], None]


def _nothing(_step: str) -> None:
    pass


class Provisioner:
    """Runs the steps; `checkpoint(step)` is called before each (the tests fail steps there)."""

    def __init__(
        self,
        port: str,
        gateway: GatewaySide,
        *,
        wait_s: float = 5.0,
        replace: bool = False,
        reset: bool = True,
        checkpoint: Checkpoint = _nothing,
        say: Callable[[str], None] = print,
    ) -> None:
        self.port = port
        self.gateway = gateway
        self.wait_s = wait_s
        self.replace = replace
        self.reset = reset
        self.checkpoint = checkpoint
        self.say = say
        self.node: NodeConnection | None = None

    def _step(self, name: str) -> str:
        self.checkpoint(name)
        return name

    def run(self, spec: NodeSpec) -> Outcome:
        step = "connect"
        try:
            spec.check()
            self._step(step)
            node = self.node = NodeConnection.open(self.port, self.wait_s)
            info = node.info
            assert info is not None
            manifest = node.read_file("app.json")
            if manifest is None and not node.exists("firmware"):
                raise NodeError("the application is not on the node: run `city-node flash` first")
            firmware = str(json.loads(manifest)["version"]) if manifest else "unknown"

            step = self._step("read")
            old_config = node.read_file(CONFIG)

            step = self._step("prepare")
            previous = self.gateway.current(spec.node_id)
            if previous is not None and not self.replace:
                raise NodeError(
                    f"{spec.node_id} is already registered at the gateway (kind {previous.kind}, "
                    f"{previous.location or 'no location'}): use --replace to re-key it"
                )
            keep = self.gateway.current_kid(spec.node_id) if self.replace else None
            keys = NodeKeys.generate(self.gateway.free_kid(keep))
            cfg = node_config(spec, keys)
            errors = firmware_errors(cfg)
            if errors:
                raise NodeError("the firmware would refuse this config: " + "; ".join(errors))
            data = json.dumps(cfg, sort_keys=True).encode()
            summary = {
                "unique_id": info.unique_id,
                "kid": keys.recipient_id.hex(),
                "firmware": firmware,
                "report_s": cfg["kind_config"].get("report_s"),
                "status_s": cfg.get("status_s"),
            }
            if spec.neighbours:
                summary["neighbours"] = list(spec.neighbours)
        except NodeError as exc:
            self._close()
            raise ProvisionError(step, str(exc)) from None
        except (ValueError, OSError, sqlite3.Error) as exc:
            self._close()
            raise ProvisionError(step, str(exc)) from None

        registration: Registration | None = None
        try:
            step = self._step("stage")
            node.write_file(STAGED, data)
            step = self._step("register")
            registration = self.gateway.register(spec, keys, summary, self.replace)
            step = self._step("activate")
            self._activate(node, data)
        except (NodeError, ValueError, OSError, sqlite3.Error) as exc:
            self._roll_back(step, registration, old_config)
            raise ProvisionError(step, str(exc)) from None
        except BaseException:
            self._roll_back(step, registration, old_config)
            raise
        self.gateway.done(registration)
        outcome = Outcome(spec, keys.recipient_id, info.unique_id, firmware, cfg, bool(previous))
        step = self._step("reset")
        if self.reset:
            node.reset()
        else:
            node.close()
        self.node = None
        return outcome

    @staticmethod
    def _activate(node: NodeConnection, data: bytes) -> None:
        digest = node.exec(
            "import os, hashlib, binascii\n"
            f"os.rename({STAGED!r}, {CONFIG!r})\n"
            f"print(binascii.hexlify(hashlib.sha256(open({CONFIG!r}, 'rb').read()).digest())"
            ".decode())\n"
        ).strip()
        if digest != hashlib.sha256(data).hexdigest():
            raise NodeError("config.json does not read back as written")

    def _roll_back(
        self, step: str, registration: Registration | None, old_config: bytes | None
    ) -> None:
        if registration is not None:
            self.gateway.undo(registration)
        node = self.node
        if node is None:
            return
        try:
            if step == "activate":
                self._restore_node(node, old_config)
            else:
                node.remove_tree(STAGED)
        except NodeError:
            # the node is gone (unplugged, powered off): reconnect once to put it right
            self._close()
            try:
                node = self.node = NodeConnection.open(self.port, self.wait_s)
                if step == "activate":
                    self._restore_node(node, old_config)
                node.remove_tree(STAGED)
            except NodeError as exc:
                self.say(f"warning: could not reach the node to clean up ({exc}); its")
                self.say("config.json is the old one unless the last rename went through:")
                self.say("check it with `city-node check` before use")
        self._close()

    @staticmethod
    def _restore_node(node: NodeConnection, old_config: bytes | None) -> None:
        current = node.read_file(CONFIG)
        if current == old_config:
            node.remove_tree(STAGED)
            return
        if old_config is None:
            node.remove_tree(CONFIG)
        else:
            node.write_file(STAGED, old_config)
            node.rename(STAGED, CONFIG)
        node.remove_tree(STAGED)

    def _close(self) -> None:
        if self.node is not None:
            with contextlib.suppress(NodeError):
                self.node.close()
            self.node = None


def registry_view(config: GatewayConfig, node_id: str) -> dict[str, Any] | None:
    """What the gateway knows of a node (registry row, key id, last report), for `check`."""
    side = GatewaySide(config)
    node = side.current(node_id)
    if node is None:
        return None
    view: dict[str, Any] = {
        "kind": node.kind,
        "link": node.link,
        "location": node.location,
        "kid": (side.current_kid(node_id) or b"").hex() or None,
    }
    conn = connect(config.database_path)
    try:
        try:
            row = conn.execute(
                "SELECT last_seen, battery_mv, rssi_dbm, firmware, uplinks FROM node_state"
                " WHERE node_id = ?",
                (node_id,),
            ).fetchone()
        except sqlite3.OperationalError:
            row = None  # the daemon never ran: no state table yet
    finally:
        conn.close()
    if row is not None:
        names = ("last_seen", "battery_mv", "rssi_dbm", "firmware", "uplinks")
        view.update(zip(names, row, strict=True))
    return view


__all__ = [
    "STEPS",
    "GatewaySide",
    "NodeSpec",
    "Outcome",
    "ProvisionError",
    "Provisioner",
    "node_config",
    "registry_view",
]

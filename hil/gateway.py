"""The gateway side of a rig: a real gateway process, and what a test observes of it.

- `GatewayProcess`: `python -m gateway --config <rig's gateway.toml>`, started, stopped
  (SIGTERM: an orderly shutdown), killed (SIGKILL) and started again; readiness is its systemd
  READY=1 (sd_notify on a socket of ours). Its data folder holds the registry, the store, the
  key folders and the spool.
- Observation: the spool (the JSON documents the MQTT sink publishes too), the node state
  table, /metrics, and the field staff web page through a logged-in operator session.
- `Mosquitto` and `MQTTWatch`: a broker on 127.0.0.1 and a subscriber collecting what the
  gateway publishes.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class RigError(RuntimeError):
    """The rig itself failed (a process did not start): not a finding about the node."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something true; AssertionError naming `what` if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class GatewaySettings:
    coap_bind: str = "127.0.0.1"
    coap_port: int = 0  # 0: a free port
    lora_mode: str = "off"  # off | sim | rfm9x
    medium: tuple[str, int] | None = None
    lora_position: tuple[float, float] = (0.0, 0.0)
    lora_sf: int = 7
    mqtt_port: int | None = None
    http_port: int = 0
    http_bind: str = "127.0.0.1"
    extra_toml: str = ""  # appended verbatim (tests tune forwarding, store size...)


class GatewayProcess:
    def __init__(self, workdir: Path, settings: GatewaySettings | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.settings = settings or GatewaySettings()
        if not self.settings.coap_port:
            self.settings.coap_port = free_port(socket.SOCK_DGRAM)
        if not self.settings.http_port:
            self.settings.http_port = free_port()
        self.config_path = self.workdir / "gateway.toml"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.write_config()
        self._web: WebClient | None = None

    # -- configuration -----------------------------------------------------------------------
    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "oscore"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def database(self) -> Path:
        return self.data_dir / "gateway.db"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def write_config(self) -> None:
        s = self.settings
        lines = [
            'site_id = "hil"',
            f'data_dir = "{self.data_dir}"',
            "[store]",
            "group_commit_ms = 1.0",
            "[links.coap]",
            "enabled = true",
            f'bind = "{s.coap_bind}"',
            f"port = {s.coap_port}",
            "[links.lora]",
            f'mode = "{s.lora_mode}"',
            f"spreading_factor = {s.lora_sf}",
        ]
        if s.medium is not None:
            lines.append(f'sim_medium = "{s.medium[0]}:{s.medium[1]}"')
            lines.append(f"sim_position = [{s.lora_position[0]}, {s.lora_position[1]}]")
        lines += ["[sinks.spool]", "enabled = true"]
        if s.mqtt_port is not None:
            lines += ["[sinks.mqtt]", "enabled = true", 'host = "127.0.0.1"']
            lines.append(f"port = {s.mqtt_port}")
        lines += [
            "[forwarding]",
            "batch_time_s = 0.1",
            "retry_base_s = 0.2",
            "retry_max_s = 2.0",
            "[http]",
            "enabled = true",
            f'bind = "{s.http_bind}"',
            f"port = {s.http_port}",
            "[logging]",
            'level = "INFO"',
            'format = "json"',
        ]
        self.config_path.write_text("\n".join(lines) + "\n" + s.extra_toml)

    # -- the process -------------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gateway", "--config", str(self.config_path), *args]

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`city-gateway --config <ours> ARGS` (registry, accounts...)."""
        return subprocess.run(
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        notify_path = self.workdir / f"notify-{self.starts}.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(0.2)
        env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=str(notify_path))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RigError(f"the gateway exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    message = notify.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in message:
                    return
            raise RigError(f"the gateway did not get ready in {timeout:g} s:\n{self.log()}")
        finally:
            notify.close()
            notify_path.unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM: the orderly shutdown (store flushed, OSCORE contexts written back)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self._web = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._web = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload_keys(self) -> None:
        """The daemon loads the OSCORE key folders at start only: a node provisioned while it
        runs is heard after a restart (the registry itself it re-reads every second)."""
        if self.running:
            self.restart()

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        return records

    # -- observation ---------------------------------------------------------------------------
    def spool(self) -> list[dict[str, Any]]:
        """Every reading the spool sink delivered, oldest first (duplicates kept)."""
        out: list[dict[str, Any]] = []
        if not self.spool_dir.is_dir():
            return out
        files = sorted(self.spool_dir.glob("readings-*.jsonl"))
        current = self.spool_dir / "current.jsonl"
        if current.exists():
            files.append(current)
        for path in files:
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def readings(self, node_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.spool()
            if (node_id is None or reading_node(r) == node_id)
            and (kind is None or reading_kind(r) == kind)
        ]

    def wait_readings(
        self,
        node_id: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 30.0,
        what: str = "readings",
    ) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            found = self.readings(node_id)
            return found if predicate(found) else None

        result: list[dict[str, Any]] = wait_until(check, timeout, f"{what} of {node_id}")
        return result

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.database.exists():
            return []
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            return list(conn.execute(sql, args))
        except sqlite3.OperationalError:
            return []  # the table does not exist yet
        finally:
            conn.close()

    def node_state(self, node_id: str) -> dict[str, Any] | None:
        rows = self.query(
            "SELECT last_seen, link, rssi_dbm, snr_db, battery_mv, firmware, uplinks"
            " FROM node_state WHERE node_id = ?",
            (node_id,),
        )
        if not rows:
            return None
        names = ("last_seen", "link", "rssi_dbm", "snr_db", "battery_mv", "firmware", "uplinks")
        return dict(zip(names, rows[0], strict=True))

    def downlinks(self, node_id: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT id, command, state, attempts FROM downlinks WHERE node_id = ? ORDER BY id",
            (node_id,),
        )
        return [
            {"id": r[0], "command": json.loads(r[1]), "state": r[2], "attempts": r[3]} for r in rows
        ]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a Prometheus sample over the series matching `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name):
                continue
            match = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
            if match is None or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total

    def web(self) -> WebClient:
        """An operator session on the field staff page (the account is made on first use)."""
        if self._web is None:
            client = WebClient(self.http_url)
            done = self.cli("account", "add", "hil", "--role", "operator", "--password-stdin",
                            stdin=WebClient.PASSWORD + "\n")  # fmt: skip
            if done.returncode not in (0, 1):
                raise RigError(f"could not create the web account: {done.stderr}")
            client.login("hil", WebClient.PASSWORD)
            self._web = client
        return self._web


def reading_node(reading: dict[str, Any]) -> str | None:
    value = reading.get("node") or reading.get("node_id")
    return str(value) if value is not None else None


def reading_kind(reading: dict[str, Any]) -> str | None:
    value = reading.get("kind") or reading.get("type")
    return str(value) if value is not None else None


def reading_data(reading: dict[str, Any]) -> dict[str, Any]:
    data = reading.get("data")
    return data if isinstance(data, dict) else reading


class WebClient:
    """A browser stand-in: cookies, the login form, CSRF tokens from the forms."""

    PASSWORD = "hil-rig-operator-password-1"

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=15) as response:
            return str(response.read().decode())

    def post(self, path: str, form: dict[str, str]) -> str:
        body = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(
            self.base + path,
            data=body,
            headers={"Origin": self.base, "Referer": self.base + path},
        )
        with self.opener.open(request, timeout=15) as response:
            return str(response.read().decode())

    @staticmethod
    def csrf(page: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        if match is None:
            raise RigError("no CSRF token in the page")
        return match.group(1)

    def login(self, username: str, password: str) -> None:
        page = self.get("/login")
        form = {"username": username, "password": password, "csrf": self.csrf(page), "next": "/"}
        try:
            self.post("/login", form)
        except urllib.error.HTTPError as exc:
            raise RigError(f"login refused: {exc.code}") from None

    def node_page(self, node_id: str) -> str:
        return self.get(f"/nodes/{urllib.parse.quote(node_id)}")

    def action(self, node_id: str, action: str, **fields: str) -> str:
        page = self.node_page(node_id)
        form = {"action": action, "csrf": self.csrf(page), **fields}
        return self.post(f"/nodes/{urllib.parse.quote(node_id)}/actions", form)


# -- MQTT ---------------------------------------------------------------------------------------
@dataclass
class Mosquitto:
    directory: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        conf = self.directory / "mosquitto.conf"
        self.directory.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        self.stop()
        raise RigError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@dataclass
class MQTTWatch:
    """Subscribes to city/# and keeps (topic, JSON payload) of every message."""

    port: int
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: Any = None

    def start(self) -> None:
        import paho.mqtt.client as paho  # noqa: PLC0415 - only rigs with a broker need it
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="hil-watch")
        connected = threading.Event()

        def on_connect(c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
            c.subscribe("city/#", qos=1)
            connected.set()

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            with contextlib.suppress(ValueError):
                payload = json.loads(message.payload)
                with self._lock:
                    self.messages.append((str(message.topic), payload))

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        if not connected.wait(10):
            raise RigError("could not subscribe to the rig's broker")
        time.sleep(0.1)  # the SUBACK
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def for_node(self, node_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(t, p) for t, p in self.messages if t.endswith("/" + node_id)]


@contextlib.contextmanager
def running(gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()

"""Real peers for the sink tests, all on 127.0.0.1: mosquitto and an NGSI-LD broker.

`mosquitto_factory(password=..., tls=..., acl=...)` starts Debian's mosquitto on a free port with a
config written into the test's tmp_path (anonymous, or a password file made by
`mosquitto_passwd`; TLS with a throwaway CA and server certificate made by `cryptography`).
`ngsi_ld_broker` is the validating broker of tests/gateway/ngsi_ld_broker.py in a thread.
`send_all(sink, *batches)` runs a sink's whole life (start, sends, close) for its tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.records import Reading
from gateway.sinks.base import SendResult, Sink
from gateway.sinks.entities import NodeFacts
from protocol import schema
from tests.gateway.ngsi_ld_broker import NGSILDBroker

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (P-256, one day)."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca_cert = (
        build("test CA", ca_key)
        .issuer_name(ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        build("127.0.0.1", key)
        .issuer_name(ca_name)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass
class Mosquitto:
    """One mosquitto process; `stop()` and `start()` again keep the same port and config."""

    directory: Path
    port: int
    password: tuple[str, str] | None = None
    tls: TLSFiles | None = None
    acl: list[str] | None = None  # lines of a mosquitto acl_file
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def write_config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr"]
        if os.geteuid() == 0:
            lines.append("user root")  # as root mosquitto would switch to a user of its own
        if self.password:
            pwfile = self.directory / "passwd"
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", "-c", str(pwfile), *self.password],
                check=True,
                capture_output=True,
            )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl_file = self.directory / "acl"
            acl_file.write_text("\n".join(self.acl) + "\n")
            lines.append(f"acl_file {acl_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        conf = self.directory / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    @property
    def log(self) -> Path:
        return self.directory / "mosquitto.log"

    def start(self) -> Mosquitto:
        conf = self.directory / "mosquitto.conf"
        if not conf.exists():
            conf = self.write_config()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        if not wait_listening(self.port):
            self.stop()
            pytest.fail(f"mosquitto did not start on port {self.port}:\n{self.log.read_text()}")
        self.restarts += 1
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: `make test` installs the Debian package")
    started: list[Mosquitto] = []

    def factory(
        password: tuple[str, str] | None = None, tls: bool = False, acl: list[str] | None = None
    ) -> Mosquitto:
        directory = tmp_path / f"mosquitto{len(started)}"
        directory.mkdir()
        broker = Mosquitto(
            directory,
            free_port(),
            password=password,
            tls=make_tls(directory) if tls else None,
            acl=acl,
        )
        started.append(broker)
        return broker.start()

    yield factory
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory()


@dataclass
class Subscriber:
    """A plain paho subscriber on `topic`, recording (topic, payload) in arrival order."""

    broker: Mosquitto
    topic: str = "#"
    credentials: tuple[str, str] | None = None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="", protocol=MQTTProtocolVersion.MQTTv5
        )
        if self.credentials:
            self.client.username_pw_set(*self.credentials)
        if self.broker.tls:
            self.client.tls_set(ca_certs=str(self.broker.tls.ca))
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe(self.topic, qos=1)
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._arrived:
            self.messages.append((msg.topic, msg.payload))
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def factory(broker: Mosquitto, **kwargs: object) -> Subscriber:
        made.append(Subscriber(broker, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for sub in made:
        sub.close()


@pytest.fixture
def ngsi_ld_broker() -> Iterator[NGSILDBroker]:
    broker = NGSILDBroker().start()
    yield broker
    broker.stop()


# ---- readings as the store hands them to sinks ----------------------------------------------

SITE = "riverside"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NODES = {  # node id -> (kind, (longitude, latitude))
    "meter-01": ("leak", (4.8357, 45.764)),
    "spot-07": ("occupancy", (4.8361, 45.7652)),
    "lamp-03": ("lighting", (4.8349, 45.7644)),
    "bin-12": ("binfill", (4.8372, 45.7639)),
}
# One realistic message of each uplink record type (protocol/schema.py names), by node.
SAMPLES: list[tuple[str, dict[str, object]]] = [
    ("meter-01", {"type": "leak", "volume_l": 1234567, "flow_lh": 120, "night_flow_lh": 3}),
    (
        "meter-01",
        {"type": "leak", "volume_l": 1234600, "flow_lh": 0, "leak": "confirmed", "probe_wet": True},
    ),
    ("spot-07", {"type": "occupancy", "state": "occupied", "changes": 3, "since_change_s": 1800}),
    ("spot-07", {"type": "occupancy", "state": "unknown", "magnetometer": "failed"}),
    ("lamp-03", {"type": "lighting", "detections": 14, "level_pct": 80, "energy_wh": 45}),
    ("lamp-03", {"type": "lighting", "level_pct": 0, "lamp_fault": True}),
    ("bin-12", {"type": "binfill", "fill_pct": 63, "distance_mm": 450, "temperature_c_x10": 215}),
    (
        "bin-12",
        {"type": "binfill", "fill_pct": 100, "distance_mm": 20, "lid_open": True, "tilted": True},
    ),
    (
        "meter-01",
        {
            "type": "status",
            "battery_mv": 3650,
            "rssi_dbm": -71,
            "snr_db_x4": -38,
            "uptime_s": 86400,
            "reset_cause": "deep_sleep",
            "firmware": "1.2.0",
            "free_heap_b": 48000,
            "boot_count": 12,
            "buffered": 5,
        },
    ),
    ("lamp-03", {"type": "status", "uptime_s": 5, "boot_count": 1}),
    ("meter-01", {"type": "alarm", "alarm": "probe_wet"}),
    ("meter-01", {"type": "alarm", "alarm": "leak_confirmed", "value": 42}),
    ("meter-01", {"type": "alarm", "alarm": "leak_confirmed", "active": False}),
    ("bin-12", {"type": "alarm", "alarm": "bin_full", "value": 96}),
    ("bin-12", {"type": "alarm", "alarm": "bin_fire", "value": 652}),
    ("bin-12", {"type": "alarm", "alarm": "bin_fire", "active": False}),
    ("bin-12", {"type": "alarm", "alarm": "bin_tilt"}),
    ("lamp-03", {"type": "alarm", "alarm": "lamp_fault"}),
    ("spot-07", {"type": "alarm", "alarm": "battery_low", "value": 3300}),
    ("spot-07", {"type": "event", "event": "spot_change", "state": "free"}),
    ("bin-12", {"type": "event", "event": "bin_emptied", "age_s": 30}),
]


def make_reading(
    node: str, message: dict[str, object], seq: int = 0, received_at: float = T0
) -> Reading:
    """A reading exactly as the pipeline stores it: the message through the schema codec."""
    (data,) = schema.decode_uplink(schema.encode_uplink(message))
    return Reading(
        reading_id=f"{node}:{seq}",
        node_id=node,
        kind=str(data["type"]),
        received_at=received_at,
        age_s=int(data["age_s"]),
        data=data,
        alarm=data["type"] == "alarm",
    )


def sample_readings() -> list[Reading]:
    return [make_reading(node, msg, seq=i) for i, (node, msg) in enumerate(SAMPLES)]


async def send_all(sink: Sink, *batches: Sequence[Reading]) -> list[SendResult]:
    """A sink's whole life: start, send each batch in turn, close even when a send raised."""
    await sink.start()
    try:
        return [await sink.send(batch) for batch in batches]
    finally:
        await sink.close()


def node_facts(node: str) -> NodeFacts | None:
    if node not in NODES:
        return None
    kind, location = NODES[node]
    return NodeFacts(kind=kind, location=location)

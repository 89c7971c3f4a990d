"""The gateway's configuration: one frozen, typed object, loaded from TOML and validated once.

Every problem is reported as a `ConfigError` naming the dotted key and what is wrong, and keys
nobody reads are refused (a typo such as `batch_sise` must not silently fall back to a
default). With no file at all the defaults run on embedded parts alone: SQLite in `data/` and
the local spool as the only upstream.

Relative paths: `data_dir` is relative to the folder holding the config file (the working
folder when there is none); `sinks.spool.path` and `security.keys_dir` are relative to
`data_dir`; files an operator installs (passwords, certificates) are relative to the config
file's folder.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

MiB = 1024 * 1024
N = TypeVar("N", int, float)


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class StoreConfig:
    max_bytes: int  # bound on the database plus its write-ahead log
    group_commit_ms: float  # how long the first write of a group waits for company


@dataclass(frozen=True, slots=True)
class CoAPLinkConfig:
    enabled: bool
    bind: str
    port: int


@dataclass(frozen=True, slots=True)
class RFM9xConfig:
    cs_pin: str  # Blinka `board` pin names
    reset_pin: str


@dataclass(frozen=True, slots=True)
class LoRaLinkConfig:
    mode: Literal["off", "sim", "rfm9x"]
    sim_medium: tuple[str, int]  # UDP address of the simulated radio medium
    sim_position: tuple[float, float]  # the gateway radio's place on the medium's map, metres
    frequency_mhz: float
    spreading_factor: int
    bandwidth_khz: float
    coding_rate: int  # denominator of 4/x
    tx_power_dbm: int
    rfm9x: RFM9xConfig


@dataclass(frozen=True, slots=True)
class LinksConfig:
    coap: CoAPLinkConfig
    lora: LoRaLinkConfig


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    keys_dir: Path  # one OSCORE context folder per node, mode 0700, owned by the service user


@dataclass(frozen=True, slots=True)
class SpoolSinkConfig:
    enabled: bool
    path: Path
    rotate_bytes: int
    keep_files: int


@dataclass(frozen=True, slots=True)
class MQTTSinkConfig:
    enabled: bool
    host: str
    port: int
    tls: bool
    ca_file: Path | None
    username: str | None
    password_file: Path | None
    topic_prefix: str
    client_id: str
    keepalive_s: int


@dataclass(frozen=True, slots=True)
class NGSILDSinkConfig:
    enabled: bool
    url: str
    tenant: str | None
    max_batch: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class SinksConfig:
    spool: SpoolSinkConfig
    mqtt: MQTTSinkConfig
    ngsi_ld: NGSILDSinkConfig

    def enabled(self) -> list[str]:
        """Names of the enabled sinks, which are also their names in the store."""
        names = []
        if self.spool.enabled:
            names.append("spool")
        if self.mqtt.enabled:
            names.append("mqtt")
        if self.ngsi_ld.enabled:
            names.append("ngsi_ld")
        return names


@dataclass(frozen=True, slots=True)
class ForwardingConfig:
    batch_size: int
    batch_time_s: float
    retry_base_s: float
    retry_max_s: float
    drain_max_rate: float  # readings per second per sink


@dataclass(frozen=True, slots=True)
class DownlinksConfig:
    expiry_s: float


@dataclass(frozen=True, slots=True)
class TimeSyncConfig:
    time_zone: str  # IANA name of the site's zone (e.g. Europe/Brussels); "" = no time sync
    period_s: float  # a node's clock is set again when its last sync is older than this


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    enabled: bool
    bind: str
    port: int
    cert_file: Path | None
    key_file: Path | None


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["json", "text"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    site_id: str
    data_dir: Path
    store: StoreConfig
    links: LinksConfig
    security: SecurityConfig
    sinks: SinksConfig
    forwarding: ForwardingConfig
    downlinks: DownlinksConfig
    time_sync: TimeSyncConfig
    http: HTTPConfig
    logging: LoggingConfig
    source: Path | None  # the file it came from, for messages

    @property
    def database_path(self) -> Path:
        return self.data_dir / "gateway.db"


class _Section:
    """Typed reads from one TOML table; `finish()` refuses the keys nobody read."""

    def __init__(self, table: Mapping[str, Any], prefix: str) -> None:
        self._table = table
        self._prefix = prefix
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def _get(self, name: str, default: Any) -> Any:
        self._read.add(name)
        return self._table.get(name, default)

    def section(self, name: str) -> _Section:
        value = self._get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(self.key(name), f"must be a table, got {_show(value)}")
        return _Section(value, self.key(name))

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"must be true or false, got {_show(value)}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"must be an integer, got {_show(value)}")
        return _in_range(self.key(name), value, low, high)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(name), f"must be a number, got {_show(value)}")
        if math.isnan(value):  # NaN would pass every range check
            raise ConfigError(self.key(name), "must be a number, got nan")
        return float(_in_range(self.key(name), value, low, high))

    def text(self, name: str, default: str, pattern: str | None = None, hint: str = "") -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"must be a string, got {_show(value)}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise ConfigError(self.key(name), f"{hint}, got {_show(value)}")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.text(name, "")
        return value or None

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._get(name, default)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(self.key(name), f"must be one of {allowed}, got {_show(value)}")
        return cast(str, value)

    def size(self, name: str, default: int, low: int, high: int) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(
                self.key(name), f'must be a size such as "64 MiB" or bytes, got {_show(value)}'
            )
        size = value if isinstance(value, int) else _parse_size(self.key(name), value)
        return _in_range(self.key(name), size, low, high, unit=" bytes")

    def host(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value):
                raise ConfigError(
                    self.key(name), f"must be an IP address or host name, got {_show(value)}"
                ) from None
        return value

    def file(self, name: str, base: Path, must_exist: bool) -> Path | None:
        value = self.optional_text(name)
        if value is None:
            return None
        path = base / value
        if must_exist and not path.is_file():
            raise ConfigError(self.key(name), f"file {str(path)!r} does not exist")
        return path

    def finish(self) -> None:
        unknown = sorted(set(self._table) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read))
            raise ConfigError(self.key(unknown[0]), f"unknown key (known here: {known})")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def _parse_size(key: str, text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(key, f'must be a size such as "64 MiB" or "500 MB", got {text!r}')
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _in_range(key: str, value: N, low: N, high: N, unit: str = "") -> N:
    if not low <= value <= high:
        raise ConfigError(key, f"must be between {low} and {high}{unit}, got {value}")
    return value


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value))
    if kind is None:
        kind = "table" if isinstance(value, dict) else type(value).__name__
    return f"{kind} {value!r}" if not isinstance(value, dict) else "a table"


def _address(key: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise ConfigError(key, f'must be "host:port", got {text!r}')
    return host.strip("[]"), int(port)


def _position(key: str, value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) for v in value)
    ):
        raise ConfigError(key, f"must be [x, y] in metres, got {_show(value)}")
    return float(value[0]), float(value[1])


def _time_zone(key: str, name: str) -> str:
    """An IANA time zone the system's tz database knows (checked now, not at the first sync)."""
    if not name:
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            key, f'unknown time zone {name!r} (an IANA name such as "Europe/Brussels" or "UTC")'
        ) from None
    return name


_PIN = r"[A-Z][A-Z0-9_]{0,15}"


def from_mapping(raw: Mapping[str, Any], source: Path | None = None) -> GatewayConfig:
    """Validate a parsed TOML document (an empty one gives the embedded defaults)."""
    config_dir = source.parent if source is not None else Path.cwd()
    top = _Section(raw, "")
    site_id = top.text(
        "site_id",
        "site",
        r"[a-z0-9][a-z0-9-]{0,31}",
        "must be 1-32 lowercase letters, digits or '-' (it is an MQTT topic level)",
    )
    data_dir = config_dir / top.text("data_dir", "data")

    store_s = top.section("store")
    store = StoreConfig(
        max_bytes=store_s.size("max_size", 256 * MiB, 2 * MiB, 1024**4),
        group_commit_ms=store_s.number("group_commit_ms", 2.0, 0.0, 100.0),
    )
    store_s.finish()

    links_s = top.section("links")
    coap_s = links_s.section("coap")
    coap = CoAPLinkConfig(
        enabled=coap_s.boolean("enabled", True),
        bind=coap_s.host("bind", "0.0.0.0"),
        port=coap_s.integer("port", 5683, 1, 65535),
    )
    coap_s.finish()
    lora_s = links_s.section("lora")
    rfm_s = lora_s.section("rfm9x")
    lora = LoRaLinkConfig(
        mode=cast(Any, lora_s.choice("mode", "off", ("off", "sim", "rfm9x"))),
        sim_medium=_address(lora_s.key("sim_medium"), lora_s.text("sim_medium", "127.0.0.1:47868")),
        sim_position=_position(lora_s.key("sim_position"), lora_s._get("sim_position", [0, 0])),
        frequency_mhz=lora_s.number("frequency_mhz", 868.1, 863.0, 870.0),
        spreading_factor=lora_s.integer("spreading_factor", 10, 7, 12),
        bandwidth_khz=lora_s.number("bandwidth_khz", 125.0, 7.8, 500.0),
        coding_rate=lora_s.integer("coding_rate", 5, 5, 8),
        tx_power_dbm=lora_s.integer("tx_power_dbm", 14, 5, 14),
        rfm9x=RFM9xConfig(
            cs_pin=rfm_s.text("cs_pin", "CE1", _PIN, "must be a board pin name such as CE1"),
            reset_pin=rfm_s.text("reset_pin", "D25", _PIN, "must be a board pin name such as D25"),
        ),
    )
    rfm_s.finish()
    lora_s.finish()
    links_s.finish()

    security_s = top.section("security")
    security = SecurityConfig(keys_dir=data_dir / security_s.text("keys_dir", "oscore"))
    security_s.finish()

    sinks = _sinks(top.section("sinks"), data_dir, config_dir, site_id)

    fwd_s = top.section("forwarding")
    forwarding = ForwardingConfig(
        batch_size=fwd_s.integer("batch_size", 100, 1, 10_000),
        batch_time_s=fwd_s.number("batch_time_s", 1.0, 0.0, 3600.0),
        retry_base_s=fwd_s.number("retry_base_s", 1.0, 0.01, 3600.0),
        retry_max_s=fwd_s.number("retry_max_s", 300.0, 0.01, 86400.0),
        drain_max_rate=fwd_s.number("drain_max_rate", 200.0, 0.1, 1_000_000.0),
    )
    if forwarding.retry_max_s < forwarding.retry_base_s:
        raise ConfigError(
            fwd_s.key("retry_max_s"),
            f"must be at least retry_base_s ({forwarding.retry_base_s}), "
            f"got {forwarding.retry_max_s}",
        )
    fwd_s.finish()

    down_s = top.section("downlinks")
    downlinks = DownlinksConfig(expiry_s=down_s.number("expiry_s", 86400.0, 1.0, 90 * 86400.0))
    down_s.finish()

    sync_s = top.section("time_sync")
    time_sync = TimeSyncConfig(
        time_zone=_time_zone(sync_s.key("time_zone"), sync_s.text("time_zone", "")),
        period_s=sync_s.number("period_s", 86400.0, 600.0, 30 * 86400.0),
    )
    sync_s.finish()

    http_s = top.section("http")
    http = HTTPConfig(
        enabled=http_s.boolean("enabled", True),
        bind=http_s.host("bind", "0.0.0.0"),
        port=http_s.integer("port", 8080, 0, 65535),
        cert_file=http_s.file("cert_file", config_dir, must_exist=True),
        key_file=http_s.file("key_file", config_dir, must_exist=True),
    )
    if (http.cert_file is None) != (http.key_file is None):
        missing = "key_file" if http.key_file is None else "cert_file"
        raise ConfigError(http_s.key(missing), "HTTPS needs both cert_file and key_file")
    http_s.finish()

    log_s = top.section("logging")
    logging = LoggingConfig(
        level=cast(Any, log_s.choice("level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))),
        format=cast(Any, log_s.choice("format", "json", ("json", "text"))),
    )
    log_s.finish()
    top.finish()
    return GatewayConfig(
        site_id=site_id,
        data_dir=data_dir,
        store=store,
        links=LinksConfig(coap=coap, lora=lora),
        security=security,
        sinks=sinks,
        forwarding=forwarding,
        downlinks=downlinks,
        time_sync=time_sync,
        http=http,
        logging=logging,
        source=source,
    )


def _sinks(sinks_s: _Section, data_dir: Path, config_dir: Path, site_id: str) -> SinksConfig:
    spool_s = sinks_s.section("spool")
    spool = SpoolSinkConfig(
        enabled=spool_s.boolean("enabled", True),
        path=data_dir / spool_s.text("path", "spool"),
        rotate_bytes=spool_s.size("rotate_size", 16 * MiB, 4096, 1024**4),
        keep_files=spool_s.integer("keep_files", 10, 1, 100_000),
    )
    spool_s.finish()

    mqtt_s = sinks_s.section("mqtt")
    mqtt_enabled = mqtt_s.boolean("enabled", False)
    tls = mqtt_s.boolean("tls", False)
    mqtt = MQTTSinkConfig(
        enabled=mqtt_enabled,
        host=mqtt_s.host("host", "127.0.0.1"),
        port=mqtt_s.integer("port", 8883 if tls else 1883, 1, 65535),
        tls=tls,
        ca_file=mqtt_s.file("ca_file", config_dir, must_exist=mqtt_enabled),
        username=mqtt_s.optional_text("username"),
        password_file=mqtt_s.file("password_file", config_dir, must_exist=mqtt_enabled),
        topic_prefix=mqtt_s.text(
            "topic_prefix",
            "city",
            r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*",
            "must be topic levels of letters, digits, '_' or '-' separated by '/'",
        ),
        # MQTT 3.1.1 brokers need only accept client ids of up to 23 characters, so the
        # default keeps the site id's first 15 after the prefix.
        client_id=mqtt_s.text(
            "client_id", f"city-gw-{site_id[:15]}", r"[A-Za-z0-9_-]{1,23}", "must be 1-23 chars"
        ),
        keepalive_s=mqtt_s.integer("keepalive_s", 60, 5, 3600),
    )
    if mqtt.password_file is not None and mqtt.username is None:
        raise ConfigError(mqtt_s.key("username"), "password_file is set but username is empty")
    mqtt_s.finish()

    ngsi_s = sinks_s.section("ngsi_ld")
    ngsi = NGSILDSinkConfig(
        enabled=ngsi_s.boolean("enabled", False),
        url=ngsi_s.text(
            "url",
            "http://127.0.0.1:1026",
            r"https?://[^\s/?#]+(/[^\s?#]*)?",
            "must be an http:// or https:// base URL",
        ).rstrip("/"),
        tenant=ngsi_s.optional_text("tenant"),
        max_batch=ngsi_s.integer("max_batch", 1000, 1, 1000),
        timeout_s=ngsi_s.number("timeout_s", 10.0, 0.1, 600.0),
    )
    ngsi_s.finish()
    sinks_s.finish()
    return SinksConfig(spool=spool, mqtt=mqtt, ngsi_ld=ngsi)


def load(path: Path | None) -> GatewayConfig:
    """Read and validate a config file; `None` gives the embedded defaults."""
    if path is None:
        return from_mapping({})
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML: {exc}") from None
    return from_mapping(raw, source=path.resolve())


def summary(config: GatewayConfig) -> dict[str, Any]:
    """A printable view with no secret in it (passwords live in files; only paths are shown)."""

    def plain(value: Any) -> Any:
        if hasattr(value, "__dataclass_fields__"):
            return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    result: dict[str, Any] = plain(config)
    return result

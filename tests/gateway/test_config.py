"""The config: defaults, the example file, and every bad value refused with its key named."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, from_mapping, load, summary

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_run_on_embedded_parts_alone() -> None:
    config = from_mapping({})
    assert config.sinks.enabled() == ["spool"]
    assert config.data_dir == Path.cwd() / "data"
    assert config.database_path == Path.cwd() / "data" / "gateway.db"
    assert config.sinks.spool.path == config.data_dir / "spool"
    assert config.security.keys_dir == config.data_dir / "oscore"
    assert config.store.max_bytes == 256 * 1024 * 1024
    assert config.links.coap.enabled and config.links.coap.port == 5683
    assert config.links.lora.mode == "off"
    assert config.forwarding.batch_size == 100
    assert config.sinks.ngsi_ld.max_batch == 1000
    assert config.http.cert_file is None


def test_config_is_frozen() -> None:
    config = from_mapping({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.site_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.forwarding.batch_size = 1  # type: ignore[misc]


def test_example_file_is_valid_and_states_the_defaults() -> None:
    example = load(ROOT / "gateway.example.toml")
    defaults = from_mapping({"data_dir": "/var/lib/city-gateway"}, source=example.source)
    assert example == defaults


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "mqtt.pw").write_text("secret\n")
    path = write(
        tmp_path / "etc",
        'data_dir = "../state"\n[sinks.spool]\npath = "out"\n'
        '[sinks.mqtt]\nenabled = true\nusername = "gw"\npassword_file = "mqtt.pw"\n',
    )
    config = load(path)
    assert config.data_dir.resolve() == (tmp_path / "state").resolve()
    assert config.sinks.spool.path.resolve() == (tmp_path / "state" / "out").resolve()
    assert config.sinks.mqtt.password_file == tmp_path / "etc" / "mqtt.pw"
    assert config.sinks.enabled() == ["spool", "mqtt"]
    # The summary shows where the password is, never the password.
    assert "secret" not in repr(summary(config))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64 MiB", 64 * 1024 * 1024),
        ("500MB", 500_000_000),
        ("1.5 GiB", int(1.5 * 1024**3)),
        ("8388608", 8388608),
    ],
)
def test_sizes_with_units(text: str, size: int) -> None:
    assert from_mapping({"store": {"max_size": text}}).store.max_bytes == size
    assert from_mapping({"store": {"max_size": 4 * 1024 * 1024}}).store.max_bytes == 4194304


BAD = [
    ("site_id = 42", "site_id", "must be a string, got integer 42"),
    ('site_id = "Site One"', "site_id", "lowercase"),
    ("data_dir = false", "data_dir", "must be a string"),
    ('store = "big"', "store", "must be a table"),
    ('[store]\nmax_size = "lots"', "store.max_size", "must be a size"),
    ('[store]\nmax_size = "12 parsecs"', "store.max_size", "must be a size"),
    ("[store]\nmax_size = 1000", "store.max_size", "must be between"),
    ("[store]\nmax_size = true", "store.max_size", "must be a size"),
    ("[store]\ngroup_commit_ms = -1", "store.group_commit_ms", "between 0.0 and 100.0"),
    ("[store]\ngroup_commit_ms = nan", "store.group_commit_ms", "nan"),
    ("[store]\nmax_sise = 5", "store.max_sise", "unknown key"),
    ('[links.coap]\nport = "5683"', "links.coap.port", "must be an integer, got string '5683'"),
    ("[links.coap]\nport = 70000", "links.coap.port", "between 1 and 65535"),
    ("[links.coap]\nport = 5683.0", "links.coap.port", "must be an integer"),
    ('[links.coap]\nenabled = "yes"', "links.coap.enabled", "must be true or false"),
    ('[links.coap]\nbind = "no such host!"', "links.coap.bind", "IP address or host name"),
    ('[links.lora]\nmode = "on"', "links.lora.mode", "must be one of 'off', 'sim', 'rfm9x'"),
    ('[links.lora]\nsim_medium = "localhost"', "links.lora.sim_medium", '"host:port"'),
    ("[links.lora]\nspreading_factor = 13", "links.lora.spreading_factor", "between 7 and 12"),
    ("[links.lora]\nfrequency_mhz = 915.0", "links.lora.frequency_mhz", "between 863.0"),
    ('[links.lora.rfm9x]\ncs_pin = "gpio 7"', "links.lora.rfm9x.cs_pin", "pin name"),
    ("[sinks.spool]\nkeep_files = 0", "sinks.spool.keep_files", "between 1 and"),
    ('[sinks.mqtt]\ntopic_prefix = "city/#"', "sinks.mqtt.topic_prefix", "topic levels"),
    (
        '[sinks.mqtt]\nenabled = true\nusername = "gw"\npassword_file = "nope.pw"',
        "sinks.mqtt.password_file",
        "does not exist",
    ),
    ('[sinks.mqtt]\npassword_file = "x"', "sinks.mqtt.username", "username is empty"),
    ('[sinks.ngsi_ld]\nurl = "ftp://broker"', "sinks.ngsi_ld.url", "http:// or https://"),
    ("[sinks.ngsi_ld]\nmax_batch = 5000", "sinks.ngsi_ld.max_batch", "between 1 and 1000"),
    ("[sinks.kafka]\nenabled = true", "sinks.kafka", "unknown key"),
    ("[forwarding]\nbatch_size = 0", "forwarding.batch_size", "between 1 and 10000"),
    ('[forwarding]\nbatch_time_s = "1s"', "forwarding.batch_time_s", "must be a number"),
    (
        "[forwarding]\nretry_base_s = 10\nretry_max_s = 5",
        "forwarding.retry_max_s",
        "at least retry_base_s",
    ),
    ("[forwarding]\ndrain_max_rate = 0", "forwarding.drain_max_rate", "between 0.1"),
    ("[downlinks]\nexpiry_s = 0", "downlinks.expiry_s", "between 1.0"),
    ('[http]\ncert_file = "missing.pem"', "http.cert_file", "does not exist"),
    ('[logging]\nlevel = "verbose"', "logging.level", "must be one of"),
    ("colour = 1", "colour", "unknown key"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD, ids=[b[1] for b in BAD])
def test_bad_values_are_refused_naming_the_key(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert fragment in str(caught.value)


def test_https_needs_both_files(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ConfigError, match=r"^http.key_file: HTTPS needs both"):
        load(write(tmp_path, '[http]\ncert_file = "cert.pem"'))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[store\nmax_size = 1"))


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(path), "check-config"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_command(tmp_path: Path) -> None:
    bad = check_config(write(tmp_path, '[forwarding]\nbatch_size = "ten"'))
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "city-gateway: config error: forwarding.batch_size: must be an integer, got string 'ten'"
    )
    good = check_config(write(tmp_path, 'site_id = "north"'))
    assert good.returncode == 0, good.stderr
    assert '"site_id": "north"' in good.stdout


def test_default_mqtt_client_id_fits_a_long_site_id(tmp_path):
    # MQTT 3.1.1 brokers need only accept 23-character client ids.
    path = tmp_path / "gateway.toml"
    path.write_text('site_id = "brussels-ixelles-parc-tenbosch"\n')
    config = load(path)
    assert config.sinks.mqtt.client_id == "city-gw-brussels-ixelle"

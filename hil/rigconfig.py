"""rig.toml: what the serial rig is wired to (see rig.example.toml and docs/hil-wiring.md).

One frozen object, validated at load with an error naming the bad key, like the gateway's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class RigConfigError(ValueError):
    pass


@dataclass(frozen=True)
class GPIOPins:
    """Blinka `board` pin names on the rig's Raspberry Pi; None: not wired."""

    meter: str | None  # drives the DUT's meter input (GPIO34) through an open-collector stage
    probe: str | None  # pulls the DUT's probe input (GPIO35) low = wet
    pir: str | None  # drives the DUT's PIR input (GPIO39)
    lamp: str | None  # reads the DUT's lamp PWM output (GPIO25)
    power_relay: str | None  # the relay that switches the DUT's 5 V
    relay_active_high: bool
    en: str | None  # pulls the DUT's EN low through an open-collector stage (reset)


@dataclass(frozen=True)
class RigConfig:
    port: str
    chip: str
    micropython_image: Path | None
    node_id: str
    wifi_ssid: str
    wifi_password: str
    gateway_host: str
    coap_bind: str
    coap_port: int
    lora_mode: str
    lora_sf: int
    gpio: GPIOPins
    ranger_uart: str | None  # a Pi UART whose TX feeds the DUT's ranger RX (A02YYUW frames)
    boot_s: float
    source: Path | None


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise RigConfigError(f"[{name}] must be a table")
    return value


def _get(table: dict[str, Any], section: str, key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RigConfigError(f"{section}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def load(path: Path | None, port: str | None = None) -> RigConfig:
    """The rig's settings; `port` (from --port) wins over dut.port."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise RigConfigError(f"cannot read {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise RigConfigError(f"{path}: {exc}") from None
    dut = _table(raw, "dut")
    net = _table(raw, "network")
    lora = _table(raw, "lora")
    gpio = _table(raw, "gpio")
    timing = _table(raw, "timing")
    chosen_port = port or _get(dut, "dut", "port", str, None)
    if not chosen_port:
        raise RigConfigError("the serial rig needs --port or dut.port in rig.toml")
    image = _get(dut, "dut", "micropython_image", str, "")
    lora_mode = _get(lora, "lora", "mode", str, "off")
    if lora_mode not in ("off", "rfm9x"):
        raise RigConfigError(f"lora.mode: 'off' or 'rfm9x', got {lora_mode!r}")
    pins = GPIOPins(
        meter=_get(gpio, "gpio", "meter", str, None),
        probe=_get(gpio, "gpio", "probe", str, None),
        pir=_get(gpio, "gpio", "pir", str, None),
        lamp=_get(gpio, "gpio", "lamp", str, None),
        power_relay=_get(gpio, "gpio", "power_relay", str, None),
        relay_active_high=_get(gpio, "gpio", "relay_active_high", bool, True),
        en=_get(gpio, "gpio", "en", str, None),
    )
    base = path.parent if path is not None else Path.cwd()
    return RigConfig(
        port=chosen_port,
        chip=_get(dut, "dut", "chip", str, "esp32"),
        micropython_image=(base / image) if image else None,
        node_id=_get(dut, "dut", "node_id", str, "rig-dut"),
        wifi_ssid=_get(net, "network", "wifi_ssid", str, ""),
        wifi_password=_get(net, "network", "wifi_password", str, ""),
        gateway_host=_get(net, "network", "gateway_host", str, ""),
        coap_bind=_get(net, "network", "coap_bind", str, "0.0.0.0"),
        coap_port=_get(net, "network", "coap_port", int, 5683),
        lora_mode=lora_mode,
        lora_sf=_get(lora, "lora", "spreading_factor", int, 7),
        gpio=pins,
        ranger_uart=_get(gpio, "gpio", "ranger_uart", str, None),
        boot_s=_get(timing, "timing", "boot_s", float, 3.0),
        source=path,
    )

"""The Pi's RFM95 path (gateway/links/rfm9x.py): Adafruit's real `adafruit_rfm9x` driver over
a scripted SX1276 (tests/support/scripted_bus.py: the datasheet's registers, FIFO, IRQ flags,
TX and RX sequencing) behind Blinka-shaped SPI and pin objects; and Blinka itself on its
OS-agnostic board, which gets as far as the driver asking the (absent) chip for its version.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import adafruit_rfm9x
import pytest

from gateway.config import LoRaLinkConfig, RFM9xConfig
from gateway.links.lora import RX_DELAY_MS, RX_ERROR_MS, LoRaLink
from gateway.links.rfm9x import POLL_S, RFM9xRadio
from protocol import cbor, coap, oscore, schema
from protocol.oscore_client import DONE, Exchange
from tests.gateway.fakes import eventually
from tests.gateway.link_support import GATEWAY_ID, SALT, LiveGateway, secret_of
from tests.support import scripted_bus
from tests.support.interp import ROOT


class BlinkaSPI:
    """busio.SPI's interface (what adafruit_bus_device.SPIDevice calls) over a scripted chip."""

    def __init__(self, chip: scripted_bus.SX1276) -> None:
        self.chip = chip
        self.locked = False
        self.settings: set[tuple[int, int, int]] = set()

    def try_lock(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def configure(self, baudrate: int = 100000, polarity: int = 0, phase: int = 0, bits: int = 8):
        self.settings.add((baudrate, polarity, phase))

    def _xfer(self, byte: int) -> int:
        if not self.chip.selected:
            raise OSError("SPI transfer with CS high")
        return int(self.chip.xfer(byte))

    def write(self, buf: Any, *, start: int = 0, end: int | None = None) -> None:
        for byte in bytes(buf[start : len(buf) if end is None else end]):
            self._xfer(byte)

    def readinto(self, buf: Any, *, start: int = 0, end: int | None = None, write_value: int = 0):
        for i in range(start, len(buf) if end is None else end):
            buf[i] = self._xfer(write_value)


class BlinkaPin:
    """digitalio.DigitalInOut's interface; `on_change(level)` sees every level written."""

    def __init__(self, on_change: Any = None) -> None:
        self._value = True
        self.on_change = on_change
        self.levels: list[bool] = []

    def switch_to_output(self, value: bool = False, drive_mode: Any = None) -> None:
        self.value = value

    @property
    def value(self) -> bool:
        return self._value

    @value.setter
    def value(self, level: bool) -> None:
        self._value = bool(level)
        self.levels.append(self._value)
        if self.on_change is not None:
            self.on_change(int(level))


def settings(sf: int = 7) -> LoRaLinkConfig:
    return LoRaLinkConfig(
        mode="rfm9x",
        sim_medium=("127.0.0.1", 1),
        sim_position=(0.0, 0.0),
        frequency_mhz=868.1,
        spreading_factor=sf,
        bandwidth_khz=125.0,
        coding_rate=5,
        tx_power_dbm=14,
        rfm9x=RFM9xConfig(cs_pin="CE1", reset_pin="D25"),
    )


class TimedSX1276(scripted_bus.SX1276):  # type: ignore[misc]
    """The scripted chip, noting when (time.monotonic()) each frame it heard raised RxDone and
    when each transmission keyed up."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rxdone_at: list[float] = []
        self.tx_at: list[float] = []

    def _advance(self) -> None:
        heard = len(self.inbox)
        super()._advance()
        if len(self.inbox) < heard:
            self.rxdone_at.append(time.monotonic())

    def _op_mode(self, v: int) -> None:
        super()._op_mode(v)
        if v & 0x07 == 0x03:
            self.tx_at.append(time.monotonic())


class ScriptedRFM95:
    """The driver factory: the real RFM9x class on a scripted chip; keeps the parts."""

    def __init__(self) -> None:
        self.chip = TimedSX1276(tx_polls=3)
        self.spi = BlinkaSPI(self.chip)
        self.cs = BlinkaPin(scripted_bus.ChipSelect(self.chip).value)
        self.reset = BlinkaPin()

    def __call__(self, config: LoRaLinkConfig) -> Any:
        return adafruit_rfm9x.RFM9x(
            self.spi, self.cs, self.reset, config.frequency_mhz, preamble_length=8, crc=True
        )


def test_the_driver_configures_the_chip_as_the_nodes_expect() -> None:
    async def run(sf: int) -> scripted_bus.SX1276:
        parts = ScriptedRFM95()
        radio = RFM9xRadio(settings(sf), driver=parts)
        await radio.start(lambda *frame: None)
        await radio.close()
        return parts.chip

    chip = asyncio.run(run(7))
    regs = chip.regs
    frf = round(868.1e6 / (32e6 / 2**19))
    assert (regs[0x06], regs[0x07], regs[0x08]) == (frf >> 16, (frf >> 8) & 0xFF, frf & 0xFF)
    assert regs[0x1D] == 0x72  # 125 kHz, coding rate 4/5, explicit header
    assert regs[0x1E] >> 4 == 7 and regs[0x1E] & 0x04  # SF7, payload CRC on
    assert regs[0x26] & 0x08 == 0 and regs[0x26] & 0x04  # no LDRO at SF7; AGC on
    assert regs[0x39] == 0x12  # the private sync word the nodes use
    assert (regs[0x20], regs[0x21]) == (0, 8)  # 8-symbol preamble
    assert 0x85 in chip.modes  # it listened (LoRa, continuous RX)...
    assert chip.mode() == 0x00  # ...and sleeps once closed
    assert asyncio.run(run(12)).regs[0x26] & 0x08  # LDRO at SF12/125 kHz, as the nodes


def test_frames_in_and_out_exactly_as_on_the_air() -> None:
    async def run() -> tuple[list[tuple[Any, ...]], ScriptedRFM95, bool]:
        parts = ScriptedRFM95()
        radio = RFM9xRadio(settings(), driver=parts)
        heard: list[tuple[Any, ...]] = []
        await radio.start(lambda *frame: heard.append(frame))
        parts.chip.deliver(b"\x50\x02\x12\x34frame", pkt_rssi=60, pkt_snr=-10)
        await eventually(lambda: heard)
        sent = await radio.send(b"\x60\x44\x12\x34 answer")
        listening = parts.chip.mode() == 0x05
        await radio.close()
        return heard, parts, sent and listening

    heard, parts, ok = asyncio.run(run())
    # the bare frame both ways: no RadioHead header added or taken away
    ((frame, rssi, snr, rxdone),) = heard
    assert (frame, rssi, snr) == (b"\x50\x02\x12\x34frame", 60 - 157, -2.5)
    assert parts.chip.sent == [b"\x60\x44\x12\x34 answer"] and ok
    # the time the link counts the RX delay from: when the driver saw RxDone, not later
    (raised,) = parts.chip.rxdone_at
    assert raised <= rxdone <= raised + POLL_S


def test_the_lora_link_serves_a_node_through_the_rfm95(tmp_path: Path) -> None:
    parts = ScriptedRFM95()
    gw = LiveGateway(
        tmp_path,
        {"bin-7": ("binfill", b"\x07")},
        coap=False,
        lora={"mode": "rfm9x", "spreading_factor": 7},
    )

    def link(context: Any) -> LoRaLink:
        return LoRaLink(context, radio=RFM9xRadio(context.config.links.lora, driver=parts))

    gw.start(links=[link])
    node = oscore.SecurityContext(secret_of(b"\x07"), b"\x07", GATEWAY_ID, SALT)
    try:
        assert gw.agent is not None
        down = gw.call(
            gw.agent.downlinks.enqueue("bin-7", {"type": "command", "command": "identify"})
        )
        body = cbor.dumps(
            schema.encode_uplink({"type": "binfill", "fill_pct": 97, "distance_mm": 30, "seq": 4})
        )
        plain = coap.Message(coap.CON, coap.POST, 0x77, b"\x0b", coap.uri_path_options("u"), body)
        exchange = Exchange(node, plain.encode())
        parts.chip.deliver(exchange.first(), pkt_rssi=50, pkt_snr=20)
        gw.call(eventually(lambda: parts.chip.sent))
        (answer,) = parts.chip.sent
        # the answer keyed up in the node's RX window: RX_DELAY_MS after the uplink's RxDone,
        # within the RX_ERROR_MS the node's receiver allows each way
        ((rxdone,), (keyed,)) = parts.chip.rxdone_at, parts.chip.tx_at
        delay_ms = (keyed - rxdone) * 1000
        print(f"RFM95 answer keyed up {delay_ms:.1f} ms after RxDone")
        assert RX_DELAY_MS - RX_ERROR_MS <= delay_ms <= RX_DELAY_MS + RX_ERROR_MS
        assert coap.decode(answer).type == coap.ACK and coap.decode(answer).mid == 0x77
        action, response = exchange.on_response(answer)
        assert action == DONE and coap.decode(response).code == coap.CHANGED
        assert schema.decode_downlink(cbor.loads(coap.decode(response).payload)) == [
            {"type": "command", "command": "identify", "id": 1}
        ]
        assert set(gw.stored()) == {"bin-7:4"}
        state = gw.call(gw.agent.status.get("bin-7"))
        assert state is not None and (state.rssi_dbm, state.snr_db) == (50 - 157, 5.0)
        assert gw.downlink_states() == {down.id: "sent"}
    finally:
        gw.close()


def test_blinka_on_its_os_agnostic_board_reaches_the_driver() -> None:
    code = (
        "from gateway.links.rfm9x import blinka_driver\n"
        "from tests.gateway.test_link_rfm9x import settings\n"
        "import dataclasses\n"
        "from gateway.config import RFM9xConfig\n"
        "for cs, reset in (('CS', 'Dx_OUTPUT'), ('CE1', 'D25')):\n"
        "    s = dataclasses.replace(settings(), rfm9x=RFM9xConfig(cs, reset))\n"
        "    try:\n"
        "        blinka_driver(s)\n"
        "    except RuntimeError as e:\n"
        "        print(e)\n"
    )
    env = dict(os.environ, BLINKA_OS_AGNOSTIC="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # Blinka built the SPI bus and pins and the driver asked the chip for its version: no chip.
    assert done.stdout.splitlines() == [
        "Failed to find rfm9x with expected version -- check wiring",
        "links.lora.rfm9x: this board has no pin CE1",
    ]


@pytest.mark.parametrize("length", [0, 256])
def test_frames_the_chip_cannot_carry_are_not_sent(length: int) -> None:
    async def run() -> bool:
        parts = ScriptedRFM95()
        radio = RFM9xRadio(settings(), driver=parts)
        await radio.start(lambda *frame: None)
        started = time.monotonic()
        sent = await radio.send(bytes(length))
        assert time.monotonic() - started < 1
        await radio.close()
        return sent or bool(parts.chip.sent)

    assert asyncio.run(run()) is False

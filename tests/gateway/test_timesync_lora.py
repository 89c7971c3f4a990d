"""Time sync over the LoRa link, on the simulated medium (hil/medium.py) as a real process.

- A lamp (always listening) gets the local time pushed right after its first uplink: the
  firmware's own lamp server and downlink code (on CPython) apply it.
- A sleepy node's time goes out in the RX window of its NEXT uplink, seconds (in the field:
  up to an hour) after it was queued: the record carries the time it leaves at, not the time
  it was queued at.
"""

from __future__ import annotations

import time
import zoneinfo
from pathlib import Path
from typing import Any

import cbor2

from gateway.timesync import ORIGIN, utc_offset_min
from protocol import coap, schema
from protocol.oscore_client import DONE, Exchange
from tests.firmware.node_support import MediumProcess
from tests.gateway.fakes import eventually
from tests.gateway.test_link_lora import AirLamp, TestRadio, lora_gateway, medium

__all__ = ["medium"]  # the fixture, shared with the LoRa link tests

BRUSSELS = zoneinfo.ZoneInfo("Europe/Brussels")
SYNC = {"time_sync": {"time_zone": "Europe/Brussels"}}


def status(seq: int, boots: int = 1, uptime: int = 5) -> dict[str, Any]:
    return {"type": "status", "boot_count": boots, "uptime_s": uptime, "seq": seq}


class ClockedLamp:
    """What the lamp's downlink code needs of the node runtime, plus the clock it sets."""

    def __init__(self) -> None:
        from tests.gateway.lamp_peer import LampNode  # with its print() kept (see AirLamp)

        self.base = LampNode()
        self.times: list[tuple[int, int, float]] = []  # (unix_s, offset, when it was set)

    def set_time(self, unix_s: int, utc_offset_min: int) -> None:
        self.times.append((unix_s, utc_offset_min, time.time()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def test_a_lamp_gets_the_local_time_pushed_after_its_first_uplink(
    tmp_path: Path, medium: MediumProcess
) -> None:
    gw = lora_gateway(tmp_path, medium, {"lamp-2": ("lighting", b"\x32")}, **SYNC).start()
    node = ClockedLamp()
    lamp = AirLamp(medium, b"\x32", (150, 0), delay_s=0.0, node=node)
    try:
        started = time.time()
        lamp.radio.tx(lamp.radio.context.protect_request(lamp.radio.request([status(1)])))
        gw.call(eventually(lambda: node.times != [], timeout=5))
        ((unix_s, offset, set_at),) = node.times
        assert set_at - started < 2.0, f"time pushed {set_at - started:.2f} s after the uplink"
        assert abs(unix_s - set_at) <= 1
        assert offset == utc_offset_min(BRUSSELS, set_at)
        gw.call(eventually(lambda: list(gw.downlink_states().values()) == ["confirmed"]))
        assert gw.agent is not None
        (sync,) = gw.call(gw.agent.downlinks.list("lamp-2"))
        assert sync.origin == ORIGIN
        # a second uplink from the synced lamp asks for nothing more
        lamp.radio.tx(lamp.radio.context.protect_request(lamp.radio.request([status(2)])))
        gw.call(eventually(lambda: len(gw.stored()) == 2))
        time.sleep(0.3)
        assert len(gw.downlink_states()) == 1 and len(node.times) == 1
    finally:
        lamp.close()
        gw.close()


def test_a_sleepy_node_gets_the_time_its_rx_window_opens_at(
    tmp_path: Path, medium: MediumProcess
) -> None:
    gw = lora_gateway(tmp_path, medium, {"leak-9": ("leak", b"\x09")}, **SYNC).start()
    radio = TestRadio(medium, b"\x09")
    try:
        radio.send("listen", ms=20000)
        radio.tx(radio.context.protect_request(radio.request([status(1)])))
        assert radio.frames() == []  # nothing waited for it yet: no answer to a NON
        assert gw.agent is not None
        agent = gw.agent
        gw.call(eventually(lambda: len(gw.downlink_states()) == 1))
        (queued,) = gw.call(agent.downlinks.list("leak-9"))
        assert queued.command["unix_s"] == int(queued.created_at)
        time.sleep(2.5)  # the node sleeps until its next report
        # a loaded host can commit too late for the RX window at this time scale: nothing is
        # sent then (rx_windows_missed), the record stays due, and the next uplink gets it
        for seq in (2, 3, 4):
            leak = {"type": "leak", "volume_l": 10, "flow_lh": 0, "seq": seq}
            exchange = Exchange(radio.context, radio.request([leak]))
            sent = time.time()
            radio.tx(exchange.first())
            if answers := radio.frames():
                break
        (answer,) = answers
        heard = time.time()  # a second of silence after the answer, at most
        action, plain = exchange.on_response(answer)
        assert action == DONE
        (record,) = schema.decode_downlink(cbor2.loads(coap.decode(plain).payload))
        assert record["type"] == "time" and record["utc_offset_min"] == utc_offset_min(
            BRUSSELS, heard
        )
        # the time of the answer, not of the queueing 2.5 s before
        assert round(sent) <= record["unix_s"] <= heard
    finally:
        radio.close()
        gw.close()

"""Each node kind end to end: stimulus -> node -> gateway -> spool and MQTT payload -> the field
staff page. One rig for the module: on the sim rig four virtual boards (one per kind, CoAP
over UDP to the real gateway process, mosquitto behind it); on the serial rig the one ESP32,
provisioned as each kind in turn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hil.gateway import reading_data, wait_until
from hil.rig import DUT, Rig, SimRig, Unsupported

NODES = {"leak": "leak-1", "occupancy": "spot-1", "lighting": "lamp-1", "binfill": "bin-1"}
OPTIONS: dict[str, dict[str, Any]] = {
    "leak": {"report_s": 60},
    "occupancy": {},
    "lighting": {},
    "binfill": {"report_s": 600},
}
SPEED = {"leak": 20.0, "occupancy": 20.0, "lighting": 1.0, "binfill": 20.0}


class Fleet:
    """One node per kind, deployed before the gateway starts (it loads keys at start)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.nodes: dict[str, DUT] = {}
        self.mqtt = None
        self._current = ""

    def node(self, kind: str) -> DUT:
        rig = self.rig
        if self.mqtt is None:
            try:
                self.mqtt = rig.with_mqtt()
            except Unsupported:
                self.mqtt = None
        if isinstance(rig, SimRig):
            if not self.nodes:
                for each, node_id in NODES.items():
                    dut = rig.dut(node_id, kind=each, speed=SPEED[each])
                    dut.provision(each, **OPTIONS[each])
                    self.nodes[each] = dut
                rig.gateway.start()
            return self.nodes[kind]
        # the serial rig's one board becomes this kind
        dut = self.nodes.get("board") or rig.dut(NODES[kind])  # type: ignore[attr-defined]
        self.nodes["board"] = dut
        if self._current != kind:
            dut.node_id = NODES[kind]
            dut.deploy(kind, replace=True, **OPTIONS[kind])
            self._current = kind
            rig.gateway.start()
        return dut


@pytest.fixture(scope="module")
def fleet(module_rig: Rig) -> Iterator[Fleet]:
    yield Fleet(module_rig)


def records(rig: Rig, node_id: str, kind: str) -> list[dict[str, Any]]:
    return [reading_data(r) for r in rig.gateway.readings(node_id, kind)]


def wait_record(
    rig: Rig, node_id: str, kind: str, check: Any, *, timeout: float = 60, what: str = ""
) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for record in records(rig, node_id, kind):
            if check(record):
                return record
        return None

    result: dict[str, Any] = wait_until(found, timeout, what or f"a {kind} record of {node_id}")
    return result


def mqtt_payloads(fleet: Fleet, node_id: str, kind: str) -> list[dict[str, Any]]:
    if fleet.mqtt is None:
        pytest.skip("no MQTT broker on this rig")
    topic = f"city/hil/{kind}/{node_id}"
    return [payload for t, payload in fleet.mqtt.for_node(node_id) if t == topic]


def check_mqtt_matches_spool(fleet: Fleet, node_id: str, kind: str, record: dict[str, Any]) -> None:
    """The MQTT sink publishes the same document the spool keeps, on city/<site>/<kind>/<node>."""

    def published() -> dict[str, Any] | None:
        for payload in mqtt_payloads(fleet, node_id, kind):
            if payload["data"] == record:
                return payload
        return None

    payload = wait_until(published, 20, f"MQTT {kind} of {node_id}")
    assert payload["node"] == node_id
    assert payload["kind"] == kind
    assert payload["site"] == "hil"
    spooled = [r for r in fleet.rig.gateway.readings(node_id, kind) if r["data"] == record]
    assert spooled and spooled[0] == payload


def check_page(rig: Rig, node_id: str, *texts: str) -> str:
    page = rig.gateway.web().node_page(node_id)
    assert f"<h1>{node_id}" in page
    for text in texts:
        assert text in page, f"{text!r} not on the page of {node_id}"
    return page


def test_leak_meter_pulses_and_a_wet_probe(fleet: Fleet) -> None:
    dut = fleet.node("leak")
    rig = fleet.rig
    node_id = dut.node_id
    wait_record(rig, node_id, "status", lambda r: True, what="the first status")
    dut.pulses(30)
    reading = wait_record(rig, node_id, "leak", lambda r: r["volume_l"] >= 30, what="30 L counted")
    assert reading["volume_l"] == 30  # 1 L per pulse (pulse_ml 1000), nothing else flowing
    assert reading["leak"] == "none"
    assert reading["probe_wet"] is False
    check_mqtt_matches_spool(fleet, node_id, "leak", reading)
    dut.probe(wet=True)
    alarm = wait_record(rig, node_id, "alarm", lambda r: r["alarm"] == "probe_wet", what="alarm")
    assert alarm["active"] is True
    spooled = [r for r in rig.gateway.readings(node_id, "alarm") if r["data"] == alarm]
    assert spooled[0]["alarm"] is True  # the reading is flagged as an alarm upstream too
    check_mqtt_matches_spool(fleet, node_id, "alarm", alarm)
    state = rig.gateway.node_state(node_id)
    assert state is not None
    assert state["battery_mv"] == 3200 and state["firmware"] == "0.1.0"
    check_page(rig, node_id, "0.1.0", "probe")
    dut.probe(wet=False)


def test_occupancy_a_car_arrives(fleet: Fleet) -> None:
    dut = fleet.node("occupancy")
    rig = fleet.rig
    node_id = dut.node_id
    # the node calibrates its baseline on the empty spot first (state free)
    wait_record(rig, node_id, "status", lambda r: True, what="the first status")
    dut.console.wait_for(r"node: boot [5-9]", 60)  # cal_samples (4) wakes behind it
    dut.magnet([1200, -340, 5000 + 3000])  # a car body over the sensor: +25..100 uT on z
    event = wait_record(
        rig, node_id, "event", lambda r: r.get("state") == "occupied", what="the spot taken"
    )
    assert event["event"] == "spot_change"
    check_mqtt_matches_spool(fleet, node_id, "event", event)
    check_page(rig, node_id, "spot_change")


def test_lighting_presence_lights_the_lamp_and_tells_the_gateway(fleet: Fleet) -> None:
    dut = fleet.node("lighting")
    rig = fleet.rig
    node_id = dut.node_id
    dut.console.wait_for(r"node: boot", 30)
    wait_record(rig, node_id, "status", lambda r: True, what="the lamp's first status")
    rest = dut.lamp_duty()
    assert rest < 0.5  # night, nobody around: the minimum level
    edge = dut.presence()
    lit = dut.wait_lamp(lambda duty: duty >= 0.99, timeout=5, what="the lamp at full")
    # the fade (fade_ms 1000) runs locally, never waiting on the network
    assert lit - edge < 1.6
    event = wait_record(rig, node_id, "event", lambda r: r["event"] == "presence", what="event")
    assert event.get("count", 1) >= 1
    check_mqtt_matches_spool(fleet, node_id, "event", event)
    check_page(rig, node_id, "presence")


def test_binfill_fills_up_and_raises_the_full_alarm(fleet: Fleet) -> None:
    dut = fleet.node("binfill")
    rig = fleet.rig
    node_id = dut.node_id
    first = wait_record(rig, node_id, "binfill", lambda r: True, what="the first fill level")
    assert first["fill_pct"] == 12  # 100 of the 800 mm between empty and full: 12.5 %, floored
    dut.range_mm(250)  # 75 mm to the full line: (1000 - 250) / (1000 - 200) = 93 %
    alarm = wait_record(rig, node_id, "alarm", lambda r: r["alarm"] == "bin_full", what="full")
    assert alarm["active"] is True
    level = wait_record(rig, node_id, "binfill", lambda r: r["fill_pct"] >= 90, what="93 %")
    assert level["fill_pct"] == 93
    assert level["distance_mm"] == 250
    check_mqtt_matches_spool(fleet, node_id, "binfill", level)
    check_page(rig, node_id, "bin_full")

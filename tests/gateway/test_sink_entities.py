"""Readings -> Smart Data Models entities and the MQTT/spool JSON document.

Every entity produced is checked by the same EntityChecker the test NGSI-LD broker uses: the
official JSON Schema of its type from tests/gateway/smart_data_models (validated on the key-values
projection of the normalized entity, since that is the form those schemas describe), its
@context and the terms that context defines, and the normalized NGSI-LD form.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from referencing.exceptions import Unresolvable

from gateway.sinks.entities import (
    CONTEXTS,
    EntityMapper,
    MappingError,
    NodeFacts,
    iso_utc,
    mqtt_topic,
    parse_location,
    reading_json,
)
from tests.gateway.conftest import SITE, T0, make_reading, node_facts, sample_readings
from tests.gateway.ngsi_ld_broker import EntityChecker, key_values, load_registry, shared_checker


@pytest.fixture(scope="module")
def checker() -> EntityChecker:
    return shared_checker()


@pytest.fixture
def mapper() -> EntityMapper:
    return EntityMapper(SITE, node_facts=node_facts)


def test_every_sample_maps_to_schema_valid_entities(checker, mapper):
    types_seen = set()
    for reading in sample_readings():
        entities = mapper.entities(reading)
        assert entities, reading
        for entity in entities:
            # What goes on the wire is JSON: check the entity as the broker will parse it.
            wire = json.loads(json.dumps(entity))
            assert checker.problems(wire) == [], (reading.data, entity["id"])
            types_seen.add(entity["type"])
    assert types_seen == {
        "WaterConsumptionObserved",
        "ParkingSpot",
        "Streetlight",
        "WasteContainer",
        "Device",
        "DeviceMeasurement",
    }


def test_the_checker_is_not_a_rubber_stamp(checker, mapper):
    """Entities that break the schema, the context or the form are caught."""
    (spot, _, _) = mapper.entities(
        make_reading("spot-07", {"type": "occupancy", "state": "occupied"})
    )
    assert checker.problems(spot) == []

    def broken(change):
        entity = json.loads(json.dumps(spot))
        change(entity)
        return checker.problems(entity)

    assert any("status" in p for p in broken(lambda e: e["status"].update(value="parked")))
    assert any("location" in p for p in broken(lambda e: e.pop("location")))
    assert any("'occupiedSince'" in p for p in broken(lambda e: e.update(occupiedSince=_p(1))))
    assert any("observedAt" in p for p in broken(lambda e: e["status"].update(observedAt="noon")))
    assert any("normalized" in p for p in broken(lambda e: e.update(status="free")))
    assert any(
        "@context" in p for p in broken(lambda e: e.update({"@context": [CONTEXTS["Device"][0]]}))
    )
    (bin_, _) = mapper.entities(
        make_reading("bin-12", {"type": "binfill", "fill_pct": 50, "distance_mm": 400})
    )
    bin_["fillingLevel"]["value"] = 1.5  # the model says 0..1
    assert any("fillingLevel" in p for p in checker.problems(bin_))
    bin_["fillingLevel"]["value"] = 0.5
    bin_["dateLastEmptying"] = _p("2026-13-01T00:00:00Z")  # format date-time, month 13
    assert any("dateLastEmptying" in p for p in checker.problems(bin_))


def _p(value):
    return {"type": "Property", "value": value}


def test_leak_entity_exactly(mapper):
    reading = make_reading(
        "meter-01",
        {"type": "leak", "volume_l": 1234567, "flow_lh": 120, "night_flow_lh": 3, "age_s": 90},
        received_at=T0 + 90.25,
    )
    asset, flow, probe = mapper.entities(reading)
    at = "2026-01-01T00:00:00.250Z"
    assert asset == {
        "id": "urn:ngsi-ld:WaterConsumptionObserved:riverside:meter-01",
        "type": "WaterConsumptionObserved",
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [4.8357, 45.764]},
        },
        "waterConsumption": {
            "type": "Property",
            "value": 1234567,
            "observedAt": at,
            "unitCode": "LTR",
        },
        "alarmFlowPersistence": {"type": "Property", "value": "No persistence", "observedAt": at},
        "alarmInProgress": {"type": "Property", "value": 0, "observedAt": at},
        "minFlow": {"type": "Property", "value": 3, "observedAt": at, "unitCode": "E32"},
        "@context": [
            "https://raw.githubusercontent.com/smart-data-models/dataModel.WaterConsumption/master/context.jsonld",
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        ],
    }
    assert flow["id"] == "urn:ngsi-ld:DeviceMeasurement:riverside:meter-01:waterFlow"
    assert key_values(flow) == {
        "id": "urn:ngsi-ld:DeviceMeasurement:riverside:meter-01:waterFlow",
        "type": "DeviceMeasurement",
        "refDevice": "urn:ngsi-ld:Device:riverside:meter-01",
        "controlledProperty": "waterFlow",
        "measurementType": "waterFlow",
        "dateObserved": at,
        "numValue": 120,
        "unit": "E32",
    }
    assert key_values(probe)["textValue"] == "dry"


def test_leak_states_and_alarm_flag(mapper):
    def leak(**fields):
        msg = {"type": "leak", "volume_l": 1, "flow_lh": 0, **fields}
        return key_values(mapper.entities(make_reading("meter-01", msg))[0])

    assert leak()["alarmFlowPersistence"] == "No persistence"
    assert leak(leak="suspected")["alarmFlowPersistence"] == "In progress persistence"
    confirmed = leak(leak="confirmed")
    assert confirmed["alarmFlowPersistence"] == "In progress impacting persistence"
    assert confirmed["alarmInProgress"] == 1
    assert leak(leak="suspected")["alarmInProgress"] == 0
    assert leak(probe_wet=True)["alarmInProgress"] == 1
    assert "minFlow" not in leak()  # before the first night the node sends no night flow


def test_occupancy_status_time_is_the_change_time(mapper):
    reading = make_reading(
        "spot-07",
        {"type": "occupancy", "state": "occupied", "since_change_s": 1800, "age_s": 60},
        received_at=T0 + 3600,
    )
    spot, changes, magnetometer = mapper.entities(reading)
    assert spot["status"] == {
        "type": "Property",
        "value": "occupied",
        "observedAt": iso_utc(T0 + 1740),
    }
    assert key_values(spot)["category"] == ["onStreet"]
    assert spot["refParkingSite"] == {
        "type": "Relationship",
        "object": "urn:ngsi-ld:OnStreetParking:riverside",
    }
    assert key_values(changes)["numValue"] == 0
    # the sensor's health is a measurement of its own: only the status writes deviceState
    assert key_values(magnetometer)["textValue"] == "ok"
    assert key_values(magnetometer)["measurementType"] == "magnetometer"
    assert magnetometer["refDevice"]["object"] == "urn:ngsi-ld:Device:riverside:spot-07"


def test_lighting_binfill_and_status_values(mapper):
    lamp = key_values(
        mapper.entities(make_reading("lamp-03", {"type": "lighting", "level_pct": 35}))[0]
    )
    assert (lamp["illuminanceLevel"], lamp["powerState"], lamp["status"]) == (0.35, "on", "ok")
    dark = mapper.entities(
        make_reading("lamp-03", {"type": "lighting", "level_pct": 0, "lamp_fault": True})
    )
    assert (key_values(dark[0])["powerState"], key_values(dark[0])["status"]) == (
        "off",
        "defectiveLamp",
    )
    assert [key_values(e)["numValue"] for e in dark[1:]] == [0, 0]  # detections, energy

    bin_ = mapper.entities(
        make_reading(
            "bin-12",
            {"type": "binfill", "fill_pct": 63, "distance_mm": 450, "temperature_c_x10": -15},
        )
    )
    kv = key_values(bin_[0])
    assert (kv["fillingLevel"], kv["temperature"], kv["status"]) == (0.63, -1.5, "ok")
    assert bin_[0]["temperature"]["unitCode"] == "CEL"
    assert key_values(bin_[1])["numValue"] == 450
    tilted = mapper.entities(
        make_reading(
            "bin-12",
            {"type": "binfill", "fill_pct": 1, "distance_mm": 1, "lid_open": True, "tilted": True},
        )
    )
    assert key_values(tilted[0])["status"] == "dropped"  # dropped outranks lidOpen

    status = mapper.entities(sample_readings()[8])  # meter-01's full status message
    device = key_values(status[0])
    assert device["controlledProperty"] == ["waterConsumption", "waterFlow"]
    assert (device["rssi"], device["firmwareVersion"], device["deviceState"]) == (
        -71,
        "1.2.0",
        "ok",
    )
    assert device["description"] == ""  # no error reported: the last one is cleared
    measured = {e["id"].rsplit(":", 1)[1]: key_values(e) for e in status[1:]}
    assert {k: v.get("numValue", v.get("textValue")) for k, v in measured.items()} == {
        "batterySupply": 3650,
        "snr": -9.5,
        "uptime": 86400,
        "resetCause": "deep_sleep",
        "freeHeap": 48000,
        "bootCount": 12,
        "bufferedReadings": 5,
    }
    assert measured["batterySupply"]["unit"] == "2Z"


def test_a_status_maps_safe_mode_and_the_error_to_the_device(checker, mapper):
    def device(**fields):
        status = {"type": "status", "uptime_s": 5, "boot_count": 9, **fields}
        entity = mapper.entities(make_reading("meter-01", status))[0]
        assert entity["type"] == "Device"
        assert checker.problems(json.loads(json.dumps(entity))) == [], entity
        return entity

    safe = device(error="safe mode: boot loop", safe_mode=True)
    assert key_values(safe)["deviceState"] == "safeMode"  # outranks the error
    assert key_values(safe)["description"] == "safe mode: boot loop"
    assert safe["description"]["observedAt"] == safe["deviceState"]["observedAt"] == iso_utc(T0)
    refused = device(error='cfg refused: <"report_s">', safe_mode=False)
    assert (key_values(refused)["deviceState"], key_values(refused)["description"]) == (
        "error",
        'cfg refused: <"report_s">',
    )
    cleared = device()  # a later status without an error, out of safe mode
    assert (key_values(cleared)["deviceState"], key_values(cleared)["description"]) == ("ok", "")

    # The schema holds these attributes to their types: the checker would catch a slip.
    broken = json.loads(json.dumps(safe))
    broken["description"]["value"] = 7
    broken["deviceState"]["value"] = ["safeMode"]
    found = checker.problems(broken)
    assert any("description" in p for p in found) and any("deviceState" in p for p in found)
    # A reading the schema did not check (the mapper does not rely on it): refused as poison.
    reading = make_reading("meter-01", {"type": "status", "uptime_s": 5, "boot_count": 9})
    with pytest.raises(MappingError, match="error 404 is not a text"):
        mapper.entities(_replace(reading, data={**reading.data, "error": 404}))


def test_alarms_and_events(mapper):
    def one(node, msg):
        return [key_values(e) for e in mapper.entities(make_reading(node, msg))]

    fire = one("bin-12", {"type": "alarm", "alarm": "bin_fire", "value": 652})
    assert [(e["type"], e["status"], e["temperature"]) for e in fire] == [
        ("WasteContainer", "burning", 65.2)
    ]
    assert (
        one("bin-12", {"type": "alarm", "alarm": "bin_fire", "active": False})[0]["status"] == "ok"
    )
    assert one("meter-01", {"type": "alarm", "alarm": "probe_wet"})[0]["alarmInProgress"] == 1
    low = one("spot-07", {"type": "alarm", "alarm": "battery_low", "value": 3300})
    assert [(e["measurementType"], e.get("textValue")) for e in low] == [
        ("batteryAlarm", "low"),
        ("batterySupply", None),
    ]
    assert low[1]["numValue"] == 3300
    cleared = one("spot-07", {"type": "alarm", "alarm": "battery_low", "active": False})
    assert [(e["measurementType"], e["textValue"]) for e in cleared] == [("batteryAlarm", "ok")]
    assert all("deviceState" not in e for e in low + cleared)  # the status's alone
    assert one("bin-12", {"type": "alarm", "alarm": "bin_full"}) == []  # no value: nothing to set
    freed = one("spot-07", {"type": "event", "event": "spot_change", "state": "free"})
    assert [(e["type"], e["status"]) for e in freed] == [("ParkingSpot", "free")]
    emptied = one("bin-12", {"type": "event", "event": "bin_emptied"})
    assert emptied[0]["dateLastEmptying"] == iso_utc(T0)
    assert one("lamp-03", {"type": "event", "event": "presence", "count": 2}) == []


def test_ids_are_urns_of_site_and_node(mapper):
    ids = {e["id"] for r in sample_readings() for e in mapper.entities(r)}
    for eid in ids:
        assert eid.startswith("urn:ngsi-ld:")
        _, _, etype, site, node, *part = eid.split(":")
        assert site == SITE
        assert node in {"meter-01", "spot-07", "lamp-03", "bin-12"}
        assert etype != "DeviceMeasurement" or len(part) == 1
    assert "urn:ngsi-ld:ParkingSpot:riverside:spot-07" in ids
    assert "urn:ngsi-ld:Device:riverside:lamp-03" in ids


def test_only_counts_and_states_leave_the_gateway(mapper):
    """No personal data: every attribute is one of a fixed, reviewed list."""
    allowed = {
        "id", "type", "@context", "location", "waterConsumption", "alarmFlowPersistence",
        "alarmInProgress", "minFlow", "status", "category", "refParkingSite", "powerState",
        "illuminanceLevel", "fillingLevel", "temperature", "dateLastEmptying",
        "controlledProperty", "deviceState", "dateLastValueReported", "rssi", "firmwareVersion",
        "refDevice", "measurementType", "dateObserved", "numValue", "textValue", "unit",
        "description",  # the node's own error text: printable ASCII it wrote, <= 32 characters
    }  # fmt: skip
    names = {n for r in sample_readings() for e in mapper.entities(r) for n in e}
    assert names <= allowed


def test_location_falls_back_to_the_site_and_may_be_absent():
    reading = make_reading("bin-99", {"type": "binfill", "fill_pct": 10, "distance_mm": 900})
    site_wide = EntityMapper(SITE, site_location=(4.83, 45.76)).entities(reading)[0]
    assert site_wide["location"]["value"]["coordinates"] == [4.83, 45.76]
    nowhere = EntityMapper(SITE).entities(reading)[0]
    assert "location" not in nowhere  # the broker keeps what it has (options=update)
    facts = EntityMapper(SITE, node_facts=lambda n: NodeFacts(location=(1.0, 2.0)))
    assert facts.entities(reading)[0]["location"]["value"]["coordinates"] == [1.0, 2.0]


def test_parse_location():
    assert parse_location("45.764, 4.8357") == (4.8357, 45.764)
    assert parse_location("45.764;4.8357") == (4.8357, 45.764)
    assert parse_location("12 rue de la Paix") is None
    assert parse_location("") is None
    assert parse_location("95.0,4.0") is None


def test_unmappable_readings_raise_mapping_error(mapper):
    good = make_reading("spot-07", {"type": "occupancy", "state": "free"})
    with pytest.raises(MappingError, match="node id"):
        mapper.entities(_replace(good, node_id="spot/07"))
    with pytest.raises(MappingError, match="no entity for kind"):
        mapper.entities(_replace(good, data={"type": "weather"}))
    with pytest.raises(MappingError, match="state"):
        mapper.entities(_replace(good, data={"type": "occupancy", "state": "parked"}))
    with pytest.raises(MappingError, match="level_pct"):
        mapper.entities(_replace(good, data={"type": "lighting", "level_pct": 180}))
    with pytest.raises(MappingError, match="volume_l"):
        mapper.entities(_replace(good, data={"type": "leak", "flow_lh": 1}))
    with pytest.raises(ValueError, match="site"):
        EntityMapper("river side")


def _replace(reading, **changes):
    return dataclasses.replace(reading, **changes)


def test_reading_json_exact_bytes():
    reading = make_reading(
        "spot-07",
        {"type": "occupancy", "state": "occupied", "changes": 3, "age_s": 5},
        seq=41,
        received_at=T0 + 65.5,
    )
    assert reading_json(reading, SITE) == (
        b'{"alarm":false,"data":{"age_s":5,"changes":3,"magnetometer":"ok","state":"occupied",'
        b'"type":"occupancy"},"id":"spot-07:41","kind":"occupancy","node":"spot-07",'
        b'"observedAt":"2026-01-01T00:01:00.500Z","receivedAt":"2026-01-01T00:01:05.500Z",'
        b'"site":"riverside"}'
    )
    assert mqtt_topic("city", SITE, reading) == "city/riverside/occupancy/spot-07"


def test_reading_json_refuses_what_json_cannot_carry():
    reading = make_reading("spot-07", {"type": "occupancy", "state": "free"})
    with pytest.raises(MappingError, match="not JSON"):
        reading_json(_replace(reading, data={"raw": b"\x00"}), SITE)
    with pytest.raises(MappingError, match="not JSON"):
        reading_json(_replace(reading, data={"x": float("nan")}), SITE)
    with pytest.raises(MappingError, match="kind"):
        mqtt_topic("city", SITE, _replace(reading, kind="occ/+"))


def test_iso_utc():
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(T0 + 0.9999) == "2026-01-01T00:00:00.999Z"


def test_schema_references_resolve_locally_and_only_locally():
    registry = load_registry()
    resolver = registry.resolver()
    for ref in (
        "https://smart-data-models.github.io/data-models/common-schema.json#/definitions/GSMA-Commons",
        "https://smart-data-models.github.io/dataModel.Device/device-schema.json#/definitions/Device-Commons",
    ):
        assert resolver.lookup(ref).contents["type"] == "object"
    with pytest.raises(Unresolvable):  # no retrieval configured: nothing is ever fetched
        resolver.lookup("https://smart-data-models.github.io/data-models/unknown.json")

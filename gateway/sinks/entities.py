"""What a reading looks like upstream: the MQTT/spool JSON document and Smart Data Models entities.

Two shapes, both built here so every sink says the same thing about a reading:

- `reading_json`: one compact JSON document per reading (MQTT payload, spool line). It keeps
  the schema's own field names (protocol/README.md documents them and their units) and carries
  the stable reading id, so upstream can drop the duplicate a resend after a crash produces.
- `EntityMapper.entities`: NGSI-LD entities in normalized form (every attribute a Property,
  GeoProperty or Relationship; measured values carry `observedAt`), following the FIWARE Smart
  Data Models: WaterConsumptionObserved (leak), ParkingSpot (occupancy), Streetlight
  (lighting), WasteContainer (bin fill), Device and DeviceMeasurement (node status, and the
  measurements the asset models have no attribute for). A status's safe mode and error become
  the Device's `deviceState` ("safeMode", "error" or "ok") and `description` (the error
  text); only the status writes them, so one reading cannot undo what another said (the
  parking sensor's magnetometer health and the battery alarm are DeviceMeasurements of their
  own: `magnetometer`, `batteryAlarm`). Entity ids are URNs `urn:ngsi-ld:<Type>:<site>:<node>`,
  so each upsert updates the one entity of that asset.

Privacy: only counts, levels and states leave the gateway; no reading carries anything about a
person (a presence detection is a count, never an identity).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
_SDM_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/{}/master/context.jsonld"

# The data model (repository) each entity type belongs to; its context defines the terms.
DATA_MODEL = {
    "WaterConsumptionObserved": "dataModel.WaterConsumption",
    "ParkingSpot": "dataModel.Parking",
    "Streetlight": "dataModel.Streetlighting",
    "WasteContainer": "dataModel.WasteManagement",
    "Device": "dataModel.Device",
    "DeviceMeasurement": "dataModel.Device",
}

# Each entity's @context: its Smart Data Models context, then the NGSI-LD core context, which
# must come last so no model can redefine a core term. URLs only: a broker resolves (and
# caches) them; the gateway never fetches them.
CONTEXTS: dict[str, list[str]] = {
    etype: [_SDM_CONTEXT.format(model), CORE_CONTEXT] for etype, model in DATA_MODEL.items()
}

# Site and node ids become parts of URNs and MQTT topic levels: keep them to characters that
# are safe in both (no '/', '+', '#', ':' or spaces).
_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class MappingError(ValueError):
    """A reading that cannot be expressed upstream: it is poison for this sink, not transient."""


def check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_OK.match(value):
        raise MappingError(f"{what} {value!r} is not usable in a URN or topic ([A-Za-z0-9_.-])")
    return value


def iso_utc(unix_s: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, the form NGSI-LD brokers store as DateTime."""
    whole = math.floor(unix_s)
    millis = min(int((unix_s - whole) * 1000), 999)
    return f"{_iso_second(whole)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(whole: int) -> str:
    # A batch holds many readings of the same few seconds: format each second once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


# ---------------------------------------------------------------------------------------------
# The JSON document (MQTT payload, spool line)


def reading_record(reading: Any, site: str) -> dict[str, Any]:
    """The reading as a JSON-ready dict. `reading` is a gateway.records.Reading."""
    return {
        "id": reading.reading_id,
        "site": site,
        "node": reading.node_id,
        "kind": reading.kind,
        "observedAt": iso_utc(reading.observed_at),
        "receivedAt": iso_utc(reading.received_at),
        "alarm": bool(reading.alarm),
        "data": dict(reading.data),
    }


def reading_json(reading: Any, site: str) -> bytes:
    """Compact, key-sorted JSON: the same reading always gives the same bytes."""
    check_name("node id", reading.node_id)
    check_name("kind", reading.kind)
    try:
        text = json.dumps(
            reading_record(reading, site), sort_keys=True, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise MappingError(f"reading {reading.reading_id}: data is not JSON: {exc}") from exc
    return text.encode()


def mqtt_topic(prefix: str, site: str, reading: Any) -> str:
    """`<prefix>/<site>/<kind>/<node>`, with prefix `city` by default."""
    kind = check_name("kind", reading.kind)
    return f"{prefix}/{site}/{kind}/{check_name('node id', reading.node_id)}"


# ---------------------------------------------------------------------------------------------
# NGSI-LD entities
#
# The mapping is a pure function of one reading: a resend after a crash produces the same
# entities, so an upsert of it is harmless. That is why values the protocol README describes
# as gateway-side accumulations (the week's maxFlow, lifetime motion and energy counters,
# powerConsumption over the interval) are not written here: an in-memory running total would
# restart at zero with the gateway and double-count resends. The per-report amounts go out as
# DeviceMeasurements instead, from which the platform can accumulate.
#
# Static attributes (location, ParkingSpot category and site, Device controlledProperty) ride
# along on every upsert: with `options=update` that costs a few bytes and makes each entity
# complete and schema-valid on its own, even if the first upsert of a node was never seen.

# What each node kind measures, for Device.controlledProperty (Smart Data Models enum).
CONTROLLED = {
    "leak": ["waterConsumption", "waterFlow"],
    "occupancy": ["occupancy"],
    "lighting": ["light", "motion"],
    "binfill": ["fillingLevel", "temperature"],
}
ASSET_TYPE = {
    "leak": "WaterConsumptionObserved",
    "occupancy": "ParkingSpot",
    "lighting": "Streetlight",
    "binfill": "WasteContainer",
}
LEAK_PERSISTENCE = {
    "none": "No persistence",
    "suspected": "In progress persistence",
    "confirmed": "In progress impacting persistence",
}
MAGNETOMETER_STATES = ("ok", "degraded", "failed")
# Alarm name -> the kind whose asset entity it updates (ASSET_TYPE).
ALARM_TARGET = {
    "probe_wet": "leak",
    "leak_confirmed": "leak",
    "bin_full": "binfill",
    "bin_fire": "binfill",
    "bin_tilt": "binfill",
    "lamp_fault": "lighting",
    "battery_low": None,  # the node's Device, whatever its kind
}

Entity = dict[str, Any]
Location = tuple[float, float]  # (longitude, latitude), GeoJSON order


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the registry knows about a node that its readings do not carry."""

    kind: str | None = None
    location: Location | None = None


def parse_location(text: str) -> Location | None:
    """A registry location "lat,lon" (decimal degrees, as maps show them) -> (lon, lat).

    Anything else (a street address, empty) gives None: the entity then goes without one.
    """
    parts = text.replace(";", ",").split(",")
    if len(parts) != 2:
        return None
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return (lon, lat)


def _prop(value: Any, observed_at: str | None = None, unit: str | None = None) -> dict[str, Any]:
    attr: dict[str, Any] = {"type": "Property", "value": value}
    if observed_at is not None:
        attr["observedAt"] = observed_at
    if unit is not None:
        attr["unitCode"] = unit
    return attr


def _rel(target: str) -> dict[str, Any]:
    return {"type": "Relationship", "object": target}


class EntityMapper:
    """Readings of one site -> normalized NGSI-LD entities of the Smart Data Models."""

    def __init__(
        self,
        site: str,
        site_location: Location | None = None,
        node_facts: Callable[[str], NodeFacts | None] | None = None,
        parking_site: str | None = None,
        parking_category: str = "onStreet",
    ) -> None:
        self.site = check_name("site", site)
        self.site_location = site_location
        self.node_facts = node_facts or (lambda node: None)
        # The OnStreetParking (or OffStreetParking) entity the spots belong to.
        self.parking_site = parking_site or f"urn:ngsi-ld:OnStreetParking:{self.site}"
        if parking_category not in ("onStreet", "offStreet"):
            raise ValueError("parking_category must be onStreet or offStreet")
        self.parking_category = parking_category
        self._builders: dict[str, Callable[[_Context, Mapping[str, Any]], list[Entity]]] = {
            "status": self._status,
            "leak": self._leak,
            "occupancy": self._occupancy,
            "lighting": self._lighting,
            "binfill": self._binfill,
            "alarm": self._alarm,
            "event": self._event,
        }

    def entity_id(self, etype: str, node: str, part: str | None = None) -> str:
        tail = f":{part}" if part else ""
        return f"urn:ngsi-ld:{etype}:{self.site}:{node}{tail}"

    def entities(self, reading: Any) -> list[Entity]:
        """The entities one reading updates (none for a reading that stays local)."""
        node = check_name("node id", reading.node_id)
        data: Mapping[str, Any] = reading.data
        record = data.get("type", reading.kind)
        build = self._builders.get(record) if isinstance(record, str) else None
        if build is None:
            raise MappingError(f"reading {reading.reading_id}: no entity for kind {record!r}")
        facts = self.node_facts(node) or NodeFacts()
        at = iso_utc(reading.observed_at)
        try:
            built: list[Entity] = build(_Context(self, reading, node, facts, at), data)
        except (KeyError, TypeError, ValueError) as exc:
            raise MappingError(
                f"reading {reading.reading_id} ({record}): cannot map {exc!r}"
            ) from exc
        for entity in built:
            # Last, as in the Smart Data Models examples; a copy, so no caller shares a list.
            entity["@context"] = list(CONTEXTS[entity["type"]])
        return built

    # ---- one method per record type --------------------------------------------------------

    def _status(self, c: _Context, d: Mapping[str, Any]) -> list[Entity]:
        # What the node says about itself: safe mode (it restarted too often and only sends
        # its status) outranks an error it reports (a config or downlink it refused, a crash).
        # The error text goes in `description` (Device schema: a string; the model has no
        # attribute for an error, and `value` is the device's reading). Every status sends
        # both, "" when there is no error, so an upsert (options=update) clears the last one.
        error = d.get("error") or ""
        if not isinstance(error, str):
            raise ValueError(f"error {error!r} is not a text")
        state = "safeMode" if d.get("safe_mode") is True else "error" if error else "ok"
        device = c.device(deviceState=_prop(state, c.at), description=_prop(error, c.at))
        device["dateLastValueReported"] = _prop(iso_utc(c.reading.received_at))
        if d.get("rssi_dbm") is not None:
            device["rssi"] = _prop(d["rssi_dbm"], c.at)  # dBm (no UN/CEFACT code for dBm)
        if d.get("firmware") is not None:
            device["firmwareVersion"] = _prop(d["firmware"])
        out = [device]
        if d.get("battery_mv") is not None:
            out.append(c.measurement("batterySupply", d["battery_mv"], "2Z"))
        if d.get("snr_db_x4") is not None:
            out.append(c.measurement("snr", d["snr_db_x4"] / 4, "2N"))
        out.append(c.measurement("uptime", d["uptime_s"], "SEC"))
        out.append(c.measurement("resetCause", text=d.get("reset_cause", "unknown")))
        if d.get("free_heap_b") is not None:
            out.append(c.measurement("freeHeap", d["free_heap_b"], "AD"))
        out.append(c.measurement("bootCount", d["boot_count"], "C62"))
        out.append(c.measurement("bufferedReadings", d.get("buffered", 0), "C62"))
        return out

    def _leak(self, c: _Context, d: Mapping[str, Any]) -> list[Entity]:
        leak = d.get("leak", "none")
        wet = bool(d.get("probe_wet", False))
        asset = c.asset(
            "leak",
            waterConsumption=_prop(d["volume_l"], c.at, "LTR"),
            alarmFlowPersistence=_prop(LEAK_PERSISTENCE[leak], c.at),
            alarmInProgress=_prop(1 if wet or leak == "confirmed" else 0, c.at),
        )
        if d.get("night_flow_lh") is not None:
            # The last night's minimum flow: a leak shows as flow that never stops at night.
            asset["minFlow"] = _prop(d["night_flow_lh"], c.at, "E32")
        return [
            asset,
            c.measurement("waterFlow", d["flow_lh"], "E32"),
            c.measurement("leakProbe", text="wet" if wet else "dry"),
        ]

    def _occupancy(self, c: _Context, d: Mapping[str, Any]) -> list[Entity]:
        changed_at = c.at
        if d.get("since_change_s") is not None:
            changed_at = iso_utc(c.reading.observed_at - d["since_change_s"])
        state = _one_of(d["state"], ("free", "occupied", "unknown"), "state")
        magnetometer = _one_of(d.get("magnetometer", "ok"), MAGNETOMETER_STATES, "magnetometer")
        return [
            c.parking_spot(state, changed_at),
            c.measurement("occupancy", d.get("changes", 0), "C62", measurement="stateChanges"),
            c.measurement("magneticField", text=magnetometer, measurement="magnetometer"),
        ]

    def _lighting(self, c: _Context, d: Mapping[str, Any]) -> list[Entity]:
        level = d["level_pct"]
        if not 0 <= level <= 100:
            raise ValueError(f"level_pct {level} out of 0..100")
        asset = c.asset(
            "lighting",
            status=_prop("defectiveLamp" if d.get("lamp_fault") else "ok", c.at),
            powerState=_prop("on" if level > 0 else "off", c.at),
            illuminanceLevel=_prop(level / 100, c.at),
        )
        return [
            asset,
            c.measurement("motion", d.get("detections", 0), "C62", measurement="detections"),
            c.measurement("energy", d.get("energy_wh", 0), "WHR"),
        ]

    def _binfill(self, c: _Context, d: Mapping[str, Any]) -> list[Entity]:
        fill = d["fill_pct"]
        if not 0 <= fill <= 100:
            raise ValueError(f"fill_pct {fill} out of 0..100")
        status = "dropped" if d.get("tilted") else "lidOpen" if d.get("lid_open") else "ok"
        asset = c.asset("binfill", fillingLevel=_prop(fill / 100, c.at), status=_prop(status, c.at))
        if d.get("temperature_c_x10") is not None:
            asset["temperature"] = _prop(d["temperature_c_x10"] / 10, c.at, "CEL")
        distance = c.measurement("fillingLevel", d["distance_mm"], "MMT", measurement="distance")
        return [asset, distance]

    def _alarm(self, c: _Context, d: Mapping[str, Any]) -> list[Entity]:
        name = d["alarm"]
        if name not in ALARM_TARGET:
            raise ValueError(f"unknown alarm {name!r}")
        active = bool(d.get("active", True))
        value = d.get("value")
        if name == "battery_low":
            out = [
                c.measurement(
                    "batterySupply", text="low" if active else "ok", measurement="batteryAlarm"
                )
            ]
            if value is not None:
                out.append(c.measurement("batterySupply", value, "2Z"))
            return out
        kind = ALARM_TARGET[name]
        assert kind is not None
        if name in ("probe_wet", "leak_confirmed"):
            attrs = {"alarmInProgress": _prop(1 if active else 0, c.at)}
            if name == "leak_confirmed" and value is not None:
                attrs["minFlow"] = _prop(value, c.at, "E32")
        elif name == "lamp_fault":
            attrs = {"status": _prop("defectiveLamp" if active else "ok", c.at)}
        elif name == "bin_full":
            if value is None or not 0 <= value <= 100:
                return []  # nothing to say beyond the alarm flag the MQTT document carries
            attrs = {"fillingLevel": _prop(value / 100, c.at)}
        else:  # bin_fire, bin_tilt
            status = {"bin_fire": "burning", "bin_tilt": "dropped"}[name]
            attrs = {"status": _prop(status if active else "ok", c.at)}
            if name == "bin_fire" and value is not None:
                attrs["temperature"] = _prop(value / 10, c.at, "CEL")
        return [c.asset(kind, **attrs)]

    def _event(self, c: _Context, d: Mapping[str, Any]) -> list[Entity]:
        event = d["event"]
        if event == "spot_change":
            return [c.parking_spot(_one_of(d["state"], ("free", "occupied", "unknown"), "state"))]
        if event == "bin_emptied":
            return [c.asset("binfill", dateLastEmptying=_prop(c.at))]
        if event == "presence":
            return []  # handled at the gateway (neighbouring lamps); the count is in `lighting`
        raise ValueError(f"unknown event {event!r}")


def _one_of(value: Any, allowed: tuple[str, ...], field_name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{field_name} {value!r} not one of {', '.join(allowed)}")
    return str(value)


class _Context:
    """The parts every entity of one reading shares: ids, time, location."""

    def __init__(
        self, mapper: EntityMapper, reading: Any, node: str, facts: NodeFacts, at: str
    ) -> None:
        self.mapper = mapper
        self.reading = reading
        self.node = node
        self.facts = facts
        self.at = at
        self.location = facts.location or mapper.site_location

    def entity(self, etype: str, part: str | None = None, located: bool = True) -> Entity:
        entity: Entity = {"id": self.mapper.entity_id(etype, self.node, part), "type": etype}
        if located and self.location is not None:
            lon, lat = self.location
            entity["location"] = {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [lon, lat]},
            }
        return entity

    def asset(self, kind: str, **attrs: Any) -> Entity:
        entity = self.entity(ASSET_TYPE[kind])
        entity.update(attrs)
        return entity

    def parking_spot(self, state: str, changed_at: str | None = None) -> Entity:
        return self.asset(
            "occupancy",
            status=_prop(state, changed_at or self.at),
            category=_prop([self.mapper.parking_category]),
            refParkingSite=_rel(self.mapper.parking_site),
        )

    def device(self, **attrs: Any) -> Entity:
        entity = self.entity("Device")
        kind = self.facts.kind or (self.reading.kind if self.reading.kind in CONTROLLED else None)
        entity["controlledProperty"] = _prop(CONTROLLED.get(kind or "", []))
        entity.update(attrs)
        return entity

    def measurement(
        self,
        controlled: str,
        value: float | None = None,
        unit: str | None = None,
        text: str | None = None,
        measurement: str | None = None,
    ) -> Entity:
        """A DeviceMeasurement of this node: `<Device id>:<measurement>`."""
        name = measurement or controlled
        entity = self.entity("DeviceMeasurement", name, located=False)
        entity["refDevice"] = _rel(self.mapper.entity_id("Device", self.node))
        entity["controlledProperty"] = _prop(controlled)
        entity["measurementType"] = _prop(name)
        entity["dateObserved"] = _prop(self.at)
        if text is not None:
            entity["textValue"] = _prop(text, self.at)
        else:
            entity["numValue"] = _prop(value, self.at)
        if unit is not None:
            entity["unit"] = _prop(unit)
        return entity

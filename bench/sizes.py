"""Bytes per typical message: our CBOR schema vs the same information as JSON and as SenML-CBOR.

- ours: `protocol.schema.encode_uplink` + CBOR (deterministic; cbor2 and protocol.cbor agree).
- JSON: the message dict as the node builds it (readable names, the same scaled integers, the
  schema version and record type), compact separators: what a node would send without a schema.
- SenML-CBOR (RFC 8428 §6): one record per value with the integer labels (bn -2, bt -3, n 0,
  u 1, v 2, vs 3, vb 4), units from the SenML registry with values converted to them (litres
  per second, ratios, metres, joules: what a standard SenML producer emits), the record type as
  the base name and a buffered reading's age as a negative relative base time (§4.5.3).

Then the cost of the schema layer itself: encode + decode time per message, against the CBOR
round trip it sits on (cbor2 on CPython, protocol.cbor on MicroPython), measured in this run.
"""

from __future__ import annotations

import json
from typing import Any

import cbor2

from bench.common import per_call, run_micropython, table
from protocol import schema

# SenML labels (RFC 8428 §6, Table 4)
BN, BT, N, U, V, VS, VB = -2, -3, 0, 1, 2, 3, 4

Message = dict[str, Any]

TYPICAL: list[tuple[str, list[Message]]] = [
    ("leak", [{"type": "leak", "volume_l": 1234567, "flow_lh": 120, "night_flow_lh": 3}]),
    (
        "occupancy",
        [{"type": "occupancy", "state": "occupied", "changes": 3, "since_change_s": 1800}],
    ),
    ("lighting", [{"type": "lighting", "detections": 14, "level_pct": 80, "energy_wh": 45}]),
    (
        "binfill",
        [{"type": "binfill", "fill_pct": 63, "distance_mm": 450, "temperature_c_x10": 215}],
    ),
    (
        "status",
        [
            {
                "type": "status",
                "battery_mv": 3712,
                "rssi_dbm": -71,
                "snr_db_x4": 38,
                "uptime_s": 86400,
                "reset_cause": "deep_sleep",
                "firmware": "1.2.0",
                "free_heap_b": 41000,
                "boot_count": 17,
                "buffered": 2,
            }
        ],
    ),
    ("alarm (bin fire)", [{"type": "alarm", "alarm": "bin_fire", "value": 652}]),
    ("event (spot change)", [{"type": "event", "event": "spot_change", "state": "free"}]),
    (
        "4 buffered leak readings",
        [
            {
                "type": "leak",
                "volume_l": 1234567 + 40 * i,
                "flow_lh": 160,
                "night_flow_lh": 3,
                "age_s": 900 * (3 - i),
                "seq": 1000 + i,
            }
            for i in range(4)
        ],
    ),
]

# How each field reads in SenML: (SenML name, registered unit or None, converter to that unit).
# Enums become text values (vs), bools boolean values (vb).
SENML_FIELDS: dict[str, tuple[str, str | None, Any]] = {
    "volume_l": ("volume", "l", int),
    "flow_lh": ("flow", "l/s", lambda v: v / 3600),
    "night_flow_lh": ("nightFlow", "l/s", lambda v: v / 3600),
    "changes": ("changes", "count", int),
    "since_change_s": ("sinceChange", "s", int),
    "detections": ("detections", "count", int),
    "level_pct": ("level", "/", lambda v: v / 100),
    "energy_wh": ("energy", "J", lambda v: v * 3600),
    "fill_pct": ("fill", "/", lambda v: v / 100),
    "distance_mm": ("distance", "m", lambda v: v / 1000),
    "temperature_c_x10": ("temperature", "Cel", lambda v: v / 10),
    "battery_mv": ("battery", "V", lambda v: v / 1000),
    "rssi_dbm": ("rssi", "dBW", lambda v: v - 30),
    "snr_db_x4": ("snr", "dB", lambda v: v / 4),
    "uptime_s": ("uptime", "s", int),
    "free_heap_b": ("freeHeap", "B", int),
    "boot_count": ("bootCount", "count", int),
    "buffered": ("buffered", "count", int),
    "value": ("value", None, int),
    "seq": ("seq", "count", int),
}


def senml_pack(records: list[Message]) -> list[dict[int, Any]]:
    # Base name and base time are set once and inherited by the records after them (§4.1),
    # so they appear again only when they change.
    pack: list[dict[int, Any]] = []
    base_name, base_time = None, 0
    for msg in records:
        first = True
        age = msg.get("age_s", 0)
        for name, value in msg.items():
            if name in ("type", "age_s"):
                continue
            rec: dict[int, Any] = {}
            if first and msg["type"] + ":" != base_name:
                base_name = rec[BN] = msg["type"] + ":"
            if first and -age != base_time:
                base_time = rec[BT] = -age
            first = False
            if name in SENML_FIELDS:
                label, unit, conv = SENML_FIELDS[name]
                rec[N] = label
                if unit:
                    rec[U] = unit
                rec[V] = conv(value)
            elif isinstance(value, bool):
                rec[N], rec[VB] = name, value
            else:
                rec[N], rec[VS] = name, str(value)
            pack.append(rec)
    return pack


def json_doc(records: list[Message]) -> bytes:
    doc: Any = records[0] if len(records) == 1 else records
    return json.dumps({"v": schema.SCHEMA_VERSION, "m": doc}, separators=(",", ":")).encode()


def sizes() -> list[list[object]]:
    rows: list[list[object]] = []
    for label, records in TYPICAL:
        ours = len(cbor2.dumps(schema.encode_uplink(records), canonical=True))
        as_json = len(json_doc(records))
        senml = len(cbor2.dumps(senml_pack(records), canonical=True))
        rows.append(
            [label, ours, as_json, senml, f"{ours / as_json:.2f}", f"{senml / as_json:.2f}"]
        )
    return rows


MPY_TIMING = """
import time
from protocol import schema, cbor
MSGS = %r
N = %d
def best(fn):
    b = None
    for _ in range(3):
        t = time.ticks_us()
        for _ in range(N):
            fn()
        d = time.ticks_diff(time.ticks_us(), t)
        b = d if b is None or d < b else b
    return b / N
for records in MSGS:
    data = cbor.dumps(schema.encode_uplink(records))
    obj = cbor.loads(data)
    base = best(lambda: cbor.loads(cbor.dumps(obj)))
    full = best(lambda: schema.decode_uplink(cbor.loads(cbor.dumps(schema.encode_uplink(records)))))
    print(base, full)
"""


def timings() -> list[list[object]]:
    number = 300
    out = run_micropython(MPY_TIMING % ([r for _, r in TYPICAL], number)).split("\n")
    rows: list[list[object]] = []
    for (label, records), line in zip(TYPICAL, out, strict=False):
        decoded = cbor2.loads(cbor2.dumps(schema.encode_uplink(records)))

        def bare(obj: object = decoded) -> object:
            return cbor2.loads(cbor2.dumps(obj))

        base = per_call(bare, number)

        def full(records: list[Message] = records) -> object:
            return schema.decode_uplink(cbor2.loads(cbor2.dumps(schema.encode_uplink(records))))

        ours = per_call(full, number)
        mpy_base, mpy_full = (float(x) for x in line.split())
        rows.append(
            [
                label,
                f"{ours * 1e6:.1f}",
                f"{ours / base:.1f}",
                f"{mpy_full:.0f}",
                f"{mpy_full / mpy_base:.1f}",
            ]
        )
    return rows


def main() -> None:
    print("bytes per message (one uplink; ratios against JSON of the same information)")
    print(
        table(
            ["message", "ours CBOR", "JSON", "SenML-CBOR", "ours/JSON", "SenML/JSON"],
            sizes(),
        )
    )
    print(
        "\nschema + CBOR encode+decode per message; ratio against the bare CBOR round trip of "
        "the same decoded object (cbor2 on CPython, protocol.cbor on MicroPython)"
    )
    print(
        table(
            ["message", "CPython us", "x cbor2", "MicroPython us", "x protocol.cbor"],
            timings(),
        )
    )

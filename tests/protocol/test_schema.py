"""protocol/schema.py: exact wire shape, the 16-byte budget, validation naming the field.

Every test body runs under CPython and under MicroPython (the `interp` fixture). Sizes and
wire bytes are measured with cbor2 on the host AND with protocol.cbor inside the interpreter
under test: both must give the same deterministic bytes.
"""

import cbor2
import pytest

h = bytes.fromhex


def wire(obj):
    # Deterministic map order (RFC 8949 §4.2.1), as protocol.cbor always writes it: the maps
    # built on MicroPython come back in its hash order, not in key order.
    return cbor2.dumps(obj, canonical=True)


@pytest.fixture
def schema(interp):
    return interp.module("protocol.schema")


@pytest.fixture
def cbor(interp):
    return interp.module("protocol.cbor")


# A typical fresh reading of each kind, its exact wire bytes (checked by hand against
# RFC 8949: 0x82 array(2), 0x01 version, 0xa4 map(4), then key/value pairs), and the full
# decoded message with the defaults filled in.
TYPICAL = {
    "leak": (
        {"type": "leak", "volume_l": 1234567, "flow_lh": 120, "night_flow_lh": 3},
        # 00 01 type leak | 04 1a0012d687 volume | 05 1878 flow 120 | 06 03 night flow
        "8201a40001041a0012d6870518780603",
        {"leak": "none", "probe_wet": False, "age_s": 0},
    ),
    "occupancy": (
        {"type": "occupancy", "state": "occupied", "changes": 3, "since_change_s": 1800},
        # 04 01 occupied | 05 03 | 06 190708 = 1800
        "8201a400020401050306190708",
        {"magnetometer": "ok", "age_s": 0},
    ),
    "lighting": (
        {"type": "lighting", "detections": 14, "level_pct": 80, "energy_wh": 45},
        "8201a40003040e05185006182d",
        {"lamp_fault": False, "age_s": 0},
    ),
    "binfill": (
        {"type": "binfill", "fill_pct": 63, "distance_mm": 450, "temperature_c_x10": 215},
        "8201a4000404183f051901c20618d7",
        {"lid_open": False, "tilted": False, "age_s": 0},
    ),
}


@pytest.mark.parametrize("kind", sorted(TYPICAL))
def test_typical_reading_fits_16_bytes_with_exact_wire_bytes(schema, cbor, kind):
    msg, wire_hex, _ = TYPICAL[kind]
    obj = schema.encode_uplink(msg)
    expected = h(wire_hex)
    assert wire(obj) == expected
    assert cbor.dumps(obj) == expected  # protocol.cbor in the interpreter under test
    assert len(expected) <= 16


@pytest.mark.parametrize("kind", sorted(TYPICAL))
def test_typical_reading_decodes_with_defaults(schema, kind):
    msg, wire_hex, defaults = TYPICAL[kind]
    decoded = schema.decode_uplink(cbor2.loads(h(wire_hex)))
    assert decoded == [dict(msg, **defaults)]
    # and the decoded message (defaults included) encodes back to the same bytes
    assert wire(schema.encode_uplink(decoded)) == h(wire_hex)


def test_status_alarm_event_exact_bytes(schema):
    status = {
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
    assert wire(schema.encode_uplink(status)) == h(
        "8201aa0000"
        "04190e80"  # 3712 mV
        "053846"  # -71 dBm: major 1, 70
        "061826"  # 38 quarter-dB = 9.5 dB
        "071a00015180"  # 86400 s
        "0804"  # deep_sleep
        "0965312e322e30"  # "1.2.0"
        "0a19a028"  # 41000
        "0b11"  # 17
        "0c02"
    )
    alarm = {"type": "alarm", "alarm": "bin_fire", "value": 652}
    assert wire(schema.encode_uplink(alarm)) == h("8201a3000504030619028c")
    cleared = {"type": "alarm", "alarm": "probe_wet", "active": False}
    assert wire(schema.encode_uplink(cleared)) == h("8201a30005040005f4")
    event = {"type": "event", "event": "spot_change", "state": "free"}
    assert wire(schema.encode_uplink(event)) == h("8201a3000604000500")


def test_batch_of_buffered_readings_carries_ages_and_seq(schema):
    records = [
        {"type": "occupancy", "state": "free", "age_s": 900, "seq": 41},
        {"type": "occupancy", "state": "occupied", "age_s": 300, "seq": 42},
        {"type": "event", "event": "presence", "count": 2},
    ]
    obj = schema.encode_uplink(records)
    assert wire(obj) == h(
        "8401"
        "a4"
        "0002"
        "01190384"
        "021829"
        "0400"  # age 900, seq 41, free
        "a4"
        "0002"
        "0119012c"
        "02182a"
        "0401"  # age 300, seq 42, occupied
        "a3"
        "0006"
        "0401"
        "0602"  # presence, count 2
    )
    decoded = schema.decode_uplink(cbor2.loads(wire(obj)))
    assert decoded == [
        {
            "type": "occupancy",
            "state": "free",
            "age_s": 900,
            "seq": 41,
            "changes": 0,
            "magnetometer": "ok",
        },
        {
            "type": "occupancy",
            "state": "occupied",
            "age_s": 300,
            "seq": 42,
            "changes": 0,
            "magnetometer": "ok",
        },
        {"type": "event", "event": "presence", "count": 2, "age_s": 0},
    ]


def test_defaults_and_none_are_not_sent(schema):
    # A field equal to its default, or None, is left out: one message, one encoding.
    full = {
        "type": "leak",
        "volume_l": 5,
        "flow_lh": 0,
        "night_flow_lh": None,
        "leak": "none",
        "probe_wet": False,
        "age_s": 0,
        "seq": None,
    }
    assert schema.encode_uplink(full) == [1, {0: 1, 4: 5, 5: 0}]
    wet = dict(full, leak="confirmed", probe_wet=True)
    assert schema.encode_uplink(wet) == [1, {0: 1, 4: 5, 5: 0, 7: 2, 8: True}]
    # a default sent explicitly is still accepted by the decoder (older or simpler encoders)
    assert schema.decode_uplink([1, {0: 1, 4: 5, 5: 0, 7: 0, 8: False, 1: 0}]) == [
        {
            "type": "leak",
            "volume_l": 5,
            "flow_lh": 0,
            "leak": "none",
            "probe_wet": False,
            "age_s": 0,
        }
    ]


def test_every_enum_value_round_trips(schema):
    for i, state in enumerate(schema.LEAK_STATES):
        obj = schema.encode_uplink({"type": "leak", "volume_l": 1, "flow_lh": 1, "leak": state})
        assert obj[1].get(7, 0) == i
        assert schema.decode_uplink(obj)[0]["leak"] == state
    for i, cause in enumerate(schema.RESET_CAUSES):
        msg = {"type": "status", "uptime_s": 1, "boot_count": 1, "reset_cause": cause}
        obj = schema.encode_uplink(msg)
        assert obj[1].get(8, 0) == i
        assert schema.decode_uplink(obj)[0]["reset_cause"] == cause
    for i, alarm in enumerate(schema.ALARMS):
        obj = schema.encode_uplink({"type": "alarm", "alarm": alarm})
        assert obj == [1, {0: 5, 4: i}]
        ack = schema.encode_downlink({"type": "command", "command": "ack_alarm", "alarm": alarm})
        assert ack == [1, {0: 5, 4: 3, 5: i}]
        assert schema.decode_downlink(ack)[0]["alarm"] == alarm


def test_constants_match_the_tables(schema):
    names = schema.type_names(schema.UPLINK)
    assert names == (
        "status",
        "leak",
        "occupancy",
        "lighting",
        "binfill",
        "alarm",
        "event",
        "ack",
    )
    assert names.index("leak") == schema.UP_LEAK
    assert names.index("event") == schema.UP_EVENT
    assert names.index("ack") == schema.UP_ACK
    assert schema.REFUSALS == ("malformed", "wrong_kind", "invalid", "unsupported", "failed")
    assert (schema.K_ID, schema.K_AGE, schema.K_SEQ) == (1, 1, 2)
    down = schema.type_names(schema.DOWNLINK)
    assert down == (
        "config",
        "leak_config",
        "occupancy_config",
        "lighting_profile",
        "binfill_config",
        "command",
        "time",
    )
    assert down.index("lighting_profile") == schema.DOWN_LIGHTING_PROFILE
    assert down.index("time") == schema.DOWN_TIME
    assert schema.SCHEMA_VERSION == 1


# ---- downlinks ---------------------------------------------------------------------------------


def test_downlink_profile_command_time_exact_bytes(schema):
    records = [
        {
            "type": "lighting_profile",
            "min_level_pct": 10,
            "max_level_pct": 100,
            "hold_s": 60,
            "fade_ms": 1500,
            "night_start_min": 1200,  # 20:00
            "night_end_min": 390,  # 06:30
        },
        {"type": "config", "report_s": 900},
        {"type": "command", "command": "identify", "duration_s": 30},
        {"type": "time", "unix_s": 1767225600, "utc_offset_min": 60},
    ]
    obj = schema.encode_downlink(records)
    assert wire(obj) == h(
        "8501"
        "a7"
        "0003"
        "040a"
        "051864"
        "06183c"
        "071905dc"
        "081904b0"
        "09190186"
        "a2"
        "0000"
        "04190384"
        "a3"
        "0005"
        "0401"
        "06181e"
        "a3"
        "0006"
        "041a6955b900"
        "05183c"
    )
    assert schema.decode_downlink(cbor2.loads(wire(obj))) == [
        records[0],
        records[1],
        records[2],
        records[3],
    ]


def test_downlink_every_config_type_round_trips(schema):
    records = [
        {"type": "leak_config", "pulse_ml": 1000, "night_flow_lh": 4, "confirm_nights": 3},
        {"type": "occupancy_config", "threshold_ut": 25, "debounce_s": 10},
        {"type": "binfill_config", "full_pct": 85, "fire_c_x10": 600, "depth_mm": 1100},
        {"type": "config", "status_s": 3600},
        {"type": "command", "command": "reboot"},
        {"type": "command", "command": "bin_emptied"},
        {"type": "command", "command": "recalibrate"},
        {"type": "command", "command": "ack_alarm"},
        {"type": "command", "command": "wake", "duration_s": 20},
        {"type": "time", "unix_s": 0},
    ]
    decoded = schema.decode_downlink(cbor2.loads(wire(schema.encode_downlink(records))))
    expected = [dict(r) for r in records]
    expected[-1]["utc_offset_min"] = 0
    assert decoded == expected


def test_downlink_is_not_an_uplink(schema):
    # Type codes are per direction: downlink type 6 (time) read as an uplink is an event whose
    # code is the time.
    obj = schema.encode_downlink({"type": "time", "unix_s": 1767225600})
    with pytest.raises(schema.SchemaError, match=r"^event\.event: unknown code 1767225600"):
        schema.decode_uplink(obj)
    with pytest.raises(schema.SchemaError, match="unknown record type 'leak'"):
        schema.encode_downlink({"type": "leak", "volume_l": 1, "flow_lh": 1})


# ---- validation: every error names the field -----------------------------------------------------

LEAK = {0: 1, 4: 1000, 5: 10}


@pytest.mark.parametrize(
    ("obj", "field", "problem"),
    [
        ({0: 1}, "message", "expected an array"),
        ([], "version", "missing"),
        ([2, LEAK], "version", "unsupported 2"),
        ([0, LEAK], "version", "unsupported 0"),
        (["1", LEAK], "version", "expected an integer"),
        ([True, LEAK], "version", "expected an integer"),
        ([1], "message", "no records"),
        ([1, [0, 1]], "record", "expected a map"),
        ([1, {4: 1}], "type", "missing"),
        ([1, {0: 8}], "type", "unknown record type code 8"),
        ([1, {0: -1}], "type", "unknown record type code -1"),
        ([1, {0: "leak"}], "type", "unknown record type code 'leak'"),
        ([1, {0: 1, 4: 1000}], "leak.flow_lh", "missing required field (key 5)"),
        ([1, {0: 1, 5: 10}], "leak.volume_l", "missing required field (key 4)"),
        ([1, dict(LEAK, **{"9": 1})], "leak.key '9'", "unknown key"),
        ([1, {**LEAK, 9: 1}], "leak.key 9", "unknown key"),
        ([1, {**LEAK, 3: 1}], "leak.key 3", "unknown key"),
        ([1, {**LEAK, 5: 1000001}], "leak.flow_lh", "1000001 out of range 0..1000000"),
        ([1, {**LEAK, 5: -1}], "leak.flow_lh", "-1 out of range 0..1000000"),
        ([1, {**LEAK, 4: 2**32}], "leak.volume_l", "4294967296 out of range 0..4294967295"),
        ([1, {**LEAK, 5: 10.0}], "leak.flow_lh", "expected an integer, got float"),
        ([1, {**LEAK, 5: True}], "leak.flow_lh", "expected an integer, got bool"),
        ([1, {**LEAK, 5: "10"}], "leak.flow_lh", "expected an integer, got str"),
        ([1, {**LEAK, 8: 1}], "leak.probe_wet", "expected a bool, got int"),
        ([1, {**LEAK, 7: 3}], "leak.leak", "unknown code 3 (0..2)"),
        ([1, {**LEAK, 7: "none"}], "leak.leak", "expected an integer, got str"),
        ([1, {**LEAK, 1: -5}], "leak.age_s", "-5 out of range 0..4294967295"),
        ([1, {0: 2, 4: 1, 7: 3}], "occupancy.magnetometer", "unknown code 3"),
        ([1, {0: 0, 7: 1, 11: 1, 9: "é"}], "status.firmware", "only printable ASCII"),
        ([1, {0: 0, 7: 1, 11: 1, 9: ""}], "status.firmware", "length 0 out of range 1..16"),
        ([1, {0: 0, 7: 1, 11: 1, 9: "v" * 17}], "status.firmware", "length 17 out of range"),
        ([1, {0: 0, 7: 1, 11: 1, 9: b"1.0"}], "status.firmware", "expected a text string"),
        ([1, {0: 3, 5: 101}], "lighting.level_pct", "101 out of range 0..100"),
        ([1, {0: 4, 4: 50, 5: 400, 6: -401}], "binfill.temperature_c_x10", "out of range"),
        ([1, {0: 6, 4: 0}], "event.state", "required with event spot_change"),
        ([1, {0: 6, 4: 1, 5: 0}], "event.state", "only with event spot_change"),
        ([1, {0: 6, 4: 0, 5: 1, 6: 1}], "event.count", "only with event presence"),
        ([1, LEAK, {0: 1, 4: 1}], "record 1 leak.flow_lh", "missing required field"),
        ([1, LEAK, 7], "record 1 record", "expected a map"),
        ([1] + [LEAK] * 65, "message", "more than 64 records"),
    ],
)
def test_decode_uplink_errors_name_the_field(schema, obj, field, problem):
    with pytest.raises(schema.SchemaError) as info:
        schema.decode_uplink(obj)
    message = str(info.value)
    assert message.startswith(field + ": ")
    assert problem in message
    assert isinstance(info.value, ValueError)


def test_decode_range_edges_are_inclusive(schema):
    top = schema.decode_uplink([1, {0: 1, 4: 2**32 - 1, 5: 1000000, 6: 0}])[0]
    assert (top["volume_l"], top["flow_lh"], top["night_flow_lh"]) == (2**32 - 1, 1000000, 0)
    cold = schema.decode_uplink([1, {0: 4, 4: 0, 5: 0, 6: -400}])[0]
    assert cold["temperature_c_x10"] == -400
    hot = schema.decode_uplink([1, {0: 4, 4: 100, 5: 10000, 6: 1250}])[0]
    assert (hot["fill_pct"], hot["distance_mm"], hot["temperature_c_x10"]) == (100, 10000, 1250)
    rssi = schema.decode_uplink([1, {0: 0, 7: 0, 11: 0, 5: -200, 6: -128}])[0]
    assert (rssi["rssi_dbm"], rssi["snr_db_x4"]) == (-200, -128)
    alarm = schema.decode_uplink([1, {0: 5, 4: 1, 6: -(2**31)}])[0]
    assert alarm["value"] == -(2**31)
    with pytest.raises(schema.SchemaError, match=r"alarm\.value"):
        schema.decode_uplink([1, {0: 5, 4: 1, 6: -(2**31) - 1}])


def test_bool_map_key_is_not_key_zero(schema):
    # CBOR false is not the integer 0 even where the host language conflates them.
    with pytest.raises(schema.SchemaError, match="unknown key"):
        schema.decode_uplink([1, {0: 1, 4: 1, 5: 1, True: 1}])


@pytest.mark.parametrize(
    ("msg", "field", "problem"),
    [
        ("leak", "message", "expected a dict or a list"),
        ([], "message", "no records"),
        ([1], "message", "expected a dict"),
        ({"volume_l": 1}, "type", "missing or not a string"),
        ({"type": "water"}, "type", "unknown record type 'water'"),
        ({"type": "leak", "volume_l": 1}, "leak.flow_lh", "missing required field"),
        ({"type": "leak", "volume_l": 1, "flow_lh": None}, "leak.flow_lh", "missing required"),
        (
            {"type": "leak", "volume_l": 1, "flow_lh": 2, "colour": 1},
            "leak.colour",
            "unknown field",
        ),
        ({"type": "leak", "volume_l": 1.5, "flow_lh": 2}, "leak.volume_l", "expected an integer"),
        ({"type": "leak", "volume_l": -1, "flow_lh": 2}, "leak.volume_l", "-1 out of range"),
        (
            {"type": "leak", "volume_l": 1, "flow_lh": 2, "leak": "big"},
            "leak.leak",
            "unknown value",
        ),
        ({"type": "leak", "volume_l": 1, "flow_lh": 2, "leak": 1}, "leak.leak", "unknown value"),
        ({"type": "leak", "volume_l": 1, "flow_lh": 2, "probe_wet": 1}, "leak.probe_wet", "bool"),
        ({"type": "leak", "volume_l": True, "flow_lh": 2}, "leak.volume_l", "got bool"),
        (
            {"type": "status", "uptime_s": 1, "boot_count": 1, "firmware": 3},
            "status.firmware",
            "str",
        ),
        (
            [{"type": "alarm", "alarm": "bin_full"}, {"type": "event", "event": "spot_change"}],
            "record 1 event.state",
            "required with event spot_change",
        ),
    ],
)
def test_encode_uplink_errors_name_the_field(schema, msg, field, problem):
    with pytest.raises(schema.SchemaError) as info:
        schema.encode_uplink(msg)
    assert str(info.value).startswith(field + ": ")
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("msg", "field", "problem"),
    [
        ({"type": "command", "command": "explode"}, "command.command", "unknown value"),
        ({"type": "command", "command": "reboot", "alarm": "bin_full"}, "command.alarm", "only"),
        ({"type": "command", "command": "reboot", "duration_s": 5}, "command.duration_s", "only"),
        (
            {"type": "command", "command": "identify", "duration_s": 0},
            "command.duration_s",
            "0 out",
        ),
        (
            {"type": "lighting_profile", "min_level_pct": 60, "max_level_pct": 40},
            "lighting_profile.min_level_pct",
            "greater than max_level_pct",
        ),
        (
            {"type": "lighting_profile", "night_end_min": 1440},
            "lighting_profile.night_end_min",
            "out",
        ),
        ({"type": "config", "report_s": 9}, "config.report_s", "9 out of range 10..86400"),
        ({"type": "time"}, "time.unix_s", "missing required field"),
        ({"type": "time", "unix_s": 1, "utc_offset_min": 841}, "time.utc_offset_min", "out of"),
        ({"type": "time", "unix_s": 1, "age_s": 3}, "time.age_s", "unknown field"),
    ],
)
def test_downlink_errors_name_the_field(schema, msg, field, problem):
    with pytest.raises(schema.SchemaError) as info:
        schema.encode_downlink(msg)
    assert str(info.value).startswith(field + ": ")
    assert problem in str(info.value)


def test_downlink_decode_rejects_uplink_only_keys(schema):
    with pytest.raises(schema.SchemaError, match=r"^time\.key 2: unknown key"):
        schema.decode_downlink([1, {0: 6, 4: 1, 2: 5}])
    with pytest.raises(schema.SchemaError, match=r"^command\.alarm: unknown code 7"):
        schema.decode_downlink([1, {0: 5, 4: 3, 5: 7}])


def test_error_carries_field_attribute_inside_the_interpreter(interp):
    probe = interp.module("tests.protocol.test_schema_probe")
    schema = interp.module("protocol.schema")
    field, message, is_value_error = probe.error_field(schema.decode_uplink, [1, {0: 3, 5: 101}])
    assert field == "lighting.level_pct"
    assert message == "lighting.level_pct: 101 out of range 0..100"
    assert is_value_error
    field, _, _ = probe.error_field(schema.encode_downlink, {"type": "time", "unix_s": -1})
    assert field == "time.unix_s"
    assert probe.error_field(schema.decode_uplink, [1, LEAK]) is None


def test_encode_does_not_modify_the_message(schema):
    msg = {"type": "lighting", "level_pct": 0, "detections": 0, "energy_wh": 0}
    obj = schema.encode_uplink(msg)
    assert obj == [1, {0: 3, 5: 0}]
    assert msg == {"type": "lighting", "level_pct": 0, "detections": 0, "energy_wh": 0}


# ---- downlink ids, the ack record, the node's error and safe mode -------------------------------


def test_downlink_id_exact_bytes(schema, cbor):
    small = schema.encode_downlink({"type": "config", "report_s": 600, "id": 1})
    # 00 00 config | 01 01 id 1 (one byte up to 23) | 04 190258 report 600
    assert wire(small) == h("8201a30000010104190258")
    assert cbor.dumps(small) == h("8201a30000010104190258")
    big = schema.encode_downlink({"type": "command", "command": "reboot", "id": 65535})
    assert wire(big) == h("8201a300050119ffff0400")
    assert schema.decode_downlink(cbor2.loads(wire(big))) == [
        {"type": "command", "command": "reboot", "id": 65535}
    ]
    # optional: a downlink without an id is still a downlink (it cannot be acked by id)
    assert schema.decode_downlink([1, {0: 6, 4: 5}]) == [
        {"type": "time", "unix_s": 5, "utc_offset_min": 0}
    ]


@pytest.mark.parametrize(
    ("obj", "field", "problem"),
    [
        ([1, {0: 0, 1: 65536}], "config.id", "65536 out of range 0..65535"),
        ([1, {0: 0, 1: -1}], "config.id", "-1 out of range"),
        ([1, {0: 0, 1: True}], "config.id", "expected an integer, got bool"),
        ([1, {0: 0, 1: "7"}], "config.id", "expected an integer, got str"),
        ([1, {0: 0, 1: 3}, {0: 5, 1: 4, 4: 9}], "record 1 command.command", "unknown code 9"),
    ],
)
def test_downlink_id_is_validated(schema, obj, field, problem):
    with pytest.raises(schema.SchemaError) as info:
        schema.decode_downlink(obj)
    assert str(info.value).startswith(field + ": ")
    assert problem in str(info.value)


def test_ack_exact_bytes_and_sizes(schema, cbor):
    confirm = {"type": "ack", "confirm": [1, 2], "seq": 7}
    # 00 07 ack | 02 07 seq | 04 82 01 02 confirm [1, 2]
    assert wire(schema.encode_uplink(confirm)) == h("8201a300070207048201 02".replace(" ", ""))
    refused = {"type": "ack", "refused": [3], "reason": "wrong_kind"}
    obj = schema.encode_uplink(refused)
    assert obj == [1, {0: 7, 5: [3], 6: 1}]
    assert cbor.dumps(obj) == h("8201a300070581030601")
    assert schema.decode_uplink(cbor2.loads(h("8201a300070581030601"))) == [
        {"type": "ack", "refused": [3], "reason": "wrong_kind", "age_s": 0}
    ]
    # the largest ack of one confirmed and one refused id (a 4-byte seq, 3-byte ids) fits an
    # SF12 frame: 51 bytes less CoAP (10), OSCORE (11), a 3-byte Partial IV and a 1-byte kid
    # leave 26 for the payload (firmware/node/loralink.py max_payload), so it is never dropped
    worst = {
        "type": "ack",
        "seq": 2**32 - 1,
        "confirm": [65535],
        "refused": [65534],
        "reason": "failed",
    }
    assert len(wire(schema.encode_uplink(worst))) == 23
    assert schema.decode_uplink(schema.encode_uplink(worst)) == [dict(worst, age_s=0)]


@pytest.mark.parametrize(
    ("obj", "field", "problem"),
    [
        ([1, {0: 7}], "ack.confirm", "confirms or refuses at least one id"),
        ([1, {0: 7, 5: [1]}], "ack.reason", "required with refused"),
        ([1, {0: 7, 4: [1], 6: 0}], "ack.reason", "only with it"),
        ([1, {0: 7, 4: [1, 2], 5: [2], 6: 0}], "ack.refused", "id 2 also confirmed"),
        ([1, {0: 7, 4: []}], "ack.confirm", "0 ids, not 1..64"),
        ([1, {0: 7, 4: list(range(65))}], "ack.confirm", "65 ids, not 1..64"),
        ([1, {0: 7, 4: [1, 1]}], "ack.confirm", "id 1 twice"),
        ([1, {0: 7, 4: [65536]}], "ack.confirm", "id 65536 out of range 0..65535"),
        ([1, {0: 7, 4: [-1]}], "ack.confirm", "id -1 out of range"),
        ([1, {0: 7, 4: [True]}], "ack.confirm", "expected integer ids, got bool"),
        ([1, {0: 7, 4: ["1"]}], "ack.confirm", "expected integer ids, got str"),
        ([1, {0: 7, 4: 1}], "ack.confirm", "expected an array, got int"),
        ([1, {0: 7, 4: {1: 1}}], "ack.confirm", "expected an array, got dict"),
        ([1, {0: 7, 5: [1], 6: 5}], "ack.reason", "unknown code 5 (0..4)"),
    ],
)
def test_ack_errors_name_the_field(schema, obj, field, problem):
    with pytest.raises(schema.SchemaError) as info:
        schema.decode_uplink(obj)
    assert str(info.value).startswith(field + ": ")
    assert problem in str(info.value)


def test_ack_encode_validates_the_same_way(schema):
    with pytest.raises(schema.SchemaError, match=r"^ack\.reason: unknown value 'busy'"):
        schema.encode_uplink({"type": "ack", "refused": [1], "reason": "busy"})
    with pytest.raises(schema.SchemaError, match=r"^ack\.confirm: expected an array"):
        schema.encode_uplink({"type": "ack", "confirm": 5})
    with pytest.raises(schema.SchemaError, match=r"^ack\.confirm: an ack confirms or refuses"):
        schema.encode_uplink({"type": "ack", "confirm": None})
    # a tuple is an array too; the message is not modified
    msg = {"type": "ack", "confirm": (4, 5)}
    assert schema.encode_uplink(msg) == [1, {0: 7, 4: [4, 5]}]
    assert msg == {"type": "ack", "confirm": (4, 5)}


def test_status_error_and_safe_mode(schema):
    msg = {
        "type": "status",
        "uptime_s": 1,
        "boot_count": 4,
        "error": "downlink refused: bad",
        "safe_mode": True,
    }
    obj = schema.encode_uplink(msg)
    assert wire(obj) == h("8201a5000007010b040d75646f776e6c696e6b20726566757365643a206261640ef5")
    assert schema.decode_uplink(obj) == [dict(msg, reset_cause="unknown", buffered=0, age_s=0)]
    # not in safe mode, no error: neither is sent, and decoding fills safe_mode in
    plain = schema.decode_uplink([1, {0: 0, 7: 1, 11: 4}])[0]
    assert plain["safe_mode"] is False and "error" not in plain
    assert schema.encode_uplink(dict(msg, error=None, safe_mode=False)) == [
        1,
        {0: 0, 7: 1, 11: 4},
    ]
    for bad, problem in (("x" * 33, "length 33 out of range 1..32"), ("a\nb", "printable")):
        with pytest.raises(schema.SchemaError, match=r"^status\.error: .*" + problem):
            schema.encode_uplink(dict(msg, error=bad))
    with pytest.raises(schema.SchemaError, match=r"^status\.safe_mode: expected a bool"):
        schema.decode_uplink([1, {0: 0, 7: 1, 11: 4, 14: 1}])


@pytest.mark.parametrize(
    ("obj", "ids"),
    [
        ([1, {0: 0, 1: 3, 4: 5}], [3]),  # report_s 5: out of range, yet its id is readable
        ([1, {0: 0, 1: 3, 40: 1}, {0: 9, 1: 4}], [3, 4]),  # unknown key, unknown type
        ([2, {0: 0, 1: 7}], [7]),  # a version this node does not speak
        ([1, {0: 0, 1: 3}, {0: 5, 1: 3}], [3]),  # once each
        ([1, {1: True}, {1: -1}, {1: 65536}, {1: "5"}, [1, 2], 8, {1: 65535}], [65535]),
        ([1], []),
        ({0: 0, 1: 3}, []),  # not an array
        (None, []),
        ("junk", []),
    ],
)
def test_downlink_ids_reads_what_it_can_and_never_raises(schema, obj, ids):
    assert schema.downlink_ids(obj) == ids


def test_printable_makes_any_text_fit_a_text_field(schema):
    assert schema.printable("link: no answer") == "link: no answer"
    assert schema.printable("caf\u00e9 \u2603\n") == "caf? ??"
    assert schema.printable("x" * 40) == "x" * 32
    assert schema.printable("x" * 40, 8) == "x" * 8
    assert schema.printable("") is None
    assert schema.printable(None) is None
    for text in ("\u00e9" * 40, "tab\there", "ok"):
        fixed = schema.printable(text)
        msg = {"type": "status", "uptime_s": 1, "boot_count": 1, "error": fixed}
        assert schema.decode_uplink(schema.encode_uplink(msg))[0]["error"] == fixed

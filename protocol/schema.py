"""Message schema: the single source of truth for what nodes and the gateway say to each other.

Works on DECODED CBOR values (dicts, lists, ints, bools, str), never on bytes, so either CBOR
codec feeds it (`protocol.cbor` on the node, `cbor2` on the gateway). Runs on MicroPython and
CPython. protocol/README.md has the table of every field (key, type, unit, range, Smart Data
Models attribute); the tables below are what the code enforces.

API
---
    encode_uplink(records)   -> obj   # records: one message dict or a list of them
    decode_uplink(obj)       -> list  # always a list of validated message dicts
    encode_downlink(records) -> obj
    decode_downlink(obj)     -> list
    downlink_ids(obj)        -> list  # the ids a downlink that does not decode still carries
    printable(text, limit)   -> str   # any text made fit for a text field (node errors)
    SchemaError(ValueError)           # .field names the culprit, e.g. "leak.flow_lh"

A message is a plain dict with readable names; "type" picks the record type:

    {"type": "leak", "volume_l": 1234567, "flow_lh": 120, "night_flow_lh": 3}

Decoding fills in every defaulted field ("leak": "none", "probe_wet": False, "age_s": 0) and
leaves out optional fields the node did not send (unknown values, e.g. "night_flow_lh" before
the first night). Encoding validates the same way (type, range, unknown name, missing required
field) and omits fields equal to their default, so one message has one encoding. A value of None
in a message to encode means "not sent". Enum values travel as small ints and read as names
(the tuples below: index = wire code). Integers are scaled (no floats on the air): the unit is
in the name (`_mv`, `_dbm`, `_s`, `_l`, `_lh`, `_pct`, `_wh`, `_mm`, `_x10` = tenths,
`_x4` = quarters).

Wire shape
----------
    [SCHEMA_VERSION, record, record, ...]       # a CBOR array; at least one record
    record = {0: type code, key: value, ...}    # a CBOR map with small integer keys

Encoded maps are plain dicts: serialise them with deterministic map order (protocol.cbor
always does; MicroPython dicts iterate in hash order, CPython's in the key order built here).

Uplink records share key 1 `age_s` (seconds since the reading was taken; 0 = now: nodes have no
reliable clock, the gateway timestamps a record at arrival time minus age_s) and key 2 `seq`
(the node's own record counter, optional). Kind-specific keys start at 4 (key 3 is reserved).

Downlink records share key 1 `id`: a number the gateway gives each downlink (a 16-bit counter
per node), optional. A node answers the ids it handled in an `ack` uplink record: `confirm`
(applied) and `refused` with the `reason`. The ack is the only proof a downlink was applied; it
goes in the node's next uplink, ahead of its other records.

Stable reading id for the gateway: (node, OSCORE Partial IV of the uplink, index of the record
in the array). A CoAP retransmission is the byte-identical OSCORE message (same Partial IV), so
the id holds. A node that re-packs buffered records into a NEW message (new Partial IV) must
set `seq` on them; when `seq` is present the stable id is (node, seq).
"""

SCHEMA_VERSION = 1
MAX_RECORDS = 64  # per message; a node splits a longer backlog over several uplinks

# Uplink record types (wire code = value of key 0).
UP_STATUS = 0
UP_LEAK = 1
UP_OCCUPANCY = 2
UP_LIGHTING = 3
UP_BINFILL = 4
UP_ALARM = 5
UP_EVENT = 6
UP_ACK = 7

# Downlink record types.
DOWN_CONFIG = 0
DOWN_LEAK_CONFIG = 1
DOWN_OCCUPANCY_CONFIG = 2
DOWN_LIGHTING_PROFILE = 3
DOWN_BINFILL_CONFIG = 4
DOWN_COMMAND = 5
DOWN_TIME = 6

# Keys shared by every record.
K_TYPE = 0
K_AGE = 1  # uplink only
K_SEQ = 2  # uplink only
K_ID = 1  # downlink only
K_FIRST = 4  # first kind-specific key

# Enums: the wire code is the index in the tuple.
LEAK_STATES = ("none", "suspected", "confirmed")
SPOT_STATES = ("free", "occupied", "unknown")
SENSOR_HEALTH = ("ok", "degraded", "failed")
RESET_CAUSES = ("unknown", "power_on", "hard", "wdt", "deep_sleep", "soft", "brownout", "panic")
ALARMS = (
    "probe_wet",
    "leak_confirmed",
    "bin_full",
    "bin_fire",
    "lamp_fault",
    "battery_low",
    "bin_tilt",
)
EVENTS = ("spot_change", "presence", "bin_emptied")
COMMANDS = ("reboot", "identify", "bin_emptied", "ack_alarm", "recalibrate", "wake")
# Why a node refused a downlink (ack record `reason`).
REFUSALS = ("malformed", "wrong_kind", "invalid", "unsupported", "failed")

# Field value types.
T_INT = 0  # a, b = inclusive range
T_BOOL = 1
T_ENUM = 2  # a = tuple of names
T_TEXT = 3  # a, b = length range; printable ASCII only
T_IDS = 4  # an array of downlink ids (0..65535); a, b = length range


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()  # default slot: the field must be present
# default slot None: optional, absent when unknown

U16 = 0xFFFF
U32 = 0xFFFFFFFF
I32 = 0x7FFFFFFF
ERROR_LEN = 32  # longest status `error` text

# A field: (key, name, value type, a, b, default).
UPLINK_COMMON = (
    (K_AGE, "age_s", T_INT, 0, U32, 0),
    (K_SEQ, "seq", T_INT, 0, U32, None),
)
DOWNLINK_COMMON = ((K_ID, "id", T_INT, 0, U16, None),)

# Index = wire type code.
UPLINK = (
    (
        "status",
        (
            (4, "battery_mv", T_INT, 0, U16, None),
            (5, "rssi_dbm", T_INT, -200, 0, None),
            (6, "snr_db_x4", T_INT, -128, 127, None),
            (7, "uptime_s", T_INT, 0, U32, REQUIRED),
            (8, "reset_cause", T_ENUM, RESET_CAUSES, 0, "unknown"),
            (9, "firmware", T_TEXT, 1, 16, None),
            (10, "free_heap_b", T_INT, 0, U32, None),
            (11, "boot_count", T_INT, 0, U32, REQUIRED),
            (12, "buffered", T_INT, 0, U16, 0),
            (13, "error", T_TEXT, 1, ERROR_LEN, None),
            (14, "safe_mode", T_BOOL, 0, 0, False),
        ),
    ),
    (
        "leak",
        (
            (4, "volume_l", T_INT, 0, U32, REQUIRED),
            (5, "flow_lh", T_INT, 0, 1000000, REQUIRED),
            (6, "night_flow_lh", T_INT, 0, 1000000, None),
            (7, "leak", T_ENUM, LEAK_STATES, 0, "none"),
            (8, "probe_wet", T_BOOL, 0, 0, False),
        ),
    ),
    (
        "occupancy",
        (
            (4, "state", T_ENUM, SPOT_STATES, 0, REQUIRED),
            (5, "changes", T_INT, 0, U16, 0),
            (6, "since_change_s", T_INT, 0, U32, None),
            (7, "magnetometer", T_ENUM, SENSOR_HEALTH, 0, "ok"),
        ),
    ),
    (
        "lighting",
        (
            (4, "detections", T_INT, 0, U16, 0),
            (5, "level_pct", T_INT, 0, 100, REQUIRED),
            (6, "energy_wh", T_INT, 0, U32, 0),
            (7, "lamp_fault", T_BOOL, 0, 0, False),
        ),
    ),
    (
        "binfill",
        (
            (4, "fill_pct", T_INT, 0, 100, REQUIRED),
            (5, "distance_mm", T_INT, 0, 10000, REQUIRED),
            (6, "temperature_c_x10", T_INT, -400, 1250, None),
            (7, "lid_open", T_BOOL, 0, 0, False),
            (8, "tilted", T_BOOL, 0, 0, False),
        ),
    ),
    (
        "alarm",
        (
            (4, "alarm", T_ENUM, ALARMS, 0, REQUIRED),
            (5, "active", T_BOOL, 0, 0, True),
            (6, "value", T_INT, -I32 - 1, U32, None),
        ),
    ),
    (
        "event",
        (
            (4, "event", T_ENUM, EVENTS, 0, REQUIRED),
            (5, "state", T_ENUM, SPOT_STATES, 0, None),
            (6, "count", T_INT, 0, U16, None),
        ),
    ),
    (
        "ack",
        (
            (4, "confirm", T_IDS, 1, MAX_RECORDS, None),
            (5, "refused", T_IDS, 1, MAX_RECORDS, None),
            (6, "reason", T_ENUM, REFUSALS, 0, None),
        ),
    ),
)

DOWNLINK = (
    (
        "config",
        (
            (4, "report_s", T_INT, 10, 86400, None),
            (5, "status_s", T_INT, 60, 604800, None),
        ),
    ),
    (
        "leak_config",
        (
            (4, "pulse_ml", T_INT, 1, 1000000, None),
            (5, "night_flow_lh", T_INT, 0, 1000000, None),
            (6, "confirm_nights", T_INT, 1, 30, None),
        ),
    ),
    (
        "occupancy_config",
        (
            (4, "threshold_ut", T_INT, 1, 1000, None),
            (5, "debounce_s", T_INT, 0, 600, None),
        ),
    ),
    (
        "lighting_profile",
        (
            (4, "min_level_pct", T_INT, 0, 100, None),
            (5, "max_level_pct", T_INT, 0, 100, None),
            (6, "hold_s", T_INT, 0, 3600, None),
            (7, "fade_ms", T_INT, 0, 60000, None),
            (8, "night_start_min", T_INT, 0, 1439, None),
            (9, "night_end_min", T_INT, 0, 1439, None),
        ),
    ),
    (
        "binfill_config",
        (
            (4, "full_pct", T_INT, 1, 100, None),
            (5, "fire_c_x10", T_INT, 0, 1250, None),
            (6, "depth_mm", T_INT, 100, 10000, None),
        ),
    ),
    (
        "command",
        (
            (4, "command", T_ENUM, COMMANDS, 0, REQUIRED),
            (5, "alarm", T_ENUM, ALARMS, 0, None),
            (6, "duration_s", T_INT, 1, 3600, None),
        ),
    ),
    (
        "time",
        (
            (4, "unix_s", T_INT, 0, U32, REQUIRED),
            (5, "utc_offset_min", T_INT, -720, 840, 0),
        ),
    ),
)


class SchemaError(ValueError):
    """A message that does not fit the schema; `field` names where (e.g. "leak.flow_lh")."""

    def __init__(self, field, problem):
        super().__init__(field + ": " + problem)
        self.field = field


def encode_uplink(records):
    """One message dict or a list of them -> [SCHEMA_VERSION, {...}, ...] for cbor dumps."""
    return _encode(records, UPLINK, UPLINK_COMMON)


def decode_uplink(obj):
    """A decoded CBOR value -> list of validated message dicts; SchemaError otherwise."""
    return _decode(obj, UPLINK, UPLINK_COMMON)


def encode_downlink(records):
    """One downlink message dict or a list of them -> [SCHEMA_VERSION, {...}, ...]."""
    return _encode(records, DOWNLINK, DOWNLINK_COMMON)


def decode_downlink(obj):
    """A decoded CBOR value -> list of validated downlink message dicts."""
    return _decode(obj, DOWNLINK, DOWNLINK_COMMON)


def downlink_ids(obj):
    """The ids (key 1) of the records of a decoded downlink array, even one that does not
    validate, so a node can refuse a malformed downlink by id. Never raises."""
    out = []  # type: list
    if not isinstance(obj, (list, tuple)):
        return out
    for record in obj[1 : MAX_RECORDS + 1]:
        value = record.get(K_ID) if isinstance(record, dict) else None
        valid = not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= U16
        if valid and value not in out:
            out.append(value)
    return out


def printable(text, limit=ERROR_LEN):
    """`text` made valid for a text field of at most `limit` characters: every character
    outside printable ASCII becomes "?", the rest is cut. None (or empty) stays None."""
    if not text:
        return None
    text = str(text)[:limit]
    for ch in text:
        if not " " <= ch <= "~":
            return "".join(c if " " <= c <= "~" else "?" for c in text)
    return text


def type_names(direction):
    """Names of the record types of UPLINK or DOWNLINK, index = wire code."""
    return tuple(t[0] for t in direction)


# -- internals ------------------------------------------------------------------------------


def _encode(records, table, common):
    if isinstance(records, dict):
        records = (records,)
    elif not isinstance(records, (list, tuple)):
        raise SchemaError("message", "expected a dict or a list of dicts")
    if not records:
        raise SchemaError("message", "no records")
    if len(records) > MAX_RECORDS:
        raise SchemaError("message", "more than %d records" % MAX_RECORDS)
    out = [SCHEMA_VERSION]
    for i, msg in enumerate(records):
        out.append(_encode_record(msg, table, common, _where(i, len(records))))
    return out


def _decode(obj, table, common):
    if not isinstance(obj, (list, tuple)):
        raise SchemaError("message", "expected an array [version, record, ...]")
    if not obj:
        raise SchemaError("version", "missing")
    version = obj[0]
    if isinstance(version, bool) or not isinstance(version, int):
        raise SchemaError("version", "expected an integer")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            "version", "unsupported %d (this schema is %d)" % (version, SCHEMA_VERSION)
        )
    n = len(obj) - 1
    if n == 0:
        raise SchemaError("message", "no records")
    if n > MAX_RECORDS:
        raise SchemaError("message", "more than %d records" % MAX_RECORDS)
    out = []
    for i in range(n):
        out.append(_decode_record(obj[i + 1], table, common, _where(i, n)))
    return out


def _where(i, n):
    # Name the record only when there are several: "record 2 " prefix.
    return "record %d " % i if n > 1 else ""


def _encode_record(msg, table, common, where):
    if not isinstance(msg, dict):
        raise SchemaError(where + "message", "expected a dict")
    name = msg.get("type")
    if not isinstance(name, str):
        raise SchemaError(where + "type", "missing or not a string")
    code = _type_code(table, name)
    if code < 0:
        raise SchemaError(where + "type", "unknown record type %r" % name)
    fields = table[code][1]
    prefix = where + name + "."
    out = {K_TYPE: code}
    seen = 1  # "type"
    specs = common + fields
    for spec in specs:
        value = msg.get(spec[1])
        if spec[1] in msg:
            seen += 1
        default = spec[5]
        if value is None:
            if default is REQUIRED:
                raise SchemaError(prefix + spec[1], "missing required field")
            continue
        wire = _to_wire(spec, value, prefix)
        if value != default:
            out[spec[0]] = wire
    if seen != len(msg):
        for key in msg:
            if key != "type" and not _spec_by_name(specs, key):
                raise SchemaError(prefix + str(key), "unknown field")
    _cross_check(name, msg, prefix)
    return out


def _decode_record(obj, table, common, where):
    if not isinstance(obj, dict):
        raise SchemaError(where + "record", "expected a map")
    code = obj.get(K_TYPE)
    if code is None:
        raise SchemaError(where + "type", "missing (key 0)")
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < len(table):
        raise SchemaError(where + "type", "unknown record type code %r" % (code,))
    name, fields = table[code]
    prefix = where + name + "."
    specs = common + fields
    msg = {"type": name}
    for key in obj:
        if key == K_TYPE and not isinstance(key, bool):
            continue
        spec = None
        if isinstance(key, int) and not isinstance(key, bool):
            for s in specs:
                if s[0] == key:
                    spec = s
                    break
        if spec is None:
            raise SchemaError(prefix + "key %r" % (key,), "unknown key")
        msg[spec[1]] = _from_wire(spec, obj[key], prefix)
    for spec in specs:
        if spec[1] not in msg:
            default = spec[5]
            if default is REQUIRED:
                raise SchemaError(prefix + spec[1], "missing required field (key %d)" % spec[0])
            if default is not None:
                msg[spec[1]] = default
    _cross_check(name, msg, prefix)
    return msg


def _type_code(table, name):
    for code in range(len(table)):
        if table[code][0] == name:
            return code
    return -1


def _spec_by_name(specs, name):
    for spec in specs:
        if spec[1] == name:
            return spec
    return None


def _to_wire(spec, value, prefix):
    kind = spec[2]
    # bool first: on CPython True is an int, on MicroPython it is not.
    if kind == T_BOOL:
        if not isinstance(value, bool):
            raise SchemaError(prefix + spec[1], "expected a bool, got %s" % _type_name(value))
        return value
    if kind == T_INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(prefix + spec[1], "expected an integer, got %s" % _type_name(value))
        _check_range(spec, value, prefix)
        return value
    if kind == T_ENUM:
        names = spec[3]
        for code in range(len(names)):
            if names[code] == value:
                return code
        raise SchemaError(
            prefix + spec[1], "unknown value %r (one of %s)" % (value, ", ".join(names))
        )
    if kind == T_IDS:
        return _ids(spec, value, prefix)
    if not isinstance(value, str):
        raise SchemaError(prefix + spec[1], "expected a string, got %s" % _type_name(value))
    _check_text(spec, value, prefix)
    return value


def _from_wire(spec, value, prefix):
    kind = spec[2]
    if kind == T_BOOL:
        if not isinstance(value, bool):
            raise SchemaError(prefix + spec[1], "expected a bool, got %s" % _type_name(value))
        return value
    if kind == T_TEXT:
        if not isinstance(value, str):
            raise SchemaError(
                prefix + spec[1], "expected a text string, got %s" % _type_name(value)
            )
        _check_text(spec, value, prefix)
        return value
    if kind == T_IDS:
        return _ids(spec, value, prefix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(prefix + spec[1], "expected an integer, got %s" % _type_name(value))
    if kind == T_ENUM:
        names = spec[3]
        if not 0 <= value < len(names):
            raise SchemaError(prefix + spec[1], "unknown code %d (0..%d)" % (value, len(names) - 1))
        return names[value]
    _check_range(spec, value, prefix)
    return value


def _ids(spec, value, prefix):
    # Both directions: a list of distinct ids, returned as a new list.
    if not isinstance(value, (list, tuple)):
        raise SchemaError(prefix + spec[1], "expected an array, got %s" % _type_name(value))
    if not spec[3] <= len(value) <= spec[4]:
        raise SchemaError(prefix + spec[1], "%d ids, not %d..%d" % (len(value), spec[3], spec[4]))
    out = []
    for i in value:
        if isinstance(i, bool) or not isinstance(i, int):
            raise SchemaError(prefix + spec[1], "expected integer ids, got %s" % _type_name(i))
        if not 0 <= i <= U16:
            raise SchemaError(prefix + spec[1], "id %d out of range 0..%d" % (i, U16))
        if i in out:
            raise SchemaError(prefix + spec[1], "id %d twice" % i)
        out.append(i)
    return out


def _check_range(spec, value, prefix):
    if not spec[3] <= value <= spec[4]:
        raise SchemaError(prefix + spec[1], "%d out of range %d..%d" % (value, spec[3], spec[4]))


def _check_text(spec, value, prefix):
    if not spec[3] <= len(value) <= spec[4]:
        raise SchemaError(
            prefix + spec[1], "length %d out of range %d..%d" % (len(value), spec[3], spec[4])
        )
    for ch in value:
        if not " " <= ch <= "~":
            raise SchemaError(prefix + spec[1], "only printable ASCII allowed")


def _type_name(value):
    return type(value).__name__


def _cross_check(name, msg, prefix):
    # Rules that tie fields together; msg may hold None for fields not sent (encode side).
    if name == "event":
        spot = msg.get("event") == "spot_change"
        if spot and msg.get("state") is None:
            raise SchemaError(prefix + "state", "required with event spot_change")
        if not spot and msg.get("state") is not None:
            raise SchemaError(prefix + "state", "only with event spot_change")
        if msg.get("count") is not None and msg.get("event") != "presence":
            raise SchemaError(prefix + "count", "only with event presence")
    elif name == "command":
        cmd = msg.get("command")
        if msg.get("alarm") is not None and cmd != "ack_alarm":
            raise SchemaError(prefix + "alarm", "only with command ack_alarm")
        if msg.get("duration_s") is not None and cmd not in ("identify", "wake"):
            raise SchemaError(prefix + "duration_s", "only with command identify or wake")
    elif name == "ack":
        confirm = msg.get("confirm")
        refused = msg.get("refused")
        if confirm is None and refused is None:
            raise SchemaError(prefix + "confirm", "an ack confirms or refuses at least one id")
        if (refused is None) != (msg.get("reason") is None):
            raise SchemaError(prefix + "reason", "required with refused, and only with it")
        if confirm is not None and refused is not None:
            for i in refused:
                if i in confirm:
                    raise SchemaError(prefix + "refused", "id %r also confirmed" % (i,))
    elif name == "lighting_profile":
        lo = msg.get("min_level_pct")
        hi = msg.get("max_level_pct")
        if lo is not None and hi is not None and lo > hi:
            raise SchemaError(prefix + "min_level_pct", "greater than max_level_pct")

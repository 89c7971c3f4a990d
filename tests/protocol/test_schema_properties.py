"""protocol/schema.py, property tests: every valid message round-trips; nothing else gets through.

Messages are generated from the schema's own tables (read on the CPython side), encoded and
decoded inside the interpreter under test, and carried as bytes by cbor2 and by protocol.cbor.
"""

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import schema as host_schema

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def field_values(spec):
    _key, _name, kind, a, b, _default = spec
    if kind == host_schema.T_INT:
        return st.integers(a, b) | st.sampled_from([a, b])  # the edges, often
    if kind == host_schema.T_BOOL:
        return st.booleans()
    if kind == host_schema.T_ENUM:
        return st.sampled_from(a)
    if kind == host_schema.T_IDS:
        ids = st.integers(0, host_schema.U16) | st.sampled_from([0, 23, 24, 255, 256, 65535])
        return st.lists(ids, min_size=a, max_size=min(b, 6), unique=True)
    return st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=a, max_size=b)


def record_strategy(table, common):
    @st.composite
    def one(draw):
        name, fields = draw(st.sampled_from(table))
        msg = {"type": name}
        for spec in common + fields:
            if spec[5] is host_schema.REQUIRED or draw(st.booleans()):
                msg[spec[1]] = draw(field_values(spec))
        # the cross-field rules, satisfied
        if name == "event":
            msg.pop("state", None)
            if msg["event"] == "spot_change":
                msg["state"] = draw(st.sampled_from(host_schema.SPOT_STATES))
            if msg["event"] != "presence":
                msg.pop("count", None)
        if name == "command":
            if msg["command"] != "ack_alarm":
                msg.pop("alarm", None)
            if msg["command"] not in ("identify", "wake"):
                msg.pop("duration_s", None)
        if name == "ack":
            if "confirm" not in msg and "refused" not in msg:
                msg["confirm"] = draw(field_values(fields[0]))
            if "refused" in msg:
                confirmed = msg.get("confirm", [])
                refused = [i for i in msg["refused"] if i not in confirmed]
                if refused:
                    msg["refused"] = refused
                    msg["reason"] = draw(st.sampled_from(host_schema.REFUSALS))
                else:
                    del msg["refused"]
            if "refused" not in msg:
                msg.pop("reason", None)
            if "confirm" not in msg and "refused" not in msg:
                msg["confirm"] = [0]
        if name == "lighting_profile" and "min_level_pct" in msg and "max_level_pct" in msg:
            lo, hi = sorted((msg["min_level_pct"], msg["max_level_pct"]))
            msg["min_level_pct"], msg["max_level_pct"] = lo, hi
        return msg

    return one()


UPLINKS = st.lists(
    record_strategy(host_schema.UPLINK, host_schema.UPLINK_COMMON), min_size=1, max_size=4
)
DOWNLINKS = st.lists(
    record_strategy(host_schema.DOWNLINK, host_schema.DOWNLINK_COMMON), min_size=1, max_size=4
)


def with_defaults(msg, table, common):
    out = dict(msg)
    for name, fields in table:
        if name == msg["type"]:
            for spec in common + fields:
                default = spec[5]
                if (
                    spec[1] not in out
                    and default is not None
                    and default is not host_schema.REQUIRED
                ):
                    out[spec[1]] = default
    return out


@PROPERTY_SETTINGS
@given(records=UPLINKS)
def test_uplinks_round_trip_through_both_codecs(interp, records):
    schema = interp.module("protocol.schema")
    cbor = interp.module("protocol.cbor")
    data = cbor.dumps(schema.encode_uplink(records))
    assert data == cbor2.dumps(cbor2.loads(data), canonical=True)  # deterministic
    expected = [with_defaults(m, host_schema.UPLINK, host_schema.UPLINK_COMMON) for m in records]
    assert schema.decode_uplink(cbor2.loads(data)) == expected
    assert schema.decode_uplink(cbor.loads(data)) == expected


@PROPERTY_SETTINGS
@given(records=DOWNLINKS)
def test_downlinks_round_trip_through_both_codecs(interp, records):
    schema = interp.module("protocol.schema")
    cbor = interp.module("protocol.cbor")
    data = cbor.dumps(schema.encode_downlink(records))
    expected = [
        with_defaults(m, host_schema.DOWNLINK, host_schema.DOWNLINK_COMMON) for m in records
    ]
    assert schema.decode_downlink(cbor2.loads(data)) == expected
    # every id the gateway set is readable even by a node whose schema refuses the rest
    assert schema.downlink_ids(cbor2.loads(data)) == list(
        dict.fromkeys(m["id"] for m in records if "id" in m)
    )


# Arbitrary decoded CBOR: what a buggy or hostile node could send after OSCORE.
SCALARS = (
    st.integers(-(2**33), 2**33)
    | st.integers(-3, 30)
    | st.booleans()
    | st.none()
    | st.text(max_size=4)
    | st.binary(max_size=4)
    | st.floats(allow_nan=False, width=32)
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.integers(-1, 14) | st.booleans() | st.text(max_size=2), inner, max_size=5
        )
    ),
    max_leaves=12,
)
ALMOST = st.tuples(st.just(1), st.lists(JUNK, min_size=1, max_size=3)).map(lambda t: [t[0], *t[1]])


@PROPERTY_SETTINGS
@given(obj=JUNK | ALMOST)
def test_junk_raises_schema_error_or_decodes_to_something_valid(interp, obj):
    schema = interp.module("protocol.schema")
    for decode, encode in (
        (schema.decode_uplink, schema.encode_uplink),
        (schema.decode_downlink, schema.encode_downlink),
    ):
        try:
            decoded = decode(obj)
        except schema.SchemaError:
            continue
        # whatever passes is a valid message: it encodes again and decodes to itself
        assert decode(encode(decoded)) == decoded
    ids = schema.downlink_ids(obj)  # never raises, and reads only valid ids
    assert all(type(i) is int and 0 <= i <= 0xFFFF for i in ids) and len(set(ids)) == len(ids)


@st.composite
def mutated(draw):
    records = draw(UPLINKS)
    obj = host_schema.encode_uplink(records)
    i = draw(st.integers(1, len(obj) - 1))
    record = dict(obj[i])
    key = draw(st.sampled_from(sorted(record)) | st.integers(0, 15))
    record[key] = draw(SCALARS)
    obj[i] = record
    return obj


@PROPERTY_SETTINGS
@given(obj=mutated())
def test_one_changed_value_is_caught_or_still_valid(interp, obj):
    schema = interp.module("protocol.schema")
    try:
        decoded = schema.decode_uplink(obj)
    except schema.SchemaError as e:
        assert ": " in str(e)  # always names a field
        return
    assert schema.decode_uplink(schema.encode_uplink(decoded)) == decoded

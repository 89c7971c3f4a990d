"""Property tests: arbitrary wake sequences never crash a kind, every record it emits fits the
schema, and the bookkeeping invariants hold."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import schema
from tests.support.scripted_kinds import ulp_meter

# the mpy fixture is one long-lived interpreter; each example builds its own kind in it
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def all_records(outs):
    recs = []
    for out in outs:
        assert out["wake_s"] >= 1
        if out["reading"]:
            recs.append(out["reading"])
        recs += out["events"] + out["alarms"]
    for i in range(0, len(recs), schema.MAX_RECORDS):
        schema.decode_uplink(schema.encode_uplink(recs[i : i + schema.MAX_RECORDS]))
    return recs


def wakes(values):
    """Monotonic node times with an optional time of day."""
    return st.lists(st.tuples(values, st.integers(1, 5000), st.booleans()), min_size=1, max_size=60)


def timeline(draws, start_tod=0):
    t = 0
    out = []
    for inputs, gap, synced in draws:
        t += gap
        out.append((inputs, t, (start_tod + t) % 86400 if synced else None))
    return out


@EXAMPLES
@given(
    draws=wakes(st.tuples(st.one_of(st.none(), st.integers(0, 40)), st.booleans())),
    pulse_ml=st.sampled_from([1, 10, 1000, 100000]),
)
def test_leak_volume_is_every_pulse(mpy, draws, pulse_ml):
    leak = mpy.module("firmware.kinds.leak")
    drive = mpy.module("tests.support.scripted_kinds").drive
    k = leak.Leak({"pulse_ml": pulse_ml})
    count = 0
    steps = []
    for (more, wet), gap, synced in draws:
        if more is not None:
            count += more
        pulses = None if more is None else count
        steps.append(({"pulses": pulses, "wet": wet}, gap, synced))
    outs = drive(k, timeline(steps, 43200))
    all_records(outs)
    first_count = next((s[0]["pulses"] for s in steps if s[0]["pulses"] is not None), None)
    seen = count - first_count if first_count is not None else 0
    assert k.save()["n"] == seen
    readings = [o["reading"] for o in outs if o["reading"]]
    if readings and readings[-1] is outs[-1]["reading"]:
        assert readings[-1]["volume_l"] == seen * pulse_ml // 1000


def zero_hour_between(pulses, prev, now):
    """A zero-flow hour was going on at some moment in (prev, now]: a quiet run between two
    pulses (the counter's start at 0 the first, now the last) had lasted an hour by then.
    The truth the leak kind should see at the wake at `now`."""
    edges = [0] + [p for p in pulses if p <= now] + [now]
    return any(b - a >= 3600 and a + 3600 <= now and b > prev for a, b in itertools.pairwise(edges))


@EXAMPLES
@given(
    gaps=st.lists(st.integers(0, 7000), max_size=50),
    wake_gaps=st.lists(st.integers(1, 4000), min_size=1, max_size=60),
)
def test_leak_zero_flow_hours_with_the_ulp_are_exact_and_never_fewer(mpy, gaps, wake_gaps):
    leak = mpy.module("firmware.kinds.leak")
    drive_saved = mpy.module("tests.support.scripted_kinds").drive_saved
    pulses = list(itertools.accumulate(gaps))
    times = list(itertools.accumulate(wake_gaps))
    ulp_steps = []
    plain_steps = []
    for t in times:
        count, quiet, dry = ulp_meter(pulses, 0, t)
        ulp_steps.append(({"pulses": count, "quiet_s": quiet, "dry": dry}, t, None))
        plain_steps.append(({"pulses": count}, t, None))
    ulp = drive_saved(leak.Leak(), ulp_steps, "zero")
    plain = drive_saved(leak.Leak(), plain_steps, "zero")
    for i in range(1, len(times)):
        prev, now = times[i - 1], times[i]
        # the ULP sees every zero-flow hour the count across wakes sees, and sooner
        assert ulp[i] >= plain[i]
        # exactly those of the pulses' truth, dated within the interval they ended in
        moved = ulp[i] != ulp[i - 1]
        assert moved == zero_hour_between(pulses, prev, now), (i, pulses, times)
        if moved:
            assert prev < ulp[i] <= now


@EXAMPLES
@given(
    draws=wakes(
        st.one_of(
            st.none(),
            st.tuples(*[st.integers(-200000, 200000)] * 3),
        )
    )
)
def test_occupancy_never_crashes_and_counts_changes(mpy, draws):
    occ = mpy.module("firmware.kinds.occupancy")
    drive = mpy.module("tests.support.scripted_kinds").drive
    k = occ.Occupancy({"cal_samples": 2})
    outs = drive(k, timeline([({"mag_nt": v}, g, s) for v, g, s in draws]))
    recs = all_records(outs)
    events = [r for r in recs if r["type"] == "event"]
    # events alternate: no event repeats the state before it
    states = [e["state"] for e in events]
    assert all(a != b for a, b in itertools.pairwise(states))
    if states:
        assert states[-1] == ("free", "occupied", "unknown")[k.save()["st"]]


@EXAMPLES
@given(
    draws=wakes(
        st.tuples(
            st.lists(st.one_of(st.none(), st.integers(0, 6000)), min_size=1, max_size=7),
            st.one_of(st.none(), st.integers(-400, 1250)),
            st.booleans(),
        )
    )
)
def test_binfill_never_crashes_and_fill_stays_in_range(mpy, draws):
    binfill = mpy.module("firmware.kinds.binfill")
    drive = mpy.module("tests.support.scripted_kinds").drive
    k = binfill.BinFill()
    steps = [
        ({"ranges_mm": r, "temp_c_x10": t, "tilt": tilt}, g, s) for (r, t, tilt), g, s in draws
    ]
    recs = all_records(drive(k, timeline(steps)))
    for r in recs:
        if r["type"] == "binfill":
            assert 0 <= r["fill_pct"] <= 100


@EXAMPLES
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["presence", "tick", "tick", "wake"]), st.integers(1, 3000)),
        min_size=1,
        max_size=80,
    ),
    fade_ms=st.integers(0, 2000),
)
def test_lamp_level_stays_between_min_and_max(mpy, events, fade_ms):
    sb = mpy.module("tests.support.scripted_bus")
    lamp_mod = mpy.module("firmware.drivers.lamp")
    lighting = mpy.module("firmware.kinds.lighting")
    drive_lamp = mpy.module("tests.support.scripted_kinds").drive_lamp
    lamp = lamp_mod.Lamp(sb.PWM())
    lamp.set(20)
    k = lighting.Lighting(
        {"min_level_pct": 20, "max_level_pct": 90, "fade_ms": fade_ms, "hold_s": 2}, lamp=lamp
    )
    t = 1 << 61  # half way to the unix port's ticks wrap: some scripts cross it
    script = []
    for what, gap in events:
        t = (t + gap) % (1 << 62)
        script.append((what, t))
    levels = drive_lamp(k, script)
    assert all(20 <= lv <= 90 for lv in levels)
    # long after the last detection, the lamp is back at rest
    k.tick((t + 10000) % (1 << 62))
    k.tick((t + 10000 + fade_ms + 1) % (1 << 62))
    assert lamp.level == 20

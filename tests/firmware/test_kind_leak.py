"""Leak kind: volume and flow from pulses, the 24 h and two-night rules, the wet probe."""

import pytest

from protocol import schema

HOUR = 3600
DAY = 86400
NOON = 12 * HOUR


def records(out):
    """Every record of a step's result, checked against the shared schema."""
    recs = ([out["reading"]] if out["reading"] else []) + out["events"] + out["alarms"]
    if recs:
        assert schema.decode_uplink(schema.encode_uplink(recs)) is not None
    return recs


@pytest.fixture
def leak(mpy):
    return mpy.module("firmware.kinds.leak")


class Meter:
    """Drives a Leak kind through wakes with a scripted pulse count and clock."""

    def __init__(self, kind, start_tod=NOON, synced=True):
        self.kind = kind
        self.t = 0
        self.count = 0
        self.start_tod = start_tod
        self.synced = synced
        self.outs = []

    def tod(self):
        return (self.start_tod + self.t) % DAY if self.synced else None

    def wake(self, pulses=0, wet=False, at=None):
        if at is not None:
            self.t = at
        self.count += pulses
        out = self.kind.step({"pulses": self.count, "wet": wet}, self.t, self.tod())
        records(out)
        self.outs.append(out)
        return out

    def run(self, until, every=900, per_wake=1, night_per_wake=None):
        """Wake every `every` s up to `until`, `per_wake` pulses each (night_per_wake from
        00:00 to 06:00 when given)."""
        out = None
        while self.t + every <= until:
            self.t += every
            hour = self.tod() // HOUR if self.synced else 12
            n = night_per_wake if night_per_wake is not None and hour < 6 else per_wake
            out = self.wake(n)
        return out


def test_volume_and_flow(leak):
    m = Meter(leak.Leak({"pulse_ml": 1000}))
    first = m.wake(0)
    assert first["reading"]["volume_l"] == 0
    assert first["reading"]["flow_lh"] == 0
    out = m.wake(30, at=900)  # 30 L in 15 min
    r = out["reading"]
    assert (r["volume_l"], r["flow_lh"], r["leak"], r["probe_wet"]) == (30, 120, "none", False)
    assert r["night_flow_lh"] is None  # no night evaluated yet
    assert out["wake_s"] == 900


def test_small_meter_constant_and_counter_restart(leak):
    m = Meter(leak.Leak({"pulse_ml": 10}))  # 100 pulses per litre
    m.wake(0)
    m.wake(250, at=900)
    assert m.outs[-1]["reading"]["volume_l"] == 2  # 2.5 L, whole litres
    # the board's counter restarted after a power loss: it reads 5
    m.count = 0
    out = m.wake(5, at=1800)
    assert out["reading"]["volume_l"] == 2  # 255 pulses = 2.55 L
    assert m.kind.save()["n"] == 255


def test_suspected_exactly_24_hours_without_a_zero_flow_hour(leak):
    m = Meter(leak.Leak(), synced=False)
    m.wake(0)
    m.run(DAY - 900)
    assert m.outs[-1]["reading"]["leak"] == "none"
    out = m.wake(1, at=DAY - 1)
    assert out["reading"] is None or out["reading"]["leak"] == "none"
    assert m.kind.save()["ls"] == 0
    m.wake(1, at=DAY)
    assert m.kind.save()["ls"] == 1  # suspected at exactly 24 h


def test_zero_flow_hour_edge_3599_vs_3600_seconds(leak):
    for dry_s, zero in ((3599, False), (3600, True)):
        m = Meter(leak.Leak(), synced=False)
        m.wake(0)
        m.run(20 * HOUR)
        last_flow = m.t
        m.wake(0, at=last_flow + 1800)
        m.wake(0, at=last_flow + dry_s)  # the count has not moved for dry_s seconds
        m.wake(1, at=last_flow + 4000)
        m.run(DAY + 900)
        assert m.kind.save()["ls"] == (0 if zero else 1), dry_s
        if zero:
            # 24 h after the zero-flow hour, continuous flow makes it suspected again
            m.run(last_flow + dry_s + DAY)
            m.wake(1, at=last_flow + dry_s + DAY - 1)
            assert m.kind.save()["ls"] == 0
            m.wake(1, at=last_flow + dry_s + DAY)
            assert m.kind.save()["ls"] == 1


def test_zero_flow_hour_clears_a_suspicion(leak):
    m = Meter(leak.Leak(), synced=False)
    m.wake(0)
    m.run(DAY)
    assert m.kind.save()["ls"] == 1
    m.run(DAY + 2 * HOUR, per_wake=0)
    assert m.outs[-1]["reading"]["leak"] == "none"


def test_confirmed_after_two_nights_not_one(leak):
    # 3 L per 15-minute wake: 12 L/h all day and all night, threshold 1 L/h
    m = Meter(leak.Leak({"night_flow_lh": 1}))
    m.wake(0)
    m.run(DAY - 6 * HOUR + 900, per_wake=3)  # past 06:00 of the first night
    assert m.kind.save()["run"] == 1
    assert m.outs[-1]["reading"]["night_flow_lh"] == 12
    assert all(not o["alarms"] for o in m.outs)
    assert m.kind.save()["ls"] != 2  # one night is not enough
    m.run(2 * DAY - 6 * HOUR - 900, per_wake=3)  # just before 06:00 of the second night
    assert m.kind.save()["ls"] == 1  # suspected by now (24 h), not confirmed
    out = m.run(2 * DAY - 6 * HOUR + 900, per_wake=3)
    assert out["reading"]["leak"] == "confirmed"
    assert out["alarms"] == [
        {"type": "alarm", "alarm": "leak_confirmed", "active": True, "value": 12}
    ]
    # a clean night (no flow between 00:00 and 06:00) clears it and says so
    m.run(3 * DAY - 6 * HOUR + 900, per_wake=3, night_per_wake=0)
    cleared = [a for o in m.outs[-8:] for a in o["alarms"]]
    assert cleared == [{"type": "alarm", "alarm": "leak_confirmed", "active": False, "value": 0}]
    assert m.outs[-1]["reading"]["leak"] == "none"


@pytest.mark.parametrize(("night_per_wake", "run"), [(3, 0), (4, 1)])
def test_night_threshold_edge(leak, night_per_wake, run):
    # threshold 12 L/h: a night minimum of exactly 12 L/h is clean, 16 L/h is not
    m = Meter(leak.Leak({"night_flow_lh": 12}))
    m.wake(0)
    m.run(DAY - 6 * HOUR + 900, per_wake=5, night_per_wake=night_per_wake)
    assert m.kind.save()["run"] == run


def test_one_quiet_hour_sets_the_night_minimum(leak):
    m = Meter(leak.Leak({"night_flow_lh": 1}))
    m.wake(0)
    m.run(DAY - 9 * HOUR, per_wake=3)  # up to 03:00
    m.run(DAY - 8 * HOUR, per_wake=0)  # 03:00-04:00 without a pulse
    m.run(DAY - 6 * HOUR + 900, per_wake=3)
    assert m.kind.save()["run"] == 0
    assert m.kind.save()["last"] == 0


def test_no_night_rule_before_time_sync(leak):
    m = Meter(leak.Leak(), synced=False)
    m.wake(0)
    m.run(3 * DAY, per_wake=3)
    assert m.kind.save()["run"] == 0
    assert m.outs[-1]["reading"]["leak"] == "suspected"


def test_a_night_asleep_breaks_the_run(leak):
    m = Meter(leak.Leak({"night_flow_lh": 1}))
    m.wake(0)
    m.run(DAY - 6 * HOUR + 900, per_wake=3)
    assert m.kind.save()["run"] == 1
    # the node was off from 20:00 to 07:00: no second night to compare
    m.run(DAY + 8 * HOUR, per_wake=3)
    m.wake(40, at=DAY + 19 * HOUR)
    # the next night leaks again, but it is not the night after the first one
    m.run(3 * DAY - 6 * HOUR + 900, per_wake=3)
    assert m.kind.save()["run"] == 1
    assert m.kind.save()["ls"] != 2


def test_wet_probe_alarm_reminder_ack_and_clear(leak):
    m = Meter(leak.Leak({"remind_s": 3600}), synced=False)
    m.wake(0)
    out = m.wake(0, wet=True, at=100)  # woken early by the probe pin
    assert out["alarms"] == [{"type": "alarm", "alarm": "probe_wet", "active": True}]
    assert out["reading"] is None  # the periodic reading is not due
    assert out["wake_s"] == 800
    assert m.wake(0, wet=True, at=900)["alarms"] == []
    assert m.wake(0, wet=True, at=3700)["alarms"][0]["alarm"] == "probe_wet"  # reminder
    m.kind.command({"command": "ack_alarm", "alarm": "probe_wet"}, 3800)
    assert m.wake(0, wet=True, at=8000)["alarms"] == []
    out = m.wake(0, wet=False, at=8900)
    assert out["alarms"] == [{"type": "alarm", "alarm": "probe_wet", "active": False}]
    out = m.wake(0, wet=True, at=9000)
    assert out["alarms"][0]["active"] is True  # a new wet episode alarms again


def test_state_survives_deep_sleep(mpy, leak):
    cbor = mpy.module("protocol.cbor")
    m = Meter(leak.Leak({"night_flow_lh": 1}))
    m.wake(0)
    m.run(DAY - 8 * HOUR, per_wake=3)  # stop in the middle of the night
    saved = m.kind.save()
    assert len(cbor.dumps(saved)) <= 200  # fits in RTC memory beside the runtime's own
    m.kind = leak.Leak({"night_flow_lh": 1}, saved)  # a new boot with RTC memory kept
    m.run(DAY - 6 * HOUR + 900, per_wake=3)
    assert m.kind.save()["run"] == 1


def test_configuration_is_validated_before_it_applies(leak):
    k = leak.Leak()
    with pytest.raises(ValueError, match="pulse_ml"):
        k.configure({"pulse_ml": 0})
    with pytest.raises(ValueError, match="confirm_nights"):
        k.configure({"pulse_ml": 10, "confirm_nights": True})
    with pytest.raises(ValueError, match="unknown key"):
        k.configure({"pulses": 1})
    assert k.cfg["pulse_ml"] == 1000  # nothing applied
    # a decoded leak_config downlink goes in as it is
    cfg = k.configure({"type": "leak_config", "pulse_ml": 100, "night_flow_lh": 3})
    assert (cfg["pulse_ml"], cfg["night_flow_lh"]) == (100, 3)
    with pytest.raises(ValueError, match="report_s"):
        leak.Leak({"report_s": 5})
    with pytest.raises(ValueError):
        k.command("recalibrate", 0)


def test_three_nights_when_configured(leak):
    m = Meter(leak.Leak({"night_flow_lh": 1, "confirm_nights": 3}))
    m.wake(0)
    m.run(2 * DAY - 6 * HOUR + 900, per_wake=3)
    assert m.kind.save()["ls"] == 1
    m.run(3 * DAY - 6 * HOUR + 900, per_wake=3)
    assert m.kind.save()["ls"] == 2


def test_sample_reads_the_real_drivers(mpy, leak):
    sb = mpy.module("tests.support.scripted_bus")
    pulse = mpy.module("firmware.drivers.pulse")
    probe = mpy.module("firmware.drivers.leakprobe")
    counter = sb.Pin(0, [0, 45])
    sensors = {
        "meter": pulse.PulseCounter(counter=counter),
        "probe": probe.LeakProbe(sb.Pin(1, [1, 0])),
    }
    k = leak.Leak()
    assert k.sample(sensors, 0)["alarms"] == []
    out = k.sample(sensors, 900)
    assert out["reading"]["volume_l"] == 45
    assert out["alarms"][0]["alarm"] == "probe_wet"
    assert k.read({}) == {"pulses": None, "wet": None}


def test_kinds_load_by_config_name(mpy):
    kinds = mpy.module("firmware.kinds")
    for name in ("leak", "occupancy", "lighting", "binfill"):
        loaded = kinds.load(name).NAME
        assert loaded == name
    with pytest.raises(ValueError):
        kinds.load("toaster")

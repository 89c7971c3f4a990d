"""Leak kind: volume and flow from pulses, the 24 h and two-night rules, the wet probe."""

import json

import pytest

from tests.firmware.node_support import run_mpy
from tests.support.kind_steps import step_records as records
from tests.support.scripted_kinds import ulp_meter

HOUR = 3600
DAY = 86400
NOON = 12 * HOUR


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
    assert k.read({}) == {"pulses": None, "wet": None, "quiet_s": None, "dry": None}


# -- with the quiet time of a counter that watches the meter asleep (the ESP32's ULP) ---------


def ulp_wakes(kind, pulses, wakes, *, ulp=True, start=0, base=0):
    """Wake `kind` at each time of `wakes` with what the ULP counter started at `start` saw of
    a meter pulsing at `pulses` (the count plus `base`); ulp=False: the count alone."""
    for t in wakes:
        count, quiet, dry = ulp_meter(pulses, start, t)
        inputs = {"pulses": base + count, "wet": False}
        if ulp:
            inputs.update(quiet_s=quiet, dry=dry)
        records(kind.step(inputs, t, None))
    return kind.save()


def every(start, end, step):
    return list(range(start, end + 1, step))


@pytest.mark.parametrize(("gap", "seen"), [(3599, False), (3600, True), (3660, True)])
def test_a_quiet_hour_straddling_wakes_counts_with_the_ulp(leak, gap, seen):
    # a pulse every 5 minutes, but none from 7260 s for `gap` seconds: a pulse falls in the
    # wake intervals on both sides (wakes every 900 s), so the count alone never stands still
    # for an hour across wakes
    quiet_end = 7260 + gap
    pulses = [*every(0, 7200, 300), 7260, *every(quiet_end, 2 * DAY, 300)]
    wakes = every(0, DAY, 900)
    ulp = ulp_wakes(leak.Leak(), pulses, wakes)
    plain = ulp_wakes(leak.Leak(), pulses, wakes, ulp=False)
    assert plain["zero"] == 0  # missed: suspected 24 h after installation
    assert plain["ls"] == 1
    # the next wake dates the zero-flow hour to the first second after the wake before it
    # ended: the closest moment the counter's data make certain (the pulse that ended it lies
    # between that wake and the last pulse before the next one)
    zero = quiet_end // 900 * 900 + 1
    assert ulp["zero"] == (zero if seen else 0)
    assert ulp["ls"] == (0 if seen else 1)
    if seen:
        # and the 24 h clock runs from there
        k = leak.Leak(None, ulp)
        after = [t for t in every(0, 2 * DAY, 900) if t > DAY]
        ulp_wakes(k, pulses, [t for t in after if t < zero + DAY])
        assert k.save()["ls"] == 0
        ulp_wakes(k, pulses, [t for t in after if t >= zero + DAY][:1])
        assert k.save()["ls"] == 1


def test_a_quiet_run_going_on_keeps_the_zero_flow_clock_at_now(leak):
    pulses = [*every(0, 7200, 300), 7500]
    save = ulp_wakes(leak.Leak(), pulses, every(0, 7200 + 4 * HOUR, 900))
    assert save["zero"] == 7200 + 4 * HOUR
    assert save["dry"] == 7500  # the last pulse, to the second
    assert save["dc"] == 1  # one dry hour, however long the run


def test_ulp_counter_restart_after_a_reset(leak):
    # two dry hours early on, then steady flow; a reset at 20000 reloads the ULP (its count,
    # quiet time and dry hours start again; the board's total count goes on)
    pulses = [*every(0, 900, 300), 4600, *every(8300, 19800, 300)]
    k = leak.Leak()
    save = ulp_wakes(k, pulses, every(0, 19800, 900))
    # the quiet run ended at 8300 s: dated to the first second after the 8100 s wake
    assert (save["dc"], save["zero"]) == (2, 8101)
    n = save["n"]
    before = ulp_meter(pulses, 0, 20000)[0]
    after = [20100, 23900, 24000]  # no pulse for 3700 s after the reset, then again
    save = ulp_wakes(k, after, [20700], start=20000, base=before)
    # the dry count went down to 0: a restart, not a zero-flow hour
    assert (save["dc"], save["zero"], save["n"]) == (0, 8101, n + 1)
    # the first wake after a long sleep: one dry hour since the restart, below the last
    # count seen before it, is still a new one
    k = leak.Leak(None, dict(save, dc=2))
    save = ulp_wakes(k, after, [24300], start=20000, base=before)
    assert (save["dc"], save["zero"], save["n"]) == (1, 20701, n + 3)


def test_ulp_and_count_restart_together_after_a_power_loss(leak):
    pulses = every(0, 3 * HOUR, 300)
    k = leak.Leak()
    ulp_wakes(k, pulses, every(0, 3 * HOUR, 900))
    n = k.save()["n"]
    # the count, quiet time and dry hours all start again at 10900 (the kind's state kept)
    save = ulp_wakes(k, [11000, 11100], [11700], start=10900)
    assert save["n"] == n + 2
    assert save["zero"] == 0
    assert save["ls"] == 0


def test_a_wake_without_ulp_data_falls_back_to_the_count(leak):
    pulses = every(0, 7200, 300)
    k = leak.Leak()
    ulp_wakes(k, pulses, every(0, 7200, 900))
    assert k.save()["dc"] == 0
    # the counter stops giving its quiet time: the count rule takes over from the last pulse
    save = ulp_wakes(k, pulses, every(8100, 7200 + HOUR, 900), ulp=False)
    assert (save["dc"], save["dry"], save["zero"]) == (-1, 7200, 7200 + HOUR)


def test_sim_board_counter_drives_the_same_path_as_the_esp32(tmp_path):
    # the sim board's counter -> the real driver -> the kind, a wake every 900 s for a day: a
    # pulse every 256 s, a last one at 7260 s, the next 3660 s later (the quiet hour straddles
    # wakes), steady again from there. Beside it, a kind given the count alone.
    epoch = 1_700_000_000
    scenario = {
        "start": epoch,
        "signals": {"pulse_rate:34": 1 / 256},
        "timeline": [
            [7168, {"pulse_rate:34": 0}],
            [7260, {"pulses:34": 29}],
            [10920, {"pulses:34": 30, "pulse_rate:34": 1 / 256}],
        ],
    }
    (tmp_path / ".sim").mkdir()
    (tmp_path / ".sim/board.json").write_text(json.dumps({"epoch_s": epoch}))
    (tmp_path / ".sim/scenario.json").write_text(json.dumps(scenario))
    code = f"""
import json
from firmware import boards
from firmware.drivers.pulse import PulseCounter
from firmware.kinds.leak import Leak
b = boards.load()
meter = PulseCounter(counter=b.pulse_counter(34), ticks_ms=b.ticks_ms)
ulp, plain = Leak(), Leak()
for k in range(97):
    b.set_time({epoch} + 900 * k)
    now = b.time() - {epoch}
    ulp.sample({{"meter": meter}}, now)
    plain.step({{"pulses": meter.count()}}, now)
print(json.dumps([[k.s["zero"], k.s["ls"], k.s["n"]] for k in (ulp, plain)]))
"""
    out = json.loads(run_mpy(code, tmp_path).stdout.splitlines()[-1])
    n = 30 + (DAY - 10920) // 256
    # zero-flow hour (it ended at 10920 s) dated to the first second after the 10800 s wake;
    # the count alone misses it and suspects a leak 24 h after installation
    assert out == [[10801, 0, n], [0, 1, n]]


def test_kinds_load_by_config_name(mpy):
    kinds = mpy.module("firmware.kinds")
    for name in ("leak", "occupancy", "lighting", "binfill"):
        loaded = kinds.load(name).NAME
        assert loaded == name
    with pytest.raises(ValueError):
        kinds.load("toaster")

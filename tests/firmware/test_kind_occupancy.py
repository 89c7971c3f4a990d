"""Occupancy kind: baseline, threshold and hysteresis, debounce, drift, heartbeat."""

import pytest

from tests.support.kind_steps import checked_step as check

BASE = (20000, -5000, 42000)  # nT: a plausible earth field at the spot


@pytest.fixture
def occ(mpy):
    return mpy.module("firmware.kinds.occupancy")


class Spot:
    def __init__(self, kind):
        self.kind = kind
        self.t = 0

    def sample(self, dx=0, dy=0, dz=0, every=10, health=0):
        self.t += every
        nt = (BASE[0] + dx, BASE[1] + dy, BASE[2] + dz)
        return check(self.kind.step({"mag_nt": nt, "health": health}, self.t))

    def events(self, out):
        return [e["state"] for e in out["events"]]


def calibrated(occ, **cfg):
    spot = Spot(occ.Occupancy(cfg))
    for _ in range(3):
        out = spot.sample()
        assert out["events"] == []
        assert out["wake_s"] == 2  # calibrating: quick wakes
    out = spot.sample()
    assert spot.events(out) == ["free"]
    return spot


def test_cold_boot_calibrates_then_reports_free(occ):
    spot = Spot(occ.Occupancy())
    first = spot.sample()
    assert first["reading"] == {
        "type": "occupancy",
        "state": "unknown",
        "changes": 0,
        "since_change_s": 0,
        "magnetometer": "ok",
    }
    spot.sample()
    spot.sample()
    out = spot.sample()
    assert out["events"] == [{"type": "event", "event": "spot_change", "state": "free"}]
    assert spot.kind.save()["b"] == [v * 16 for v in BASE]
    assert out["wake_s"] == 10


def test_threshold_edge_and_debounce_count(occ):
    spot = calibrated(occ, threshold_ut=8, debounce=2)
    # 7999 nT off the baseline: under the threshold
    assert spot.events(spot.sample(dx=7999)) == []
    assert spot.events(spot.sample(dx=7999)) == []
    # exactly 8 uT: the first sample makes a candidate, the second confirms it
    out = spot.sample(dx=8000)
    assert out["events"] == []
    assert out["wake_s"] == 2  # confirm soon
    assert spot.events(spot.sample(dx=8000)) == ["occupied"]


def test_distance_is_euclidean(occ):
    spot = calibrated(occ, threshold_ut=10, debounce=1)
    # (6000, 8000, 0): each axis under 10 uT, together exactly 10 uT
    assert spot.events(spot.sample(dx=6000, dy=-8000)) == ["occupied"]


def test_hysteresis_band_holds_the_state(occ):
    spot = calibrated(occ, threshold_ut=10, hysteresis_pct=60, debounce=1)
    assert spot.events(spot.sample(dz=12000)) == ["occupied"]
    # 6 uT is the free threshold (60 % of 10): at 6000 nT still occupied
    assert spot.events(spot.sample(dz=6000)) == []
    assert spot.events(spot.sample(dz=9999)) == []
    assert spot.events(spot.sample(dz=5999)) == ["free"]
    # and from free, the band does not make it occupied either
    assert spot.events(spot.sample(dz=9999)) == []


def test_debounce_resets_on_disagreement(occ):
    spot = calibrated(occ, debounce=3)
    spot.sample(dx=20000)
    spot.sample(dx=20000)
    spot.sample()  # a free sample in between: start again
    spot.sample(dx=20000)
    assert spot.events(spot.sample(dx=20000)) == []
    assert spot.events(spot.sample(dx=20000)) == ["occupied"]


def test_debounce_seconds(occ):
    spot = calibrated(occ, debounce=1, debounce_s=5)
    out = spot.sample(dx=20000, every=10)
    assert out["events"] == []
    assert spot.events(spot.sample(dx=20000, every=4)) == []  # candidate only 4 s old
    assert spot.events(spot.sample(dx=20000, every=1)) == ["occupied"]  # 5 s


def test_drift_is_tracked_while_free_only(occ):
    spot = calibrated(occ, threshold_ut=8, drift_shift=6)
    # the field creeps by 20 nT per sample: 200 samples = 4 uT... then 12 uT in all
    for i in range(1, 601):
        out = spot.sample(dx=20 * i)
        assert out["events"] == [], i
    assert abs(spot.kind.save()["b"][0] // 16 - (BASE[0] + 12000)) < 1500
    # a car parks: the baseline must not follow it
    for _ in range(2):
        out = spot.sample(dx=12000 + 15000)
    assert spot.events(out) == ["occupied"]
    before = list(spot.kind.save()["b"])
    for _ in range(50):
        spot.sample(dx=12000 + 15000)
    assert spot.kind.save()["b"] == before


def test_without_drift_tracking_the_same_creep_would_trip(occ):
    spot = calibrated(occ, threshold_ut=8, drift_shift=15)  # follows 1/32768 per sample
    states = []
    for i in range(1, 601):
        states += spot.events(spot.sample(dx=20 * i))
    assert states == ["occupied"]


def test_heartbeat_counts_changes_and_time_since(occ):
    spot = calibrated(occ, report_s=600, debounce=1)  # first reading was at t=10
    spot.sample(dx=30000)  # t=50: occupied
    spot.sample()  # t=60: free
    spot.t = 549
    out = spot.sample(every=0)
    assert out["reading"] is None  # 539 s since the last reading: 600 - 10 % is 540
    out = spot.sample(every=1)  # t=550
    assert out["reading"] == {
        "type": "occupancy",
        "state": "free",
        "changes": 3,  # free (calibrated), occupied, free
        "since_change_s": 490,
        "magnetometer": "ok",
    }
    out = spot.sample(every=540)
    assert out["reading"]["changes"] == 0


def test_sensor_failures_make_the_state_unknown_after_three(occ):
    spot = calibrated(occ)
    k = spot.kind
    assert k.step({"mag_nt": None, "health": 2}, 100)["events"] == []
    assert k.step({"mag_nt": None, "health": 2}, 110)["events"] == []
    out = check(k.step({"mag_nt": None, "health": 2}, 120))
    assert spot.events(out) == ["unknown"]
    assert k.reading(120)["magnetometer"] == "failed"
    spot.t = 120
    spot.sample(health=0)
    assert k.save()["fails"] == 0


def test_recalibrate_command_takes_a_new_baseline(occ):
    spot = calibrated(occ, debounce=1)
    spot.sample(dx=50000)
    out = spot.kind.command({"command": "recalibrate"}, spot.t)
    assert spot.events(out) == ["unknown"]
    assert out["wake_s"] == 2
    for _ in range(3):
        assert spot.sample(dx=50000)["events"] == []
    assert spot.events(spot.sample(dx=50000)) == ["free"]  # the new field is the empty spot
    assert spot.kind.save()["b"][0] == (BASE[0] + 50000) * 16
    with pytest.raises(ValueError):
        spot.kind.command("bin_emptied", spot.t)


def test_state_survives_deep_sleep(mpy, occ):
    spot = calibrated(occ, debounce=2)
    spot.sample(dx=30000)  # a pending candidate
    spot.kind = occ.Occupancy({"debounce": 2}, spot.kind.save())
    assert spot.events(spot.sample(dx=30000)) == ["occupied"]
    assert len(mpy.module("protocol.cbor").dumps(spot.kind.save())) <= 120


def test_configuration(occ):
    k = occ.Occupancy()
    with pytest.raises(ValueError, match="threshold_ut"):
        k.configure({"threshold_ut": 0})
    cfg = k.configure({"type": "occupancy_config", "threshold_ut": 20, "debounce_s": 30})
    assert (cfg["threshold_ut"], cfg["debounce_s"]) == (20, 30)


def test_sample_converts_counts_to_nanotesla(mpy, occ):
    sb = mpy.module("tests.support.scripted_bus")
    drv = mpy.module("firmware.drivers.qmc5883l")
    chip = sb.QMC5883L()
    mag = drv.QMC5883L(sb.I2C({0x0D: chip}), range_gauss=8)
    mag.begin()
    k = occ.Occupancy({"cal_samples": 1, "debounce": 1})
    chip.push(600, -150, 1260)  # 8 G range: 3000 counts per gauss = 100000 nT
    assert k.read({"mag": mag}) == {"mag_nt": (20000, -5000, 42000), "health": 0}
    chip.push(600, -150, 1260)
    k.sample({"mag": mag}, 0)
    chip.push(600 + 300, -150, 1260)  # +10 uT
    assert [e["state"] for e in k.sample({"mag": mag}, 10)["events"]] == ["occupied"]
    chip.push(32767, 0, 0, True)
    assert k.read({"mag": mag}) == {"mag_nt": None, "health": 1}
    chip.present = False
    assert k.read({"mag": mag}) == {"mag_nt": None, "health": 2}

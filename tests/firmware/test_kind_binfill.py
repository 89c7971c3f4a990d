"""Bin fill kind: median, fill %, adaptive reporting, full / fire / tilt alarms, emptying."""

import pytest

from tests.support.kind_steps import checked_step as check


@pytest.fixture
def binfill(mpy):
    return mpy.module("firmware.kinds.binfill")


def at_fill(pct, depth=1000, full=200):
    """The distance that reads as pct % (exactly, for these round numbers)."""
    return depth - (depth - full) * pct // 100


def test_median(binfill):
    m = binfill.median
    assert m([500, 510, 9999, 505, 20]) == 505
    assert m([500, 510, 505, 600]) == 507
    assert m([None, 500, None, 505, 510]) == 505
    assert m([None, None, None, 505, 510]) is None  # fewer than half valid
    assert m([None, None, 510, 500]) == 505  # exactly half is enough
    assert m([]) is None


@pytest.mark.parametrize(
    ("dist", "fill"),
    [(1000, 0), (1100, 0), (1150, 0), (999, 0), (992, 1), (600, 50), (200, 100), (150, 100)],
)
def test_fill_from_depth(binfill, dist, fill):
    k = binfill.BinFill({"depth_mm": 1000, "full_mm": 200})
    out = check(k.step({"ranges_mm": [dist]}, 0))
    assert out["reading"]["fill_pct"] == fill
    assert out["reading"]["distance_mm"] == dist
    assert out["reading"]["lid_open"] is False


def test_lid_open_beyond_the_bottom_freezes_the_level(binfill):
    k = binfill.BinFill({"samples": 1})
    check(k.step({"ranges_mm": [600]}, 0))
    out = check(k.step({"ranges_mm": [1151]}, 60))  # more than 150 mm past the bottom
    assert out["reading"] == {
        "type": "binfill",
        "fill_pct": 50,
        "distance_mm": 600,
        "temperature_c_x10": None,
        "lid_open": True,
        "tilted": False,
    }
    out = check(k.step({"ranges_mm": [600]}, 120))
    assert out["reading"]["lid_open"] is False  # closing is reported at once too


@pytest.mark.parametrize(
    ("fill", "every"), [(0, 14400), (49, 14400), (50, 3600), (74, 3600), (75, 900), (89, 900)]
)
def test_reporting_gets_more_frequent_as_it_fills(binfill, fill, every):
    k = binfill.BinFill({"sample_s": 600})
    first = check(k.step({"ranges_mm": [at_fill(fill)]}, 0))
    assert first["reading"]["fill_pct"] == fill
    assert first["wake_s"] == min(600, every)
    early = every - every // 10 - 1  # a tenth early is allowed, not more
    assert check(k.step({"ranges_mm": [at_fill(fill)]}, early))["reading"] is None
    assert check(k.step({"ranges_mm": [at_fill(fill)]}, early + 1))["reading"] is not None


def test_full_alarm_at_the_threshold_at_once(binfill):
    k = binfill.BinFill({"full_pct": 90})
    check(k.step({"ranges_mm": [at_fill(60)]}, 0))
    assert check(k.step({"ranges_mm": [at_fill(89)]}, 900))["alarms"] == []
    out = check(k.step({"ranges_mm": [at_fill(90)]}, 1800))
    assert out["alarms"] == [{"type": "alarm", "alarm": "bin_full", "active": True, "value": 90}]
    assert check(k.step({"ranges_mm": [at_fill(95)]}, 2700))["alarms"] == []


def test_emptied_detection_and_full_alarm_clearing(binfill):
    k = binfill.BinFill()
    check(k.step({"ranges_mm": [at_fill(92)]}, 0))
    out = check(k.step({"ranges_mm": [at_fill(5)]}, 900))
    assert out["events"] == [{"type": "event", "event": "bin_emptied"}]
    assert out["alarms"] == [{"type": "alarm", "alarm": "bin_full", "active": False, "value": 5}]
    # refilled to 55 %, then down to 25 %: a drop of 30 but not under 20 %: not emptied
    check(k.step({"ranges_mm": [at_fill(55)]}, 1800))
    assert check(k.step({"ranges_mm": [at_fill(25)]}, 2700))["events"] == []
    # 50 -> 20: a drop of exactly 30 to exactly 20 % is emptied
    check(k.step({"ranges_mm": [at_fill(50)]}, 3600))
    k2 = binfill.BinFill()
    check(k2.step({"ranges_mm": [at_fill(50)]}, 0))
    assert check(k2.step({"ranges_mm": [at_fill(20)]}, 900))["events"][0]["event"] == "bin_emptied"
    k3 = binfill.BinFill()
    check(k3.step({"ranges_mm": [at_fill(50)]}, 0))
    assert check(k3.step({"ranges_mm": [at_fill(21)]}, 900))["events"] == []


def test_bin_emptied_command_rearms_the_full_alarm(binfill):
    k = binfill.BinFill()
    assert check(k.step({"ranges_mm": [at_fill(95)]}, 0))["alarms"][0]["alarm"] == "bin_full"
    k.command("ack_alarm", 10)
    assert check(k.step({"ranges_mm": [at_fill(95)]}, 30000))["alarms"] == []  # no reminder
    out = k.command({"command": "bin_emptied"}, 30010)
    assert out["wake_s"] == 1
    # still full (the sensor sees rubbish): it says so again
    again = check(k.step({"ranges_mm": [at_fill(95)]}, 30011))["alarms"]
    assert again == [{"type": "alarm", "alarm": "bin_full", "active": True, "value": 95}]


def test_fire_on_absolute_temperature_and_on_a_spike(binfill):
    k = binfill.BinFill({"fire_c_x10": 700, "fire_rise_c_x10": 150})
    r = [at_fill(30)]
    check(k.step({"ranges_mm": r, "temp_c_x10": 250}, 0))
    assert check(k.step({"ranges_mm": r, "temp_c_x10": 399}, 900))["alarms"] == []  # +14.9
    out = check(k.step({"ranges_mm": r, "temp_c_x10": 549}, 1800))  # +15.0 since last wake
    assert out["alarms"] == [{"type": "alarm", "alarm": "bin_fire", "active": True, "value": 549}]
    # cooling: still above the start (39.9) + 7.5: the fire holds
    assert check(k.step({"ranges_mm": r, "temp_c_x10": 475}, 2700))["alarms"] == []
    out = check(k.step({"ranges_mm": r, "temp_c_x10": 473}, 3600))
    assert out["alarms"][0]["active"] is False
    # a hot summer bin that never spiked: the absolute limit
    k2 = binfill.BinFill()
    check(k2.step({"ranges_mm": r, "temp_c_x10": 650}, 0))
    check(k2.step({"ranges_mm": r, "temp_c_x10": 699}, 900))
    out = check(k2.step({"ranges_mm": r, "temp_c_x10": 700}, 1800))
    assert out["alarms"][0]["alarm"] == "bin_fire"


def test_tilt_alarm_and_reading(binfill):
    k = binfill.BinFill()
    check(k.step({"ranges_mm": [at_fill(40)]}, 0))
    out = check(k.step({"ranges_mm": [300], "tilt": True}, 60))
    assert out["alarms"] == [{"type": "alarm", "alarm": "bin_tilt", "active": True}]
    assert out["reading"]["tilted"] is True
    assert out["reading"]["fill_pct"] == 40  # a knocked-over bin's range is not its level


def test_no_reading_until_a_first_valid_distance(binfill):
    k = binfill.BinFill()
    out = check(k.step({"ranges_mm": [None, None, None]}, 0))
    assert out["reading"] is None
    assert out["wake_s"] == 900


def test_state_and_config(mpy, binfill):
    k = binfill.BinFill({"depth_mm": 1200, "full_mm": 250})
    check(k.step({"ranges_mm": [at_fill(92, 1200, 250)], "temp_c_x10": 210}, 0))
    saved = k.save()
    assert len(mpy.module("protocol.cbor").dumps(saved)) <= 120
    k2 = binfill.BinFill({"depth_mm": 1200, "full_mm": 250}, saved)
    assert check(k2.step({"ranges_mm": [at_fill(93, 1200, 250)]}, 900))["alarms"] == []
    with pytest.raises(ValueError, match="full_mm"):
        k.configure({"depth_mm": 200})  # the full level would sit below the bottom
    cfg = k.configure({"type": "binfill_config", "full_pct": 80, "fire_c_x10": 600})
    assert (cfg["full_pct"], cfg["fire_c_x10"], cfg["depth_mm"]) == (80, 600, 1200)
    with pytest.raises(ValueError):
        k.command("wake", 0)


def test_sample_takes_n_readings_from_the_real_ranger(mpy, binfill):
    sb = mpy.module("tests.support.scripted_bus")
    drv = mpy.module("firmware.drivers.a02yyuw")
    clock = sb.Clock()
    uart = sb.UART(clock)
    # the ranger's periodic frames: one is out of its range, one an echo off the bin wall
    for i, mm in enumerate([600, 610, 20, 605, 250]):
        uart.feed(sb.a02yyuw_frame(mm), 100 * (i + 1))
    ranger = drv.A02YYUW(uart, ticks_ms=clock.ticks_ms, sleep_ms=clock.sleep_ms)
    k = binfill.BinFill({"samples": 5})
    inputs = k.read({"ranger": ranger, "tilt": sb.Pin(0)})
    assert inputs == {"ranges_mm": [600, 610, None, 605, 250], "temp_c_x10": None, "tilt": False}
    out = check(k.step(inputs, 0))
    assert out["reading"]["distance_mm"] == 602  # median of the four valid readings

"""Lamp dimming output: level -> duty curves and fade timing on a scripted PWM."""

import pytest

WRAP = 1 << 62  # the unix port's ticks period (an ESP32 wraps at 2**30): fades cross it


@pytest.fixture
def lamp(mpy):
    sb = mpy.module("tests.support.scripted_bus")
    drv = mpy.module("firmware.drivers.lamp")

    def make(**kwargs):
        pwm = sb.PWM()
        return drv.Lamp(pwm, **kwargs), pwm

    return make


def cie_duty(pm, span=65535, lo=0):
    """CIE 1931 lightness -> luminance, in integers (L* = pm / 10)."""
    if pm <= 0:
        return 0
    if pm >= 1000:
        return lo + span
    if pm <= 80:
        return lo + span * pm // 9033
    return lo + span * (pm + 160) ** 3 // 1160**3


def test_starts_off_and_writes_duty_once_per_change(lamp):
    dev, pwm = lamp()
    assert pwm.duties == [0]
    dev.set(100)
    dev.set(100)
    assert pwm.duties == [0, 65535]
    assert dev.level == 100


@pytest.mark.parametrize(("pct", "duty"), [(0, 0), (5, 362), (8, 580), (50, 12070), (100, 65535)])
def test_gamma_curve_is_cie_lightness(lamp, pct, duty):
    dev, pwm = lamp()
    dev.set(pct)
    assert pwm.duties[-1] == duty == cie_duty(pct * 10)


def test_linear_curve_and_duty_floor(lamp):
    dev, pwm = lamp(curve="linear", min_duty=6553)
    dev.set(50)
    assert pwm.duties[-1] == 6553 + (65535 - 6553) * 500 // 1000
    dev.set(0)
    assert pwm.duties[-1] == 0  # 0 % is off, not the driver's minimum
    with pytest.raises(ValueError):
        lamp(curve="log")


def test_fade_is_linear_in_perceived_level(lamp):
    dev, pwm = lamp()
    dev.set(20)
    dev.fade(100, 1000, 5000)
    assert dev.fading
    assert dev.target() == 100
    assert dev.update(5000) == 20
    assert dev.update(5250) == 40
    assert dev.update(5500) == 60
    assert pwm.duties[-1] == cie_duty(600)
    assert dev.update(5999) == 100  # 999 ms: 20 + 80 * 999 / 1000 = 99.9 %, rounds to 100
    assert dev.fading
    assert dev.update(6000) == 100
    assert not dev.fading
    assert pwm.duties[-1] == 65535


def test_fade_down_and_retarget_midway(lamp):
    dev, _ = lamp()
    dev.set(100)
    dev.fade(0, 2000, 0)
    assert dev.update(1000) == 50
    dev.fade(100, 500, 1000)  # a new detection halfway down: back up from where it is
    assert dev.update(1250) == 75
    assert dev.update(1500) == 100


def test_zero_duration_fade_is_a_step(lamp):
    dev, pwm = lamp()
    dev.fade(70, 0, 0)
    assert not dev.fading
    assert dev.level == 70
    assert pwm.duties[-1] == cie_duty(700)


def test_fade_across_the_ticks_wrap(lamp):
    dev, _ = lamp()
    start = WRAP - 100
    dev.fade(100, 400, start)
    assert dev.update((start + 200) % WRAP) == 50  # 100 ms before the wrap + 100 ms after it
    assert dev.update((start + 400) % WRAP) == 100


def test_power_follows_duty(lamp):
    dev, _ = lamp()
    dev.set(50)
    assert dev.power_pm() == 12070 * 1000 // 65535  # 184 per mille, not 500

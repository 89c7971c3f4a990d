"""Lighting kind: presence fast path, fade and hold timing, night schedule, energy."""

import subprocess
import textwrap

import pytest

from tests.support.interp import ROOT, micropython_binary
from tests.support.kind_steps import checked_step as check

H = 3600
NIGHT = 22 * H  # tod_s at 22:00
DAYTIME = 12 * H


@pytest.fixture
def rig(mpy):
    sb = mpy.module("tests.support.scripted_bus")
    lighting = mpy.module("firmware.kinds.lighting")
    lamp_mod = mpy.module("firmware.drivers.lamp")

    def make(**cfg):
        clock = sb.Clock(1000)
        pwm = sb.PWM()
        lamp = lamp_mod.Lamp(pwm)
        kind = lighting.Lighting(cfg, lamp=lamp, ticks_ms=clock.ticks_ms)
        check(kind.step({}, 0, NIGHT))  # settle at night: fade to min_level_pct
        clock.advance_ms(60000)
        kind.tick(clock.ticks_ms())
        return kind, lamp, pwm, clock

    return make


def test_rests_at_min_level_at_night(rig):
    _kind, lamp, pwm, _ = rig(min_level_pct=20)
    assert lamp.level == 20
    assert pwm.duty_u16() == lamp.duty_for(200)


def test_presence_changes_the_light_at_the_next_tick(rig):
    kind, lamp, pwm, clock = rig(fade_ms=1000)
    t0 = clock.ticks_ms()
    duty0 = pwm.duty_u16()
    assert kind.presence(t0) is True  # an event for the gateway
    assert lamp.target() == 100
    assert kind.tick(t0 + 20) == 20  # fading: tick again in 20 ms
    assert lamp.level > 20
    assert pwm.duty_u16() > duty0  # the light moved 20 ms after the detection
    assert kind.tick(t0 + 500) == 20
    assert lamp.level == 60
    kind.tick(t0 + 1000)
    assert lamp.level == 100
    assert not lamp.fading


def test_hold_then_fade_down_and_retrigger_extends(rig):
    kind, lamp, _, clock = rig(hold_s=60, fade_ms=1000)
    t0 = clock.ticks_ms()
    kind.presence(t0)
    kind.tick(t0 + 1000)
    assert kind.tick(t0 + 59000) == 1000
    assert kind.tick(t0 + 59500) == 500  # wakes exactly when the hold ends
    kind.tick(t0 + 59999)
    assert lamp.level == 100 and not lamp.fading
    kind.tick(t0 + 60000)  # hold over: fade down begins
    assert lamp.fading and lamp.target() == 20
    kind.tick(t0 + 60500)
    assert lamp.level == 60
    kind.tick(t0 + 61000)
    assert lamp.level == 20
    # a detection 30 s into a hold extends it to 60 s after that detection
    t1 = t0 + 100000
    kind.presence(t1)
    kind.presence(t1 + 30000)
    kind.tick(t1 + 60000)
    assert lamp.level == 100 and not lamp.fading
    kind.tick(t1 + 90000)
    assert lamp.fading


def test_presence_events_are_rate_limited_and_counted(rig):
    kind, _, _, clock = rig(event_gap_s=10)
    t0 = clock.ticks_ms()
    assert kind.presence(t0) is True
    assert kind.presence(t0 + 5000) is False
    assert kind.presence(t0 + 9999) is False
    assert kind.presence(t0 + 10000) is True
    clock.us = (t0 + 10000) * 1000
    out = check(kind.step({}, 100, NIGHT))
    assert out["events"] == [
        {"type": "event", "event": "presence", "count": 1},
        {"type": "event", "event": "presence", "count": 3},
    ]
    assert check(kind.step({}, 160, NIGHT))["events"] == []


@pytest.mark.parametrize(
    ("tod", "night"),
    [
        (18 * H - 1, False),
        (18 * H, True),
        (0, True),
        (7 * H - 1, True),
        (7 * H, False),
        (None, True),  # before the first time sync: light the path
    ],
)
def test_night_schedule_edges(rig, tod, night):
    kind, _, _, _ = rig(night_start_min=18 * 60, night_end_min=7 * 60)
    assert kind.is_night(tod) is night


def test_schedule_window_within_one_day(rig):
    kind, _, _, _ = rig(night_start_min=60, night_end_min=300)
    assert [kind.is_night(t) for t in (3599, 3600, 17999, 18000)] == [False, True, True, False]


def test_daytime_turns_off_and_ignores_presence_for_light(rig):
    kind, lamp, _, clock = rig(day_level_pct=0, fade_ms=1000)
    check(kind.step({}, 60, DAYTIME))
    clock.advance_ms(1000)
    kind.tick(clock.ticks_ms())
    assert lamp.level == 0
    assert kind.presence(clock.ticks_ms()) is True  # still counted and reported
    kind.tick(clock.ticks_ms() + 20)
    assert lamp.level == 0
    out = check(kind.step({}, 900, DAYTIME))
    assert out["reading"]["detections"] == 1
    # evening: back to the night level
    check(kind.step({}, 960, 18 * H))
    clock.advance_ms(1000)
    kind.tick(clock.ticks_ms())
    assert lamp.level == 20


def test_wake_from_the_gateway_lights_without_an_event(rig):
    kind, lamp, _, clock = rig(fade_ms=0, hold_s=60)
    out = kind.command({"command": "wake", "duration_s": 5}, 0)
    assert out["events"] == []
    assert lamp.level == 100  # zero fade: a step
    t = clock.ticks_ms()
    kind.tick(t + 4999)
    assert lamp.level == 100
    kind.tick(t + 5000)
    assert lamp.level == 20
    assert kind.save()["det"] == 0
    assert check(kind.step({}, 10, NIGHT))["events"] == []


def test_energy_follows_duty_and_carries_the_remainder(rig):
    kind, lamp, _, clock = rig(rated_w=40, hold_s=3600, fade_ms=0, report_s=3600)
    check(kind.step({}, 1, NIGHT))  # the first reading flushes the settling period
    t0 = clock.ticks_ms()
    kind.presence(t0)  # 100 % for one hour
    clock.us = (t0 + 3600 * 1000) * 1000
    out = check(kind.step({}, 3601, NIGHT))
    assert out["reading"]["energy_wh"] == 40
    assert out["reading"]["level_pct"] == 20  # the hold ended this very tick
    # 20 % perceived = 2.9 % duty (CIE): 1.16 W; 3 h give 3.5 Wh, reported 1 + 1 + 1
    duty_pm = lamp.power_pm()
    assert duty_pm == 29
    total = 0
    for hour in range(2, 5):
        clock.us = (t0 + hour * 3600 * 1000) * 1000
        total += check(kind.step({}, 3600 * hour + 1, NIGHT))["reading"]["energy_wh"]
    assert total == 3
    # nothing is lost to rounding: reported Wh + the carried remainder = the exact integral
    # (60 s of settling at 20 % before the hour at 100 %, then 3 h at 20 %)
    exact = 40 * (1000 * 3600000 + duty_pm * (60000 + 3 * 3600000))
    acc_per_wh = 1000 * 3600 * 1000
    assert (40 + total) * acc_per_wh + kind.save()["acc"] == exact


def test_presence_from_polled_inputs_and_lamp_fault_alarm(rig):
    kind, lamp, _, _clock = rig()
    out = check(kind.step({"presence": True, "lamp_fault": True}, 30, NIGHT))
    assert out["events"][0]["event"] == "presence"
    assert out["alarms"] == [{"type": "alarm", "alarm": "lamp_fault", "active": True}]
    assert lamp.target() == 100
    kind.command("ack_alarm", 31)
    assert check(kind.step({"lamp_fault": True}, 30 + 7 * H, NIGHT))["alarms"] == []
    out = check(kind.step({"lamp_fault": False}, 30 + 8 * H, NIGHT))
    assert out["alarms"] == [{"type": "alarm", "alarm": "lamp_fault", "active": False}]


def test_profile_downlink(rig):
    kind, lamp, _, _clock = rig(fade_ms=0)
    cfg = kind.configure({"type": "lighting_profile", "min_level_pct": 35, "fade_ms": 0})
    assert cfg["min_level_pct"] == 35
    assert lamp.level == 35  # the new resting level applies at once
    with pytest.raises(ValueError, match="min_level_pct"):
        kind.configure({"min_level_pct": 90, "max_level_pct": 80})
    assert kind.cfg["max_level_pct"] == 100


def test_asyncio_fast_path_under_100_ms():
    """The real task on the real clock: PIR edge -> PWM duty change, measured in MicroPython."""
    code = textwrap.dedent(
        """
        import asyncio, time
        from firmware.drivers.lamp import Lamp
        from firmware.kinds.lighting import Lighting
        from tests.support.scripted_bus import PWM, Pin
        from firmware.drivers.pir import PIR

        pwm = PWM()
        kind = Lighting({"fade_ms": 100, "hold_s": 1}, lamp=Lamp(pwm))
        pir = PIR(Pin(0))
        pir.attach(kind.presence)
        worst = 0

        async def busy_network():
            # a link stuck waiting for a gateway must not delay the lamp
            while True:
                await asyncio.sleep_ms(2000)

        async def main():
            global worst
            asyncio.create_task(kind.run())
            asyncio.create_task(busy_network())
            await asyncio.sleep_ms(1200)  # idle: the task sleeps up to 1 s between ticks
            for _ in range(3):
                before = len(pwm.duties)
                t0 = time.ticks_ms()
                pir.pin.edge(1)
                while len(pwm.duties) == before:
                    await asyncio.sleep_ms(0)
                worst = max(worst, time.ticks_diff(time.ticks_ms(), t0))
                await asyncio.sleep_ms(150)  # the 100 ms fade is over
                level = kind.lamp.level
                pir.pin.level = 0
                await asyncio.sleep_ms(1300)  # hold and fade back to rest, then idle again
            print("worst_ms", worst, "level", level, "rest", kind.lamp.level)

        asyncio.run(asyncio.wait_for(main(), 10))
        """
    )
    binary = micropython_binary()
    assert binary is not None
    done = subprocess.run(
        [binary, "-c", code],
        cwd=ROOT,
        env={"MICROPYPATH": f"{ROOT}:.frozen"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    words = done.stdout.split()
    worst = int(words[words.index("worst_ms") + 1])
    assert worst < 100
    assert int(words[words.index("level") + 1]) == 100
    assert int(words[words.index("rest") + 1]) == 20

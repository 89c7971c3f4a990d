"""GPIO/ADC/UART input drivers: PIR, LD2410 radar, meter pulses, leak probe, battery."""

import json
import struct

import pytest

from firmware.boards.sim import scenario as sim_scenario
from tests.firmware.node_support import run_mpy
from tests.support.scripted_kinds import ulp_meter


@pytest.fixture
def sb(mpy):
    return mpy.module("tests.support.scripted_bus")


# -- PIR ----------------------------------------------------------------------------------


@pytest.fixture
def pir(mpy, sb):
    drv = mpy.module("firmware.drivers.pir")
    clock = sb.Clock()
    pin = sb.Pin(0)
    dev = drv.PIR(pin, debounce_ms=50, ticks_ms=clock.ticks_ms)
    return dev, pin, clock


def test_pir_irq_debounce(sb, pir):
    dev, pin, clock = pir
    seen = sb.Recorder()
    dev.attach(seen)
    assert pin.trigger == 1  # IRQ_RISING
    clock.advance_ms(1000)
    pin.edge(1)  # a detection at t=1000
    clock.advance_ms(49)
    pin.edge(1)  # 49 ms later: bounce, ignored
    clock.advance_ms(1)
    pin.edge(1)  # 50 ms after the accepted one: a new detection
    clock.advance_ms(100)
    pin.edge(0)  # a spike gone before the handler ran: not a detection
    assert seen.calls == [(1000,), (1050,)]
    assert dev.detections == 2


def test_pir_polling_sees_rising_levels_only(pir):
    dev, pin, _clock = pir
    pin.level = 1
    assert dev.poll(0) is True
    assert dev.poll(10) is False  # still high: same detection
    assert dev.motion() is True
    pin.level = 0
    assert dev.poll(20) is False
    pin.level = 1
    assert dev.poll(40) is False  # 40 ms after the last: within debounce
    pin.level = 0
    dev.poll(60)
    pin.level = 1
    assert dev.poll(100) is True


# -- LD2410 -------------------------------------------------------------------------------


def ld2410_frame(target, engineering=False):
    """target: (state, moving cm, moving energy, static cm, static energy, detection cm)."""
    body = bytes([0x01 if engineering else 0x02, 0xAA])
    body += struct.pack("<BHBHBH", *target)
    if engineering:
        body += bytes(22)  # per-gate energies, which the driver does not need
    body += b"\x55\x00"
    return b"\xf4\xf3\xf2\xf1" + struct.pack("<H", len(body)) + body + b"\xf8\xf7\xf6\xf5"


def test_ld2410_frame_bytes():
    # the basic report from the manual: length 0x000D, moving target at 0x0051 cm
    f = ld2410_frame((1, 0x51, 0x3C, 0, 0, 0x51))
    assert f.hex(" ") == ("f4 f3 f2 f1 0d 00 02 aa 01 51 00 3c 00 00 00 51 00 55 00 f8 f7 f6 f5")


@pytest.fixture
def radar(mpy, sb):
    drv = mpy.module("firmware.drivers.ld2410")
    uart = sb.UART()
    return drv, drv.LD2410(uart), uart


def test_ld2410_parses_target_state(radar):
    _, dev, uart = radar
    assert dev.poll() is None
    assert dev.presence is False
    uart.feed(ld2410_frame((3, 120, 55, 80, 40, 130)))
    assert dev.poll() == {
        "state": 3,
        "moving_cm": 120,
        "moving_energy": 55,
        "static_cm": 80,
        "static_energy": 40,
        "detect_cm": 130,
    }
    assert dev.presence is True
    uart.feed(ld2410_frame((0, 0, 0, 0, 0, 0)))
    assert dev.poll()["state"] == 0
    assert dev.presence is False


def test_ld2410_resyncs_after_noise_and_split_frames(radar):
    _, dev, uart = radar
    f = ld2410_frame((2, 0, 0, 250, 90, 250))
    ack = bytes.fromhex("fdfcfbfa0400ff01000004030201")  # a command ACK on the same line
    uart.feed(b"\x00\xf4\xf3" + ack + f[:9])
    assert dev.poll() is None
    uart.feed(f[9:])
    t = dev.poll()
    assert (t["state"], t["static_cm"], t["static_energy"]) == (2, 250, 90)
    assert dev.frames == 1


def test_ld2410_bad_tail_and_engineering_mode(radar):
    drv, dev, uart = radar
    bad = bytearray(ld2410_frame((1, 10, 10, 0, 0, 10)))
    bad[-1] = 0x00
    good = ld2410_frame((1, 300, 77, 0, 0, 300), engineering=True)
    targets, _ = drv.parse(bytes(bad) + good)
    assert [(t["state"], t["moving_cm"]) for t in targets] == [(1, 300)]
    uart.feed(good)
    assert dev.poll()["moving_energy"] == 77


# -- pulse counter -------------------------------------------------------------------------


def test_pulse_counter_software_debounce(mpy, sb):
    drv = mpy.module("firmware.drivers.pulse")
    clock = sb.Clock()
    pin = sb.Pin(1)
    meter = drv.PulseCounter(pin, debounce_ms=20, ticks_ms=clock.ticks_ms)
    meter.attach()
    assert pin.trigger == 2  # falling edge: reed closes to ground
    for dt in (0, 1, 2, 19, 20, 500, 519, 520):
        clock.us = dt * 1000
        pin.edge(0)
    # accepted at 0, 20, 500, 520; the rest are contact bounce
    assert meter.count() == 4


def test_pulse_counter_hardware_counter_and_wrap(mpy, sb):
    drv = mpy.module("firmware.drivers.pulse")
    pin = sb.Pin(65530, [65530, 65535, 3, 10])  # a 16-bit hardware counter's value()s
    meter = drv.PulseCounter(counter=pin, counter_bits=16)
    assert [meter.count() for _ in range(4)] == [0, 5, 9, 16]
    plain = drv.PulseCounter(counter=sb.Pin(42))
    assert plain.count() == 42
    with pytest.raises(ValueError):
        drv.PulseCounter()


def test_pulse_counter_quiet_time_is_none_without_a_counter_that_keeps_it(mpy, sb):
    drv = mpy.module("firmware.drivers.pulse")
    soft = drv.PulseCounter(sb.Pin(1))  # the IRQ path: blind while the CPU sleeps
    pcnt = drv.PulseCounter(counter=sb.Pin(42))  # a counter with value() alone (PCNT)
    assert [soft.quiet_s(), soft.dry(), pcnt.quiet_s(), pcnt.dry()] == [None] * 4


EPOCH = 1_700_000_000
# exact binary fractions, so the pulses fall on whole seconds: 1 every 4 s from the start,
# none from +400 s, a jump of 50 at +4000 s (3600 s after the last pulse: a dry hour, just),
# 1 every 4096 s from +4500 s (dry hours between each), a burst at 2/s, quiet again
PULSES = {
    "start": EPOCH,
    "signals": {"pulse_rate:34": 0.25},
    "timeline": [
        [400, {"pulse_rate:34": 0}],
        [4000, {"pulses:34": 150}],
        [4500, {"pulse_rate:34": 1 / 4096}],
        [20000, {"pulse_rate:34": 2}],
        [20100, {"pulse_rate:34": 0}],
    ],
}


def test_sim_scenario_quiet_time_is_the_ulps_from_its_pulses(mpy):
    # the reference: the pulse times found second by second in the count the scenario gives,
    # run through an independent model of the ULP's bookkeeping
    ref = sim_scenario.Scenario(PULSES)
    pulses = []
    last = 0
    for t in range(EPOCH, EPOCH + 30001):
        now = ref.at(t).get("pulses:34", 0)
        pulses += [t] * (now - last)
        last = now
    assert len(pulses) == 100 + 50 + 3 + 200
    sc = mpy.module("firmware.boards.sim.scenario").Scenario(PULSES)
    since = EPOCH + 200  # the counter started (power-on) half way through the first stretch
    times = sorted({since, EPOCH + 30000} | {p + d for p in pulses for d in (-1, 0, 1)})
    times += range(since, EPOCH + 30000, 1111)
    for t in times:
        if t < since:
            continue
        _count, quiet, dry = ulp_meter(pulses, since, t)
        assert sc.quiet("34", since, t) == (quiet, dry), t - EPOCH
    # dry hours: the run before the jump, the 3 gaps around the slow pulses (not the 3212 s
    # one before the burst), the run going on
    assert sc.quiet("34", since, EPOCH + 30000) == (9900, 5)


def test_sim_board_counter_gives_the_quiet_time_through_the_driver(tmp_path):
    (tmp_path / ".sim").mkdir()
    (tmp_path / ".sim/board.json").write_text(json.dumps({"epoch_s": EPOCH}))
    (tmp_path / ".sim/scenario.json").write_text(json.dumps(PULSES))
    code = f"""
import json
from firmware import boards
from firmware.drivers.pulse import PulseCounter
b = boards.load()
m = PulseCounter(counter=b.pulse_counter(34), ticks_ms=b.ticks_ms)
r = []
for dt in (0, 399, 3999, 4000, 7600, 30000):
    b.set_time({EPOCH} + dt)
    r.append([m.count(), m.quiet_s(), m.dry()])
print(json.dumps(r))
"""
    out = json.loads(run_mpy(code, tmp_path).stdout.splitlines()[-1])
    # the counter starts at power-on, the scenario's start here
    assert out == [
        [0, 0, 0],
        [99, 3, 0],
        [100, 3599, 0],
        [150, 0, 1],
        [150, 3600, 2],
        [353, 9900, 5],
    ]


# -- leak probe ----------------------------------------------------------------------------


def test_leak_probe_digital_and_power_gating(mpy, sb):
    drv = mpy.module("firmware.drivers.leakprobe")
    clock = sb.Clock()
    pin = sb.Pin(1, [1, 0, 0])
    power = sb.Pin(0)
    probe = drv.LeakProbe(pin, power=power, sleep_ms=clock.sleep_ms)
    assert [probe.wet(), probe.wet(), probe.wet()] == [False, True, True]
    assert power.writes == [1, 0, 1, 0, 1, 0]  # excited only while read


def test_leak_probe_adc_threshold_with_hysteresis(mpy, sb):
    drv = mpy.module("firmware.drivers.leakprobe")
    adc = sb.ADC([30000, 20000, 19999, 21999, 22000, 19999])
    probe = drv.LeakProbe(adc=adc, wet_below=20000, hysteresis=2000)
    # dry; at the threshold still dry; below it wet; stays wet until 22000
    assert [probe.wet() for _ in range(6)] == [False, False, True, True, False, True]


# -- battery -------------------------------------------------------------------------------


def test_battery_divider_from_raw_counts(mpy, sb):
    drv = mpy.module("firmware.drivers.battery")
    adc = sb.ADC([32768, 32766])  # mid-scale, averaged over 2 samples
    bat = drv.Battery(adc, r_top=100000, r_bottom=100000, full_scale_mv=3300, samples=2)
    # pin: 32767 / 65535 * 3300 mV = 1649.97 mV; x2 divider = 3300 mV
    assert bat.read_mv() == 3300
    assert adc.reads == 2


def test_battery_uses_calibrated_microvolts_and_node_calibration(mpy, sb):
    drv = mpy.module("firmware.drivers.battery")
    adc = sb.CalibratedADC(1500000)  # 1.5 V at the pin
    bat = drv.Battery(adc, r_top=470000, r_bottom=1000000, samples=4)
    assert bat.read_mv() == 1500 * 1470 // 1000  # 2205 mV
    cal = drv.Battery(adc, r_top=470000, r_bottom=1000000, gain_ppm=1020000, offset_mv=-15)
    assert cal.read_mv() == round(2205 * 1.02) - 15

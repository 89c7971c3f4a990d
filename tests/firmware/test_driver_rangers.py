"""Ultrasonic rangers: A02YYUW / JSN-SR04T serial frames, HC-SR04 echo timing."""

import pytest


@pytest.fixture
def sb(mpy):
    return mpy.module("tests.support.scripted_bus")


def frame(mm):
    hi, lo = mm >> 8, mm & 0xFF
    return bytes([0xFF, hi, lo, (0xFF + hi + lo) & 0xFF])


def test_frame_layout_matches_the_datasheet(sb):
    # 0xFF, 0x07, 0xA1, (0xFF + 0x07 + 0xA1) & 0xFF = 0xA7 -> 1953 mm
    assert sb.a02yyuw_frame(1953) == bytes([0xFF, 0x07, 0xA1, 0xA7]) == frame(1953)


@pytest.fixture
def ranger(mpy, sb):
    drv = mpy.module("firmware.drivers.a02yyuw")
    clock = sb.Clock()
    uart = sb.UART(clock)
    dev = drv.A02YYUW(uart, ticks_ms=clock.ticks_ms, sleep_ms=clock.sleep_ms)
    return drv, dev, uart, clock


def test_reads_a_fresh_frame_and_drops_stale_ones(ranger):
    _, dev, uart, clock = ranger
    uart.feed(frame(500))  # waiting in the buffer: measured before we asked
    uart.feed(frame(1234), 100)  # the next periodic frame, 100 ms later
    assert dev.read_mm() == 1234
    assert 100 <= clock.ticks_ms() <= 110


def test_bad_checksum_is_skipped_and_resynced(ranger):
    _, dev, uart, _ = ranger
    # a corrupted frame whose data byte is 0xFF, then a good one
    uart.feed(bytes([0xFF, 0xFF, 0x10, 0x00]) + frame(0x0FF0), 10)
    assert dev.read_mm() == 0x0FF0


def test_frame_split_across_reads(ranger):
    _, dev, uart, _ = ranger
    f = frame(777)
    uart.feed(f[:2], 10)
    uart.feed(f[2:], 20)
    assert dev.read_mm() == 777


def test_out_of_range_and_silence_are_none(ranger):
    _, dev, uart, clock = ranger
    uart.feed(frame(10), 10)  # inside the 3 cm blind zone
    assert dev.read_mm() is None
    t0 = clock.ticks_ms()
    assert dev.read_mm(timeout_ms=300) is None
    assert 300 <= clock.ticks_ms() - t0 <= 310


def test_parse_keeps_the_last_valid_frame(mpy):
    drv = mpy.module("firmware.drivers.a02yyuw")
    data = frame(100) + frame(200) + b"\xff\x01"
    assert drv.parse(data) == (200, 8)


def test_jsnsr04t_triggers_with_0x55_and_reads_the_answer(mpy, sb):
    drv = mpy.module("firmware.drivers.jsnsr04t")
    clock = sb.Clock()
    uart = sb.UART(clock)
    uart.reply(0x55, frame(1500), 40)  # measures only when asked
    dev = drv.JSNSR04T(uart, ticks_ms=clock.ticks_ms, sleep_ms=clock.sleep_ms)
    assert dev.read_mm() == 1500
    assert uart.written == b"\x55"
    uart.reply(0x55, frame(200), 40)  # 20 cm: inside its 25 cm blind zone
    assert dev.read_mm() is None


@pytest.fixture
def hcsr04(mpy, sb):
    drv = mpy.module("firmware.drivers.hcsr04")
    clock = sb.Clock()

    def make(widths):
        trig = sb.Pin(0)
        echo = sb.Pin(0)
        timer = sb.PulseTimer(widths, clock)
        dev = drv.HCSR04(trig, echo, timer, sleep_us=clock.sleep_us)
        return dev, trig, timer

    return make


def test_hcsr04_trigger_pulse_and_distance(hcsr04):
    dev, trig, timer = hcsr04([5830])
    # 5830 us round trip at 20 degC (343.42 m/s) = 1001 mm
    assert dev.read_mm() == 1001
    assert trig.writes == [0, 0, 1, 0]  # idle low, then the 10 us high pulse
    assert timer.calls == [(1, 30000)]  # the width of the high echo pulse, 30 ms timeout


def test_hcsr04_temperature_compensation(hcsr04):
    dev, _, _ = hcsr04([5830, 5830])
    assert dev.read_mm(temp_c_x10=-100) == 5830 * (331300 - 6060) // 2000000
    assert dev.read_mm(temp_c_x10=350) == 5830 * (331300 + 21210) // 2000000


@pytest.mark.parametrize("width", [-1, -2, 0, 100, 30000])
def test_hcsr04_no_echo_or_out_of_range_is_none(hcsr04, width):
    # negative: time_pulse_us timed out; 100 us = 17 mm (under 2 cm); 30 ms = 5.1 m (over 4 m)
    dev, _, _ = hcsr04([width])
    assert dev.read_mm() is None

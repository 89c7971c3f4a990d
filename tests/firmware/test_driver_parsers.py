"""Property tests for the UART frame parsers: noise never raises, a frame in noise is found."""

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def a02_frame(mm):
    hi, lo = mm >> 8, mm & 0xFF
    return bytes([0xFF, hi, lo, (0xFF + hi + lo) & 0xFF])


def ld_frame(state, dist):
    body = bytes([0x02, 0xAA]) + struct.pack("<BHBHBH", state, dist, 50, dist, 40, dist)
    body += b"\x55\x00"
    return b"\xf4\xf3\xf2\xf1" + struct.pack("<H", len(body)) + body + b"\xf8\xf7\xf6\xf5"


@EXAMPLES
@given(noise=st.binary(max_size=64))
def test_a02yyuw_noise_is_harmless(mpy, noise):
    parse = mpy.module("firmware.drivers.a02yyuw").parse
    mm, used = parse(noise)
    assert 0 <= used <= len(noise)
    if mm is not None:
        # whatever it accepted carried a valid checksum
        assert any(
            noise[i] == 0xFF
            and (0xFF + noise[i + 1] + noise[i + 2]) & 0xFF == noise[i + 3]
            and noise[i + 1] << 8 | noise[i + 2] == mm
            for i in range(len(noise) - 3)
        )


@EXAMPLES
@given(before=st.binary(max_size=20), mm=st.integers(0, 0xFFFF))
def test_a02yyuw_frame_after_noise_is_found(mpy, before, mm):
    parse = mpy.module("firmware.drivers.a02yyuw").parse
    found, used = parse(before + a02_frame(mm))
    assert found == mm
    assert used == len(before) + 4


@EXAMPLES
@given(noise=st.binary(max_size=120))
def test_ld2410_noise_is_harmless(mpy, noise):
    parse = mpy.module("firmware.drivers.ld2410").parse
    targets, used = parse(noise)
    assert 0 <= used <= len(noise)
    assert all(0 <= t["state"] <= 255 for t in targets)


@EXAMPLES
@given(
    before=st.binary(max_size=40),
    state=st.integers(0, 3),
    dist=st.integers(0, 600),
    cut=st.integers(0, 23),
)
def test_ld2410_frame_after_noise_in_two_reads(mpy, before, state, dist, cut):
    sb = mpy.module("tests.support.scripted_bus")
    radar = mpy.module("firmware.drivers.ld2410").LD2410(uart := sb.UART())
    frame = ld_frame(state, dist)
    data = before + frame
    split = len(before) + cut
    uart.feed(data[:split])
    first = radar.poll()
    uart.feed(data[split:])
    second = radar.poll()
    got = second if second is not None else first
    assert got is not None
    assert (got["state"], got["moving_cm"], got["detect_cm"]) == (state, dist, dist)

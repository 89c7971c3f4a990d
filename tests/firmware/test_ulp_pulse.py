"""The leak node's ULP pulse counter (firmware/boards/esp32/ulp_pulse.S), its assembled binary
run on the ULP model (tests/firmware/ulp_model.py) against scripted pin levels, one sample per
ULP timer start: edges counted, bounces shorter than `debounce` samples ignored, the 32-bit
count's carry under its sequence lock, quiet time and zero-flow periods."""

from __future__ import annotations

import pytest

from tests.firmware import ulp_model as m
from tools import ulp

PIN = 34  # the meter's default input: RTC GPIO 4
PROGRAM = ulp.assemble(ulp.SOURCE.read_text())
S = PROGRAM.symbols


def counter(debounce: int = 2, unit: int = 20, dry_units: int = 3600) -> m.ULP:
    """The program loaded and started as firmware/boards/esp32/ulp.py does it."""
    u = m.ULP()
    reg, mux, ie, rtc = m.PADS[PIN]
    u.write32(reg, (1 << mux) | (1 << ie))
    u.load_binary(0, PROGRAM.binary)
    for name, value in (("io", rtc), ("debounce", debounce), ("unit", unit)):
        u.mem[S[name]] = value
    u.mem[S["dry_units"]] = dry_units
    u.run(4 * S["entry"])
    return u


def count(u: m.ULP) -> int:
    return u.word(S["count_hi"]) << 16 | u.word(S["count_lo"])


def test_the_whole_program_decodes_and_never_wakes_the_chip() -> None:
    data = min(addr for name, addr in S.items() if name != "entry")
    text = PROGRAM.words[:data]
    kinds = {m.decode(w)[0] for w in text}
    assert kinds == {"alu", "jump", "jumpr", "st", "ld", "reg_rd", "halt"}
    assert len(text) < 100  # a few dozen instructions per 50 ms: the ULP is awake for ~us


def test_rising_edges_count_and_the_first_sample_only_sets_the_level() -> None:
    u = counter()
    u.sample(PIN, [1, 1, 1])  # the input rests high (pull-up): not a pulse
    assert count(u) == 0
    u.sample(PIN, [0, 0, 0, 1, 1, 1, 0, 0, 1, 1])  # two pulses: closed, then open again
    assert count(u) == 2
    assert u.runs == 13


def test_a_pad_not_routed_to_the_rtc_domain_reads_low() -> None:
    u = counter()
    reg, mux, _ie, _rtc = m.PADS[PIN]
    u.regs[reg] &= ~(1 << mux)
    u.sample(PIN, [0, 1, 1, 0, 0, 1, 1])
    assert count(u) == 0


@pytest.mark.parametrize("debounce", [1, 2, 3])
def test_bounces_shorter_than_debounce_samples_do_not_count(debounce: int) -> None:
    u = counter(debounce=debounce)
    u.sample(PIN, [0, 0])
    short = [1] * (debounce - 1) + [0, 0]
    for _ in range(5):
        u.sample(PIN, short)
    assert count(u) == 0
    # a level held exactly `debounce` samples counts, once
    u.sample(PIN, [1] * debounce + [1, 1])
    assert count(u) == 1
    # a dip shorter than debounce does not end the pulse: no second edge when it comes back
    u.sample(PIN, [0] * (debounce - 1) + [1, 1])
    assert count(u) == 1
    assert u.word(S["level"]) == 1 and u.word(S["run"]) == 0


def test_the_count_carries_into_its_high_half_under_the_sequence_lock() -> None:
    u = counter()
    u.sample(PIN, [0, 0])
    u.mem[S["count_lo"]] = 0xFFFF
    u.mem[S["count_hi"]] = 7
    u.sample(PIN, [1, 1, 0, 0])
    assert count(u) == 8 << 16
    u.sample(PIN, [1, 1])
    assert count(u) == (8 << 16) + 1
    assert u.word(S["seq"]) == 4  # two updates, each leaving it even


def test_quiet_time_grows_per_unit_and_an_edge_restarts_it() -> None:
    u = counter(unit=4)
    u.sample(PIN, [0] * 4 * 10)
    assert u.word(S["quiet"]) == 10
    u.sample(PIN, [1, 1])  # the edge: quiet starts again
    assert u.word(S["quiet"]) == 0 and u.word(S["ticks"]) == 0
    u.sample(PIN, [1] * 7)
    assert u.word(S["quiet"]) == 1


def test_a_quiet_run_reaching_dry_units_is_one_dry_period_and_one_unit_less_is_none() -> None:
    u = counter(unit=2, dry_units=5)
    u.sample(PIN, [0, 0])
    u.sample(PIN, [1, 1])  # an edge: quiet 0
    # the next edge (counted at the second high sample) 9 samples later: 4.5 units, one short
    u.sample(PIN, [1] * 5 + [0, 0, 1, 1])
    assert u.word(S["dry"]) == 0
    assert count(u) == 2
    u.sample(PIN, [1] * 2 * 5)  # exactly 5 units after that edge
    assert u.word(S["dry"]) == 1
    u.sample(PIN, [1] * 2 * 20)  # the same run goes on: still one dry period
    assert u.word(S["dry"]) == 1


def test_quiet_time_saturates_instead_of_wrapping() -> None:
    u = counter(unit=1, dry_units=3)
    u.sample(PIN, [0])
    u.mem[S["quiet"]] = 0xFFFE
    u.sample(PIN, [0, 0, 0])
    assert u.word(S["quiet"]) == 0xFFFF
    assert u.word(S["dry"]) == 0  # a saturated run does not come round to dry_units again

"""protocol/airtime.py: time on air against published calculators, sub-bands, payload limits,
and the duty-cycle ledger at its edges.

Every test body runs under CPython and under MicroPython (the `interp` fixture).
"""

import pytest

M1 = 868100000  # LoRaWAN default channels, all in sub-band M (1 %)
M3 = 868500000
L1 = 867100000  # sub-band L (1 %)
N1 = 868950000  # sub-band N (0.1 %)
P1 = 869525000  # sub-band P (10 %), LoRaWAN RX2


@pytest.fixture
def airtime(interp):
    return interp.module("protocol.airtime")


def close(got, expected):
    # Published values are rounded to the microsecond (0.001 ms).
    return abs(got - expected) <= max(0.0006, expected * 1e-8)


# ---- time on air ----------------------------------------------------------------------------

# Semtech "SX1261 LoRa Calculator" outputs, as recorded in micropython-lib
# micropython/lora/tests/test_time_on_air.py (Angus Gratton, 2023). The SX126x formula equals
# the SX127x one for SF7..SF12. Columns: sf, bw_hz, cr, ldro (the calculator's auto choice),
# preamble, payload_len, explicit_header, crc, expected ms.
SEMTECH_CALCULATOR = [
    (12, 500000, 1, False, 8, 1, True, True, 206.848),
    (12, 500000, 1, False, 12, 64, True, True, 649.216),
    (12, 500000, 1, False, 8, 1, True, False, 165.888),
    (12, 500000, 1, False, 8, 192, True, True, 1476.608),
    (12, 500000, 1, False, 12, 16, False, False, 280.576),
    (8, 125000, 2, False, 8, 1, True, True, 53.760),
    (8, 125000, 2, False, 8, 2, True, True, 53.760),
    (8, 125000, 2, False, 8, 2, True, False, 53.760),
    (8, 125000, 2, False, 8, 3, True, True, 66.048),
    (8, 125000, 2, False, 8, 3, True, False, 53.760),
    (8, 125000, 2, False, 8, 4, True, True, 66.048),
    (8, 125000, 2, False, 8, 4, True, False, 53.760),
    (8, 125000, 2, False, 8, 5, True, True, 66.048),
    (8, 125000, 2, False, 8, 5, True, False, 66.048),
    (8, 125000, 2, False, 8, 253, True, True, 827.904),
    (8, 125000, 2, False, 8, 253, True, False, 827.904),
    (8, 125000, 2, False, 12, 5, False, True, 61.952),
    (8, 125000, 2, False, 12, 5, False, False, 61.952),
    (8, 125000, 2, False, 12, 10, False, True, 86.528),
    (8, 125000, 2, False, 12, 253, False, True, 823.808),
    # the slowest settings: 7.81 kHz and 10.42 kHz as the calculator rounds them
    (12, 7810, 4, True, 128, 253, True, True, 287532.907),
    (12, 7810, 4, True, 1000, 253, True, True, 744858.387),
    (11, 10420, 3, True, 25, 16, True, True, 12824.568),
    (11, 10420, 3, True, 25, 16, False, False, 11448.752),
]


@pytest.mark.parametrize("case", SEMTECH_CALCULATOR)
def test_semtech_calculator_values(airtime, case):
    sf, bw, cr, ldro, preamble, pl, explicit, crc, expected = case
    kwargs = {"bw_hz": bw, "cr": cr, "preamble": preamble, "explicit_header": explicit, "crc": crc}
    # once with LDRO chosen automatically (the 16 ms rule must agree with the calculator),
    # once forced to the calculator's setting
    assert close(airtime.time_on_air_ms(pl, sf, **kwargs), expected)
    assert close(airtime.time_on_air_ms(pl, sf, ldro=ldro, **kwargs), expected)


# Thomas Telkamp's "LoRaWAN airtime" spreadsheet (formulas from AN1200.13), widely linked from
# The Things Network forum: 24-byte application payload + 13 bytes of LoRaWAN header = 37 bytes,
# explicit header, CR 4/5, 8 preamble symbols, 125 kHz, LDRO auto ("SF11..12 on 125 kHz").
# https://docs.google.com/spreadsheets/d/1eL1nHxMidIcIdDE_l-DoY3kmE2e8b0YpOBW64WnYxj8
TELKAMP_37_BYTES = {7: 82.176, 8: 143.872, 9: 267.264, 10: 493.568, 11: 1069.056, 12: 1974.272}


@pytest.mark.parametrize("sf", sorted(TELKAMP_37_BYTES))
def test_telkamp_spreadsheet_values(airtime, sf):
    assert close(airtime.time_on_air_ms(37, sf), TELKAMP_37_BYTES[sf])


def test_more_published_values(airtime):
    # Telkamp's single-SF sheet (same source family): 13 bytes at SF9 -> 164.864 ms
    assert close(airtime.time_on_air_ms(13, 9), 164.864)
    # brocaar/lorawan airtime/airtime_test.go: 13 bytes, SF12, 125 kHz, CR 4/5, explicit header,
    # LDRO off -> 1155.072 ms; its payload symbol counts 26 (CR 4/6), 18 (implicit header),
    # 58 (50 bytes, LDRO on) give (12.25 + n) x 32.768 ms.
    assert close(airtime.time_on_air_ms(13, 12, ldro=False), 1155.072)
    assert close(airtime.time_on_air_ms(13, 12, cr=2, ldro=False), (12.25 + 26) * 32.768)
    assert close(
        airtime.time_on_air_ms(13, 12, explicit_header=False, ldro=False), (12.25 + 18) * 32.768
    )
    assert close(airtime.time_on_air_ms(50, 12, ldro=True), (12.25 + 58) * 32.768)


def test_sf6_needs_implicit_header(airtime):
    # By hand from the SX1276 formula: ceil((80 - 24 + 28 + 16 - 20) / 24) = 4 blocks of 5
    # symbols + 8 = 28, plus 8 + 4.25 preamble symbols, at 0.512 ms a symbol.
    assert close(airtime.time_on_air_ms(10, 6, explicit_header=False), 40.25 * 0.512)
    with pytest.raises(ValueError, match="explicit_header"):
        airtime.time_on_air_ms(10, 6)


def test_ldro_auto_follows_the_16_ms_symbol_rule(airtime):
    def auto_is(pl, sf, bw):
        auto = airtime.time_on_air_ms(pl, sf, bw_hz=bw)
        on = airtime.time_on_air_ms(pl, sf, bw_hz=bw, ldro=True)
        off = airtime.time_on_air_ms(pl, sf, bw_hz=bw, ldro=False)
        assert on != off  # the payload length is chosen so LDRO makes a difference
        return auto == on

    assert auto_is(51, 12, 125000)  # 32.768 ms
    assert auto_is(51, 11, 125000)  # 16.384 ms
    assert not auto_is(51, 10, 125000)  # 8.192 ms
    assert auto_is(51, 12, 250000)  # 16.384 ms: exactly at the limit counts
    assert not auto_is(51, 11, 250000)


def test_longer_settings_never_take_less_time(airtime):
    base = airtime.time_on_air_ms(20, 9)
    assert airtime.time_on_air_ms(21, 9) >= base
    assert airtime.time_on_air_ms(20, 10) > base
    assert airtime.time_on_air_ms(20, 9, cr=4) > base
    assert airtime.time_on_air_ms(20, 9, preamble=9) > base
    assert airtime.time_on_air_ms(20, 9, bw_hz=250000) < base
    assert airtime.time_on_air_ms(0, 7) > 0
    assert airtime.time_on_air_ms(255, 12) > 9000


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((-1, 7), {}, "payload_len"),
        ((256, 7), {}, "payload_len"),
        ((1.5, 7), {}, "payload_len"),
        ((True, 7), {}, "payload_len"),
        ((10, 5), {}, "sf"),
        ((10, 13), {}, "sf"),
        ((10, "7"), {}, "sf"),
        ((10, 7), {"bw_hz": 0}, "bw_hz"),
        ((10, 7), {"bw_hz": 7799}, "bw_hz"),
        ((10, 7), {"bw_hz": 500001}, "bw_hz"),
        ((10, 7), {"bw_hz": "125k"}, "bw_hz"),
        ((10, 7), {"bw_hz": True}, "bw_hz"),
        ((10, 7), {"cr": 0}, "cr"),
        ((10, 7), {"cr": 5}, "cr"),
        ((10, 7), {"preamble": 5}, "preamble"),
        ((10, 7), {"preamble": 65536}, "preamble"),
        ((10, 7), {"explicit_header": 2}, "explicit_header"),
        ((10, 7), {"explicit_header": "yes"}, "explicit_header"),
        ((10, 7), {"crc": None}, "crc"),
        ((10, 7), {"ldro": 2}, "ldro"),
        ((10, 7), {"ldro": "auto"}, "ldro"),
    ],
)
def test_bad_arguments_are_named(airtime, args, kwargs, name):
    with pytest.raises(ValueError, match="^" + name + ":"):
        airtime.time_on_air_ms(*args, **kwargs)


def test_flags_accept_bools_and_0_1(airtime):
    assert airtime.time_on_air_ms(10, 7, crc=0) == airtime.time_on_air_ms(10, 7, crc=False)
    assert airtime.time_on_air_ms(10, 12, ldro=1) == airtime.time_on_air_ms(10, 12, ldro=True)
    assert airtime.time_on_air_ms(10, 7, bw_hz=125000.0) == airtime.time_on_air_ms(10, 7)


# ---- payload limits and sub-bands --------------------------------------------------------------


def test_max_payload_per_spreading_factor(airtime):
    # LoRaWAN Regional Parameters RP002-1.0.x, EU863-870 maximum payload size (N)
    expected = {7: 222, 8: 222, 9: 115, 10: 51, 11: 51, 12: 51}
    assert {sf: airtime.max_payload(sf) for sf in expected} == expected
    assert airtime.max_payload(7, bw_hz=250000) == 222  # DR6
    for args, name in (((8, 250000), "sf"), ((9, 500000), "bw_hz"), ((6,), "sf"), ((13,), "sf")):
        with pytest.raises(ValueError, match="^" + name + ":"):
            airtime.max_payload(*args)


def test_a_full_payload_at_sf12_fits_the_hourly_budget(airtime):
    # 51 bytes + 13 of LoRaWAN framing at SF12 with LDRO: (12.25 + 73) x 32.768 ms, 2.8 s;
    # twelve of them fill a 1 % sub-band's hour
    toa = airtime.time_on_air_ms(64, 12)
    assert close(toa, 2793.472)
    assert int(36000 // toa) == 12


@pytest.mark.parametrize(
    ("channel", "bw", "band"),
    [
        (868100000, 125000, "M"),
        (868300000, 125000, "M"),
        (868500000, 125000, "M"),
        (868062500, 125000, "M"),  # lower edge exactly on 868.0 MHz
        (867937500, 125000, "L"),  # upper edge exactly on 868.0 MHz
        (867100000, 125000, "L"),
        (865062500, 125000, "L"),
        (864937500, 125000, "K"),
        (868950000, 125000, "N"),
        (869525000, 125000, "P"),
        (869850000, 125000, "Q"),
        (868300000, 250000, "M"),  # DR6
        ("P", 125000, "P"),
    ],
)
def test_subband_of_channel(airtime, channel, bw, band):
    assert airtime.subband(channel, bw) == band


@pytest.mark.parametrize(
    "channel",
    [
        865000000,  # straddles K and L
        868000000,  # straddles L and M
        868650000,  # alarm band gap
        869300000,  # gap
        869675000,  # gap
        862900000,  # below the band
        870000000,  # straddles the top
        868550000,  # 868.4875..868.6125 crosses the top of M
        "Z",
        True,
        None,
    ],
)
def test_channel_outside_one_subband_is_refused(airtime, channel):
    with pytest.raises(ValueError, match=r"^channel:"):
        airtime.subband(channel)


def test_budgets(airtime):
    expected = {"K": 3600, "L": 36000, "M": 36000, "N": 3600, "P": 360000, "Q": 36000}
    assert {b: airtime.budget_ms(b) for b in expected} == expected


# ---- the ledger ----------------------------------------------------------------------------


def test_exactly_one_percent_is_allowed_not_a_millisecond_more(airtime):
    ledger = airtime.DutyCycleLedger(max_entries=64)
    for i in range(35):
        assert ledger.can_send(M1, 1000, 10 * i)
        ledger.record(M1, 1000, 10 * i)
    assert ledger.used_ms("M", 350) == 35000
    assert ledger.can_send(M3, 1000, 400)  # 36 000 ms: exactly the budget
    assert not ledger.can_send(M3, 1001, 400)
    ledger.record(M3, 1000, 400)
    assert ledger.used_ms(M1, 401) == 36000
    assert not ledger.can_send(M1, 1, 401)
    assert ledger.wait_s(M1, 1, 401) > 0


def test_window_slides(airtime):
    ledger = airtime.DutyCycleLedger(max_entries=64)
    for i in range(36):
        ledger.record(M1, 1000, 10 * i)  # frame i lasts from 10i to 10i + 1 s
    # The first frame ended at 1 s; a 1 s frame starting at 3600 s ends at 3601 s, exactly one
    # hour later: the first no longer counts, the new one fits.
    assert ledger.wait_s(M1, 1000, 400) == 3200.0
    assert not ledger.can_send(M1, 1000, 3599.999)
    assert ledger.can_send(M1, 1000, 3600)
    assert ledger.wait_s(M1, 1000, 3600) == 0.0
    # a 2 s frame needs the second one gone too (it ended at 11 s)
    assert ledger.wait_s(M1, 2000, 3600) == 9.0
    assert ledger.can_send(M1, 2000, 3609)
    assert not ledger.can_send(M1, 2000, 3608.999)
    # counting from the other side; queries never change the ledger, so asking about an
    # earlier time after a later one gives the same answer
    assert ledger.used_ms(M1, 3600.999) == 36000
    assert ledger.used_ms(M1, 3601) == 35000
    assert ledger.used_ms(M1, 3611) == 34000
    assert ledger.used_ms(M1, 3951) == 0


def test_fractional_airtime_is_rounded_up(airtime):
    ledger = airtime.DutyCycleLedger()
    toa = airtime.time_on_air_ms(13, 7)  # 46.336 ms
    ledger.record(M1, toa, 0)
    assert ledger.used_ms(M1, 0.047) == 47


def test_subbands_are_independent(airtime):
    ledger = airtime.DutyCycleLedger()
    ledger.record(M1, 36000, 0)
    assert not ledger.can_send(M3, 1, 40)  # same sub-band, other channel
    assert ledger.can_send(L1, 36000, 40)
    assert ledger.can_send(P1, 360000, 40)
    assert not ledger.can_send(P1, 360001, 40)
    ledger.record(N1, 3600, 40)
    assert not ledger.can_send(N1, 1, 50)  # 0.1 %: 3.6 s an hour
    assert ledger.used_ms(L1, 50) == 0


def test_a_frame_longer_than_the_budget_can_never_go(airtime):
    ledger = airtime.DutyCycleLedger()
    assert not ledger.can_send(N1, 3601, 0)
    with pytest.raises(ValueError, match=r"^airtime_ms:"):
        ledger.wait_s(N1, 3601, 0)
    sf12 = airtime.time_on_air_ms(64, 12)
    ledger.record(N1, sf12, 0)
    assert not ledger.can_send(N1, sf12, 100)  # two SF12 frames exceed 3.6 s
    assert ledger.wait_s(N1, sf12, 100) == 3500.0  # the first ends at 2.794 s, counts 1 h more


def test_memory_is_bounded_and_stays_on_the_safe_side(airtime):
    exact = airtime.DutyCycleLedger(max_entries=255)
    small = airtime.DutyCycleLedger(max_entries=4)
    for i in range(40):
        exact.record(M1, 500, 60 * i)
        small.record(M1, 500, 60 * i)
    assert len(small.to_bytes()) == 2 + 4 * 12
    assert len(exact.to_bytes()) == 2 + 40 * 12
    for t in (2400, 3000, 3600, 4000, 5000, 6000):
        assert small.used_ms(M1, t) >= exact.used_ms(M1, t)
        assert small.wait_s(M1, 33000, t) >= exact.wait_s(M1, 33000, t)
    # merged airtime still ages out: an hour after the last frame nothing is left
    assert small.used_ms(M1, 60 * 39 + 0.5 + 3600) == 0


def test_state_survives_deep_sleep(airtime):
    ledger = airtime.DutyCycleLedger()
    ledger.record(M1, 1200, 100)
    ledger.record(P1, 900, 105)
    ledger.record(M3, 800, 110)
    data = ledger.to_bytes()
    # sub-band M (index 2) with 2 entries, then P (index 4) with 1: end ms, airtime ms
    assert data == (
        bytes([2, 2])
        + (101200).to_bytes(8, "big")
        + (1200).to_bytes(4, "big")
        + (110800).to_bytes(8, "big")
        + (800).to_bytes(4, "big")
        + bytes([4, 1])
        + (105900).to_bytes(8, "big")
        + (900).to_bytes(4, "big")
    )
    restored = airtime.DutyCycleLedger.from_bytes(data)
    assert restored.to_bytes() == data
    assert restored.used_ms(M1, 200) == 2000
    assert restored.wait_s(M1, 34001, 200) == ledger.wait_s(M1, 34001, 200)
    assert airtime.DutyCycleLedger.from_bytes(b"").to_bytes() == b""


@pytest.mark.parametrize(
    "data",
    [
        b"\x02",  # truncated header
        b"\x02\x01" + bytes(11),  # truncated entry
        b"\x06\x01" + bytes(12),  # no sub-band 6
        b"\x02\x00",  # empty entry list
        b"\x02\x02" + (5).to_bytes(8, "big") + bytes(4) + (4).to_bytes(8, "big") + bytes(4),
    ],
)
def test_damaged_state_is_refused(airtime, data):
    with pytest.raises(ValueError, match=r"^data:"):
        airtime.DutyCycleLedger.from_bytes(data)


def test_clock_stepping_back_blocks_for_an_hour_at_most(airtime):
    ledger = airtime.DutyCycleLedger()
    ledger.record(M1, 36000, 100000)
    assert not ledger.can_send(M1, 1000, 5)  # the clock jumped back: the entry moves to now
    assert ledger.wait_s(M1, 1000, 5) == 3635.0  # ends at 41 s, free an hour later (- 1 s)
    assert ledger.can_send(M1, 1000, 3640)


@pytest.mark.parametrize(
    ("method", "args", "name"),
    [
        ("can_send", (M1, 0, 0), "airtime_ms"),
        ("can_send", (M1, -5, 0), "airtime_ms"),
        ("can_send", (M1, "10", 0), "airtime_ms"),
        ("can_send", (M1, True, 0), "airtime_ms"),
        ("record", (M1, 10, "now"), "now_s"),
        ("record", (M1, 10, None), "now_s"),
        ("record", (868650000, 10, 0), "channel"),
        ("wait_s", ("X", 10, 0), "channel"),
        ("used_ms", (M1, False), "now_s"),
    ],
)
def test_ledger_arguments_are_named(airtime, method, args, name):
    ledger = airtime.DutyCycleLedger()
    with pytest.raises(ValueError, match="^" + name + ":"):
        getattr(ledger, method)(*args)
    with pytest.raises(ValueError, match=r"^max_entries:"):
        airtime.DutyCycleLedger(max_entries=0)

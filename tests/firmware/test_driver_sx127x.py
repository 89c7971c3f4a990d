"""SX1276/RFM95 driver against a register model of the chip: exact register writes."""

import math

import pytest

from protocol.airtime import time_on_air_ms

SLEEP, STDBY, TX, RXCONT, RXSINGLE = 0x80, 0x81, 0x83, 0x85, 0x86


@pytest.fixture
def rig(mpy):
    sb = mpy.module("tests.support.scripted_bus")
    drv = mpy.module("firmware.drivers.sx127x")
    clock = sb.Clock()

    def make(chip_kwargs=None, reset=True, **radio_kwargs):
        spi, cs, chip = sb.sx1276(**(chip_kwargs or {}))
        reset_pin = sb.Pin(1) if reset else None
        radio = drv.SX127x(
            spi,
            cs,
            reset=reset_pin,
            sleep_ms=clock.sleep_ms,
            ticks_ms=clock.ticks_ms,
            **radio_kwargs,
        )
        return radio, chip, cs, reset_pin

    make.clock = clock
    return make


def test_begin_writes_the_datasheet_sequence_for_868_1_mhz_sf7(rig):
    radio, chip, _cs, reset = rig()
    assert radio.begin() is True
    assert reset.writes == [0, 1]  # NRESET pulled low, then released
    assert rig.clock.ticks_ms() >= 6  # > 100 us low, then 5 ms before the first access
    assert chip.log == [
        (0x01, 0x00),  # SLEEP in FSK mode: LongRangeMode can only change in SLEEP
        (0x01, 0x80),  # SLEEP, LoRa
        (0x06, 0xD9),  # RegFrf = 868.1 MHz * 2^19 / 32 MHz = 0xD90666
        (0x07, 0x06),
        (0x08, 0x66),
        (0x4D, 0x84),  # RegPaDac default: no +20 dBm
        (0x09, 0xFC),  # PA_BOOST, OutputPower 12: 17 - (15 - 12) = 14 dBm
        (0x0C, 0x23),  # LNA max gain, boost on
        (0x0E, 0x00),
        (0x0F, 0x00),
        (0x1D, 0x72),  # BW 125 kHz, CR 4/5, explicit header
        (0x1E, 0x74),  # SF7, RxPayloadCrcOn
        (0x26, 0x04),  # no LDRO at SF7, AGC auto
        (0x20, 0x00),  # preamble 8 symbols
        (0x21, 0x08),
        (0x39, 0x12),  # private sync word
        (0x31, 0x03),  # detection optimise / threshold for SF7-12
        (0x37, 0x0A),
        (0x01, STDBY),
    ]
    assert chip.regs[0x01] == STDBY  # the chip really is in LoRa mode


@pytest.mark.parametrize(
    ("freq_hz", "frf"),
    [
        (868100000, (0xD9, 0x06, 0x66)),
        (868300000, (0xD9, 0x13, 0x33)),
        (868500000, (0xD9, 0x20, 0x00)),
        (869525000, (0xD9, 0x61, 0x99)),
        (915000000, (0xE4, 0xC0, 0x00)),
        (433000000, (0x6C, 0x40, 0x00)),
    ],
)
def test_frequency_registers(rig, freq_hz, frf):
    radio, chip, _, _ = rig(freq_hz=freq_hz)
    radio.begin()
    assert (chip.regs[0x06], chip.regs[0x07], chip.regs[0x08]) == frf


def test_433_mhz_uses_the_low_frequency_port(rig):
    radio, chip, _, _ = rig(freq_hz=433175000)
    radio.begin()
    assert chip.log[:2] == [(0x01, 0x08), (0x01, 0x88)]  # LowFrequencyModeOn, then LoRa
    assert chip.regs[0x01] == 0x89
    assert (chip.regs[0x06], chip.regs[0x07], chip.regs[0x08]) == (0x6C, 0x4B, 0x33)
    chip.deliver(b"x", 60, 36)
    assert radio.receive(100) == b"x"
    assert radio.rssi_dbm == -164 + 60 * 16 // 15


def test_sf12_turns_ldro_on_and_cr_header_crc_are_encoded(rig):
    radio, chip, _, _ = rig(sf=12, cr=4, explicit_header=False, crc=False, preamble=10)
    radio.begin()
    assert chip.regs[0x1D] == 0x79  # 125 kHz, CR 4/8, implicit header
    assert chip.regs[0x1E] == 0xC0  # SF12, no CRC
    assert chip.regs[0x26] == 0x0C  # LowDataRateOptimize + AGC: 32.768 ms symbols
    assert (chip.regs[0x20], chip.regs[0x21]) == (0, 10)


@pytest.mark.parametrize(("sf", "bw", "ldro"), [(10, 125000, 0), (11, 125000, 1), (12, 250000, 1)])
def test_ldro_follows_the_16_ms_symbol_rule(rig, sf, bw, ldro):
    radio, chip, _, _ = rig(sf=sf, bw_hz=bw)
    radio.begin()
    assert chip.regs[0x26] & 0x08 == ldro * 8


def test_500_khz_applies_the_errata_registers(rig):
    radio, chip, _, _ = rig(bw_hz=500000)
    radio.begin()
    assert chip.regs[0x1D] >> 4 == 0x9
    assert (0x36, 0x02) in chip.log
    assert (0x3A, 0x64) in chip.log


@pytest.mark.parametrize(
    ("kwargs", "pa_dac", "pa_config", "ocp"),
    [
        ({"power_dbm": 20}, 0x87, 0xFF, 0x3B),
        ({"power_dbm": 17}, 0x84, 0xFF, None),
        ({"power_dbm": 2}, 0x84, 0xF0, None),
        ({"power_dbm": 10, "pa_boost": False}, None, 0x7A, None),
    ],
)
def test_output_power(rig, kwargs, pa_dac, pa_config, ocp):
    radio, chip, _, _ = rig(**kwargs)
    radio.begin()
    assert chip.writes_to(0x09) == [pa_config]
    assert chip.writes_to(0x4D) == ([pa_dac] if pa_dac else [])
    assert chip.writes_to(0x0B) == ([ocp] if ocp else [])


def test_wrong_chip_version_is_refused(rig):
    radio, _, _, _ = rig(chip_kwargs={"version": 0x22})
    with pytest.raises(Exception, match="RegVersion 0x22") as err:
        radio.begin()
    assert type(err.value).__name__ == "OSError"  # the bridge keeps the remote class name


def test_invalid_settings_are_refused(rig):
    with pytest.raises(ValueError):
        rig(sf=6)  # SF6 needs implicit header
    with pytest.raises(ValueError):
        rig(bw_hz=100000)
    with pytest.raises(ValueError):
        rig(cr=5)


def test_send_loads_the_fifo_and_waits_for_tx_done(rig):
    radio, chip, cs, _ = rig()
    radio.begin()
    start = len(chip.log)
    assert radio.send(b"hello") is True
    assert chip.log[start:] == [
        (0x01, STDBY),
        (0x0D, 0x00),  # FifoAddrPtr = FifoTxBaseAddr
        (0x00, 0x68),  # the payload, burst-written into RegFifo
        (0x00, 0x65),
        (0x00, 0x6C),
        (0x00, 0x6C),
        (0x00, 0x6F),
        (0x22, 5),  # RegPayloadLength
        (0x40, 0x40),  # DIO0 = TxDone
        (0x12, 0xFF),  # clear all IRQ flags
        (0x01, TX),
        (0x12, 0x08),  # TxDone acknowledged
    ]
    assert chip.sent == [b"hello"]
    assert chip.regs[0x01] == STDBY  # back in STANDBY after TxDone, as the chip does
    assert radio.frames_sent == 1
    assert cs.value() == 1


def test_send_watches_dio0_instead_of_polling_spi(mpy, rig):
    sb = mpy.module("tests.support.scripted_bus")
    drv = mpy.module("firmware.drivers.sx127x")
    spi, cs, chip = sb.sx1276(tx_polls=5)
    dio0 = chip.dio0()
    radio = drv.SX127x(spi, cs, dio0=dio0, sleep_ms=rig.clock.sleep_ms, ticks_ms=rig.clock.ticks_ms)
    radio.begin()
    before = cs.transactions
    assert radio.send(b"abc") is True
    assert dio0.reads == 5  # the line was watched until TxDone raised it
    # FIFO burst, length, mapping, flags, mode, then one flag read and one flag clear:
    # the waiting itself cost no SPI traffic
    assert cs.transactions - before == 9


def test_send_times_out_when_tx_done_never_comes(rig):
    radio, chip, _, _ = rig(chip_kwargs={"tx_polls": None})
    radio.begin()
    t0 = rig.clock.ticks_ms()
    assert radio.send(b"x", 200) is False
    assert 200 <= rig.clock.ticks_ms() - t0 <= 210
    assert chip.log[-1] == (0x01, STDBY)


def test_payload_length_limits(rig):
    radio, _, _, _ = rig()
    radio.begin()
    with pytest.raises(ValueError):
        radio.send(b"")
    with pytest.raises(ValueError):
        radio.send(bytes(256))
    assert radio.send(bytes(255)) is True


def test_rx_window_sets_the_symbol_timeout_and_reads_the_frame(rig):
    radio, chip, _, _ = rig()
    radio.begin()
    chip.deliver(b"\x01\x02\x03", 60, 36)  # PacketRssi 60, SNR +9 dB
    start = len(chip.log)
    assert radio.receive(1000) == b"\x01\x02\x03"
    log = chip.log[start:]
    # 1000 ms at SF7/125 kHz = ceil(1000000 / 1024 us) = 977 symbols = 0x3D1
    assert log[:6] == [
        (0x01, STDBY),
        (0x0D, 0x00),
        (0x40, 0x00),  # DIO0 = RxDone
        (0x12, 0xFF),
        (0x1E, 0x74 | 0x03),  # SymbTimeout bits 9-8 beside SF7 + CRC on
        (0x1F, 0xD1),
    ]
    assert log[6] == (0x01, RXSINGLE)
    assert (0x12, 0xFF) in log[7:]
    assert radio.rssi_dbm == -157 + 60 * 16 // 15  # SNR >= 0: -157 + 16/15 * PacketRssi
    assert radio.snr_db == 9.0
    assert radio.snr_x4 == 36
    assert chip.regs[0x01] == STDBY


def test_negative_snr_corrects_the_rssi(rig):
    radio, chip, _, _ = rig()
    radio.begin()
    chip.deliver(b"\xaa", 40, -30)  # SNR -7.5 dB
    assert radio.receive(100) == b"\xaa"
    assert radio.snr_x4 == -30
    assert radio.rssi_dbm == -157 + 40 + (-30 // 4)


def test_crc_error_drops_the_frame_and_counts_it(rig):
    radio, chip, _, _ = rig()
    radio.begin()
    chip.deliver(b"bad", 50, 20, False)
    assert radio.receive(500) is None
    assert radio.crc_errors == 1


def test_rx_timeout_returns_none(rig):
    radio, chip, _, _ = rig()
    radio.begin()
    assert radio.receive(50) is None
    assert chip.regs[0x12] & 0x80 == 0  # RxTimeout was cleared
    assert chip.regs[0x01] == STDBY


def test_symbol_timeout_is_capped_at_1023(rig):
    radio, chip, _, _ = rig()
    radio.begin()
    radio.receive(5000)
    assert chip.writes_to(0x1F)[-1] == 0xFF
    assert chip.writes_to(0x1E)[-1] == 0x77


def test_continuous_receive_keeps_listening(rig):
    radio, chip, _, _ = rig()
    radio.begin()
    radio.start_receive()
    assert chip.regs[0x01] == RXCONT
    assert radio.poll() is None
    chip.deliver(b"first", 70, 28)
    chip.deliver(b"second", 70, 28)
    assert radio.poll() == b"first"
    assert radio.poll() == b"second"
    assert chip.regs[0x01] == RXCONT
    assert radio.poll() is None


@pytest.mark.parametrize("n", [1, 13, 51, 255])
@pytest.mark.parametrize(("sf", "bw"), [(7, 125000), (9, 125000), (12, 125000), (8, 500000)])
def test_airtime_matches_the_protocol_formula(rig, n, sf, bw):
    radio, _, _, _ = rig(sf=sf, bw_hz=bw)
    assert radio.airtime_ms(n) == math.ceil(time_on_air_ms(n, sf, bw_hz=bw))


def test_a_window_with_rx_symbols_searches_that_many_symbols_and_sleeps_through_them(rig):
    radio, chip, _, _ = rig(rx_symbols=46)
    radio.begin()
    start = rig.clock.ticks_ms()
    assert radio.receive(400) is None  # timeout_ms bounds the call, not the search
    assert chip.writes_to(0x1F)[-1] == 46  # RegSymbTimeoutLsb: 46 symbols, not 400 ms worth
    assert chip.writes_to(0x1E)[-1] == 0x74  # SymbTimeout bits 9-8 clear beside SF7 + CRC
    assert RXSINGLE in chip.modes
    # one sleep through the 46 symbols (47 ms), then polls until RxTimeout
    assert rig.clock.ticks_ms() - start >= 47
    assert chip.regs[0x01] == STDBY


def test_a_battery_radio_sleeps_after_txdone_and_waits_the_airtime_in_one_go(rig):
    radio, chip, _, _ = rig(sleep_after_tx=True)
    radio.begin()
    start = rig.clock.ticks_ms()
    assert radio.send(bytes(20)) is True
    assert rig.clock.ticks_ms() - start >= radio.airtime_ms(20) - 2
    assert chip.modes[-1] == SLEEP  # 0.2 uA instead of STANDBY's 1.6 mA until the RX window
    # the window wakes it: STANDBY, then RXSINGLE
    radio.receive(50)
    assert chip.modes[-3:] == [STDBY, RXSINGLE, STDBY]

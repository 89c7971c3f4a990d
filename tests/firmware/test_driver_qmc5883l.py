"""QMC5883L driver against a register model: set-up writes, data-ready, signed LE axes."""

import pytest


@pytest.fixture
def parts(mpy):
    sb = mpy.module("tests.support.scripted_bus")
    drv = mpy.module("firmware.drivers.qmc5883l")
    chip = sb.QMC5883L()
    i2c = sb.I2C({0x0D: chip})
    clock = sb.Clock()
    return sb, drv, chip, i2c, clock


def test_begin_resets_and_starts_continuous_mode(parts):
    _, drv, _chip, i2c, clock = parts
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms)
    mag.begin()
    assert i2c.writes() == [
        (0x0A, b"\x80"),  # SOFT_RST
        (0x0B, b"\x01"),  # SET/RESET period, as the datasheet recommends
        (0x09, bytes([0b00_01_00_01])),  # OSR 512, 8 G, 10 Hz, continuous
    ]
    assert mag.lsb_per_gauss == 3000


@pytest.mark.parametrize(
    ("kwargs", "control1", "lsb"),
    [
        ({"odr_hz": 200, "range_gauss": 2, "osr": 64}, 0b11_00_11_01, 12000),
        ({"odr_hz": 50, "range_gauss": 8, "osr": 256}, 0b01_01_01_01, 3000),
        ({"odr_hz": 100, "range_gauss": 2, "osr": 128}, 0b10_00_10_01, 12000),
    ],
)
def test_control_register_fields(parts, kwargs, control1, lsb):
    _, drv, chip, i2c, clock = parts
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms, **kwargs)
    mag.begin()
    assert chip.regs[0x09] == control1
    assert mag.lsb_per_gauss == lsb


def test_bad_settings_are_refused(parts):
    _, drv, _, i2c, _ = parts
    with pytest.raises(ValueError):
        drv.QMC5883L(i2c, odr_hz=20)
    with pytest.raises(ValueError):
        drv.QMC5883L(i2c, range_gauss=4)


def test_read_returns_signed_little_endian_axes(parts):
    _, drv, chip, i2c, clock = parts
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms)
    mag.begin()
    chip.push(1234, -2, -32768)
    assert mag.read() == (1234, -2, -32768)
    # the status register is read first, then the six data bytes in one burst
    reads = [(e[2], len(e[3])) for e in i2c.log if e[0] == "r"]
    assert reads[-2:] == [(0x06, 1), (0x00, 6)]
    assert chip.regs[0x06] & 0x01 == 0  # reading the data cleared DRDY


def test_read_waits_for_data_ready_then_gives_up(parts):
    _, drv, _chip, i2c, clock = parts
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms)
    mag.begin()
    t0 = clock.ticks_ms()
    with pytest.raises(Exception, match="no data ready") as err:
        mag.read()
    assert type(err.value).__name__ == "OSError"
    assert clock.ticks_ms() - t0 == 200  # two output periods at 10 Hz
    assert not mag.ready()


def test_overflow_reads_as_none_and_is_counted(parts):
    _, drv, chip, i2c, clock = parts
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms)
    mag.begin()
    chip.push(32767, 0, 0, True)
    assert mag.read() is None
    assert mag.overflows == 1
    chip.push(5, 6, 7)
    assert mag.read() == (5, 6, 7)


def test_no_data_before_continuous_mode(parts):
    _, drv, chip, i2c, clock = parts
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms)
    chip.push(1, 2, 3)
    assert not mag.ready()  # standby after power-on: no conversions
    mag.begin()
    assert mag.ready()


def test_absent_chip_raises_oserror_and_reports_health(parts):
    _, drv, chip, i2c, clock = parts
    chip.present = False
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms)
    with pytest.raises(Exception) as err:
        mag.begin()
    assert type(err.value).__name__ == "OSError"
    assert mag.health() == "absent"


def test_temperature_register(parts):
    _, drv, chip, i2c, clock = parts
    mag = drv.QMC5883L(i2c, sleep_ms=clock.sleep_ms)
    chip.temp = -250
    assert mag.read_temp_raw() == -250

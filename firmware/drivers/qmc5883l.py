# QST QMC5883L 3-axis magnetometer over I2C (datasheet rev. C, section 9 "Register map").
#
# 0x00-0x05 X, Y, Z as signed 16-bit little endian; 0x06 status (DRDY bit 0, OVL bit 1: some
# axis left the range, DOR bit 2: a sample was skipped); 0x07-0x08 temperature (relative,
# 100 LSB/degC); 0x09 control 1 (OSR 7-6, RNG 5-4, ODR 3-2, MODE 1-0); 0x0A control 2
# (SOFT_RST bit 7); 0x0B SET/RESET period (0x01 recommended); 0x0D chip id 0xFF.
import struct
import time

from micropython import const

REG_DATA = const(0x00)
REG_STATUS = const(0x06)
REG_TEMP = const(0x07)
REG_CONTROL1 = const(0x09)
REG_CONTROL2 = const(0x0A)
REG_SET_RESET = const(0x0B)
REG_CHIP_ID = const(0x0D)

STATUS_DRDY = const(0x01)
STATUS_OVL = const(0x02)
SOFT_RST = const(0x80)
MODE_CONTINUOUS = const(0x01)
CHIP_ID = 0xFF

ODR = {10: 0, 50: 1, 100: 2, 200: 3}  # Hz -> bits 3-2
RANGE = {2: 0, 8: 1}  # gauss -> bits 5-4
OSR = {512: 0, 256: 1, 128: 2, 64: 3}  # over-sampling ratio -> bits 7-6
LSB_PER_GAUSS = {2: 12000, 8: 3000}


class QMC5883L:
    def __init__(self, i2c, *, addr=0x0D, odr_hz=10, range_gauss=8, osr=512, sleep_ms=None):
        if odr_hz not in ODR or range_gauss not in RANGE or osr not in OSR:
            raise ValueError("qmc5883l: odr 10/50/100/200, range 2/8, osr 512/256/128/64")
        self.i2c = i2c
        self.addr = addr
        self.control1 = OSR[osr] << 6 | RANGE[range_gauss] << 4 | ODR[odr_hz] << 2 | MODE_CONTINUOUS
        self.lsb_per_gauss = LSB_PER_GAUSS[range_gauss]
        self.period_ms = 1000 // odr_hz
        self._sleep_ms = sleep_ms or time.sleep_ms
        self.overflows = 0

    def _write(self, reg, value):
        self.i2c.writeto_mem(self.addr, reg, bytes((value,)))

    def begin(self):
        """Reset and start continuous measurement; OSError when the chip does not answer."""
        if self.i2c.readfrom_mem(self.addr, REG_CHIP_ID, 1)[0] != CHIP_ID:
            raise OSError("qmc5883l: chip id is not 0xFF")
        self._write(REG_CONTROL2, SOFT_RST)
        self._sleep_ms(1)  # power-on reset takes 350 us
        self._write(REG_SET_RESET, 0x01)
        self._write(REG_CONTROL1, self.control1)

    def ready(self):
        return bool(self.i2c.readfrom_mem(self.addr, REG_STATUS, 1)[0] & STATUS_DRDY)

    def read(self, timeout_ms=None):
        """(x, y, z) in counts (lsb_per_gauss per gauss), or None when the chip flags an
        overflow. Waits for data-ready up to timeout_ms (default: two output periods)."""
        if timeout_ms is None:
            timeout_ms = 2 * self.period_ms
        waited = 0
        while True:
            status = self.i2c.readfrom_mem(self.addr, REG_STATUS, 1)[0]
            if status & STATUS_DRDY:
                break
            if waited >= timeout_ms:
                raise OSError("qmc5883l: no data ready")
            self._sleep_ms(1)
            waited += 1
        # reading the data registers clears DRDY; read all six in one burst so the axes
        # belong to the same sample
        data = self.i2c.readfrom_mem(self.addr, REG_DATA, 6)
        if status & STATUS_OVL:
            self.overflows += 1
            return None
        return struct.unpack("<hhh", data)

    def read_temp_raw(self):
        """The on-chip temperature register: relative, 100 LSB per degree C."""
        return struct.unpack("<h", self.i2c.readfrom_mem(self.addr, REG_TEMP, 2))[0]

    def health(self):
        try:
            status = self.i2c.readfrom_mem(self.addr, REG_STATUS, 1)[0]
        except OSError:
            return "absent"
        return "overflow" if status & STATUS_OVL else "ok"

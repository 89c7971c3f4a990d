# Semtech SX1276/77/78/79 (HopeRF RFM95/96) in LoRa mode, over SPI.
#
# Register numbers and bit fields are those of the SX1276 datasheet (rev. 7, section 6.4, "LoRa
# mode register map"). An SPI access is one CS-low transaction: the address byte with bit 7 set
# for a write (clear for a read), then data bytes; bursts auto-increment the address, except on
# RegFifo, which reads and writes the FIFO at RegFifoAddrPtr.
import time

from micropython import const

REG_FIFO = const(0x00)
REG_OP_MODE = const(0x01)
REG_FRF_MSB = const(0x06)
REG_PA_CONFIG = const(0x09)
REG_OCP = const(0x0B)
REG_LNA = const(0x0C)
REG_FIFO_ADDR_PTR = const(0x0D)
REG_FIFO_TX_BASE = const(0x0E)
REG_FIFO_RX_BASE = const(0x0F)
REG_FIFO_RX_CURRENT = const(0x10)
REG_IRQ_FLAGS = const(0x12)
REG_RX_NB_BYTES = const(0x13)
REG_PKT_SNR = const(0x19)
REG_PKT_RSSI = const(0x1A)
REG_MODEM_CONFIG1 = const(0x1D)
REG_MODEM_CONFIG2 = const(0x1E)
REG_SYMB_TIMEOUT_LSB = const(0x1F)
REG_PREAMBLE_MSB = const(0x20)
REG_PAYLOAD_LENGTH = const(0x22)
REG_MODEM_CONFIG3 = const(0x26)
REG_DETECT_OPTIMIZE = const(0x31)
REG_HIGH_BW_OPTIMIZE1 = const(0x36)
REG_DETECTION_THRESHOLD = const(0x37)
REG_SYNC_WORD = const(0x39)
REG_HIGH_BW_OPTIMIZE2 = const(0x3A)
REG_DIO_MAPPING1 = const(0x40)
REG_VERSION = const(0x42)
REG_PA_DAC = const(0x4D)

LONG_RANGE = const(0x80)  # RegOpMode bit 7: LoRa; writable in SLEEP only
LOW_FREQUENCY = const(0x08)  # RegOpMode bit 3: the LF port's registers (below 525 MHz)
MODE_SLEEP = const(0x00)
MODE_STDBY = const(0x01)
MODE_TX = const(0x03)
MODE_RX_CONTINUOUS = const(0x05)
MODE_RX_SINGLE = const(0x06)

IRQ_RX_TIMEOUT = const(0x80)
IRQ_RX_DONE = const(0x40)
IRQ_CRC_ERROR = const(0x20)
IRQ_TX_DONE = const(0x08)

DIO0_RX_DONE = const(0x00)  # RegDioMapping1 bits 7-6
DIO0_TX_DONE = const(0x40)

FXOSC = const(32000000)
CHIP_VERSION = 0x12
# RegModemConfig1 bits 7-4, by bandwidth in Hz (datasheet table in 6.4, RegModemConfig1)
BANDWIDTHS = (7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000)
RSSI_OFFSET_HF = -157  # 5.5.5: RF_HF port (862-1020 MHz)
RSSI_OFFSET_LF = -164  # RF_LF port (410-525 MHz)
LF_LIMIT_HZ = 525000000
POLL_MS = 1
SYMB_TIMEOUT_MAX = 1023


class SX127x:
    def __init__(
        self,
        spi,
        cs,
        *,
        reset=None,
        dio0=None,
        freq_hz=868100000,
        sf=7,
        bw_hz=125000,
        cr=1,
        preamble=8,
        explicit_header=True,
        crc=True,
        ldro=None,
        power_dbm=14,
        pa_boost=True,
        sync_word=0x12,
        rx_symbols=None,
        sleep_after_tx=False,
        sleep_ms=None,
        ticks_ms=None,
    ):
        if not 6 <= sf <= 12:
            raise ValueError("sx127x: sf 6..12")
        if sf == 6 and explicit_header:
            raise ValueError("sx127x: SF6 works in implicit header mode only")
        if bw_hz not in BANDWIDTHS:
            raise ValueError("sx127x: unsupported bandwidth")
        if not 1 <= cr <= 4:
            raise ValueError("sx127x: cr 1..4 (4/5..4/8)")
        if not 6 <= preamble <= 65535:
            raise ValueError("sx127x: preamble 6..65535")
        self.spi = spi
        self.cs = cs
        self.reset_pin = reset
        self.dio0 = dio0
        self.freq_hz = freq_hz
        self.sf = sf
        self.bw_hz = bw_hz
        self.cr = cr
        self.preamble = preamble
        self.explicit_header = explicit_header
        self.crc = crc
        # LDRO is mandated when a symbol lasts 16 ms or more (datasheet 4.1.1.6)
        self.ldro = ldro if ldro is not None else (1 << sf) * 1000 // bw_hz >= 16
        self.power_dbm = power_dbm
        self.pa_boost = pa_boost
        self.sync_word = sync_word
        # RXSINGLE symbol timeout for receive(); None: derived from receive()'s timeout_ms
        self.rx_symbols = rx_symbols
        # SLEEP (0.2 uA, registers kept) rather than STANDBY (1.6 mA) after TxDone: a battery
        # node waiting for its RX window
        self.sleep_after_tx = sleep_after_tx
        self._band = LOW_FREQUENCY if freq_hz < LF_LIMIT_HZ else 0
        self._rssi_offset = RSSI_OFFSET_LF if self._band else RSSI_OFFSET_HF
        self._sleep_ms = sleep_ms or time.sleep_ms
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._buf = bytearray(2)
        self.rssi_dbm = None
        self.snr_db = None
        self.snr_x4 = None
        self.crc_errors = 0
        self.frames_sent = 0
        self._config2 = 0

    # -- register access ----------------------------------------------------------------
    def read(self, reg):
        buf = self._buf
        buf[0] = reg & 0x7F
        buf[1] = 0
        self.cs.value(0)
        try:
            self.spi.write_readinto(buf, buf)
        finally:
            self.cs.value(1)
        return buf[1]

    def write(self, reg, value):
        buf = self._buf
        buf[0] = reg | 0x80
        buf[1] = value
        self.cs.value(0)
        try:
            self.spi.write(buf)
        finally:
            self.cs.value(1)

    def write_burst(self, reg, data):
        self.cs.value(0)
        try:
            self.spi.write(bytes((reg | 0x80,)))
            self.spi.write(data)
        finally:
            self.cs.value(1)

    def read_burst(self, reg, n):
        out = bytearray(n + 1)
        out[0] = reg & 0x7F
        self.cs.value(0)
        try:
            self.spi.write_readinto(out, out)
        finally:
            self.cs.value(1)
        return bytes(out[1:])

    # -- set-up ---------------------------------------------------------------------------
    def begin(self):
        if self.reset_pin is not None:
            # 7.2.2: hold NRESET low for more than 100 us, then wait 5 ms before any access
            self.reset_pin.value(0)
            self._sleep_ms(1)
            self.reset_pin.value(1)
            self._sleep_ms(5)
        version = self.read(REG_VERSION)
        if version != CHIP_VERSION:
            raise OSError("sx127x: RegVersion 0x%02x, not an SX1276" % version)
        self.write(REG_OP_MODE, self._band | MODE_SLEEP)  # LongRangeMode changes in SLEEP only
        self.write(REG_OP_MODE, LONG_RANGE | self._band | MODE_SLEEP)
        self.configure()
        self.standby()
        return True

    def configure(self):
        frf = (self.freq_hz << 19) // FXOSC  # Frf = F_rf * 2^19 / F_xosc
        self.write(REG_FRF_MSB, (frf >> 16) & 0xFF)
        self.write(REG_FRF_MSB + 1, (frf >> 8) & 0xFF)
        self.write(REG_FRF_MSB + 2, frf & 0xFF)
        self._power()
        self.write(REG_LNA, 0x23)  # max LNA gain, LnaBoostHf on (150 % current, better NF)
        self.write(REG_FIFO_TX_BASE, 0x00)  # one frame at a time: the whole 256-byte FIFO
        self.write(REG_FIFO_RX_BASE, 0x00)
        bw = BANDWIDTHS.index(self.bw_hz)
        self.write(REG_MODEM_CONFIG1, bw << 4 | self.cr << 1 | (0 if self.explicit_header else 1))
        self._config2 = self.sf << 4 | (0x04 if self.crc else 0)
        self.write(REG_MODEM_CONFIG2, self._config2)
        # AgcAutoOn (bit 2): the LNA gain follows the AGC, as the register's reset value has it
        self.write(REG_MODEM_CONFIG3, (0x08 if self.ldro else 0) | 0x04)
        self.write(REG_PREAMBLE_MSB, self.preamble >> 8)
        self.write(REG_PREAMBLE_MSB + 1, self.preamble & 0xFF)
        self.write(REG_SYNC_WORD, self.sync_word)
        # RegDetectOptimize / RegDetectionThreshold: 0x05 / 0x0C for SF6, else 0x03 / 0x0A
        self.write(REG_DETECT_OPTIMIZE, 0x05 if self.sf == 6 else 0x03)
        self.write(REG_DETECTION_THRESHOLD, 0x0C if self.sf == 6 else 0x0A)
        if self.bw_hz == 500000:
            # Errata 2.1 (sensitivity at 500 kHz): 0x36 = 0x02, 0x3A = 0x64 above 525 MHz
            self.write(REG_HIGH_BW_OPTIMIZE1, 0x02)
            self.write(REG_HIGH_BW_OPTIMIZE2, 0x64 if self.freq_hz > LF_LIMIT_HZ else 0x7F)

    def _power(self):
        dbm = self.power_dbm
        if self.pa_boost:
            # PA_BOOST (the only PA wired on an RFM95): Pout = 17 - (15 - OutputPower), and
            # +20 dBm needs the high-power DAC (RegPaDac 0x87) and a higher OCP trim
            dbm = max(2, min(20, dbm))
            if dbm > 17:
                self.write(REG_PA_DAC, 0x87)
                self.write(REG_OCP, 0x20 | 27)  # OCP on, trim 27: Imax = -30 + 10 * 27 = 240 mA
                self.write(REG_PA_CONFIG, 0x80 | 0x70 | 0x0F)
            else:
                self.write(REG_PA_DAC, 0x84)
                self.write(REG_PA_CONFIG, 0x80 | 0x70 | (dbm - 2))
        else:
            # RFO: MaxPower 7 gives Pmax = 10.8 + 0.6 * 7 = 15 dBm; Pout = Pmax - (15 - OP)
            dbm = max(0, min(15, dbm))
            self.write(REG_PA_CONFIG, 0x70 | dbm)

    def mode(self, mode):
        self.write(REG_OP_MODE, LONG_RANGE | self._band | mode)

    def standby(self):
        self.mode(MODE_STDBY)

    def sleep(self):
        self.mode(MODE_SLEEP)

    def symbol_us(self):
        return (1 << self.sf) * 1000000 // self.bw_hz

    # -- transmit -------------------------------------------------------------------------
    def start_send(self, payload):
        n = len(payload)
        if not 1 <= n <= 255:
            raise ValueError("sx127x: payload 1..255 bytes")
        self.standby()
        self.write(REG_FIFO_ADDR_PTR, 0x00)
        self.write_burst(REG_FIFO, payload)
        self.write(REG_PAYLOAD_LENGTH, n)
        self.write(REG_DIO_MAPPING1, DIO0_TX_DONE)
        self.write(REG_IRQ_FLAGS, 0xFF)  # flags clear by writing ones
        self.mode(MODE_TX)

    def tx_done(self):
        if self.dio0 is not None and not self.dio0.value():
            return False
        if self.read(REG_IRQ_FLAGS) & IRQ_TX_DONE:
            self.write(REG_IRQ_FLAGS, IRQ_TX_DONE)
            self.frames_sent += 1
            return True  # the chip is back in STANDBY on its own
        return False

    def send(self, payload, timeout_ms=5000):
        """Transmit and wait for TxDone; False when it does not come within timeout_ms."""
        self.start_send(payload)
        start = self._ticks_ms()
        # TxDone cannot come before the frame's airtime: one long wait (a light sleep on a
        # battery node), then short polls, rather than a wake-up every POLL_MS
        self._sleep_ms(max(0, min(timeout_ms, self.airtime_ms(len(payload))) - 2))
        while not self.tx_done():
            if time.ticks_diff(self._ticks_ms(), start) >= timeout_ms:
                self.standby()
                return False
            self._sleep_ms(POLL_MS)
        if self.sleep_after_tx:
            self.sleep()
        return True

    # -- receive --------------------------------------------------------------------------
    def start_receive(self, continuous=True, timeout_ms=0, symbols=None):
        self.standby()
        self.write(REG_FIFO_ADDR_PTR, 0x00)
        self.write(REG_DIO_MAPPING1, DIO0_RX_DONE)
        self.write(REG_IRQ_FLAGS, 0xFF)
        if continuous:
            self.mode(MODE_RX_CONTINUOUS)
            return
        # RXSINGLE gives up after SymbTimeout symbols without a preamble (10 bits, max 1023)
        if symbols is None:
            sym = self.symbol_us()
            symbols = (timeout_ms * 1000 + sym - 1) // sym
        symbols = max(4, min(SYMB_TIMEOUT_MAX, symbols))
        self.write(REG_MODEM_CONFIG2, self._config2 | symbols >> 8)
        self.write(REG_SYMB_TIMEOUT_LSB, symbols & 0xFF)
        self.mode(MODE_RX_SINGLE)

    def _check_rx(self):
        # -> (status, frame): status 0 nothing yet, 1 frame, 2 frame dropped (CRC), 3 timeout
        flags = self.read(REG_IRQ_FLAGS)
        if flags & IRQ_RX_TIMEOUT:
            self.write(REG_IRQ_FLAGS, 0xFF)
            return 3, None
        if not flags & IRQ_RX_DONE:
            return 0, None
        self.write(REG_IRQ_FLAGS, 0xFF)
        if flags & IRQ_CRC_ERROR:
            self.crc_errors += 1
            return 2, None
        n = self.read(REG_RX_NB_BYTES)
        self.write(REG_FIFO_ADDR_PTR, self.read(REG_FIFO_RX_CURRENT))
        data = self.read_burst(REG_FIFO, n)
        snr_x4 = self.read(REG_PKT_SNR)
        if snr_x4 > 127:
            snr_x4 -= 256  # two's complement, in quarter dB
        rssi = self.read(REG_PKT_RSSI)
        # 5.5.5 (HF port): RSSI = -157 + 16/15 * PacketRssi when SNR >= 0, else
        # -157 + PacketRssi + SNR (the LF port's offset is -164)
        if snr_x4 >= 0:
            self.rssi_dbm = self._rssi_offset + rssi * 16 // 15
        else:
            self.rssi_dbm = self._rssi_offset + rssi + snr_x4 // 4
        self.snr_x4 = snr_x4
        self.snr_db = snr_x4 / 4
        return 1, data

    def poll(self):
        """The frame received since the last poll, or None (frames failing CRC are counted in
        crc_errors and dropped)."""
        return self._check_rx()[1]

    def receive(self, timeout_ms):
        """One RXSINGLE window: the frame heard in it, or None (timeout or CRC error).

        Without rx_symbols, the receiver looks for a preamble during timeout_ms. With
        rx_symbols (a LoRaWAN-style window opened when the answer is due), it looks for
        rx_symbols symbols only, and timeout_ms bounds the whole call: a frame whose preamble
        was found is read to its end."""
        symbols = self.rx_symbols
        self.start_receive(False, timeout_ms, symbols)
        if symbols is None:
            # the symbol timeout bounds only the preamble search: a frame that started may take
            # its full airtime; the clock guard covers a chip that never raises a flag
            limit = timeout_ms + self.airtime_ms(255) + 100
        else:
            limit = timeout_ms
            # nothing can end before the preamble search does: sleep through it in one go
            self._sleep_ms(symbols * self.symbol_us() // 1000)
        # while a frame comes in, a poll per half symbol (a light sleep each on a battery node)
        poll = max(POLL_MS, self.symbol_us() // 2000)
        start = self._ticks_ms()
        try:
            while True:
                status, data = self._check_rx()
                if status:
                    return data
                if time.ticks_diff(self._ticks_ms(), start) >= limit:
                    return None
                self._sleep_ms(poll)
        finally:
            self.standby()

    def airtime_ms(self, n):
        """Time on air of an n-byte frame with these settings (datasheet 4.1.1.7), rounded up."""
        de = 1 if self.ldro else 0
        ih = 0 if self.explicit_header else 1
        crc = 1 if self.crc else 0
        bits = 8 * n - 4 * self.sf + 28 + 16 * crc - 20 * ih
        per = 4 * (self.sf - 2 * de)
        symbols_x4 = (self.preamble * 4 + 17) + 4 * (
            8 + max(0, (bits + per - 1) // per) * (self.cr + 4)
        )
        return (symbols_x4 * self.symbol_us() + 3999) // 4000

"""The Raspberry Pi's RFM95 (SX1276) through Adafruit's `adafruit-circuitpython-rfm9x` on Blinka.

The driver configures the chip (LoRa mode, frequency, SF, bandwidth, coding rate, power, CRC)
and reads frames; two things it does not do the way our nodes need:

- `RFM9x.send` always prepends RadioHead's 4-byte header, and our frames are bare CoAP
  (firmware/drivers/sx127x.py sends exactly the CoAP bytes). `_send_raw` fills the FIFO through
  the driver's own register helpers and keys the transmitter the way `send` does, without the
  header; `receive(with_header=True)` hands back the frame untouched.
- It sets no LowDataRateOptimize; the nodes turn it on when a symbol lasts 16 ms or more (SF11
  and SF12 at 125 kHz, datasheet §4.1.1.6), and both ends must agree.

The driver is blocking (it busy-polls the IRQ flags), so all SPI traffic runs on one thread of
its own: it polls RegIrqFlags for RxDone every POLL_S while receiving continuously, and takes
transmissions from a queue between polls. Frames go to the event loop with their RSSI and SNR
and the time RxDone was seen (at most POLL_S late): the link times its answer from there, to
start RX_DELAY_MS later in the node's RX window (gateway/links/lora.py). A transmission keys
up as soon as it is queued (the thread waits on the queue between polls, not in a sleep), so
the link's timing is the radio's, within the FIFO load (a few SPI bytes: well under 1 ms).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.config import LoRaLinkConfig

log = logging.getLogger(__name__)

POLL_S = 0.005  # RxDone poll period: well under the shortest frame (~25 ms at SF7)
TX_TIMEOUT_S = 5.0  # TxDone must come within this (SF12, 51 bytes: about 2.5 s on air)
# SX1276 registers (datasheet §6.4) used beside the driver's own properties
REG_FIFO = 0x00
REG_FIFO_ADDR_PTR = 0x0D
REG_IRQ_FLAGS = 0x12
REG_PAYLOAD_LENGTH = 0x22
REG_SYNC_WORD = 0x39
SYNC_WORD = 0x12  # private networks (the nodes' driver default), not LoRaWAN's 0x34

OnFrame = Callable[[bytes, float | None, float | None, float], None]  # ..., RxDone monotonic
DriverFactory = Callable[[LoRaLinkConfig], Any]


def blinka_driver(settings: LoRaLinkConfig) -> Any:
    """The RFM95 on the Pi's SPI0 (SCK, MOSI, MISO) with the configured CS and RESET pins."""
    board = importlib.import_module("board")
    busio = importlib.import_module("busio")
    digitalio = importlib.import_module("digitalio")
    rfm9x = importlib.import_module("adafruit_rfm9x")
    pins = settings.rfm9x
    try:
        cs_pin, reset_pin = getattr(board, pins.cs_pin), getattr(board, pins.reset_pin)
    except AttributeError as exc:
        raise RuntimeError(f"links.lora.rfm9x: this board has no pin {exc.name}") from None
    spi = busio.SPI(board.SCK, MOSI=board.MOSI, MISO=board.MISO)
    cs = digitalio.DigitalInOut(cs_pin)
    reset = digitalio.DigitalInOut(reset_pin)
    return rfm9x.RFM9x(spi, cs, reset, settings.frequency_mhz, preamble_length=8, crc=True)


def configure(radio: Any, settings: LoRaLinkConfig) -> None:
    """Modem settings the nodes use (firmware/drivers/sx127x.py), in the order the driver needs."""
    bw_hz = round(settings.bandwidth_khz * 1000)
    radio.signal_bandwidth = bw_hz
    radio.spreading_factor = settings.spreading_factor
    radio.coding_rate = settings.coding_rate
    radio.tx_power = settings.tx_power_dbm
    radio.enable_crc = True
    radio.auto_agc = True
    radio.low_datarate_optimize = int((1 << settings.spreading_factor) * 1000 // bw_hz >= 16)
    radio._write_u8(REG_SYNC_WORD, SYNC_WORD)


class RFM9xRadio:
    time_scale = 1.0  # real radio time

    def __init__(self, settings: LoRaLinkConfig, driver: DriverFactory = blinka_driver) -> None:
        self.settings = settings
        self.make_driver = driver
        self.radio: Any = None
        self.crc_errors = 0
        self._sends: queue.Queue[tuple[bytes, asyncio.Future[bool]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_frame: OnFrame | None = None

    async def start(self, on_frame: OnFrame) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_frame = on_frame
        self.radio = await asyncio.to_thread(self._open)
        self._thread = threading.Thread(target=self._run, name="rfm9x", daemon=True)
        self._thread.start()

    def _open(self) -> Any:
        radio = self.make_driver(self.settings)
        configure(radio, self.settings)
        radio.listen()
        log.info("RFM95 ready (version register 0x12), receiving continuously")
        return radio

    async def send(self, frame: bytes) -> bool:
        assert self._loop is not None
        done: asyncio.Future[bool] = self._loop.create_future()
        self._sends.put((frame, done))
        return await done

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self.radio is not None:
            await asyncio.to_thread(self.radio.sleep)

    # -- the radio thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
                try:
                    frame, done = self._sends.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                sent = self._send_raw(frame)
                self._resolve(done, sent)
            except Exception:  # an SPI error must not end reception for good
                log.exception("RFM95 access failed; retrying")
                time.sleep(0.5)

    def _poll(self) -> None:
        radio = self.radio
        if not radio.rx_done():
            return
        rxdone = time.monotonic()  # the frame ended at most POLL_S ago; receive reads the FIFO
        errors = radio.crc_error_count
        packet = radio.receive(keep_listening=True, with_header=True, timeout=None)
        if radio.crc_error_count != errors:
            self.crc_errors += 1
        if packet is None:
            return
        frame, rssi, snr = bytes(packet), float(radio.last_rssi), float(radio.last_snr)
        loop, on_frame = self._loop, self._on_frame
        if loop is not None and on_frame is not None:
            loop.call_soon_threadsafe(on_frame, frame, rssi, snr, rxdone)

    def _send_raw(self, frame: bytes) -> bool:
        """`RFM9x.send` without its RadioHead header: the frame as it is."""
        radio = self.radio
        if not 0 < len(frame) <= 255:
            return False
        radio.idle()
        radio._write_u8(REG_FIFO_ADDR_PTR, 0x00)
        radio._write_from(REG_FIFO, frame)
        radio._write_u8(REG_PAYLOAD_LENGTH, len(frame))
        radio.transmit()
        deadline = time.monotonic() + TX_TIMEOUT_S
        done = False
        while not done and time.monotonic() < deadline:
            done = bool(radio.tx_done())
            if not done:
                time.sleep(0.001)
        radio.listen()
        radio._write_u8(REG_IRQ_FLAGS, 0xFF)
        return done

    def _resolve(self, done: asyncio.Future[bool], value: bool) -> None:
        def resolve() -> None:
            if not done.done():
                done.set_result(value)

        if self._loop is not None:
            self._loop.call_soon_threadsafe(resolve)

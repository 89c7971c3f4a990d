"""The serial rig's hands: the Raspberry Pi's GPIO through Blinka (adafruit-blinka), as wired in
docs/hil-wiring.md and named in rig.toml [gpio].

    meter pulses    an output toggled at the wanted rate (an open-collector stage closes the
                    DUT's meter input to ground, like a reed contact)
    probe wet/dry   an output that pulls the DUT's probe input low (wet) or lets it float (dry)
    PIR             an output driving the DUT's PIR input (3.3 V logic, as a PIR module does)
    lamp duty       an input sampled as fast as Python can read it for a window: the fraction
                    of samples high is the PWM duty (1 kHz PWM, a few thousand samples: +-2 %)
    power relay     an output driving the relay module that switches the DUT's 5 V
    EN              an output that pulls the DUT's EN low through an open-collector stage
    ranger          a Pi UART whose TX sends A02YYUW frames (FF H L SUM, 9600 baud) to the
                    DUT's ranger RX, as the sensor does: the distance is whatever the test sets

Blinka's `BLINKA_OS_AGNOSTIC=1` board (simulated pins) runs this module on a PC, which is how
its tests run without a Pi.
"""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any

from hil.rigconfig import GPIOPins

A02YYUW_PERIOD_S = 0.1  # the sensor's UART output rate in its "real-time" mode


def a02yyuw_frame(mm: int) -> bytes:
    """One A02YYUW UART frame: 0xFF, distance high, low, and the low byte of their sum."""
    high, low = (mm >> 8) & 0xFF, mm & 0xFF
    return bytes((0xFF, high, low, (0xFF + high + low) & 0xFF))


class PiStimuli:
    def __init__(self, pins: GPIOPins, ranger_uart: str | None = None) -> None:
        self.pins = pins
        self.ranger_uart = ranger_uart
        self._io: dict[str, Any] = {}
        self._ranger_mm: int | None = None
        self._ranger_thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- pins --------------------------------------------------------------------------------
    def _pin(self, role: str, output: bool) -> Any:
        name = getattr(self.pins, role)
        if name is None:
            raise LookupError(f"rig.toml [gpio] has no '{role}' pin: this stimulus is not wired")
        io = self._io.get(role)
        if io is None:
            board = importlib.import_module("board")
            digitalio = importlib.import_module("digitalio")
            io = digitalio.DigitalInOut(getattr(board, name))
            io.direction = digitalio.Direction.OUTPUT if output else digitalio.Direction.INPUT
            self._io[role] = io
        return io

    def wired(self, role: str) -> bool:
        return getattr(self.pins, role, None) is not None

    def pulses(self, count: int, rate_hz: float = 20.0) -> None:
        """`count` pulses (50 % duty) on the meter input."""
        pin = self._pin("meter", True)
        half = 0.5 / rate_hz
        for _ in range(count):
            pin.value = True
            time.sleep(half)
            pin.value = False
            time.sleep(half)

    def probe(self, wet: bool) -> None:
        self._pin("probe", True).value = wet  # the stage conducts (pulls low) when driven high

    def pir(self, level: bool) -> None:
        self._pin("pir", True).value = level

    def lamp_duty(self, window_s: float = 0.2) -> float:
        pin = self._pin("lamp", False)
        high = total = 0
        end = time.monotonic() + window_s
        while time.monotonic() < end:
            high += bool(pin.value)
            total += 1
        return high / total if total else 0.0

    def power(self, on: bool) -> None:
        self._pin("power_relay", True).value = on == self.pins.relay_active_high

    def reset(self, hold_s: float = 0.1) -> None:
        en = self._pin("en", True)
        en.value = True  # the transistor pulls EN low
        time.sleep(hold_s)
        en.value = False

    # -- the ranger's UART ---------------------------------------------------------------------
    def range_mm(self, mm: int | None) -> None:
        """Keep sending frames for `mm` (None stops: the sensor sees no echo)."""
        if self.ranger_uart is None:
            raise LookupError("rig.toml [gpio] has no 'ranger_uart': the ranger is not wired")
        self._ranger_mm = mm
        if mm is not None and self._ranger_thread is None:
            self._stop.clear()
            self._ranger_thread = threading.Thread(target=self._send_frames, daemon=True)
            self._ranger_thread.start()

    def _send_frames(self) -> None:
        import serial  # noqa: PLC0415

        assert self.ranger_uart is not None
        with serial.Serial(self.ranger_uart, 9600, timeout=0) as port:
            while not self._stop.is_set():
                mm = self._ranger_mm
                if mm is not None:
                    port.write(a02yyuw_frame(mm))
                time.sleep(A02YYUW_PERIOD_S)

    def close(self) -> None:
        self._stop.set()
        if self._ranger_thread is not None:
            self._ranger_thread.join(2)
            self._ranger_thread = None
        for io in self._io.values():
            io.deinit()
        self._io.clear()

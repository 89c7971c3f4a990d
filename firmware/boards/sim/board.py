# The sim board's core: virtual clock, files standing in for flash and RTC memory, resets and deep
# sleep as process exits, the watchdog, GPIO/ADC/PWM from the scenario. Layout of `.sim/` and the
# exit codes: see sim/__init__.py.

import json
import os
import sys
import time

from firmware.boards import PINS, RTC_USER_SIZE
from firmware.boards.sim import devices, parts
from firmware.boards.sim import scenario as scenario_mod

EXIT_DEEP_SLEEP = 100
EXIT_RESET = 101
EXIT_WATCHDOG = 102


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write_json(path, value):
    with open(path, "w") as f:
        f.write(json.dumps(value))


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class Board:
    name = "sim"
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, state_dir=None):
        self.state = state_dir or os.getenv("SIM_STATE") or ".sim"
        try:
            os.mkdir(self.state)
        except OSError:
            pass
        self.settings = _read_json(self._p("board.json"), {})
        self.speed = float(self.settings.get("speed", 1))
        self.pins = dict(PINS)
        self.flash_writes = 0
        self.flash_bytes = 0
        self.radio_ms = 0  # board time spent waiting on the LoRa radio (TX and RX windows)
        self._cut_after = self.settings.get("power_cut_after_bytes")
        self._wdt = None
        self._irq_pins = []
        self.outputs = {}
        self._control = None
        self._observer = None
        self._boot()
        # the interpreter ending on its own (main.py returned, the REPL quit) is the sim's soft
        # reset: the next start keeps RTC memory, as a Ctrl-D at an ESP32's REPL does
        self._exiting = False
        sys.atexit(self._soft_exit)
        self.scenario = scenario_mod.load(self._p("scenario.json"), self._p("signals.json"))
        self._open_sockets()

    def _p(self, name):
        return self.state + "/" + name

    # -- start-up: which reset is this, and what time is it? ---------------------------------
    def _boot(self):
        boot = _read_json(self._p("boot.json"), None)
        last = _read_json(self._p("exit.json"), None)
        _remove(self._p("boot.json"))
        _remove(self._p("exit.json"))
        self._wake = "none"
        if boot is not None:
            cause = boot.get("reset_cause", "power_on")
            epoch_ms = boot.get("epoch_ms")
            self._wake = boot.get("wake_reason", "none")
        elif last is not None:
            reason = last.get("reason")
            epoch_ms = last.get("epoch_ms")
            causes = {"deep_sleep": "deep_sleep", "watchdog": "watchdog", "soft": "soft"}
            cause = causes.get(reason, "hard")
            if reason == "deep_sleep":
                epoch_ms, self._wake = self._wake_time(last)
        else:
            cause = "power_on"
            epoch_ms = None
        if epoch_ms is None:
            # after a power cut the clock file says how far virtual time had got; a scripted
            # board.json "epoch_s" replaces the wall clock so runs are reproducible
            start = self.settings.get("epoch_s")
            start_ms = int(start * 1000) if start else int(time.time() * 1000)
            epoch_ms = max(start_ms, _read_json(self._p("clock"), 0))
        self._cause = cause
        self._clock_saved = 0
        self._epoch0 = int(epoch_ms)
        self._t0 = time.ticks_ms()
        if cause == "power_on":
            _remove(self._p("rtc.bin"))
            _write_json(self._p("power_on"), self._epoch0)
        self._power_on_ms = _read_json(self._p("power_on"), self._epoch0)

    def _wake_time(self, last):
        wake_ms = last.get("wake_epoch_ms")
        sc = scenario_mod.load(self._p("scenario.json"), self._p("signals.json"))
        start_ms = last.get("epoch_ms")
        for pin_level in last.get("wake_pins", ()):
            at = scenario_mod.first_level(sc, str(pin_level[0]), pin_level[1], start_ms, wake_ms)
            if at is not None and (wake_ms is None or at < wake_ms):
                return at, "pin"
        if wake_ms is None:
            return start_ms, "none"
        return wake_ms, "timer"

    def _open_sockets(self):
        port = self.settings.get("control_port")
        if port:
            import socket

            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
                s.setblocking(False)
                self._control = s
            except OSError:
                # a second Board in the same life (REPL code calling boards.load() again,
                # e.g. app.leave_safe_mode()): the first one keeps the control socket
                s.close()
        obs = self.settings.get("observer")
        if obs:
            import socket

            self._observer = (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
                socket.getaddrinfo(obs[0], obs[1])[0][-1],
            )

    # -- time --------------------------------------------------------------------------------
    def epoch_ms(self):
        return self._epoch0 + int(time.ticks_diff(time.ticks_ms(), self._t0) * self.speed)

    def ticks_ms(self):
        # the virtual epoch in ms never wraps within the unix port's 2**62 ticks period
        return self.epoch_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, t, ms):
        return time.ticks_add(t, ms)

    def sleep_ms(self, ms):
        end = self.epoch_ms() + ms
        while True:
            self.service()
            left = end - self.epoch_ms()
            if left <= 0:
                return
            self._check_watchdog()
            self.wait_real(min(left, 20 * self.speed))

    def light_sleep_ms(self, ms):
        self.sleep_ms(ms)

    def sleep_us(self, us):
        time.sleep_us(max(0, int(us / self.speed)))

    def wait_real(self, virtual_ms):
        time.sleep_ms(max(0, int(virtual_ms / self.speed)))

    def time(self):
        return self.epoch_ms() // 1000

    def set_time(self, epoch_s):
        self._epoch0 += epoch_s * 1000 - self.epoch_ms()

    # -- identity, resets, sleep -------------------------------------------------------------
    def unique_id(self):
        uid = self.settings.get("unique_id")
        return bytes.fromhex(uid) if uid else b"\x5e\x00\x00\x00\x00\x01"

    def reset_cause(self):
        return self._cause

    def wake_reason(self):
        return self._wake if self._cause == "deep_sleep" else "none"

    def rtc_read(self):
        try:
            with open(self._p("rtc.bin"), "rb") as f:
                return f.read()
        except OSError:
            return b""

    def rtc_write(self, data):
        if len(data) > RTC_USER_SIZE:
            raise ValueError("rtc memory: %d bytes" % len(data))
        with open(self._p("rtc.bin"), "wb") as f:
            f.write(data)
        # virtual time so far, for the power-on after a cut (no exit file then); not on every
        # write: this is sim overhead the bench would count as the node's own work
        now = self.epoch_ms()
        if now - self._clock_saved >= 1000:
            self._clock_saved = now
            _write_json(self._p("clock"), now)

    def wake_on_pin(self, pin, level):
        self._wake_pins = getattr(self, "_wake_pins", [])
        self._wake_pins.append([pin, level])

    def _soft_exit(self):
        if not self._exiting:
            _write_json(self._p("exit.json"), {"reason": "soft", "epoch_ms": self.epoch_ms()})
            _write_json(self._p("clock"), self.epoch_ms())

    def _exit(self, code, reason, wake_ms=None):
        self._exiting = True
        now = self.epoch_ms()
        _write_json(
            self._p("exit.json"),
            {
                "reason": reason,
                "epoch_ms": now,
                "wake_epoch_ms": wake_ms,
                "wake_pins": getattr(self, "_wake_pins", []),
                "flash_writes": self.flash_writes,
                "flash_bytes": self.flash_bytes,
                "radio_ms": self.radio_ms,
            },
        )
        _write_json(self._p("clock"), now)
        sys.exit(code)

    def deep_sleep(self, ms):
        self._exit(EXIT_DEEP_SLEEP, "deep_sleep", self.epoch_ms() + int(ms))

    def reset(self):
        self._exit(EXIT_RESET, "reset")

    def power_cut(self):
        """Die as a power loss does: no exit file, no flush, SIGKILL from outside."""
        with open("/proc/self/stat") as f:
            pid = f.read().split()[0]
        os.system("kill -9 " + pid)
        while True:
            time.sleep_ms(1000)

    def watchdog(self, timeout_ms):
        self._wdt = [timeout_ms, self.epoch_ms()]
        wdt = parts.Watchdog(self)
        wdt.feed()
        return wdt

    def _check_watchdog(self):
        if self._wdt and self.epoch_ms() - self._wdt[1] > self._wdt[0]:
            self._exit(EXIT_WATCHDOG, "watchdog")

    # -- flash -------------------------------------------------------------------------------
    def path(self, name):
        return name

    def open(self, name, mode="rb"):
        f = open(name, mode)  # noqa: SIM115 - the caller owns (and closes) the file
        if "w" in mode or "a" in mode or "+" in mode:
            return parts.FlashFile(self, f)
        return f

    def _flash_write(self, f, data):
        self.flash_writes += 1
        if self._cut_after is not None:
            if len(data) >= self._cut_after:
                f.write(data[: self._cut_after])
                # one cut per setting: the next boot must not die at the same byte again
                self.settings.pop("power_cut_after_bytes")
                _write_json(self._p("board.json"), self.settings)
                self.power_cut()
            self._cut_after -= len(data)
        self.flash_bytes += len(data)
        return f.write(data)

    # -- scripted inputs, outputs, control socket --------------------------------------------
    def signals(self):
        return self.scenario.at(self.epoch_ms() / 1000)

    def service(self):
        """Background work a real chip does in hardware: read the control socket and fire pin
        interrupts. The runtime calls it from its main loop (a no-op on the ESP32)."""
        if self._control is not None:
            while True:
                try:
                    data, addr = self._control.recvfrom(1024)
                except OSError:
                    break
                self._on_control(data, addr)
        if self._irq_pins:
            for p in self._irq_pins:
                p.check()

    def _on_control(self, data, addr):
        sock = self._control
        try:
            msg = json.loads(data)
        except ValueError:
            return
        now_s = self.epoch_ms() / 1000
        changes = msg.get("set") or {}
        for pin in msg.get("add_pulses") or {}:
            key = "pulses:" + pin
            changes[key] = self.signals().get(key, 0) + msg["add_pulses"][pin]
        if changes:
            self.scenario.add(now_s, changes)
            kept = _read_json(self._p("signals.json"), [])
            kept.append([now_s, changes])
            _write_json(self._p("signals.json"), kept)
        if msg.get("get") == "outputs":
            reply = {"outputs": self.outputs, "epoch_ms": self.epoch_ms()}
            if sock is not None:
                sock.sendto(json.dumps(reply).encode(), addr)

    def output(self, key, value):
        self.outputs[key] = value
        if self._observer is not None:
            msg = {"key": key, "value": value, "epoch_ms": self.epoch_ms()}
            try:
                self._observer[0].sendto(json.dumps(msg).encode(), self._observer[1])
            except OSError:
                pass

    def pin(self, id, mode="in", pull=None, value=None):
        return parts.Pin(self, id, mode, pull, value)

    def adc(self, pin):
        return parts.ADC(self, pin)

    def pwm(self, pin, freq=1000, duty_u16=0):
        return parts.PWM(self, pin, freq, duty_u16)

    def time_pulse_us(self, pin, level, timeout_us=1000000):
        mm = self.signals().get("range_mm")
        if mm is None:
            return -1
        # sound at about 343 m/s = 0.343 mm/us, there and back
        us = int(mm * 2 / 0.343)
        return us if us <= timeout_us else -1

    def pulse_counter(self, pin):
        return parts.PulseCounter(self, str(pin))

    def i2c(self, bus=0, scl=None, sda=None, freq=400000):
        return devices.SimI2C({devices.QMC5883L.ADDR: devices.QMC5883L(self.signals)})

    def spi(self, bus=1, sck=None, mosi=None, miso=None, baudrate=8000000):
        return devices.SimSPI()

    def uart(self, bus, tx=None, rx=None, baudrate=9600, timeout_ms=0):
        kinds = self.settings.get("uart_devices") or {"2": "a02yyuw", "1": "ld2410"}
        models = {"a02yyuw": devices.A02YYUW, "ld2410": devices.LD2410}
        model = models.get(str(kinds.get(str(bus))))
        return devices.SimUART(model(self.signals) if model else None, self.epoch_ms, self.service)

    # -- networks (sim/net.py) ---------------------------------------------------------------
    def wlan_connect(self, ssid, password, timeout_ms=10000):
        from firmware.boards.sim import net

        return net.wlan_connect(self, ssid, password, timeout_ms)

    def wlan_rssi(self):
        return self.signals().get("wifi_rssi", -60)

    def wlan_off(self):
        pass

    def udp(self, port=0):
        from firmware.boards.sim import net

        return net.UDP(self, port)

    def lora(self, **settings):
        from firmware.boards.sim import radio

        return radio.SimRadio(self, **settings)

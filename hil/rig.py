"""Rigs and devices under test. The same test drives either rig through one DUT interface:

    dut.flash()                          the application, compiled by mpy-cross, over mpremote
    dut.provision(kind, link, ...)       keys, config and gateway registration (city-node's)
    dut.reset(), dut.power(on), dut.power_cut()
    dut.console.wait_for(r"node: boot"), dut.exec("print(1)")
    dut.pulses(n), dut.probe(wet), dut.presence(), dut.magnet(field), dut.range_mm(mm)
    dut.lamp_duty(), dut.wait_lamp(lambda duty: duty > 0.9)
    rig.gateway.readings(node_id), rig.gateway.web().node_page(node_id), rig.mqtt.for_node(...)

- SimRig: virtual boards (hil/simserial.py: the MicroPython unix port on firmware/boards/sim,
  reached by mpremote at socket://127.0.0.1:PORT), the simulated LoRa medium (hil/medium.py),
  a real gateway process, and mosquitto when it is installed. Any number of DUTs.
- SerialRig: one ESP32 on USB serial, stimuli from the Pi's GPIO (hil/gpio.py), the gateway
  running on the Pi with the real links (WiFi, the RFM95). rig.toml says how it is wired.

What a rig cannot do raises `Unsupported` with the reason; the pytest plugin turns it into a
skip naming the rig (a stimulus the serial rig has no wire for, a byte-exact power cut only
the sim board can place).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hil.gateway import (
    ROOT,
    GatewayProcess,
    GatewaySettings,
    Mosquitto,
    MQTTWatch,
    RigError,
    wait_until,
)
from hil.gpio import PiStimuli
from hil.ready import ready_line
from hil.rigconfig import RigConfig
from tools import image as app_image
from tools.flash import FlashResult, copy_application, write_micropython
from tools.node import NodeConnection
from tools.provision import GatewaySide, NodeSpec, Outcome, Provisioner

WIFI = ("hil-rig", "hil-rig-password")
METER_PIN, PROBE_PIN, BATTERY_PIN, PIR_PIN, LAMP_PIN, TILT_PIN, TEMP_PIN = 34, 35, 36, 39, 25, 4, 39
PROBE_DRY_UV, PROBE_WET_UV = 3_000_000, 200_000
BATTERY_UV = 1_600_000  # 3.2 V through the 1:2 divider
LAMP_FULL = 65535


class Unsupported(Exception):
    """This rig cannot do that (the message says why): the test is skipped, not failed."""


def ntc_uv(c_x10: int) -> int:
    hw = importlib.import_module("firmware.node.hw")
    return int(hw.ntc_uv(c_x10))


def resting_signals(kind: str) -> dict[str, Any]:
    """The sim board's inputs at rest for a node kind: nothing happening, battery healthy."""
    base: dict[str, Any] = {f"adc:{BATTERY_PIN}": BATTERY_UV}
    if kind == "leak":
        base.update({f"pulse_rate:{METER_PIN}": 0, f"adc:{PROBE_PIN}": PROBE_DRY_UV})
    elif kind == "occupancy":
        base["mag"] = [1200, -340, 5000]
    elif kind == "lighting":
        base[f"pin:{PIR_PIN}"] = 0
    elif kind == "binfill":
        base.update({"range_mm": 900, f"adc:{TEMP_PIN}": ntc_uv(200), f"pin:{TILT_PIN}": 0})
    return base


# -- the console ---------------------------------------------------------------------------------
class Console:
    """Everything the node printed; positions are offsets into it."""

    def text(self) -> str:
        raise NotImplementedError

    def mark(self) -> int:
        return len(self.text())

    def since(self, mark: int) -> str:
        return self.text()[mark:]

    def wait_for(self, pattern: str, timeout: float = 30.0, since: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return regex.search(self.text(), since)

        try:
            match: re.Match[str] = wait_until(found, timeout, f"console /{pattern}/")
        except AssertionError:
            raise AssertionError(
                f"console never showed /{pattern}/ in {timeout:g} s; it ends with:\n"
                + self.text()[-1500:]
            ) from None
        return match

    def count(self, pattern: str, since: int = 0) -> int:
        return len(re.findall(pattern, self.text()[since:]))


class FileConsole(Console):
    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        except OSError:
            return ""


class SerialConsole(Console):
    """A reader thread on the DUT's port, paused while mpremote holds the port."""

    def __init__(self, port: str) -> None:
        self.port = port
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._released = threading.Event()
        self.reading = threading.Event()  # the port is open and being read
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import serial  # noqa: PLC0415

        while not self._stop.is_set():
            if self._paused.is_set():
                self.reading.clear()
                self._released.set()
                time.sleep(0.05)
                continue
            try:
                with serial.Serial(self.port, 115200, timeout=0.1, exclusive=True) as port:
                    self._released.clear()
                    self.reading.set()
                    while not self._paused.is_set() and not self._stop.is_set():
                        data = port.read(4096)
                        if data:
                            with self._lock:
                                self._buffer += data
            except (serial.SerialException, OSError):
                time.sleep(0.2)  # unplugged, or the DUT unpowered and its bridge gone
        self._released.set()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused.set()
        self._released.wait(2)
        try:
            yield
        finally:
            self._paused.clear()

    def text(self) -> str:
        with self._lock:
            return self._buffer.decode("utf-8", "replace").replace("\r\n", "\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


# -- DUTs ---------------------------------------------------------------------------------------
class DUT:
    """A node under test. Subclasses supply the hardware side."""

    rig: Rig
    node_id: str
    console: Console
    kind: str = ""  # what it was last provisioned as

    @property
    def port(self) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def _holding_port(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def connect(self, wait_s: float = 10.0) -> Iterator[NodeConnection]:
        with self._holding_port(), NodeConnection.open(self.port, wait_s) as node:
            yield node

    def exec(self, code: str, wait_s: float = 10.0) -> str:
        with self.connect(wait_s) as node:
            return node.exec(code)

    def flash(self, force: bool = False) -> FlashResult:
        """The application over mpremote (MicroPython itself: `flash_micropython`)."""
        image = self.rig.image()
        with self._holding_port(), NodeConnection.open(self.port, 10.0) as node:
            result = copy_application(node, image, force)
            node.reset()
        return result

    def spec(self, kind: str, link: str = "coap", **options: Any) -> NodeSpec:
        host, port = self.rig.gateway_address()
        fields: dict[str, Any] = {
            "node_id": self.node_id,
            "kind": kind,
            "link": link,
            "location": options.pop("location", f"{self.rig.name} rig"),
            "wifi_ssid": self.rig.wifi[0],
            "wifi_password": self.rig.wifi[1],
            "gateway_host": host,
            "gateway_port": port,
        }
        fields.update(options)
        return NodeSpec(**fields)

    def provision(
        self,
        kind: str,
        link: str = "coap",
        *,
        replace: bool = False,
        checkpoint: Callable[[str], None] | None = None,
        **options: Any,
    ) -> Outcome:
        """city-node provision against the rig's gateway; the node restarts with it."""
        spec = self.spec(kind, link, **options)
        provisioner = Provisioner(
            self.port,
            GatewaySide(self.rig.gateway_config()),
            wait_s=10.0,
            replace=replace,
            checkpoint=checkpoint or (lambda _step: None),
            say=lambda _line: None,
        )
        with self._holding_port():
            outcome = provisioner.run(spec)
        self.kind = kind
        self.rig.gateway.reload_keys()
        return outcome

    def deploy(self, kind: str, link: str = "coap", **options: Any) -> Outcome:
        """Flash (when the node lacks this image) and provision: a node ready to report."""
        self.flash()
        return self.provision(kind, link, **options)

    # -- hardware: each rig implements what it can --------------------------------------------
    def reset(self) -> None:
        raise Unsupported(f"{self.rig.name} rig: no reset line")

    def power(self, on: bool) -> None:
        raise Unsupported(f"{self.rig.name} rig: no power switch")

    def power_cut(self, off_s: float = 0.5) -> None:
        self.power(False)
        time.sleep(off_s)
        self.power(True)

    def power_cut_during_flash_write(self, after_bytes: int) -> None:
        raise Unsupported(f"{self.rig.name} rig: a power cut placed at a flash byte needs the sim")

    def pulses(self, count: int, rate_hz: float = 20.0) -> None:
        raise Unsupported(f"{self.rig.name} rig: no meter input wired")

    def probe(self, wet: bool) -> None:
        raise Unsupported(f"{self.rig.name} rig: no leak probe wired")

    def presence(self) -> float:
        raise Unsupported(f"{self.rig.name} rig: no PIR input wired")

    def magnet(self, field: list[int]) -> None:
        raise Unsupported(f"{self.rig.name} rig: the magnetometer cannot be driven")

    def range_mm(self, mm: int | None) -> None:
        raise Unsupported(f"{self.rig.name} rig: no ranger wired")

    def temperature(self, c_x10: int) -> None:
        raise Unsupported(f"{self.rig.name} rig: no temperature input wired")

    def lamp_duty(self) -> float:
        raise Unsupported(f"{self.rig.name} rig: the lamp output is not read back")

    def wait_lamp(
        self, predicate: Callable[[float], bool], timeout: float = 5.0, what: str = "the lamp"
    ) -> float:
        """Wait until the lamp's duty (0..1) satisfies `predicate`; the wall time it did."""

        def check() -> float | None:
            return time.time() if predicate(self.lamp_duty()) else None

        result: float = wait_until(check, timeout, what, interval=0.01)
        return result

    def close(self) -> None:
        pass


class SimDUT(DUT):
    """A virtual board behind hil.simserial; its folder is its flash."""

    def __init__(self, rig: SimRig, node_id: str, folder: Path, uid: int) -> None:
        self.rig = rig
        self.node_id = node_id
        self.folder = folder
        self.sim = folder / ".sim"
        self.sim.mkdir(parents=True, exist_ok=True)
        self.uid = uid
        self.proc: subprocess.Popen[str] | None = None
        self.serial_port = 0
        self.control_port = 0
        self.console = FileConsole(self.sim / "console.log")

    # -- the board's files ---------------------------------------------------------------------
    def _read(self, name: str) -> Any:
        path = self.folder / name
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _write(self, name: str, value: Any) -> None:
        path = self.folder / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)

    def board(self, **settings: Any) -> None:
        current = self._read(".sim/board.json") or {}
        current.update(settings)
        self._write(".sim/board.json", current)

    def scenario(self, signals: dict[str, Any], timeline: list[Any] | None = None) -> None:
        data: dict[str, Any] = {"signals": signals}
        if timeline:
            data["timeline"] = timeline
        self._write(".sim/scenario.json", data)

    def preflash(self) -> None:
        """What `flash()` leaves on the node, put into its folder directly (a factory image):
        the flash path itself is exercised by its own scenario."""
        app_image.install_local(self.rig.image(), self.folder)

    # -- the supervisor --------------------------------------------------------------------------
    @property
    def port(self) -> str:
        return f"socket://127.0.0.1:{self.serial_port}"

    def start(self, powered: bool = True, heapsize: str | None = None) -> None:
        argv = [sys.executable, "-m", "hil.simserial", str(self.folder), "--max-sleep", "0.2"]
        if not powered:
            argv.append("--off")
        if heapsize:
            argv += ["--heapsize", heapsize]
        with (self.sim / "supervisor.log").open("a") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        line = ready_line(self.proc.stdout, 30)
        if not line.startswith("READY"):
            self.close()
            raise RigError(f"the sim board did not start: {line}")
        _, serial_port, control_port = line.split()
        self.serial_port, self.control_port = int(serial_port), int(control_port)

    def control(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(json.dumps({"op": op, **fields}).encode(), ("127.0.0.1", self.control_port))
            reply: dict[str, Any] = json.loads(s.recv(65536))
        if not reply.get("ok", False):
            raise RigError(f"sim board refused {op}: {reply.get('error')}")
        return reply

    def state(self) -> dict[str, Any]:
        return self.control("state")

    def lives(self) -> int:
        return int(self.state()["lives"])

    def exits(self) -> list[str]:
        return list(self.state()["exits"])

    def wait_lives(self, n: int, timeout: float = 60.0) -> None:
        wait_until(lambda: self.lives() >= n, timeout, f"{self.node_id} to live {n} times", 0.1)

    def signals(self, **changes: Any) -> dict[str, Any]:
        return self.control("signals", set=changes)

    def exit_info(self) -> dict[str, Any] | None:
        value = self._read(".sim/exit.json")
        return value if isinstance(value, dict) else None

    # -- hardware --------------------------------------------------------------------------------
    def reset(self) -> None:
        self.control("reset")

    def power(self, on: bool) -> None:
        self.control("power", on=on)

    def power_cut_during_flash_write(self, after_bytes: int) -> None:
        """Arm the board: the process dies (SIGKILL) after this many more flash bytes."""
        self.board(power_cut_after_bytes=after_bytes)

    def pulses(self, count: int, rate_hz: float = 20.0) -> None:
        self.control("signals", add_pulses={str(METER_PIN): count})

    def probe(self, wet: bool) -> None:
        self.signals(**{f"adc:{PROBE_PIN}": PROBE_WET_UV if wet else PROBE_DRY_UV})

    def presence(self) -> float:
        """A PIR pulse; returns the wall time of its rising edge."""
        at = time.time()
        self.signals(**{f"pin:{PIR_PIN}": 1})
        time.sleep(0.05)
        self.signals(**{f"pin:{PIR_PIN}": 0})
        return at

    def magnet(self, field: list[int]) -> None:
        self.signals(mag=field)

    def range_mm(self, mm: int | None) -> None:
        self.signals(range_mm=mm)

    def temperature(self, c_x10: int) -> None:
        self.signals(**{f"adc:{TEMP_PIN}": ntc_uv(c_x10)})

    def outputs(self) -> list[dict[str, Any]]:
        events = []
        with contextlib.suppress(OSError):
            for line in (self.sim / "outputs.log").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    def lamp_events(self) -> list[tuple[float, float]]:
        """(wall time, duty 0..1) of every change of the lamp's PWM."""
        key = f"pwm:{LAMP_PIN}"
        return [(e["t"], e["value"] / LAMP_FULL) for e in self.outputs() if e.get("key") == key]

    def lamp_duty(self) -> float:
        events = self.lamp_events()
        return events[-1][1] if events else 0.0

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


class SerialDUT(DUT):
    """The ESP32 on the rig's USB serial port."""

    def __init__(self, rig: SerialRig, config: RigConfig) -> None:
        self.rig = rig
        self.config = config
        self.node_id = config.node_id
        self.stimuli = PiStimuli(config.gpio, config.ranger_uart)
        self.serial_console = SerialConsole(config.port)
        self.console = self.serial_console

    @property
    def port(self) -> str:
        return self.config.port

    @contextlib.contextmanager
    def _holding_port(self) -> Iterator[None]:
        with self.serial_console.paused():
            yield

    def flash_micropython(self) -> None:
        if self.config.micropython_image is None:
            raise Unsupported("rig.toml dut.micropython_image is not set")
        with self._holding_port():
            write_micropython(self.port, self.config.micropython_image, self.config.chip)
        time.sleep(self.config.boot_s)

    def _wired(self, role: str) -> None:
        if not self.stimuli.wired(role):
            raise Unsupported(f"serial rig: rig.toml [gpio] has no '{role}' pin")

    def reset(self) -> None:
        if self.stimuli.wired("en"):
            self.stimuli.reset()
        else:
            self.power_cut(0.5)

    def power(self, on: bool) -> None:
        self._wired("power_relay")
        self.stimuli.power(on)
        if on:
            time.sleep(self.config.boot_s)

    def pulses(self, count: int, rate_hz: float = 20.0) -> None:
        self._wired("meter")
        self.stimuli.pulses(count, rate_hz)

    def probe(self, wet: bool) -> None:
        self._wired("probe")
        self.stimuli.probe(wet)

    def presence(self) -> float:
        self._wired("pir")
        at = time.time()
        self.stimuli.pir(True)
        time.sleep(0.05)
        self.stimuli.pir(False)
        return at

    def range_mm(self, mm: int | None) -> None:
        if self.config.ranger_uart is None:
            raise Unsupported("serial rig: rig.toml [gpio] has no 'ranger_uart'")
        self.stimuli.range_mm(mm)

    def lamp_duty(self) -> float:
        self._wired("lamp")
        return self.stimuli.lamp_duty()

    def close(self) -> None:
        self.serial_console.close()
        self.stimuli.close()


# -- rigs ---------------------------------------------------------------------------------------
class Rig:
    name = "rig"
    hardware = False
    wifi: tuple[str, str] = WIFI

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mqtt: MQTTWatch | None = None
        self._broker: Mosquitto | None = None
        self._image: app_image.Image | None = None
        self.gateway = self._make_gateway()
        self.duts: list[DUT] = []

    def _make_gateway(self) -> GatewayProcess:
        raise NotImplementedError

    def image(self) -> app_image.Image:
        if self._image is None:
            self._image = app_image.build()
        return self._image

    def gateway_config(self) -> Any:
        from gateway.config import load  # noqa: PLC0415

        return load(self.gateway.config_path)

    def gateway_address(self) -> tuple[str, int]:
        raise NotImplementedError

    def with_mqtt(self) -> MQTTWatch:
        """A broker for the gateway's MQTT sink and a subscriber on it (before the gateway
        starts); Unsupported when mosquitto is not installed."""
        if self.mqtt is not None:
            return self.mqtt
        if not Path(shutil.which("mosquitto") or "/usr/sbin/mosquitto").exists():
            raise Unsupported("mosquitto is not installed (make test installs it)")
        broker = Mosquitto(self.workdir / "mosquitto")
        broker.start()
        self._broker = broker
        self.gateway.settings.mqtt_port = broker.port
        self.gateway.write_config()
        self.mqtt = MQTTWatch(broker.port)
        self.mqtt.start()
        return self.mqtt

    def close(self) -> None:
        for dut in self.duts:
            dut.close()
        self.gateway.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self._broker is not None:
            self._broker.stop()


class SimRig(Rig):
    name = "sim"

    def __init__(self, workdir: Path, image: app_image.Image | None = None) -> None:
        self.medium_proc: subprocess.Popen[str] | None = None
        self.medium_port = 0
        self._uids = 0
        super().__init__(workdir)
        self._image = image

    def _make_gateway(self) -> GatewayProcess:
        return GatewayProcess(self.workdir / "gateway", GatewaySettings())

    def gateway_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.gateway.settings.coap_port

    def with_medium(self, time_scale: float = 1.0, gateway_at: tuple[float, float] = (0, 0)) -> int:
        """The simulated LoRa medium, and the gateway's LoRa link on it (before it starts)."""
        if self.medium_proc is None:
            argv = [sys.executable, "-m", "hil.medium", "--port", "0"]
            argv += ["--time-scale", str(time_scale), "--stats", str(self.workdir / "medium.json")]
            self.medium_proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self.medium_proc.stdout is not None
            line = self.medium_proc.stdout.readline()
            if not line.startswith("READY"):
                raise RigError(f"the radio medium did not start: {line}")
            self.medium_port = int(line.split()[1])
            self.gateway.settings.lora_mode = "sim"
            self.gateway.settings.medium = ("127.0.0.1", self.medium_port)
            self.gateway.settings.lora_position = (float(gateway_at[0]), float(gateway_at[1]))
            self.gateway.write_config()
        return self.medium_port

    def medium_stats(self) -> dict[str, Any]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b'{"op": "stats"}', ("127.0.0.1", self.medium_port))
            data, _ = s.recvfrom(1 << 20)
        result: dict[str, Any] = json.loads(data)
        return result

    def dut(
        self,
        node_id: str,
        *,
        kind: str | None = None,
        preflash: bool = True,
        start: bool = True,
        speed: float = 20.0,
        position: tuple[float, float] = (100.0, 0.0),
        **board: Any,
    ) -> SimDUT:
        """A new virtual board: its folder, its "hardware" (board.json, resting sensors for
        `kind`), optionally the application already in flash, and its supervisor running."""
        self._uids += 1
        folder = self.workdir / "nodes" / node_id
        dut = SimDUT(self, node_id, folder, self._uids)
        settings: dict[str, Any] = {
            "speed": speed,
            "unique_id": f"5e00000000{self._uids:02x}",
            "position": list(position),
            "wlan": {"ssid": WIFI[0], "password": WIFI[1]},
        }
        if self.medium_port:
            settings["medium"] = ["127.0.0.1", self.medium_port]
        settings.update(board)
        dut.board(**settings)
        dut.scenario(resting_signals(kind) if kind else {f"adc:{BATTERY_PIN}": BATTERY_UV})
        if preflash:
            dut.preflash()
        self.duts.append(dut)
        if start:
            dut.start()
        return dut

    def close(self) -> None:
        super().close()
        if self.medium_proc is not None:
            if self.medium_proc.poll() is None:
                self.medium_proc.send_signal(signal.SIGTERM)
                try:
                    self.medium_proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.medium_proc.kill()
                    self.medium_proc.wait()
            if self.medium_proc.stdout is not None:
                self.medium_proc.stdout.close()
            self.medium_proc = None


class SerialRig(Rig):
    name = "serial"
    hardware = True

    def __init__(self, workdir: Path, config: RigConfig) -> None:
        self.config = config
        super().__init__(workdir)
        self.wifi = (config.wifi_ssid, config.wifi_password)

    def _make_gateway(self) -> GatewayProcess:
        c = self.config
        settings = GatewaySettings(
            coap_bind=c.coap_bind, coap_port=c.coap_port, lora_mode=c.lora_mode, lora_sf=c.lora_sf
        )
        return GatewayProcess(self.workdir / "gateway", settings)

    def gateway_address(self) -> tuple[str, int]:
        if not self.config.gateway_host:
            raise RigError("rig.toml network.gateway_host: the Pi's address as the DUT sees it")
        return self.config.gateway_host, self.config.coap_port

    def dut(self, node_id: str | None = None, **_ignored: Any) -> SerialDUT:
        if self.duts:
            raise Unsupported("the serial rig has one DUT")
        dut = SerialDUT(self, self.config)
        if node_id is not None:
            dut.node_id = node_id
        self.duts.append(dut)
        return dut

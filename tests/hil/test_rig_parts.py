"""The rig's own parts that do not need a board: rig.toml, the Pi's stimuli through Blinka
(its OS-agnostic board, simulated pins), the ranger's UART frames, the serial console reader
on a pty, and the pytest plugin's skips on each rig."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from hil.gateway import ROOT, wait_until
from hil.gpio import PiStimuli, a02yyuw_frame
from hil.rig import SerialConsole
from hil.rigconfig import GPIOPins, RigConfigError, load

EXAMPLE = ROOT / "rig.example.toml"


def test_the_example_rig_config_loads(tmp_path: Path) -> None:
    config = load(EXAMPLE)
    assert config.port == "/dev/ttyUSB0"
    assert config.gpio.meter == "D17" and config.gpio.lamp == "D23"
    assert config.gpio.relay_active_high is True
    assert config.gateway_host == "192.168.50.1"
    assert config.lora_mode == "off"
    assert config.micropython_image is None
    assert load(EXAMPLE, port="/dev/ttyACM0").port == "/dev/ttyACM0"
    bad = tmp_path / "rig.toml"
    bad.write_text('[dut]\nport = "/dev/ttyUSB0"\n[gpio]\nmeter = 17\n')
    with pytest.raises(RigConfigError, match=r"gpio\.meter: expected str, got 17"):
        load(bad)
    bad.write_text('[dut]\nport = "/dev/ttyUSB0"\n[lora]\nmode = "sx1262"\n')
    with pytest.raises(RigConfigError, match=r"lora\.mode: 'off' or 'rfm9x'"):
        load(bad)
    bad.write_text("[dut]\n")
    with pytest.raises(RigConfigError, match=r"needs --port or dut\.port"):
        load(bad)


def test_a02yyuw_frames_are_the_sensors_bytes() -> None:
    # FF, distance high byte, low byte, low byte of the sum of the three (datasheet)
    assert a02yyuw_frame(250) == bytes.fromhex("ff00faf9")
    assert a02yyuw_frame(1000) == bytes.fromhex("ff03e8ea")


BLINKA_SCRIPT = """
import json, sys
from hil.gpio import PiStimuli
from hil.rigconfig import GPIOPins
role, lamp = sys.argv[1], sys.argv[2]
# the OS-agnostic board has one output pin (Dx_OUTPUT): one role on it per run
wired = dict(meter=None, probe=None, pir=None, power_relay=None)
wired[role] = "Dx_OUTPUT"
pins = GPIOPins(lamp=lamp, relay_active_high=False, en=None, **wired)
rig = PiStimuli(pins)
if role == "meter":
    rig.pulses(3, rate_hz=200)
elif role == "probe":
    rig.probe(True)
elif role == "power_relay":
    rig.power(True)
# the agnostic output pin reads back a fixed True: what was written is its current_value
out = {"level": rig._io[role]._pin.current_value, "duty": rig.lamp_duty(0.05)}
try:
    rig.pir(True) if role != "pir" else rig.reset()
except LookupError as e:
    out["unwired"] = str(e)
rig.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    ("role", "lamp_pin", "level", "duty"),
    [
        ("meter", "Dx_INPUT_TRUE", False, 1.0),  # each pulse ends low
        ("probe", "Dx_INPUT_FALSE", True, 0.0),  # driven: the transistor pulls the probe low
        ("power_relay", "Dx_INPUT_TRUE", False, 1.0),  # an active-low relay module: "on" = low
    ],
)
def test_pi_stimuli_drive_blinka_pins(role: str, lamp_pin: str, level: bool, duty: float) -> None:
    env = dict(os.environ, BLINKA_OS_AGNOSTIC="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", BLINKA_SCRIPT, role, lamp_pin],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["level"] == int(level)
    assert out["duty"] == duty
    assert out["unwired"] == "rig.toml [gpio] has no 'pir' pin: this stimulus is not wired"


def test_the_ranger_uart_streams_frames_until_stopped() -> None:
    master, slave = os.openpty()
    try:
        pins = GPIOPins(None, None, None, None, None, True, None)
        rig = PiStimuli(pins, ranger_uart=os.ttyname(slave))
        rig.range_mm(250)
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 8 and time.monotonic() < deadline:
            got += os.read(master, 64)
        assert got[:8] == a02yyuw_frame(250) * 2
        rig.close()
    finally:
        os.close(master)
        os.close(slave)


def test_the_serial_console_reads_and_lets_go_of_the_port() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    console = SerialConsole(path)
    try:
        assert console.reading.wait(5)
        os.write(master, b"node: boot 1 (power_on), try 1\r\n")
        console.wait_for(r"node: boot 1 \(power_on\)", 5)
        assert "\r" not in console.text()
        with console.paused():
            # while paused the port is free for mpremote (which opens it exclusively)
            held = serial.Serial(path, 115200, exclusive=True, timeout=0)
            held.close()
        assert console.reading.wait(5)
        os.write(master, b"after\r\n")
        wait_until(lambda: "after" in console.text(), 5, "reading again")
    finally:
        console.close()
        os.close(master)
        os.close(slave)


PLUGIN_TESTS = """
import pytest
from hil.rig import Unsupported

@pytest.mark.hardware("needs the relay")
def test_needs_hardware():
    pass

@pytest.mark.sim_only("needs three boards")
def test_needs_the_sim():
    pass

def test_asks_too_much():
    raise Unsupported("serial rig: rig.toml [gpio] has no 'pir' pin")

def test_plain(rig_name, long_run):
    assert (rig_name, long_run) == (EXPECTED, False)
"""


@pytest.mark.parametrize("rig_name", ["sim", "serial"])
def test_the_plugin_skips_with_the_reason(tmp_path: Path, rig_name: str) -> None:
    (tmp_path / "test_dummy.py").write_text(PLUGIN_TESTS.replace("EXPECTED", repr(rig_name)))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hil.plugin", "-rs", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path), "--rig", rig_name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
        check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # each rig runs the plain test and the one meant for it, and skips two with their reason
    assert "2 passed, 2 skipped" in out
    assert "serial rig: rig.toml [gpio] has no 'pir' pin" in out
    if rig_name == "sim":
        assert "sim rig: needs the relay" in out
    else:
        assert "serial rig: needs three boards" in out

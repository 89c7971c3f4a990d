"""The board interface: both boards offer the same names, and the sim board behaves as the
hardware it stands for (scripted sensors through the real drivers, RTC memory, deep sleep and
wake-ups as process restarts, resets, power loss, the watchdog, WiFi)."""

from __future__ import annotations

import ast
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from hil.simboard import SimNode
from tests.firmware.node_support import ROOT, free_port, run_mpy

EPOCH = 1_700_000_000
INTERFACE = {
    "ticks_ms", "ticks_diff", "ticks_add", "sleep_ms", "sleep_us", "light_sleep_ms", "time",
    "set_time",
    "service", "unique_id", "reset_cause", "wake_reason", "rtc_read", "rtc_write",
    "wake_on_pin", "deep_sleep", "reset", "watchdog", "path", "open", "pin", "adc", "pwm",
    "i2c", "spi", "uart", "time_pulse_us", "pulse_counter", "wlan_connect", "wlan_rssi",
    "wlan_off", "udp", "lora",
}  # fmt: skip


def board_methods(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Board":
            return {
                f.name
                for f in node.body
                if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")
            }
    raise AssertionError(f"no Board class in {path}")


def test_both_boards_implement_the_whole_interface() -> None:
    esp32 = board_methods(ROOT / "firmware/boards/esp32/__init__.py")
    sim = board_methods(ROOT / "firmware/boards/sim/board.py")
    assert esp32 >= INTERFACE, INTERFACE - esp32
    assert sim >= INTERFACE, INTERFACE - sim
    # the sim may add test hooks; the ESP32 board has nothing the sim lacks
    assert esp32 <= sim, esp32 - sim


def sim(tmp: Path, body: str, board: dict[str, Any] | None = None, **scenario: Any) -> Any:
    (tmp / ".sim").mkdir(exist_ok=True)
    (tmp / ".sim/board.json").write_text(json.dumps({"epoch_s": EPOCH, **(board or {})}))
    (tmp / ".sim/scenario.json").write_text(json.dumps({"start": EPOCH, **scenario}))
    done = run_mpy("import json\nfrom firmware import boards\nb = boards.load()\n" + body, tmp)
    lines = done.stdout.splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return done  # no JSON printed: the process itself is the answer


def test_scripted_inputs_follow_the_timeline(tmp_path: Path) -> None:
    out = sim(
        tmp_path,
        """
r = []
p = b.pin(39); a = b.adc(36); c = b.pulse_counter(34)
r.append([p.value(), a.read_uv(), a.read_u16(), c.value()])
b.set_time(b.time() + 30)      # jump the clock past the timeline's step at +20 s
r.append([p.value(), a.read_uv(), a.read_u16(), c.value()])
b.set_time(b.time() + 100)
r.append([p.value(), a.read_uv(), a.read_u16(), c.value()])
print(json.dumps(r + [b.pin(4, pull="up").value(), b.pin(4).value()]))
""",
        signals={"pin:39": 0, "adc:36": 1650000, "pulse_rate:34": 2},
        timeline=[[20, {"pin:39": 1, "adc:36": 3300000}], [50, {"pulse_rate:34": 0}]],
    )
    # pulses: 2/s for 50 s, then none; the pin and ADC step at +20 s; unset pins read the pull
    assert out == [[0, 1650000, 32767, 0], [1, 3300000, 65535, 60], [1, 3300000, 65535, 100], 1, 0]


def test_sensors_answer_the_real_drivers_as_their_datasheets_say(tmp_path: Path) -> None:
    out = sim(
        tmp_path,
        """
from firmware.node import hw
errors = []
mag = hw.sensors(b, {}, "occupancy", errors)["mag"]
ranger = hw.sensors(b, {}, "binfill", errors)["ranger"]
radar = hw.sensors(b, {}, "lighting", errors)["radar"]
from firmware.drivers.hcsr04 import HCSR04
echo = HCSR04(b.pin(33, "out"), b.pin(32), b.time_pulse_us)
b.sleep_ms(150)
r = [mag.read(), ranger.read_mm(), radar.poll(), radar.presence, echo.read_mm(), errors,
     b.i2c().scan()]
print(json.dumps(r))
""",
        signals={
            "mag": [1200, -340, 5000],
            "range_mm": 1234,
            "radar": {"state": 2, "static_cm": 180, "static_energy": 70, "detect_cm": 180},
        },
    )
    mag, mm, target, presence, echo_mm, errors, scan = out
    assert mag == [1200, -340, 5000]
    assert mm == 1234
    assert target == {
        "state": 2,
        "moving_cm": 0,
        "moving_energy": 0,
        "static_cm": 180,
        "static_energy": 70,
        "detect_cm": 180,
    }
    assert presence is True
    assert abs(echo_mm - 1234) <= 2
    assert errors == []
    assert scan == [0x0D]


def test_an_absent_or_overflowing_magnetometer_is_reported_not_raised(tmp_path: Path) -> None:
    out = sim(
        tmp_path,
        """
from firmware.node import hw
from firmware.drivers.qmc5883l import QMC5883L
errors = []
missing = hw.sensors(b, {}, "occupancy", errors)
print(json.dumps([sorted(missing), errors]))
""",
    )
    assert out[0] == []
    assert out[1][0].startswith("sensor mag:")
    over = sim(
        tmp_path,
        """
from firmware.drivers.qmc5883l import QMC5883L
m = QMC5883L(b.i2c(), sleep_ms=b.sleep_ms); m.begin()
print(json.dumps([m.read(), m.health()]))
""",
        signals={"mag": [40000, 0, 0]},
    )
    assert over == [None, "overflow"]


def test_deep_sleep_is_an_exit_and_the_restart_keeps_rtc_memory(tmp_path: Path) -> None:
    done = sim(
        tmp_path,
        "b.rtc_write(b'kept'); print(b.reset_cause()); b.deep_sleep(600000)",
    )
    assert done.returncode == 100 and done.stdout.strip() == "power_on"
    exit_info = json.loads((tmp_path / ".sim/exit.json").read_text())
    assert exit_info["reason"] == "deep_sleep"
    assert exit_info["wake_epoch_ms"] - exit_info["epoch_ms"] == 600000
    out = sim(
        tmp_path,
        "print(json.dumps([b.reset_cause(), b.wake_reason(), b.rtc_read().decode(), b.time()]))",
    )
    assert out[:3] == ["deep_sleep", "timer", "kept"]
    assert out[3] == exit_info["wake_epoch_ms"] // 1000  # the RTC clock ran through the sleep


def test_a_pin_wakes_the_node_before_its_timer(tmp_path: Path) -> None:
    scenario = {"signals": {"pin:39": 0}, "timeline": [[300, {"pin:39": 1}]]}
    done = sim(tmp_path, "b.wake_on_pin(39, 1); b.deep_sleep(3600000)", **scenario)
    assert done.returncode == 100
    out = sim(tmp_path, "print(json.dumps([b.wake_reason(), b.time()]))", **scenario)
    assert out == ["pin", EPOCH + 300]


def test_reset_keeps_rtc_memory_and_a_power_cut_loses_it(tmp_path: Path) -> None:
    assert (
        sim(tmp_path, "b.rtc_write(b'x'); b.set_time(b.time() + 500); b.reset()").returncode == 101
    )
    assert sim(tmp_path, "print(json.dumps([b.reset_cause(), b.rtc_read().decode()]))") == [
        "hard",
        "x",
    ]
    cut = sim(tmp_path, "b.rtc_write(b'y'); b.power_cut()")
    assert cut.returncode == -9
    out = sim(tmp_path, "print(json.dumps([b.reset_cause(), b.rtc_read().decode(), b.time()]))")
    # power-on: RTC memory gone, and the clock does not go back to before the cut
    assert out[:2] == ["power_on", ""]
    assert out[2] >= EPOCH + 500


def test_a_starved_watchdog_resets_the_node(tmp_path: Path) -> None:
    fast = {"speed": 10}
    done = sim(
        tmp_path, "w = b.watchdog(1000); w.feed(); b.sleep_ms(1500); print('alive')", board=fast
    )
    assert done.returncode == 102 and "alive" not in done.stdout
    assert sim(tmp_path, "print(json.dumps(b.reset_cause()))", board=fast) == "watchdog"
    fed = sim(
        tmp_path,
        "w = b.watchdog(1000)\nfor _ in range(4):\n    b.sleep_ms(500); w.feed()\nprint('[1]')",
        board=fast,
    )
    assert fed == [1]


def test_rtc_memory_is_2_kb_less_the_boards_own_bytes(tmp_path: Path) -> None:
    out = sim(
        tmp_path,
        "b.rtc_write(bytes(2040))\ntry:\n    b.rtc_write(bytes(2041))\n"
        "except ValueError as e:\n    print(json.dumps(str(e)))",
    )
    assert out == "rtc memory: 2041 bytes"


def test_wifi_follows_the_scenario_and_the_network_is_real_udp(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        port = peer.getsockname()[1]
        out = sim(
            tmp_path,
            f"""
ok = b.wlan_connect("city", "pw", 5000)
bad = b.wlan_connect("other", "pw", 5000)
u = b.udp()
u.sendto(b"hello", ("127.0.0.1", {port}))
print(json.dumps([ok, bad, u.recv(2000)]))
""",
            board={"wlan": {"ssid": "city", "password": "pw"}, "speed": 10},
        )
        data, _ = peer.recvfrom(100)
    assert data == b"hello"
    assert out[:2] == [True, False]
    assert out[2] is None  # nobody answered within 2 s of board time
    down = sim(
        tmp_path,
        "print(json.dumps(b.wlan_connect('city', 'pw', 1000)))",
        signals={"wifi": 0},
        board={"speed": 10},
    )
    assert down is False


def test_the_control_socket_drives_pins_interrupts_and_reports_outputs(tmp_path: Path) -> None:
    port = free_port()
    node = SimNode(tmp_path)
    node.board(epoch_s=EPOCH, control_port=port)
    node.scenario({"start": EPOCH, "signals": {"pin:39": 0}})
    (tmp_path / "irq.py").write_text(
        "from firmware import boards\n"
        "b = boards.load()\n"
        "edges = []\n"
        "p = b.pin(39)\n"
        "p.irq(lambda pin: edges.append(b.ticks_ms()), b.IRQ_RISING)\n"
        "pwm = b.pwm(25)\n"
        # counting from here, as firmware starts its counter at boot: a counter made later
        # takes what came before it, at or before power-on, as its base
        "counter = b.pulse_counter(34)\n"
        "print('ready')\n"
        "while not edges:\n"
        "    b.sleep_ms(5)\n"
        "pwm.duty_u16(40000)\n"
        "b.sleep_ms(300)\n"
        "print('edges', len(edges), counter.value())\n"
    )
    argv, env = node.command()
    node.command = lambda: ([argv[0], "irq.py"], env)  # type: ignore[method-assign]
    proc = node.start()
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
        ctl.settimeout(5)
        ctl.sendto(b'{"set": {"pin:39": 1}, "add_pulses": {"34": 7}}', ("127.0.0.1", port))
        time.sleep(0.15)
        ctl.sendto(b'{"get": "outputs"}', ("127.0.0.1", port))
        reply = json.loads(ctl.recvfrom(4096)[0])
    run = node.wait(timeout=20)
    assert reply["outputs"]["pwm:25"] == 40000
    assert "edges 1 7" in run.output
    # what the control socket set is kept for the next start (a deep sleep in between)
    kept = json.loads((tmp_path / ".sim/signals.json").read_text())
    assert kept[0][1] == {"pin:39": 1, "pulses:34": 7}


@pytest.mark.parametrize("speed", [1, 25])
def test_board_time_runs_at_the_boards_speed(tmp_path: Path, speed: int) -> None:
    start = time.monotonic()
    out = sim(
        tmp_path,
        "t0 = b.ticks_ms(); b.sleep_ms(500); print(json.dumps(b.ticks_diff(b.ticks_ms(), t0)))",
        board={"speed": speed},
    )
    real = time.monotonic() - start
    # never short; late by at most 60 ms of the host's time, which is `speed` times as much
    # board time (a loaded host wakes a sleeper a few ms late)
    assert 500 <= out < 500 + 60 * speed
    if speed == 25:
        assert real < 0.45  # 500 ms of board time in 20 ms real, plus the interpreter start

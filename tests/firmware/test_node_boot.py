"""Start-up of the node runtime on the sim board: configuration fallback, the global exception
handler, boot-loop detection and safe mode, the watchdog, reset causes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hil.simboard import BOOT, SimNode
from tests.firmware.node_support import need_micropython, run_mpy

EPOCH = 1_700_000_000
# nobody listens on this port: the link fails fast (one send, 100 ms) and the node stores
QUICK_LINK = {"host": "127.0.0.1", "port": 9, "ack_timeout_ms": 100, "max_retransmit": 0}


def node_with(tmp: Path, config: Any) -> SimNode:
    need_micropython()
    node = SimNode(tmp / "node")
    if config is not None:
        path = node.folder / "config.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
    node.board(speed=20, epoch_s=EPOCH)
    node.scenario({"start": EPOCH, "signals": {"adc:35": 3000000}})
    return node


def validate(tmp: Path, raw: Any) -> dict[str, Any]:
    done = run_mpy(
        "import json\nfrom firmware.node import config\n"
        f"cfg, errors = config.validate(json.loads({json.dumps(json.dumps(raw))}))\n"
        "print(json.dumps({'cfg': cfg, 'errors': errors}))",
        tmp,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_validation_keeps_good_values_and_names_every_bad_one(tmp_path: Path) -> None:
    out = validate(
        tmp_path,
        {
            "kind": "toaster",
            "status_s": 5,
            "watchdog_ms": 90000,
            "link": "lora",
            "coap": {"port": "x", "host": "10.0.0.2", "colour": 1},
            "lora": {"sf": 12, "bw_hz": True},
            "oscore": {"secret": "00"},
            "surprise": 1,
        },
    )
    cfg, errors = out["cfg"], out["errors"]
    assert sorted(errors) == sorted(
        [
            "kind: not one of leak, occupancy, lighting, binfill",
            "status_s: 5 out of range 60..604800",
            "coap.port: expected an integer",
            "coap.colour: unknown",
            "lora.bw_hz: expected an integer",
            "oscore.secret: 1 bytes, expected 16..32",
            "surprise: unknown",
        ]
    )
    # each bad value fell back to its default, each good one was kept
    assert cfg["kind"] == "leak" and cfg["status_s"] == 86400
    assert cfg["watchdog_ms"] == 90000 and cfg["link"] == "lora"
    assert cfg["coap"] == {
        "host": "10.0.0.2",
        "port": 5683,
        "path": "u",
        "ack_timeout_ms": 2000,
        "max_retransmit": 4,
        "listen_port": 0,
    }
    assert cfg["lora"]["sf"] == 12 and cfg["lora"]["bw_hz"] == 125000
    assert cfg["oscore"] is None


def test_the_battery_divider_defaults_to_the_budgets_2_x_1_mohm(tmp_path: Path) -> None:
    """Always connected, the divider is part of the sleep current: 2 x 1 MOhm is what
    bench/node.py's 5-year budget assumes (2 x 100 kOhm alone would take a third of it)."""
    done = run_mpy(
        "import json\n"
        "from firmware.node import config\n"
        "from firmware.drivers.battery import Battery\n"
        "class ADC:\n"
        "    def read_uv(self):\n"
        "        return 1600000\n"
        "cfg, errors = config.validate({})\n"
        "b = Battery(ADC())\n"
        "print(json.dumps([cfg['battery'], errors, b.r_top, b.r_bottom, b.read_mv()]))",
        tmp_path,
    )
    section, errors, r_top, r_bottom, mv = json.loads(done.stdout.splitlines()[-1])
    assert section == {"r_top": 1_000_000, "r_bottom": 1_000_000} and errors == []
    assert (r_top, r_bottom) == (1_000_000, 1_000_000)  # the driver's own defaults agree
    assert mv == 3200  # 1.6 V at the pin: half the battery
    draw_ua = 3.2 / (r_top + r_bottom) * 1e6
    assert draw_ua <= 1.6  # bench/node.py DIVIDER_UA
    # another divider is still a config value, within its range
    other = validate(tmp_path, {"battery": {"r_top": 470000, "r_bottom": 20_000_000}})
    assert other["cfg"]["battery"] == {"r_top": 470000, "r_bottom": 1_000_000}
    assert other["errors"] == ["battery.r_bottom: 20000000 out of range 1..10000000"]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (None, "config: missing"),
        ("{not json", "config: not JSON"),
        ('["a list"]', "config: expected an object"),
        ({"coap": QUICK_LINK, "kind_config": {"pulse_ml": 0}}, "kind_config: config: pulse_ml"),
        ({"coap": QUICK_LINK, "oscore": {"secret": "zz"}}, "oscore.secret: not hex"),
    ],
    ids=["missing", "not-json", "not-object", "bad-kind-config", "bad-keys"],
)
def test_a_bad_or_missing_config_never_bricks_the_node(
    tmp_path: Path, config: Any, error: str
) -> None:
    node = node_with(tmp_path, config)
    first, second = node.cycles(2)
    assert error in first.output
    # it ran its cycle on defaults and went to sleep, twice: no boot loop
    assert "SAFE MODE" not in second.output
    assert "try 1" in second.output
    assert (node.folder / "ring.bin").exists()


def crash_every_boot(node: SimNode) -> None:
    # the ring's file cannot be opened (a directory stands where it should be): an OSError
    # that nothing in the cycle expects, so the global handler gets it
    (node.folder / "ring.bin").mkdir()


def test_repeated_crashes_end_in_safe_mode_with_the_repl_free(tmp_path: Path) -> None:
    node = node_with(tmp_path, {"coap": QUICK_LINK, "boot_tries": 3})
    crash_every_boot(node)
    runs = [node.run_once() for _ in range(4)]
    assert [r.reason for r in runs] == ["reset", "reset", "reset", "exit 0"]
    assert "try 1" in runs[0].output and "(power_on)" in runs[0].output
    # the handler marks the crash: the next boot reports it as a panic
    assert "(panic), try 2" in runs[1].output
    assert "Traceback" in runs[0].output and "OSError" in runs[0].output
    assert "SAFE MODE after 3 failed boots" in runs[3].output
    # safe mode leaves main.py with nothing running: the REPL answers
    argv, env = node.command()
    repl = subprocess.run(
        [argv[0], "-i", "-c", BOOT],
        input="print('repl', 6 * 7)\n",
        cwd=node.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "SAFE MODE" in repl.stdout and "repl 42" in repl.stdout
    # the technician fixes the flash, clears the counter from the REPL; the node runs again
    (node.folder / "ring.bin").rmdir()
    fix = run_mpy("import firmware.node.app as a; a.leave_safe_mode()", node.folder)
    assert fix.returncode == 101  # reset
    back = node.run_once()
    assert back.reason == "deep_sleep", back.output
    assert "try 1" in back.output


def test_a_power_cycle_also_leaves_safe_mode(tmp_path: Path) -> None:
    node = node_with(tmp_path, {"coap": QUICK_LINK, "boot_tries": 1})
    crash_every_boot(node)
    assert [node.run_once().reason for _ in range(2)] == ["reset", "exit 0"]
    (node.folder / "ring.bin").rmdir()
    (node.sim / "exit.json").unlink(missing_ok=True)  # the battery comes out and back in
    back = node.run_once()
    assert "(power_on), try 1" in back.output and back.reason == "deep_sleep"


def test_the_launcher_kills_a_hung_node_as_its_watchdog_would(tmp_path: Path) -> None:
    node = node_with(tmp_path, None)
    node.board(speed=1)
    # a loop that never comes back to the board: only the feed file can tell it hangs
    code = (
        "from firmware.boards import load\n"
        "b = load()\n"
        "print(b.reset_cause())\n"
        "w = b.watchdog(300)\n"
        "while True:\n"
        "    pass\n"
    )
    (node.folder / "hang.py").write_text(code)
    argv, env = node.command()
    node.command = lambda: ([argv[0], "hang.py"], env)  # type: ignore[method-assign]
    hung = node.run_once(timeout=20)
    assert hung.reason == "watchdog"
    again = node.run_once(timeout=20)
    assert again.output.startswith("watchdog")

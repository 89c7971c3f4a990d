"""The sim rig's virtual board itself (hil/simserial.py): what mpremote and the tools rely on.

Real processes: the supervisor, the MicroPython unix port in its pseudo-terminal, and the real
mpremote command line connecting over socket://.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import time

import pytest

from hil.gateway import wait_until
from hil.rig import SimRig
from tools.node import NodeConnection

pytestmark = pytest.mark.sim_only("tests the sim rig's virtual board itself")


def mpremote(port: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mpremote", "connect", port, "resume", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_mpremote_cli_copies_runs_and_soft_resets_a_blank_board(rig: SimRig) -> None:
    dut = rig.dut("blank", preflash=False)
    port = dut.port
    (rig.workdir / "hello.py").write_text("print('hello from', __name__)\n")
    done = mpremote(port, "fs", "cp", str(rig.workdir / "hello.py"), ":main.py")
    assert done.returncode == 0, done.stderr
    assert (dut.folder / "main.py").read_text() == "print('hello from', __name__)\n"
    done = mpremote(port, "exec", "import sys; print(sys.platform, 6 * 7)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "linux 42"
    # a soft reset inside the raw REPL (mpremote's soft-reset): the interpreter ends, the board
    # emulates "MPY: soft reboot" and comes back in the raw REPL, without main.py
    mark = dut.console.mark()
    done = mpremote(port, "soft-reset", "exec", "print('after')")
    assert done.returncode == 0, done.stderr
    assert "after" in done.stdout
    assert "MPY: soft reboot" in dut.console.since(mark)
    assert "hello from" not in dut.console.since(mark)
    assert dut.exits()[-1] == "soft"
    # Ctrl-D at the friendly REPL: a soft reboot that runs main.py, as on the ESP32
    mark = dut.console.mark()
    with socket.create_connection(("127.0.0.1", dut.serial_port)) as s:
        s.sendall(b"\r\x03\x02\x04")
        dut.console.wait_for(r"hello from __main__", 20, since=mark)
    assert dut.exits()[-1] == "soft"


def test_a_second_connection_is_refused_while_one_holds_the_port(rig: SimRig) -> None:
    dut = rig.dut("busy", preflash=False)
    with socket.create_connection(("127.0.0.1", dut.serial_port)) as holder:
        holder.sendall(b"\r\x03")
        wait_until(lambda: dut.state()["client"], 10, "the first client")
        with socket.create_connection(("127.0.0.1", dut.serial_port)) as second:
            second.settimeout(5)
            assert second.recv(100) == b""  # closed at once: the port is busy
    # free again once the holder left
    with NodeConnection.open(dut.port) as node:
        assert node.eval("1 + 1") == 2


def test_deep_sleep_restarts_keep_rtc_memory_and_jump_the_clock(rig: SimRig) -> None:
    dut = rig.dut("sleeper", preflash=False, start=False, speed=1)
    # a "firmware" that counts its lives in RTC memory and sleeps 10 virtual minutes
    (dut.folder / "main.py").write_text(
        "from firmware import boards\n"
        "b = boards.load()\n"
        "n = int(b.rtc_read() or b'0') + 1\n"
        "b.rtc_write(str(n).encode())\n"
        "print('life', n, b.reset_cause(), b.time())\n"
        "if n < 4:\n"
        "    b.deep_sleep(600000)\n"
    )
    (dut.folder / "firmware").mkdir()
    for name in ("__init__.py",):
        (dut.folder / "firmware" / name).write_text("")
    _copy_boards(dut.folder)
    dut.board(epoch_s=1_700_000_000)
    dut.start()
    dut.console.wait_for(r"life 4 deep_sleep", 30)
    lives = [line.split() for line in dut.console.text().splitlines() if line.startswith("life")]
    assert [line[1:3] for line in lives] == [
        ["1", "power_on"],
        ["2", "deep_sleep"],
        ["3", "deep_sleep"],
        ["4", "deep_sleep"],
    ]
    times = [int(line[3]) for line in lives]
    assert all(600 <= b - a <= 602 for a, b in itertools.pairwise(times))
    # the fourth life returned from main.py: the REPL is there, as on a board
    wait_until(lambda: dut.state()["state"] == "repl", 10, "the REPL")
    # a power cut forgets RTC memory: the next life is the first again
    mark = dut.console.mark()
    dut.power_cut(0.1)
    dut.console.wait_for(r"life 1 power_on", 20, since=mark)


def test_ctrl_c_interrupts_a_running_main_py(rig: SimRig) -> None:
    dut = rig.dut("busyloop", preflash=False, start=False, speed=1)
    (dut.folder / "main.py").write_text(
        "import time\nprint('looping')\nwhile True:\n    time.sleep_ms(10)\n"
    )
    dut.start()
    dut.console.wait_for("looping", 20)
    started = time.monotonic()
    with NodeConnection.open(dut.port) as node:
        assert node.eval("'still here'") == "still here"
    assert time.monotonic() - started < 8
    assert "KeyboardInterrupt" in dut.console.text()


def test_stimuli_while_asleep_land_in_the_next_life(rig: SimRig) -> None:
    dut = rig.dut("stim", preflash=False, start=False, speed=1)
    (dut.folder / "main.py").write_text(
        "from firmware import boards\n"
        "b = boards.load()\n"
        "print('level', b.pin(39).value(), b.wake_reason())\n"
        "b.wake_on_pin(39, 1)\n"
        "b.deep_sleep(3600000)\n"
    )
    (dut.folder / "firmware").mkdir()
    (dut.folder / "firmware" / "__init__.py").write_text("")
    _copy_boards(dut.folder)
    dut.start()
    dut.console.wait_for(r"level 0 none", 20)
    wait_until(lambda: dut.state()["state"] == "asleep", 10, "deep sleep")
    # an hour of sleep, woken by the pin the node armed
    reply = dut.signals(**{"pin:39": 1})
    assert reply["via"] == "file"
    dut.console.wait_for(r"level 1 pin", 20)
    kept = json.loads((dut.sim / "signals.json").read_text())
    assert kept[-1][1] == {"pin:39": 1}


def _copy_boards(folder: object) -> None:
    import shutil
    from pathlib import Path

    from hil.gateway import ROOT

    target = Path(str(folder)) / "firmware" / "boards"
    shutil.copytree(ROOT / "firmware" / "boards", target, ignore=shutil.ignore_patterns("esp32"))

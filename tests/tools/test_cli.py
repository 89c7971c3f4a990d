"""`city-node` against the sim rig: flash, check, console, and the errors a technician meets
(a missing port, a busy port, a wrong board, a failed copy), each with words that say what to
do. Real processes: the virtual board behind socket://, mpremote's transport, a pty."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hil.gateway import ROOT, wait_until
from hil.rig import SimRig
from tools import image
from tools.cli import main
from tools.flash import STAGE
from tools.node import NoAnswer, NodeConnection, PortBusy, WrongBoard


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_missing_port(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", "--port", "/dev/ttyUSB-not-there")
    assert code == 1
    assert "no serial port /dev/ttyUSB-not-there: is the node plugged in" in err
    assert "Serial ports present:" in err
    code, _, err = run(capsys, "check", "--port", f"socket://127.0.0.1:{closed_port()}")
    assert code == 1
    assert "nothing listens at socket://127.0.0.1:" in err


def test_a_busy_serial_device_and_a_busy_sim_port(
    capsys: pytest.CaptureFixture[str], sim: SimRig
) -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    holder = os.open(path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a console or mpremote holds
    try:
        code, _, err = run(capsys, "check", "--port", path)
        assert code == 1
        assert f"{path} is busy: another program holds it" in err
    finally:
        for fd in (holder, slave, master):
            os.close(fd)
    dut = sim.dut("busy-node", start=True, preflash=False)
    with socket.create_connection(("127.0.0.1", dut.serial_port)):
        wait_until(lambda: dut.state()["client"], 10, "the first client")
        with pytest.raises(PortBusy, match="another program holds"):
            NodeConnection.open(dut.port, wait_s=3)


def test_a_wrong_board_no_repl_at_all() -> None:
    """An ESP32 running something else (an Arduino sketch printing readings) answers, but
    never with a REPL prompt."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def chatter() -> None:
        conn, _ = server.accept()
        with conn:
            for _ in range(60):
                try:
                    conn.sendall(b"sensor=512 ok\r\n")
                except OSError:
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    try:
        with pytest.raises(WrongBoard, match=r"not with a MicroPython REPL.*sensor=512"):
            NodeConnection.open(f"socket://127.0.0.1:{port}", wait_s=1.5)
    finally:
        server.close()
        thread.join(5)


def test_a_wrong_board_foreign_micropython(sim: SimRig, tmp_path: Path) -> None:
    """MicroPython, but not an ESP32 nor the sim rig's board (here: the unix port unmarked)."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.simserial", str(folder), "--unmarked"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        with pytest.raises(WrongBoard, match=r"MicroPython 1\.\d+\.\d+ on linux .* not an ESP32"):
            NodeConnection.open(f"socket://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_node_that_does_not_answer(sim: SimRig) -> None:
    dut = sim.dut("off-node", preflash=False)
    dut.power(False)
    with pytest.raises(NoAnswer, match="deep sleep or unpowered"):
        NodeConnection.open(dut.port, wait_s=1.0)


def test_flash_then_check_then_console(
    capsys: pytest.CaptureFixture[str], sim: SimRig, app_image: image.Image
) -> None:
    dut = sim.dut("fresh", preflash=False, speed=50)
    app = str(app_image.folder)
    code, out, err = run(capsys, "flash", "--port", dut.port, "--app", app, "--no-reset")
    assert code == 0, err
    assert f"application {app_image.version}: {len(app_image.files)} files" in out
    for rel, digest in app_image.files.items():
        assert hashlib.sha256((dut.folder / rel).read_bytes()).hexdigest() == digest, rel
    assert (dut.folder / "main.py").read_bytes() == (app_image.folder / "main.py").read_bytes()
    assert not (dut.folder / STAGE).exists()
    code, out, _ = run(capsys, "flash", "--port", dut.port, "--app", app, "--no-reset")
    assert code == 0
    assert "already on the node" in out
    code, out, _ = run(capsys, "check", "--port", dut.port)
    assert code == 1  # flashed, not provisioned
    assert f"application  {app_image.version}" in out
    assert "config       none (run `city-node provision`)" in out
    assert "problems     no config" in out
    # reset: main.py runs, finds no config, and says so on the console
    with NodeConnection.open(dut.port) as node:
        node.reset()
    code, out, _ = run(capsys, "console", "--port", dut.port, "--seconds", "3")
    assert code == 0
    assert "node: config: missing" in out
    assert "\r" not in out


def test_a_failed_copy_leaves_the_old_application_whole(
    capsys: pytest.CaptureFixture[str], sim: SimRig
) -> None:
    dut = sim.dut("halfway", preflash=False, start=False, speed=50)
    (dut.folder / "main.py").write_text("print('old application')\n")
    (dut.folder / "app.json").write_text(json.dumps({"version": "0.0.9", "files": {}}))
    dut.start()
    dut.console.wait_for("old application", 20)

    def pull_the_plug() -> None:
        # the cable goes while the new files are being staged
        staged = dut.folder / STAGE / "firmware" / "boards" / "__init__.mpy"
        wait_until(staged.is_file, 60, "staging")
        dut.power(False)

    thread = threading.Thread(target=pull_the_plug, daemon=True)
    thread.start()
    code, _, err = run(capsys, "flash", "--port", dut.port, "--no-reset")
    thread.join(5)
    assert code == 1
    assert "city-node: copying .stage/firmware/" in err
    assert "to the node failed" in err
    assert "The application on the node is unchanged" in err
    # nothing of the new application was swapped in: the old one boots as before
    assert (dut.folder / "main.py").read_text() == "print('old application')\n"
    assert not (dut.folder / "firmware").exists()
    mark = dut.console.mark()
    dut.power(True)
    dut.console.wait_for("old application", 20, since=mark)
    # and the next flash goes through, cleaning the leftovers
    code, _, err = run(capsys, "flash", "--port", dut.port, "--no-reset")
    assert code == 0, err
    assert not (dut.folder / STAGE).exists()
    assert (dut.folder / "main.py").read_text() == (ROOT / "firmware/main.py").read_text()
    assert json.loads((dut.folder / "app.json").read_text())["version"] != "0.0.9"


def test_esptool_writes_micropython_only_to_a_real_chip(
    capsys: pytest.CaptureFixture[str], sim: SimRig, tmp_path: Path
) -> None:
    from tools.flash import esptool_command

    firmware = tmp_path / "ESP32_GENERIC.bin"
    firmware.write_bytes(b"\xe9" + bytes(100))
    dut = sim.dut("no-rom", preflash=False, start=False)
    dut.start()
    code, _, err = run(capsys, "flash", "--port", dut.port, "--image", str(firmware))
    assert code == 1
    assert "the sim rig's board: it has no ROM bootloader" in err
    command = esptool_command("/dev/ttyUSB0", firmware)
    assert command[1:] == [
        "-m", "esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
        "write-flash", "--erase-all", "-z", "0x1000", str(firmware),
    ]  # fmt: skip
    # the pinned esptool understands that command line
    done = subprocess.run(
        [sys.executable, "-m", "esptool", "write-flash", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "--erase-all" in done.stdout


def test_the_tuned_firmware_is_written_by_esptool_only_to_a_real_chip(
    capsys: pytest.CaptureFixture[str], sim: SimRig, tmp_path: Path
) -> None:
    firmware = tmp_path / "firmware.bin"  # what firmware-build/ builds (build-*/firmware.bin)
    firmware.write_bytes(b"\xe9" + bytes(100))
    dut = sim.dut("no-rom-tuned", preflash=False, start=False)
    dut.start()
    code, _, err = run(capsys, "flash", "--port", dut.port, "--firmware", str(firmware))
    assert code == 1
    assert "the sim rig's board: it has no ROM bootloader" in err
    # the frozen application is the whole point: no image or application to copy next to it
    code, _, err = run(
        capsys, "flash", "--port", dut.port, "--firmware", str(firmware), "--app", str(tmp_path)
    )
    assert code == 2
    assert "leave out --image and --app" in err


def test_the_check_after_a_tuned_flash_refuses_a_stock_node(sim: SimRig) -> None:
    """What `flash --firmware` asks the node once esptool is done, against a node that runs
    stock MicroPython with the application copied onto its filesystem."""
    from tools.flash import BOARD_NAME, FlashError, frozen_application, judge_frozen

    dut = sim.dut("stock-node", speed=50)
    with (
        NodeConnection.open(dut.port) as node,
        pytest.raises(FlashError, match="not the tuned firmware") as refused,
    ):
        frozen_application(node)
    assert "firmware-build/README.md" in str(refused.value)
    tuned = f"{BOARD_NAME} with ESP32"
    assert judge_frozen(tuned, "1.4.0", []) == "1.4.0"
    with pytest.raises(FlashError, match="/firmware, /protocol on the node's filesystem shadow"):
        judge_frozen(tuned, "1.4.0", ["firmware", "protocol"])
    with pytest.raises(FlashError, match="no application frozen in"):
        judge_frozen(tuned, None, [])

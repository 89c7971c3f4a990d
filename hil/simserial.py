"""The sim board as a serial port: a virtual ESP32 that mpremote and the technician tools use
over ``socket://127.0.0.1:PORT``, exactly as they use ``/dev/ttyUSB0`` on the serial rig.

    python -m hil.simserial NODE_DIR [--port 0] [--control-port 0] [--max-sleep 0.2]
                            [--heapsize 128K] [--off] [--unmarked]

Prints ``READY <serial port> <control port>`` once both sockets listen.

Why a supervisor rather than ``socat ... EXEC:"micropython -i"``: a board outlives the
connections made to it (each mpremote run is a new TCP connection; the node keeps running in
between), the unix port ends where a board reboots (Ctrl-D, deep sleep, reset), and a board's
console keeps talking when nobody listens. So this process owns the node's lives:

- Each life is the MicroPython unix port in a pseudo-terminal, started in the node folder
  (its flash: ``sys.path`` is the folder, then ``.frozen`` and ``lib`` like an ESP32's).
  The supervisor types a raw-REPL command into it that runs ``boot.py`` then ``main.py``, as
  the ESP32 port does at start; the raw-REPL framing is taken off the console, so the host
  sees what a board prints: main.py's output, then the ``>>>`` banner if main.py returns.
- Ctrl-C from the host while main.py runs stops it and hands over the REPL, as on the chip;
  other input waits until the REPL reads it. The sim does it by ending that life and starting
  one that runs boot.py only (RTC memory, flash and a running watchdog's deadline kept),
  not with a SIGINT: the `micropython` command of the PyPI wheel is CPython hosting the unix
  port, and a SIGINT landing between the port's own handlers (at exit, inside a finalizer)
  kills it or wedges its REPL. Code the host starts from the REPL is not interrupted by
  Ctrl-C (the byte reaches the REPL once that code ends): the tools run short snippets.
- The interpreter ending (Ctrl-D at the REPL, a raw-REPL soft reset) is a soft reboot:
  ``MPY: soft reboot`` and a new life, in the raw REPL again if the host left it there (without
  main.py, as the ESP32 port does), RTC memory kept. Exit 100 is a deep sleep: the next life
  starts after the sleep divided by the board's speed, at most ``--max-sleep`` real seconds
  (the board's clock jumps to its wake-up time either way). 101 and 102 are a reset and a
  watchdog reset; a stale watchdog feed is a watchdog reset too (see `check_watchdog`).
- One host at a time: a second connection is closed at once (a busy port).
- Everything the board prints is appended to ``.sim/console.log``, connected or not; output
  changes (lamp PWM duty, pins) to ``.sim/outputs.log`` as JSON lines with the wall time.

Control port (UDP, one JSON object per datagram, the answer goes back to the sender):

    {"op": "state"}                    -> {"state": "running"|"repl"|"asleep"|"off", ...}
    {"op": "power", "on": false}       power off (a power loss: SIGKILL, RTC memory lost)
    {"op": "power", "on": true}        power on (a power-on start)
    {"op": "reset"}                    the EN button: a power-on start at once
    {"op": "wake"}                     end a deep sleep now
    {"op": "signals", "set": {...}, "add_pulses": {"34": 5}}
                                       stimuli (scenario signal names, firmware/boards/sim/
                                       scenario.py); answered with {"ok": true, "at_ms": ...}
    {"op": "stop"}                     end the supervisor (and the board)

Stimuli reach a running mains node (lighting) through the board's own control socket (it
answers once applied); otherwise they are written to ``.sim/signals.json`` at the board's
current virtual time, which the next life reads, and an armed wake-up pin wakes it early.

``SIMSERIAL_DEBUG=1`` also logs every byte the host sends, with the life's stage, to
``.sim/input.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import importlib
import json
import os
import pty
import select
import selectors
import signal
import socket
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.simboard import EXIT_DEEP_SLEEP, EXIT_RESET, EXIT_WATCHDOG, SimNode, micropython_binary

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
EXEC_STARTED = b"raw REPL; CTRL-B to exit\r\n>OK"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
CTRL_A, CTRL_B, CTRL_C, CTRL_D = b"\x01", b"\x02", b"\x03", b"\x04"
TICK_S = 0.02
WATCHDOG_GRACE_MS = 200
POWER_BLIP_S = 0.1
EXITS_KEPT = 1000  # how each life ended, newest last (the state op reports them)
DEBUG_INPUT = bool(os.environ.get("SIMSERIAL_DEBUG"))
FORWARD_TRIES = 10
FORWARD_WAIT_S = 0.3
BOOT_FILES = ("boot.py", "main.py")


def boot_command(files: tuple[str, ...]) -> bytes:
    """What the supervisor types into a new life's raw REPL: run boot.py then main.py from
    the flash, as the ESP32 port does (main.py with __name__ "__main__")."""
    code = (
        f"for _f in {files!r}:\n"
        "    try:\n"
        "        _s = open(_f).read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    exec(_s)\n"
        "_f = _s = None\n"
    )
    return CTRL_A + code.encode() + CTRL_D


@dataclass
class Forward:
    """A stimulus sent to the running board's control socket, waiting for its answer."""

    request: dict[str, Any]
    reply_to: tuple[str, int]
    tries: int = 0
    deadline: float = 0.0


@dataclass
class Life:
    proc: subprocess.Popen[bytes]
    master: int
    started: float
    main: bool  # typed boot.py + main.py, or boot.py only
    raw_after: bool  # hand over the raw REPL (after a raw soft reset) or the friendly one
    stage: str = "starting"  # starting -> stdout -> stderr -> prompt -> repl
    held: bytearray = field(default_factory=bytearray)  # host input until the REPL reads
    scan: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)  # typed into the pty when it can take it


class Supervisor:
    def __init__(
        self,
        folder: Path,
        *,
        port: int = 0,
        control_port: int = 0,
        max_sleep_s: float = 0.2,
        heapsize: str | None = None,
        powered: bool = True,
        marked: bool = True,
    ) -> None:
        self.node = SimNode(folder)
        self.folder = self.node.folder.resolve()
        self.max_sleep_s = max_sleep_s
        self.heapsize = heapsize
        self.marked = marked
        self.powered = powered
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.control = self._udp(control_port, "control")
        self.observer = self._udp(0, "observer")
        self.forwarder = self._udp(0, "forwarded")
        self.client: socket.socket | None = None
        self.life: Life | None = None
        self.raw = False  # the host left the REPL in raw mode
        self.wake_at: float | None = None  # monotonic time of the next start, when asleep
        self.exits: list[str] = []
        self.power_on_pending = False
        self.watchdog_killed = False
        self.lives = 0
        self.forwards: list[Forward] = []
        self.stopping = False
        sim = self.node.sim
        self.console = (sim / "console.log").open("ab", buffering=0)
        self.outputs = (sim / "outputs.log").open("a", buffering=1)
        self.node.board(
            control_port=self._free_udp_port(),
            observer=["127.0.0.1", self.observer.getsockname()[1]],
        )

    def read_json(self, name: str) -> Any:
        """A file of the node's folder as JSON; None when absent or torn (a life killed while
        writing it: the board itself reads its files the same forgiving way)."""
        try:
            return json.loads((self.folder / name).read_text())
        except (OSError, ValueError):
            return None

    def boot_as(self, cause: str) -> None:
        """Tell the next start which reset this was (.sim/boot.json, read by the board), at
        the virtual time the board's clock file had reached. A cause no board has read yet
        stays: a life that ended before the firmware started (interrupted at once, a REPL
        session) leaves the node as it found it, e.g. still to see its power-on."""
        if (self.node.sim / "boot.json").exists():
            return
        clock = self.read_json(".sim/clock")
        self.node.write_json(
            ".sim/boot.json",
            {"reset_cause": cause, "epoch_ms": clock if isinstance(clock, int) else None,
             "wake_reason": "none"},
        )  # fmt: skip

    def power_on(self) -> None:
        """A start from no power: RTC memory forgotten (the board drops it on this cause)."""
        (self.node.sim / "exit.json").unlink(missing_ok=True)
        self.node.write_json(".sim/boot.json", {"reset_cause": "power_on", "wake_reason": "none"})
        self.start_life()

    # -- sockets -----------------------------------------------------------------------------
    def _udp(self, port: int, role: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, role)
        return s

    @staticmethod
    def _free_udp_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def control_port(self) -> int:
        return int(self.control.getsockname()[1])

    # -- the board's output ------------------------------------------------------------------
    def emit(self, data: bytes) -> None:
        if not data:
            return
        self.console.write(data)
        if self.client is not None:
            try:
                self.client.sendall(data)
            except OSError:
                self._drop_client()

    def _drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.client)
            self.client.close()
            self.client = None

    # -- lives ---------------------------------------------------------------------------------
    def speed(self) -> float:
        return float((self.read_json(".sim/board.json") or {}).get("speed", 1))

    def start_life(
        self, main: bool = True, raw_after: bool = False, keep_watchdog: bool = False
    ) -> None:
        self.wake_at = None
        master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        # raw bytes both ways: no CR/LF rewriting, no echo, and no ISIG (no SIGINT ever: see
        # the module docstring; Ctrl-C reaches the REPL as a byte)
        attrs[0] &= ~(termios.ICRNL | termios.IXON | termios.ISTRIP | termios.INLCR)
        attrs[1] &= ~termios.OPOST
        attrs[3] &= ~(termios.ICANON | termios.ECHO | termios.IEXTEN | termios.ISIG)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        argv = [micropython_binary()]
        if self.heapsize:
            argv += ["-X", f"heapsize={self.heapsize}"]
        env = dict(os.environ)
        env["MICROPYPATH"] = f"{self.folder}:.frozen:{self.folder}/lib"
        env.pop("SIM_STATE", None)
        if self.marked:
            env["SIM_STATE"] = str(self.node.sim.resolve())
        if not keep_watchdog:
            (self.node.sim / "wdt").unlink(missing_ok=True)
        proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.folder,
            env=env,
            start_new_session=True,
            preexec_fn=_controlling_tty,  # noqa: PLW1509 - the supervisor runs no threads
        )
        os.close(slave)
        os.set_blocking(master, False)
        self.life = Life(proc, master, time.monotonic(), main, raw_after)
        self.lives += 1
        self.sel.register(master, selectors.EVENT_READ, "child")
        files = BOOT_FILES if main else BOOT_FILES[:1]
        self._to_child(boot_command(files))
        self.watchdog_killed = False

    def _to_child(self, data: bytes) -> None:
        life = self.life
        if life is None or not data:
            return
        life.outbox += data
        self._flush_child(life)

    def _flush_child(self, life: Life) -> None:
        while life.outbox:
            try:
                n = os.write(life.master, life.outbox)
            except BlockingIOError:
                break  # the pty's input queue is full: go on when the REPL has read some
            except OSError:
                life.outbox.clear()
                break
            del life.outbox[:n]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if life.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(life.master, events, "child")

    def on_child(self, mask: int) -> None:
        life = self.life
        if life is None:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush_child(life)
        if mask & selectors.EVENT_READ:
            self.child_output()

    def child_output(self) -> None:
        life = self.life
        assert life is not None
        try:
            data = os.read(life.master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(life.master)
            return
        if life.stage == "repl":
            self._track_raw(data)
            self.emit(data)
            return
        self._boot_output(life, data)

    def _boot_output(self, life: Life, data: bytes) -> None:
        """Take the raw-REPL framing of the typed boot command off the console."""
        while data:
            if life.stage == "starting":
                life.scan += data
                at = life.scan.find(EXEC_STARTED)
                if at < 0:
                    return
                data = bytes(life.scan[at + len(EXEC_STARTED) :])
                life.scan.clear()
                life.stage = "stdout"
            elif life.stage in ("stdout", "stderr"):
                at = data.find(CTRL_D)
                if at < 0:
                    self.emit(data)
                    return
                self.emit(data[:at])
                data = data[at + 1 :]
                life.stage = "stderr" if life.stage == "stdout" else "prompt"
            elif life.stage == "prompt":
                at = data.find(b">")
                if at < 0:
                    return
                data = data[at + 1 :]
                self._booted(life)
            else:
                self._track_raw(data)
                self.emit(data)
                return

    def _booted(self, life: Life) -> None:
        """boot.py (and main.py) ran to their end: hand the REPL to the host."""
        life.stage = "repl"
        if life.raw_after:
            self.emit(RAW_BANNER + b">")  # a soft reset inside the raw REPL lands there again
            self.raw = True
        else:
            self._to_child(CTRL_B)  # friendly REPL: the banner and >>> as after main.py
            self.raw = False
        held = bytes(life.held)
        life.held.clear()
        self._to_child(held)

    def _track_raw(self, data: bytes) -> None:
        if RAW_BANNER in data:
            self.raw = True

    def host_input(self, data: bytes) -> None:
        if DEBUG_INPUT:
            with (self.node.sim / "input.log").open("ab") as f:
                stage = self.life.stage if self.life else "none"
                f.write(f"[{time.time():.3f} {stage}]".encode() + data + b"\n")
        life = self.life
        if life is None or not self.powered:
            return  # asleep or off: the UART is not listening
        if CTRL_B in data:
            self.raw = False
        if life.stage == "repl":
            self._to_child(data)
            return
        # boot.py/main.py run: Ctrl-C stops them; the rest waits for the REPL
        at = data.find(CTRL_C)
        if at < 0 or not life.main or life.stage not in ("starting", "stdout"):
            life.held += data.replace(CTRL_C, b"")
            return
        carry = bytes(life.held) + data[:at] + data[at + 1 :].replace(CTRL_C, b"")
        self.interrupt(life, carry)

    def interrupt(self, life: Life, carry: bytes) -> None:
        """Ctrl-C while main.py runs: that life ends where it is (as KeyboardInterrupt would
        leave it), and a life without main.py hands over the REPL. RTC memory is kept (a
        "soft" start for the board) and so is a running watchdog's deadline."""
        life.proc.kill()
        life.proc.wait()
        self._drain(life)
        self.life = None
        self.exits = [*self.exits[-(EXITS_KEPT - 1) :], "interrupted"]
        if self.read_json(".sim/exit.json") is None:
            self.boot_as("soft")
        self.emit(b"\r\nKeyboardInterrupt: main.py stopped\r\n")
        self.start_life(main=False, keep_watchdog=True)
        assert self.life is not None
        self.life.held += carry

    def _drain(self, life: Life) -> None:
        """What the life printed last, then its pty closed."""
        with contextlib.suppress(OSError):
            while True:
                data = os.read(life.master, 65536)
                if not data:
                    break
                if life.stage == "repl":
                    self.emit(data)
                else:
                    self._boot_output(life, data)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(life.master)
        os.close(life.master)

    def check_watchdog(self) -> None:
        """Kill a life whose watchdog feed file went stale (a hang outside the board's own
        checks), as the chip's WDT resets it. The board writes its timeout in real ms (the
        virtual timeout / speed); while a host holds the REPL, the timeout runs in real time
        instead, as it does for a technician at an ESP32's REPL: the sim's speed is there to
        hurry the node's own waits, not to cut a session 20 times shorter."""
        life = self.life
        if life is None or life.proc.poll() is not None:
            return
        wdt = self.node.sim / "wdt"
        try:
            timeout_ms = int(wdt.read_text() or "0")
            age_ms = (time.time() - wdt.stat().st_mtime) * 1000
        except (OSError, ValueError):
            return
        if not timeout_ms:
            return
        if life.stage == "repl" and self.client is not None:
            timeout_ms = int(timeout_ms * self.speed())
        if age_ms > timeout_ms + WATCHDOG_GRACE_MS:
            print(
                f"simserial: watchdog: fed {age_ms:.0f} ms ago, timeout {timeout_ms} ms "
                f"({life.stage}, host {'connected' if self.client else 'away'})",
                file=sys.stderr,
                flush=True,
            )
            self.watchdog_killed = True
            life.proc.kill()

    def check_life(self) -> None:
        life = self.life
        if life is None:
            return
        code = life.proc.poll()
        if code is None:
            return
        self._drain(life)
        self.life = None
        self.ended(code)

    def ended(self, code: int) -> None:
        exit_info = self.read_json(".sim/exit.json")
        if self.watchdog_killed:
            self.watchdog_killed = False
            reason = "watchdog"
            self.boot_as("watchdog")
        elif code == EXIT_DEEP_SLEEP:
            reason = "deep_sleep"
        elif code == EXIT_RESET:
            reason = "reset"
        elif code == EXIT_WATCHDOG:
            reason = "watchdog"
        elif code == -signal.SIGKILL:
            reason = "power_loss"
        elif code == 0:
            reason = "soft"
        else:
            reason = "crash"
            print(f"simserial: the interpreter ended with {code}", file=sys.stderr, flush=True)
        self.exits = [*self.exits[-(EXITS_KEPT - 1) :], reason]
        self.emit(f"\r\nsim: {reason}\r\n".encode())
        if exit_info is None and reason in ("reset", "watchdog", "soft", "crash"):
            # the interpreter ended without the board (no firmware running): tell the next
            # start what kind of reset this was, so RTC memory is kept
            cause = {"reset": "hard", "crash": "hard"}.get(reason, reason)
            self.boot_as(cause)
        if self.stopping or not self.powered:
            return
        if reason == "power_loss":
            # killed while powered: the board cut its own power (power_cut_after_bytes);
            # power comes back a moment later (a cut by the rig waits for power(True))
            (self.node.sim / "boot.json").unlink(missing_ok=True)
            self.wake_at = time.monotonic() + POWER_BLIP_S
            self.power_on_pending = True
            return
        if reason == "deep_sleep":
            info = exit_info or {}
            wake_ms = info.get("wake_epoch_ms")
            sleep_s = (wake_ms - info["epoch_ms"]) / 1000 if wake_ms else 0.0
            real = min(sleep_s / max(self.speed(), 1e-9), self.max_sleep_s)
            self.wake_at = time.monotonic() + max(0.0, real)
            return
        if reason == "soft":
            self.emit(SOFT_REBOOT)
            # inside the raw REPL: boot.py only and back to the raw REPL, as the ESP32 port
            self.start_life(main=not self.raw, raw_after=self.raw)
            return
        self.start_life()

    # -- power, reset, sleep -------------------------------------------------------------------
    def power(self, on: bool) -> None:
        if not on:
            self.powered = False
            self.wake_at = None
            self.power_on_pending = False
            self._kill()
            # a power loss: the next start is a power-on (the board forgets RTC memory)
            (self.node.sim / "boot.json").unlink(missing_ok=True)
            (self.node.sim / "exit.json").unlink(missing_ok=True)
            return
        if not self.powered or self.life is None:
            self.powered = True
            if self.life is None:
                self.power_on()

    def _kill(self) -> None:
        life = self.life
        if life is None:
            return
        if life.proc.poll() is None:
            life.proc.kill()
        life.proc.wait()
        self.check_life()

    def wake(self) -> None:
        if self.life is None and self.powered and self.wake_at is not None:
            self.wake_at = time.monotonic()

    # -- stimuli -------------------------------------------------------------------------------
    def virtual_ms(self) -> int:
        """The board's clock now, as well as the supervisor can tell from outside."""
        clock = self.node.sim / "clock"
        try:
            at = json.loads(clock.read_text())
            age = time.time() - clock.stat().st_mtime
        except (OSError, ValueError):
            return int(time.time() * 1000)
        now = int(at + max(0.0, age) * 1000 * self.speed())
        exit_info = self.read_json(".sim/exit.json") or {}
        wake = exit_info.get("wake_epoch_ms")
        if self.life is None and wake is not None:
            now = min(now, int(wake))  # asleep: the board wakes at that time at the latest
        return now

    def _mains(self) -> bool:
        config = self.read_json("config.json") or {}
        return isinstance(config, dict) and config.get("kind") == "lighting"

    def signals(self, request: dict[str, Any], reply_to: tuple[str, int]) -> None:
        life = self.life
        if life is not None and life.stage != "repl" and self._mains():
            board = self.read_json(".sim/board.json") or {}
            forward = Forward(
                {"set": request.get("set") or {}, "add_pulses": request.get("add_pulses") or {}},
                reply_to,
            )
            forward.request["get"] = "outputs"
            self.forwards.append(forward)
            self._forward(forward, int(board["control_port"]))
            return
        at_ms = self.write_signals(request)
        self.answer({"ok": True, "at_ms": at_ms, "via": "file"}, reply_to)

    def _forward(self, forward: Forward, port: int) -> None:
        forward.tries += 1
        forward.deadline = time.monotonic() + FORWARD_WAIT_S
        self.forwarder.sendto(json.dumps(forward.request).encode(), ("127.0.0.1", port))

    def forwarded(self) -> None:
        try:
            data, _ = self.forwarder.recvfrom(65536)
        except OSError:
            return
        if self.forwards:
            forward = self.forwards.pop(0)
            reply = json.loads(data)
            self.answer(
                {"ok": True, "at_ms": reply.get("epoch_ms"), "via": "board"}, forward.reply_to
            )

    def check_forwards(self) -> None:
        now = time.monotonic()
        board = self.read_json(".sim/board.json") or {}
        for forward in list(self.forwards):
            if forward.deadline > now:
                continue
            if self.life is None or self.life.stage == "repl":
                # the board stopped serving its control socket: the file takes it
                self.forwards.remove(forward)
                request = {k: forward.request[k] for k in ("set", "add_pulses")}
                at_ms = self.write_signals(request)
                self.answer({"ok": True, "at_ms": at_ms, "via": "file"}, forward.reply_to)
            elif forward.tries >= FORWARD_TRIES:
                self.forwards.remove(forward)
                self.answer({"ok": False, "error": "the board did not answer"}, forward.reply_to)
            else:
                self._forward(forward, int(board["control_port"]))

    def write_signals(self, request: dict[str, Any]) -> int:
        scenario = importlib.import_module("firmware.boards.sim.scenario")
        sim = self.node.sim
        at_ms = self.virtual_ms()
        at_s = at_ms / 1000
        changes = dict(request.get("set") or {})
        pulses = request.get("add_pulses") or {}
        if pulses:
            now = scenario.load(str(sim / "scenario.json"), str(sim / "signals.json")).at(at_s)
            for pin, count in pulses.items():
                changes[f"pulses:{pin}"] = now.get(f"pulses:{pin}", 0) + int(count)
        kept = self.read_json(".sim/signals.json") or []
        kept.append([at_s, changes])
        self.node.write_json(".sim/signals.json", kept)
        if self.life is None and self.wake_at is not None and self._wakes(changes):
            self.wake_at = time.monotonic()
        return at_ms

    def _wakes(self, changes: dict[str, Any]) -> bool:
        exit_info = self.read_json(".sim/exit.json") or {}
        for pin, level in exit_info.get("wake_pins") or ():
            if changes.get(f"pin:{pin}") == level or f"pulses:{pin}" in changes:
                return True
        return False

    # -- control -------------------------------------------------------------------------------
    def answer(self, reply: dict[str, Any], to: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self.control.sendto(json.dumps(reply).encode(), to)

    def state(self) -> dict[str, Any]:
        if not self.powered:
            state = "off"
        elif self.life is None:
            state = "asleep"
        elif self.life.stage == "repl":
            state = "repl"
        else:
            state = "running"
        return {
            "state": state,
            "lives": self.lives,
            "exits": self.exits,
            "raw": self.raw,
            "client": self.client is not None,
            "virtual_ms": self.virtual_ms(),
        }

    def on_control(self) -> None:
        try:
            data, addr = self.control.recvfrom(65536)
            request = json.loads(data)
            op = request["op"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if op == "signals":
            self.signals(request, addr)
            return
        if op == "power":
            self.power(bool(request.get("on")))
        elif op == "reset":
            self.power(False)
            self.power(True)
        elif op == "wake":
            self.wake()
        elif op == "stop":
            self.stopping = True
        elif op != "state":
            self.answer({"ok": False, "error": f"unknown op {op!r}"}, addr)
            return
        self.answer({"ok": True, **self.state()}, addr)

    def on_observer(self) -> None:
        try:
            data, _ = self.observer.recvfrom(65536)
            msg = json.loads(data)
        except (OSError, ValueError):
            return
        msg["t"] = time.time()
        self.outputs.write(json.dumps(msg) + "\n")

    # -- the loop ------------------------------------------------------------------------------
    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        if self.client is not None:
            # the holder may have just gone: take its last bytes and its EOF first
            ready, _, _ = select.select([self.client], [], [], 0)
            if ready:
                self.on_client()
        if self.client is not None:
            conn.close()  # the port is held by another program
            return
        conn.setblocking(True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = conn
        self.sel.register(conn, selectors.EVENT_READ, "client")

    def on_client(self) -> None:
        if self.client is None:
            return  # dropped earlier in this round (its EOF was read by accept)
        try:
            data = self.client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self.host_input(data)

    def run(self) -> None:
        if self.powered:
            self.power_on()
        print(f"READY {self.port} {self.control_port}", flush=True)
        handlers = {
            "accept": self.accept,
            "client": self.on_client,
            "control": self.on_control,
            "observer": self.on_observer,
            "forwarded": self.forwarded,
        }
        while not self.stopping:
            for key, mask in self.sel.select(TICK_S):
                if key.data == "child":
                    self.on_child(mask)
                else:
                    handlers[key.data]()
            self.check_watchdog()
            self.check_life()
            self.check_forwards()
            due = self.wake_at is not None and time.monotonic() >= self.wake_at
            if self.life is None and self.powered and due:
                if self.power_on_pending:
                    self.power_on_pending = False
                    self.power_on()
                else:
                    self.start_life()
        self.shutdown()

    def shutdown(self) -> None:
        self.stopping = True
        self._kill()
        self._drop_client()
        self.listener.close()
        self.console.close()
        self.outputs.close()


def _controlling_tty() -> None:
    # in the child, after setsid(): the pty becomes its controlling terminal (a board's
    # console); a stray SIGINT (a terminal's Ctrl-C at the rig) must not reach it
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the sim board as a serial port (socket://)")
    parser.add_argument("folder", type=Path, help="the node's folder (its flash)")
    parser.add_argument("--port", type=int, default=0, help="TCP port for socket:// (0: any)")
    parser.add_argument("--control-port", type=int, default=0, help="UDP control port")
    parser.add_argument(
        "--max-sleep", type=float, default=0.2, help="longest real wait for a deep sleep (s)"
    )
    parser.add_argument("--heapsize", help="MicroPython heap, e.g. 128K (an ESP32 offers ~110K)")
    parser.add_argument("--off", action="store_true", help="start unpowered")
    parser.add_argument(
        "--unmarked",
        action="store_true",
        help="hide the sim rig's marker: the board then looks like a foreign MicroPython board",
    )
    args = parser.parse_args(argv)
    supervisor = Supervisor(
        args.folder,
        port=args.port,
        control_port=args.control_port,
        max_sleep_s=args.max_sleep,
        heapsize=args.heapsize,
        powered=not args.off,
        marked=not args.unmarked,
    )
    signal.signal(signal.SIGTERM, lambda *_: setattr(supervisor, "stopping", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(supervisor, "stopping", True))
    try:
        supervisor.run()
    except OSError as exc:
        if exc.errno != errno.EINTR:
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

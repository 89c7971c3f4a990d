"""Run a simulated node: the MicroPython unix port on firmware/boards/sim, in its own folder.

    python -m hil.simboard NODE_DIR [--cycles N] [--realtime] [--repo DIR]

The folder is the node's flash (config.json, ring.bin, ...); NODE_DIR/.sim/ holds the board's
"hardware" (board.json, scenario.json, RTC memory: see firmware/boards/sim/__init__.py). The
process plays the node's life: after a deep sleep (exit 100) it starts it again at once (or,
with --realtime, after the sleep divided by the board's speed), keeping RTC memory; after a
reset (101) or a watchdog reset (102) likewise; a process that stops feeding its watchdog file
for longer than its timeout is killed and restarted as a watchdog reset; `power_cut()` kills it
with SIGKILL, and the next start is a power-on (the board forgets RTC memory itself).

Modules come from ``--repo`` (the source tree, default this repository) or, when the folder
holds a deployed ``firmware/`` (mpremote-copied .py or .mpy), from the folder itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXIT_DEEP_SLEEP = 100
EXIT_RESET = 101
EXIT_WATCHDOG = 102
WATCHDOG_POLL_S = 0.05
BOOT = "import firmware.node.app as app; app.main()"


def micropython_binary() -> str:
    local = Path(sys.executable).with_name("micropython")
    return str(local) if local.exists() else "micropython"


@dataclass
class Run:
    """One life of the process: from start to exit."""

    returncode: int
    output: str
    exit: dict[str, Any] | None  # .sim/exit.json as the board left it
    watchdog_kill: bool = False  # killed by the launcher for a stale watchdog feed

    @property
    def reason(self) -> str:
        if self.watchdog_kill:
            return "watchdog"
        if self.returncode == EXIT_DEEP_SLEEP:
            return "deep_sleep"
        if self.returncode == EXIT_RESET:
            return "reset"
        if self.returncode == EXIT_WATCHDOG:
            return "watchdog"
        if self.returncode == -signal.SIGKILL:
            return "killed"
        return f"exit {self.returncode}"


class SimNode:
    def __init__(self, folder: Path, repo: Path = ROOT, heapsize: str | None = None) -> None:
        self.folder = Path(folder)
        self.sim = self.folder / ".sim"
        self.sim.mkdir(parents=True, exist_ok=True)
        self.repo = repo
        self.heapsize = heapsize
        self.proc: subprocess.Popen[str] | None = None
        self.runs: list[Run] = []
        self._killed_by_watchdog = False

    # -- the folder ------------------------------------------------------------------------
    def write_json(self, name: str, value: Any) -> None:
        path = self.folder / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)

    def read_json(self, name: str) -> Any:
        path = self.folder / name
        return json.loads(path.read_text()) if path.exists() else None

    def board(self, **settings: Any) -> None:
        """Merge settings into .sim/board.json."""
        current = self.read_json(".sim/board.json") or {}
        current.update(settings)
        self.write_json(".sim/board.json", current)

    def scenario(self, data: dict[str, Any]) -> None:
        self.write_json(".sim/scenario.json", data)

    def config(self, cfg: dict[str, Any]) -> None:
        self.write_json("config.json", cfg)

    # -- processes ---------------------------------------------------------------------------
    def command(self) -> tuple[list[str], dict[str, str]]:
        """argv and environment that start the node once (for a rig wrapping it, e.g. socat)."""
        deployed = (self.folder / "firmware").is_dir()
        path = f"{self.folder if deployed else self.repo}:.frozen"
        argv = [micropython_binary()]
        if self.heapsize:
            argv += ["-X", f"heapsize={self.heapsize}"]
        argv += ["-c", BOOT]
        env = dict(os.environ, MICROPYPATH=path, SIM_STATE=str(self.sim))
        return argv, env

    def start(self) -> subprocess.Popen[str]:
        argv, env = self.command()
        (self.sim / "wdt").unlink(missing_ok=True)
        self._killed_by_watchdog = False
        self.proc = subprocess.Popen(
            argv,
            cwd=self.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._watch, args=(self.proc,), daemon=True).start()
        return self.proc

    def _watch(self, proc: subprocess.Popen[str]) -> None:
        """Kill a process whose watchdog feed file went stale (a hang outside the board)."""
        wdt = self.sim / "wdt"
        while proc.poll() is None:
            time.sleep(WATCHDOG_POLL_S)
            try:
                timeout_ms = int(wdt.read_text() or "0")
                age = time.time() - wdt.stat().st_mtime
            except (OSError, ValueError):
                continue
            if timeout_ms and age * 1000 > timeout_ms + 200:
                self._killed_by_watchdog = True
                proc.kill()

    def wait(self, timeout: float | None = None) -> Run:
        proc = self.proc
        assert proc is not None
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            raise
        exit_info = self.read_json(".sim/exit.json")
        if self._killed_by_watchdog:
            # the board could not say so itself: tell the next start it was the watchdog
            self.write_json(".sim/boot.json", self._boot_after(exit_info, "watchdog"))
        run = Run(proc.returncode, output, exit_info, self._killed_by_watchdog)
        self.runs.append(run)
        self.proc = None
        return run

    def _boot_after(self, exit_info: dict[str, Any] | None, cause: str) -> dict[str, Any]:
        clock = self.read_json(".sim/clock")
        return {"reset_cause": cause, "epoch_ms": clock, "wake_reason": "none"}

    def run_once(self, timeout: float | None = 60.0) -> Run:
        self.start()
        return self.wait(timeout)

    def cycles(self, n: int, timeout: float = 60.0) -> list[Run]:
        """n lives in a row, each ending in a deep sleep; raises if one ends otherwise."""
        runs = []
        for _ in range(n):
            run = self.run_once(timeout)
            runs.append(run)
            if run.reason != "deep_sleep":
                raise RuntimeError(f"node ended with {run.reason}:\n{run.output}")
        return runs

    def power_cut(self) -> None:
        """Kill the running process as a power loss does (SIGKILL: nothing flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self.proc = None

    def sleep_s(self, run: Run) -> float:
        """Virtual seconds of the deep sleep that ended this run."""
        info = run.exit or {}
        wake = info.get("wake_epoch_ms")
        return (wake - info["epoch_ms"]) / 1000 if wake else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run a simulated node, restarting it")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cycles", type=int, default=0, help="stop after N lives (0: never)")
    parser.add_argument("--realtime", action="store_true", help="sleep through deep sleeps")
    parser.add_argument("--repo", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    node = SimNode(args.folder, args.repo)
    speed = float((node.read_json(".sim/board.json") or {}).get("speed", 1))
    lives = 0
    try:
        while not args.cycles or lives < args.cycles:
            run = node.run_once(timeout=None)
            lives += 1
            sys.stdout.write(run.output)
            print(f"simboard: life {lives} ended: {run.reason}", flush=True)
            if run.reason not in ("deep_sleep", "reset", "watchdog", "killed"):
                return run.returncode
            if args.realtime and run.reason == "deep_sleep":
                time.sleep(node.sleep_s(run) / speed)
    except KeyboardInterrupt:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

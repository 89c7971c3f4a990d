"""The demo's child processes: each in a process group of its own, stopped in order, reaped.

- Every child starts in a new session (`start_new_session`): its process group is its own,
  so the terminal's Ctrl-C reaches only the demo, which then stops the city in order (nodes,
  then the gateway, which flushes its store, then the radio medium).
- Each child also gets the parent-death signal (util-linux `setpriv --pdeathsig KILL`, where
  present): if the demo itself is killed with SIGKILL, its children die with it instead of
  running on.
- A child that exits is reaped at once. Before reaping, while the exited leader still holds
  its process group id (a zombie's id cannot be reused), the group gets a SIGKILL, so nothing
  the child may have started outlives it, and no other process can be hit by that signal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

SETPRIV = shutil.which("setpriv")


class Child:
    """One started process, its group, and how it ended."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.started = time.monotonic()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def exited(self) -> bool:
        """True (and reaped, its group emptied) once the process has ended."""
        if self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
            self.proc.poll()
            return self.proc.returncode is not None
        if info is None:
            return False
        self._kill_group(signal.SIGKILL)  # still a zombie: the group id is ours
        self.proc.wait()
        return True

    def send(self, sig: int) -> None:
        if self.proc.returncode is None:
            self._kill_group(sig)

    def _kill_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 5.0) -> int:
        """Signal the group, wait up to `grace_s`, then SIGKILL it; returns the exit code."""
        self.send(sig)
        deadline = time.monotonic() + grace_s
        while not self.exited():
            if time.monotonic() >= deadline:
                self.send(signal.SIGKILL)
                self.proc.wait()
                break
            time.sleep(0.01)
        code = self.proc.returncode
        assert code is not None
        return code


class Children:
    """Every child the demo started that has not been reaped yet."""

    def __init__(self) -> None:
        self.alive: dict[int, Child] = {}
        self.started = 0

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
        stderr: IO[Any] | int | None = subprocess.STDOUT,
    ) -> Child:
        command = list(argv)
        if SETPRIV is not None:
            command = [SETPRIV, "--pdeathsig", "KILL", "--", *command]
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        child = Child(name, proc)
        self.alive[child.pid] = child
        self.started += 1
        return child

    def reap(self) -> list[Child]:
        """The children that ended since the last call (reaped, forgotten)."""
        ended = [c for c in self.alive.values() if c.exited()]
        for child in ended:
            del self.alive[child.pid]
        return ended

    def forget(self, child: Child) -> None:
        self.alive.pop(child.pid, None)

    def stop(self, child: Child, sig: int = signal.SIGTERM, grace_s: float = 5.0) -> int:
        code = child.stop(sig, grace_s)
        self.forget(child)
        return code

    def stop_all(self, grace_s: float = 2.0) -> None:
        """SIGTERM every group at once, then SIGKILL what is left after `grace_s`."""
        for child in list(self.alive.values()):
            child.send(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.alive and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        for child in list(self.alive.values()):
            child.stop(signal.SIGKILL, grace_s=1.0)
            self.forget(child)

"""The start-up handshake of the helper processes a rig runs (sim board supervisor, medium,
gateway stand-ins): each prints one line starting with READY once it listens."""

from __future__ import annotations

import select
import time
from typing import IO


def ready_line(stdout: IO[str], timeout_s: float) -> str:
    """The process's READY line, or the last line it printed ("" at EOF or on timeout)."""
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdout], [], [], 0.1)
        if ready:
            line = stdout.readline()
            if line.startswith("READY") or not line:
                break
    return line

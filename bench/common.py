"""Helpers shared by the benchmarks: timing on CPython and on the MicroPython unix port."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.interp import ROOT, micropython_binary


def per_call(fn: Callable[[], object], number: int = 1000, repeat: int = 5) -> float:
    """Seconds per call, the best of `repeat` runs (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def run_micropython(code: str, heapsize: str | None = None, path: Path = ROOT) -> str:
    """Run a script on the MicroPython unix port with the repository importable; its stdout."""
    binary = micropython_binary()
    if binary is None:
        raise RuntimeError("micropython is not installed: run `make setup`")
    cmd = [binary] + (["-X", f"heapsize={heapsize}"] if heapsize else []) + ["-c", code]
    env = dict(os.environ, MICROPYPATH=f"{path}:.frozen")
    done = subprocess.run(cmd, cwd=path, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""The firmware as the nodes run it: protocol/ and firmware/ precompiled by mpy-cross.

A battery node is a new MicroPython process at every wake-up; compiling the sources each time
would cost about twice the CPU of the whole wake-up. Precompiled modules are also what a real
node runs (`city-node flash` copies .mpy files). These are portable bytecode (no `-march`), for
the unix port; the ESP32 build adds `-march=xtensawin` (dev/compile_firmware.py).

The compiled tree is a cache: a module is compiled again when its source is newer, and a
compiled module whose source is gone is deleted (it would still be importable). If the
interpreter cannot load the result (an mpy-cross of another bytecode version), the nodes run
from the sources instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "firmware")


def _tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def micropython_binary() -> str:
    return _tool("micropython")


def compile_tree(out: Path, root: Path = ROOT) -> list[str]:
    """Bring `out` up to date with the sources; returns error lines (empty when all compiled)."""
    sources = sorted(p for top in PACKAGES for p in (root / top).rglob("*.py"))
    wanted = {out / p.relative_to(root).with_suffix(".mpy"): p for p in sources}
    for stale in out.rglob("*.mpy") if out.exists() else ():
        if stale not in wanted:
            stale.unlink(missing_ok=True)
    todo = [
        (dest, src)
        for dest, src in wanted.items()
        if not dest.exists() or dest.stat().st_mtime_ns < src.stat().st_mtime_ns
    ]

    def build(job: tuple[Path, Path]) -> str:
        dest, src = job
        dest.parent.mkdir(parents=True, exist_ok=True)
        rel = src.relative_to(root)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")  # runs may share the cache
        done = subprocess.run(
            [_tool("mpy-cross"), "-s", str(rel), "-o", str(tmp), str(src)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            return f"{rel}: {done.stderr.strip()}"
        tmp.replace(dest)
        return ""

    with ThreadPoolExecutor(max_workers=2) as pool:
        errors = [e for e in pool.map(build, todo) if e]
    return errors


def module_path(cache: Path, root: Path = ROOT) -> tuple[Path, str]:
    """(folder the nodes import from, what it is) after compiling into `cache`."""
    try:
        errors = compile_tree(cache, root)
    except OSError as exc:
        errors = [str(exc)]
    if not errors and _loads(cache):
        return cache, "precompiled .mpy"
    return root, "sources (mpy-cross unavailable or incompatible: " + "; ".join(errors)[:200] + ")"


def _loads(path: Path) -> bool:
    try:
        done = subprocess.run(
            [micropython_binary(), "-c", "import firmware.node.app, protocol.oscore"],
            env={"MICROPYPATH": f"{path}:.frozen", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0

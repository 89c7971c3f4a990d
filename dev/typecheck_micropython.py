"""Type-check firmware/ and protocol/ against the MicroPython ESP32 stubs.

The stubs carry their own standard library (MicroPython's `hashlib`, `socket`, `time` with
`ticks_ms`...), so mypy runs with them as its typeshed: a call that exists only on CPython fails
here. Not strict: the shared subset cannot import `typing` at run time, so most of it is
unannotated; what is checked is every call against what MicroPython really offers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / ".venv" / "mpy-stubs"


def main() -> int:
    targets = [t for t in ("protocol", "firmware") if any((ROOT / t).rglob("*.py"))]
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--custom-typeshed-dir",
        str(STUBS),
        "--python-version",
        "3.11",
        "--no-site-packages",
        "--check-untyped-defs",
        "--explicit-package-bases",
        "--config-file",
        str(ROOT / "dev" / "mypy-micropython.ini"),
        *targets,
    ]
    env = dict(os.environ, MYPYPATH=str(STUBS))
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

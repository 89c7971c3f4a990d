"""Layering check: only firmware/boards/ may import the hardware modules.

Everything else reaches pins, radios and sleep through the board object, so the same code runs
on an ESP32 and on the unix port's simulated board.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARDWARE = {"machine", "network", "esp32", "esp", "umachine"}
ALLOWED = ROOT / "firmware" / "boards"
CHECKED = ("firmware", "protocol", "gateway", "hil", "tools")


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in HARDWARE:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    return found


def main() -> int:
    problems = []
    for top in CHECKED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if ALLOWED not in path.parents:
                problems += offences(path)
    for line in problems:
        print(line)
    if problems:
        print("layering: hardware modules may only be imported under firmware/boards/")
        return 1
    print("layering: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

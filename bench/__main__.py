"""Run every benchmark module in bench/ (each has a `main()` that prints its own table).

`python -m bench` runs them all; `python -m bench cbor oscore` runs some.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if not m.name.startswith("_") and m.name != "common"
    )


def main(argv: list[str]) -> int:
    names = argv or available()
    print(
        f"bench on {platform.machine()}, CPython {platform.python_version()}; "
        "times are ratios against a baseline measured in the same run"
    )
    for name in names:
        print(f"\n== {name} ==")
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

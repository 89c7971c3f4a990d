"""`city-node flash`: MicroPython onto a blank ESP32 (esptool), then the application (mpremote).

The application goes in two phases so a failed copy (cable pulled, power lost, flash full)
never leaves a node that boots half of one version and half of another:

1. every file of the image is written under /.stage/ and read back (SHA-256 on the node);
2. one short step swaps it in: main.py first goes (a cut from here on boots to the REPL,
   where a new flash can reach it), the packages and boot.py are renamed into place, then
   app.json, and main.py last.

A node whose /app.json already matches the image is left alone unless forced.

The tuned firmware (firmware-build/README.md) has the application frozen in: esptool writes it
like a MicroPython image (same offsets, the chip erased) and nothing is copied; the check after
the flash (`frozen_application`) makes sure the node runs that build and that no copy of the
application on its filesystem shadows the frozen one (the filesystem comes first in sys.path).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tools.image import MANIFEST, Image
from tools.node import REMOVE_TREE, CopyFailed, NodeConnection, NodeError

STAGE = ".stage"
# ESP32 (original) images start at 0x1000; the S2/S3/C3 ones at 0 (esptool --chip picks it)
IMAGE_OFFSETS = {"esp32": "0x1000", "esp32s2": "0x1000", "esp32s3": "0x0", "esp32c3": "0x0"}


# firmware-build/mpconfigboard.h: sys.implementation._machine of the tuned build starts with it
BOARD_NAME = "City sensor node (tuned)"
# the application's top-level packages, which must not be on the filesystem of a tuned node
APP_PACKAGES = ("firmware", "protocol")
FROZEN_CHECK = (
    "import os, sys\n"
    "try:\n"
    "    from firmware.node.app import FIRMWARE as _v\n"
    "except ImportError:\n"
    "    _v = None\n"
    f"print(repr((sys.implementation._machine, _v, [n for n in {APP_PACKAGES!r} "
    "if n in os.listdir()])))\n"
)


class FlashError(NodeError):
    pass


@dataclass(frozen=True)
class FlashResult:
    copied: int  # files written (0: the node already had this image)
    bytes: int
    version: str


def esptool_command(port: str, image: Path, chip: str = "esp32", baud: int = 460800) -> list[str]:
    offset = IMAGE_OFFSETS.get(chip)
    if offset is None:
        raise FlashError(f"unknown chip {chip!r}: one of {', '.join(IMAGE_OFFSETS)}")
    return [
        sys.executable,
        "-m",
        "esptool",
        "--chip",
        chip,
        "--port",
        port,
        "--baud",
        str(baud),
        "write-flash",
        "--erase-all",
        "-z",
        offset,
        str(image),
    ]


def write_micropython(
    port: str, image: Path, chip: str = "esp32", baud: int = 460800, run: bool = True
) -> list[str]:
    """Erase the chip and write the MicroPython image through its ROM bootloader."""
    if port.startswith("socket://"):
        raise FlashError(
            f"{port} is the sim rig's board: it has no ROM bootloader, MicroPython is already "
            "there. Leave out --image"
        )
    if not image.is_file():
        raise FlashError(f"no MicroPython image at {image}")
    command = esptool_command(port, image, chip, baud)
    if not run:
        return command
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        text = (done.stdout + done.stderr).strip().splitlines()
        tail = text[-1] if text else f"exit {done.returncode}"
        hint = ""
        if "Failed to connect" in done.stdout + done.stderr:
            hint = " (hold BOOT, tap EN, release BOOT, and try again)"
        raise FlashError(f"esptool could not write {image.name}: {tail}{hint}")
    return command


def frozen_application(node: NodeConnection) -> str:
    """The version of the application frozen into the node's tuned firmware, or FlashError."""
    answer = node.exec(FROZEN_CHECK, timeout=20).strip().splitlines()
    try:
        machine, version, shadows = ast.literal_eval(answer[-1] if answer else "")
    except (ValueError, SyntaxError, TypeError):
        raise FlashError(
            f"the node's answer to the firmware check is not readable: {answer!r}"
        ) from None
    return judge_frozen(str(machine), version, list(shadows))


def judge_frozen(machine: str, version: object, shadows: list[str]) -> str:
    if not machine.startswith(BOARD_NAME):
        raise FlashError(
            f"the node runs {machine!r}, not the tuned firmware ({BOARD_NAME}): build it "
            "(firmware-build/README.md) and flash its firmware.bin with --firmware"
        )
    if shadows:
        folders = ", ".join(f"/{name}" for name in shadows)
        raise FlashError(
            f"{folders} on the node's filesystem shadow the frozen application (a stock "
            "`city-node flash` copied them): flash --firmware again, which erases the chip"
        )
    if not isinstance(version, str):
        raise FlashError("the firmware has no application frozen in: rebuild it")
    return version


def installed_manifest(node: NodeConnection) -> dict[str, object] | None:
    raw = node.read_file(MANIFEST)
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) else None


def copy_application(
    node: NodeConnection,
    image: Image,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> FlashResult:
    """Stage, verify and swap in the image; see the module docstring."""
    current = installed_manifest(node)
    if not force and current is not None and current.get("files") == image.files:
        return FlashResult(0, 0, image.version)
    names = sorted(image.files)
    written = 0
    try:
        node.remove_tree(STAGE)
        folders = sorted({f"{STAGE}/{r.rsplit('/', 1)[0]}" for r in image.files if "/" in r})
        node.makedirs(STAGE)
        for folder in folders:
            node.makedirs(folder)
        for i, rel in enumerate(names):
            data = image.data(rel)
            node.write_file(f"{STAGE}/{rel}", data)
            written += len(data)
            if progress is not None:
                progress(rel, i + 1, len(names))
        node.write_file(f"{STAGE}/{MANIFEST}", (image.folder / MANIFEST).read_bytes())
    except NodeError as exc:
        raise CopyFailed(
            f"{exc}. The application on the node is unchanged (the copy was staged in "
            f"/{STAGE}): run `city-node flash` again"
        ) from None
    swap(node, image)
    return FlashResult(len(names), written, image.version)


def swap(node: NodeConnection, image: Image) -> None:
    tops = sorted({rel.split("/", 1)[0] for rel in image.files} | {MANIFEST})
    order = [t for t in tops if t != "main.py"] + (["main.py"] if "main.py" in tops else [])
    code = (
        "import os\n"
        "_rm('main.py')\n"
        f"for _t in {order!r}:\n"
        "    _rm(_t)\n"
        f"    os.rename({STAGE!r} + '/' + _t, _t)\n"
        f"_rm({STAGE!r})\n"
    )
    try:
        node.exec(REMOVE_TREE + code, timeout=30)
    except NodeError as exc:
        raise CopyFailed(
            f"swapping the new application in failed: {exc}. The node has no main.py now and "
            "stays at its REPL: run `city-node flash` again"
        ) from None

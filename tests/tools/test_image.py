"""The application image `city-node flash` copies: what is in it, and what `load` refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tools import image


def test_the_image_is_the_compiled_tree_with_boot_and_main_as_source(
    app_image: image.Image,
) -> None:
    files = app_image.files
    assert "main.py" in files and "boot.py" in files
    assert "firmware/main.mpy" not in files and "firmware/boot.mpy" not in files
    assert (app_image.folder / "main.py").read_bytes() == (
        image.ROOT / "firmware/main.py"
    ).read_bytes()
    compiled = [f for f in files if f.endswith(".mpy")]
    assert "protocol/schema.mpy" in compiled and "firmware/node/app.mpy" in compiled
    # every module but boot and main, plus the ULP program's generated module at the root
    assert len(compiled) == len(image.sources()) - 2 + 1
    assert "ulp_pulse.mpy" in compiled
    # mpy-cross output: .mpy version 6, bytecode only (no native code, so no architecture in
    # the header: the sim board's unix port loads the very files an ESP32 gets)
    header = (app_image.folder / "protocol/cbor.mpy").read_bytes()[:4]
    assert header[0:1] == b"M" and header[1] == 6
    assert header[2] >> 2 == 0
    manifest = json.loads((app_image.folder / image.MANIFEST).read_text())
    assert manifest["arch"] == "xtensawin"
    assert manifest["files"] == files


def test_the_same_sources_build_once(app_image: image.Image) -> None:
    again = image.build()
    if again.files == app_image.files:  # (unless someone edited the firmware meanwhile)
        assert again.folder == app_image.folder


def test_a_tampered_image_is_refused(app_image: image.Image, tmp_path: Path) -> None:
    copy = tmp_path / "app"
    shutil.copytree(app_image.folder, copy)
    assert image.load(copy).files == app_image.files
    (copy / "protocol" / "cbor.mpy").write_bytes(b"M\x06broken")
    with pytest.raises(image.ImageError, match=r"protocol/cbor\.mpy is missing or differs"):
        image.load(copy)
    with pytest.raises(image.ImageError, match="is not an application image"):
        image.load(tmp_path)

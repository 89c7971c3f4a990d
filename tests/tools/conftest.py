"""The technician tool runs against the sim rig's virtual boards (hil/simserial.py) and a
gateway's registry and key folders in tmp_path: the same code paths as on a real node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.rig import SimRig
from tools import image


@pytest.fixture(scope="session")
def app_image() -> image.Image:
    return image.build()


@pytest.fixture
def sim(tmp_path: Path, app_image: image.Image) -> Iterator[SimRig]:
    rig = SimRig(tmp_path / "rig", app_image)
    try:
        yield rig
    finally:
        rig.close()

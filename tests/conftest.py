"""Shared fixtures: `interp` runs a test body under CPython and under MicroPython.

Hypothesis runs derandomized (the same examples every run), so `make test` passes or fails
on the code, not on the draw. `HYPOTHESIS_PROFILE=explore make test` draws new examples each
run to look for new failures; add any it finds as an `@example`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from tests.support.interp import CPython, MicroPython, micropython_binary

INTERPRETERS = ["cpython", "micropython"]

settings.register_profile("suite", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def _micropython_or_skip() -> None:
    if micropython_binary() is not None:
        return
    if platform.machine() == "x86_64":
        pytest.fail("the micropython command is missing: run `make test`, which installs it")
    pytest.skip(
        f"no MicroPython unix-port wheel for {platform.machine()} on PyPI; "
        "MicroPython-side tests run on x86_64 only"
    )


@pytest.fixture(scope="module")
def _mpy_process() -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {}
    yield holder
    if "mp" in holder:
        holder["mp"].close()


def _live_micropython(holder: dict[str, Any]) -> MicroPython:
    mp = holder.get("mp")
    if mp is None or mp.proc.poll() is not None:
        mp = holder["mp"] = MicroPython()
    return mp


@pytest.fixture(params=INTERPRETERS)
def interp(request: pytest.FixtureRequest, _mpy_process: dict[str, Any]) -> Any:
    """The interpreter under test; `interp.module(name)` imports a module on it."""
    if request.param == "cpython":
        return CPython()
    _micropython_or_skip()
    return _live_micropython(_mpy_process)


@pytest.fixture
def mpy(_mpy_process: dict[str, Any]) -> MicroPython:
    """MicroPython only: for firmware, which never runs on CPython."""
    _micropython_or_skip()
    return _live_micropython(_mpy_process)

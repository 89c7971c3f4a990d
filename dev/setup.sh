#!/bin/sh
# One-step set-up for a fresh Debian machine: the Debian peers the tests use, a virtual env
# with the pinned Python dependencies, and the MicroPython stubs for the firmware type check.
# Idempotent: a second run installs nothing.
set -eu
cd "$(dirname "$0")/.."

# Debian packages, each named by a command it provides.
#   libcoap3-bin: coap-client-notls / coap-server-notls, an independent CoAP implementation
#   socat: the serial-over-TCP bridge behind the simulated board
#   mosquitto: a real MQTT broker for the sink tests
#   chromium: the headless browser the web page tests drive (through Playwright)
APT_NEEDS="coap-server-notls:libcoap3-bin socat:socat mosquitto:mosquitto chromium:chromium"
missing=""
for pair in $APT_NEEDS; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

VENV=.venv
STAMP=$VENV/.installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]"
    # The MicroPython stubs shadow CPython's standard library (their own hashlib, socket...),
    # so they live in their own folder, used only by the firmware/protocol type check.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --upgrade \
        --target "$VENV/mpy-stubs" \
        micropython-esp32-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2
    touch "$STAMP"
fi

# The ULP assembler (micropython-esp32-ulp, pure Python): tools/image.py assembles the leak
# node's pulse counter (firmware/boards/esp32/ulp_pulse.S) on the host. Its sdist has no
# setup.py, so pip cannot install it: fetch the pinned sdist, check its hash, unpack the package.
ULP_VERSION=1.2.0
ULP_SHA256=32754c92a01959a5a0742e0edf8d39e809dc4d317fc9c869b732b7f0d52d44de
ULP_URL=https://files.pythonhosted.org/packages/82/cb/43243e6dc7de3a12d760269b2122dac79b54564839a0f5012ca28dfae53e/micropython-esp32-ulp-$ULP_VERSION.tar.gz
"$VENV/bin/python" - "$ULP_URL" "$ULP_SHA256" "$ULP_VERSION" <<'PY'
import hashlib, io, sys, sysconfig, tarfile, urllib.request
from pathlib import Path

url, sha256, version = sys.argv[1:4]
site = Path(sysconfig.get_paths()["purelib"])
stamp = site / "esp32_ulp" / "VERSION"
if stamp.is_file() and stamp.read_text().strip() == version:
    sys.exit(0)
data = urllib.request.urlopen(url, timeout=60).read()
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit("setup: micropython-esp32-ulp sdist: SHA-256 mismatch, not installed")
top = "micropython-esp32-ulp-%s/esp32_ulp/" % version
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    for m in tar.getmembers():
        if m.isfile() and m.name.startswith(top) and "/" not in m.name[len(top):]:
            (site / "esp32_ulp").mkdir(exist_ok=True)
            (site / "esp32_ulp" / m.name[len(top):]).write_bytes(tar.extractfile(m).read())
stamp.write_text(version + "\n")
print("setup: installed esp32_ulp", version)
PY

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

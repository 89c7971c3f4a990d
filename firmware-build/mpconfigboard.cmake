# The tuned node firmware: MicroPython's ESP32_GENERIC settings without BLE (no node uses it:
# less image to load and less RAM taken), this folder's fast-wake sdkconfig, and the
# application frozen by manifest.py. Build: README.md here.
set(IDF_TARGET esp32)

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${SDKCONFIG_IDF_VERSION_SPECIFIC}
    ${MICROPY_BOARD_DIR}/sdkconfig.board
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)

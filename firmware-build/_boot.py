# _boot.py of the tuned node firmware, frozen into it by manifest.py (this folder's README.md).
# MicroPython's ESP32 port runs the frozen _boot.py first on every start, soft resets included,
# then boot.py and (at the friendly REPL only) main.py from the filesystem. The port's own
# _boot.py only mounts littlefs; this one mounts it the same way and then starts the frozen
# application itself: a deep-sleep wake looks up no boot.py or main.py and loads no .mpy file,
# which with image validation skipped (sdkconfig.board) is the 70 ms wake bench/node.py counts.
#
# After a soft reset (Ctrl-D at the REPL) it returns instead, and the REPL stays free for the
# technician's tools, as main.py does for the stock image. Every other start (power on, EN,
# machine.reset(), the watchdog, a deep-sleep wake) runs the application; Ctrl-C while it is
# awake reaches the REPL as before (the global handler in app.main() lets KeyboardInterrupt by).
import gc

import vfs
from flashbdev import bdev

try:
    if bdev:
        vfs.mount(bdev, "/")
except OSError:
    # a blank or corrupt filesystem (first start after `city-node flash --firmware`, which
    # erases the chip): the port's inisetup formats littlefs, as the stock _boot.py does
    import inisetup

    inisetup.setup()

# as firmware/boot.py does for the stock image (why 16 KB: firmware/node/app.py _GC_THRESHOLD)
gc.threshold(16384)

import machine  # noqa: E402 - after the mount, as in the port's _boot.py

if machine.reset_cause() != machine.SOFT_RESET:
    del machine
    from firmware.node import app

    app.main()

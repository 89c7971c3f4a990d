# The simulated board: the Board interface (firmware/boards/__init__.py) on the MicroPython unix
# port. The node's folder is its working directory and flash; `.sim/` beside it (or $SIM_STATE)
# holds what stands in for the hardware:
#
#   board.json   the "hardware": {"speed": 1.0, "position": [x_m, y_m], "medium": [host, port],
#                "control_port": 0, "observer": [host, port], "unique_id": "hex",
#                "power_cut_after_bytes": n, "uart_devices": {"2": "a02yyuw", "1": "ld2410"},
#                "wlan": {"ssid": ..., "password": ...}, "epoch_s": first power-on time}
#   scenario.json  sensors: {"start": epoch_s, "signals": {...}, "timeline": [[t_s, {...}], ...]}
#                (t_s relative to start); see sim/scenario.py for the signal names
#   boot.json    written by the launcher before each start: {"reset_cause", "wake_reason",
#                "epoch_ms", "power_on_epoch_ms"}; absent = power-on now
#   exit.json    written by the board before the process ends: {"reason": "deep_sleep" |
#                "reset" | "watchdog" | "soft", "epoch_ms", "wake_epoch_ms", "wake_pins":
#                [[pin, level]]}; "soft" when the interpreter ends by itself (main.py returned,
#                the REPL quit): the next start is a soft reset, RTC memory kept
#   rtc.bin      RTC memory (deleted by the launcher on a power loss)
#   wdt          touched on every watchdog feed; holds the timeout in real ms for the launcher
#
# Exit codes: 100 deep sleep, 101 reset, 102 watchdog; killed by SIGKILL = power loss.
# Time: a virtual clock, epoch_ms from boot.json plus the real time awake times "speed", so a
# test can run CoAP back-off or a 15-minute sleep without waiting for it.

from firmware.boards.sim.board import EXIT_DEEP_SLEEP, EXIT_RESET, EXIT_WATCHDOG, Board

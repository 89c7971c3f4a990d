# The board layer: the ONLY code that imports machine, network or esp32 (dev/check_layering.py
# keeps it so). Everything above it (drivers, kinds, node runtime) reaches pins, buses, sleep and
# radios through one Board object, so the same firmware runs on an ESP32 and, in every test, on
# the MicroPython unix port through the simulated board.
#
#   board = firmware.boards.load()        esp32 on an ESP32, sim anywhere else
#
# Board interface (both boards implement exactly this; values are plain ints/bytes/str):
#
#   name                   "esp32" | "sim"
#   RTC_MEMORY_SIZE        2048: bytes of RTC memory that survive deep sleep and soft/hard/
#                          watchdog resets (not a power loss)
# Files and time
#   path(name) -> str      a file in the node's flash filesystem (littlefs "/" on the ESP32; the
#                          node's folder, i.e. the working directory, on the sim)
#   open(name, mode)       open a flash file; use this (not open()) for data that must survive
#                          power loss, so the sim can count writes and inject a power cut
#   ticks_ms() -> int      monotonic ms; compare with ticks_diff(a, b) (wraps like time.ticks_ms)
#   ticks_diff(a, b), ticks_add(t, ms), sleep_ms(ms)
#   light_sleep_ms(ms)     wait with the CPU stopped (ESP32 light sleep, 0.8 mA; RAM, pins and
#                          the SX127x keep going): the LoRa driver's waits for TxDone and RxDone.
#                          Only with WiFi off. The sim just waits.
#   time() -> int          wall clock, Unix epoch seconds; keeps running through deep sleep;
#                          meaningless until set_time() after the gateway's time sync
#   set_time(epoch_s)
# Identity, resets, sleep
#   unique_id() -> bytes   factory id (MAC on the ESP32)
#   reset_cause() -> str   "power_on" | "hard" | "watchdog" | "deep_sleep" | "soft" | "brownout"
#                          | "unknown"
#   wake_reason() -> str   "timer" | "pin" | "none" (after a deep-sleep reset)
#   rtc_read() -> bytes    RTC memory contents (b"" after power-on)
#   rtc_write(data)        at most RTC_USER_SIZE bytes (the board keeps the last 8 for itself)
#   wake_on_pin(pin, level)   arm a deep-sleep wake-up on an RTC-capable pin (ext0 on ESP32)
#   deep_sleep(ms)         never returns: the next start is a "deep_sleep" reset, RTC kept
#   reset()                never returns: a "hard" reset, RTC kept
#   watchdog(timeout_ms) -> obj with feed()   (cannot be stopped once started, like machine.WDT)
# GPIO and buses (the objects satisfy the subsets listed in firmware/drivers/__init__.py)
#   pin(id, mode="in"|"out", pull=None|"up"|"down", value=None) -> value()/value(v)/irq(...)
#   adc(pin) -> read_u16(), read_uv()       ESP32: ADC1 pins only (32-39): ADC2 stops working
#                                           while WiFi is on, so adc() refuses ADC2 pins
#   pwm(pin, freq=1000, duty_u16=0) -> duty_u16()/duty_u16(v), freq(), deinit()
#   i2c(bus, scl, sda, freq=400000)   spi(bus, sck, mosi, miso, baudrate=8000000)
#   uart(bus, tx, rx, baudrate=9600, timeout_ms=0)
#   time_pulse_us(pin, level, timeout_us) -> like machine.time_pulse_us (HC-SR04 echo)
#   pulse_counter(pin) -> obj with value(): rising edges since power-on, kept across deep
#                          sleep; quiet_s() seconds since the last one and dry() zero-flow
#                          hours seen (None where the board cannot tell). ESP32: the ULP
#                          coprocessor counts awake and asleep (boards/esp32/ulp_pulse.S, pins
#                          34-39); elsewhere esp32.PCNT while awake plus an ext0 wake-up per
#                          edge asleep. Sim: every scripted edge counts.
# Networks
#   wlan_connect(ssid, password, timeout_ms) -> bool;  wlan_rssi() -> int or None;  wlan_off()
#   udp(port=0) -> endpoint: sendto(data, addr); recv(timeout_ms) -> bytes or None (0: only
#           what has arrived); recvfrom(timeout_ms) -> (bytes, addr) or None; close(). addr is
#           (host, port) or what recvfrom gave. Bound to `port` when given (a lamp's server).
#           WiFi on the ESP32; plain UDP on 127.0.0.1 on the sim.
#   service()              background work: the sim reads its control socket and fires pin
#                          interrupts here; a no-op on the ESP32. Main loops call it often.
#   lora(**settings) -> radio with the sx127x.SX127x API (send, receive, start_receive, poll,
#           rssi_dbm, snr_db, sleep, standby); settings as its constructor's keywords. The sim
#           returns a client of the simulated radio medium (hil/medium.py) with the same API.
#   pins: dict             the board's default pin map (role -> pin or bus settings); config's
#                          "pins" section overrides it key by key


def load():
    """The board this firmware runs on; built once per boot."""
    import sys

    if sys.platform == "esp32":
        from firmware.boards.esp32 import Board
    else:
        from firmware.boards.sim import Board  # type: ignore[assignment]
    return Board()


# Reset causes and wake reasons, shared by both boards so callers compare against one spelling.
RESET_CAUSES = ("power_on", "hard", "watchdog", "deep_sleep", "soft", "brownout", "unknown")
WAKE_REASONS = ("timer", "pin", "none")
RTC_MEMORY_SIZE = 2048
RTC_USER_SIZE = RTC_MEMORY_SIZE - 8

# Default pin map (ESP32 GPIO numbers; the sim uses the same numbers as scenario keys). Input-only
# pins 34-39 are ADC1 and RTC-capable (deep-sleep wake-up); 0, 2, 12 and 15 are strapping pins and
# stay free. The SX1276 wiring is the common LoRa32 one.
PINS = {  # type: dict
    "i2c": {"bus": 0, "scl": 22, "sda": 21},
    "spi": {"bus": 1, "sck": 5, "mosi": 27, "miso": 19},
    "lora": {"cs": 18, "reset": 14, "dio0": 26},
    "ranger_uart": {"bus": 2, "tx": 17, "rx": 16},
    "radar_uart": {"bus": 1, "tx": 23, "rx": 13},
    "hcsr04": {"trigger": 33, "echo": 32},
    "meter": 34,
    "probe": 35,
    "battery": 36,
    "pir": 39,
    "temp": 39,  # the bin's NTC shares the PIR's ADC1 pin: no kind has both
    "lamp": 25,
    "tilt": 4,
}

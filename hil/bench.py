"""The HIL figures at full counts, on the sim rig (what `pytest tests/hil --long` checks, timed):

    python -m hil.bench            (bench/hil.py can wrap `main` for `python -m bench hil`)

- the application copied by mpremote, and a node provisioned (keys, config, registration)
- 100 deep-sleep cycles of a leak node through the real gateway: continuity of the record
  counter, no duplicate upstream, real seconds per cycle
- the lighting wave: presence at lamp 1 to lamps 2 and 3 lit, over five walkers
- LoRa at SF12 over three simulated hours: the worst hour's airtime against the budget

Times are wall-clock on this machine, which runs the sim boards, the gateway and mosquitto at
once: a 64-bit PC standing in for an ESP32 and a Raspberry Pi, so only the ratios and the
protocol figures (airtime, counts) carry over.
"""

from __future__ import annotations

import importlib
import socket
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from hil.gateway import reading_data, wait_until
from hil.rig import SimRig
from protocol import airtime


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flash_and_cycles(workdir: Path, cycles: int = 100) -> list[list[Any]]:
    rig = SimRig(workdir)
    try:
        dut = rig.dut("leak-b", kind="leak", preflash=False)
        image = rig.image()
        started = time.perf_counter()
        result = dut.flash()
        flash_s = time.perf_counter() - started
        started = time.perf_counter()
        dut.provision("leak", report_s=60)
        provision_s = time.perf_counter() - started
        rig.gateway.start()
        started = time.perf_counter()
        readings = rig.gateway.wait_readings(
            "leak-b",
            lambda rs: sum(r["kind"] == "leak" for r in rs) >= cycles,
            timeout=30 + cycles * 3,
            what=f"{cycles} cycles",
        )
        cycles_s = time.perf_counter() - started
        seqs = [reading_data(r)["seq"] for r in readings]
        gaps = len(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
        ids = [r["id"] for r in readings]
        return [
            ["flash (mpremote)", "files / KiB", f"{result.copied} / {result.bytes / 1024:.0f}"],
            ["flash (mpremote)", "seconds", f"{flash_s:.1f}"],
            ["provision", "seconds", f"{provision_s:.1f}"],
            ["deep sleep", "cycles", cycles],
            ["deep sleep", "real s per cycle", f"{cycles_s / cycles:.2f}"],
            ["deep sleep", "record counter gaps", gaps],
            ["deep sleep", "duplicates upstream", len(ids) - len(set(ids))],
            ["image", "version", image.version],
        ]
    finally:
        rig.close()


def lighting_wave(workdir: Path, walkers: int = 5) -> list[list[Any]]:
    rig = SimRig(workdir)
    try:
        lamps = {}
        for i in (1, 2, 3):
            dut = rig.dut(f"lamp-{i}", kind="lighting", speed=1.0)
            neighbours = ("lamp-2", "lamp-3") if i == 1 else ()
            dut.provision("lighting", listen_port=_free_udp_port(), neighbours=neighbours)
            lamps[dut.node_id] = dut
        rig.gateway.start()
        for node_id in lamps:
            wait_until(partial(rig.gateway.readings, node_id, "status"), 60, node_id)
        own: list[float] = []
        ahead: list[float] = []
        for _ in range(walkers):
            rest = {n: d.lamp_duty() for n, d in lamps.items()}
            edge = lamps["lamp-1"].presence()

            def lit(node_id: str, edge: float = edge, rest: dict[str, float] = rest) -> float:
                for at, duty in lamps[node_id].lamp_events():
                    if at >= edge and duty > rest[node_id]:
                        return at
                return 0.0

            def all_lit(lit: Any = lit) -> dict[str, float] | None:
                found = {n: lit(n) for n in lamps}
                return found if all(found.values()) else None

            times = wait_until(all_lit, 10, "the wave")
            own.append((times["lamp-1"] - edge) * 1000)
            ahead += [(times[n] - edge) * 1000 for n in ("lamp-2", "lamp-3")]
            # back to rest for the next walker (hold_s is a minute at speed 1): power-cycle
            for dut in lamps.values():
                dut.power_cut(0.2)
            time.sleep(3)
        return [
            ["lighting wave", "walkers", walkers],
            ["lighting wave", "own lamp ms (median / max)", _spread(own)],
            ["lighting wave", "lamps ahead ms (median / max)", _spread(ahead)],
        ]
    finally:
        rig.close()


def lora_hours(workdir: Path, hours: int = 3) -> list[list[Any]]:
    rig = SimRig(workdir)
    try:
        rig.with_medium(time_scale=20)
        rig.gateway.settings.lora_sf = 12
        rig.gateway.write_config()
        dut = rig.dut("bin-lora", kind="binfill", position=(800.0, 0.0))
        dut.provision("binfill", link="lora", lora={"sf": 12}, report_s=120)
        rig.gateway.start()
        start = dut.state()["virtual_ms"]
        wait_until(
            lambda: dut.state()["virtual_ms"] - start >= hours * 3_600_000,
            120 * hours,
            "simulated hours",
            interval=0.5,
        )
        band = airtime.subband(868_100_000, 125_000)
        audit = rig.medium_stats()["senders"]["800,0"][band]
        delivered = len(rig.gateway.readings("bin-lora"))
        return [
            ["LoRa SF12", "simulated hours", hours],
            ["LoRa SF12", "frames sent", audit["frames"]],
            ["LoRa SF12", "worst hour airtime ms", f"{audit['max_hour_ms']:.0f}"],
            ["LoRa SF12", "budget ms (1 %)", audit["budget_ms"]],
            ["LoRa SF12", "readings delivered", delivered],
        ]
    finally:
        rig.close()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} / {max(values):.0f}"


def main() -> None:
    table = importlib.import_module("bench.common").table
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp:
        rows += flash_and_cycles(Path(tmp) / "cycles")
        rows += lighting_wave(Path(tmp) / "wave")
        rows += lora_hours(Path(tmp) / "lora")
    print("sim rig (64-bit PC: wall times are this machine's, not an ESP32's)")
    print(table(["scenario", "figure", "value"], rows))


if __name__ == "__main__":
    main()

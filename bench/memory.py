"""The gateway's memory after one million readings (issue 5): does anything grow with traffic?

A child process runs the real Agent as `city-gateway` would with the default embedded parts
(SQLite store, group commit with FULL, the local spool as upstream, forwarding on) and no
radio link: readings enter where the links hand them over, `decode_uplink` (the CBOR record
and schema checks) then `Pipeline.handle` (the durable commit), from CONCURRENCY nodes at once
out of NODES registered. It samples the agent's resident set (VmRSS after a `gc.collect()`,
plus its database writer process's) as the readings go in, and once the forwarders have
drained everything to the spool.

The baseline is the same process after a warm-up of WARMUP readings (imports done, caches and
SQLite's page cache filling): the figure is RSS / that, and the growth per 100,000 readings
from the first sample past SAMPLES[0] readings (the caches full by then) to the end. A gateway
that keeps something per reading (an id set, an unbounded queue, a metrics label per node and
reading) shows it here as steady growth.

    python -m bench memory              # one million readings, ~6 minutes on 2 cores
    python -m bench.memory --readings 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import table
from gateway import registry
from gateway.agent import Agent
from gateway.config import load
from gateway.registry import Node
from gateway.store import connect
from gateway.store.db import apply_schema
from gateway.uplink import decode_uplink
from protocol import cbor, schema
from tests.support.interp import ROOT

READINGS = 1_000_000
WARMUP = 20_000
NODES = 1000
CONCURRENCY = 256
SAMPLES = (100_000, 250_000, 500_000, 750_000)


def rss_kib(pid: int | str = "self") -> int:
    """Resident set of a process (this one after a `gc.collect()`), KiB."""
    if pid == "self":
        gc.collect()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _agent_rss(agent: Agent) -> int:
    """The agent's resident set, its database writer process included."""
    writer = agent.db.writer_process
    return rss_kib() + (rss_kib(writer) if writer is not None else 0)


def _config(folder: Path) -> Path:
    config = folder / "gateway.toml"
    config.write_text(
        'data_dir = "data"\n'
        "[links.coap]\nenabled = false\n"
        "[http]\nenabled = false\n"
        "[sinks.spool]\nenabled = true\n"
        # forward as fast as the spool takes it: the default drain rate would pace the
        # backlog the ingest builds up, and this measures memory, not the pacing
        "[forwarding]\ndrain_max_rate = 1000000\n"
        '[logging]\nlevel = "WARNING"\n'
    )
    return config


def _register(folder: Path) -> list[str]:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    conn = connect(data / "gateway.db")
    apply_schema(conn, [registry.SCHEMA])
    nodes = [f"meter-{i:04d}" for i in range(NODES)]
    for node in nodes:
        registry.add_node(conn, Node(node, "leak", "coap"))
    conn.close()
    return nodes


def _pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])


async def _run(folder: Path, readings: int) -> dict[str, Any]:
    nodes = _register(folder)
    agent = Agent(load(_config(folder)), links=[])
    await agent.start()
    samples: list[tuple[int, int]] = [(0, _agent_rss(agent))]
    sent = 0
    marks = sorted({WARMUP, *SAMPLES, readings} & set(range(1, readings + 1)))

    async def node_loop(index: int) -> None:
        nonlocal sent
        node = nodes[index % NODES]
        seq = 0
        while sent < readings:
            sent += 1
            seq += 1
            record = {"type": "leak", "volume_l": sent, "flow_lh": 7, "seq": seq & 0xFFFF}
            payload = cbor.dumps(schema.encode_uplink(record))
            # one sequence space per task: tasks sharing a node use disjoint request seqnos
            uplink = decode_uplink(
                node, index * 10_000_000 + seq, payload, time.time(), link="coap"
            )
            await agent.pipeline.handle(uplink)
            if marks and sent >= marks[0]:
                marks.pop(0)
                samples.append((sent, _agent_rss(agent)))

    start = time.perf_counter()
    tasks = [asyncio.create_task(node_loop(i)) for i in range(CONCURRENCY)]
    await asyncio.gather(*tasks)
    ingest_s = time.perf_counter() - start
    if samples[-1][0] != sent:
        samples.append((sent, _agent_rss(agent)))
    while await agent.db.read(_pending):
        await asyncio.sleep(0.5)
    drained = _agent_rss(agent)
    disk = agent.db.disk_bytes()
    await agent.shutdown()
    return {
        "samples": samples,
        "drained_kib": drained,
        "ingest_s": ingest_s,
        "readings": sent,
        "disk_bytes": disk,
    }


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=Path, required=True)
    parser.add_argument("--readings", type=int, default=READINGS)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args.child, args.readings))))


def measure(readings: int = READINGS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="city-gateway-memory-") as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--child", tmp, "--readings", str(readings)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(readings: int = READINGS) -> None:
    result = measure(readings)
    samples = [(int(n), int(kib)) for n, kib in result["samples"]]
    base_n, base = next(((n, k) for n, k in samples if n >= WARMUP), samples[0])
    rows: list[list[object]] = [
        [f"{n:,}", f"{k / 1024:.1f}", f"{k / base:.2f}x"] for n, k in samples
    ]
    drained = int(result["drained_kib"])
    rows.append(["all forwarded to the spool", f"{drained / 1024:.1f}", f"{drained / base:.2f}x"])
    print(
        f"the whole agent (SQLite FULL + spool upstream, {NODES} nodes, "
        f"{CONCURRENCY} uplinks at once), its writer process included; "
        f"baseline = RSS after {base_n:,} readings"
    )
    print(table(["readings in", "RSS MiB", "vs baseline"], rows))
    end_n, end = samples[-1]
    # from the first sample past SAMPLES[0] readings: by then SQLite's page caches are full
    from_n, start = next(((n, k) for n, k in samples if n >= SAMPLES[0]), (base_n, base))
    growth = (end - start) / max(1, end_n - from_n) * 100_000 / 1024
    rate = int(result["readings"]) / float(result["ingest_s"])
    disk_mib = int(result["disk_bytes"]) / 2**20
    print(
        f"growth {growth:+.2f} MiB per 100,000 readings from {from_n:,} on; "
        f"ingest {rate:,.0f} readings/s; database on disk {disk_mib:.0f} MiB"
    )


if __name__ == "__main__":
    if "--child" in sys.argv:
        _child(sys.argv[1:])
    else:
        cli = argparse.ArgumentParser(description="the gateway's memory over many readings")
        cli.add_argument("--readings", type=int, default=READINGS)
        main(cli.parse_args().readings)

"""Forwarding rate of the upstream sinks, readings per second, against baselines in the same run.

- spool: JSON lines with an fsync per batch, on the local disk.
- MQTT: to a mosquitto on 127.0.0.1; baseline a bare paho-mqtt loop publishing the same
  precomputed payloads with QoS 1 over one connection and waiting for every PUBACK.
- NGSI-LD: to the test broker (tests/gateway/ngsi_ld_broker.py) in a process of its own with
  schema validation off, so the broker's own cost stays out of the sink's figure; baseline bare
  aiohttp POSTs of the same entities, mapped and serialised beforehand, in the same requests.

The ratio is sink / baseline: what the mapping, batching and per-reading bookkeeping cost.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.common import table
from gateway.records import Reading
from gateway.sinks.base import Sink
from gateway.sinks.entities import NodeFacts, mqtt_topic, reading_json
from gateway.sinks.mqtt import MQTTSink
from gateway.sinks.ngsild import UPSERT_PATH, NGSILDSink
from gateway.sinks.spool import SpoolSink
from tests.gateway.conftest import SAMPLES, Mosquitto, free_port, make_reading, node_facts
from tests.support.interp import ROOT

SITE = "bench"
BATCH = 500
READINGS = 10_000
REPEAT = 3  # best of three, sink and baseline alternating: the machine may be shared


def workload(count: int, nodes: int = 400) -> list[Reading]:
    """`count` readings of the sample kinds spread over `nodes` nodes, as the store hands them."""
    prototypes = [
        m for _, m in SAMPLES if m["type"] in ("leak", "occupancy", "lighting", "binfill")
    ]
    kinds = {"leak": "meter", "occupancy": "spot", "lighting": "lamp", "binfill": "bin"}
    readings = []
    for i in range(count):
        message = prototypes[i % len(prototypes)]
        node = f"{kinds[str(message['type'])]}-{(i // len(prototypes)) % nodes:04d}"
        readings.append(make_reading(node, message, seq=i, received_at=1_767_225_600.0 + i))
    return readings


# Every bench node stands where the test node of its kind stands.
_LIKE = {"meter": "meter-01", "spot": "spot-07", "lamp": "lamp-03", "bin": "bin-12"}


def bench_facts(node: str) -> NodeFacts | None:
    return node_facts(_LIKE[node.partition("-")[0]])


async def _drive(sink: Sink, readings: Sequence[Reading], batch: int) -> float:
    await sink.start()
    started = time.perf_counter()
    for i in range(0, len(readings), batch):
        result = await sink.send(readings[i : i + batch])
        assert len(result.delivered) == len(readings[i : i + batch]), result.rejected
    elapsed = time.perf_counter() - started
    await sink.close()
    return len(readings) / elapsed


def bench_spool(readings: Sequence[Reading]) -> float:
    rates = []
    for _ in range(REPEAT):
        with tempfile.TemporaryDirectory() as directory:
            rates.append(asyncio.run(_drive(SpoolSink(directory, SITE), readings, BATCH)))
    return max(rates)


def bare_paho(port: int, readings: Sequence[Reading], inflight: int) -> float:
    messages = [(mqtt_topic("city", SITE, r), reading_json(r, SITE)) for r in readings]
    done = threading.Event()
    acked = 0

    def on_publish(client: object, userdata: object, mid: int, rc: object, props: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(messages):
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.2)  # CONNACK
    started = time.perf_counter()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1)
    if not done.wait(120):
        raise RuntimeError(f"bare paho: {acked} of {len(messages)} acked")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return len(messages) / elapsed


def bench_mqtt(readings: Sequence[Reading]) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as directory:
        broker = Mosquitto(Path(directory), free_port()).start()
        try:
            rates, baselines, inflight = [], [], 0
            for _ in range(REPEAT):  # alternate, so both see the same machine load
                sink = MQTTSink("127.0.0.1", broker.port, site=SITE)
                rates.append(asyncio.run(_drive(sink, readings, BATCH)))
                inflight = sink._inflight  # what the broker's Receive Maximum allowed
                baselines.append(bare_paho(broker.port, readings, inflight))
        finally:
            broker.stop()
    return max(rates), max(baselines), inflight


async def _bare_upsert(
    url: str, sink: NGSILDSink, readings: Sequence[Reading]
) -> tuple[float, int]:
    """The same requests the sink makes, prepared beforehand, posted back to back."""
    bodies = [
        json.dumps(entities, separators=(",", ":")).encode()
        for i in range(0, len(readings), BATCH)
        for entities in sink.plan(readings[i : i + BATCH])
    ]
    headers = {"Content-Type": "application/ld+json"}
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        for body in bodies:
            async with session.post(
                url + UPSERT_PATH, params={"options": "update"}, data=body, headers=headers
            ) as response:
                assert response.status in (201, 204), response.status
        elapsed = time.perf_counter() - started
    return len(readings) / elapsed, len(bodies)


def bench_ngsi_ld(readings: Sequence[Reading]) -> tuple[float, float, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway.ngsi_ld_broker", "--no-validate"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
        rates, baselines, requests = [], [], 0
        for _ in range(REPEAT):
            sink = NGSILDSink(url, SITE, node_facts=bench_facts)
            rates.append(asyncio.run(_drive(sink, readings, BATCH)))
            baseline, requests = asyncio.run(_bare_upsert(url, sink, readings))
            baselines.append(baseline)
    finally:
        proc.terminate()
        proc.wait()
    return max(rates), max(baselines), requests


def main() -> None:
    readings = workload(READINGS)
    spool = bench_spool(readings)
    mqtt, paho_rate, inflight = bench_mqtt(readings)
    ngsi, bare_http, requests = bench_ngsi_ld(readings)
    rows = [
        ["spool (fsync per batch of 500)", f"{spool:,.0f}", "", ""],
        [
            f"MQTT QoS 1 (window {inflight})",
            f"{mqtt:,.0f}",
            f"{paho_rate:,.0f}",
            f"{mqtt / paho_rate:.2f}",
        ],
        [
            f"NGSI-LD upsert ({requests} requests)",
            f"{ngsi:,.0f}",
            f"{bare_http:,.0f}",
            f"{ngsi / bare_http:.2f}",
        ],
    ]
    print(
        f"{len(readings):,} readings of 4 kinds over 1,600 nodes, batches of {BATCH}, "
        f"best of {REPEAT}"
    )
    print(table(["sink", "readings/s", "baseline/s", "ratio"], rows))
    print(
        "baselines: bare paho publish loop (MQTT); bare aiohttp POSTs of pre-built bodies (NGSI-LD)"
    )

"""The common harness of the SIGKILL crash trials: tests/gateway/test_crash.py (nodes played
over the test-only UDP JSON link) and tests/gateway/test_ingest_crash_coap.py (the real CoAP
link with OSCORE). Only the nodes differ between them; the gateway, the kills and the promise
checked afterwards are these:

- `GatewayProcess`: one gateway process at a time on one data folder (tests/gateway/harness.py
  run with `python -m`, the real Agent, store and forwarder, forwarding to a file upstream
  that deduplicates on the reading id); its config is written and its nodes registered once,
  readiness is watched through sd_notify as under systemd, and its log is kept for failures.
- `GatewayProcess.kill_at_random`: SIGKILL at a random moment of a life, under ingest.
- `GatewayProcess.drain`: the last life forwards everything acknowledged, then stops cleanly.
- `check_delivered`: no acknowledged reading lost, none upstream twice, nothing invented, in
  order per node; and the store agrees (all acknowledged readings stored, nothing pending).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gateway import registry
from gateway.registry import Node
from gateway.store import connect
from gateway.store.db import apply_schema

ROOT = Path(__file__).resolve().parents[2]
# Small batches, short retries: many forwarding rounds (and so many crash points) per life.
FORWARDING = (
    "[forwarding]\nbatch_size = 20\nbatch_time_s = 0.02\n"
    "retry_base_s = 0.05\nretry_max_s = 0.2\ndrain_max_rate = 100000\n"
)
# A start includes the store's recovery after a kill; a busy 2-core box can take seconds.
START_TIMEOUT_S = 30.0
T = TypeVar("T")


class GatewayProcess:
    """One gateway process at a time on the same data folder, watched through sd_notify.

    `link` is the config's [links...] section; `harness_args` go to tests/gateway/harness.py
    after CONFIG and UPSTREAM (none: the test feeder link; `--configured-links`: the links
    the config names)."""

    def __init__(
        self,
        tmp_path: Path,
        nodes: Iterable[str],
        *,
        link: str,
        log_level: str = "WARNING",
        harness_args: Iterable[str] = (),
    ) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            f'data_dir = "data"\n{link}'
            "[http]\nenabled = false\n"
            "[sinks.spool]\nenabled = false\n"
            f'{FORWARDING}[logging]\nlevel = "{log_level}"\n'
        )
        self.upstream = tmp_path / "upstream.jsonl"
        self.harness_args = list(harness_args)
        self.notify_path = tmp_path / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.setblocking(False)
        self.log = (tmp_path / "gateway.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.data.mkdir()
        conn = connect(self.data / "gateway.db")
        apply_schema(conn, [registry.SCHEMA])
        for node in nodes:
            registry.add_node(conn, Node(node, "leak", "coap"))
        conn.close()

    async def start(self) -> None:
        """Start a new life and return once it announced READY=1 (its links are bound)."""
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), PYTHONPATH=str(ROOT))
        harness = [sys.executable, "-m", "tests.gateway.harness", str(self.config)]
        self.proc = subprocess.Popen(
            [*harness, str(self.upstream), *self.harness_args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                message = (await asyncio.wait_for(loop.sock_recv(self.notify, 4096), 0.2)).decode()
            except TimeoutError:
                message = ""
            if "READY=1" in message:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()  # a life that hangs in its start must not outlive the test
                raise AssertionError(f"gateway did not start:\n{self.logs()}")

    def run(self, lives: Coroutine[Any, Any, T]) -> T:
        """`asyncio.run(lives)`; a life still running when that ends (it failed) is killed."""
        try:
            return asyncio.run(lives)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def notifications(self) -> list[str]:
        """The sd_notify messages not read yet (after a stop: STOPPING=1 and the like)."""
        messages = []
        while True:
            try:
                messages.append(self.notify.recv(4096).decode())
            except BlockingIOError:
                return messages

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "gateway.log").read_text(errors="replace")[-3000:]

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.to_thread(self.proc.wait, START_TIMEOUT_S)

    async def kill_at_random(self, rng: random.Random, low: float, high: float) -> float:
        """SIGKILL the running life after a random moment in [low, high] s; the moment."""
        moment = rng.uniform(low, high)
        await asyncio.sleep(moment)
        assert await self.stop(signal.SIGKILL) == -signal.SIGKILL
        return moment

    async def drain(self, acked: Collection[str], timeout: float = 20.0) -> None:
        """Let the running life forward all acknowledged readings (and whatever else was
        committed: nothing pending), then stop it with SIGTERM, which must exit 0."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if set(acked) <= self.upstream_ids() and self.pending() == 0:
                break
            await asyncio.sleep(0.1)
        assert await self.stop(signal.SIGTERM) == 0, self.logs()

    def upstream_lines(self) -> list[dict[str, Any]]:
        if not self.upstream.exists():
            return []
        return [json.loads(line) for line in self.upstream.read_text().splitlines()]

    def upstream_ids(self) -> set[str]:
        return {line["id"] for line in self.upstream_lines()}

    def upstream_attempts(self) -> Counter[str]:
        """How often the forwarder offered each reading id to the upstream."""
        path = self.upstream.with_name(self.upstream.name + ".attempts")
        return Counter(path.read_text().split())

    def stored(self) -> set[str]:
        with sqlite3.connect(self.data / "gateway.db") as conn:
            return {r[0] for r in conn.execute("SELECT reading_id FROM readings")}

    def pending(self) -> int:
        with sqlite3.connect(self.data / "gateway.db") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def wal_checkpointed(self) -> bool:
        """An orderly stop checkpoints the WAL into the main file."""
        wal = self.data / "gateway.db-wal"
        return not wal.exists() or wal.stat().st_size == 0


def check_upstream(
    lines: list[dict[str, Any]], acked: Collection[str], sent: Collection[str], seed: int
) -> None:
    """The promise, on what reached upstream (lines of {"id", "node", "seq"})."""
    ids = [line["id"] for line in lines]
    # No acknowledged reading lost...
    assert set(acked) - set(ids) == set(), f"seed {seed}: lost {set(acked) - set(ids)}"
    # ...none upstream twice...
    assert [i for i, n in Counter(ids).items() if n > 1] == [], f"seed {seed}: twice upstream"
    # ...nothing invented, and each node's readings arrived in order.
    assert set(ids) <= set(sent), f"seed {seed}: never sent {set(ids) - set(sent)}"
    for node in {line["node"] for line in lines}:
        seqs = [line["seq"] for line in lines if line["node"] == node]
        assert seqs == sorted(seqs), f"seed {seed}: {node} out of order"


def check_delivered(
    gateway: GatewayProcess,
    acked: Collection[str],
    next_seq: Mapping[str, int],
    reading_id: Callable[[str, int], str],
    seed: int,
) -> list[dict[str, Any]]:
    """Check the promise after the trials and return the upstream lines.

    `next_seq` is each node's next record counter: every counter up to it (the one in
    flight included) may have been sent; `reading_id` names the reading a counter carries."""
    lines = gateway.upstream_lines()
    sent = {reading_id(n, s) for n, top in next_seq.items() for s in range(top + 1)}
    check_upstream(lines, acked, sent, seed)
    # The store agrees: everything acknowledged is there, and nothing is left to forward.
    assert set(acked) <= gateway.stored()
    assert gateway.pending() == 0
    return lines

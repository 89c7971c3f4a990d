"""The city block's nodes as processes: the real firmware on the sim board, one MicroPython
unix-port process per node life.

- A battery node (meter, spot, bin) lives for one reporting cycle: it starts, samples, sends,
  and deep-sleeps, i.e. its process exits (code 100) leaving its wake-up time in
  `.sim/exit.json`. `City` starts it again when the city clock reaches that time, telling the
  board through `.sim/boot.json` that this is a deep-sleep wake-up at exactly that virtual
  time. So at most a few battery processes run at once (`max_running`), and the clock waits
  for them rather than let a node oversleep (tools/demo/clock.py).
- While awake a node's own clock runs `speed` times real time (CoAP and LoRa timeouts stay a
  few hundred real milliseconds: enough for a busy gateway to answer).
- Lamps are mains-powered and never sleep: one process each for the whole demo, their own
  clock at `speed`. Each has a control socket (the demo drives its PIR when the walker
  passes) and an observer socket (its lamp's PWM duty comes back: `on_output`).
- A reset (101) or watchdog reset (102) starts the node again at once; a life that runs far
  longer than any cycle can (LIFE_TIMEOUT_S) is killed and restarted as a watchdog reset. A
  node that ends otherwise (a crash past the firmware's own handler) is retried after
  RETRY_S virtual seconds and reported.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tools.demo.city_block import NodeSpec
from tools.demo.processes import Child, Children

BOOT = "import firmware.node.app as app; app.main()"
EXIT_DEEP_SLEEP = 100
EXIT_RESET = 101
EXIT_WATCHDOG = 102
LIFE_TIMEOUT_S = 30.0  # real seconds; a cycle takes well under one
RETRY_S = 600.0  # virtual seconds before a node that stopped abnormally is started again
LAMP_START_GAP_S = 0.2  # real seconds between two lamps switched on
MAX_BEHIND_S = 3600.0  # the city clock may run this far past the wake-up of a node still awake


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


@dataclass
class NodeLife:
    """A node and what the city knows of its next start."""

    spec: NodeSpec
    folder: Path
    wake_s: float  # virtual time of its next start
    cause: str = "power_on"  # reset cause of the next start
    child: Child | None = None
    started_v: float = 0.0  # virtual time the running life began
    lives: int = 0
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=4))
    ended: dict[str, int] = field(default_factory=dict)  # how lives ended, counted
    console: IO[bytes] | None = None

    @property
    def sim(self) -> Path:
        return self.folder / ".sim"


class City:
    """Starts, restarts and stops the node processes of one block."""

    def __init__(
        self,
        specs: list[NodeSpec],
        folders: dict[str, Path],
        children: Children,
        *,
        modules: Path,
        micropython: str,
        logs: Path,
        power_on_s: dict[str, float],
        node_speed: float,
        max_running: int = 4,
        on_problem: Callable[[str], None] = print,
    ) -> None:
        self.children = children
        self.node_speed = node_speed
        self.modules = modules
        self.micropython = micropython
        self.logs = logs
        self.max_running = max_running
        self.on_problem = on_problem
        self.nodes = {
            s.node_id: NodeLife(s, folders[s.node_id], power_on_s[s.node_id]) for s in specs
        }
        self._queue: list[tuple[float, str]] = [
            (n.wake_s, n.spec.node_id) for n in self.nodes.values() if n.spec.battery
        ]
        heapq.heapify(self._queue)
        self.running: dict[str, NodeLife] = {}
        self.lamps: dict[str, NodeLife] = {}
        self.control_ports: dict[str, int] = {}
        self.observers: list[asyncio.DatagramTransport] = []
        self.on_output: Callable[[str, str, Any, float], None] | None = None
        self.stopping = False
        self.awake_real_s = 0.0  # real seconds battery lives took, summed

    # -- processes ---------------------------------------------------------------------------
    def _env(self, node: NodeLife) -> dict[str, str]:
        return dict(
            os.environ,
            MICROPYPATH=f"{self.modules}:.frozen",
            SIM_STATE=str(node.sim),
        )

    def _start(self, node: NodeLife, now_v: float) -> None:
        if node.cause == "power_on":
            for name in ("exit.json", "rtc.bin", "clock", "signals.json"):
                (node.sim / name).unlink(missing_ok=True)
        _write_json(
            node.sim / "boot.json",
            {
                "reset_cause": node.cause,
                "wake_reason": "timer" if node.cause == "deep_sleep" else "none",
                "epoch_ms": int(node.wake_s * 1000),
            },
        )
        if node.console is None:
            node.console = (self.logs / f"{node.spec.node_id}.log").open("ab")
        node.child = self.children.spawn(
            node.spec.node_id,
            [self.micropython, "-c", BOOT],
            cwd=node.folder,
            env=self._env(node),
            stdout=node.console,
        )
        node.started_v = now_v
        node.lives += 1
        node.recent.append((time.time(), node.wake_s))

    def _ended(self, node: NodeLife, code: int, killed: bool) -> None:
        """Work out the next start of a node whose process ended."""
        exit_info = _read_json(node.sim / "exit.json") or {}
        clock_ms = _read_json(node.sim / "clock")
        last_ms = exit_info.get("epoch_ms") or clock_ms or node.wake_s * 1000
        if killed:
            how, node.cause, node.wake_s = "hung", "watchdog", last_ms / 1000
        elif code == EXIT_DEEP_SLEEP and exit_info.get("wake_epoch_ms"):
            how, node.cause = "deep_sleep", "deep_sleep"
            node.wake_s = exit_info["wake_epoch_ms"] / 1000
        elif code == EXIT_RESET:
            how, node.cause, node.wake_s = "reset", "hard", last_ms / 1000
        elif code == EXIT_WATCHDOG:
            how, node.cause, node.wake_s = "watchdog", "watchdog", last_ms / 1000
        else:
            # a soft exit (safe mode leaves the REPL: the unix port ends) or a crash past the
            # firmware's handler: try again later, not in a tight loop
            how = "soft" if code == 0 else f"exit {code}"
            node.cause = "soft" if code == 0 else "power_on"
            node.wake_s = last_ms / 1000 + RETRY_S
            if not self.stopping:
                self.on_problem(
                    f"{node.spec.node_id} stopped ({how}); see {self.logs.name}/"
                    f"{node.spec.node_id}.log, retrying in {RETRY_S / 60:.0f} min"
                )
        node.ended[how] = node.ended.get(how, 0) + 1
        node.child = None

    # -- battery nodes -----------------------------------------------------------------------
    def limit(self) -> float | None:
        """How far the city clock may advance now (None: as far as it likes)."""
        bounds = [n.wake_s + MAX_BEHIND_S for n in self.running.values()]
        if len(self.running) >= self.max_running and self._queue:
            bounds.append(self._queue[0][0])
        return min(bounds) if bounds else None

    def step(self, now_v: float) -> None:
        """Reap ended lives, kill hung ones, start the nodes that are due."""
        for node_id, node in list(self.running.items()):
            child = node.child
            assert child is not None
            killed = False
            if not child.exited():
                if time.monotonic() - child.started < LIFE_TIMEOUT_S:
                    continue
                self.children.stop(child, grace_s=0.5)
                killed = True
            else:
                self.children.forget(child)
            code = child.returncode
            assert code is not None
            self.awake_real_s += time.monotonic() - child.started
            del self.running[node_id]
            self._ended(node, code, killed)
            heapq.heappush(self._queue, (node.wake_s, node_id))
        while (
            not self.stopping
            and self._queue
            and self._queue[0][0] <= now_v
            and len(self.running) < self.max_running
        ):
            _, node_id = heapq.heappop(self._queue)
            node = self.nodes[node_id]
            self._start(node, now_v)
            self.running[node_id] = node

    # -- lamps -------------------------------------------------------------------------------
    async def start_lamps(self, now_v: float) -> None:
        loop = asyncio.get_running_loop()
        for node in self.nodes.values():
            if node.spec.battery:
                continue
            lamp_id = node.spec.node_id
            transport, _ = await loop.create_datagram_endpoint(
                lambda lamp_id=lamp_id: _Observer(self, lamp_id),  # type: ignore[misc]
                local_addr=("127.0.0.1", 0),
            )
            self.observers.append(transport)
            observer_port = transport.get_extra_info("sockname")[1]
            control = free_udp_port()
            self.control_ports[lamp_id] = control
            board = _read_json(node.sim / "board.json") or {}
            board.update(control_port=control, observer=["127.0.0.1", observer_port])
            _write_json(node.sim / "board.json", board)
            node.wake_s = now_v
            self._start(node, now_v)
            self.lamps[lamp_id] = node
            await asyncio.sleep(LAMP_START_GAP_S)

    def keep_lamps_on(self) -> None:
        """A lamp that reset starts again at once (mains power: no sleep)."""
        for node in self.lamps.values():
            child = node.child
            if child is None or self.stopping or not child.exited():
                continue
            self.children.forget(child)
            code = child.returncode
            assert code is not None
            self._ended(node, code, False)
            if node.cause in ("hard", "watchdog"):
                self._start(node, node.wake_s)

    def lamp_signal(self, lamp_id: str, changes: dict[str, Any]) -> None:
        """Set scenario signals on a running lamp now (its PIR pin, say)."""
        port = self.control_ports.get(lamp_id)
        if port is None:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(json.dumps({"set": changes}).encode(), ("127.0.0.1", port))

    # -- the end -----------------------------------------------------------------------------
    def stop(self) -> None:
        """End every node process: battery lives and lamps alike lose power (SIGKILL would do;
        SIGTERM first lets the interpreter go quietly)."""
        self.stopping = True
        for node in [*self.running.values(), *self.lamps.values()]:
            if node.child is not None:
                self.children.stop(node.child, grace_s=1.0)
                node.child = None
        self.running.clear()
        for transport in self.observers:
            transport.close()
        for node in self.nodes.values():
            if node.console is not None:
                node.console.close()
                node.console = None

    def node_time(self, node_id: str, wall: float) -> float | None:
        """A battery node's own clock at wall time `wall` (it runs `node_speed` times real
        time from its wake-up), or None for lamps and unknown moments."""
        node = self.nodes.get(node_id)
        if node is None or not node.spec.battery:
            return None
        for start_wall, wake_s in reversed(node.recent):
            if start_wall <= wall:
                return wake_s + (wall - start_wall) * self.node_speed
        return None

    def lives(self) -> int:
        return sum(n.lives for n in self.nodes.values())


class _Observer(asyncio.DatagramProtocol):
    """A lamp board's output changes: {"key": "pwm:25", "value": duty, "epoch_ms": ...}."""

    def __init__(self, city: City, lamp_id: str) -> None:
        self.city = city
        self.lamp_id = lamp_id

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            msg = json.loads(data)
            key, value = str(msg["key"]), msg["value"]
        except (ValueError, KeyError, TypeError):
            return
        if self.city.on_output is not None:
            self.city.on_output(self.lamp_id, key, value, time.monotonic())

"""Helpers for the node, ring and medium tests (CPython side): MicroPython scripts on the sim
board, OSCORE key material, the gateway stand-in (node_peer.py) and the radio medium as real
processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hil.ready import ready_line
from tests.support.interp import ROOT, micropython_binary

NODE_KID = b"\x01"
GATEWAY_KID = b""
SECRET = bytes(range(16))
SALT = bytes(range(8))


def need_micropython() -> str:
    binary = micropython_binary()
    if binary is None:
        pytest.fail("the micropython command is missing: run `make test`, which installs it")
    return binary


def run_mpy(
    code: str, cwd: Path, timeout: float = 30, check: bool = True, heapsize: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run MicroPython code on the sim board with cwd as the node's folder."""
    argv = [need_micropython()]
    if heapsize:
        argv += ["-X", f"heapsize={heapsize}"]
    env = dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen", SIM_STATE=str(cwd / ".sim"))
    (cwd / ".sim").mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*argv, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    # 100 deep sleep, 101 reset, 102 watchdog; -9 a power cut (SIGKILL)
    if check and done.returncode not in (0, 100, 101, 102, -9):
        raise AssertionError(f"micropython exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def start_mpy(code: str, cwd: Path) -> subprocess.Popen[str]:
    """MicroPython code on the sim board in the background; its stdout is a pipe."""
    env = dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen", SIM_STATE=str(cwd / ".sim"))
    (cwd / ".sim").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [need_micropython(), "-c", code], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_keys(keys: Path, node_id: str = "node-1", kid: bytes = NODE_KID) -> dict[str, Any]:
    """The gateway side's context folder; returns the node's config section."""
    from gateway.security import NodeKeys, write_node_context

    write_node_context(keys, node_id, NodeKeys(kid, SECRET, SALT), GATEWAY_KID)
    return {
        "secret": SECRET.hex(),
        "salt": SALT.hex(),
        "sender_id": kid.hex(),
        "recipient_id": GATEWAY_KID.hex(),
    }


class Process:
    """A CPython helper process that prints a READY line once it listens."""

    def __init__(self, argv: list[str], cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert self.proc.stdout is not None
        line = ready_line(self.proc.stdout, 20)
        if not line.startswith("READY"):
            self.kill()
            raise RuntimeError(f"{argv} did not start: {line}")
        self.ready_line = line.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Peer(Process):
    """tests/firmware/node_peer.py: the gateway stand-in over CoAP/UDP or the medium."""

    def __init__(self, mode: str, keys: Path, port: int, work: Path, *extra: str) -> None:
        self.log = work / "uplinks.jsonl"
        self.downlinks = work / "downlinks.json"
        argv = [sys.executable, "-m", "tests.firmware.node_peer", mode, str(keys), str(port)]
        argv += [str(self.log), str(self.downlinks), *extra]
        super().__init__(argv)

    def uplinks(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def records(self) -> list[dict[str, Any]]:
        return [r for u in self.uplinks() for r in u["records"]]

    def queue(self, records: list[Any]) -> None:
        self.downlinks.write_text(json.dumps(records))


class MediumProcess(Process):
    def __init__(self, *options: str) -> None:
        super().__init__([sys.executable, "-m", "hil.medium", "--port", "0", *options])
        self.port = int(self.ready_line.split()[1])

    def stats(self) -> dict[str, Any]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b'{"op": "stats"}', ("127.0.0.1", self.port))
            data, _ = s.recvfrom(65536)
        result: dict[str, Any] = json.loads(data)
        return result

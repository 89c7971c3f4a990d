"""sd_notify (gateway/systemd.py) is advice to the service manager, never a step the gateway
depends on: a notify socket that vanished must not abort the shutdown that flushes the store.

- `notify` itself: delivered to a socket path and to the abstract namespace; to a vanished or
  refusing socket it returns False, warns once, and never raises.
- The agent in one process: shutdown completes and the store is flushed (readings committed,
  the WAL checkpointed) when NOTIFY_SOCKET points to a socket that is gone.
- The gateway as a real process (tests/gateway/harness.py: the real Agent fed over UDP): the
  service manager's socket disappears while it runs; SIGTERM still ends it with exit code 0
  and every acknowledged reading in the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import registry, systemd
from gateway.agent import Agent
from gateway.registry import Node
from gateway.store import connect
from gateway.store.db import apply_schema
from tests.gateway.fakes import MemorySink, loopback, make_config

ROOT = Path(__file__).resolve().parents[2]


def bound(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    return sock


def vanish(sock: socket.socket, path: Path) -> None:
    """What a restarted (or killed) service manager leaves behind: no socket at that path."""
    sock.close()
    path.unlink()


def notify_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "gateway.systemd" and r.levelno == logging.WARNING
    ]


def test_notify_reaches_a_socket_path_and_the_abstract_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    listener = bound(path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert systemd.notify("READY=1\nSTATUS=serving 3 nodes") is True
    assert listener.recv(1024) == b"READY=1\nSTATUS=serving 3 nodes"
    listener.close()

    name = f"city-gw-test-{os.getpid()}-{time.monotonic_ns()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name)
    abstract.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    assert systemd.notify("WATCHDOG=1") is True
    assert abstract.recv(1024) == b"WATCHDOG=1"
    abstract.close()

    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False  # not run by systemd: a no-op


def test_notify_to_a_vanished_socket_returns_false_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.systemd")
    path = tmp_path / "notify.sock"
    vanish(bound(path), path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert systemd.notify("WATCHDOG=1") is False
    assert systemd.notify("WATCHDOG=1") is False
    assert systemd.notify("STOPPING=1") is False
    (warning,) = notify_warnings(caplog)
    assert "WATCHDOG=1" in warning.getMessage() and str(path) in warning.getMessage()
    later = [
        r for r in caplog.records if r.name == "gateway.systemd" and r.levelno == logging.DEBUG
    ]
    assert len(later) == 2  # the watchdog's pings would flood the log otherwise

    # the socket comes back: delivered again; a later outage is worth a new warning
    listener = bound(path)
    assert systemd.notify("WATCHDOG=1") is True
    assert listener.recv(1024) == b"WATCHDOG=1"
    listener.close()  # the file stays, nobody reads it: connection refused
    assert systemd.notify("WATCHDOG=1") is False
    assert len(notify_warnings(caplog)) == 2


def test_notify_to_an_abstract_name_nobody_holds_returns_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", f"@city-gw-nobody-{os.getpid()}-{time.monotonic_ns()}")
    assert systemd.notify("READY=1") is False


def test_shutdown_flushes_the_store_when_the_notify_socket_vanished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    conn = connect(tmp_path / "data" / "gateway.db")
    apply_schema(conn, [registry.SCHEMA])
    registry.add_node(conn, Node("m-1", "leak", "coap"))
    conn.close()
    path = tmp_path / "notify.sock"
    listener = bound(path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    links, factory = loopback()
    # a group-commit window long enough that the last uplink is still queued at shutdown
    config = make_config(tmp_path, store={"group_commit_ms": 50.0})
    agent = Agent(config, sinks=[MemorySink()], links=[factory])

    async def main() -> None:
        await agent.start()
        assert listener.recv(1024).startswith(b"READY=1")
        await links[0].uplink("m-1", [1, 2])
        vanish(listener, path)
        last = asyncio.ensure_future(links[0].uplink("m-1", [3]))
        await asyncio.sleep(0)  # handed to the group committer, not committed yet
        await agent.shutdown()  # notifies STOPPING=1 first: it must not abort here
        await last

    asyncio.run(main())
    assert links[0].closed
    assert (
        not (tmp_path / "data" / "gateway.db-wal").exists()
        or (tmp_path / "data" / "gateway.db-wal").stat().st_size == 0
    )  # checkpointed into the main file on close
    with sqlite3.connect(tmp_path / "data" / "gateway.db") as db:
        ids = [r[0] for r in db.execute("SELECT reading_id FROM readings ORDER BY reading_id")]
    assert ids == ["m-1:1:0", "m-1:2:0", "m-1:3:0"]


def test_the_gateway_process_exits_0_on_sigterm_after_its_notify_socket_vanished(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = connect(data / "gateway.db")
    apply_schema(conn, [registry.SCHEMA])
    registry.add_node(conn, Node("n-1", "leak", "coap"))
    conn.close()
    config = tmp_path / "gateway.toml"
    config.write_text(
        'data_dir = "data"\n[links.coap]\nenabled = false\n[http]\nenabled = false\n'
        "[sinks.spool]\nenabled = false\n"
    )
    path = tmp_path / "notify.sock"
    listener = bound(path)
    listener.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=str(path), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway.harness", str(config), str(tmp_path / "up.jsonl")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    feeder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    feeder.settimeout(5)
    try:
        assert listener.recv(4096).startswith(b"READY=1")
        port = int((data / "feeder.port").read_text())
        for seq in range(5):
            feeder.sendto(json.dumps({"node": "n-1", "seq": seq}).encode(), ("127.0.0.1", port))
            assert json.loads(feeder.recv(1024)) == {"ack": ["n-1", seq]}
        vanish(listener, path)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        feeder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    # the harness logs warnings only: the one about STOPPING=1, and no traceback
    assert stderr.count("not delivered to") == 1 and "Traceback" not in stderr, stderr
    with sqlite3.connect(data / "gateway.db") as db:
        stored = {r[0] for r in db.execute("SELECT reading_id FROM readings")}
    assert stored == {f"n-1:{seq}:0" for seq in range(5)}

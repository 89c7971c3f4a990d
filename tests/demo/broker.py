"""A real mosquitto on a free port of 127.0.0.1 for the demo's tests (Debian's package, which
`make test` installs)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tools.demo.runner import mqtt_broker_up


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mosquitto(folder: Path) -> Iterator[int]:
    """A broker listening on 127.0.0.1; yields its port once it answers CONNECT."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto is missing: run `make test`, which installs it")
    port = free_tcp_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not mqtt_broker_up("127.0.0.1", port):
            assert broker.poll() is None, "mosquitto exited"
            assert time.monotonic() < deadline, "mosquitto did not come up"
            time.sleep(0.05)
        yield port
    finally:
        broker.terminate()
        broker.wait(10)

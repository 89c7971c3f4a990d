"""`city-gateway --config ...` as a real process on the embedded defaults: the spool as the
upstream, readiness through sd_notify, JSON logs, and an orderly stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_then_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    # Embedded defaults except what a test machine cannot offer: a fixed CoAP port and the
    # HTTP port (the field staff page is tested on its own).
    config.write_text(
        'site_id = "test"\ndata_dir = "state"\n'
        "[links.coap]\nenabled = false\n[http]\nenabled = false\n"
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1"), ready
        assert (tmp_path / "state" / "gateway.db").exists()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert notify.recv(4096).decode() == "STOPPING=1"
    logs = [json.loads(line) for line in stderr.splitlines()]
    messages = [entry["msg"] for entry in logs]
    assert any(m.startswith("gateway test ready: 0 nodes, sinks ['spool']") for m in messages)
    assert messages[-1] == "stopped; the store is flushed"
    assert {entry["level"] for entry in logs} <= {"info", "warning"}
    # The data folder is the service user's alone.
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0

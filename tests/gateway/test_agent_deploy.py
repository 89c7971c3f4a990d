"""The systemd unit: what the issue asks of it, and systemd's own check of the file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "city-gateway.service"


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_asks_for_notify_watchdog_limits_and_a_dedicated_user() -> None:
    unit = settings()
    assert unit["Type"] == ["notify"]
    assert int(unit["WatchdogSec"][0]) > 0
    assert int(unit["LimitNOFILE"][0]) >= 4096  # 1,000 OSCORE contexts hold a lock file each
    assert unit["User"] == ["city-gateway"] and unit["Group"] == ["city-gateway"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # the CLI's exit code for a bad config
    assert unit["StateDirectoryMode"] == ["0700"]
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert unit[hardening][0] in ("yes", "strict")
    assert "--config /etc/city-gateway/gateway.toml" in unit["ExecStart"][0]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; the unit's content is checked above")
    # verify wants the executables to exist: point them at one that does.
    copy = tmp_path / "city-gateway.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/city-gateway", "/bin/true"))
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # unknown keys are only warned about: none allowed

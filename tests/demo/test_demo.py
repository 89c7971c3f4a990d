"""`make demo`, shortened: 8 nodes, the 35-hour story in about 20 real seconds, headless.

The demo runs as a real process tree (gateway, medium, MicroPython nodes), exactly as
`python -m tools.demo` runs it; the test reads its console, logs in to the web page with the
password it printed, interrupts it with SIGINT like Ctrl-C (and, in a second run, with SIGTERM
halfway through), and checks what it says it did against summary.json and the processes
left on the machine."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.demo.broker import mosquitto
from tests.support.interp import ROOT, micropython_binary
from tools.demo.runner import leftovers

STORY_TIMEOUT_S = 120  # the story itself takes ~20-40 s; the clock waits when cores are busy


@dataclass
class DemoProcess:
    proc: subprocess.Popen[str]
    root: Path
    lines: list[str] = field(default_factory=list)
    page: str = ""  # the overview, as the printed login sees it
    code: int | None = None  # exit code after the signal

    def read_until(self, pattern: str, timeout: float) -> re.Match[str]:
        wanted = re.compile(pattern)
        for line in self.lines:
            found = wanted.search(line)
            if found:
                return found
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            found = wanted.search(line)
            if found:
                return found
        raise AssertionError(f"no {pattern!r} in the demo's output:\n" + "\n".join(self.lines))

    def stop(self, sig: int, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines += out.splitlines()
        return self.proc.returncode

    @property
    def run_folder(self) -> Path:
        runs = sorted(p for p in self.root.iterdir() if p.name.startswith("run-"))
        assert len(runs) == 1
        return runs[0]

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.run_folder / "summary.json").read_text())
        return result


def start_demo(root: Path, *args: str) -> DemoProcess:
    if micropython_binary() is None:
        pytest.fail("the micropython command is missing: run `make test`, which installs it")
    argv = [sys.executable, "-m", "tools.demo", "--nodes", "8", "--duration", "20"]
    argv += ["--http-port", "0", "--run-root", str(root), *args]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    return DemoProcess(proc, root)


@pytest.fixture(scope="module")
def told(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """One whole shortened story, stopped with SIGINT once told."""
    demo = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        url = demo.read_until(r"web page\s+(http://127\.0\.0\.1:\d+/)", 60)
        login = demo.read_until(r"log in as\s+(\S+) / (\S+)", 5)
        demo.read_until(r"all 8 nodes are reporting", STORY_TIMEOUT_S)
        demo.page = logged_in_overview(url.group(1), login.group(1), login.group(2))
        demo.read_until(r"the end: Wednesday morning", STORY_TIMEOUT_S)
        demo.code = demo.stop(signal.SIGINT)
        yield demo
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.communicate()


def logged_in_overview(url: str, user: str, password: str) -> str:
    """Log in through the form (CSRF token and all) and return the overview page."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # 127.0.0.1, never through a proxy
        urllib.request.HTTPCookieProcessor(jar),
    )
    form = opener.open(url + "login", timeout=10).read().decode()
    fields = dict(re.findall(r'name="(csrf|next)" value="([^"]*)"', form))
    body = urllib.parse.urlencode({**fields, "username": user, "password": password}).encode()
    opener.open(url + "login", data=body, timeout=10).read()
    page: str = opener.open(url, timeout=10).read().decode()
    return page


def test_every_node_reports_and_the_page_shows_them(told: DemoProcess) -> None:
    facts = told.summary()["facts"]
    assert facts["reporting"] == sorted(
        ["lamp-01", "lamp-02", "lamp-03", "meter-01", "meter-02", "spot-01", "spot-02", "bin-01"]
    )
    assert facts["by_link"] == {"coap": 6, "lora": 2}
    page = told.page
    assert "Log out" in page  # logged in with the printed password
    assert "Water meter" in page and "Street light" in page


def test_the_leak_is_suspected_then_confirmed(told: DemoProcess) -> None:
    facts = told.summary()["facts"]
    console = "\n".join(told.lines)
    assert facts["leak_suspected"] == ["meter-01"], console
    assert facts["leak_confirmed"] == ["meter-01"], console
    suspected = next(i for i, line in enumerate(told.lines) if "leak SUSPECTED" in line)
    confirmed = next(i for i, line in enumerate(told.lines) if "LEAK CONFIRMED" in line)
    assert suspected < confirmed
    # 24 h after Monday 23:00, at the first hourly wake that sees a whole day gone: the last
    # zero-flow hour is dated at a wake (the first pulse came after the 23:01 one), so the day
    # ends at a wake again a day on, and which side of it depends on the seconds each life
    # took to boot: then the wake after it, at midnight
    assert re.match(r"(Tue 2[23]|Wed 00):", told.lines[suspected]), console
    assert re.match(r"Wed 0[67]:", told.lines[confirmed])  # at the end of the second night
    assert {"node": "meter-02", "alarm": "leak_confirmed", "active": True} not in facts["alarms"]


def test_the_full_bin_alarms_and_is_emptied(told: DemoProcess) -> None:
    facts = told.summary()["facts"]
    assert facts["bins_full"] == ["bin-01"]
    assert facts["bins_emptied"] == ["bin-01"]
    cleared = {"node": "bin-01", "alarm": "bin_full", "active": False}
    assert cleared in facts["alarms"]


def test_cars_park_and_leave(told: DemoProcess) -> None:
    facts = told.summary()["facts"]
    assert "spot-01" in facts["cars_parked"]  # the resident who stays overnight
    assert "spot-01" in facts["cars_left"]
    assert len(facts["cars_parked"]) >= 2


def test_the_lamps_light_ahead_of_the_walker(told: DemoProcess) -> None:
    walks = told.summary()["facts"]["walks"]
    assert [w["lamps"] for w in walks] == [
        ["lamp-01", "lamp-02", "lamp-03"],
        ["lamp-03", "lamp-02", "lamp-01"],
    ]
    for walk in walks:  # every lamp after the first, lit by the gateway before its PIR fired
        assert sorted(walk["lit_ahead"]) == sorted(walk["lamps"][1:]), walk
        for lamp, ahead_s in walk["lit_ahead"].items():
            assert ahead_s > 0, lamp


def test_sigint_stops_everything_cleanly(told: DemoProcess) -> None:
    assert told.code == 0
    summary = told.summary()
    assert summary["stop_reason"] == "SIGINT"
    assert summary["gateway_exit"] == 0  # it flushed its store and shut down in order
    assert summary["processes_left"] == []
    assert leftovers(told.run_folder) == []
    assert any("none left" in line for line in told.lines)
    assert not (told.run_folder / "notify.sock").exists()


def test_with_a_broker_it_forwards_there_and_sigterm_halfway_stops_cleanly(
    tmp_path: Path,
) -> None:
    with mosquitto(tmp_path) as port:
        demo = start_demo(tmp_path / "runs", "--mqtt", f"127.0.0.1:{port}")
        try:
            demo.read_until(rf"upstream\s+the MQTT broker on 127\.0\.0\.1:{port}", 60)
            demo.read_until(r"all 8 nodes are reporting", STORY_TIMEOUT_S)
            demo.read_until(r"a walker enters the park", STORY_TIMEOUT_S)
            code = demo.stop(signal.SIGTERM)
        finally:
            if demo.proc.poll() is None:
                demo.proc.kill()
                demo.proc.communicate()
    assert code == 0
    summary = demo.summary()
    assert summary["stop_reason"] == "SIGTERM"
    assert summary["gateway_exit"] == 0
    assert summary["processes_left"] == []
    assert leftovers(demo.run_folder) == []
    # the narration heard every node through the broker; nothing went to a spool
    assert len(summary["facts"]["reporting"]) == 8
    assert not (demo.run_folder / "gateway" / "spool").exists()

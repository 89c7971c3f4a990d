"""The demo's parts that need no city running: the block, the story's sensor data (read back
by the sim board's own scenario code on MicroPython), the clock, the narrator, the process
groups, the spool follower and the broker probe."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import CONTENT_TYPE, Metrics
from tests.demo.broker import free_tcp_port, mosquitto
from tools.demo import city_block, scenario
from tools.demo.clock import CityClock
from tools.demo.narrator import Narrator
from tools.demo.processes import Children
from tools.demo.runner import leftovers, mqtt_broker_up, story_speed
from tools.demo.scenario import HOUR, START_S, Story
from tools.demo.upstream import SpoolFeed, queued_upstream

# -- the block -------------------------------------------------------------------------------


def test_a_block_of_24_has_six_of_each_kind_on_both_links() -> None:
    specs = city_block.build(24)
    kinds = [s.kind for s in specs]
    assert {k: kinds.count(k) for k in city_block.KINDS} == dict.fromkeys(city_block.KINDS, 6)
    for kind in ("leak", "occupancy", "binfill"):
        links = [s.link for s in specs if s.kind == kind]
        assert links == ["coap", "lora"] * 3
    assert {s.link for s in specs if s.kind == "lighting"} == {"coap"}
    lamps = [s.link for s in city_block.build(24, lora_lamps=True) if s.kind == "lighting"]
    assert lamps == ["coap", "lora"] * 3
    assert len({s.kid for s in specs}) == 24
    assert len({s.node_id for s in specs}) == 24
    assert [s.node_id for s in specs if s.leaking] == ["meter-01"]


def test_small_blocks_keep_three_lamps_and_every_kind() -> None:
    assert city_block.counts(8) == {"lighting": 3, "leak": 2, "occupancy": 2, "binfill": 1}
    assert city_block.counts(6) == {"lighting": 3, "leak": 1, "occupancy": 1, "binfill": 1}
    with pytest.raises(ValueError):
        city_block.counts(5)


def test_lamps_wake_two_neighbours_on_each_side_along_the_path() -> None:
    lamps = city_block.lamps(city_block.build(24))
    assert lamps[0].neighbours == ("lamp-02", "lamp-03")
    assert lamps[2].neighbours == ("lamp-01", "lamp-02", "lamp-04", "lamp-05")
    xs = [lamp.position[0] for lamp in lamps]
    assert xs == sorted(xs) and xs[1] - xs[0] == city_block.LAMP_SPACING_M
    assert lamps[0].registry_config()["neighbours"] == ["lamp-02", "lamp-03"]


def test_a_faster_clock_gets_longer_wake_periods_within_an_hour() -> None:
    calm = city_block.periods_for(400, 18)
    assert calm == city_block.Periods(900, 600, 900)  # the defaults keep up at x400
    assert city_block.periods_for(440, 18) == city_block.Periods(900, 900, 900)
    fast = city_block.periods_for(9000, 5)
    assert fast == city_block.Periods(3600, 3600, 3600)
    assert 3600 % fast.meter_report_s == 0


def test_the_story_speed_leaves_the_walks_in_slow_motion() -> None:
    story = Story(city_block.build(8))
    speed = story_speed(story, 300)
    walks_real = sum(w.duration_s for w in story.walks) / 20
    rest = (story.end_s - story.start_s - sum(w.duration_s for w in story.walks)) / speed
    assert rest + walks_real == pytest.approx(300)


# -- what the sensors see --------------------------------------------------------------------


@pytest.mark.micropython
def test_the_leaking_meter_counts_all_night_and_the_others_do_not(mpy: Any) -> None:
    sim = mpy.module("firmware.boards.sim.scenario")
    specs = {s.node_id: s for s in city_block.build(8)}
    leaking = sim.Scenario(scenario.sensors(specs["meter-01"]))
    other = sim.Scenario(scenario.sensors(specs["meter-02"]))
    night = START_S + 7 * HOUR  # Tuesday 03:00
    before_leak = START_S + 2 * HOUR  # Monday 22:00
    # 25 L/h is 25 pulses an hour at 1 L a pulse: the count the node reads in the night
    assert leaking.at(night + HOUR)["pulses:34"] - leaking.at(night)["pulses:34"] == 25
    assert other.at(night + HOUR)["pulses:34"] == other.at(night)["pulses:34"]
    assert leaking.at(before_leak + 1800)["pulses:34"] == leaking.at(before_leak)["pulses:34"]
    morning = START_S + 12 * HOUR  # Tuesday 08:00: 150 L/h of use plus the leak
    assert leaking.at(morning + HOUR)["pulses:34"] - leaking.at(morning)["pulses:34"] == 175


@pytest.mark.micropython
def test_the_park_entrance_bin_is_full_at_night_and_emptied_at_half_past_six(mpy: Any) -> None:
    sim = mpy.module("firmware.boards.sim.scenario")
    spec = city_block.build(8)[-1]
    assert spec.node_id == "bin-01"
    sc = sim.Scenario(scenario.sensors(spec))
    full_mm = scenario.range_mm(90)
    assert sc.at(START_S)["range_mm"] > full_mm
    assert sc.at(START_S + 2 * HOUR)["range_mm"] <= full_mm  # Monday 22:00: 91 %
    collect = scenario.COLLECTIONS_S[0]
    assert sc.at(collect - 60)["range_mm"] <= full_mm
    assert sc.at(collect + 60)["range_mm"] == scenario.range_mm(scenario.EMPTY_LEFT_PCT)
    assert Story(city_block.build(8)).emptied_bins() == ["bin-01"]


@pytest.mark.micropython
def test_cars_bend_the_field_over_the_spot_while_they_stay(mpy: Any) -> None:
    sim = mpy.module("firmware.boards.sim.scenario")
    spec = next(s for s in city_block.build(8) if s.node_id == "spot-01")
    sc = sim.Scenario(scenario.sensors(spec))
    arrives, leaves = scenario.visits(1)[0]
    assert tuple(sc.at(arrives - 1)["mag"]) == scenario.MAG_FREE
    assert tuple(sc.at(arrives + 1)["mag"]) == scenario.MAG_CAR
    assert tuple(sc.at(leaves + 1)["mag"]) == scenario.MAG_FREE
    # 45 uT apart at 3000 counts a gauss: far over the 8 uT threshold
    d = [
        (c - f) * 100_000 // 3000 for c, f in zip(scenario.MAG_CAR, scenario.MAG_FREE, strict=True)
    ]
    assert sum(x * x for x in d) ** 0.5 > 40_000


def test_the_walker_is_seen_by_each_pir_in_turn() -> None:
    walk = scenario.Walk(START_S, ("lamp-01", "lamp-02", "lamp-03"))
    windows = walk.pir_windows()
    assert [w[0] for w in windows] == ["lamp-01", "lamp-02", "lamp-03"]
    gap = walk.arrival_s(1) - walk.arrival_s(0)
    assert gap == pytest.approx(city_block.LAMP_SPACING_M / scenario.WALK_SPEED_MPS)
    for (_, on, off), k in zip(windows, range(3), strict=True):
        assert on < walk.arrival_s(k) < off
    assert windows[0][2] < windows[1][1]  # one PIR at a time


# -- the clock -------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_runs_at_its_rate_and_waits_at_the_limit() -> None:
    real = FakeTime()
    clock = CityClock(1000.0, 50.0, real)
    real.t += 2
    assert clock.advance() == 1100.0
    real.t += 2
    assert clock.advance(limit=1150.0) == 1150.0  # stopped 50 virtual s short
    assert clock.stalled_s == pytest.approx(1.0)
    real.t += 1
    assert clock.advance(limit=1120.0) == 1150.0  # never backwards
    clock.set_rate(10.0)
    real.t += 1
    assert clock.advance() == 1160.0
    real.t += 30  # a long set-up
    clock.resume()
    real.t += 1
    assert clock.advance() == 1170.0


# -- the narrator ----------------------------------------------------------------------------


def _record(node: str, kind: str, **data: Any) -> dict[str, Any]:
    return {"node": node, "kind": kind, "data": {"type": kind, **data}, "alarm": kind == "alarm"}


def test_the_narrator_tells_the_leak_the_bins_and_the_cars_from_upstream_records() -> None:
    specs = city_block.build(6)
    lines: list[str] = []
    narrator = Narrator(specs, lambda: START_S + 27 * HOUR, lines.append)
    narrator.record(_record("meter-01", "leak", leak="none", flow_lh=25, night_flow_lh=25))
    narrator.record(_record("meter-01", "leak", leak="suspected", flow_lh=25))
    narrator.record(_record("meter-01", "alarm", alarm="leak_confirmed", active=True, value=25))
    narrator.record(_record("meter-01", "alarm", alarm="leak_confirmed", active=True, value=25))
    narrator.record(_record("bin-01", "alarm", alarm="bin_full", active=True, value=91))
    narrator.record(_record("bin-01", "event", event="bin_emptied"))
    narrator.record(_record("spot-01", "occupancy", state="free"))
    narrator.record(_record("spot-01", "event", event="spot_change", state="occupied"))
    narrator.record(_record("spot-01", "event", event="spot_change", state="free"))
    narrator.record(_record("nobody-99", "leak", leak="confirmed"))
    f = narrator.facts
    assert f.leak_suspected == ["meter-01"] and f.leak_confirmed == ["meter-01"]
    assert f.bins_full == ["bin-01"] and f.bins_emptied == ["bin-01"]
    assert f.cars_parked == ["spot-01"] and f.cars_left == ["spot-01"]
    assert f.reporting == ["bin-01", "meter-01", "spot-01"]
    assert sum("LEAK CONFIRMED" in line for line in lines) == 1  # the reminder is not retold
    assert any(re.match(r"Tue 23:00 +meter-01 +leak SUSPECTED", line) for line in lines)
    assert any("bin FULL (91 %)" in line for line in lines)


def test_a_lamp_lit_before_its_own_pir_saw_the_walker_counts_as_lit_ahead() -> None:
    specs = city_block.build(6)
    narrator = Narrator(specs, lambda: START_S, lambda _line: None)
    walk = scenario.Walk(START_S, ("lamp-01", "lamp-02", "lamp-03"))
    narrator.walk_started(walk, 10.0, 20.0)
    narrator.walker_seen("lamp-01", 10.5)
    narrator.lamp_output("lamp-01", "pwm:25", 65535, 10.51)
    narrator.lamp_output("lamp-02", "pwm:25", 20000, 10.6)  # fading up
    narrator.lamp_output("lamp-02", "pwm:25", 65535, 10.65)
    narrator.walker_seen("lamp-02", 11.4)
    narrator.walker_seen("lamp-03", 12.3)
    narrator.lamp_output("lamp-03", "pwm:25", 65535, 12.31)  # only its own PIR lit it
    summary = narrator.walk_ended()
    assert summary is not None
    assert summary["lit_ahead"] == {"lamp-02": pytest.approx(15.0)}
    assert summary["not_lit_ahead"] == ["lamp-03"]


# -- processes -------------------------------------------------------------------------------


def test_a_stopped_child_takes_its_whole_process_group_along(tmp_path: Path) -> None:
    children = Children()
    marker = tmp_path / "grandchild-pid"
    script = f"sleep 300 & echo $! > {marker}; wait"
    child = children.spawn("shell", ["sh", "-c", script], cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    grandchild = int(marker.read_text())
    assert os.getpgid(grandchild) == child.pid  # the child's own group, not ours
    assert os.getsid(child.pid) == child.pid
    children.stop(child, signal.SIGTERM, grace_s=2.0)
    assert not children.alive
    deadline = time.monotonic() + 5
    while _running(grandchild):  # gone, or a zombie waiting for init to reap it
        assert time.monotonic() < deadline, "the grandchild outlived its group"
        time.sleep(0.01)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_leftovers_finds_a_process_that_names_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    run.mkdir()
    proc = subprocess.Popen(["sleep", "30"], env={"SIM_STATE": str(run / "x")})
    try:
        assert leftovers(run) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert leftovers(run) == []


# -- reading upstream ------------------------------------------------------------------------


def test_the_spool_follower_reads_across_a_rotation_without_loss_or_repeat(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []
    feed = SpoolFeed(tmp_path, got.append)
    current = tmp_path / "current.jsonl"
    current.write_text('{"n": 1}\n{"n": 2}\n{"n"')
    feed.poll()
    assert [r["n"] for r in got] == [1, 2]
    with current.open("a") as f:
        f.write(': 3}\n{"n": 4}\n')
    current.rename(tmp_path / "readings-00000001.jsonl")  # what the spool sink does
    (tmp_path / "current.jsonl").write_text('{"n": 5}\n')
    feed.poll()
    feed.poll()
    assert [r["n"] for r in got] == [1, 2, 3, 4, 5]


def test_the_end_waits_for_what_the_gateway_still_holds_for_its_sinks() -> None:
    metrics = Metrics(sinks=("mqtt", "spool"))
    metrics.queue_depth.labels("mqtt").set(3)
    metrics.queue_depth.labels("spool").set(4)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert queued_upstream(port) == 7
        metrics.queue_depth.labels("mqtt").set(0)
        metrics.queue_depth.labels("spool").set(0)
        assert queued_upstream(port) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert queued_upstream(port) is None  # the gateway is gone: unknown, not empty


def test_the_broker_probe_needs_a_real_mqtt_connack(tmp_path: Path) -> None:
    port = free_tcp_port()
    assert not mqtt_broker_up("127.0.0.1", port)  # nothing listens
    with mosquitto(tmp_path) as port:
        assert mqtt_broker_up("127.0.0.1", port)
    # a TCP server that is not a broker: the kernel accepts, nobody ever answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        assert not mqtt_broker_up("127.0.0.1", silent.getsockname()[1], timeout_s=0.5)
    finally:
        silent.close()


def test_summary_facts_survive_json() -> None:
    narrator = Narrator(city_block.build(6), lambda: START_S, lambda _line: None)
    assert json.loads(json.dumps(narrator.facts.as_dict()))["nodes"] == 6


def test_nodes_power_up_one_after_the_other_and_get_their_own_time() -> None:
    story = Story(city_block.build(8))
    starts = sorted(story.power_on_s.values())
    assert len(set(starts)) == 8 and starts[0] == START_S
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 10
    sync = story.time_sync("bin-01")
    assert sync["type"] == "time" and sync["utc_offset_min"] == 0
    assert 0 <= sync["unix_s"] - story.power_on_s["bin-01"] <= 5

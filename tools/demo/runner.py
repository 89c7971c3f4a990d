"""One run of the demo, start to clean stop.

Order of things: a run folder under var/demo/; the firmware precompiled; an MQTT broker on
127.0.0.1:1883 probed; the radio medium started; the gateway's config, keys, registry, time
syncs and an operator account written; the gateway started (its readiness comes over the
sd_notify socket, as under systemd); the lamps switched on; then the story plays on the city
clock, battery nodes waking when it reaches their time. On Ctrl-C or SIGTERM (or at the end of
the story with `exit_after_story`): the nodes lose power, the gateway gets SIGTERM and flushes
its store, the medium stops; the demo checks no process it started is left and writes
summary.json into the run folder (kept: var/demo/ holds the last RUNS_KEPT runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.demo import bytecode, city_block, provision
from tools.demo.clock import CityClock, ClockHistory
from tools.demo.narrator import Narrator
from tools.demo.nodes import City, free_udp_port
from tools.demo.processes import Child, Children
from tools.demo.scenario import Story, Walk, clock_text
from tools.demo.upstream import MQTTFeed, SpoolFeed, queued_upstream

ROOT = Path(__file__).resolve().parents[2]
NODE_SPEED = 20.0  # a node's clock while it runs (battery lives, lamps), x real time
SCENE_SPEED = 20.0  # the city clock while the walker crosses the park: the lamps' own pace
AFTER_STORY_SPEED = 60.0  # once the story is told the block keeps running, calmly
TICK_S = 0.02
FEED_POLL_S = 0.2
RUNS_KEPT = 3
GATEWAY_START_S = 60.0
GATEWAY_STOP_S = 30.0
CATCH_UP_S = 30.0  # at the end, how long upstream may take to get what the gateway holds


class DemoError(Exception):
    """The demo cannot start; the message says why."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM came while the demo was still starting."""


@dataclass
class Options:
    nodes: int = 24
    duration_s: float = 300.0  # real seconds the story takes (slow-motion scenes included)
    http_port: int = 8080
    run_root: Path = ROOT / "var" / "demo"
    bytecode_cache: Path = ROOT / "var" / "demo" / "mpy"  # shared by runs: compiled once
    exit_after_story: bool = False
    max_running: int = 6  # battery node processes at once (most of a life waits on the network)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    gateway_log_level: str = "INFO"
    lora_lamps: bool = False


def say(text: str) -> None:
    print(text, flush=True)


# -- set-up helpers ------------------------------------------------------------------------------


def new_run_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text("*\n")
    runs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("run-"))
    for old in runs[: max(0, len(runs) - (RUNS_KEPT - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    folder = root / time.strftime("run-%Y%m%d-%H%M%S")
    if folder.exists():
        folder = folder.with_name(f"{folder.name}-{os.getpid()}")
    folder.mkdir()
    return folder


def mqtt_broker_up(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when an MQTT broker answers a CONNECT with a CONNACK that accepts it."""
    client_id = f"city-demo-probe-{os.getpid()}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"  # MQTT 3.1.1, clean session, keep-alive 10 s
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(packet)
            answer = s.recv(4)
            s.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    return len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0


def http_port(wanted: int) -> int:
    """`wanted` if it is free on 127.0.0.1, else any free port (0: any)."""
    for port in (wanted, 0) if wanted else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise DemoError("no free TCP port on 127.0.0.1 for the web page")


def story_speed(story: Story, duration_s: float) -> float:
    """City clock rate so that the whole story, slow-motion walks included, takes
    `duration_s` real seconds (when the cores keep up)."""
    span = story.end_s - story.start_s
    walks_v = sum(w.duration_s for w in story.walks)
    walks_real = walks_v / SCENE_SPEED
    left = max(duration_s - walks_real, 1.0)
    return max(SCENE_SPEED, (span - walks_v) / left)


def describe(specs: list[city_block.NodeSpec]) -> str:
    names = {
        "lighting": ("lamp", "lamps"),
        "leak": ("water meter", "water meters"),
        "occupancy": ("parking spot", "parking spots"),
        "binfill": ("bin", "bins"),
    }
    parts = []
    for kind in city_block.KINDS:
        n = sum(1 for s in specs if s.kind == kind)
        parts.append(f"{n} {names[kind][n != 1]}")
    coap = sum(1 for s in specs if s.link == "coap")
    return f"{', '.join(parts)}; {coap} over CoAP/WiFi, {len(specs) - coap} over LoRa"


# -- the run -----------------------------------------------------------------------------------


class Demo:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.children = Children()
        self.stop = asyncio.Event()
        self.stop_reason = ""
        self.gateway: Child | None = None
        self.medium: Child | None = None
        self.city: City | None = None
        self.narrator: Narrator | None = None
        self.feed: SpoolFeed | MQTTFeed | None = None
        self.notify: socket.socket | None = None
        self.folder: Path | None = None
        self.summary: dict[str, Any] = {}
        self.clock: CityClock | None = None
        self.history = ClockHistory()
        self.http_port = 0
        self.times: dict[str, float] = {"begin": time.monotonic()}

    def _signal(self, name: str) -> None:
        if not self.stop.is_set():
            say(f"\n{name}: stopping the city block...")
            self.stop_reason = name
        self.stop.set()

    def _spawn(self, name: str, argv: list[str], log: Path, **kw: Any) -> Child:
        with log.open("ab") as out:
            child = self.children.spawn(name, argv, cwd=kw.pop("cwd", ROOT), stdout=out, **kw)
        return child

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal, signal.Signals(sig).name)
        code = 0
        try:
            await self._run()
        except DemoError as exc:
            say(f"demo: {exc}")
            code = 1
        except Stopped:
            say("demo: stopped before the story began")
        finally:
            await self._shutdown()
        return code

    async def _run(self) -> None:
        opts = self.options
        folder = self.folder = new_run_folder(opts.run_root)
        logs = folder / "logs"
        (logs / "nodes").mkdir(parents=True)
        modules, what = bytecode.module_path(opts.bytecode_cache)
        mqtt = mqtt_broker_up(opts.mqtt_host, opts.mqtt_port)

        medium_port = await self._start_medium(logs)
        ports = provision.Ports(
            coap=free_udp_port(), http=http_port(opts.http_port), medium=medium_port
        )
        preview = Story(city_block.build(opts.nodes))
        speed = story_speed(preview, opts.duration_s)
        batteries = sum(1 for s in preview.specs if s.battery)
        periods = city_block.periods_for(speed, batteries)
        specs = city_block.build(opts.nodes, periods, lora_lamps=opts.lora_lamps)
        story = Story(specs)
        broker = (opts.mqtt_host, opts.mqtt_port) if mqtt else None
        run = await provision.provision(
            folder,
            specs,
            story,
            ports,
            mqtt=broker,
            node_speed=NODE_SPEED,
            log_level=opts.gateway_log_level,
        )
        user, password = provision.create_operator(run.config)
        self.http_port = ports.http
        clock = self.clock = CityClock(story.start_s, speed)
        history = self.history

        def when(node_id: str, received: float, age_s: float) -> float | None:
            """A battery node dates a reading on its own clock, which runs from its wake-up;
            a lamp's clock has run at its own pace all along: its age is real time x20."""
            at = self.city.node_time(node_id, received) if self.city is not None else None
            if at is not None:
                return at - age_s
            return history.at(received - age_s / NODE_SPEED)

        narrator = self.narrator = Narrator(specs, lambda: clock.now, say, when)
        if mqtt:
            topics = f"city/{provision.SITE}/#"
            self.feed = MQTTFeed(opts.mqtt_host, opts.mqtt_port, topics, narrator.record)
            upstream = f"the MQTT broker on {opts.mqtt_host}:{opts.mqtt_port} ({topics})"
        else:
            self.feed = SpoolFeed(run.config.sinks.spool.path, narrator.record)
            spool = _rel(run.config.sinks.spool.path)
            where = f"{opts.mqtt_host}:{opts.mqtt_port}"
            upstream = f"the local spool {spool}/ (no MQTT broker on {where})"

        if self.stop.is_set():
            raise Stopped
        await self._start_gateway(run, logs)
        day_min = 86400 / speed / 60
        say("")
        say(f"City block demo: {len(specs)} nodes ({describe(specs)})")
        say(f"  web page   http://127.0.0.1:{ports.http}/")
        say(f"  log in as  {user} / {password}   (an operator account made for this run)")
        say(f"  upstream   {upstream}")
        span = f"{clock_text(story.start_s)} -> {clock_text(story.end_s)}"
        pace = f"a day in {day_min:.1f} min (x{speed:.0f})"
        say(f"  time       {span}, {pace}; x{SCENE_SPEED:.0f} while the walker crosses the park")
        say(f"  firmware   {what}; run folder {_rel(folder)}/")
        say("  Ctrl-C stops everything.")
        say("")
        narrator.line("story", f"{len(specs)} nodes power up; the gateway is listening")

        city = self.city = City(
            specs,
            run.node_folders,
            self.children,
            modules=modules,
            micropython=bytecode.micropython_binary(),
            logs=logs / "nodes",
            power_on_s=story.power_on_s,
            node_speed=NODE_SPEED,
            max_running=opts.max_running,
            on_problem=lambda text: narrator.line("demo", text),
        )
        city.on_output = narrator.lamp_output
        await city.start_lamps(clock.now)
        self.times["story"] = time.monotonic()
        clock.resume()  # the set-up's time does not count
        await self._play(story, clock, speed)

    async def _play(self, story: Story, clock: CityClock, speed: float) -> None:
        city, narrator, feed = self.city, self.narrator, self.feed
        assert city is not None and narrator is not None and feed is not None
        cues = list(story.cues)
        walks = list(story.walks)
        active: tuple[Walk, list[tuple[float, str, Any]]] | None = None
        told = False
        next_poll = 0.0
        while not self.stop.is_set():
            limits = [city.limit(), story.end_s if not told else None]
            if cues:
                limits.append(cues[0].at_s)
            if active is None and walks:
                limits.append(walks[0].start_s)
            if active is not None:
                limits.append(
                    active[1][0][0] if active[1] else active[0].start_s + active[0].duration_s
                )
            now = clock.advance(min((x for x in limits if x is not None), default=None))
            self.history.record(time.time(), now)
            while cues and cues[0].at_s <= now:
                narrator.line("story", cues.pop(0).text)
            if active is None and walks and walks[0].start_s <= now:
                walk = walks.pop(0)
                clock.set_rate(SCENE_SPEED)
                narrator.walk_started(walk, time.monotonic(), SCENE_SPEED)
                active = (walk, _walk_events(walk))
            if active is not None:
                walk, events = active
                while events and events[0][0] <= now:
                    _, what, lamp = events.pop(0)
                    if what == "arrive":
                        narrator.walker_at(lamp, time.monotonic())
                        continue
                    if what == "pir_on":
                        narrator.walker_seen(lamp, time.monotonic())
                    city.lamp_signal(lamp, {"pin:39": 1 if what == "pir_on" else 0})
                if not events and now >= walk.start_s + walk.duration_s:
                    narrator.walk_ended()
                    clock.set_rate(speed)
                    active = None
            city.step(now)
            city.keep_lamps_on()
            self._drain_notify()
            if time.monotonic() >= next_poll:
                feed.poll()
                next_poll = time.monotonic() + FEED_POLL_S
            if not told and now >= story.end_s:
                await self._catch_up(story.end_s)
                told = True
                narrator.line("story", "the end: Wednesday morning, the city block carries on")
                self._tell_summary()
                if self.options.exit_after_story:
                    self.stop_reason = "end of the story"
                    break
                clock.set_rate(AFTER_STORY_SPEED)
                say("The block keeps running (x60) with the web page up: Ctrl-C stops it.")
            if self.gateway is not None and self.gateway.exited():
                raise DemoError(
                    f"the gateway stopped (exit {self.gateway.returncode}): see logs/gateway.log"
                )
            await asyncio.sleep(TICK_S)
        feed.poll()

    async def _catch_up(self, end_s: float) -> None:
        """Hold the clock at the end until the last lives are over and upstream has all the
        gateway stored: forwarding runs in batches behind the ingest, and the summary tells
        what reached upstream (a confirmation at 06:01 must not miss a story ending at 07:00)."""
        city, feed = self.city, self.feed
        assert city is not None and feed is not None
        self.times["end"] = time.monotonic()
        deadline = self.times["end"] + CATCH_UP_S
        empty_polls = 0
        while empty_polls < 2 and time.monotonic() < deadline and not self.stop.is_set():
            city.step(end_s)
            city.keep_lamps_on()
            self._drain_notify()
            feed.poll()
            queued = (
                None if city.running else await asyncio.to_thread(queued_upstream, self.http_port)
            )
            # twice in a row: an MQTT subscriber gets the broker's copy a moment after the
            # gateway had its PUBACK
            empty_polls = empty_polls + 1 if queued == 0 else 0
            await asyncio.sleep(FEED_POLL_S)
        feed.poll()
        self.times["caught_up"] = time.monotonic()

    def _timing(self) -> dict[str, float]:
        t = self.times
        out = {"setup": t.get("story", time.monotonic()) - t["begin"]}
        if "story" in t:
            out["story"] = t.get("end", time.monotonic()) - t["story"]
        if "caught_up" in t:
            out["upstream_catch_up"] = t["caught_up"] - t["end"]
        if self.clock is not None:
            out["clock_waited"] = self.clock.stalled_s
        if self.city is not None and self.city.lives():
            out["awake_per_life"] = self.city.awake_real_s / self.city.lives()
        return {k: round(v, 3) for k, v in out.items()}

    def _drain_notify(self) -> None:
        while self.notify is not None:
            try:
                self.notify.recv(4096)
            except BlockingIOError:
                return

    def _tell_summary(self) -> None:
        assert self.narrator is not None
        f = self.narrator.facts
        say("")
        say("What the story showed (from what reached upstream):")
        say(f"  nodes reporting  {len(f.reporting)} of {f.nodes}; {f.records} readings forwarded")
        suspected, confirmed = _names(f.leak_suspected), _names(f.leak_confirmed)
        say(f"  leak             suspected: {suspected}; confirmed alarm: {confirmed}")
        say(f"  bins             full: {_names(f.bins_full)}; emptied: {_names(f.bins_emptied)}")
        say(f"  parking          {len(f.cars_parked)} cars parked, {len(f.cars_left)} left")
        for i, walk in enumerate(f.walks, 1):
            ahead, of = len(walk["lit_ahead"]), len(walk["lamps"]) - 1
            say(f"  walk {i}           {ahead} of {of} lamps lit ahead of the walker")
        say("")

    # -- processes ----------------------------------------------------------------------------
    async def _start_medium(self, logs: Path) -> int:
        log = logs / "medium.log"
        argv = [sys.executable, "-m", "hil.medium", "--port", "0", "--time-scale", str(NODE_SPEED)]
        argv += ["--stats", str(logs / "medium-stats.json")]  # its airtime audit, at exit
        with log.open("ab") as err:
            self.medium = self.children.spawn(
                "medium", argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err
            )
        stdout = self.medium.proc.stdout
        assert stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 20)
        except TimeoutError:
            line = b"(nothing within 20 s)"
        if not line.startswith(b"READY"):
            raise DemoError(f"the radio medium did not start: {line!r}")
        return int(line.split()[1])

    async def _start_gateway(self, run: provision.Run, logs: Path) -> None:
        """Start the gateway; it says READY=1 over the sd_notify socket once it serves (the
        socket stays open until it has stopped: it says STOPPING=1 there too)."""
        notify_path = run.folder / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self.notify.setblocking(False)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "gateway", "--config", str(run.config_path)]
        self.gateway = self._spawn("gateway", argv, logs / "gateway.log", env=env)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + GATEWAY_START_S
        while True:
            if self.gateway.exited():
                tail = (logs / "gateway.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"the gateway did not start:\n{tail}")
            if self.stop.is_set():
                raise Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError("the gateway did not report ready within a minute")
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.notify, 4096), min(left, 0.5))
            except TimeoutError:
                continue
            if b"READY=1" in data.split(b"\n"):
                return

    async def _shutdown(self) -> None:
        """Nodes first (no new uplinks), then the gateway (flushes its store), then the medium."""
        started = time.monotonic()
        if self.city is not None:
            self.city.stop()
        if self.feed is not None:
            with contextlib.suppress(Exception):
                self.feed.poll()
        gateway_code = None
        if self.gateway is not None:
            gateway_code = self.children.stop(self.gateway, signal.SIGTERM, GATEWAY_STOP_S)
        if isinstance(self.feed, SpoolFeed):
            self.feed.poll()  # what the gateway forwarded while it shut down
        if self.notify is not None:
            path = self.notify.getsockname()
            self.notify.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.medium is not None:
            self.children.stop(self.medium, signal.SIGTERM, 5.0)
        if isinstance(self.feed, MQTTFeed):
            self.feed.close()
        self.children.stop_all()
        left = leftovers(self.folder) if self.folder is not None else []
        if self.narrator is not None and self.folder is not None:
            self.summary = {
                "facts": self.narrator.facts.as_dict(),
                "stop_reason": self.stop_reason,
                "gateway_exit": gateway_code,
                "processes_started": self.children.started,
                "processes_left": left,
                "node_lives": self.city.lives() if self.city is not None else 0,
                "timing_s": self._timing(),
                "run_folder": str(self.folder),
            }
            (self.folder / "summary.json").write_text(json.dumps(self.summary, indent=1))
        how = "none left" if not left else f"{len(left)} LEFT: {left}"
        say(f"timing (real s): {self.summary.get('timing_s') or self._timing()}")
        say(
            f"stopped in {time.monotonic() - started:.1f} s: {self.children.started} processes "
            f"started, {how}; gateway exit {gateway_code}"
        )
        if self.folder is not None:
            say(f"run folder kept: {_rel(self.folder)}/ (summary.json, logs/)")


def _walk_events(walk: Walk) -> list[tuple[float, str, Any]]:
    events: list[tuple[float, str, Any]] = []
    for k, (lamp, on, off) in enumerate(walk.pir_windows()):
        events.append((walk.start_s + on, "pir_on", lamp))
        events.append((walk.start_s + off, "pir_off", lamp))
        events.append((walk.start_s + walk.arrival_s(k), "arrive", lamp))
    return sorted(events, key=lambda e: e[0])


def leftovers(folder: Path) -> list[int]:
    """Processes still running whose command line or environment names the run folder: every
    node (SIM_STATE), the gateway (--config) and the medium (--stats) do."""
    mark = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] != "Z" and mark in seen:
            found.append(int(entry.name))
    return found


def _names(items: list[str]) -> str:
    return ", ".join(items) or "-"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

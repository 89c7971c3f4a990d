"""The agent in one process: pipeline, registry refusals, downlinks, HTTP, systemd notify."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import registry
from gateway.agent import Agent, StartupError, _import
from gateway.links.base import Uplink, UplinkRefused
from gateway.registry import Node
from gateway.store import connect
from gateway.store.db import apply_schema
from tests.gateway.fakes import (
    LoopbackLink,
    MemorySink,
    eventually,
    loopback,
    make_config,
    reading,
)


def provision(config_dir: Path, *nodes: Node) -> None:
    """Register nodes the way the CLI does: straight into the database."""
    (config_dir / "data").mkdir(parents=True, exist_ok=True)
    conn = connect(config_dir / "data" / "gateway.db")
    apply_schema(conn, [registry.SCHEMA])
    for node in nodes:
        registry.add_node(conn, node)
    conn.close()


Body = Callable[[Agent, LoopbackLink, MemorySink], Awaitable[None]]


def run_agent(tmp_path: Path, body: Body, **sections: Any) -> Agent:
    provision(tmp_path, Node("m-1", "leak", "coap"), Node("l-2", "lighting", "coap"))
    sink = MemorySink()
    links, factory = loopback()
    config = make_config(tmp_path, forwarding={"batch_time_s": 0.0}, **sections)
    agent = Agent(config, sinks=[sink], links=[factory])
    agent.web_page = False  # the core's own routes; the field staff page is tested on its own

    async def main() -> None:
        await agent.start()
        try:
            await body(agent, links[0], sink)
        finally:
            await agent.shutdown()

    asyncio.run(main())
    return agent


def sample(agent: Agent, name: str, **labels: str) -> float:
    found = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_uplink_to_store_to_sink(tmp_path: Path) -> None:
    async def body(agent: Agent, link: LoopbackLink, sink: MemorySink) -> None:
        assert link.started
        assert await link.uplink("m-1", [1, 2], rssi_dbm=-97.0, snr_db=4.5, battery_mv=3300) == []
        # Committed before handle() returned:
        assert await agent.store.all_ids() == ["m-1:1:0", "m-1:2:0"]
        await eventually(lambda: len(sink.accepted) == 2)
        assert sample(agent, "city_gateway_readings_in_total", link="coap") == 2
        # A resend of the same uplink (same OSCORE sequence numbers) is not stored twice.
        await link.uplink("m-1", [2])
        assert sample(agent, "city_gateway_readings_duplicate_total", link="coap") == 1
        state = await agent.status.get("m-1")
        assert state is not None
        assert (state.link, state.rssi_dbm, state.snr_db, state.battery_mv, state.uplinks) == (
            "coap", -97.0, 4.5, 3300, 2,
        )  # fmt: skip
        assert sample(agent, "city_gateway_rssi_dbm_count", link="coap") == 1
        assert len(await agent.status.history("m-1")) == 2

    agent = run_agent(tmp_path, body)
    assert agent.links[0].closed  # type: ignore[attr-defined]
    assert agent.sinks[0].closed == 1  # type: ignore[attr-defined]


def test_unknown_and_malformed_uplinks_are_refused_and_counted(tmp_path: Path) -> None:
    async def body(agent: Agent, link: LoopbackLink, sink: MemorySink) -> None:
        with pytest.raises(UplinkRefused) as refused:
            await link.uplink("stranger", [1])
        assert refused.value.reason == "unknown_node"
        assert sample(agent, "city_gateway_refusals_total", link="coap", reason="unknown_node") == 1
        assert agent.registry.unknown["stranger"].count == 1
        # Readings claiming another node inside m-1's authenticated uplink.
        forged = Uplink("m-1", "coap", 0.0, readings=[reading("l-2", 1)])
        with pytest.raises(UplinkRefused, match="malformed"):
            await agent.pipeline.handle(forged)
        agent.pipeline.refuse("lora", "bad_tag")
        with pytest.raises(ValueError, match="unknown refusal reason"):
            agent.pipeline.refuse("lora", "cosmic rays")
        assert sample(agent, "city_gateway_refusals_total", link="coap", reason="malformed") == 1
        assert sample(agent, "city_gateway_refusals_total", link="lora", reason="bad_tag") == 1
        assert await agent.store.all_ids() == []
        # Provisioned later (by the CLI, another process): accepted from the next refresh on.
        other = connect(agent.config.database_path)
        registry.add_node(other, Node("stranger", "binfill", "coap"))
        other.close()
        await eventually(lambda: agent.registry.get("stranger") is not None, timeout=3.0)
        await link.uplink("stranger", [2])
        assert await agent.store.all_ids() == ["stranger:2:0"]

    run_agent(tmp_path, body)


def test_downlinks_ride_on_responses_until_confirmed(tmp_path: Path) -> None:
    async def body(agent: Agent, link: LoopbackLink, sink: MemorySink) -> None:
        command = await agent.downlinks.enqueue("l-2", {"profile": "dim"}, origin="test")
        assert await link.uplink("m-1", [1]) == []  # not for this node
        first = await link.uplink("l-2", [1])
        assert [(d.id, d.command, d.state) for d in first] == [
            (command.id, {"profile": "dim"}, "sent")
        ]
        again = await link.uplink("l-2", [2])  # not confirmed yet: sent again
        assert [d.attempts for d in again] == [2]
        assert await link.uplink("l-2", [3], confirmed=[command.id]) == []
        listed = await agent.downlinks.list("l-2")
        assert [(d.state, d.attempts) for d in listed] == [("confirmed", 2)]
        assert sample(agent, "city_gateway_downlinks_total", state="confirmed") == 1
        assert sample(agent, "city_gateway_downlinks_total", state="sent") == 2

    run_agent(tmp_path, body)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_healthz_and_extra_routes(tmp_path: Path) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="field staff page")

    async def body(agent: Agent, link: LoopbackLink, sink: MemorySink) -> None:
        assert agent.http is not None
        port = agent.http.port
        await link.uplink("m-1", [1, 2, 3], alarm=True)
        await eventually(lambda: len(sink.accepted) == 3)
        status, text = await asyncio.to_thread(http_get, port, "/metrics")
        assert status == 200
        lines = set(text.splitlines())
        assert 'city_gateway_readings_in_total{link="coap"} 3.0' in lines
        assert 'city_gateway_readings_out_total{sink="mem"} 3.0' in lines
        assert 'city_gateway_queue_depth{sink="mem"} 0.0' in lines
        assert 'city_gateway_refusals_total{link="lora",reason="replay"} 0.0' in lines
        assert 'city_gateway_evictions_total{class="alarm"} 0.0' in lines
        assert "city_gateway_store_readings 3.0" in lines
        assert "city_gateway_nodes 2.0" in lines
        assert any(line.startswith("city_gateway_store_disk_bytes ") for line in lines)
        status, text = await asyncio.to_thread(http_get, port, "/healthz")
        health = json.loads(text)
        assert status == 200 and health["status"] == "ok"
        assert health["checks"] == {
            "started": True,
            "store_committer": True,
            "background_tasks": True,
            "disk_within_bound": True,
        }
        assert health["sinks"]["mem"]["state"] == "up"
        assert await asyncio.to_thread(http_get, port, "/hello") == (200, "field staff page")

    provision(tmp_path, Node("m-1", "leak", "coap"), Node("l-2", "lighting", "coap"))
    sink = MemorySink()
    links, factory = loopback()
    config = make_config(
        tmp_path,
        forwarding={"batch_time_s": 0.0},
        http={"enabled": True, "bind": "127.0.0.1", "port": 0},
    )
    agent = Agent(config, sinks=[sink], links=[factory])
    agent.web_page = False

    def add_hello(app: web.Application) -> None:  # as gateway.web's setup(app) does
        app.router.add_get("/hello", hello)

    agent.http_setups.append(add_hello)

    async def main() -> None:
        await agent.start()
        try:
            await body(agent, links[0], sink)
        finally:
            await agent.shutdown()

    asyncio.run(main())


def test_a_dead_part_fails_healthz_and_stops_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms

    def received() -> list[str]:
        messages = []
        notify.setblocking(False)
        try:
            while True:
                messages.append(notify.recv(1024).decode())
        except BlockingIOError:
            pass
        return messages

    async def body(agent: Agent, link: LoopbackLink, sink: MemorySink) -> None:
        await asyncio.sleep(0.3)
        first = received()
        assert first[0].startswith("READY=1\n")
        assert 3 <= first.count("WATCHDOG=1") <= 8

        async def broken(sink: str, limit: int) -> list[Any]:
            raise RuntimeError("disk gone")

        agent.store.outbox = broken  # type: ignore[method-assign]
        await link.uplink("m-1", [1])  # wakes the forwarder, which dies on the broken outbox
        await eventually(lambda: not agent.health_checks()["background_tasks"])
        received()
        await asyncio.sleep(0.3)
        assert "WATCHDOG=1" not in received()  # systemd will restart us
        port = agent.http.port  # type: ignore[union-attr]
        status, text = await asyncio.to_thread(http_get, port, "/healthz")
        assert status == 503 and json.loads(text)["checks"]["background_tasks"] is False

    run_agent(tmp_path, body, http={"enabled": True, "bind": "127.0.0.1", "port": 0})
    assert received()[-1] == "STOPPING=1"
    notify.close()


def test_missing_modules_are_named() -> None:
    with pytest.raises(StartupError, match=r"links.coap.enabled asks for gateway.links.nope"):
        _import("gateway.links.nope", "links.coap.enabled")

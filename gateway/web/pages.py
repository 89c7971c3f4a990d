"""The pages (GET): overview, nodes, node detail, alarms, gateway, audit log; the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from aiohttp import web

from gateway.records import Reading
from gateway.registry import LINKS
from gateway.web import charts, model
from gateway.web.auth import cookie_name
from gateway.web.gate import HEADERS
from gateway.web.i18n import choose, translator
from gateway.web.site import WEB, render

OVERVIEW_ALARMS = 5
KEEPALIVE_S = 15.0
# What the node detail charts for each kind: field, title, unit, drawn as steps, fixed range.
METRICS: dict[str, tuple[str, str, str, bool, tuple[float, float] | None]] = {
    "leak": ("flow_lh", "Flow (L/h)", "L/h", False, None),
    "occupancy": ("state", "Occupied", "", True, (0.0, 1.0)),
    "lighting": ("level_pct", "Light level (%)", "%", False, (0.0, 100.0)),
    "binfill": ("fill_pct", "Fill level (%)", "%", False, (0.0, 100.0)),
}
_GEO = re.compile(r"\s*(-?\d{1,2}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)\s*")


def _(request: web.Request, text: str) -> str:
    return translator(choose(request))(text)


async def overview(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    agent = state.agent
    attention = await state.alarms.attention()
    rows = await model.node_rows(agent, attention, time.time())
    totals = {h: sum(1 for r in rows if r.health == h) for h in model.HEALTH}
    open_alarms = await state.alarms.episodes(open_only=True, limit=OVERVIEW_ALARMS + 1)
    stats, sinks = await model.buffer_health(agent)
    count = await state.alarms.count_open()
    return await render(
        request,
        "overview.html",
        title=_(request, "Overview"),
        section="/",
        live_kinds="node alarm registry downlink",
        alarms=open_alarms[:OVERVIEW_ALARMS],
        more_alarms=max(0, count - OVERVIEW_ALARMS),
        health_names=model.HEALTH,
        totals=totals,
        conditions=model.condition_counts(rows),
        total=len(rows),
        by_kind=model.health_table(rows),
        stats=stats,
        sinks=sinks,
    )


async def nodes(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    q = request.query
    attention = await state.alarms.attention()
    rows = await model.node_rows(state.agent, attention, time.time())
    shown = model.filter_rows(
        rows,
        kind=q.get("kind", ""),
        status=q.get("status", ""),
        link=q.get("link", ""),
        text=q.get("q", "")[:100],
    )
    kinds = list(model.KINDS) + sorted({r.node.kind for r in rows} - set(model.KINDS))
    return await render(
        request,
        "nodes.html",
        title=_(request, "Nodes"),
        section="/nodes",
        live_kinds="node alarm registry",
        rows=shown,
        total=len(rows),
        kinds=kinds,
        links=LINKS,
        health_names=model.HEALTH,
        condition_names=model.CONDITIONS,
        f_kind=q.get("kind", ""),
        f_status=q.get("status", ""),
        f_link=q.get("link", ""),
        f_text=q.get("q", "")[:100],
    )


def reading_points(kind: str, readings: list[Reading]) -> list[tuple[float, float]]:
    field = METRICS[kind][0] if kind in METRICS else None
    points = []
    for r in readings:
        value: Any = r.data.get(field) if field else None
        if kind == "occupancy" and isinstance(value, str):
            if value == "unknown":
                continue
            value = 1 if value == "occupied" else 0
        if isinstance(value, int | float) and not isinstance(value, bool):
            points.append((r.observed_at, float(value)))
    return points


async def node_detail(
    request: web.Request, status: int = 200, error: str | None = None
) -> web.StreamResponse:
    state = request.app[WEB]
    agent = state.agent
    node_id = request.match_info["node_id"]
    node = agent.registry.get(node_id)
    if node is None:
        return await not_found(request, _(request, "No such node."))
    node_state = await agent.status.get(node_id)
    attention = await state.alarms.attention()
    row = model.NodeRow(
        node,
        node_state,
        model.health(node, node_state, attention.get(node_id, 0), time.time()),
        attention.get(node_id, 0),
    )
    readings = await agent.store.recent(node_id, 200)
    history = await agent.status.history(node_id, 100)
    episodes = await state.alarms.episodes(node_id=node_id, limit=20)
    downlinks = await agent.downlinks.list(node_id=node_id, limit=30)
    lang = choose(request)
    tr = translator(lang)
    decimal = "." if lang == "en" else ","
    _field, title, unit, step, fixed = METRICS.get(node.kind, ("", "Readings", "", False, None))
    chart = charts.line_chart(
        reading_points(node.kind, readings),
        title=tr(title),
        unit=unit,
        step=step,
        fixed=fixed,
        empty=tr("No reading yet."),
        decimal=decimal,
        levels=((0.0, tr("free")), (1.0, tr("occupied"))) if node.kind == "occupancy" else (),
    )
    battery = [(h.at, h.battery_mv / 1000) for h in history if h.battery_mv is not None]
    battery_chart = (
        charts.line_chart(battery, title=tr("Battery (V)"), unit="V", decimal=decimal)
        if battery
        else None
    )
    sent = request.query.get("sent", "")
    geo = _GEO.fullmatch(node.location)
    profile = {
        key: node.config.get(key, "")
        for key in ("min_level_pct", "max_level_pct", "hold_s", "fade_ms")
    }
    return await render(
        request,
        "node.html",
        status=status,
        title=node_id,
        section="/nodes",
        live_kinds="node alarm downlink registry",
        live_node=node_id,
        node=node,
        state=node_state,
        row=row,
        interval=model.interval_s(node),
        chart=chart,
        battery_chart=battery_chart,
        readings=readings[:20],
        history=history[:15],
        episodes=episodes,
        downlinks=downlinks,
        downlinks_by_id={d.id: d for d in downlinks},
        config=model.node_config(node),
        profile=profile,
        sent=int(sent) if sent.isdigit() else None,
        error=error,
        geo=f"{geo.group(1)},{geo.group(2)}" if geo else None,
    )


async def alarms(
    request: web.Request, status: int = 200, error: str | None = None
) -> web.StreamResponse:
    state = request.app[WEB]
    episodes = await state.alarms.episodes(limit=300)
    ack_ids = {e.downlink_id for e in episodes if e.downlink_id is not None}
    by_id = {}
    if ack_ids:
        by_id = {d.id: d for d in await state.agent.downlinks.list(limit=500) if d.id in ack_ids}
    return await render(
        request,
        "alarms.html",
        status=status,
        title=_(request, "Alarms"),
        section="/alarms",
        live_kinds="alarm downlink",
        open=[e for e in episodes if e.open],
        done=[e for e in episodes if not e.open][:50],
        downlinks_by_id=by_id,
        error=error,
    )


async def gateway(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    agent = state.agent
    refusals = []
    for metric in agent.metrics.refusals.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                key = (sample.labels["link"], sample.labels["reason"])
                refusals.append((key, sample.value))
    unknown = sorted(agent.registry.unknown.items(), key=lambda kv: -kv[1].last_at)[:20]
    return await render(
        request,
        "gateway.html",
        title=_(request, "Gateway"),
        section="/gateway",
        live_kinds="registry",
        uptime=model.uptime_s(agent),
        nodes=len(agent.registry),
        clients=state.hub.clients,
        links=model.links(agent),
        versions=model.versions(),
        config=model.config_summary(agent),
        logs=state.logs.recent(100),
        refusals=sorted(refusals),
        unknown=unknown,
    )


async def audit(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    return await render(
        request,
        "audit.html",
        title=_(request, "Audit log"),
        section="/audit",
        live_kinds="audit",
        entries=await state.audit.recent(200),
    )


async def not_found(request: web.Request, message: str) -> web.StreamResponse:
    return await render(
        request,
        "error.html",
        status=404,
        title=_(request, "Not found"),
        heading=_(request, "Not found"),
        message=message,
        back="/",
        section="",
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `change` events while the session lasts (checked at each ping)."""
    state = request.app[WEB]
    token = request.cookies.get(cookie_name(request, "gw_session"))
    response = web.StreamResponse(
        headers={
            **HEADERS,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = state.hub.subscribe()
    try:
        # subscribed by now: the page catches up on what changed since it was rendered
        hello = json.dumps({"version": state.hub.version}).encode()
        await response.write(b"retry: 5000\nevent: hello\ndata: " + hello + b"\n\n")
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                if await state.sessions.lookup(token) is None:
                    break  # logged out, expired or removed: the stream ends with the session
                await response.write(b": keep-alive\n\n")
                continue
            if event is None:
                break
            await response.write(event)
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        state.hub.unsubscribe(queue)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/nodes", nodes)
    app.router.add_get("/nodes/{node_id}", node_detail)
    app.router.add_get("/alarms", alarms)
    app.router.add_get("/gateway", gateway)
    app.router.add_get("/audit", audit)
    app.router.add_get("/events", events)

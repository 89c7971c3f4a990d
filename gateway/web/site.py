"""The web page's state on the agent's HTTP app, its routes, and how it follows the agent.

`setup(app)` (called by gateway/http.py) adds the routes, the security middleware and two
hooks: at start the page's tables are created, alarm episodes catch up with the store, and
listeners on the pipeline, the downlink queue and the registry feed the live updates; at
shutdown the open event streams end so the HTTP server stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import importlib.metadata
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from gateway import accounts
from gateway.downlinks import Downlink
from gateway.http import AGENT
from gateway.store.db import apply_schema
from gateway.web import alarms as alarms_module
from gateway.web import i18n
from gateway.web.alarms import Alarms
from gateway.web.auth import PRE_TOKEN, SESSION, Audit, LoginLimiter, Sessions
from gateway.web.live import LiveHub, LogBuffer

if TYPE_CHECKING:
    from gateway.agent import Agent
    from gateway.links.base import Uplink

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"


def _version() -> str:
    try:
        return importlib.metadata.version("city-sensor-network")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


@dataclass
class WebState:
    agent: Agent
    templates: jinja2.Environment
    sessions: Sessions
    limiter: LoginLimiter
    audit: Audit
    alarms: Alarms
    hub: LiveHub
    logs: LogBuffer
    version: str = field(default_factory=_version)
    asset_version: str = ""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # The page's own routes: the guard protects these and leaves other routes of the app
    # (/metrics, /healthz, anything another part adds) to their owners.
    resources: set[web.AbstractResource] = field(default_factory=set)
    _alarm_sync_due: bool = False

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("web page task failed: %r", task.exception())

    # -- following the agent --------------------------------------------------------------

    def on_uplink(self, uplink: Uplink, fresh: int) -> None:
        self.hub.publish("node", [uplink.node_id])
        if fresh and any(r.alarm for r in uplink.readings):
            self.schedule_alarm_sync()

    def schedule_alarm_sync(self) -> None:
        if self._alarm_sync_due:
            return  # one sync already waits; it will see this alarm too
        self._alarm_sync_due = True
        self.spawn(self._sync_alarms())

    async def _sync_alarms(self) -> None:
        await asyncio.sleep(0)  # let the uplinks of this moment commit first
        self._alarm_sync_due = False
        touched = await self.alarms.sync()
        if touched:
            self.hub.publish("alarm", touched)

    def on_downlink(self, downlink: Downlink) -> None:
        self.hub.publish("downlink", [downlink.node_id])
        if downlink.state == "confirmed" and downlink.origin.startswith("web:"):
            self.spawn(self._remember_config(downlink))

    async def _remember_config(self, downlink: Downlink) -> None:
        """A configuration the node confirmed becomes its registry configuration, so the
        page (and its late/silent thresholds) shows what the node now runs."""
        from gateway.web.actions import config_changes  # noqa: PLC0415 -- import cycle

        changes = config_changes(downlink.command)
        node = self.agent.registry.get(downlink.node_id)
        if not changes or node is None:
            return
        await self.agent.registry.update(node.node_id, config={**node.config, **changes})

    def on_registry(self) -> None:
        self.hub.publish("registry")


WEB: web.AppKey[WebState] = web.AppKey("gateway.web", WebState)
# The live hub's version when the request began (gateway/web/live.py): the page carries it
LIVE_VERSION: web.RequestKey[int] = web.RequestKey("web.live_version", int)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["label"] = i18n.label
    env.filters["f"] = lambda text, **values: str(text).format(**values)
    env.filters["origin"] = lambda origin: str(origin).removeprefix("web:") or i18n.DASH
    return env


_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


class Assets:
    """The page's few static files, read once and kept gzipped too: over a weak site WiFi
    the first visit costs about 6 KB of them instead of 16, and later visits nothing."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, tuple[bytes, bytes, str]] = {}
        digest = hashlib.sha256()
        for path in sorted(folder.iterdir()):
            if path.suffix in _TYPES:
                raw = path.read_bytes()
                digest.update(raw)
                self.files[path.name] = (raw, gzip.compress(raw, 9, mtime=0), _TYPES[path.suffix])
        # In every asset link: a new release changes it, so browsers may cache them for long.
        self.version = digest.hexdigest()[:10]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        raw, packed, content_type = found
        etag = f'"{self.version}"'
        headers = {"ETag": etag, "Vary": "Accept-Encoding"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = packed
        else:
            body = raw
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


def csrf_token(request: web.Request) -> str:
    session = request.get(SESSION)
    return session.csrf if session is not None else str(request.get(PRE_TOKEN, ""))


async def render(
    request: web.Request, name: str, status: int = 200, **context: Any
) -> web.Response:
    state = request.app[WEB]
    lang = i18n.choose(request)
    session = request.get(SESSION)
    open_alarms = 0
    if session is not None:
        open_alarms = await state.alarms.count_open()
    html = state.templates.get_template(name).render(
        _=i18n.translator(lang),
        lang=lang,
        languages=i18n.LANGUAGES,
        user=session,
        csrf=csrf_token(request),
        site=state.agent.config.site_id,
        version=state.version,
        live_version=request.get(LIVE_VERSION, state.hub.version),
        asset_version=state.asset_version,
        fmt=i18n.Formatter(lang),
        next_path=context.pop("next_path", request.path_qs),
        open_alarms=open_alarms,
        **context,
    )
    response = web.Response(text=html, content_type="text/html", status=status)
    response.enable_compression()
    return response


@contextlib.asynccontextmanager
async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[WEB]
    agent = state.agent
    await agent.db.write_now(
        lambda conn: apply_schema(conn, [accounts.SCHEMA, alarms_module.SCHEMA])
    )
    state.hub.start()
    logging.getLogger().addHandler(state.logs)
    agent.pipeline.listeners.append(state.on_uplink)
    agent.downlinks.listeners.append(state.on_downlink)
    agent.registry.listeners.append(state.on_registry)
    await state.alarms.sync()
    yield
    # Runs from the runner's cleanup, after on_shutdown has closed the event streams.
    with contextlib.suppress(ValueError):
        agent.pipeline.listeners.remove(state.on_uplink)
    with contextlib.suppress(ValueError):
        agent.downlinks.listeners.remove(state.on_downlink)
    with contextlib.suppress(ValueError):
        agent.registry.listeners.remove(state.on_registry)
    logging.getLogger().removeHandler(state.logs)
    for task in list(state.tasks):
        task.cancel()
    await asyncio.gather(*state.tasks, return_exceptions=True)


async def _close_streams(app: web.Application) -> None:
    await app[WEB].hub.close()


def setup(app: web.Application) -> None:
    from gateway.web import actions, gate, pages  # noqa: PLC0415 -- they import this module

    agent = app[AGENT]
    hub = LiveHub()
    state = WebState(
        agent=agent,
        templates=_templates(),
        sessions=Sessions(agent.db),
        limiter=LoginLimiter(),
        audit=Audit(agent.db, lambda: hub.publish("audit")),
        alarms=Alarms(agent.db),
        hub=hub,
        logs=LogBuffer(),
    )
    assets = Assets(STATIC)
    state.asset_version = assets.version
    app[WEB] = state
    app.middlewares.append(gate.guard)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_streams)
    before = set(app.router.resources())
    gate.add_routes(app)
    pages.add_routes(app)
    actions.add_routes(app)
    app.router.add_get("/static/{name}", assets.handle)
    state.resources = set(app.router.resources()) - before

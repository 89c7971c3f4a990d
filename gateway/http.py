"""The gateway's HTTP side on the agent's event loop: /metrics, /healthz, and room for more.

/metrics is the agent's registry (gateway/metrics.py) plus the node gauges of
gateway/node_metrics.py, both read from the database at each scrape.

`create_app(agent)` builds one aiohttp application. Other parts add their routes to the same
app without touching this file: a module `gateway.web` exposing `setup(app)` is loaded when
present (the field staff page), and `agent.http_setups` takes more such functions. Handlers
reach the agent as `request.app[AGENT]`. HTTPS is on when `http.cert_file`/`key_file` are set.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.metrics import CONTENT_TYPE
from gateway.node_metrics import NodeMetrics

if TYPE_CHECKING:
    from gateway.agent import Agent

log = logging.getLogger(__name__)

AGENT: web.AppKey[Agent] = web.AppKey("gateway.agent")
NODE_METRICS: web.AppKey[NodeMetrics] = web.AppKey("gateway.node_metrics")
WEB_MODULE = "gateway.web"


async def metrics_handler(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    await agent.metrics.refresh(agent)
    await request.app[NODE_METRICS].refresh(agent)
    return web.Response(body=agent.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def healthz_handler(request: web.Request) -> web.Response:
    """200 while the agent can take and keep readings; 503 (with the failed checks) if not.

    An unreachable upstream is not unhealthy: buffering through outages is the job. It shows
    under `sinks` so monitoring can still alert on it.
    """
    agent = request.app[AGENT]
    checks = agent.health_checks()
    try:
        stats = await agent.store.stats()
        checks["disk_within_bound"] = stats.disk_bytes <= stats.max_bytes
        disk: dict[str, Any] = {"bytes": stats.disk_bytes, "max_bytes": stats.max_bytes}
    except Exception as exc:  # noqa: BLE001 -- a failing read is itself the finding
        checks["store_readable"] = False
        disk = {"error": str(exc)}
    ok = all(checks.values())
    body = {
        "status": "ok" if ok else "failing",
        "checks": checks,
        "disk": disk,
        "sinks": {
            f.sink.name: {
                "state": f.health.state,
                "failures": f.health.failures,
                "last_success_at": f.health.last_success_at,
                "last_error": f.health.last_error,
            }
            for f in agent.forwarders
        },
        "uptime_s": round(time.monotonic() - agent.started_at, 1),
    }
    return web.json_response(body, status=200 if ok else 503)


def create_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT] = agent
    app[NODE_METRICS] = NodeMetrics.of(agent.metrics.registry)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz_handler)
    setups = list(agent.http_setups)
    if agent.web_page and importlib.util.find_spec(WEB_MODULE) is not None:
        setups.insert(0, importlib.import_module(WEB_MODULE).setup)
    for setup in setups:
        setup(app)
    return app


class HTTPServer:
    def __init__(self, app: web.Application, bind: str, port: int) -> None:
        self.app = app
        self.bind = bind
        self.port = port  # 0 picks a free port; the real one is here after start()
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port, ssl_context=ssl_context)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = addresses[0][1]
        scheme = "https" if ssl_context else "http"
        log.info("HTTP on %s://%s:%d", scheme, self.bind, self.port)

    async def close(self) -> None:
        await self._runner.cleanup()


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context

"""The gateway daemon: one object that starts every part in order and stops them in reverse.

start():    database (schema, group committer) -> store, registry, downlinks -> pipeline ->
            forwarders (one per sink) -> periodic jobs -> links -> HTTP -> READY=1
shutdown(): STOPPING=1 -> links (no new uplinks) -> HTTP -> forwarders (a send in flight may
            finish) -> periodic jobs -> sinks -> database (commit what is queued, checkpoint the
            WAL, close)

Every background task is started by `_spawn` and stopped by `shutdown`; a task that dies
unexpectedly is logged and makes the agent unhealthy, which stops the systemd watchdog pings,
so systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from gateway import systemd, timesync
from gateway.config import GatewayConfig
from gateway.downlinks import SCHEMA as DOWNLINKS_SCHEMA
from gateway.downlinks import Downlink, Downlinks
from gateway.forwarder import Forwarder
from gateway.links.base import Link, LinkContext, LinkFactory
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.registry import SCHEMA as REGISTRY_SCHEMA
from gateway.registry import Registry
from gateway.sinks.base import Sink
from gateway.store.readings import SCHEMA as READINGS_SCHEMA
from gateway.store.readings import Store, database_for
from gateway.store.status import SCHEMA as STATUS_SCHEMA
from gateway.store.status import NodeStatus

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.http import HTTPServer

log = logging.getLogger(__name__)

SCHEMAS = (READINGS_SCHEMA, STATUS_SCHEMA, REGISTRY_SCHEMA, DOWNLINKS_SCHEMA)
REGISTRY_REFRESH_S = 1.0


class StartupError(RuntimeError):
    """A configured part cannot be built (e.g. its module is not installed)."""


# `[sinks.<name>]` section -> module exposing `from_config(config)` (NGSI-LD also takes the
# registry, to give entities their nodes' locations).
SINK_MODULES = {
    "spool": "gateway.sinks.spool",
    "mqtt": "gateway.sinks.mqtt",
    "ngsi_ld": "gateway.sinks.ngsild",
}


def build_sinks(config: GatewayConfig, registry: Registry) -> list[Sink]:
    """One sink per enabled `[sinks.*]` section."""
    sinks = []
    for name in config.sinks.enabled():
        module = _import(SINK_MODULES[name], f"sinks.{name}.enabled")
        if name == "ngsi_ld":
            sinks.append(module.from_config(config, registry))
        else:
            sinks.append(module.from_config(config))
    return sinks


def build_links(config: GatewayConfig) -> list[LinkFactory]:
    """The enabled links: module `gateway.links.<name>.create(context)`."""
    factories = []
    if config.links.coap.enabled:
        factories.append(_import("gateway.links.coap", "links.coap.enabled").create)
    if config.links.lora.mode != "off":
        factories.append(_import("gateway.links.lora", "links.lora.mode").create)
    return factories


def _import(module: str, key: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise StartupError(f"{key} asks for {module}, which is not installed") from None


class Agent:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        sinks: Sequence[Sink] | None = None,
        links: Sequence[LinkFactory] | None = None,
    ) -> None:
        self.config = config
        self.db = database_for(
            config.database_path,
            config.store.max_bytes,
            group_window_s=config.store.group_commit_ms / 1000,
            # The uplinks' group commits run in a process of their own: a writer thread
            # would share the GIL with the event loop (gateway/store/writer.py).
            writer_process=True,
        )
        self.registry = Registry(self.db)
        self.sinks = list(build_sinks(config, self.registry) if sinks is None else sinks)
        self._link_factories = list(build_links(config) if links is None else links)
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise StartupError(f"two sinks share a name: {names}")
        self.metrics = Metrics(tuple(names))
        self.store = Store(
            self.db,
            names,
            config.store.max_bytes,
            on_evicted=lambda cls, n: self.metrics.evictions.labels(cls).inc(n),
        )
        self.downlinks = Downlinks(self.db, config.downlinks.expiry_s)
        self.downlinks.listeners.append(self._count_downlink)
        self.status = NodeStatus(self.db)
        self.pipeline = Pipeline(self.store, self.registry, self.downlinks, self.metrics)
        self.forwarders = [
            Forwarder(s, self.store, config.forwarding, self.metrics) for s in self.sinks
        ]
        self.links: list[Link] = []
        self.http: HTTPServer | None = None
        # Functions adding routes to the HTTP app (see gateway/http.py).
        self.http_setups: list[Callable[[web.Application], None]] = []
        self.web_page = True  # serve gateway.web (the field staff page) when it is installed
        self.settle_heap = False  # tune the garbage collector once started (`_settle_heap`)
        self.started_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._crashed: list[str] = []
        self._started = False
        self._stopped = asyncio.Event()

    def _count_downlink(self, downlink: Downlink) -> None:
        self.metrics.downlinks.labels(downlink.state).inc()

    def _spawn(self, name: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def wrapped() -> None:
            await coro

        task = asyncio.create_task(wrapped(), name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopped.is_set():
            return
        exc = task.exception()
        self._crashed.append(task.get_name())
        log.error("background task %s stopped: %r", task.get_name(), exc, exc_info=exc)

    def _every(self, name: str, period_s: float, job: Callable[[], Awaitable[object]]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(period_s)
                try:
                    await job()
                except Exception:  # one failed round is logged; the next may succeed
                    log.exception("periodic job %s failed", name)

        self._spawn(name, loop())

    async def start(self) -> None:
        self.started_at = time.monotonic()
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self.db.open(SCHEMAS)
        await self.store.reconcile_sinks()
        await self.registry.refresh()
        self._started = True
        for forwarder in self.forwarders:
            self.db.after_commit.append(forwarder.wake)
            task = forwarder.start()
            task.add_done_callback(self._task_done)
        self._every("registry-refresh", REGISTRY_REFRESH_S, self.registry.refresh)
        expiry_period = min(60.0, max(1.0, self.config.downlinks.expiry_s / 10))
        self._every("downlink-expiry", expiry_period, self.downlinks.expire)
        self.time_sync = timesync.install(
            self.config.time_sync,
            self.registry,
            self.downlinks,
            self.pipeline.listeners,
            self._spawn,
        )
        context = LinkContext(
            self.config, self.pipeline, self.registry, self.downlinks, self.metrics
        )
        for factory in self._link_factories:
            link = factory(context)
            await link.start()
            self.links.append(link)
        if self.config.http.enabled:
            await self._start_http()
        log.info(
            "gateway %s ready: %d nodes, sinks %s, links %s",
            self.config.site_id,
            len(self.registry),
            [s.name for s in self.sinks],
            [link.name for link in self.links],
        )
        if self.settle_heap:
            _settle_heap()
        systemd.notify(f"READY=1\nSTATUS=serving {len(self.registry)} nodes")
        interval = systemd.watchdog_interval()
        if interval is not None:
            self._spawn("watchdog", self._watchdog(interval))

    async def _start_http(self) -> None:
        # Imported here: processes that serve no HTTP (tests, tools) skip loading aiohttp.
        from gateway.http import HTTPServer, create_app, tls_context  # noqa: PLC0415

        http = self.config.http
        ssl_context = None
        if http.cert_file is not None and http.key_file is not None:
            ssl_context = tls_context(str(http.cert_file), str(http.key_file))
        self.http = HTTPServer(create_app(self), http.bind, http.port)
        await self.http.start(ssl_context)

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd from the event loop, and only while healthy: a stuck loop or a dead
        part stops the pings, and systemd restarts the service."""
        while True:
            if all(self.health_checks().values()):
                systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def health_checks(self) -> dict[str, bool]:
        return {
            "started": self._started and not self._stopped.is_set(),
            "store_committer": self.db.healthy,
            "background_tasks": not self._crashed,
        }

    async def shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        systemd.notify("STOPPING=1")
        log.info("shutting down")
        for link in reversed(self.links):
            with _logged(f"closing link {link.name}"):
                await link.close()
        if self.http is not None:
            with _logged("closing HTTP"):
                await self.http.close()
        await asyncio.gather(*(f.stop() for f in self.forwarders))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sink in self.sinks:
            with _logged(f"closing sink {sink.name}"):
                await sink.close()
        await self.db.close()
        log.info("stopped; the store is flushed")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, shut down in order."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            self.settle_heap = True  # the daemon's own process (tests run many agents in one)
            await self.start()
            await stop.wait()
        finally:
            await self.shutdown()


# Young objects collected at most every this many allocations (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def _settle_heap() -> None:
    """Once started: move what start-up built (modules, contexts, the registry: about 100,000
    objects) out of the cyclic collector's sight, and let the young generation grow larger
    before a collection. An uplink allocates a few hundred short-lived objects that reference
    counting frees; with the default threshold the collector ran every couple of uplinks and
    walked them and, every tenth time, the middle generation too. Cycles are still collected,
    less often (bench/ingest.py measured the event loop's share of it)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        log.exception("%s failed", what)

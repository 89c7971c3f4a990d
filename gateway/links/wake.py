"""Always-listening nodes: neighbour wake-ups from presence events, and downlinks pushed at once.

Mains-powered lamps never sleep. When one reports a presence event, the gateway queues a
`wake` command for each of its configured neighbours (registry config
`{"neighbours": ["lamp-02", ...]}`) so the light runs ahead of the walker; and any downlink
queued for a node that listens all the time goes out at once instead of waiting for that
node's next uplink: over CoAP as an OSCORE-protected `POST /d` to the lamp's own small CoAP
server (firmware/node/mains.py), over LoRa as the same request in a frame the lamp hears in
continuous receive (LoRaWAN class C's idea). A 2.04 from the lamp confirms the downlink;
anything else leaves it queued for the lamp's next uplink response.

Each link runs one `NeighbourWake` for the uplinks it receives (an uplink arrives on exactly
one link, so no presence is handled twice) and one `Pusher` for the nodes it reaches.

One presence event wakes the neighbours once, while the walker is still there: the same event
arrives again whenever the lamp resends it (a lost answer, records re-packed under a new OSCORE
sequence number after an Echo round), so events are recognised by their stable reading id;
and an event the lamp held back (its `age_s`: buffered through an outage) is older than the
walk it reports, so one older than `PRESENCE_FRESH_S` wakes nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gateway.downlinks import Downlink, Downlinks
from gateway.links.base import Uplink
from gateway.registry import Node, Registry

log = logging.getLogger(__name__)

WAKE_TTL_S = 30.0  # a wake-up is useless once the walker has passed
# A walker crosses between two lamps in a few seconds: an event older than this reports a
# walk that is over (the lamps' default hold is 60 s, but the light must run AHEAD of them).
PRESENCE_FRESH_S = 5
# Presence events remembered for deduplication: a lamp resends an event within seconds or
# minutes, and a lamp sends at most one per `event_gap_s` (10 s), so a few hundred per link
# cover every lamp's recent events many times over.
SEEN_EVENTS = 1024
PUSH_BATCH = 8  # downlinks per pushed request


def listens_always(node: Node | None) -> bool:
    """Lamps are mains-powered and always listening; any node can say so in its config."""
    if node is None:
        return False
    flag = node.config.get("always_listening")
    return flag if isinstance(flag, bool) else node.kind == "lighting"


def neighbours_of(node: Node | None) -> list[str]:
    if node is None:
        return []
    value = node.config.get("neighbours")
    if not isinstance(value, list):
        return []
    return [n for n in value if isinstance(n, str) and n != node.node_id]


class _Tasks:
    """Background tasks of one helper, all cancelled by `close()`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self.closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def join(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class NeighbourWake:
    """Fresh presence event from a node -> a `wake` command queued for each of its neighbours
    (once per event, however often it arrives)."""

    def __init__(self, registry: Registry, downlinks: Downlinks) -> None:
        self.registry = registry
        self.downlinks = downlinks
        self.queued = 0
        self.repeated = 0  # presence events that arrived again: no second wake-up
        self.stale = 0  # presence events too old to wake anybody
        self._seen: OrderedDict[str, None] = OrderedDict()  # reading ids, oldest first
        self._tasks = _Tasks()

    def after_commit(self, uplink: Uplink) -> None:
        """Call once the uplink is committed (and acknowledged): never delays the node."""
        fresh = False
        for reading in uplink.readings:
            if reading.kind != "event" or reading.data.get("event") != "presence":
                continue
            if reading.reading_id in self._seen:
                self.repeated += 1
                continue
            self._remember(reading.reading_id)
            if reading.age_s > PRESENCE_FRESH_S:
                self.stale += 1
                log.debug(
                    "presence %s is %d s old: nobody woken", reading.reading_id, reading.age_s
                )
                continue
            fresh = True
        if not fresh:
            return
        for neighbour in neighbours_of(self.registry.get(uplink.node_id)):
            if listens_always(self.registry.get(neighbour)):
                self._tasks.spawn(self._wake(neighbour, uplink.node_id), f"wake {neighbour}")

    def _remember(self, reading_id: str) -> None:
        self._seen[reading_id] = None
        if len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)

    async def join(self) -> None:
        """Wait for the wake-ups queued so far (tests, and anyone who must see them stored)."""
        await self._tasks.join()

    async def _wake(self, node_id: str, source: str) -> None:
        command = {"type": "command", "command": "wake"}
        await self.downlinks.enqueue(node_id, command, WAKE_TTL_S, origin=f"presence:{source}")
        self.queued += 1

    async def close(self) -> None:
        await self._tasks.close()


# send(node id, downlinks) -> True when the node answered 2.04 (applied them)
PushFunction = Callable[[str, list[Downlink]], Awaitable[bool]]


class Pusher:
    """Pushes queued downlinks at once to always-listening nodes of one link.

    Listens to `Downlinks` for newly queued downlinks; `reachable(node)` says whether this link
    can reach the node now (a CoAP lamp's address is known once it has sent an uplink). Pushes
    to one node run one at a time: each takes everything pending for that node.
    """

    def __init__(
        self,
        link: str,
        registry: Registry,
        downlinks: Downlinks,
        send: PushFunction,
        reachable: Callable[[str], bool],
    ) -> None:
        self.link = link
        self.registry = registry
        self.downlinks = downlinks
        self.send = send
        self.reachable = reachable
        self.pushed = 0
        self.failed = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks = _Tasks()
        downlinks.listeners.append(self._on_downlink)

    def _on_downlink(self, downlink: Downlink) -> None:
        if downlink.state != "queued":
            return
        node = self.registry.get(downlink.node_id)
        if node is None or node.link != self.link or not listens_always(node):
            return
        if self.reachable(node.node_id):
            self._tasks.spawn(self._push(node.node_id), f"push {node.node_id}")

    async def _push(self, node_id: str) -> None:
        lock = self._locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            pending = await self.downlinks.take(node_id, PUSH_BATCH)
            if not pending:
                return  # an earlier push (or an uplink response) took them
            try:
                applied = await self.send(node_id, pending)
            except Exception as exc:  # noqa: BLE001 - best effort: the next uplink carries them
                log.warning("push to %s failed: %r", node_id, exc)
                applied = False
            if applied:
                await self.downlinks.confirm(node_id, [d.id for d in pending])
                self.pushed += len(pending)
            else:
                self.failed += 1

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.downlinks.listeners.remove(self._on_downlink)
        await self._tasks.close()

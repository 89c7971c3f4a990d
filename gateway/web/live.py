"""Live updates for open pages (Server-Sent Events) and the recent log lines of the gateway.

Changes are coalesced: a busy gateway takes hundreds of uplinks a second, but each open page
hears at most one `change` event per `FLUSH_S`, naming what changed (kinds: node, alarm,
downlink, audit, registry; and which nodes). The page's small script then fetches a fresh
copy of its own live sections. So an event costs a few dozen bytes on the site WiFi however
busy the gateway is, and a page that missed events (a phone asleep) is right again at its next
refresh.

A page can also miss the changes between its rendering and its stream's start (nobody is
subscribed to hear them). So every change counts up `version`, subscribed or not; the page
carries the version it was rendered at, the stream's first event (`hello`) carries the
current one, and the page refreshes itself when the two differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

FLUSH_S = 1.0
QUEUE_MAX = 16  # events queued per client; a client that lags further gets one "resync"
MAX_NODES_NAMED = 50  # beyond this an event says "many nodes" and every page refreshes


class LiveHub:
    def __init__(self, flush_s: float = FLUSH_S) -> None:
        self.flush_s = flush_s
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._kinds: set[str] = set()
        self._nodes: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.version = 0  # changes noted so far, heard or not

    @property
    def clients(self) -> int:
        return len(self._clients)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flusher(), name="web-live")

    def publish(self, kind: str, nodes: Iterable[str] = ()) -> None:
        """Note a change; sent with the next flush (callable from any code on the loop)."""
        self.version += 1
        if not self._clients:
            return
        self._kinds.add(kind)
        self._nodes.update(nodes)
        self._wake.set()

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_MAX)
        if self._closed:
            queue.put_nowait(None)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._clients.discard(queue)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            kinds, nodes = sorted(self._kinds), sorted(self._nodes)
            self._kinds.clear()
            self._nodes.clear()
            if kinds:
                many = len(nodes) > MAX_NODES_NAMED
                body = {"kinds": kinds, "nodes": [] if many else nodes, "all": many}
                self._send(b"event: change\ndata: " + json.dumps(body).encode() + b"\n\n")
            await asyncio.sleep(self.flush_s)

    def _send(self, event: bytes) -> None:
        for queue in list(self._clients):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # Too far behind: replace what it missed by one event that refreshes all.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(
                    b'event: change\ndata: {"kinds": [], "nodes": [], "all": true}\n\n'
                )

    async def close(self) -> None:
        """End every open stream (so the HTTP server can stop at once) and the flusher."""
        self._closed = True
        for queue in list(self._clients):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass(frozen=True, slots=True)
class LogLine:
    at: float
    level: str
    logger: str
    message: str


class LogBuffer(logging.Handler):
    """The last `size` log records of the process, for the gateway page."""

    def __init__(self, size: int = 200, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.lines: deque[LogLine] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not break logging
            message = str(record.msg)
        self.lines.append(LogLine(record.created, record.levelname, record.name, message[:500]))

    def recent(self, limit: int = 100) -> list[LogLine]:
        return list(self.lines)[-limit:][::-1]

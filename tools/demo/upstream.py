"""Where the narration's readings come from, and how far upstream lags behind the gateway.

The narrator tells only what reached upstream: the MQTT broker's messages, or the local
spool's JSON lines (the same document either way, gateway/sinks/entities.py). Forwarding runs
in batches behind the ingest, so at the end of the story the demo waits until the gateway's
queues are empty (`queued_upstream`, from its own /metrics) before it sums up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

QUEUE_DEPTH = "city_gateway_queue_depth"


def queued_upstream(http_port: int, timeout_s: float = 2.0) -> int | None:
    """Readings the gateway holds for any sink, None if its /metrics cannot be read."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        text = opener.open(url, timeout=timeout_s).read().decode()
    except OSError:
        return None
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == QUEUE_DEPTH
    )


class SpoolFeed:
    """Follows the gateway's spool folder: current.jsonl, and the files it rotates into."""

    def __init__(self, folder: Path, deliver: Callable[[dict[str, Any]], None]) -> None:
        self.folder = folder
        self.deliver = deliver
        self._done: set[str] = set()  # rotated files read to the end
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""

    def poll(self) -> None:
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("readings-*.jsonl")):
            if path.name in self._done:
                continue
            try:
                inode = path.stat().st_ino
            except OSError:
                continue
            # the file current.jsonl was rotated into: finish it from where we were
            start = self._offset if inode == self._inode else 0
            self._read(path, start)
            self._done.add(path.name)
            if inode == self._inode:
                self._inode, self._offset, self._partial = None, 0, b""
        current = self.folder / "current.jsonl"
        try:
            inode = current.stat().st_ino
        except OSError:
            return
        if inode != self._inode:
            self._inode, self._offset, self._partial = inode, 0, b""
        self._offset = self._read(current, self._offset)

    def _read(self, path: Path, start: int) -> int:
        try:
            with path.open("rb") as f:
                f.seek(start)
                data = f.read()
        except OSError:
            return start
        chunk = self._partial + data
        lines = chunk.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            with contextlib.suppress(ValueError):
                self.deliver(json.loads(line))
        return start + len(data)


class MQTTFeed:
    """Subscribes to the site's topics on the broker the gateway forwards to."""

    def __init__(
        self, host: str, port: int, topic: str, deliver: Callable[[dict[str, Any]], None]
    ) -> None:
        import paho.mqtt.client as paho  # noqa: PLC0415 - only when a broker runs
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self.loop = asyncio.get_running_loop()
        self.deliver = deliver
        self.topic = topic
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            record = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(record, dict):
            self.loop.call_soon_threadsafe(self.deliver, record)

    def poll(self) -> None:
        pass

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

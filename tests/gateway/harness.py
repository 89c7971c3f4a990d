"""A real gateway process for the reliability tests: the real Agent and store, fed by a
test-only ingest link, forwarding to a test upstream that is a file.

    python -m tests.gateway.harness CONFIG UPSTREAM_FILE [--configured-links]

- `UDPJsonLink` stands in for the CoAP link (nodes without OSCORE, cheap to play): one datagram
  {"node": ..., "seq": ..., "alarm": ...} is one uplink with one reading; the reply
  {"ack": [node, seq]} is sent only after `pipeline.handle` returned, i.e. after the durable
  commit, exactly where the CoAP link sends its 2.04. The port goes to <data_dir>/feeder.port;
  readiness is announced with sd_notify like under systemd.
- `FileUpstream` is the city platform: it accepts a reading by appending a line and fsyncing,
  deduplicating on the reading id (as MQTT consumers and NGSI-LD upserts do). Every attempt
  is also logged, so a test can count the resends the dedup absorbed.
- `--configured-links` runs the links the config names (the real CoAP link) instead of
  `UDPJsonLink`; the upstream is `FileUpstream` either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.agent import Agent
from gateway.config import load
from gateway.links.base import LinkContext, Uplink, UplinkRefused, make_reading_id
from gateway.records import Reading
from gateway.sinks.base import SendResult


class UDPJsonLink(asyncio.DatagramProtocol):
    name = "coap"

    def __init__(self, context: LinkContext) -> None:
        self.context = context
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, ("127.0.0.1", 0))
        self.transport = transport  # type: ignore[assignment]
        port = transport.get_extra_info("sockname")[1]
        port_file = self.context.config.data_dir / "feeder.port"
        port_file.with_suffix(".tmp").write_text(str(port))
        port_file.with_suffix(".tmp").replace(port_file)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        task = asyncio.ensure_future(self.handle(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, data: bytes, addr: Any) -> None:
        try:
            message = json.loads(data)
            node, seq = str(message["node"]), int(message["seq"])
        except (ValueError, KeyError):
            self.context.pipeline.refuse(self.name, "malformed")
            return
        reading = Reading(
            reading_id=make_reading_id(node, seq),
            node_id=node,
            kind="leak",
            received_at=1_700_000_000.0 + seq,
            age_s=0,
            data={"seq": seq, "litres": seq * 7},
            alarm=bool(message.get("alarm")),
        )
        uplink = Uplink(node, self.name, reading.received_at, readings=[reading])
        try:
            await self.context.pipeline.handle(uplink)
        except UplinkRefused as refused:
            reply = {"refused": refused.reason, "node": node, "seq": seq}
        else:
            reply = {"ack": [node, seq]}
        if self.transport is not None:
            self.transport.sendto(json.dumps(reply).encode(), addr)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for task in list(self.tasks):
            task.cancel()


class FileUpstream:
    name = "upstream"
    max_batch = 1000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.attempts = path.with_name(path.name + ".attempts")
        self.seen: set[str] = set()

    async def start(self) -> None:
        if self.path.exists():
            text = self.path.read_bytes()
            complete = text[: text.rfind(b"\n") + 1]  # a line cut by a crash never counted
            if len(complete) != len(text):
                self.path.write_bytes(complete)
            self.seen = {json.loads(line)["id"] for line in complete.splitlines()}

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        fresh = [r for r in batch if r.reading_id not in self.seen]
        with self.attempts.open("a") as log:
            log.write("".join(r.reading_id + "\n" for r in batch))
        if fresh:
            with self.path.open("a") as out:
                for r in fresh:
                    line = {"id": r.reading_id, "node": r.node_id, "seq": r.data["seq"]}
                    out.write(json.dumps(line) + "\n")
                out.flush()
                os.fsync(out.fileno())
            self.seen.update(r.reading_id for r in fresh)
        return SendResult(delivered={r.reading_id for r in batch})

    async def close(self) -> None:
        pass


def main(argv: list[str]) -> None:
    config_path, upstream, *options = argv
    if options not in ([], ["--configured-links"]):
        raise SystemExit(f"usage: CONFIG UPSTREAM_FILE [--configured-links], not {options}")
    config = load(Path(config_path))
    links = None if options else [UDPJsonLink]
    agent = Agent(config, sinks=[FileUpstream(Path(upstream))], links=links)
    asyncio.run(agent.run())


if __name__ == "__main__":
    main(sys.argv[1:])

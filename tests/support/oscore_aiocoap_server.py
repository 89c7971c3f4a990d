"""An aiocoap OSCORE server for the interop tests, run as its own process so it can be SIGKILLed.

    python -m tests.support.oscore_aiocoap_server KEYS_DIR PORT LOG [--plain | --bench]

Serves POST /r (and /slow, which answers after 0.3 s: aiocoap sends an empty ACK first and
the response as a separate CON) on 127.0.0.1:PORT through `OscoreSiteWrapper` with the
per-node contexts in KEYS_DIR (gateway.security). Every request a resource accepts is appended
to LOG (flushed and fsynced before the answer goes out) as `node seqno payload-hex`, so a test
can count that nothing was accepted twice, even across a SIGKILL. Prints READY once bound;
SIGTERM shuts down in order (contexts released, replay windows written back).

For bench/oscore.py: `--bench` keeps OSCORE but logs nothing (the fsync would be all it
measures); `--plain` serves the same resource without OSCORE, the baseline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap import resource
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from gateway.security import load_credentials, release, request_seqno, require_node


class Readings(resource.Resource):  # type: ignore[misc]
    def __init__(self, log: Any, mode: str, delay: float = 0.0) -> None:
        super().__init__()
        self.log = log
        self.mode = mode
        self.delay = delay

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode != "--plain":
            node = require_node(request)
        if self.mode == "":
            self.log.write(f"{node} {request_seqno(request)} {request.payload.hex()}\n")
            self.log.flush()
            os.fsync(self.log.fileno())
        return aiocoap.Message(code=aiocoap.CHANGED, payload=b"ok:" + request.payload)


async def main(keys_dir: Path, port: int, log_path: Path, mode: str) -> None:
    credentials = load_credentials(keys_dir)
    with log_path.open("a") as log:
        site = resource.Site()
        site.add_resource(["r"], Readings(log, mode))
        site.add_resource(["slow"], Readings(log, mode, delay=0.3))
        served = site if mode == "--plain" else OscoreSiteWrapper(site, credentials)
        context = await aiocoap.Context.create_server_context(served, bind=("127.0.0.1", port))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("READY", flush=True)
        await stop.wait()
        await context.shutdown()
        release(credentials)


if __name__ == "__main__":
    mode = sys.argv[4] if len(sys.argv) > 4 else ""
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), mode))

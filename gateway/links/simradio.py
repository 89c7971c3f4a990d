"""The gateway's radio on the simulated LoRa medium (hil/medium.py documents the datagrams),
behind gateway/links/lora.py's `Radio` interface as the Pi's RFM95 (gateway/links/rfm9x.py).

It receives continuously (a listen lease renewed well before it runs out), hands every frame
to the link with the time its `rx` datagram came (the medium sends it as the frame ends: the
RxDone), transmits with `tx` and waits for `txdone`, then listens again: like an SX127x, the
medium keeps no transmitter listening on its own. The medium states its `--time-scale` in
every datagram; `time_scale` keeps it, so the link can turn RX_DELAY_MS into real time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, cast

from gateway.config import LoRaLinkConfig
from gateway.links.lora import PREAMBLE, OnFrame
from protocol import airtime

log = logging.getLogger(__name__)

LEASE_MS = 10_000  # the medium forgets a listener it has not heard from for this long


class SimRadio(asyncio.DatagramProtocol):
    """The gateway's radio on the simulated medium (datagrams documented in hil/medium.py)."""

    def __init__(self, settings: LoRaLinkConfig) -> None:
        self.medium = settings.sim_medium
        self.position = list(settings.sim_position)
        self.channel = {
            "freq": round(settings.frequency_mhz * 1_000_000),
            "sf": settings.spreading_factor,
            "bw": round(settings.bandwidth_khz * 1000),
        }
        self.cr = settings.coding_rate - 4
        self.power = settings.tx_power_dbm
        # the medium's --time-scale, which it states in every txdone and rx: the sim boards on
        # it run their clocks (the node's light sleep through the RX delay) as fast
        self.time_scale = 1.0
        self.transport: asyncio.DatagramTransport | None = None
        self.on_frame: OnFrame | None = None
        self._txdone: asyncio.Future[None] | None = None
        self._renew: asyncio.Task[None] | None = None

    async def start(self, on_frame: OnFrame) -> None:
        self.on_frame = on_frame
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self._listen()
        self._renew = loop.create_task(self._keep_listening(), name="lora-sim-listen")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a DatagramTransport in fact, though CPython 3.11's class does not say so
        self.transport = cast(asyncio.DatagramTransport, transport)

    def _send(self, op: str, **fields: Any) -> None:
        if self.transport is not None:
            msg = {"op": op, "pos": self.position, **self.channel, **fields}
            self.transport.sendto(json.dumps(msg).encode(), self.medium)

    def _listen(self) -> None:
        self._send("listen", ms=LEASE_MS)

    async def _keep_listening(self) -> None:
        while True:
            await asyncio.sleep(LEASE_MS / 3000)
            self._listen()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        rxdone = time.monotonic()  # the medium sends rx as the frame ends
        try:
            msg = json.loads(data)
            op = msg["op"]
            scale = float(msg.get("scale", self.time_scale))
            if not scale > 0:
                raise ValueError(f"time scale {scale}")
            self.time_scale = scale
            if op == "rx" and self.on_frame is not None:
                frame = bytes.fromhex(msg["data"])
                self.on_frame(frame, msg.get("rssi"), msg.get("snr"), rxdone)
            elif op == "txdone" and self._txdone is not None and not self._txdone.done():
                self._txdone.set_result(None)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("medium sent an unreadable datagram: %s", exc)

    async def send(self, frame: bytes) -> bool:
        self._txdone = asyncio.get_running_loop().create_future()
        self._send(
            "tx",
            cr=self.cr,
            preamble=PREAMBLE,
            header=True,
            crc=True,
            power=self.power,
            t=int(time.time() * 1000),
            data=frame.hex(),
        )
        toa_s = airtime.time_on_air_ms(len(frame), self.channel["sf"], self.channel["bw"]) / 1000
        try:
            await asyncio.wait_for(self._txdone, 2 + 2 * toa_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._listen()  # half duplex: back to receiving as soon as the frame is out

    async def close(self) -> None:
        if self._renew is not None:
            self._renew.cancel()
        self._send("idle")
        if self.transport is not None:
            self.transport.close()

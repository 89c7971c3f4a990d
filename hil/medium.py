"""The simulated LoRa radio medium: a small UDP process on 127.0.0.1 that every simulated radio
(the sim board's, firmware/boards/sim/radio.py, and the gateway's LoRa link) talks to.

    python -m hil.medium --port 1700 [--time-scale 1.0] [--loss 0.0] [--seed 1]
                         [--exponent 2.7] [--shadowing-db 0.0] [--stats PATH]

It prints ``READY <port>`` once bound. Radios are known by their position (metres on a flat
map): a frame reaches every radio listening on the same frequency, spreading factor and
bandwidth, after its time on air (protocol.airtime, the SX127x datasheet formula), with an RSSI
from a log-distance path loss and an SNR against the thermal noise floor; it is lost when the
SNR is under the demodulation floor of its spreading factor (or near it, with a probability
rising towards the floor), at random with ``--loss``, or in a collision (another frame on the
same channel overlapping it at that receiver, unless it is 6 dB stronger: the capture effect).

Datagram format: one UTF-8 JSON object per UDP datagram; ``op`` says what it is.

Radio -> medium
  {"op": "tx", "pos": [x, y], "freq": 868100000, "sf": 7, "bw": 125000, "cr": 1,
   "preamble": 8, "header": true, "crc": true, "ldro": null, "power": 14, "t": 1700000000000,
   "data": "<hex>"}
      Transmit. ``t`` is the sender's own clock in ms (the duty-cycle audit uses it; it need
      not match real time). After the airtime (real ms = airtime / time scale) the sender gets
      ``txdone``. Like an SX127x after TxDone, it then hears nothing until it sends ``listen``
      again: a node opens its RX window itself (RX_DELAY_MS after TxDone, firmware/README.md
      "LoRa timing"), and a gateway or a lamp goes back to continuous receive.
  {"op": "listen", "pos": [x, y], "freq": ..., "sf": ..., "bw": ..., "ms": 3000}
      Receive on that channel for ``ms`` real ms (renew before it runs out to listen
      continuously). A frame is heard if the radio listened when its preamble ended.
  {"op": "idle", "pos": [x, y]}
      Stop receiving (sleep or standby).
  {"op": "stats"}
      The medium answers {"op": "stats", ...} (see ``Medium.stats``) to the sender.

Medium -> radio
  {"op": "txdone", "toa_ms": 56.576, "t": <the tx's t>, "scale": 1.0,
   "start_ms": 81234.5, "end_ms": 81291.1}
  {"op": "rx", "data": "<hex>", "rssi": -93.2, "snr": 7.5, "freq": ..., "sf": ..., "bw": ...,
   "from": [x, y], "toa_ms": 56.576, "t": <the sender's t>, "scale": 1.0,
   "start_ms": ..., "end_ms": ...}
      Both are sent when the frame ends (TxDone at the sender, RxDone at a receiver).
      ``scale`` is the time scale: radio time runs this much faster than real time, for
      airtime and for every delay the radios keep between frames (the gateway answers
      RX_DELAY_MS / scale real ms after RxDone; the sim boards on this medium run at the same
      speed). ``start_ms`` and ``end_ms`` are when the frame began and ended on the medium's
      own monotonic clock (real ms, arbitrary origin): the gap between an uplink's end and
      its answer's start, times ``scale``, is the delay a node's radio saw.

The duty-cycle audit (``stats``): for every sender position and EN 300 220-2 sub-band, its
frames, their sizes, the airtime, and the largest airtime in any one-hour window of the sender's
clock next to the sub-band's budget. A node that keeps its ledger can never show more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

from protocol import airtime

THERMAL_NOISE_DBM_HZ = -174.0
NOISE_FIGURE_DB = 6.0  # SX1276 receiver, datasheet typical
# Demodulator SNR floor per spreading factor (SX1276 datasheet table 13)
SNR_FLOOR_DB = {6: -5.0, 7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
MARGIN_DB = 3.0  # loss probability falls from 1 at the floor to 0 this far above it
CAPTURE_DB = 6.0  # a frame survives an overlapping one this much weaker
# Free-space loss at 1 m and 868 MHz: 20 log10(4 pi / lambda), lambda = 0.3454 m
PATH_LOSS_1M_DB = 31.2
LISTEN_MAX_MS = 600_000


def noise_floor_dbm(bw_hz: float) -> float:
    return THERMAL_NOISE_DBM_HZ + 10 * math.log10(bw_hz) + NOISE_FIGURE_DB


@dataclass
class Radio:
    address: tuple[str, int]
    pos: tuple[float, float]
    channel: tuple[int, int, int] | None = None  # (freq, sf, bw) while listening
    until: float = 0.0  # real monotonic seconds


@dataclass
class Frame:
    sender: tuple[str, int]
    pos: tuple[float, float]
    channel: tuple[int, int, int]
    power: float
    start: float
    end: float
    heard_by: dict[tuple[str, int], float] = field(default_factory=dict)  # address -> rssi


@dataclass
class Audit:
    """Transmissions of one sender, on its own clock: (start ms, airtime ms, sub-band)."""

    sends: list[tuple[int, float, str]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # PHY payload bytes, in the same order

    def max_hour_ms(self, band: str) -> float:
        entries = sorted((t, toa) for t, toa, b in self.sends if b == band)
        best = 0.0
        j = 0
        total = 0.0
        for i in range(len(entries)):
            total += entries[i][1]
            while entries[i][0] - entries[j][0] >= 3_600_000:
                total -= entries[j][1]
                j += 1
            best = max(best, total)
        return best


class Medium(asyncio.DatagramProtocol):
    def __init__(
        self,
        time_scale: float = 1.0,
        loss: float = 0.0,
        seed: int = 1,
        exponent: float = 2.7,
        shadowing_db: float = 0.0,
    ) -> None:
        self.time_scale = time_scale
        self.loss = loss
        self.rng = random.Random(seed)
        self.exponent = exponent
        self.shadowing_db = shadowing_db
        self.radios: dict[tuple[str, int], Radio] = {}
        self.frames: list[Frame] = []
        self.audits: dict[str, Audit] = {}
        self.counts = {"sent": 0, "delivered": 0, "lost_snr": 0, "lost_random": 0, "collided": 0}
        self.transport: asyncio.DatagramTransport | None = None

    # -- radio physics ---------------------------------------------------------------------
    def rssi_dbm(self, power: float, a: tuple[float, float], b: tuple[float, float]) -> float:
        d = max(1.0, math.dist(a, b))
        loss = PATH_LOSS_1M_DB + 10 * self.exponent * math.log10(d)
        if self.shadowing_db:
            loss += self.rng.gauss(0.0, self.shadowing_db)
        return power - loss

    def survives(self, snr: float, sf: int) -> bool:
        floor = SNR_FLOOR_DB[sf]
        if snr < floor:
            return False
        if snr < floor + MARGIN_DB:
            return self.rng.random() < (snr - floor) / MARGIN_DB
        return True

    # -- datagrams -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def send(self, address: tuple[str, int], msg: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.sendto(json.dumps(msg).encode(), address)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = json.loads(data)
            op = msg["op"]
            if op == "stats":
                self.send(addr, {"op": "stats", **self.stats()})
                return
            radio = self.radios.get(addr)
            pos = (float(msg["pos"][0]), float(msg["pos"][1]))
            if radio is None:
                radio = self.radios[addr] = Radio(addr, pos)
            radio.pos = pos
            if op == "tx":
                self.transmit(radio, msg)
            elif op == "listen":
                radio.channel = (int(msg["freq"]), int(msg["sf"]), int(msg["bw"]))
                ms = min(float(msg.get("ms", 3000)), LISTEN_MAX_MS)
                radio.until = time.monotonic() + ms / 1000
            elif op == "idle":
                radio.channel = None
        except (ValueError, KeyError, TypeError, IndexError) as e:
            print(f"medium: bad datagram from {addr}: {e}", file=sys.stderr)

    def transmit(self, radio: Radio, msg: dict[str, Any]) -> None:
        payload = bytes.fromhex(msg["data"])
        channel = (int(msg["freq"]), int(msg["sf"]), int(msg["bw"]))
        toa = airtime.time_on_air_ms(
            len(payload),
            channel[1],
            channel[2],
            int(msg.get("cr", 1)),
            int(msg.get("preamble", 8)),
            bool(msg.get("header", True)),
            bool(msg.get("crc", True)),
            msg.get("ldro"),
        )
        self.counts["sent"] += 1
        band = airtime.subband(channel[0], channel[2])
        key = f"{radio.pos[0]:g},{radio.pos[1]:g}"
        audit = self.audits.setdefault(key, Audit())
        audit.sends.append((int(msg.get("t", 0)), toa, band))
        audit.sizes.append(len(payload))
        now = time.monotonic()
        real_toa = toa / 1000 / self.time_scale
        frame = Frame(radio.address, radio.pos, channel, float(msg.get("power", 14)), now, now)
        frame.end = now + real_toa
        # a receiver locks on once the preamble is over; it must be listening by then
        preamble_s = (int(msg.get("preamble", 8)) + 4.25) * (1 << channel[1]) / channel[2]
        lock = now + preamble_s / self.time_scale
        radio.channel = None  # half duplex: a transmitter hears nothing
        self.frames = [f for f in self.frames if f.end > now - 5]
        self.frames.append(frame)
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + (lock - now), self._lock_on, frame)
        loop.call_at(loop.time() + real_toa, self._finish, frame, msg, payload, toa)

    def _lock_on(self, frame: Frame) -> None:
        now = time.monotonic()
        for radio in self.radios.values():
            if radio.address == frame.sender or radio.channel != frame.channel:
                continue
            if radio.until < now:
                continue
            frame.heard_by[radio.address] = self.rssi_dbm(frame.power, frame.pos, radio.pos)

    def _finish(self, frame: Frame, msg: dict[str, Any], payload: bytes, toa: float) -> None:
        timing = {
            "scale": self.time_scale,
            "start_ms": round(frame.start * 1000, 3),
            "end_ms": round(frame.end * 1000, 3),
        }
        self.send(frame.sender, {"op": "txdone", "toa_ms": toa, "t": msg.get("t"), **timing})
        noise = noise_floor_dbm(frame.channel[2])
        for address, rssi in frame.heard_by.items():
            if self._collided(frame, address, rssi):
                self.counts["collided"] += 1
                continue
            snr = rssi - noise
            if not self.survives(snr, frame.channel[1]):
                self.counts["lost_snr"] += 1
                continue
            if self.loss and self.rng.random() < self.loss:
                self.counts["lost_random"] += 1
                continue
            self.counts["delivered"] += 1
            self.send(
                address,
                {
                    "op": "rx",
                    "data": payload.hex(),
                    # the SX127x reports packet RSSI near the noise floor when SNR < 0
                    "rssi": round(max(rssi, noise + min(snr, 0)), 1),
                    "snr": round(max(-32.0, min(snr, 31.75)) * 4) / 4,
                    "freq": frame.channel[0],
                    "sf": frame.channel[1],
                    "bw": frame.channel[2],
                    "from": list(frame.pos),
                    "toa_ms": toa,
                    "t": msg.get("t"),
                    **timing,
                },
            )

    def _collided(self, frame: Frame, address: tuple[str, int], rssi: float) -> bool:
        receiver = self.radios.get(address)
        if receiver is None:
            return True
        for other in self.frames:
            if other is frame or other.channel != frame.channel:
                continue
            if other.start >= frame.end or other.end <= frame.start:
                continue
            if other.sender == address:
                return True  # the receiver itself transmitted meanwhile: it heard nothing
            interference = self.rssi_dbm(other.power, other.pos, receiver.pos)
            if rssi - interference < CAPTURE_DB:
                return True
        return False

    # -- observation -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters, plus per sender position and sub-band: frames, airtime, worst hour."""
        senders: dict[str, Any] = {}
        for key, audit in self.audits.items():
            bands: dict[str, Any] = {}
            for band in sorted({b for _, _, b in audit.sends}):
                sends = [s for s in audit.sends if s[2] == band]
                sizes = [n for s, n in zip(audit.sends, audit.sizes, strict=True) if s[2] == band]
                bands[band] = {
                    "frames": len(sends),
                    "bytes": sizes,
                    "airtime_ms": round(sum(s[1] for s in sends), 3),
                    "max_hour_ms": round(audit.max_hour_ms(band), 3),
                    "budget_ms": airtime.budget_ms(band),
                }
            senders[key] = bands
        return {"counts": dict(self.counts), "senders": senders}


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    medium = Medium(args.time_scale, args.loss, args.seed, args.exponent, args.shadowing_db)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: medium, local_addr=("127.0.0.1", args.port)
    )
    port = transport.get_extra_info("sockname")[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError):
        pass
    await stop.wait()
    transport.close()
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(medium.stats(), f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="simulated LoRa radio medium on 127.0.0.1")
    parser.add_argument("--port", type=int, default=1700)
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="airtime runs this much faster"
    )
    parser.add_argument("--loss", type=float, default=0.0, help="random loss probability")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--exponent", type=float, default=2.7, help="path-loss exponent (urban)")
    parser.add_argument("--shadowing-db", type=float, default=0.0, help="log-normal sigma, dB")
    parser.add_argument("--stats", help="write the final statistics here on exit")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

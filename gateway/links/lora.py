"""The LoRa link: CoAP + OSCORE in raw LoRa frames, heard by the gateway's radio.

A node sends the same OSCORE-protected `POST /u` as over UDP, as the whole payload of one
frame (firmware/node/loralink.py): NON for routine readings, CON for alarms. Then, as a
LoRaWAN class A device in RX1, it sleeps and opens its receiver only RX_DELAY_MS after the end
of its transmission, for little more than RX_ERROR_MS each way (firmware/README.md "LoRa
timing"). The gateway:

    frame (its RxDone time taken by the radio) -> size check (EU868 payload limit of the
    spreading factor) -> is it the answer to one of our pushes? -> a CON retransmission
    answered before (same bytes)? -> OSCORE unprotect without transport (gateway/security.py)
    -> decode (gateway/uplink.py) -> pipeline.handle (durable COMMIT) -> the answer starts
    exactly RX_DELAY_MS after RxDone

- The answer is held until its moment: a node's receiver is off before it, and gone shortly
  after. One the commit made too late for the window is not sent at all (counted in
  `rx_windows_missed`): its downlinks stay queued for the node's next window, and a CON's
  answer is kept, so the node's retransmission gets it in that window.

- A CON is always answered (2.04, or an error, piggybacked on the ACK). A NON is answered only
  when there is something to say: downlinks waiting for the node, or an Echo challenge after a
  restart. Every transmission is checked against the EU868 duty-cycle ledger first
  (protocol.airtime; kept in `<data_dir>/lora-ledger.bin` so a restart does not forget the
  last hour); one the ledger refuses is dropped, and its downlinks wait for the next window.
- A response carries as many downlinks as fit in one frame; the rest go in later windows.
- Mains-powered lamps listen continuously (LoRaWAN class C's idea): a downlink queued for one
  goes out at once as a protected CON `POST /d` (gateway/links/wake.py), repeated until the
  lamp's ACK, with an Echo round trip after the lamp rebooted. A push keeps clear of the
  answers already scheduled in nodes' RX windows (the radio is half duplex and has one
  transmitter): it waits until they are out.
- Two radios behind `Radio`: a client of the simulated medium (gateway/links/simradio.py;
  hil/medium.py documents the datagrams), and the Pi's RFM95 (gateway/links/rfm9x.py). The medium
  runs radio time `--time-scale` times faster than real time (so do the sim boards on it) and
  says so in its datagrams: the sim radio's `time_scale` turns RX_DELAY_MS into real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiocoap
from aiocoap import error
from aiocoap.numbers.contentformat import ContentFormat

from gateway import timesync
from gateway.config import LoRaLinkConfig
from gateway.downlinks import Downlink
from gateway.links.base import LinkContext, UplinkRefused
from gateway.links.wake import NeighbourWake, Pusher
from gateway.security import FrameRefused, FrameRequest, protect_reply, unprotect_frame
from gateway.uplink import Deliveries, Keyring, decode_uplink, encode_downlinks, open_keyring
from gateway.uplink import with_confirmations as confirming
from protocol import airtime

log = logging.getLogger(__name__)

NAME = "lora"
PREAMBLE = 8  # symbols, as the nodes' SX127x driver programs it
# The node's RX window (firmware/node/loralink.py; tests/gateway/test_link_lora_timing.py holds
# the two equal):
# our answer's first preamble symbol goes RX_DELAY_MS after the uplink's RxDone, and the node
# tolerates RX_ERROR_MS of error each way (its light-sleep wake-up and our timing together).
RX_DELAY_MS = 1000
RX_ERROR_MS = 20
BOOK_AHEAD_S = 5.0  # answers are booked in the duty-cycle ledger at most this long ahead
# The host's own timing error (event loop wake-up, a datagram or SPI hop), which a simulation's
# time scale does not shrink: an answer this late in real time still goes. On the air (scale 1)
# RX_ERROR_MS is larger and rules; at the sim's scale 20 it would be 1 real ms, while the sim
# board's radio, which cannot stop at a symbol timeout, listens for the whole answer anyway.
HOST_ERROR_S = 0.010
MAX_DOWNLINKS = 4  # fetched per uplink; as many as fit the frame are sent
REPLY_CACHE = 64  # CON requests whose answer is kept for a retransmission (same bytes)
PUSH_TRIES = 3  # transmissions of one pushed CON before giving up until the next uplink
LEDGER_ENTRIES = 255  # the gateway transmits to many nodes: keep the ledger exact longer
# Bytes a protected response adds to its payload: header 4, OSCORE option (empty value) 1,
# marker 1, inner code 1, inner Content-Format 2, inner marker 1, AEAD tag 8; plus the token.
_RESPONSE_OVERHEAD = 18


# on_frame(data, rssi_dbm, snr_db, rxdone): rxdone is the time.monotonic() of the frame's end
OnFrame = Callable[[bytes, float | None, float | None, float], None]


class Radio(Protocol):
    # radio time per real time: 1 on the air; the medium's --time-scale in the simulation
    time_scale: float

    async def start(self, on_frame: OnFrame) -> None:
        """Start receiving continuously; `on_frame` per frame heard, as soon as its RxDone."""
        ...

    async def send(self, frame: bytes) -> bool:
        """Transmit one frame now, back to receiving after TxDone; False if TxDone never came."""
        ...

    async def close(self) -> None: ...


def create(context: LinkContext) -> LoRaLink:
    return LoRaLink(context)


def make_radio(settings: LoRaLinkConfig) -> Radio:
    if settings.mode == "sim":
        from gateway.links.simradio import SimRadio  # noqa: PLC0415 - as the RFM95's below

        return SimRadio(settings)
    from gateway.links.rfm9x import RFM9xRadio  # noqa: PLC0415 - Blinka only where it is used

    return RFM9xRadio(settings)


class LoRaLink:
    name = NAME

    def __init__(
        self,
        context: LinkContext,
        radio: Radio | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.context = context
        settings = self.settings = context.config.links.lora
        self.freq_hz = round(settings.frequency_mhz * 1_000_000)
        self.sf = settings.spreading_factor
        self.bw_hz = round(settings.bandwidth_khz * 1000)
        self.max_frame = airtime.max_payload(self.sf, self.bw_hz)
        self.radio = radio if radio is not None else make_radio(settings)
        self.clock = clock
        self.ledger_path = context.config.data_dir / "lora-ledger.bin"
        self.ledger = _load_ledger(self.ledger_path)
        self.deliveries = Deliveries()
        self.keyring: Keyring | None = None
        self.wake = NeighbourWake(context.registry, context.downlinks)
        self.pusher: Pusher | None = None
        self.duty_cycle_refused = 0  # transmissions the ledger did not allow
        self.rx_windows_missed = 0  # answers not sent: the node's window had passed
        self.sent_frames = 0
        self._slots: list[tuple[float, float]] = []  # answers scheduled: (start, end) monotonic
        self._ledger_time = 0.0  # the latest start booked in the ledger (wall clock)
        self._slot_freed = asyncio.Event()  # set (and replaced) when a slot is given up
        self._replies: OrderedDict[bytes, bytes | None] = OrderedDict()  # None: in progress
        self._waiting: dict[bytes, _Push] = {}  # push token -> the push awaiting its answer
        self.push_answers_ignored = 0  # frames with a push's token that its lamp did not send
        self._tx_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def refuse(self, reason: str, node_id: str | None = None, detail: str = "") -> None:
        self.context.pipeline.refuse(self.name, reason, node_id, detail)

    async def start(self) -> None:
        self.keyring = open_keyring(self.context.config.security.keys_dir)
        try:
            await self.radio.start(self._on_frame)
        except BaseException:
            self.keyring.close()
            self.keyring = None
            raise
        self.context.registry.listeners.append(self._registry_changed)
        self.pusher = Pusher(
            self.name, self.context.registry, self.context.downlinks, self.push, lambda _: True
        )
        log.info(
            "LoRa link (%s) on %.3f MHz SF%d/%d kHz, frames up to %d bytes",
            self.settings.mode,
            self.freq_hz / 1e6,
            self.sf,
            self.bw_hz // 1000,
            self.max_frame,
        )

    def _registry_changed(self) -> None:
        if self.keyring is not None:
            self.keyring.load_new(force=True)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.context.registry.listeners.remove(self._registry_changed)
        if self.pusher is not None:
            await self.pusher.close()
        await self.wake.close()
        await self.radio.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.keyring is not None:
            self.keyring.close()
            self.keyring = None

    # -- reception -----------------------------------------------------------------------------

    def _on_frame(
        self, frame: bytes, rssi_dbm: float | None, snr_db: float | None, rxdone: float
    ) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(frame, rssi_dbm, snr_db, rxdone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def rx_window(self, rxdone: float) -> float:
        """When the answer to a frame that ended at `rxdone` must start (time.monotonic())."""
        return rxdone + RX_DELAY_MS / 1000 / self.radio.time_scale

    async def handle(
        self, frame: bytes, rssi_dbm: float | None, snr_db: float | None, rxdone: float
    ) -> None:
        due = self.rx_window(rxdone)
        if len(frame) > self.max_frame:
            self.refuse("oversized", detail=f"{len(frame)}-byte frame at SF{self.sf}")
            return
        try:
            outer = aiocoap.Message.decode(frame)
        except (error.UnparsableMessage, ValueError) as exc:
            self.refuse("malformed", detail=f"not a CoAP message: {exc}")
            return
        if not outer.code.is_request():
            self._answer_push(outer)
            return  # someone else's answer, an ACK or a reset: not an uplink
        # Until it is known whether (and what) we answer, the node's window is kept clear of
        # pushes: one that would still be on the air then waits (a push that fits before goes).
        slot = (due, due + self.real_s(self.airtime_ms(self.max_frame)))
        self._slots.append(slot)
        try:
            await self._request(frame, outer, rssi_dbm, snr_db, due)
        finally:
            self._slots.remove(slot)
            self._slot_freed.set()  # a push waiting for this window may go now
            self._slot_freed = asyncio.Event()

    async def _request(
        self,
        frame: bytes,
        outer: aiocoap.Message,
        rssi_dbm: float | None,
        snr_db: float | None,
        due: float,
    ) -> None:
        if frame in self._replies:
            reply = self._replies[frame]
            if reply is not None:  # the node's CON retransmission: our answer was lost
                await self.answer(reply, due, "a retransmission")
            return
        keyring = self.keyring
        assert keyring is not None
        try:
            try:
                request = unprotect_frame(keyring.credentials, frame)
            except FrameRefused as refused:
                if refused.reason != "unknown_kid" or not keyring.load_new():
                    raise
                request = unprotect_frame(keyring.credentials, frame)  # provisioned just now
        except FrameRefused as refused:
            if refused.reply is not None:
                log.info("Echo challenge on LoRa (replay window not known after a restart)")
                await self.answer(refused.reply, due, "an Echo challenge")
            else:
                self.refuse(refused.reason, detail=refused.detail)
            return
        confirmable = outer.mtype == aiocoap.CON
        if confirmable:
            self._remember(frame, None)
        reply, included = await self._serve(request, rssi_dbm, snr_db, confirmable)
        if reply is None:
            self._replies.pop(frame, None)
            return
        if confirmable:
            # kept even if this window is missed: the node repeats the same frame in its next
            # window, and the answer (the commit done, the downlinks in it) goes out then
            self._remember(frame, reply)
        if await self.answer(reply, due, request.node_id):
            self.deliveries.delivered(request.node_id, included)

    async def _serve(
        self, request: FrameRequest, rssi: float | None, snr: float | None, confirmable: bool
    ) -> tuple[bytes | None, list[int]]:
        """The protected answer (None: stay silent) and the downlink ids it carries."""
        node_id, plain = request.node_id, request.request
        if plain.code != aiocoap.POST or plain.opt.uri_path != ("u",):
            self.refuse("malformed", node_id, f"{plain.code} {plain.opt.uri_path}")
            return self._error(request, aiocoap.NOT_FOUND, confirmable), []
        try:
            uplink = decode_uplink(
                node_id,
                request.seqno,
                plain.payload,
                self.clock(),
                link=self.name,
                rssi_dbm=rssi,
                snr_db=snr,
                max_downlinks=MAX_DOWNLINKS,
            )
        except UplinkRefused as refused:
            self.refuse(refused.reason, node_id, refused.detail)
            return self._error(request, aiocoap.BAD_REQUEST, confirmable, refused.detail), []
        uplink = confirming(uplink, self.deliveries.confirmed_by(node_id))
        try:
            downlinks = await self.context.pipeline.handle(uplink)
        except UplinkRefused as refused:  # counted by the pipeline
            code = {"unknown_node": aiocoap.FORBIDDEN, "unavailable": aiocoap.SERVICE_UNAVAILABLE}
            return self._error(
                request, code.get(refused.reason, aiocoap.BAD_REQUEST), confirmable
            ), []
        self.wake.after_commit(uplink)
        room = self.max_frame - _RESPONSE_OVERHEAD - len(request.outer.token)
        payload, included = encode_downlinks(timesync.fresh(downlinks, self.clock()), room)
        if not payload and not confirmable:
            self.deliveries.delivered(node_id, ())
            return None, []
        response = aiocoap.Message(code=aiocoap.CHANGED, payload=payload)
        if payload:
            response.opt.content_format = ContentFormat.CBOR
        reply = protect_reply(request, response, mid=_new_mid())
        if len(reply) > self.max_frame:  # never protect twice under one nonce: drop instead
            log.error("answer to %s is %d bytes, over the frame limit", node_id, len(reply))
            return None, []
        return reply, included

    def _error(
        self, request: FrameRequest, code: Any, confirmable: bool, detail: str = ""
    ) -> bytes | None:
        if not confirmable:
            return None  # no airtime for errors nobody waits for
        diagnostic = detail.encode()[: max(0, self.max_frame - 40)]
        return protect_reply(request, aiocoap.Message(code=code, payload=diagnostic))

    def _remember(self, frame: bytes, reply: bytes | None) -> None:
        self._replies[frame] = reply
        self._replies.move_to_end(frame)
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)

    # -- transmission --------------------------------------------------------------------------

    def airtime_ms(self, length: int) -> float:
        cr = self.settings.coding_rate - 4
        return float(airtime.time_on_air_ms(length, self.sf, self.bw_hz, cr, PREAMBLE))

    def real_s(self, radio_ms: float) -> float:
        """Real seconds that `radio_ms` of radio time take (the simulation runs it faster)."""
        return radio_ms / 1000 / self.radio.time_scale

    async def answer(self, frame: bytes, due: float, to: str) -> bool:
        """Send `frame` so that it starts at `due` (time.monotonic()), in the RX window of the
        node `to`; not at all once that moment is more than the allowed error (`slack_s`) gone."""
        latest = due + self.slack_s()
        if time.monotonic() > latest:
            return self._missed(to, due)
        # The ledger is checked and written ahead, for the moment the frame will start, so that
        # only the radio stands between that moment and the first preamble symbol. A frame
        # booked and then not sent (too late after all) overcounts, never under.
        if not self._book(frame, self.clock() + max(0.0, due - time.monotonic())):
            return False
        await _sleep_until(due)
        async with self._tx_lock:
            if time.monotonic() > latest:
                return self._missed(to, due)
            return await self._key_up(frame)

    def slack_s(self) -> float:
        """How late (real seconds) an answer may still start: RX_ERROR_MS, or in a fast
        simulation the host's own error, which its time scale does not shrink."""
        return max(self.real_s(RX_ERROR_MS), HOST_ERROR_S)

    def _missed(self, to: str, due: float) -> bool:
        self.rx_windows_missed += 1
        late_ms = (time.monotonic() - due) * 1000 * self.radio.time_scale
        log.warning("answer to %s not sent: %.0f ms past its RX window", to, late_ms)
        return False

    async def transmit(self, frame: bytes) -> bool:
        """Send one frame now (a push), if the duty-cycle ledger allows it; first wait for the
        answers scheduled in RX windows that it would overlap."""
        length_s = self.real_s(self.airtime_ms(len(frame)))
        while True:
            await self._clear_of_answers(length_s)
            async with self._tx_lock:
                if self._clash(time.monotonic(), length_s) is not None:
                    continue  # an answer was scheduled meanwhile: let it go first
                if not self._book(frame, self.clock()):
                    return False
                return await self._key_up(frame)

    def _book(self, frame: bytes, start: float) -> bool:
        """Check `frame` starting at `start` (wall clock) against the duty-cycle ledger, and
        record it there if it may go. Recorded before the radio keys up: a crash mid-frame
        overcounts, never under."""
        toa = self.airtime_ms(len(frame))
        # An answer booked ahead has a later start than a push booked after it: the ledger's
        # time must not run back (it would move the answer earlier), so the push counts from
        # there, which only makes it expire later. (Not after a step of the clock itself.)
        if 0 < self._ledger_time - start < BOOK_AHEAD_S:
            start = self._ledger_time
        self._ledger_time = start
        if not self.ledger.can_send(self.freq_hz, toa, start, self.bw_hz):
            self.duty_cycle_refused += 1
            self.context.metrics.duty_cycle_refused.inc()
            wait = self.ledger.wait_s(self.freq_hz, toa, start, self.bw_hz)
            log.warning("duty cycle: %d-byte frame not sent (wait %.0f s)", len(frame), wait)
            return False
        self.ledger.record(self.freq_hz, toa, start, self.bw_hz)
        _save_ledger(self.ledger_path, self.ledger)
        return True

    async def _key_up(self, frame: bytes) -> bool:
        sent = await self.radio.send(frame)
        self.sent_frames += sent
        return sent

    def _clash(self, start: float, length_s: float) -> float | None:
        """The end of the latest scheduled answer a frame from `start` would overlap, if any
        (with a margin: the answer may start `slack_s` late)."""
        end = start + length_s + self.slack_s()
        clashes = [stop for begin, stop in self._slots if begin < end and stop > start]
        return max(clashes, default=None)

    async def _clear_of_answers(self, length_s: float) -> None:
        while (until := self._clash(time.monotonic(), length_s)) is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), until - time.monotonic())

    # -- pushes to lamps in continuous receive -------------------------------------------------

    async def push(self, node_id: str, downlinks: list[Downlink]) -> bool:
        if self.keyring is None:
            return False
        context = self.keyring.credentials.get(":" + node_id)
        if context is None:
            return False
        room = self.max_frame - _RESPONSE_OVERHEAD - 9  # a request: kid and Partial IV too
        payload, included = encode_downlinks(timesync.fresh(downlinks, self.clock()), room)
        if not payload:
            return False
        echo: bytes | None = None
        loop = asyncio.get_running_loop()
        for _ in range(2):  # the second round answers a rebooted lamp's Echo challenge
            message = aiocoap.Message(
                code=aiocoap.POST,
                uri_path=("d",),
                payload=payload,
                content_format=ContentFormat.CBOR,
            )
            if echo is not None:
                message.opt.echo = echo
            protected, request_id = context.protect(message)
            protected.mtype = aiocoap.CON
            protected.mid = _new_mid()
            protected.token = secrets.token_bytes(4)
            push = _Push(node_id, context, request_id, loop.create_future())
            plain = await self._exchange(push, protected.token, protected.encode())
            if plain is None:
                return False
            if plain.code == aiocoap.UNAUTHORIZED and plain.opt.echo is not None:
                echo = plain.opt.echo
                continue
            return bool(plain.code == aiocoap.CHANGED) and len(included) == len(downlinks)
        return False

    async def _exchange(self, push: _Push, token: bytes, frame: bytes) -> aiocoap.Message | None:
        """Send a CON until its verified answer comes back (same bytes each time, as CoAP
        retransmits); the answer's plaintext, or None when none came in time."""
        self._waiting[token] = push
        try:
            for attempt in range(PUSH_TRIES):
                if not await self.transmit(frame):
                    return None
                timeout = 1.0 + 3 * self.airtime_ms(len(frame)) / 1000 * (attempt + 1)
                try:
                    return await asyncio.wait_for(asyncio.shield(push.answer), timeout)
                except TimeoutError:
                    continue
            return None
        finally:
            self._waiting.pop(token, None)

    def _answer_push(self, outer: aiocoap.Message) -> None:
        """Hand a response heard on the air to the push it answers, if it is that answer.

        Every lamp in range hears every push, and one that cannot unprotect it (not its key)
        answers an unprotected 4.01 with the same token (RFC 8613 section 8.2); a token may
        also match by chance. Only a frame that the pushed lamp's context verifies as the
        response to this very request (OSCORE binds it to the request's kid and Partial IV)
        is the answer; anything else is ignored, and the push waits on until its timeout.
        """
        push = self._waiting.get(outer.token)
        if push is None or push.answer.done() or not outer.code.is_response():
            return
        try:
            plain, _ = push.context.unprotect(outer, push.request_id)
        except Exception as exc:  # noqa: BLE001 - any frame may come over the air: not ours
            self.push_answers_ignored += 1
            log.debug("a frame with the token of the push to %s ignored: %r", push.node_id, exc)
            return
        push.answer.set_result(plain)


@dataclass(frozen=True, slots=True)
class _Push:
    """A request pushed to a lamp, waiting for the answer its OSCORE context verifies."""

    node_id: str
    context: Any  # the lamp's aiocoap OSCORE security context
    request_id: Any  # aiocoap's RequestIdentifiers of the protected request
    answer: asyncio.Future[aiocoap.Message]


def _new_mid() -> int:
    return secrets.randbelow(0x10000)


async def _sleep_until(moment: float) -> None:
    """Sleep until time.monotonic() reaches `moment`, never waking before it."""
    while (delay := moment - time.monotonic()) > 0:
        await asyncio.sleep(delay)


def _load_ledger(path: Path) -> airtime.DutyCycleLedger:
    try:
        return airtime.DutyCycleLedger.from_bytes(path.read_bytes())
    except (OSError, ValueError):
        return airtime.DutyCycleLedger(LEDGER_ENTRIES)


def _save_ledger(path: Path, ledger: airtime.DutyCycleLedger) -> None:
    # Not fsynced: after a power cut the ledger may miss the last frames of the hour, which
    # the node's own ledger (they transmit far less than the gateway) does not depend on.
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(ledger.to_bytes())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("duty-cycle ledger not saved: %s", exc)

"""The LoRa link (gateway/links/lora.py) with its simulated radio, in a running gateway Agent,
on the simulated medium (hil/medium.py) as a real process on 127.0.0.1.

- A real node: the firmware's leak node on the sim board (hil/simboard.py), LoRa at SF7: its
  readings are stored, a downlink goes out in its RX window, the node applies it, and its next
  uplink confirms it; the medium's own audit counts the gateway's frames.
- Test radios built on our protocol/ code speak the medium's datagrams to reach the corners:
  a CON answered (and its retransmission answered from the cache, stored once), a NON with
  nothing to say left unanswered, refusals counted, an Echo round after a restart that lost
  the replay window, a reply the duty-cycle ledger forbids left unsent (and not confirmed).
- A lamp in continuous receive (the firmware's lamp server, on MicroPython) woken by its
  neighbour's presence over the air.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.simboard import SimNode
from protocol import airtime, cbor, coap, oscore, schema
from protocol.oscore_client import DONE, Exchange
from tests.firmware.node_support import MediumProcess, need_micropython
from tests.gateway.fakes import eventually
from tests.gateway.link_support import GATEWAY_ID, SALT, LiveGateway, secret_of

FREQ = 868_100_000
CHANNEL = {"freq": FREQ, "sf": 7, "bw": 125_000}
LORA = {"mode": "sim", "spreading_factor": 7, "frequency_mhz": 868.1}
EPOCH = 1_700_000_000
# Radio time runs this much faster than real time on the medium, and so do the sim boards on
# it. The node's RX delay (RX_DELAY_MS) then lasts 200 real ms: the gateway's commit, which
# the simulation does not speed up, must fit in it as it must fit in 1 s on the air.
SCALE = 5


@pytest.fixture
def medium() -> Iterator[MediumProcess]:
    m = MediumProcess("--time-scale", str(SCALE), "--seed", "5")
    yield m
    m.stop()


def lora_gateway(tmp_path: Path, medium: MediumProcess, nodes: dict[str, Any], **kw: Any):
    lora = {**LORA, "sim_medium": f"127.0.0.1:{medium.port}", "sim_position": [0, 0]}
    return LiveGateway(tmp_path, nodes, coap=False, lora=lora, **kw)


class TestRadio:
    """A node's radio on the medium, and its OSCORE context (our protocol/ code)."""

    __test__ = False

    def __init__(self, medium: MediumProcess, kid: bytes, pos: tuple[float, float] = (120, 0)):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.medium = ("127.0.0.1", medium.port)
        self.pos = list(pos)
        self.context = oscore.SecurityContext(secret_of(kid), kid, GATEWAY_ID, SALT)
        self.mid = 0x100
        self.heard: list[dict[str, Any]] = []  # rx datagrams that came while waiting for txdone

    def send(self, op: str, **fields: Any) -> None:
        msg = {**CHANNEL, "op": op, "pos": self.pos, **fields}
        self.sock.sendto(json.dumps(msg).encode(), self.medium)

    def tx(self, frame: bytes, listen_ms: int = 20000) -> dict[str, Any]:
        """Transmit; at TxDone open the receiver for `listen_ms` (the medium keeps no sender
        listening: a node opens its RX window itself). Returns the txdone datagram."""
        self.send("tx", data=frame.hex(), t=int(time.time() * 1000))
        self.sock.settimeout(5)
        while (msg := json.loads(self.sock.recvfrom(4096)[0]))["op"] != "txdone":
            if msg["op"] == "rx":
                self.heard.append(msg)
        self.send("listen", ms=listen_ms)
        return dict(msg)

    def received(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """rx datagrams heard until `timeout` passes without one."""
        out, self.heard = self.heard, []
        self.sock.settimeout(timeout)
        while True:
            try:
                msg = json.loads(self.sock.recvfrom(4096)[0])
            except TimeoutError:
                return out
            if msg["op"] == "rx":
                out.append(msg)

    def frames(self, timeout: float = 1.0) -> list[bytes]:
        """Frames heard until `timeout` passes without one."""
        return [bytes.fromhex(m["data"]) for m in self.received(timeout)]

    def answered(self, con: bytes, tries: int = 3) -> list[bytes]:
        """Send a CON until an answer comes, as a node repeats one that got none in its RX
        window: on a loaded host the commit can end too late for the window (the gateway
        counts it in `rx_windows_missed`) and keeps the answer for the repeat."""
        for _ in range(tries):
            self.tx(con)
            if got := self.frames():
                return got
        return []

    def request(self, records: list[dict[str, Any]], mtype: int = coap.NON) -> bytes:
        self.mid += 1
        body = cbor.dumps(schema.encode_uplink(records))
        return coap.Message(
            mtype,
            coap.POST,
            self.mid,
            b"\xa0" + bytes((self.mid & 0xFF,)),
            coap.uri_path_options("u"),
            body,
        ).encode()

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def bin_node_on_air(
    tmp_path: Path, medium: MediumProcess
) -> Iterator[tuple[LiveGateway, TestRadio]]:
    """A gateway that knows bin-4, and bin-4's radio on the medium; both closed after."""
    gw = lora_gateway(tmp_path, medium, {"bin-4": ("binfill", b"\x04")}).start()
    radio = TestRadio(medium, b"\x04")
    try:
        yield gw, radio
    finally:
        radio.close()
        gw.close()


def leak(seq: int) -> dict[str, Any]:
    return {"type": "leak", "volume_l": 100 + seq, "flow_lh": 0, "seq": seq}


def test_a_firmware_node_over_lora_is_stored_and_gets_its_downlink(
    tmp_path: Path, medium: MediumProcess
) -> None:
    need_micropython()
    gw = lora_gateway(tmp_path, medium, {"leak-9": ("leak", b"\x09")}).start()
    try:
        node = SimNode(tmp_path / "node")
        node.config(
            {
                "node_id": "leak-9",
                "kind": "leak",
                "link": "lora",
                "lora": {"sf": 7},
                "oscore": {
                    "secret": secret_of(b"\x09").hex(),
                    "salt": SALT.hex(),
                    "sender_id": "09",
                    "recipient_id": GATEWAY_ID.hex(),
                },
            }
        )
        node.board(speed=SCALE, epoch_s=EPOCH, medium=["127.0.0.1", medium.port], position=[300, 0])
        node.scenario(
            {
                "start": EPOCH,
                "signals": {"pulse_rate:34": 0.01, "adc:35": 3000000, "adc:36": 1600000},
            }
        )
        agent = gw.agent
        assert agent is not None
        # a first uplink with nothing to say: the store's first commit, slower than the rest,
        # is not the one that must make the window
        runs = node.cycles(1)
        down = gw.call(agent.downlinks.enqueue("leak-9", {"type": "leak_config", "pulse_ml": 2000}))
        runs += node.cycles(3)
        for run in runs:
            assert "link:" not in run.output and "refused" not in run.output, run.output
        stored = gw.stored()
        seqs = sorted(int(rid.split(":")[1]) for rid in stored)
        # every record counter once; the one missing is the node's ack (not a reading)
        assert len(seqs) >= 3 and len(set(range(seqs[-1] + 1)) - set(seqs)) == 1
        assert all(rid.startswith("leak-9:") for rid in stored)
        kinds = {r["kind"] for r in stored.values()}
        assert kinds == {"leak", "status"}
        # applied by the node, and confirmed by id by the ack it sent straight after
        config = json.loads((node.folder / "config.json").read_text())
        assert config["kind_config"] == {"pulse_ml": 2000}
        assert gw.downlink_states() == {down.id: "confirmed"}
        (settled,) = gw.call(agent.downlinks.list("leak-9"))
        # taken for one answer, or again for each answer a slow commit kept from its window
        link: Any = agent.links[0]
        assert settled.wire_id == 1 and 1 <= settled.attempts <= 1 + link.rx_windows_missed
        state = gw.call(agent.status.get("leak-9"))
        assert state is not None and state.link == "lora" and state.rssi_dbm is not None
        # two answers: the one the downlink rode on, and the ACK to the confirmable ack;
        # routine NONs with nothing to say get none
        assert medium.stats()["senders"]["0,0"]["M"]["frames"] == 2
        assert gw.all_refusals() == {}
    finally:
        gw.close()


def test_con_is_answered_once_stored_and_a_retransmission_answered_from_the_cache(
    tmp_path: Path, medium: MediumProcess
) -> None:
    with bin_node_on_air(tmp_path, medium) as (gw, radio):
        alarm = {"type": "alarm", "alarm": "bin_fire", "value": 652, "seq": 1}
        exchange = Exchange(radio.context, radio.request([alarm], coap.CON))
        frame = exchange.first()
        (answer,) = radio.answered(frame)
        reply = coap.decode(answer)
        assert reply.type == coap.ACK and reply.mid == coap.decode(frame).mid
        action, plain = exchange.on_response(answer)
        assert action == DONE and coap.decode(plain).code == coap.CHANGED
        assert gw.stored() == {
            "bin-4:1": {
                "kind": "alarm",
                "alarm": True,
                "data": {
                    "type": "alarm",
                    "alarm": "bin_fire",
                    "active": True,
                    "value": 652,
                    "seq": 1,
                    "age_s": 0,
                },
            }
        }
        # the ACK was "lost": the node sends the same frame again and gets the same answer
        radio.tx(frame)
        assert radio.frames() == [answer]
        assert gw.refusals("lora", "replay") == 0 and len(gw.stored()) == 1
        # a routine NON with nothing waiting: stored, and no airtime spent on an answer
        radio.tx(radio.context.protect_request(radio.request([leak(2)])))
        assert radio.frames() == []
        gw.call(eventually(lambda: len(gw.stored()) == 2))
        assert gw.agent is not None
        assert gw.metrics.readings_in.labels("lora")._value.get() == 2
        rssi = gw.metrics.rssi.labels("lora")._sum.get()
        assert -100 < rssi / 2 < -30  # 120 m away on the medium's path loss


def test_lora_refusals_are_counted(tmp_path: Path, medium: MediumProcess) -> None:
    gw = lora_gateway(tmp_path, medium, {"bin-4": ("binfill", b"\x04")}).start()
    radio = TestRadio(medium, b"\x04")
    stranger = TestRadio(medium, b"\x66", pos=(50, 50))
    wrong_key = TestRadio(medium, b"\x04", pos=(60, 0))
    wrong_key.context = oscore.SecurityContext(bytes(16), b"\x04", GATEWAY_ID, SALT)
    try:
        good = radio.context.protect_request(radio.request([leak(1)]))
        radio.tx(good)
        gw.call(eventually(lambda: len(gw.stored()) == 1))
        radio.tx(good)  # a replayed NON
        gw.call(eventually(lambda: gw.refusals("lora", "replay") == 1))
        stranger.tx(stranger.context.protect_request(stranger.request([leak(1)])))
        gw.call(eventually(lambda: gw.refusals("lora", "unknown_kid") == 1))
        wrong_key.tx(wrong_key.context.protect_request(wrong_key.request([leak(1)])))
        gw.call(eventually(lambda: gw.refusals("lora", "bad_tag") == 1))
        radio.tx(b"\x00not coap at all")
        gw.call(eventually(lambda: gw.refusals("lora", "malformed") == 1))
        radio.tx(radio.context.protect_request(radio.request([leak(2)])[:-2] + b"\xff\xff"))
        gw.call(eventually(lambda: gw.refusals("lora", "malformed") == 2))
        big = radio.request([leak(i) for i in range(21)])  # 235 bytes: over SF7's 222
        radio.tx(radio.context.protect_request(big))
        gw.call(eventually(lambda: gw.refusals("lora", "oversized") == 1))
        assert len(gw.stored()) == 1
        assert gw.all_refusals() == {
            ("lora", "replay"): 1,
            ("lora", "unknown_kid"): 1,
            ("lora", "bad_tag"): 1,
            ("lora", "malformed"): 2,
            ("lora", "oversized"): 1,
        }
    finally:
        for r in (radio, stranger, wrong_key):
            r.close()
        gw.close()


def test_echo_round_after_a_restart_that_lost_the_replay_window(
    tmp_path: Path, medium: MediumProcess
) -> None:
    gw = lora_gateway(tmp_path, medium, {"bin-4": ("binfill", b"\x04")})
    # as aiocoap leaves it after a crash: the window is not known
    (gw.config.security.keys_dir / "bin-4" / "sequence.json").write_text(
        json.dumps({"next-to-send": 20, "received": "unknown"})
    )
    gw.start()
    radio = TestRadio(medium, b"\x04")
    try:
        # even a NON is challenged. On a loaded host the gateway, just started, can be too late
        # for the RX window at this time scale: it then sends nothing (rx_windows_missed), and
        # the node's next uplink, a new request, is challenged instead.
        for seq in (5, 6, 7):
            exchange = Exchange(radio.context, radio.request([leak(seq)]))
            radio.tx(exchange.first())
            if challenges := radio.frames():
                break
        (challenge,) = challenges
        _, again = exchange.on_response(challenge)
        assert exchange.echo_retried and gw.stored() == {}
        radio.tx(again)
        assert radio.frames() == []  # served: a NON with nothing to say
        gw.call(eventually(lambda: set(gw.stored()) == {f"bin-4:{seq}"}))
        assert gw.all_refusals() == {}  # the challenge is recovery, not a refusal
    finally:
        radio.close()
        gw.close()


def test_a_reply_the_duty_cycle_forbids_is_not_sent_and_confirms_nothing(
    tmp_path: Path, medium: MediumProcess
) -> None:
    gw = lora_gateway(tmp_path, medium, {"bin-4": ("binfill", b"\x04")})
    # The last hour's 36 s of sub-band M are spent (a ledger saved by an earlier life).
    ledger = airtime.DutyCycleLedger(255)
    now = time.time()
    for i in range(36):
        ledger.record(FREQ, 1000, now - 3500 + i * 60)
    (gw.config.data_dir / "lora-ledger.bin").write_bytes(ledger.to_bytes())
    gw.start()
    radio = TestRadio(medium, b"\x04")
    try:
        agent = gw.agent
        assert agent is not None
        # nothing to say to this one: the store's first commit, slower than the rest, need not
        # make an RX window (the answers below must reach the ledger, not miss their window)
        radio.tx(radio.context.protect_request(radio.request([leak(0)])))
        gw.call(eventually(lambda: len(gw.stored()) == 1))
        down = gw.call(agent.downlinks.enqueue("bin-4", {"type": "binfill_config", "full_pct": 80}))
        radio.tx(radio.context.protect_request(radio.request([leak(1)])))
        assert radio.frames() == []  # stored, but the answer would overrun the budget
        assert len(gw.stored()) == 2
        radio.tx(radio.context.protect_request(radio.request([leak(2)])))
        assert radio.frames() == []
        gw.call(eventually(lambda: len(gw.stored()) == 3))
        # never delivered, so never confirmed: it waits for a window the ledger allows
        assert gw.downlink_states() == {down.id: "sent"}
        link = agent.links[0]
        assert getattr(link, "duty_cycle_refused", 0) == 2
        assert b"city_gateway_lora_duty_cycle_refused_total 2.0" in gw.metrics.render()
        assert medium.stats()["senders"].get("0,0") is None  # the gateway kept silent
    finally:
        radio.close()
        gw.close()


def test_presence_wakes_a_lora_lamp_in_continuous_receive(
    mpy: Any, tmp_path: Path, medium: MediumProcess
) -> None:
    nodes = {"lamp-1": ("lighting", b"\x31"), "lamp-2": ("lighting", b"\x32")}
    gw = lora_gateway(tmp_path, medium, nodes, node_config={"lamp-1": {"neighbours": ["lamp-2"]}})
    gw.start()
    peers = mpy.module("tests.gateway.lamp_peer")
    lamp = peers.LoRaLamp(
        medium.port, [200, 0], CHANNEL, (secret_of(b"\x32"), b"\x32", GATEWAY_ID, SALT)
    )
    radio = TestRadio(medium, b"\x31", pos=(150, 0))
    try:
        lamp.listen()
        started = time.monotonic()
        presence = {"type": "event", "event": "presence", "count": 2, "seq": 3}
        radio.tx(radio.context.protect_request(radio.request([presence])))
        commands = lamp.serve(3000, 1)
        elapsed = time.monotonic() - started
        assert commands == [{"type": "command", "command": "wake", "id": 1}]
        assert elapsed < 1.0, f"neighbour lit after {elapsed:.2f} s"
        gw.call(eventually(lambda: list(gw.downlink_states().values()) == ["confirmed"]))
        assert lamp.server.served == 1 and lamp.server.fresh  # after one Echo round
        assert lamp.node.queued == [({"type": "ack", "confirm": [1]}, True)]
        print(f"LoRa lamp woken {elapsed * 1000:.0f} ms after the presence frame")
    finally:
        lamp.close()
        radio.close()
        gw.close()


class LampRadio(TestRadio):
    """A lamp's radio: its own receive loop (AirLamp's thread) reads the socket and goes back
    to continuous receive at each txdone, so a transmission does not wait for it here."""

    __test__ = False

    def tx(self, frame: bytes, listen_ms: int = 20000) -> dict[str, Any]:
        self.send("tx", data=frame.hex(), t=int(time.time() * 1000))
        return {}


class AirLamp:
    """A lamp in continuous receive on the medium, in a thread of this process: the firmware's
    own lamp server (firmware/node/mains.py, our protocol/ OSCORE) answers every request it
    hears, `delay_s` after hearing it. Like a real lamp, it answers a push meant for another
    lamp (which it cannot unprotect) with an unprotected 4.01 carrying the same token."""

    def __init__(
        self,
        medium: MediumProcess,
        kid: bytes,
        pos: tuple[float, float],
        delay_s: float,
        node: Any = None,
    ) -> None:
        # imported here: lamp_peer takes over the lamp code's print() in this process
        from firmware.node.mains import Server
        from tests.gateway.lamp_peer import LampNode

        self.radio = LampRadio(medium, kid, pos)
        self.node = LampNode() if node is None else node
        self.server = Server(self.node, self.radio.context)
        self.delay_s = delay_s
        self.answers: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock = self.radio.sock
        sock.settimeout(0.2)
        renewed = 0.0
        while not self.stopped.is_set():
            if time.monotonic() - renewed > 2:
                self.radio.send("listen", ms=5000)
                renewed = time.monotonic()
            try:
                msg = json.loads(sock.recvfrom(4096)[0])
            except (TimeoutError, OSError):
                continue
            if msg["op"] == "txdone":
                renewed = 0.0  # half duplex: back to receiving once the answer is out
            if msg["op"] != "rx":
                continue
            out: list[bytes] = []
            self.server.handle(bytes.fromhex(msg["data"]), out.append)
            for frame in out:
                time.sleep(self.delay_s)
                self.answers.append(frame)
                self.radio.send("tx", data=frame.hex(), t=int(time.time() * 1000))

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.radio.close()


def test_a_push_takes_only_its_own_lamps_verified_answer(
    tmp_path: Path, medium: MediumProcess
) -> None:
    """lamp-3 hears the push to lamp-2 first and answers it (an unprotected 4.01, same token);
    the gateway ignores that and takes lamp-2's own protected answers (its Echo challenge,
    then 2.04), arriving later within the push's timeout."""
    nodes = {"lamp-2": ("lighting", b"\x32"), "lamp-3": ("lighting", b"\x33")}
    gw = lora_gateway(tmp_path, medium, nodes).start()
    stranger = AirLamp(medium, b"\x33", (40, 0), delay_s=0.05)  # near the gateway, and quick
    lamp = AirLamp(medium, b"\x32", (200, 0), delay_s=0.4)
    try:
        agent = gw.agent
        assert agent is not None
        link: Any = agent.links[0]
        down = gw.call(agent.downlinks.enqueue("lamp-2", {"type": "command", "command": "wake"}))
        gw.call(eventually(lambda: gw.downlink_states() == {down.id: "confirmed"}))
        (command,) = lamp.node.kind.commands
        assert (command["type"], command["command"]) == ("command", "wake")
        assert lamp.server.fresh and lamp.server.served == 1  # after one Echo round
        # the stranger answered both requests (the Echo round's and the repeat) first
        assert [coap.decode(a).code for a in stranger.answers] == [coap.UNAUTHORIZED] * 2
        assert len(stranger.node.errors) == 2
        assert all(e.startswith("push refused:") for e in stranger.node.errors)
        assert link.push_answers_ignored == 2
        assert (link.pusher.pushed, link.pusher.failed) == (1, 0)
        assert stranger.node.kind.commands == []
    finally:
        lamp.close()
        stranger.close()
        gw.close()


def test_a_push_nobody_verifiably_answers_times_out_and_waits_for_the_next_uplink(
    tmp_path: Path, medium: MediumProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the stranger answers: the push keeps waiting, retransmits, then gives up quietly;
    the downlink stays for lamp-2's next uplink response."""
    nodes = {"lamp-2": ("lighting", b"\x32"), "lamp-3": ("lighting", b"\x33")}
    gw = lora_gateway(tmp_path, medium, nodes).start()
    stranger = AirLamp(medium, b"\x33", (40, 0), delay_s=0.05)
    try:
        agent = gw.agent
        assert agent is not None
        link: Any = agent.links[0]
        started = time.monotonic()
        down = gw.call(agent.downlinks.enqueue("lamp-2", {"type": "command", "command": "wake"}))
        gw.call(eventually(lambda: link.pusher.failed == 1, timeout=15))
        elapsed = time.monotonic() - started
        assert elapsed > 3.0  # every try waited its full timeout despite the stranger's answers
        assert len(stranger.answers) == 3 == link.push_answers_ignored  # one per transmission
        assert gw.downlink_states() == {down.id: "sent"}
        assert not [r for r in caplog.records if "push to lamp-2 failed" in r.getMessage()]
    finally:
        stranger.close()
        gw.close()

"""The simulated LoRa radio medium (hil/medium.py) as a real process on 127.0.0.1, with test
radios speaking its documented datagrams; and the sim board's radio against it."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.medium import PATH_LOSS_1M_DB, noise_floor_dbm
from protocol import airtime
from tests.firmware.node_support import MediumProcess, start_mpy

CH = {"freq": 868100000, "sf": 7, "bw": 125000}


class TestRadio:
    __test__ = False

    def __init__(self, medium: MediumProcess, pos: tuple[float, float], freq: int) -> None:
        self.channel = {**CH, "freq": freq}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.medium = ("127.0.0.1", medium.port)
        self.pos = list(pos)

    def send(self, op: str, **fields: Any) -> None:
        msg = {**self.channel, "op": op, "pos": self.pos, **fields}
        self.sock.sendto(json.dumps(msg).encode(), self.medium)

    def listen(self, ms: int = 5000, **channel: Any) -> None:
        self.send("listen", ms=ms, **channel)

    def tx(self, data: bytes, **fields: Any) -> None:
        self.send("tx", data=data.hex(), t=fields.pop("t", 0), **fields)

    def next(self, timeout: float = 2.0) -> dict[str, Any] | None:
        self.sock.settimeout(timeout)
        try:
            msg: dict[str, Any] = json.loads(self.sock.recvfrom(4096)[0])
        except TimeoutError:
            return None
        return msg

    def frames(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        out = []
        while (msg := self.next(timeout)) is not None:
            if msg["op"] == "rx":
                out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def medium() -> Iterator[MediumProcess]:
    m = MediumProcess("--time-scale", "1", "--seed", "3")
    yield m
    m.stop()


_channels = iter(range(868_100_000, 868_500_000, 25_000))


def radios(medium: MediumProcess, *positions: tuple[float, float]) -> list[TestRadio]:
    """Radios on a channel of their own: the medium serves the whole module, and radios of
    earlier tests must not hear (or collide with) this test's frames."""
    freq = next(_channels)
    return [TestRadio(medium, p, freq) for p in positions]


def test_a_frame_arrives_after_its_airtime_with_rssi_and_snr_by_distance(
    medium: MediumProcess,
) -> None:
    tx, near, other_sf = radios(medium, (0, 0), (2000, 0), (50, 0))
    near.listen()
    other_sf.listen(sf=9)
    time.sleep(0.05)
    frame = bytes(range(20))
    start = time.monotonic()
    tx.tx(frame, t=1234)
    done = tx.next()
    elapsed_ms = (time.monotonic() - start) * 1000
    toa = airtime.time_on_air_ms(20, 7)
    assert done is not None
    began, ended = done.pop("start_ms"), done.pop("end_ms")
    assert done == {"op": "txdone", "toa_ms": toa, "t": 1234, "scale": 1.0}
    assert ended - began == pytest.approx(toa, abs=0.01)  # the medium's clock, at scale 1
    assert toa - 5 <= elapsed_ms <= toa + 150  # sent back after the airtime, not before
    heard = near.frames()
    assert len(heard) == 1
    rx = heard[0]
    assert bytes.fromhex(rx["data"]) == frame
    expected_rssi = 14 - (PATH_LOSS_1M_DB + 10 * 2.7 * math.log10(2000))
    assert rx["rssi"] == pytest.approx(expected_rssi, abs=0.1)
    assert rx["snr"] == pytest.approx(expected_rssi - noise_floor_dbm(125000), abs=0.25)
    assert rx["from"] == [0, 0] and rx["t"] == 1234
    assert (rx["start_ms"], rx["end_ms"], rx["scale"]) == (began, ended, 1.0)
    assert other_sf.frames(0.2) == []  # another spreading factor hears nothing
    assert tx.frames(0.2) == []  # nor does the sender


def test_out_of_range_frames_are_lost_and_counted(medium: MediumProcess) -> None:
    tx, far = radios(medium, (0, 0), (40000, 0))
    far.listen()
    time.sleep(0.05)
    before = medium.stats()["counts"]["lost_snr"]
    tx.tx(b"far away")
    assert tx.next()["op"] == "txdone"  # type: ignore[index]
    assert far.frames(0.3) == []
    assert medium.stats()["counts"]["lost_snr"] == before + 1


def test_a_radio_must_listen_when_the_preamble_ends(medium: MediumProcess) -> None:
    tx, late, idle = radios(medium, (0, 0), (10, 0), (20, 0))
    idle.listen()
    time.sleep(0.05)
    idle.send("idle")
    time.sleep(0.05)
    tx.tx(bytes(40), sf=10)  # 370 ms on air at SF10, the preamble over after 100 ms
    time.sleep(0.2)
    late.listen(sf=10)  # after the preamble: too late for this frame
    assert tx.next(5)["op"] == "txdone"  # type: ignore[index]
    assert late.frames(0.2) == [] and idle.frames(0.1) == []


def test_overlapping_frames_collide_unless_one_is_much_stronger(medium: MediumProcess) -> None:
    a, b, rx = radios(medium, (0, 0), (1000, 0), (500, 0))
    rx.listen()
    time.sleep(0.05)
    before = medium.stats()["counts"]["collided"]
    a.tx(b"A" * 30)
    b.tx(b"B" * 30)
    assert rx.frames(0.5) == []
    assert medium.stats()["counts"]["collided"] == before + 2
    # capture: a sender 10 m away drowns one 990 m away (far more than 6 dB)
    near = TestRadio(medium, (510, 0), a.channel["freq"])
    rx.listen()
    time.sleep(0.05)
    near.tx(b"N" * 30)
    b.tx(b"B" * 30)
    got = [bytes.fromhex(f["data"]) for f in rx.frames(0.5)]
    assert got == [b"N" * 30]


def test_a_sender_hears_nothing_after_txdone_until_it_listens(medium: MediumProcess) -> None:
    """As an SX127x goes to standby (or sleep) at TxDone: the node opens its RX window itself.
    Its earlier listen lease does not carry over the transmission."""
    node, gateway = radios(medium, (0, 0), (300, 0))
    gateway.listen()
    node.listen(ms=20000)
    time.sleep(0.05)
    node.tx(b"uplink")
    assert node.next()["op"] == "txdone"  # type: ignore[index]
    assert gateway.frames(0.3)[0]["data"] == b"uplink".hex()
    gateway.tx(b"quick answer")
    assert node.frames(0.3) == []  # not listening: the answer went by unheard
    node.listen()
    time.sleep(0.05)
    gateway.tx(b"downlink")
    heard = [m for m in iter(lambda: node.next(0.5), None) if m["op"] == "rx"]
    assert [bytes.fromhex(m["data"]) for m in heard] == [b"downlink"]


def test_the_audit_reports_the_worst_hour_of_each_sender(medium: MediumProcess) -> None:
    (tx,) = radios(medium, (7, 7))
    # three frames on the sender's clock: two within an hour, one an hour later
    for t in (0, 1_000_000, 4_000_000):
        tx.tx(bytes(10), t=t)
        assert tx.next()["op"] == "txdone"  # type: ignore[index]
    band = medium.stats()["senders"]["7,7"]["M"]
    toa = airtime.time_on_air_ms(10, 7)
    assert band["frames"] == 3
    assert band["max_hour_ms"] == pytest.approx(2 * toa, abs=0.01)
    assert band["budget_ms"] == 36000


def test_the_sim_boards_radio_talks_to_the_medium(medium: MediumProcess, tmp_path: Path) -> None:
    (gateway,) = radios(medium, (200, 0))
    gateway.listen(ms=20000)
    (tmp_path / ".sim").mkdir()
    (tmp_path / ".sim/board.json").write_text(
        json.dumps({"medium": ["127.0.0.1", medium.port], "position": [0, 0]})
    )
    proc = start_mpy(
        "from firmware import boards\n"
        "b = boards.load()\n"
        f"r = b.lora(sf=7, freq_hz={gateway.channel['freq']})\n"
        "print(r.send(b'hello gateway'))\n"
        "print(r.receive(3000), r.rssi_dbm is not None)\n",
        tmp_path,
    )
    frame = gateway.frames(1.0)
    assert [bytes.fromhex(f["data"]) for f in frame] == [b"hello gateway"]
    gateway.tx(b"hello node")
    out, _ = proc.communicate(timeout=10)
    assert out.split("\n")[:2] == ["True", "b'hello node' True"], out

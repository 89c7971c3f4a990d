"""A battery node over LoRa: the sim board's radio on the simulated medium (hil/medium.py), a
LoRa gateway stand-in (node_peer.py lora: gateway.security's frame functions) answering in the
node's RX window. The medium audits every sender's airtime on its own: the node's ledger must
keep the EU868 1 % duty cycle in every hour."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.simboard import SimNode
from tests.firmware.node_support import MediumProcess, Peer, need_micropython, write_keys

EPOCH = 1_700_000_000
# The node's clock and the medium's airtime run this much faster than real time, and the
# gateway stand-in's RX delay with them: the node light-sleeps RX_DELAY_MS / SPEED real ms
# before it opens its window, so all three must agree.
# At 20 the node's RX window would last ~3 ms of real time, which a loaded machine misses.
SPEED = 4
FAST = 20  # for tests that need no answer in the RX window


@pytest.fixture
def radio_world(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[MediumProcess, Path, dict[str, Any]]]:
    need_micropython()
    medium = MediumProcess("--time-scale", str(getattr(request, "param", SPEED)))
    keys = tmp_path / "keys"
    oscore = write_keys(keys, "leak-9")
    yield medium, keys, oscore
    medium.stop()


def lora_node(
    tmp: Path,
    oscore: dict[str, Any],
    medium: MediumProcess,
    sf: int,
    speed: float = SPEED,
    **kind: Any,
):
    node = SimNode(tmp / "node")
    node.config(
        {
            "node_id": "leak-9",
            "kind": "leak",
            "link": "lora",
            "lora": {"sf": sf, "rx_window_ms": 3000},
            "oscore": oscore,
            "kind_config": kind,
        }
    )
    node.board(speed=speed, epoch_s=EPOCH, medium=["127.0.0.1", medium.port], position=[0, 0])
    node.scenario(
        {"start": EPOCH, "signals": {"pulse_rate:34": 0.01, "adc:35": 3000000, "adc:36": 1600000}}
    )
    return node


def test_uplinks_reach_the_gateway_and_a_downlink_comes_back_in_the_rx_window(
    tmp_path: Path, radio_world: Any
) -> None:
    medium, keys, oscore = radio_world
    peer = Peer("lora", keys, medium.port, tmp_path, "800", "0", "7", str(SPEED))
    try:
        node = lora_node(tmp_path, oscore, medium, 7)
        peer.queue([{"type": "leak_config", "pulse_ml": 2000}])
        runs = node.cycles(3)
        uplinks = peer.uplinks()
    finally:
        peer.stop()
    assert [u["seqno"] for u in uplinks] == [0, 1, 2]
    seqs = [r["seq"] for u in uplinks for r in u["records"]]
    assert seqs == list(range(len(seqs)))
    assert json.loads((node.folder / "config.json").read_text())["kind_config"] == {
        "pulse_ml": 2000
    }
    for run in runs:
        assert "link:" not in run.output and "refused" not in run.output
    # the node keeps the RSSI and SNR of the gateway's answers for its status
    stats = medium.stats()
    assert stats["senders"]["0,0"]["M"]["frames"] == 3
    assert stats["counts"]["delivered"] >= 6  # three uplinks, three answers


@pytest.mark.parametrize("radio_world", [FAST], indirect=True)
def test_lora_sends_never_exceed_the_duty_cycle_and_refused_records_wait_in_flash(
    tmp_path: Path, radio_world: Any
) -> None:
    """SF12 and a reading every minute need about 2 s of airtime a minute: three times the
    1 % the sub-band allows. The ledger must refuse the excess; the records wait in flash."""
    medium, keys, oscore = radio_world
    peer = Peer("lora", keys, medium.port, tmp_path, "800", "0", "12", str(FAST))
    try:
        node = lora_node(tmp_path, oscore, medium, 12, FAST, report_s=60)
        runs = node.cycles(26)
        before = len(peer.uplinks())
        band = medium.stats()["senders"]["0,0"]["M"]
        # then the node sleeps an hour (its wake-up moved, as a longer report period would):
        # the ledger has room again and the backlog drains, oldest first, with its age
        exit_file = node.sim / "exit.json"
        last = json.loads(exit_file.read_text())
        last["wake_epoch_ms"] += 3_600_000
        exit_file.write_text(json.dumps(last))
        drain = node.cycles(1)[0]
        uplinks = peer.uplinks()
    finally:
        peer.stop()
    assert band["budget_ms"] == 36000
    assert band["max_hour_ms"] <= 36000
    assert band["max_hour_ms"] > 30000  # it did use the budget: the test would catch overuse
    refused = [r for r in runs if "duty cycle" in r.output]
    assert len(refused) >= 5
    assert band["frames"] < len(runs) and before == band["frames"]
    drained = [r for u in uplinks[before:] for r in u["records"]]
    assert len(drained) >= 10, drain.output
    ages = [r["age_s"] for r in drained]
    assert ages == sorted(ages, reverse=True) and ages[0] > 3600  # oldest first
    seqs = [r["seq"] for u in uplinks for r in u["records"]]
    assert len(seqs) == len(set(seqs))  # nothing twice
    after = medium.stats()["senders"]["0,0"]["M"]
    assert after["max_hour_ms"] <= 36000


def test_an_alarm_goes_confirmable_and_waits_in_flash_until_acknowledged(
    tmp_path: Path, radio_world: Any
) -> None:
    medium, keys, oscore = radio_world
    node = lora_node(tmp_path, oscore, medium, 7)
    # the leak probe is wet (its ADC pulled low): an alarm at once
    node.scenario({"start": EPOCH, "signals": {"adc:35": 100000, "adc:36": 1600000}})
    lost = node.cycles(1)[0]  # no gateway: three confirmable tries, then the ring
    assert "no acknowledgement in 3 windows" in lost.output
    assert medium.stats()["senders"]["0,0"]["M"]["frames"] == 3  # the same frame, 3 times
    peer = Peer("lora", keys, medium.port, tmp_path, "800", "0", "7", str(SPEED))
    try:
        node.cycles(1)
        uplinks = peer.uplinks()
    finally:
        peer.stop()
    first = uplinks[0]
    assert first["con"] is True  # an alarm inside: confirmable
    alarm = first["records"][0]
    assert alarm["type"] == "alarm" and alarm["alarm"] == "probe_wet" and alarm["active"]
    assert alarm["age_s"] > 0  # the stored one, ahead of everything else, with its age
    # routine records go NON once the alarm is through
    assert all(u["con"] is False for u in uplinks[1:])

"""The LoRa link's timing (gateway/links/lora.py) on the simulated medium: its answer starts
RX_DELAY_MS after the uplink ended, when the node's receiver opens (firmware/node/loralink.py,
firmware/README.md "LoRa timing"); an answer that a slow commit made too late for the window is
not sent at all, and what it carried goes in the node's next window.

Measured on the medium's own clock (hil/medium.py: `end_ms` in the sender's txdone, `start_ms`
in the rx): the gap between the uplink's end and the answer's start, times the time scale, is
the delay the node's radio saw. The node's window on the air opens RX_DELAY_MS - RX_ERROR_MS
after its TxDone; an answer starting before that is never heard, whatever the load.
"""

from __future__ import annotations

import ast
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.links.lora import RX_DELAY_MS, RX_ERROR_MS
from protocol import cbor, coap, schema
from protocol.oscore_client import DONE, Exchange
from tests.firmware.node_support import MediumProcess
from tests.gateway.fakes import eventually
from tests.gateway.test_link_lora import (
    SCALE,
    bin_node_on_air,
    leak,
    medium,
)
from tests.support.interp import ROOT

__all__ = ["medium"]  # the fixture, shared with test_link_lora

OPENS_MS = RX_DELAY_MS - RX_ERROR_MS  # the node's receiver comes on
CLOSES_MS = RX_DELAY_MS + RX_ERROR_MS  # the latest start its symbol timeout still catches
ALARM = {"type": "alarm", "alarm": "bin_fire", "value": 652}
COMMAND = {"type": "command", "command": "identify"}


def firmware_constant(name: str) -> int:
    """`NAME = const(N)` in firmware/node/loralink.py, read from the source (the module needs
    MicroPython's `micropython` to import)."""
    tree = ast.parse((ROOT / "firmware" / "node" / "loralink.py").read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == [name]:
            call = stmt.value
            assert isinstance(call, ast.Call) and ast.unparse(call.func) == "const"
            value = ast.literal_eval(call.args[0])
            assert isinstance(value, int)
            return value
    raise AssertionError(f"{name} not found in firmware/node/loralink.py")


def gap_ms(txdone: dict[str, Any], rx: dict[str, Any]) -> float:
    """Radio ms from the uplink's end to the answer's start, on the medium's clock."""
    return float((rx["start_ms"] - txdone["end_ms"]) * rx["scale"])


@contextmanager
def stalled_store(database: Path) -> Iterator[None]:
    """Another connection holds the database's write lock: the gateway's commit waits for it
    (its busy timeout), as behind a stalled disk, until the block ends."""
    conn = sqlite3.connect(database, isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def hold_past_the_window() -> None:
    # The stall lasts three times the node's whole RX delay: the scenario's duration, not a
    # wait for an event (the gateway's commit cannot end before the block does).
    time.sleep(3 * CLOSES_MS / 1000 / SCALE)


def test_the_gateway_keeps_the_firmwares_rx_timing() -> None:
    assert firmware_constant("RX_DELAY_MS") == RX_DELAY_MS
    assert firmware_constant("RX_ERROR_MS") == RX_ERROR_MS


@pytest.fixture
def real_time_medium() -> Iterator[MediumProcess]:
    m = MediumProcess("--time-scale", "1", "--seed", "5")
    yield m
    m.stop()


def test_the_answer_starts_rx_delay_after_the_uplink_ended(
    tmp_path: Path, real_time_medium: MediumProcess
) -> None:
    """On a medium in real time: RX_DELAY_MS after the end, within RX_ERROR_MS each way."""
    with bin_node_on_air(tmp_path, real_time_medium) as (gw, radio):
        delays = []
        for seq in (1, 2, 3):
            exchange = Exchange(radio.context, radio.request([{**ALARM, "seq": seq}], coap.CON))
            txdone = radio.tx(exchange.first())
            (rx,) = radio.received(2.0)
            action, plain = exchange.on_response(bytes.fromhex(rx["data"]))
            assert action == DONE and coap.decode(plain).code == coap.CHANGED
            delays.append(gap_ms(txdone, rx))
        print("answers started " + ", ".join(f"{d:.1f}" for d in delays) + " ms after uplinks")
        assert all(OPENS_MS <= d <= CLOSES_MS for d in delays), delays
        assert gw.agent is not None
        link: Any = gw.agent.links[0]
        assert link.rx_windows_missed == 0


def test_a_late_commit_sends_nothing_and_the_downlink_goes_in_the_next_window(
    tmp_path: Path, medium: MediumProcess
) -> None:
    with bin_node_on_air(tmp_path, medium) as (gw, radio):
        agent = gw.agent
        assert agent is not None
        link: Any = agent.links[0]
        down = gw.call(agent.downlinks.enqueue("bin-4", COMMAND))
        with stalled_store(gw.config.database_path):
            radio.tx(radio.context.protect_request(radio.request([leak(1)])))
            hold_past_the_window()
        gw.call(eventually(lambda: link.rx_windows_missed == 1))
        assert set(gw.stored()) == {"bin-4:1"}  # committed once the disk came back
        assert radio.frames(0.5) == []  # the node listened all along: nothing, not even late
        assert medium.stats()["senders"].get("0,0") is None
        assert gw.downlink_states() == {down.id: "sent"}  # taken, never delivered
        # the node's next uplink: its window carries the downlink, on time
        exchange = Exchange(radio.context, radio.request([leak(2)]))
        txdone = radio.tx(exchange.first())
        (rx,) = radio.received()
        action, plain = exchange.on_response(bytes.fromhex(rx["data"]))
        assert action == DONE
        payload = coap.decode(plain).payload
        assert schema.decode_downlink(cbor.loads(payload)) == [{**COMMAND, "id": 1}]
        # not before the window opens; and in radio time (scaled), not RX_DELAY_MS real ms
        assert OPENS_MS <= gap_ms(txdone, rx) < 2 * RX_DELAY_MS
        assert medium.stats()["senders"]["0,0"]["M"]["frames"] == 1
        assert link.rx_windows_missed == 1


def test_a_late_con_answer_goes_in_the_window_of_its_retransmission(
    tmp_path: Path, medium: MediumProcess
) -> None:
    """The node repeats an unanswered CON in a later window (same bytes): the answer that
    missed the first window is kept and goes then, downlink and all; stored once."""
    with bin_node_on_air(tmp_path, medium) as (gw, radio):
        agent = gw.agent
        assert agent is not None
        link: Any = agent.links[0]
        gw.call(agent.downlinks.enqueue("bin-4", COMMAND))
        exchange = Exchange(radio.context, radio.request([{**ALARM, "seq": 1}], coap.CON))
        frame = exchange.first()
        with stalled_store(gw.config.database_path):
            radio.tx(frame)
            hold_past_the_window()
        gw.call(eventually(lambda: link.rx_windows_missed == 1))
        assert radio.frames(0.5) == []
        txdone = radio.tx(frame)
        (rx,) = radio.received()
        action, plain = exchange.on_response(bytes.fromhex(rx["data"]))
        assert action == DONE and coap.decode(plain).code == coap.CHANGED
        payload = coap.decode(plain).payload
        assert schema.decode_downlink(cbor.loads(payload)) == [{**COMMAND, "id": 1}]
        assert OPENS_MS <= gap_ms(txdone, rx) < 2 * RX_DELAY_MS
        assert set(gw.stored()) == {"bin-4:1"} and gw.refusals("lora", "replay") == 0

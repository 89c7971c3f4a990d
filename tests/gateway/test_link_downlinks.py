"""Downlink delivery end to end: what the gateway sends, what the node does with it, and what
the gateway learns back, by id.

- A real node: the firmware's leak node on the sim board (hil/simboard.py, MicroPython) talks
  CoAP + OSCORE to the real gateway Agent on 127.0.0.1. Five downlinks wait for it: one it
  applies, and four it refuses, each for its own reason (configuration for another kind, a
  value its kind refuses, a command it does not do, a record from a newer schema). The
  gateway ends with exactly one confirmed and four refused, each with the node's reason; the
  node's next status says what went wrong in words.
- The firmware's downlink code (firmware/node/downlink.py) on MicroPython, fed payloads no
  gateway of ours would send, answers with the exact ack records the schema defines.
- The field staff page shows a refused downlink with the node's reason, in three languages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cbor2
import pytest

import gateway.uplink
from hil.simboard import SimNode
from protocol import schema
from tests.firmware.node_support import need_micropython
from tests.gateway.link_support import GATEWAY_ID, SALT, LiveGateway, secret_of
from tests.web.client import Client
from tests.web.site import ACCOUNTS, WebSite

EPOCH = 1_700_000_000
KID = b"\x17"


class NewerSchema:
    """protocol.schema as a gateway one version ahead would use it: a `config` record may carry
    a field this node's schema has never heard of (key 40, asked for as `future_s`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(schema, name)

    def encode_downlink(self, records: Mapping[str, Any]) -> list[Any]:
        record = dict(records)
        extra = record.pop("future_s", None)
        obj: list[Any] = schema.encode_downlink(record)
        if extra is not None:
            obj[1][40] = extra
        return obj


def leak_node(folder: Path, port: int) -> SimNode:
    node = SimNode(folder)
    node.config(
        {
            "node_id": "leak-7",
            "kind": "leak",
            "link": "coap",
            "coap": {"host": "127.0.0.1", "port": port},
            "oscore": {
                "secret": secret_of(KID).hex(),
                "salt": SALT.hex(),
                "sender_id": KID.hex(),
                "recipient_id": GATEWAY_ID.hex(),
            },
            "status_s": 86400,
        }
    )
    node.board(speed=20, epoch_s=EPOCH)
    node.scenario(
        {"start": EPOCH, "signals": {"pulse_rate:34": 0.01, "adc:35": 3000000, "adc:36": 1600000}}
    )
    return node


def test_a_real_node_confirms_what_it_applied_and_refuses_the_rest_by_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_micropython()
    monkeypatch.setattr(gateway.uplink, "schema", NewerSchema())
    gw = LiveGateway(tmp_path, {"leak-7": ("leak", KID)}).start()
    try:
        agent = gw.agent
        assert agent is not None
        asks = [
            {"type": "leak_config", "pulse_ml": 500},  # applied
            {"type": "binfill_config", "full_pct": 80},  # for a bin, not a meter
            {"type": "config", "report_s": 30},  # the schema allows it, the leak kind not (60..)
            {"type": "command", "command": "recalibrate"},  # a parking sensor's command
            {"type": "config", "status_s": 3600, "future_s": 5},  # a newer schema's record
        ]
        queued = [gw.call(agent.downlinks.enqueue("leak-7", ask, origin="test")) for ask in asks]
        assert [d.wire_id for d in queued] == [1, 2, 3, 4, 5]
        node = leak_node(tmp_path / "node", gw.port)
        first, second = node.cycles(2)

        listed = {d.id: d for d in gw.call(agent.downlinks.list("leak-7"))}
        outcome = [(listed[d.id].state, listed[d.id].reason) for d in queued]
        assert outcome == [
            ("confirmed", ""),
            ("refused", "wrong_kind"),
            ("refused", "invalid"),
            ("refused", "unsupported"),
            ("refused", "malformed"),
        ]
        # the ack went out in the same cycle, ahead of anything else: nothing was sent twice
        assert [listed[d.id].attempts for d in queued] == [1] * 5
        # what the node did agrees: the good one applied and kept, the others not
        config = json.loads((node.folder / "config.json").read_text())
        assert config["kind_config"] == {"pulse_ml": 500}
        assert config.get("status_s", 86400) == 86400
        for why in ("record 4 config.key 40: unknown key", "for a binfill node", "report_s"):
            assert why in first.output
        assert "refused" not in second.output
        # the next status carries the first of those errors (cut to what a status in a flash
        # ring slot leaves room for; the console line has it whole)
        statuses = [r["data"] for r in gw.stored().values() if r["kind"] == "status"]
        errors = [s.get("error") for s in statuses]
        assert errors[0] is None and errors[-1]
        assert "downlink refused: record 4 config.key 40: unknown key".startswith(errors[-1])
        assert all(s["safe_mode"] is False for s in statuses)
        # acks are not readings: only leak readings and statuses are stored
        assert {r["kind"] for r in gw.stored().values()} == {"leak", "status"}
        assert gw.all_refusals() == {}
    finally:
        gw.close()


# ---- the firmware's downlink code on MicroPython, against payloads no gateway of ours sends ----


@pytest.fixture
def node(mpy: Any) -> Any:
    """firmware/node/downlink.py's view of a leak node (tests/gateway/lamp_peer.py LampNode)
    with the firmware's own leak kind."""
    lamp = mpy.module("tests.gateway.lamp_peer").LampNode()
    lamp.cfg = {"kind": "leak", "kind_config": {}}
    lamp.kind = mpy.module("firmware.kinds.leak").Leak(None, None)
    return lamp


def down(*records: Any, version: int = 1) -> bytes:
    return bytes(cbor2.dumps([version, *records], canonical=True))


def apply(mpy: Any, node: Any, payload: bytes) -> tuple[int, list[tuple[dict[str, Any], bool]]]:
    applied = mpy.module("firmware.node.downlink").apply(node, payload)
    return applied, [(dict(r), p) for r, p in node.queued]


def test_each_id_is_answered_once_with_the_reason_for_a_refusal(mpy: Any, node: Any) -> None:
    payload = down(
        {0: 5, 1: 1, 4: 3},  # ack_alarm: applied by the leak kind
        {0: 4, 1: 2, 4: 80},  # binfill_config: wrong kind
        {0: 5, 1: 3, 4: 4},  # recalibrate: a command this kind does not do
        {0: 5, 1: 4, 4: 0},  # reboot: applied
        {0: 5, 1: 4, 4: 1, 6: 9},  # the same id again: answered once (not applied)
        {0: 5, 4: 1},  # identify without an id: applied, nothing to name
    )
    applied, queued = apply(mpy, node, payload)
    assert applied == 3 and node.reboot is True and node.identify_s == 10
    # one ack per reason, the confirmations in the first; queued with priority
    assert queued == [
        ({"type": "ack", "refused": [2], "reason": "wrong_kind", "confirm": [1, 4]}, True),
        ({"type": "ack", "refused": [3], "reason": "unsupported"}, True),
    ]
    assert list(node.errors) == [
        "downlink binfill_config refused: for a binfill node, this is a leak node",
        "downlink command refused: leak: command not handled: recalibrate",
    ]


def test_one_unreadable_record_is_refused_alone(mpy: Any, node: Any) -> None:
    payload = down({0: 5, 1: 7, 4: 0}, {0: 0, 1: 8, 4: 600, 40: 1}, {0: 9, 1: 9})
    applied, queued = apply(mpy, node, payload)
    assert applied == 1 and node.reboot is True
    assert queued == [
        ({"type": "ack", "refused": [8, 9], "reason": "malformed", "confirm": [7]}, True)
    ]
    assert node.errors[0] == "downlink refused: record 1 config.key 40: unknown key"


def test_a_downlink_in_another_version_is_refused_whole_and_garbage_unnamed(
    mpy: Any, node: Any
) -> None:
    applied, queued = apply(mpy, node, down({0: 5, 1: 3, 4: 1}, {0: 5, 1: 4, 4: 0}, version=2))
    assert applied == 0 and node.reboot is False
    assert queued == [({"type": "ack", "refused": [3, 4], "reason": "malformed"}, True)]
    # not CBOR, or no record with a readable id: nothing to ack, the error is all there is
    for garbage in (b"\xff\x00", down({0: 0, 1: "x", 4: 5}), bytes(cbor2.dumps({"id": 1}))):
        assert apply(mpy, node, garbage) == (0, queued)
    assert len(node.errors) == 4 and node.errors[1].startswith("downlink refused: ")


def test_a_kind_that_breaks_on_a_command_is_a_failure_not_a_crash(mpy: Any, node: Any) -> None:
    node.kind.command = None  # a bug in the kind: calling it raises TypeError
    applied, queued = apply(mpy, node, down({0: 5, 1: 12, 4: 3}))  # ack_alarm
    assert applied == 0
    assert queued == [({"type": "ack", "refused": [12], "reason": "failed"}, True)]
    assert node.errors[0].startswith("downlink command refused: ")


# ---- the field staff page shows a refusal and its reason, in each language -------------------


def test_the_web_page_shows_a_refused_downlink_and_why(tmp_path: Path) -> None:
    site = WebSite(tmp_path)
    try:
        agent = site.agent
        node = site.nodes["meter-library"]
        node.report()
        config = site.call(agent.downlinks.enqueue("meter-library", {"type": "config"}))
        bins = site.call(
            agent.downlinks.enqueue("meter-library", {"type": "binfill_config", "full_pct": 80})
        )
        got = node.report()
        assert [r["type"] for r in got] == ["config", "binfill_config"]
        # this node applies the first and refuses the second, as the firmware would
        node.to_ack = []
        node.report(
            {"type": "ack", "confirm": [config.wire_id]},
            {"type": "ack", "refused": [bins.wire_id], "reason": "wrong_kind"},
        )
        assert site.downlink_states() == {config.id: "confirmed", bins.id: "refused"}
        client = Client(site.base)
        assert client.login("victor", ACCOUNTS["victor"][1]).status == 303
        for lang, state, reason in (
            ("en", "Refused", "Meant for another kind of node"),
            ("fr", "Refusé", "Destiné à un autre type de capteur"),
            ("nl", "Geweigerd", "Bedoeld voor een ander soort sensor"),
        ):
            client.cookies["gw_lang"] = lang
            page = client.get("/nodes/meter-library").body
            row = page[page.index(f'data-downlink="{bins.id}"') :]
            row = row[: row.index("</tr>")]
            assert f'<span class="badge d-refused">{state}</span>' in row
            assert f'data-field="reason">{reason}</span>' in row
            assert "d-confirmed" in page[page.index(f'data-downlink="{config.id}"') :]
    finally:
        site.close()

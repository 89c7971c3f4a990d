"""Downlinks: queued -> sent (in every response until the node answers) -> confirmed or
refused by the node's `ack` (by wire id), or expired; and the two ends of the wire in
gateway/uplink.py (`encode_downlinks` numbers the records, `decode_uplink` reads the acks)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import replace
from pathlib import Path
from unittest.mock import ANY

import cbor2
import pytest

from gateway.agent import Agent
from gateway.downlinks import SCHEMA, WIRE_IDS, Downlink, Downlinks
from gateway.links.base import Receipts, Uplink, UplinkRefused
from gateway.store import Database
from gateway.uplink import Deliveries, decode_uplink, encode_downlinks, with_confirmations
from protocol import schema
from tests.gateway.fakes import LoopbackLink, MemorySink
from tests.gateway.test_agent import run_agent, sample


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def open_downlinks(path: Path, clock: Clock) -> Downlinks:
    db = Database(path)
    await db.open([SCHEMA])
    return Downlinks(db, expiry_s=60.0, clock=clock)


def test_life_of_a_downlink(tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        changes: list[tuple[int, str]] = []
        downlinks.listeners.append(lambda d: changes.append((d.id, d.state)))

        first = await downlinks.enqueue("lamp-1", {"profile": "night"}, origin="web:alice")
        second = await downlinks.enqueue("lamp-1", {"identify": 5})
        other = await downlinks.enqueue("bin-3", {"emptied": True})
        assert (first.state, first.expires_at, first.origin) == ("queued", 1060.0, "web:alice")

        clock.now = 1001.0
        taken = await downlinks.take("lamp-1")
        assert [(d.id, d.state, d.sent_at, d.attempts) for d in taken] == [
            (first.id, "sent", 1001.0, 1),
            (second.id, "sent", 1001.0, 1),
        ]
        assert taken[0].command == {"profile": "night"}
        # The node missed that response: the next one carries them again.
        clock.now = 1002.0
        again = await downlinks.take("lamp-1", limit=1)
        assert [(d.id, d.attempts) for d in again] == [(first.id, 2)]

        # Confirmation by the gateway's row ids (a lamp's 2.04): only the node's own, sent.
        confirmed = await downlinks.confirm("lamp-1", [first.id, other.id, 9999])
        assert [(d.id, d.state, d.confirmed_at) for d in confirmed] == [
            (first.id, "confirmed", 1002.0)
        ]
        assert await downlinks.confirm("bin-3", [other.id]) == []  # queued, never sent
        assert [d.id for d in await downlinks.take("lamp-1")] == [second.id]

        listed = await downlinks.list("lamp-1")
        assert [(d.id, d.state) for d in listed] == [(second.id, "sent"), (first.id, "confirmed")]
        assert await downlinks.counts() == {
            "queued": 1,
            "sent": 1,
            "confirmed": 1,
            "refused": 0,
            "expired": 0,
        }
        assert changes[:3] == [(first.id, "queued"), (second.id, "queued"), (other.id, "queued")]
        assert (first.id, "confirmed") in changes
        await downlinks.db.close()

    asyncio.run(body())


def test_wire_ids_count_per_node_and_never_come_back_early(tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        a = [await downlinks.enqueue("a", {"n": i}) for i in range(3)]
        b = await downlinks.enqueue("b", {"n": 0})
        # each node has its own counter from 1: one CBOR byte on the air up to 23
        assert [d.wire_id for d in a] == [1, 2, 3] and b.wire_id == 1
        assert [d.id for d in a] == [1, 2, 3] and b.id == 4  # the gateway's rows are global
        # finished rows are deleted after a week; the counter carries on regardless, so a
        # node never meets a new downlink under a number it answered before
        await downlinks.take("a")
        await downlinks.settle("a", [1, 2, 3])
        clock.now += 8 * 86400
        await downlinks.expire()
        assert await downlinks.list("a") == []
        assert (await downlinks.enqueue("a", {"n": 3})).wire_id == 4
        await downlinks.db.close()

    asyncio.run(body())


def test_wire_ids_wrap_at_16_bits_and_skip_numbers_still_open(tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        first = await downlinks.enqueue("a", {"n": 0})  # wire id 1, still open
        second = await downlinks.enqueue("a", {"n": 1})  # wire id 2, answered below
        await downlinks.take("a")
        await downlinks.settle("a", [second.wire_id])

        def near_the_end(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE downlink_numbers SET last = ? WHERE node_id = 'a'", (WIRE_IDS,))

        await downlinks.db.transact(near_the_end)
        wrapped = await downlinks.enqueue("a", {"n": 2})
        assert (first.wire_id, wrapped.wire_id) == (1, 2)  # 65535 -> 1 is open: skipped
        # the node answers "2": that is the newest downlink numbered 2, not the old one
        clock.now = 1001.0
        await downlinks.take("a")
        (settled,) = await downlinks.settle("a", [], {2: "invalid"})
        assert (settled.id, settled.state, settled.reason) == (wrapped.id, "refused", "invalid")
        states = {d.id: d.state for d in await downlinks.list("a")}
        assert states == {first.id: "sent", second.id: "confirmed", wrapped.id: "refused"}
        await downlinks.db.close()

    asyncio.run(body())


def test_the_node_confirms_and_refuses_exactly_the_ids_it_lists(tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        changes: list[tuple[int, str, str]] = []
        downlinks.listeners.append(lambda d: changes.append((d.wire_id, d.state, d.reason)))
        good = await downlinks.enqueue("n", {"type": "config", "report_s": 600})
        bad = await downlinks.enqueue("n", {"type": "binfill_config", "full_pct": 80})
        later = await downlinks.enqueue("n", {"type": "command", "command": "identify"})
        theirs = await downlinks.enqueue("m", {"type": "config", "report_s": 60})
        clock.now = 1001.0
        assert [d.wire_id for d in await downlinks.take("n", limit=2)] == [1, 2]
        await downlinks.take("m")
        changes.clear()

        clock.now = 1002.0
        # "3" was never sent to n (it is still queued); "1" of m is m's business; 77 unknown
        settled = await downlinks.settle("n", [good.wire_id, later.wire_id, 77], {2: "wrong_kind"})
        assert [(d.id, d.state) for d in settled] == [(good.id, "confirmed"), (bad.id, "refused")]
        assert changes == [(1, "confirmed", ""), (2, "refused", "wrong_kind")]
        rows = {d.id: d for d in await downlinks.list()}
        assert rows[good.id].confirmed_at == 1002.0
        assert (rows[bad.id].reason, rows[bad.id].confirmed_at) == ("wrong_kind", None)
        assert (rows[later.id].state, rows[theirs.id].state) == ("queued", "sent")
        # answered downlinks are not sent again; the one still open is
        assert [d.id for d in await downlinks.take("n")] == [later.id]
        # the same ack again (a re-sent uplink) changes nothing
        assert await downlinks.settle("n", [good.wire_id], {2: "wrong_kind"}) == []
        assert await downlinks.counts() == {
            "queued": 0,
            "sent": 2,
            "confirmed": 1,
            "refused": 1,
            "expired": 0,
        }
        await downlinks.db.close()

    asyncio.run(body())


def test_a_refusal_overrules_a_push_confirmation_and_a_late_ack_settles_an_expired_one(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        pushed = await downlinks.enqueue("lamp", {"type": "lighting_profile", "hold_s": 5})
        slow = await downlinks.enqueue("lamp", {"type": "config", "report_s": 60}, ttl_s=5)
        never = await downlinks.enqueue("lamp", {"type": "config", "report_s": 90}, ttl_s=5)
        await downlinks.take("lamp", limit=2)
        await downlinks.confirm("lamp", [pushed.id])  # the lamp answered the push 2.04...
        (refused,) = await downlinks.settle("lamp", [], {pushed.wire_id: "invalid"})
        assert (refused.state, refused.reason) == ("refused", "invalid")  # ...but refused it
        clock.now = 1006.0
        assert {d.id for d in await downlinks.expire()} == {slow.id, never.id}
        # the node was out of reach; its ack comes from its flash ring after the expiry
        (late,) = await downlinks.settle("lamp", [slow.wire_id, never.wire_id])
        assert (late.id, late.state) == (slow.id, "confirmed")
        states = {d.id: d.state for d in await downlinks.list("lamp")}
        assert states[never.id] == "expired"  # never sent: the node cannot have applied it
        await downlinks.db.close()

    asyncio.run(body())


def test_unanswered_downlinks_go_out_until_they_expire(tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        queued = await downlinks.enqueue("n", {"reboot": True})
        short = await downlinks.enqueue("n", {"identify": 3}, ttl_s=5.0)
        await downlinks.take("n")
        clock.now = 1006.0
        # Past its lifetime a downlink is no longer handed out, even before the sweep runs.
        assert [d.id for d in await downlinks.take("n")] == [queued.id]
        expired = await downlinks.expire()
        assert [(d.id, d.state) for d in expired] == [(short.id, "expired")]
        assert await downlinks.confirm("n", [short.id]) == []  # a push answer: too late
        for t in (1020.0, 1040.0, 1059.0):  # every response until the end of its life
            clock.now = t
            assert [d.id for d in await downlinks.take("n")] == [queued.id]
        clock.now = 1061.0
        assert [d.id for d in await downlinks.expire()] == [queued.id]
        assert await downlinks.take("n") == []
        (row,) = [d for d in await downlinks.list("n") if d.id == queued.id]
        assert (row.state, row.attempts) == ("expired", 5)
        assert await downlinks.counts() == {
            "queued": 0,
            "sent": 0,
            "confirmed": 0,
            "refused": 0,
            "expired": 2,
        }
        # Finished downlinks are forgotten after a week.
        clock.now = 1061.0 + 8 * 86400
        await downlinks.expire()
        assert await downlinks.list() == []
        await downlinks.db.close()

    asyncio.run(body())


def test_queue_survives_restart(tmp_path: Path) -> None:
    async def body() -> Downlink:
        clock = Clock()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        queued = await downlinks.enqueue("n", {"interval_s": 600})
        await downlinks.db.close()
        downlinks = await open_downlinks(tmp_path / "g.db", clock)
        taken = await downlinks.take("n")
        nxt = await downlinks.enqueue("n", {"interval_s": 60})
        await downlinks.db.close()
        assert [(d.id, d.command, d.wire_id) for d in taken] == [
            (queued.id, {"interval_s": 600}, 1)
        ]
        assert nxt.wire_id == 2  # the counter is on disk too
        return queued

    asyncio.run(body())


# ---- the wire: encode_downlinks numbers the records, decode_uplink reads the acks -----------


def downlink(row: int, wire_id: int, command: dict[str, object]) -> Downlink:
    return Downlink(row, "n", command, "", 0.0, 60.0, "sent", 0.0, None, 1, wire_id)


def test_encode_downlinks_puts_the_wire_id_in_each_record(caplog: pytest.LogCaptureFixture) -> None:
    records = [
        downlink(41, 1, {"type": "config", "report_s": 600}),
        downlink(42, 300, {"type": "command", "command": "reboot", "id": 9}),  # id: ours
        downlink(43, 2, {"profile": "dim"}),  # no such record: left out, logged
        downlink(44, 3, {"type": "time", "unix_s": 5}),
    ]
    with caplog.at_level(logging.ERROR):
        payload, ids = encode_downlinks(records)
    assert ids == [41, 42, 44]  # the gateway's rows, for the link's bookkeeping
    assert payload == bytes.fromhex(
        "8401"
        "a30000010104190258"  # config, id 1, report_s 600
        "a300050119012c0400"  # command, id 300, reboot
        "a300060103 0405".replace(" ", "")  # time, id 3, unix_s 5
    )
    assert schema.decode_downlink(cbor2.loads(payload))[1] == {
        "type": "command",
        "command": "reboot",
        "id": 300,
    }
    assert "downlink 43 for n is not valid" in caplog.text
    # what does not fit waits for the next response
    payload, ids = encode_downlinks(records, max_bytes=2 + 9 + 9)
    assert ids == [41, 42] and len(payload) == 20


def ack_payload(*records: dict[str, object]) -> bytes:
    return bytes(cbor2.dumps(schema.encode_uplink(list(records)), canonical=True))


def test_decode_uplink_turns_acks_into_receipts_not_readings() -> None:
    payload = ack_payload(
        {"type": "ack", "confirm": [1, 4], "refused": [2], "reason": "wrong_kind", "seq": 10},
        {"type": "leak", "volume_l": 5, "flow_lh": 0, "seq": 11},
        {"type": "ack", "refused": [3, 4], "reason": "invalid", "seq": 12},
        {"type": "leak", "volume_l": 6, "flow_lh": 0},
    )
    uplink = decode_uplink("n", 7, payload, 100.0, link="lora")
    assert [r.reading_id for r in uplink.readings] == ["n:11", "n:7:3"]  # positions kept
    receipts = uplink.confirmed_downlinks
    assert isinstance(receipts, Receipts)
    # 4 was confirmed by one ack and refused by a later one: the refusal stands
    assert list(receipts) == [1]
    assert uplink.refused_downlinks == {2: "wrong_kind", 3: "invalid", 4: "invalid"}
    plain = decode_uplink(
        "n", 8, ack_payload({"type": "leak", "volume_l": 5, "flow_lh": 0}), 1.0, link="coap"
    )
    assert list(plain.confirmed_downlinks) == [] and plain.refused_downlinks == {}
    # merging (links that still confirm on their own) keeps the node's refusals
    merged = with_confirmations(uplink, [5, 2])
    assert (
        list(merged.confirmed_downlinks) == [1, 5] and merged.refused_downlinks[2] == "wrong_kind"
    )
    # the old inference is gone: nothing is confirmed for a node just because it spoke again
    deliveries = Deliveries()
    deliveries.delivered("n", [1, 2])
    assert deliveries.confirmed_by("n") == ()


def test_schema_errors_are_refused_as_schema_and_bad_cbor_as_malformed() -> None:
    with pytest.raises(UplinkRefused) as bad_cbor:
        decode_uplink("n", 1, b"\x82\x01\xff", 1.0, link="coap")
    assert bad_cbor.value.reason == "malformed" and bad_cbor.value.detail.startswith("cbor: ")
    bad_ack = bytes(cbor2.dumps([1, {0: 7, 5: [1]}]))  # refused without a reason
    with pytest.raises(UplinkRefused) as schema_error:
        decode_uplink("n", 1, bad_ack, 1.0, link="coap")
    assert schema_error.value.reason == "schema"
    assert (
        schema_error.value.detail == "schema: ack.reason: required with refused, and only with it"
    )


def test_the_pipeline_settles_acks_in_the_uplink_transaction(tmp_path: Path) -> None:
    async def body(agent: Agent, link: LoopbackLink, sink: MemorySink) -> None:
        good = await agent.downlinks.enqueue("l-2", {"type": "config", "report_s": 600})
        bad = await agent.downlinks.enqueue("l-2", {"type": "leak_config", "pulse_ml": 9})
        first = await link.uplink("l-2", [1])
        assert [(d.id, d.wire_id) for d in first] == [(good.id, 1), (bad.id, 2)]
        # an uplink without an ack confirms nothing: both go out again
        assert [d.attempts for d in await link.uplink("l-2", [2])] == [2, 2]
        # the ack settles them before the response is built: nothing left to send
        ack = Receipts([good.wire_id], {bad.wire_id: "wrong_kind"})
        assert await link.uplink("l-2", [3], confirmed=ack) == []
        listed = {d.id: (d.state, d.reason) for d in await agent.downlinks.list("l-2")}
        assert listed == {good.id: ("confirmed", ""), bad.id: ("refused", "wrong_kind")}
        assert sample(agent, "city_gateway_downlinks_total", state="refused") == 1
        assert sample(agent, "city_gateway_downlinks_total", state="confirmed") == 1
        # an uplink made of acks alone (no reading) is served like any other
        third = await agent.downlinks.enqueue("l-2", {"type": "command", "command": "identify"})
        assert [d.wire_id for d in await link.uplink("l-2")] == [3]
        assert await link.uplink("l-2", confirmed=Receipts([3])) == []
        assert (await agent.downlinks.list("l-2"))[0].state == "confirmed"
        assert third.wire_id == 3
        # and an ack that only refuses is heard too
        fourth = await agent.downlinks.enqueue("l-2", {"type": "command", "command": "wake"})
        assert [d.wire_id for d in await link.uplink("l-2", [4])] == [4]
        assert await link.uplink("l-2", [5], confirmed=Receipts([], {4: "failed"})) == []
        assert (await agent.downlinks.list("l-2"))[0] == replace(
            fourth, state="refused", reason="failed", sent_at=ANY, attempts=1
        )

    run_agent(tmp_path, body)


def test_an_uplink_carries_the_node_s_receipts_as_a_tuple() -> None:
    receipts = Receipts([3, 4], {5: "failed"})
    assert receipts == (3, 4) and receipts.refused == {5: "failed"}
    assert Receipts([], {5: "failed"}) and not Receipts([]) and Receipts([1])
    uplink = Uplink("n", "coap", 0.0, confirmed_downlinks=receipts)
    assert uplink.refused_downlinks == {5: "failed"}
    assert Uplink("n", "coap", 0.0, confirmed_downlinks=[1]).refused_downlinks == {}
    assert "refused={5: 'failed'}" in repr(receipts)

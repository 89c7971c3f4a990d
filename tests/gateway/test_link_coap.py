"""The CoAP/UDP link (gateway/links/coap.py) in a running gateway Agent on 127.0.0.1, against
nodes built on our protocol/ code over real UDP: under MicroPython (through the bridge) and
CPython for the exchanges, plain sockets for what no node would send.

What is checked: a protected uplink is committed before its 2.04 leaves and then forwarded;
replays, unknown kids, wrong keys, flipped bits, unprotected requests, non-CoAP datagrams,
oversized datagrams, bad CBOR and schema errors are refused, each counted under its reason and
nothing of them stored; a downlink rides in the response (exact bytes) and the next uplink
confirms it; a store that cannot commit answers 5.03; an orderly restart keeps the replay
window; a lamp's presence wakes its neighbour lamp (the firmware's own lamp server) in < 1 s.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import coap
from tests.gateway.fakes import eventually
from tests.gateway.link_support import GATEWAY_ID, SALT, LiveGateway, secret_of

LEAK = ("leak-01", b"\x11")
BIN = ("bin-02", b"\x12")
NODES = {"leak-01": ("leak", b"\x11"), "bin-02": ("binfill", b"\x12")}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    gw = LiveGateway(tmp_path, NODES, unregistered={"ghost-09": b"\x19"}).start()
    yield gw
    gw.close()


def udp_node(interp: Any, gw: LiveGateway, node: tuple[str, bytes], secret: bytes | None = None):
    peers = interp.module("tests.support.oscore_node")
    kid = node[1]
    return peers.UDPNode(gw.port, secret or secret_of(kid), kid, GATEWAY_ID, SALT)


def uplink(interp: Any, *records: dict[str, Any]) -> bytes:
    cbor, schema = interp.module("protocol.cbor"), interp.module("protocol.schema")
    return bytes(cbor.dumps(schema.encode_uplink(list(records))))


def raw(gw: LiveGateway, data: bytes, timeout: float = 2.0) -> coap.Message | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", gw.port))
        try:
            return coap.decode(s.recvfrom(2048)[0])
        except TimeoutError:
            return None


def test_uplink_is_committed_before_its_ack_then_forwarded(interp: Any, gateway: LiveGateway):
    node = udp_node(interp, gateway, LEAK)
    body = uplink(
        interp,
        {"type": "leak", "volume_l": 1234567, "flow_lh": 120, "seq": 41},
        {"type": "status", "uptime_s": 60, "boot_count": 3, "battery_mv": 3600, "seq": 42},
    )
    code, payload, echoed, sends = node.post("u", body)
    assert (code, payload, echoed, sends) == (coap.CHANGED, b"", False, 1)
    # The 2.04 came back: the readings are already in the database file, committed.
    stored = gateway.stored()
    assert set(stored) == {"leak-01:41", "leak-01:42"}
    assert stored["leak-01:41"]["data"] == {
        "type": "leak",
        "volume_l": 1234567,
        "flow_lh": 120,
        "seq": 41,
        "age_s": 0,
        "leak": "none",
        "probe_wet": False,
    }
    assert gateway.metrics.readings_in.labels("coap")._value.get() == 2
    gateway.call(eventually(lambda: len(gateway.sink.accepted) == 2))
    assert sorted(gateway.sink.ids()) == ["leak-01:41", "leak-01:42"]
    assert gateway.all_refusals() == {}
    state = gateway.call(gateway.agent.status.get("leak-01"))  # type: ignore[union-attr]
    assert state is not None and state.battery_mv == 3600 and state.link == "coap"


def test_replay_unknown_kid_wrong_key_and_flipped_bit_are_refused_and_counted(
    interp: Any, gateway: LiveGateway
) -> None:
    node = udp_node(interp, gateway, LEAK)
    assert node.post("u", uplink(interp, {"type": "leak", "volume_l": 1, "flow_lh": 0}))[0] == (
        coap.CHANGED
    )
    before = gateway.stored()

    # The same datagram from another source port: not CoAP deduplication, an OSCORE replay.
    answer = coap.decode(node.send_raw(node.sent[-1]))
    assert (answer.code, answer.payload) == (coap.UNAUTHORIZED, b"Replay detected")
    assert gateway.refusals("coap", "replay") == 1

    stranger = udp_node(interp, gateway, ("nobody", b"\x55"))
    answer = coap.decode(node.send_raw(stranger.protect("u", b"\x82\x01\xa0")))
    assert answer.code == coap.UNAUTHORIZED and answer.option(coap.OSCORE) is None
    assert gateway.refusals("coap", "unknown_kid") == 1

    wrong_key = udp_node(interp, gateway, LEAK, secret=bytes(16))
    answer = coap.decode(node.send_raw(wrong_key.protect("u", b"\x82\x01\xa0")))
    assert (answer.code, answer.payload) == (coap.BAD_REQUEST, b"Decryption failed")
    assert gateway.refusals("coap", "bad_tag") == 1

    frame = bytearray(
        node.protect("u", uplink(interp, {"type": "leak", "volume_l": 2, "flow_lh": 0}))
    )
    frame[-3] ^= 0x04
    answer = coap.decode(node.send_raw(bytes(frame)))
    assert (answer.code, answer.payload) == (coap.BAD_REQUEST, b"Decryption failed")
    assert gateway.refusals("coap", "bad_tag") == 2

    assert gateway.stored() == before  # nothing refused was stored
    assert gateway.all_refusals() == {
        ("coap", "replay"): 1,
        ("coap", "unknown_kid"): 1,
        ("coap", "bad_tag"): 2,
    }
    # ...and the node goes on: its next uplink is served.
    assert node.post("u", uplink(interp, {"type": "leak", "volume_l": 3, "flow_lh": 0}))[0] == (
        coap.CHANGED
    )


def test_bad_cbor_and_schema_errors_are_refused_with_their_reason(
    interp: Any, gateway: LiveGateway
) -> None:
    node = udp_node(interp, gateway, BIN)
    code, payload, _, _ = node.post("u", b"\x82\x01\xff")
    assert code == coap.BAD_REQUEST and payload.startswith(b"cbor: ")
    code, payload, _, _ = node.post("u", bytes.fromhex("8201a2000404181e"))  # no distance_mm
    assert (code, payload) == (
        coap.BAD_REQUEST,
        b"schema: binfill.distance_mm: missing required field (key 5)",
    )
    code, payload, _, _ = node.post("u", bytes.fromhex("8202a10004"))  # schema version 2
    assert (code, payload) == (
        coap.BAD_REQUEST,
        b"schema: version: unsupported 2 (this schema is 1)",
    )
    code, payload, _, _ = node.post("u", b"\x82\x01\xa3\x00\x04\x04\x18\x65\x05\x01")
    assert code == coap.BAD_REQUEST and b"fill_pct: 101 out of range 0..100" in payload
    code, payload, _, _ = node.post("x", b"")  # no such resource: answered, protected
    assert code == coap.NOT_FOUND
    # not CBOR is "malformed"; CBOR that is not a message of the schema is "schema"
    assert gateway.refusals("coap", "malformed") == 1
    assert gateway.refusals("coap", "schema") == 3
    assert gateway.stored() == {}


def test_what_no_node_would_send_is_refused_and_counted(gateway: LiveGateway) -> None:
    # An unprotected request for /u: aiocoap's wrapper would pass it through; we refuse it.
    plain = coap.Message(
        coap.CON, coap.POST, 0x1234, b"\x01", coap.uri_path_options("u"), b"\x82\x01\xa0"
    )
    answer = raw(gateway, plain.encode())
    assert answer is not None and answer.code == coap.UNAUTHORIZED
    assert answer.payload == b"OSCORE required"
    get = coap.Message(
        coap.CON, coap.GET, 0x1235, b"\x02", coap.uri_path_options(".well-known/core")
    )
    answer = raw(gateway, get.encode())
    assert answer is not None and answer.code == coap.UNAUTHORIZED
    assert gateway.refusals("coap", "unauthenticated") == 2
    # Not CoAP at all (version 0): dropped without an answer, counted.
    assert raw(gateway, b"\x00\x01garbage", timeout=0.5) is None
    gateway.call(eventually(lambda: gateway.refusals("coap", "malformed") == 1))
    # Larger than any CoAP message may be (RFC 7252 §4.6): dropped, counted.
    big = coap.Message(
        coap.CON, coap.POST, 0x1236, b"\x03", coap.uri_path_options("u"), bytes(1400)
    )
    assert raw(gateway, big.encode(), timeout=0.5) is None
    gateway.call(eventually(lambda: gateway.refusals("coap", "oversized") == 1))
    assert gateway.stored() == {}


def test_an_authenticated_node_missing_from_the_registry_is_refused(
    interp: Any, gateway: LiveGateway
) -> None:
    ghost = udp_node(interp, gateway, ("ghost-09", b"\x19"))
    code, payload, _, _ = ghost.post(
        "u", uplink(interp, {"type": "leak", "volume_l": 1, "flow_lh": 0})
    )
    assert (code, payload) == (coap.FORBIDDEN, b"unknown node")
    assert gateway.refusals("coap", "unknown_node") == 1
    assert gateway.agent is not None and gateway.agent.registry.unknown["ghost-09"].count == 1
    assert gateway.stored() == {}


def test_downlink_rides_in_the_response_until_the_node_acks_it_by_id(
    interp: Any, gateway: LiveGateway
) -> None:
    agent = gateway.agent
    assert agent is not None
    schema, cbor = interp.module("protocol.schema"), interp.module("protocol.cbor")
    node = udp_node(interp, gateway, LEAK)
    config = gateway.call(agent.downlinks.enqueue("leak-01", {"type": "config", "report_s": 600}))
    identify = gateway.call(
        agent.downlinks.enqueue(
            "leak-01", {"type": "command", "command": "identify", "duration_s": 5}
        )
    )
    code, payload, _, _ = node.post(
        "u", uplink(interp, {"type": "leak", "volume_l": 1, "flow_lh": 0, "seq": 1})
    )
    assert code == coap.CHANGED
    # [1, {0: 0, 1: 1, 4: 600}, {0: 5, 1: 2, 4: 1, 6: 5}]: both records, oldest first, each
    # with its wire id (key 1), canonical CBOR
    assert payload == bytes.fromhex("8301 a30000010104190258 a4000501020401 0605".replace(" ", ""))
    assert schema.decode_downlink(cbor.loads(payload)) == [
        {"type": "config", "report_s": 600, "id": 1},
        {"type": "command", "command": "identify", "duration_s": 5, "id": 2},
    ]
    assert gateway.downlink_states() == {config.id: "sent", identify.id: "sent"}
    # The next uplink says nothing of them (the response was lost, say): nothing is
    # confirmed, and both go out again.
    code, again, _, _ = node.post(
        "u", uplink(interp, {"type": "leak", "volume_l": 2, "flow_lh": 0, "seq": 2})
    )
    assert (code, again) == (coap.CHANGED, payload)
    assert gateway.downlink_states() == {config.id: "sent", identify.id: "sent"}
    # The node acks: config applied, identify refused (say it has no LED); ack first
    ack = {"type": "ack", "confirm": [1], "refused": [2], "reason": "unsupported", "seq": 3}
    code, payload, _, _ = node.post(
        "u", uplink(interp, ack, {"type": "leak", "volume_l": 3, "flow_lh": 0, "seq": 4})
    )
    assert (code, payload) == (coap.CHANGED, b"")
    assert gateway.downlink_states() == {config.id: "confirmed", identify.id: "refused"}
    listed = {d.id: d for d in gateway.call(agent.downlinks.list("leak-01"))}
    assert listed[identify.id].reason == "unsupported" and listed[config.id].attempts == 2
    # the ack is not a reading: only the three leak readings are stored
    assert sorted(gateway.stored()) == ["leak-01:1", "leak-01:2", "leak-01:4"]


def test_a_store_that_cannot_commit_answers_503_and_acknowledges_nothing(
    interp: Any, gateway: LiveGateway
) -> None:
    agent = gateway.agent
    assert agent is not None
    node = udp_node(interp, gateway, LEAK)
    gateway.call(agent.db.close())
    code, _, _, _ = node.post(
        "u", uplink(interp, {"type": "leak", "volume_l": 1, "flow_lh": 0, "seq": 5})
    )
    assert code == coap.SERVICE_UNAVAILABLE
    assert gateway.refusals("coap", "unavailable") == 1
    assert gateway.stored() == {}


def test_an_orderly_restart_writes_the_replay_window_back(interp: Any, tmp_path: Path) -> None:
    gw = LiveGateway(tmp_path, NODES).start()
    try:
        node = udp_node(interp, gw, LEAK)
        for i in range(3):
            assert (
                node.post("u", uplink(interp, {"type": "leak", "volume_l": i, "flow_lh": 0}))[0]
                == 68
            )
        gw.stop()
        sequence = json.loads(
            (gw.config.security.keys_dir / "leak-01" / "sequence.json").read_text()
        )
        assert sequence["received"] != "unknown"  # the window itself, not "lost it"
        gw.start()
        # An old message is a plain replay (no Echo round trip needed: the window survived)...
        answer = coap.decode(node.send_raw(node.sent[0]))
        assert (answer.code, answer.payload) == (coap.UNAUTHORIZED, b"Replay detected")
        # ...and a new one is served at once, without an Echo challenge.
        assert node.post("u", uplink(interp, {"type": "leak", "volume_l": 9, "flow_lh": 0})) == (
            coap.CHANGED,
            b"",
            False,
            1,
        )
        assert len(gw.stored()) == 4
    finally:
        gw.close()


def test_presence_wakes_the_neighbour_lamp_within_a_second(mpy: Any, tmp_path: Path) -> None:
    nodes = {"lamp-01": ("lighting", b"\x31"), "lamp-02": ("lighting", b"\x32")}
    config = {"lamp-01": {"neighbours": ["lamp-02"]}}
    gw = LiveGateway(tmp_path, nodes, node_config=config).start()
    peers = mpy.module("tests.gateway.lamp_peer")
    lamps = [
        peers.Lamp(gw.port, secret_of(kid), kid, GATEWAY_ID, SALT) for _, kid in nodes.values()
    ]
    try:
        # lamp-02 reports in, so the gateway knows where it listens
        status = uplink(mpy, {"type": "status", "uptime_s": 5, "boot_count": 1, "seq": 1})
        assert lamps[1].post("u", status) == (coap.CHANGED, b"")
        started = time.monotonic()
        presence = uplink(mpy, {"type": "event", "event": "presence", "count": 1, "seq": 7})
        assert lamps[0].post("u", presence) == (coap.CHANGED, b"")
        # lamp-02 has just booted: its first answer is an Echo challenge, which aiocoap's
        # client answers; then the firmware's downlink code hands the wake to the lamp.
        commands = lamps[1].serve(2000, 1)
        elapsed = time.monotonic() - started
        assert commands == [{"type": "command", "command": "wake", "id": 1}]
        assert elapsed < 1.0, f"neighbour lit after {elapsed:.2f} s"
        assert lamps[1].server.fresh and lamps[1].server.served == 1  # after one Echo round
        # the firmware also queued its ack of wire id 1, first in line for its next uplink
        assert lamps[1].node.queued == [({"type": "ack", "confirm": [1]}, True)]
        print(f"neighbour lamp woken {elapsed * 1000:.0f} ms after the presence uplink left")
        agent = gw.agent
        assert agent is not None
        gw.call(eventually(lambda: list(gw.downlink_states().values()) == ["confirmed"]))
        (wake,) = gw.call(agent.downlinks.list("lamp-02"))
        assert wake.origin == "presence:lamp-01" and wake.command["command"] == "wake"
    finally:
        for lamp in lamps:
            lamp.close()
        gw.close()


def test_a_node_provisioned_while_running_is_served_at_once(interp: Any, gateway: LiveGateway):
    # The provisioning tool writes the keys and the registry entry of a new node while the
    # gateway runs; its first uplink is served without a restart.
    from gateway import registry
    from gateway.registry import Node
    from gateway.security import NodeKeys, write_node_context
    from gateway.store import connect

    kid = b"\x21"
    keys = NodeKeys(kid, secret_of(kid), SALT)
    write_node_context(gateway.config.security.keys_dir, "spot-21", keys, GATEWAY_ID)
    conn = connect(gateway.config.database_path)
    registry.add_node(conn, Node("spot-21", "occupancy", "coap"))
    conn.close()
    agent = gateway.agent
    assert agent is not None
    gateway.call(eventually(lambda: agent.registry.get("spot-21") is not None))
    node = udp_node(interp, gateway, ("spot-21", kid))
    code, _, _, _ = node.post("u", uplink(interp, {"type": "occupancy", "state": "free", "seq": 1}))
    assert code == coap.CHANGED
    assert set(gateway.stored()) == {"spot-21:1"}
    assert gateway.all_refusals() == {}

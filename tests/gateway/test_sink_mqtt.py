"""The MQTT sink against a real mosquitto on 127.0.0.1 (started by the test)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest

from gateway.config import from_mapping
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.entities import reading_json
from gateway.sinks.mqtt import MQTTAuthError, MQTTSink, from_config
from tests.gateway.conftest import SITE, free_port, make_reading, sample_readings, send_all


def run(coro):
    return asyncio.run(coro)


def sink_for(broker, **kwargs):
    kwargs.setdefault("site", SITE)
    kwargs.setdefault("connect_timeout", 3.0)
    kwargs.setdefault("ack_timeout", 3.0)
    return MQTTSink("127.0.0.1", broker.port, **kwargs)


def test_subscriber_receives_exactly_the_payloads(mosquitto, subscribe):
    sub = subscribe(mosquitto, topic="city/#")
    readings = sample_readings()
    (result,) = run(send_all(sink_for(mosquitto), readings))
    assert result.delivered == {r.reading_id for r in readings}
    assert result.rejected == {}
    got = sub.wait_for(len(readings))
    expected = [(f"city/{SITE}/{r.kind}/{r.node_id}", reading_json(r, SITE)) for r in readings]
    assert got == expected  # same bytes, same order, nothing more
    time.sleep(0.2)
    assert len(sub.messages) == len(readings)
    # One exact document, written out, so the wire format cannot drift unnoticed.
    assert got[0] == (
        "city/riverside/leak/meter-01",
        b'{"alarm":false,"data":{"age_s":0,"flow_lh":120,"leak":"none","night_flow_lh":3,'
        b'"probe_wet":false,"type":"leak","volume_l":1234567},"id":"meter-01:0","kind":"leak",'
        b'"node":"meter-01","observedAt":"2026-01-01T00:00:00.000Z",'
        b'"receivedAt":"2026-01-01T00:00:00.000Z","site":"riverside"}',
    )


def test_topic_prefix_and_large_batches_in_order(mosquitto, subscribe):
    sub = subscribe(mosquitto, topic="muni/#")
    readings = [
        make_reading(f"meter-{i % 7:02d}", {"type": "leak", "volume_l": i, "flow_lh": 1}, seq=i)
        for i in range(1200)
    ]
    batches = [readings[i : i + 400] for i in range(0, 1200, 400)]
    results = run(send_all(sink_for(mosquitto, topic_prefix="muni", max_inflight=50), *batches))
    assert set().union(*(r.delivered for r in results)) == {r.reading_id for r in readings}
    got = sub.wait_for(1200)
    assert [payload for _, payload in got] == [reading_json(r, SITE) for r in readings]
    assert {topic.split("/")[0] for topic, _ in got} == {"muni"}


def test_password_and_tls(mosquitto_factory, subscribe):
    broker = mosquitto_factory(password=("gateway", "s3cret pass"), tls=True)
    sub = subscribe(broker, topic="city/#", credentials=("gateway", "s3cret pass"))
    readings = sample_readings()[:5]
    sink = sink_for(broker, username="gateway", password="s3cret pass", ca_file=str(broker.tls.ca))
    assert sink.endpoint.startswith("mqtts://")
    (result,) = run(send_all(sink, readings))
    assert result.delivered == {r.reading_id for r in readings}
    assert [p for _, p in sub.wait_for(5)] == [reading_json(r, SITE) for r in readings]


def test_wrong_password_is_a_clear_error(mosquitto_factory, caplog):
    broker = mosquitto_factory(password=("gateway", "right"))
    sink = sink_for(broker, username="gateway", password="wrong")
    run(sink.start())  # not fatal: the gateway keeps taking readings from its nodes
    assert "refused the connection (not authorized)" in caplog.text
    assert "check the username and password" in caplog.text
    # Sending fails with the same words, as a SinkUnavailable: the readings stay queued.
    with pytest.raises(MQTTAuthError, match=r"refused the connection.*username and password"):
        run(send_all(sink, sample_readings()[:1]))
    with pytest.raises(MQTTAuthError):
        run(send_all(sink_for(broker), sample_readings()[:1]))  # anonymous


def test_topic_refused_by_the_broker_acl(mosquitto_factory, subscribe):
    """MQTT 5 PUBACK reason 0x87: with MQTT 3.1.1 the broker would ack and drop silently."""
    broker = mosquitto_factory(
        password=("gateway", "pw"),
        acl=["user gateway", "topic write city/elsewhere/#", "topic read city/#"],
    )
    sub = subscribe(broker, topic="city/#", credentials=("gateway", "pw"))
    sink = sink_for(broker, username="gateway", password="pw")
    with pytest.raises(MQTTAuthError, match="does not authorize publishing under city/riverside/"):
        run(send_all(sink, sample_readings()[:3]))
    time.sleep(0.2)
    assert sub.messages == []
    allowed = sink_for(broker, username="gateway", password="pw", site="elsewhere")
    (result,) = run(send_all(allowed, sample_readings()[:3]))
    assert len(result.delivered) == 3
    assert len(sub.wait_for(3)) == 3


def test_tls_with_an_unknown_ca_is_refused(mosquitto_factory, tmp_path):
    broker = mosquitto_factory(tls=True)
    other = mosquitto_factory(tls=True)  # a different CA: not the one that signed `broker`
    sink = sink_for(broker, ca_file=str(other.tls.ca))
    with pytest.raises(SinkUnavailable, match="certificate verify failed"):
        run(send_all(sink, sample_readings()[:1]))


def test_broker_down_at_start_is_not_fatal(caplog):
    caplog.set_level(logging.WARNING)
    sink = MQTTSink("127.0.0.1", free_port(), site=SITE, connect_timeout=1.0)  # nobody there
    run(sink.start())
    assert "will retry" in caplog.text
    with pytest.raises(SinkUnavailable, match=r"cannot reach mqtt://127\.0\.0\.1"):
        run(send_all(sink, sample_readings()[:1]))


def test_broker_stopped_midway_then_recovery(mosquitto, subscribe):
    readings = [
        make_reading("spot-07", {"type": "occupancy", "state": "free", "changes": i}, seq=i)
        for i in range(30)
    ]
    sink = sink_for(mosquitto)
    before = subscribe(mosquitto, topic="city/#")
    subscribers = []

    async def scenario():
        await sink.start()
        first = await sink.send(readings[:10])
        mosquitto.stop()
        await asyncio.sleep(0.1)
        outages = []
        for _ in range(3):  # every attempt during the outage fails the same, quickly
            started = time.monotonic()
            with pytest.raises(SinkUnavailable):
                await sink.send(readings[10:20])
            outages.append(time.monotonic() - started)
        mosquitto.start()
        subscribers.append(subscribe(mosquitto, topic="city/#"))
        second = await sink.send(readings[10:20])
        third = await sink.send(readings[20:])
        await sink.close()
        return first, outages, second, third

    first, outages, second, third = run(scenario())
    assert first.delivered == {r.reading_id for r in readings[:10]}
    assert max(outages) < 3.0
    assert second.delivered == {r.reading_id for r in readings[10:20]}
    assert third.delivered == {r.reading_id for r in readings[20:]}
    assert [p for _, p in before.messages] == [reading_json(r, SITE) for r in readings[:10]]
    after = subscribers[0].wait_for(20)
    assert [p for _, p in after] == [reading_json(r, SITE) for r in readings[10:]]


def test_connection_lost_with_messages_in_flight(mosquitto):
    """Broker killed while PUBACKs are outstanding: nothing unacked is reported delivered."""
    readings = [
        make_reading("meter-01", {"type": "leak", "volume_l": i, "flow_lh": 0}, seq=i)
        for i in range(3000)
    ]
    sink = sink_for(mosquitto, max_inflight=10)

    async def scenario():
        await sink.start()
        task = asyncio.create_task(sink.send(readings))
        await asyncio.sleep(0.05)
        mosquitto.proc.kill()  # SIGKILL: no goodbye, the socket just dies
        try:
            return await task
        except SinkUnavailable as exc:
            return exc
        finally:
            await sink.close()

    outcome = run(scenario())
    if isinstance(outcome, SinkUnavailable):
        assert "lost" in str(outcome) or "PUBACK" in str(outcome)
    else:
        # Those acked before the kill are delivered; the rest are not, and none is rejected.
        assert 0 < len(outcome.delivered) < len(readings)
        assert outcome.rejected == {}
        ids = [r.reading_id for r in readings]
        delivered_positions = sorted(ids.index(i) for i in outcome.delivered)
        assert delivered_positions == list(range(len(outcome.delivered)))  # an acked prefix


def test_unmappable_reading_is_rejected_not_sent(mosquitto, subscribe):
    sub = subscribe(mosquitto, topic="city/#")
    good = sample_readings()[:2]
    bad = dataclasses.replace(good[0], reading_id="bad:1", node_id="meter/01")
    (result,) = run(send_all(sink_for(mosquitto), [good[0], bad, good[1]]))
    assert result.delivered == {good[0].reading_id, good[1].reading_id}
    assert list(result.rejected) == ["bad:1"]
    assert len(sub.wait_for(2)) == 2


def test_from_config_reads_the_password_file(mosquitto_factory, subscribe, tmp_path):
    broker = mosquitto_factory(password=("gw", "from a file"), tls=True)
    (tmp_path / "mqtt.pass").write_text("from a file\n")
    config = from_mapping(
        {
            "site_id": SITE,
            "sinks": {
                "mqtt": {
                    "enabled": True,
                    "port": broker.port,
                    "tls": True,
                    "ca_file": str(broker.tls.ca),
                    "username": "gw",
                    "password_file": "mqtt.pass",
                }
            },
        },
        source=tmp_path / "gateway.toml",
    )
    sink = from_config(config)
    assert (sink.name, sink.client_id, sink.password) == (
        "mqtt",
        f"city-gw-{SITE}",
        "from a file",
    )
    sub = subscribe(broker, topic="city/#", credentials=("gw", "from a file"))
    (result,) = run(send_all(sink, sample_readings()[:2]))
    assert len(result.delivered) == 2
    assert len(sub.wait_for(2)) == 2

"""The NGSI-LD sink against the validating test broker on 127.0.0.1.

The broker (tests/gateway/ngsi_ld_broker.py) checks every entity against the official Smart
Data Models schema and context, and answers 201/204/207 as an NGSI-LD broker does; failures
are injected per request or per entity.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from gateway.config import from_mapping
from gateway.registry import Node
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.ngsild import NGSILDSink, from_config
from tests.gateway.conftest import (
    NODES,
    SITE,
    free_port,
    make_reading,
    node_facts,
    sample_readings,
    send_all,
)
from tests.gateway.ngsi_ld_broker import NGSILDBroker


def run(coro):
    return asyncio.run(coro)


def sink_for(broker, **kwargs):
    kwargs.setdefault("node_facts", node_facts)
    kwargs.setdefault("timeout", 5.0)
    return NGSILDSink(broker.url, SITE, **kwargs)


def _leaks(count, nodes=1, start=0):
    return [
        make_reading(
            f"meter-{i % nodes:04d}", {"type": "leak", "volume_l": i, "flow_lh": i % 5}, seq=i
        )
        for i in range(start, start + count)
    ]


def test_every_kind_is_accepted_and_valid(ngsi_ld_broker):
    readings = sample_readings()
    (result,) = run(send_all(sink_for(ngsi_ld_broker, tenant="city"), readings))
    assert ngsi_ld_broker.invalid == []
    assert result.rejected == {}
    assert result.delivered == {r.reading_id for r in readings}
    assert len(ngsi_ld_broker.received) == 47  # every entity of every reading, each validated
    for request in ngsi_ld_broker.requests:
        assert request.options == "update"
        assert request.content_type == "application/ld+json"
        assert request.tenant == "city"
        assert len(set(request.entity_ids)) == len(request.entity_ids)
    # The broker's merged state: the ParkingSpot ended at the last event (spot_change to free).
    spot = ngsi_ld_broker.entities["city"]["urn:ngsi-ld:ParkingSpot:riverside:spot-07"]
    assert spot["status"]["value"] == "free"
    assert spot["refParkingSite"]["object"] == "urn:ngsi-ld:OnStreetParking:riverside"


def test_created_then_updated(ngsi_ld_broker):
    readings = _leaks(4, nodes=2)
    sink = sink_for(ngsi_ld_broker)
    first, second = run(send_all(sink, readings[:2], readings[2:]))
    assert [r.status for r in ngsi_ld_broker.requests] == [201, 204]
    assert first.delivered | second.delivered == {r.reading_id for r in readings}
    state = ngsi_ld_broker.entities[None]
    assert (
        state["urn:ngsi-ld:WaterConsumptionObserved:riverside:meter-0001"]["waterConsumption"][
            "value"
        ]
        == 3
    )
    assert ngsi_ld_broker.requests[0].tenant is None  # no tenant configured: no header


def test_batches_split_at_1000_entities_and_by_entity_id(ngsi_ld_broker):
    # 700 readings of 350 meters: 3 entities each (asset, flow, probe) = 2,100 entities; every
    # meter twice, so no request may hold a meter's entities twice.
    readings = _leaks(700, nodes=350)
    sink = sink_for(ngsi_ld_broker)
    (result,) = run(send_all(sink, readings))
    assert result.delivered == {r.reading_id for r in readings}
    sizes = [len(r.entity_ids) for r in ngsi_ld_broker.requests]
    assert max(sizes) <= 1000
    assert sum(sizes) == 2100
    assert len(sizes) == 3  # packed: 999 + 999 + 102, not one request per reading
    for request in ngsi_ld_broker.requests:
        assert len(set(request.entity_ids)) == len(request.entity_ids)
    # Per node, the broker saw the readings in the order they were taken.
    volumes = {}
    for entity in ngsi_ld_broker.received:
        if entity["type"] == "WaterConsumptionObserved":
            volumes.setdefault(entity["id"], []).append(entity["waterConsumption"]["value"])
    assert all(v == sorted(v) and len(v) == 2 for v in volumes.values())
    assert ngsi_ld_broker.invalid == []


def test_successive_readings_of_one_node_go_in_successive_requests(ngsi_ld_broker):
    readings = _leaks(5, nodes=1)
    (result,) = run(send_all(sink_for(ngsi_ld_broker), readings))
    assert result.delivered == {r.reading_id for r in readings}
    assert len(ngsi_ld_broker.requests) == 5
    seen = [
        e["waterConsumption"]["value"]
        for e in ngsi_ld_broker.received
        if e["type"] == "WaterConsumptionObserved"
    ]
    assert seen == [0, 1, 2, 3, 4]


def test_207_entity_errors_map_back_to_readings(ngsi_ld_broker):
    readings = _leaks(6, nodes=3)  # meters 0,1,2 then 0,1,2 again
    bad = "urn:ngsi-ld:WaterConsumptionObserved:riverside:meter-0000"
    busy = "urn:ngsi-ld:DeviceMeasurement:riverside:meter-0001:waterFlow"
    ngsi_ld_broker.fail_entity(bad, 400)  # poison: rejected, parked
    ngsi_ld_broker.fail_entity(busy, 503)  # transient: retried
    sink = sink_for(ngsi_ld_broker)
    (result,) = run(send_all(sink, readings))
    assert ngsi_ld_broker.requests[0].status == 207
    assert set(result.rejected) == {"meter-0000:0"}
    assert "400" in result.rejected["meter-0000:0"]
    # meter-0001's first reading failed transiently, so its second one waits behind it: the
    # broker must never see reading 4 of meter-0001 before reading 1.
    assert result.delivered == {"meter-0002:2", "meter-0000:3", "meter-0002:5"}
    retry = [r for r in readings if r.reading_id not in result.delivered | set(result.rejected)]
    assert [r.reading_id for r in retry] == ["meter-0001:1", "meter-0001:4"]
    (again,) = run(send_all(sink_for(ngsi_ld_broker), retry))
    assert again.delivered == {"meter-0001:1", "meter-0001:4"}


def test_whole_request_refused_isolates_the_poison(ngsi_ld_broker):
    readings = _leaks(4, nodes=4)
    ngsi_ld_broker.fail_requests(400)  # the first request, with everything in it, is refused
    (result,) = run(send_all(sink_for(ngsi_ld_broker), readings))
    assert result.delivered == {r.reading_id for r in readings}
    assert [len(r.entity_ids) for r in ngsi_ld_broker.requests[1:]] == [3, 3, 3, 3]
    # A genuinely bad entity (fails the schema at the broker) is the only one rejected.
    bad = dataclasses.replace(
        make_reading("bin-12", {"type": "binfill", "fill_pct": 50, "distance_mm": 1}),
        reading_id="bin-12:far",
        node_id="bin-far",  # no location known: WasteContainer requires one
    )
    (result,) = run(send_all(sink_for(ngsi_ld_broker), [*_leaks(2, 2, start=10), bad]))
    assert list(result.rejected) == ["bin-12:far"]
    assert "location" in result.rejected["bin-12:far"]
    assert len(result.delivered) == 2


@pytest.mark.parametrize("status", [500, 503, 429, 404])
def test_transient_answers_raise_sink_unavailable(ngsi_ld_broker, status):
    ngsi_ld_broker.fail_requests(status)
    sink = sink_for(ngsi_ld_broker)
    with pytest.raises(SinkUnavailable, match=f"answered {status}"):
        run(send_all(sink, _leaks(3, 3)))
    (result,) = run(send_all(sink_for(ngsi_ld_broker), _leaks(3, 3)))
    assert len(result.delivered) == 3


def test_partial_success_across_requests_is_reported(ngsi_ld_broker):
    readings = _leaks(3, nodes=1)  # three requests, one after the other
    ngsi_ld_broker.fail_requests(503, after=1)  # the first goes through, the second fails
    (result,) = run(send_all(sink_for(ngsi_ld_broker), readings))
    assert result.delivered == {"meter-0000:0"}  # not raised: one reading did get through
    assert result.rejected == {}
    assert [r.status for r in ngsi_ld_broker.requests] == [201, 503]  # the third waited


def test_broker_down_then_back(ngsi_ld_broker):
    sink = sink_for(ngsi_ld_broker)
    readings = _leaks(4, 2)

    async def scenario():
        await sink.start()
        ngsi_ld_broker.stop()
        with pytest.raises(SinkUnavailable, match="unreachable"):
            await sink.send(readings)
        ngsi_ld_broker.start()
        result = await sink.send(readings)
        await sink.close()
        return result

    assert run(scenario()).delivered == {r.reading_id for r in readings}


def test_nobody_listening():
    sink = NGSILDSink(f"http://127.0.0.1:{free_port()}", SITE, timeout=2.0)
    with pytest.raises(SinkUnavailable, match="unreachable"):
        run(send_all(sink, _leaks(1)))


def test_bearer_token_and_refusal():
    broker = NGSILDBroker(token="t0ken").start()
    try:
        with pytest.raises(SinkUnavailable, match="refused our credentials"):
            run(send_all(sink_for(broker, token="wrong"), _leaks(1)))
        (result,) = run(send_all(sink_for(broker, token="t0ken"), _leaks(1)))
        assert result.delivered == {"meter-0000:0"}
        assert broker.requests[-1].authorization == "Bearer t0ken"
    finally:
        broker.stop()


def test_unmappable_and_local_only_readings(ngsi_ld_broker):
    presence = make_reading("lamp-03", {"type": "event", "event": "presence", "count": 3}, seq=1)
    weird = dataclasses.replace(presence, reading_id="lamp-03:2", data={"type": "weather"})
    (result,) = run(send_all(sink_for(ngsi_ld_broker), [presence, weird]))
    assert result.delivered == {"lamp-03:1"}  # nothing of it goes upstream: done
    assert list(result.rejected) == ["lamp-03:2"]
    assert ngsi_ld_broker.requests == []


def test_from_config_with_the_registry(ngsi_ld_broker, tmp_path):
    config = from_mapping(
        {
            "site_id": SITE,
            "sinks": {
                "ngsi_ld": {
                    "enabled": True,
                    "url": ngsi_ld_broker.url + "/",
                    "tenant": "lyon",
                    "max_batch": 4,
                }
            },
        },
        source=tmp_path / "gateway.toml",
    )

    class Registry:  # what gateway.registry.Registry.get returns, for two nodes
        def get(self, node_id):
            kind, (lon, lat) = NODES[node_id]
            return Node(node_id, kind, "coap", location=f"{lat},{lon}")

    sink = from_config(config, Registry())
    assert (sink.name, sink.tenant, sink.max_entities) == ("ngsi_ld", "lyon", 4)
    readings = [r for r in sample_readings() if r.node_id in ("spot-07", "bin-12")]
    (result,) = run(send_all(sink, readings))
    assert result.delivered == {r.reading_id for r in readings}
    assert ngsi_ld_broker.invalid == []
    assert max(len(r.entity_ids) for r in ngsi_ld_broker.requests) <= 4
    spot = ngsi_ld_broker.entities["lyon"]["urn:ngsi-ld:ParkingSpot:riverside:spot-07"]
    assert spot["location"]["value"]["coordinates"] == [4.8361, 45.7652]
    # Without the registry, entities go without a location: this strict broker refuses the
    # models that require one, a real broker would merge them into what it has.
    plain = from_config(config)
    assert "location" not in plain.plan(readings[:1])[0][0]

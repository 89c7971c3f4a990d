"""The local JSON-lines spool: durable before delivered, rotated by size, safe after a crash."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os

import pytest

from gateway.config import from_mapping
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.entities import reading_json
from gateway.sinks.spool import CURRENT, SpoolSink, from_config
from tests.gateway.conftest import SITE, make_reading, sample_readings


def run(coro):
    return asyncio.run(coro)


async def _send_all(sink, *batches):
    await sink.start()
    results = [await sink.send(batch) for batch in batches]
    await sink.close()
    return results


def lines_of(directory):
    files = [*sorted(directory.glob("readings-*.jsonl")), directory / CURRENT]
    return [line for f in files if f.exists() for line in f.read_bytes().splitlines()]


def test_one_line_per_reading_with_its_id(tmp_path):
    readings = sample_readings()
    sink = SpoolSink(tmp_path, SITE)
    (result,) = run(_send_all(sink, readings))
    assert result.delivered == {r.reading_id for r in readings}
    assert result.rejected == {}
    lines = lines_of(tmp_path)
    assert lines == [reading_json(r, SITE) for r in readings]
    assert [json.loads(line)["id"] for line in lines] == [r.reading_id for r in readings]


def test_fsync_happens_before_delivery_is_reported(tmp_path, monkeypatch):
    events = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        events.append(("fsync", os.fstat(fd).st_size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    sink = SpoolSink(tmp_path, SITE)

    async def scenario():
        await sink.start()
        events.clear()
        batch = sample_readings()[:3]
        result = await sink.send(batch)
        events.append(("delivered", len(result.delivered)))
        await sink.close()

    run(scenario())
    size = (tmp_path / CURRENT).stat().st_size
    assert ("fsync", size) in events  # the file fsync'd at its full size ...
    assert events.index(("fsync", size)) < events.index(("delivered", 3))  # ... before the report


def test_rotation_by_size_keeps_order_and_every_line(tmp_path):
    readings = [make_reading("meter-01", _leak(i), seq=i) for i in range(60)]
    line_size = len(reading_json(readings[0], SITE)) + 1
    sink = SpoolSink(tmp_path, SITE, rotate_bytes=line_size * 10)
    run(_send_all(sink, *[readings[i : i + 4] for i in range(0, 60, 4)]))
    rotated = sorted(tmp_path.glob("readings-*.jsonl"))
    assert [p.name for p in rotated][:2] == ["readings-00000001.jsonl", "readings-00000002.jsonl"]
    assert len(rotated) >= 5
    for path in rotated:
        assert path.stat().st_size <= line_size * 10  # batches never straddle a rotation
    assert [json.loads(line)["id"] for line in lines_of(tmp_path)] == [
        r.reading_id for r in readings
    ]
    # A restarted sink continues the numbering instead of overwriting a rotated file.
    sink = SpoolSink(tmp_path, SITE, rotate_bytes=line_size * 10)
    more = [make_reading("meter-01", _leak(i), seq=i) for i in range(60, 80)]
    run(_send_all(sink, *[more[i : i + 4] for i in range(0, 20, 4)]))
    after = sorted(tmp_path.glob("readings-*.jsonl"))
    assert after[: len(rotated)] == rotated
    assert len(lines_of(tmp_path)) == 80


def test_keep_files_deletes_the_oldest(tmp_path):
    readings = [make_reading("meter-01", _leak(i), seq=i) for i in range(40)]
    line_size = len(reading_json(readings[0], SITE)) + 1
    sink = SpoolSink(tmp_path, SITE, rotate_bytes=line_size * 2, keep_files=3)
    run(_send_all(sink, *[readings[i : i + 2] for i in range(0, 40, 2)]))
    rotated = sorted(tmp_path.glob("readings-*.jsonl"))
    assert len(rotated) == 3
    assert rotated[-1].name == "readings-00000019.jsonl"  # the newest ones are kept


def test_a_torn_last_line_is_cut_on_start(tmp_path):
    readings = sample_readings()[:2]
    run(_send_all(SpoolSink(tmp_path, SITE), readings))
    with (tmp_path / CURRENT).open("ab") as f:
        f.write(b'{"alarm":false,"data":{"ty')  # a crash in the middle of a write
    run(_send_all(SpoolSink(tmp_path, SITE), sample_readings()[2:4]))
    assert lines_of(tmp_path) == [reading_json(r, SITE) for r in sample_readings()[:4]]


def test_a_failed_write_leaves_nothing_and_raises_sink_unavailable(tmp_path, monkeypatch):
    sink = SpoolSink(tmp_path, SITE)
    run(_send_all(sink, sample_readings()[:2]))
    before = (tmp_path / CURRENT).read_bytes()
    real_write = os.write

    def disk_full_midway(fd, data):
        real_write(fd, bytes(data)[:10])  # part of the batch reaches the file ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    sink = SpoolSink(tmp_path, SITE)
    run(sink.start())
    monkeypatch.setattr(os, "write", disk_full_midway)
    with pytest.raises(SinkUnavailable, match="No space left"):
        run(sink.send(sample_readings()[2:4]))
    monkeypatch.setattr(os, "write", real_write)
    assert (tmp_path / CURRENT).read_bytes() == before
    result = run(sink.send(sample_readings()[2:4]))  # the retry succeeds once there is room
    run(sink.close())
    assert result.delivered == {r.reading_id for r in sample_readings()[2:4]}
    assert len(lines_of(tmp_path)) == 4


def test_unserialisable_reading_is_rejected_alone(tmp_path):
    good = sample_readings()[:2]
    bad = dataclasses.replace(make_reading("meter-01", _leak(1), seq=99), data={"raw": b"\x01"})
    (result,) = run(_send_all(SpoolSink(tmp_path, SITE), [good[0], bad, good[1]]))
    assert result.delivered == {good[0].reading_id, good[1].reading_id}
    assert list(result.rejected) == [bad.reading_id]
    assert len(lines_of(tmp_path)) == 2


def _leak(i):
    return {"type": "leak", "volume_l": 1000 + i, "flow_lh": i % 7}


def test_from_config(tmp_path):
    config = from_mapping(
        {"site_id": SITE, "data_dir": str(tmp_path), "sinks": {"spool": {"keep_files": 2}}},
        source=tmp_path / "gateway.toml",
    )
    sink = from_config(config)
    assert (sink.name, sink.directory, sink.keep_files) == ("spool", tmp_path / "spool", 2)
    (result,) = run(_send_all(sink, sample_readings()[:2]))
    assert len(result.delivered) == 2
    assert len(lines_of(tmp_path / "spool")) == 2

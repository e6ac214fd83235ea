"""Event streams and consumer groups on a real Redis, including a restart with AOF on."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

import prefect_memory as pm
from prefect_memory.analytics import Consumer, EventStream, RedisLink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import RedisServer


def test_events_round_trip_with_their_types(link: RedisLink) -> None:
    stream = EventStream(link, "events")
    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    first = stream.add({"type": "click", "at": when, "value": 1.5, "tags": ["a"]})
    ids = stream.add_many([{"type": "view", "n": i} for i in range(3)])
    assert len(ids) == 3 and ids[0] > first
    entries = stream.read()
    assert entries[0] == (first, {"type": "click", "at": when, "value": 1.5, "tags": ["a"]})
    assert [e["n"] for _, e in stream.read(after=first)] == [0, 1, 2]
    assert [e["n"] for _, e in stream.read(after=first, count=2)] == [0, 1]
    assert len(stream) == 4


def test_frames_are_validated_by_the_events_model(link: RedisLink) -> None:
    from prefect_memory.tabular import EventsModel

    stream = EventStream(link, "frames", schema=EventsModel)
    frame = pd.DataFrame({"timestamp": ["2024-05-01T12:00:00+02:00"], "type": ["click"],
                          "value": [2.0], "labels": ['{"page": "home"}']})  # fmt: skip
    stream.add_many(frame)
    back = stream.read_frame()
    assert back["timestamp"].iloc[0] == pd.Timestamp("2024-05-01T10:00:00Z")
    assert back.index.name == "id" and back["type"].tolist() == ["click"]
    bad = pd.DataFrame({"timestamp": ["yesterday"], "type": [""], "value": ["x"]})
    with pytest.raises(pm.ValidationError) as info:
        stream.add_many(bad)
    assert "timestamp" in str(info.value) and "type" in str(info.value)
    assert len(stream) == 1


@pytest.mark.parametrize("approximate", [True, False])
def test_maxlen_trimming(link: RedisLink, approximate: bool) -> None:
    stream = EventStream(link, f"trim-{approximate}", max_length=100, approximate=approximate)
    stream.add_many([{"i": i} for i in range(1000)])
    kept = len(stream)
    if approximate:  # whole radix-tree nodes (100 entries each by default) go at once
        assert 100 <= kept < 1000
    else:
        assert kept == 100
    assert stream.read()[-1][1] == {"i": 999}


def test_minid_trimming_keeps_the_last_max_age_seconds(link: RedisLink) -> None:
    now = [1_000_000.0]
    stream = EventStream(link, "age", trim="MINID", max_age=60, approximate=False,
                         clock=lambda: now[0])  # fmt: skip
    for second in range(0, 200, 10):
        stream.add({"s": second}, id=f"{int((1_000_000 - 200 + second) * 1000)}-0")
    assert [e["s"] for _, e in stream.read()] == list(range(140, 200, 10))
    with pytest.raises(pm.ConfigError, match="max_age"):
        EventStream(link, "x", trim="MINID")


def test_consumer_groups_deliver_once_and_redeliver_unacked(link: RedisLink) -> None:
    stream = EventStream(link, "work")
    stream.add_many([{"job": i} for i in range(10)])
    a = stream.consumer("workers", "a")
    b = stream.consumer("workers", "b")
    got_a = a.read(count=4)
    got_b = b.read(count=4)
    assert [e["job"] for _, e in got_a + got_b] == list(range(8))  # split, no overlap
    a.ack(got_a[:2])
    assert a.pending() == 6
    restarted = Consumer(stream, "workers", "a")  # a crashed: its unacked come first
    redelivered = restarted.read()
    assert [e["job"] for _, e in redelivered] == [2, 3]
    fresh = restarted.read()
    assert [e["job"] for _, e in fresh] == [8, 9]
    assert restarted.ack(redelivered + fresh) == 4
    taken = restarted.claim(min_idle=0)  # b died: take its events over
    assert [e["job"] for _, e in taken] == [4, 5, 6, 7]
    assert restarted.ack([i for i, _ in taken]) == 4
    assert [e["job"] for _, e in Consumer(stream, "other")] == list(range(10))


def test_pending_events_trimmed_away_are_counted_as_lost(link: RedisLink) -> None:
    stream = EventStream(link, "lossy", max_length=5, approximate=False)
    stream.add_many([{"i": i} for i in range(5)])
    consumer = stream.consumer("g", "c")
    assert len(consumer.read(count=5)) == 5  # delivered, not acknowledged
    stream.add_many([{"i": i} for i in range(5, 8)])  # trims 0..2 away
    again = Consumer(stream, "g", "c")
    assert [e["i"] for _, e in again.read()] == [3, 4]
    assert again.lost == 3


def test_consumer_position_survives_a_redis_restart_with_aof() -> None:
    server = RedisServer(appendonly=True, appendfsync="always").start()
    try:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        stream = EventStream(server.url, "durable", key_prefix=prefix)
        stream.add_many([{"i": i} for i in range(6)])
        consumer = stream.consumer("g", "worker")
        done = consumer.read(count=3)
        consumer.ack(done[:2])  # 0, 1 processed; 2 delivered but not acknowledged
        position = consumer.position()
        server.kill()  # SIGKILL: only what the AOF holds survives
        server.restart()
        after = EventStream(server.url, "durable", key_prefix=prefix).consumer("g", "worker")
        assert after.position() == position
        assert [e["i"] for _, e in after.read()] == [2]  # the unacknowledged one again
        assert [e["i"] for _, e in after.read()] == [3, 4, 5]
        stream.add({"i": 6})  # the old object reconnects by itself
        assert len(stream) == 7
    finally:
        server.stop()

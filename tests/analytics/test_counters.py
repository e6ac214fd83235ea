"""Windowed counters and alerts on a real Redis."""

from __future__ import annotations

import pytest

import prefect_memory as pm
from prefect_memory.analytics import Alert, AlertFired, Counter, RedisLink, Window

WINDOWS = {"realtime": {"size": 60, "slide": 10}, "hourly": {"size": 3600, "slide": 3600}}
T = 1_714_557_600  # on an hour


def test_tumbling_and_sliding_window_values(link: RedisLink) -> None:
    counter = Counter(link, WINDOWS, handlers=[])
    for second, n in [(0, 1), (15, 2), (35, 3), (59, 4), (61, 5), (95, 6)]:
        counter.incr("metric:click", n, at=T + second)
    # realtime at T+95: the window [T+40, T+100) holds 59, 61 and 95
    assert counter.value("metric:click", "realtime", at=T + 95) == 4 + 5 + 6
    assert counter.value("metric:click", "realtime", at=T + 59) == 1 + 2 + 3 + 4
    assert counter.value("metric:click", "hourly", at=T + 95) == 21
    assert counter.value("metric:click", "1h", at=T + 3600) == 0
    frame = counter.series("metric:click", "realtime", T, T + 60)
    assert frame["value"].tolist() == [1, 3, 3, 6, 6, 10]
    assert str(frame["start"].iloc[0]) == "2024-05-01 09:59:10+00:00"
    assert (frame["end"] - frame["start"]).dt.total_seconds().eq(60).all()


def test_updates_return_every_window_and_panes_expire(link: RedisLink) -> None:
    counter = Counter(link, [60, Window(300, 60, name="5m-sliding")], handlers=[])
    values = counter.incr("metric:view", 2.5, at=T + 1)
    assert values == {"1m": 2.5, "5m-sliding": 2.5}
    got = counter.incr_many({"metric:view": 1, "metric:buy": 3}, at=T + 2)
    assert got["metric:view"]["1m"] == 3.5 and got["metric:buy"]["5m-sliding"] == 3
    key = link.key("c", "metric:view", "1m", T)
    ttl = link.run("TTL", key)
    assert 540 < ttl <= 600  # the 1m panes serve the 5-minute window too: size + history
    assert key.endswith(":c:metric:view:1m:1714557600")


def test_alerts_fire_once_per_window_instance(link: RedisLink) -> None:
    fired: list[AlertFired] = []
    alert = Alert("metric:error:*", threshold=10, op=">=", window="realtime")
    counter = Counter(link, WINDOWS, alerts=[alert], handlers=[fired.append])
    counter.incr("metric:error:db", 9, at=T + 1)
    assert fired == []
    counter.incr("metric:error:db", 1, at=T + 2)
    counter.incr("metric:error:db", 5, at=T + 3)  # still the same window: no second firing
    other = Counter(link, WINDOWS, alerts=[alert], handlers=[fired.append])
    other.incr("metric:error:db", 1, at=T + 4)  # another process, same window: none either
    assert [(f.metric, f.value, f.window_start) for f in fired] == [
        ("metric:error:db", 10.0, T - 50)
    ]
    counter.incr("metric:error:db", 1, at=T + 11)  # the next slide: a new window instance
    assert len(fired) == 2 and fired[1].value == 17
    counter.incr("metric:ok", 100, at=T + 12)  # not watched
    assert len(fired) == 2


def test_a_failing_handler_does_not_fail_the_update(link: RedisLink, caplog) -> None:
    def broken(_: AlertFired) -> None:
        raise RuntimeError("boom")

    counter = Counter(link, alerts=[Alert("m", 0)], handlers=[broken])
    assert counter.incr("m", 1, at=T) == {"1m": 1.0}
    assert "alert handler" in caplog.text


def test_config_errors(link: RedisLink) -> None:
    with pytest.raises(pm.ConfigError) as info:
        Counter(link, {"a": {"size": 10, "slide": 60}, "b": {"size": -1}, "c": {"sise": 1}})
    text = str(info.value)
    assert "cannot exceed its size" in text and "processing.windows.b" in text
    assert "unknown keys sise" in text
    with pytest.raises(pm.ConfigError, match="no window 'weekly'"):
        Counter(link, WINDOWS, alerts=[Alert("m", 1, window="weekly")])
    with pytest.raises(pm.ConfigError, match="unknown alert op"):
        Alert("m", 1, op="~")

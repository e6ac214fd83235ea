"""The tutorial's analytics config end to end: streams, series, counters, downsample_all, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import prefect_memory as pm
from prefect_memory.analytics import Analytics, RedisLink, downsample_all, plot_series, series_table
from test_config import ANALYTICS

S = 1_000_000_000
T0 = 1_714_557_600 * S


def test_the_tutorial_processor_on_the_tutorial_config(link: RedisLink, tmp_path: Path) -> None:
    path = tmp_path / "analytics.json"
    path.write_text(json.dumps(ANALYTICS))
    analytics = Analytics.from_config(path, connection=link)
    stream, counter = analytics.stream("events"), analytics.counter(handlers=[])
    cpu = analytics.series("cpu")
    assert sorted(counter.windows) == ["daily", "hourly", "realtime"]
    for i in range(120):  # processEvent: stream, counter, aggregation
        event = {"type": "click", "value": float(i)}
        stream.add(event)
        counter.incr(f"metric:{event['type']}", 1, at=T0 / S + i)
        cpu.add(T0 / S + i, event["value"])
    assert len(stream) == 120
    assert counter.value("metric:click", "hourly", at=T0 / S + 119) == 120
    spaces = pm.from_config(ANALYTICS)
    report = downsample_all(spaces, connection=link, namespace="analytics")
    assert [r.series for r in report.series] == ["cpu"] and report.points == 120
    assert "| cpu | 1 | 120 | 3 |" in report.markdown()
    minutes = cpu.range(interval=60)
    assert minutes["value"].tolist() == [29.5, 89.5]
    assert cpu.range(interval="1h")["value"].tolist() == [float(sum(range(120)))]
    stored = cpu.aggregates()  # the built-in aggregates table, validated
    assert stored[["interval", "aggregation", "value"]].values.tolist() == [
        [60, "avg", 29.5], [60, "avg", 89.5], [3600, "sum", 7140.0]]  # fmt: skip
    table = series_table(cpu)
    assert table["rows"][0] == {"bucket": "2024-05-01T10:00:00+00:00", "value": 29.5, "count": 60}
    assert table["key"] == "ts-cpu-1m" and "| bucket | value | count |" in table["markdown"]
    again = downsample_all(spaces, connection=link)
    assert again.series[0].chunks == 0


def test_connection_is_required_and_sections_checked(link: RedisLink) -> None:
    spaces = pm.from_config(ANALYTICS)
    with pytest.raises(pm.ConfigError, match="analytics need a Redis"):
        Analytics.from_config(spaces)
    with pytest.raises(pm.ConfigError, match=r"streams.x.type: 'redis-stream' or 'time-series'"):
        Analytics(link, {"x": {"type": "kafka"}})
    with pytest.raises(pm.ConfigError, match="no time-series section 'other'"):
        Analytics(link, ANALYTICS["memory"]["streams"]).series("cpu", "other")


def test_plot_series_writes_a_png(link: RedisLink, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    analytics = Analytics(link, ANALYTICS["memory"]["streams"])
    cpu = analytics.series("cpu")
    seconds = np.arange(0, 3 * 3600, 5, dtype=np.int64)
    cpu.add_points(T0 + seconds * S, 50 + 10 * np.sin(seconds / 600.0))
    cpu.downsample()
    out = plot_series(link, "cpu", tmp_path / "plots" / "cpu.png", namespace="analytics")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_a_failing_series_is_reported_and_the_others_run(link: RedisLink) -> None:
    analytics = Analytics(link, ANALYTICS["memory"]["streams"])
    good = analytics.series("good")
    good.add_points(np.array([T0]), np.array([1.0]))
    link.run("SADD", link.key("ts"), "ghost")  # registered, but no config stored
    report: Any = analytics.downsample()
    assert [r.series for r in report.series] == ["good"]
    assert "ghost" in report.failed and "no time series 'ghost'" in report.failed["ghost"]

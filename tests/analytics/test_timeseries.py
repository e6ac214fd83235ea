"""TimeSeries on a real Redis: exactness against pandas, late data, retention, config."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

import prefect_memory as pm
from prefect_memory.analytics import AGGREGATIONS, RedisLink, TimeSeries

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

S = 1_000_000_000
T0 = 1_714_557_600 * S  # 2024-05-01 10:00 UTC, on an hour
ALL = [{"interval": 60, "aggregation": list(AGGREGATIONS)},
       {"interval": 3600, "aggregation": list(AGGREGATIONS)}]  # fmt: skip
PANDAS = {"avg": "mean", "sum": "sum", "min": "min", "max": "max", "count": "count",
          "first": "first", "last": "last", "std": "std"}  # fmt: skip


def reference(ts: np.ndarray, values: np.ndarray, interval: int, agg: str) -> pd.Series:
    """pandas on the same points: stable sort (ties in arrival order), epoch-aligned bins."""
    series = pd.Series(values, index=pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC"))
    series = series.sort_index(kind="stable")
    return getattr(series.resample(f"{interval}s", origin="epoch"), PANDAS[agg])()


def assert_equal_to_pandas(ts_obj: TimeSeries, ts: np.ndarray, values: np.ndarray) -> None:
    for interval in (60, 3600):
        counts = reference(ts, values, interval, "count")
        for agg in AGGREGATIONS:
            expected = reference(ts, values, interval, agg)
            sparse = ts_obj.range(interval=interval, aggregation=agg)
            kept = expected[counts > 0]
            assert sparse["bucket"].tolist() == kept.index.tolist(), (interval, agg)
            assert sparse["count"].tolist() == counts[counts > 0].tolist()
            scale = np.abs(values).max() if values.size else 1.0
            np.testing.assert_allclose(sparse["value"].to_numpy(), kept.to_numpy(),
                                       rtol=1e-9, atol=1e-12 * scale * 64, err_msg=agg)  # fmt: skip
            if len(expected):  # fill=True gives pandas' empty buckets too
                full = ts_obj.range(expected.index[0], expected.index[-1] + pd.Timedelta(
                    seconds=interval), interval, aggregation=agg, fill=True)  # fmt: skip
                assert full["bucket"].tolist() == expected.index.tolist()
                np.testing.assert_allclose(full["value"].to_numpy(), expected.to_numpy(),
                                           rtol=1e-9, atol=1e-12 * scale * 64)  # fmt: skip


points = st.lists(
    st.tuples(st.integers(0, 4 * 3600 * 4), st.floats(-1e6, 1e6, allow_nan=False)),
    min_size=1, max_size=300,
)  # fmt: skip


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=points, late=points, dup=st.booleans())
def test_buckets_equal_pandas_resample_with_late_points_and_duplicates(
    link: RedisLink, first: list[tuple[int, float]], late: list[tuple[int, float]], dup: bool
) -> None:
    name = f"h{np.random.default_rng().integers(1 << 40)}"
    ts_obj = TimeSeries(link, name, retention=86400, downsampling=ALL)
    ts1 = T0 + np.array([t for t, _ in first], dtype=np.int64) * (S // 4)
    v1 = np.array([v for _, v in first])
    ts_obj.add_points(ts1, v1)
    ts_obj.downsample()
    assert_equal_to_pandas(ts_obj, ts1, v1)
    # a second batch: new points, late points into buckets already computed, duplicates
    ts2 = T0 + np.array([t for t, _ in late], dtype=np.int64) * (S // 4)
    v2 = np.array([v for _, v in late])
    if dup:
        ts2, v2 = np.r_[ts2, ts1[:5]], np.r_[v2, v1[:5] + 1.0]
    ts_obj.add_points(ts2, v2)
    report = ts_obj.downsample()
    assert report.retry_chunks == 0
    assert_equal_to_pandas(ts_obj, np.r_[ts1, ts2], np.r_[v1, v2])
    again = ts_obj.downsample()  # nothing new: nothing read
    assert again.chunks == 0 and again.points == 0
    ts_obj.delete()


def test_add_many_validates_with_pandera_and_routes_labels(link: RedisLink) -> None:
    ts_obj = TimeSeries(link, "cpu", downsampling=[{"interval": 60, "aggregation": "sum"}])
    bad = pd.DataFrame(
        {
            "timestamp": ["2024-05-01T10:00:00Z", "not a time"],
            "value": [1.0, float("inf")],
            "labels": ['{"host": "a"}', "[1]"],
        }
    )
    with pytest.raises(pm.ValidationError) as info:
        ts_obj.add_many(bad)
    text = str(info.value)
    assert "timestamp" in text and "value_is_finite" in text and "labels_are_json_objects" in text
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime([T0, T0 + S, T0 + 2 * S], utc=True),
        "value": [1.0, 2.0, 4.0], "labels": [None, '{"host": "a"}', '{"host": "a"}'],
    })  # fmt: skip
    assert tuple(ts_obj.add_many(frame)) == (3, 0)
    ts_obj.downsample()
    host = ts_obj.labeled({"host": "a"})
    host.downsample()
    assert host.name == "cpu{host=a}"
    assert ts_obj.range(interval=60)["value"].tolist() == [1.0]
    assert host.range(interval=60)["value"].tolist() == [6.0]
    assert TimeSeries.names(link) == ["cpu", "cpu{host=a}"]
    reopened = TimeSeries.open(link, "cpu{host=a}")
    assert reopened.config == ts_obj.config
    assert reopened.range(None, None)["value"].tolist() == [2.0, 4.0]


def test_late_window_drops_points_older_than_the_watermark_allows(link: RedisLink) -> None:
    ts_obj = TimeSeries(link, "lw", retention=86400, late_window=600,
                        downsampling=[{"interval": 60, "aggregation": "count"}])  # fmt: skip
    assert ts_obj.add_points(np.array([T0 + 3600 * S]), np.array([1.0])) == (1, 0)
    # 2999 s is more than 600 s before the watermark (3600 s): dropped; 3000 s is kept
    got = ts_obj.add_points(np.array([T0 + 2999 * S, T0 + 3000 * S]), np.array([1.0, 2.0]))
    assert got == (1, 1)
    ts_obj.downsample()
    counted = ts_obj.range(interval=60)
    assert counted["bucket"].tolist() == [pd.Timestamp(T0 + t * S, tz="UTC") for t in (3000, 3600)]
    assert counted["count"].tolist() == [1, 1]


def test_retention_trims_whole_chunks_per_resolution(link: RedisLink) -> None:
    rules = [{"interval": 60, "aggregation": "avg", "retention": 7200},
             {"interval": 3600, "aggregation": "sum"}]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ts_obj = TimeSeries(link, "ret", retention=3 * 3600, downsampling=rules)
    assert any("1m buckets (7200s) is shorter than the late window" in str(w.message)
               for w in caught)  # fmt: skip
    hours, trimmed, blobs = 10, 0, 0
    for hour in range(hours):  # live data, downsampled every hour
        ts = T0 + (hour * 3600 + np.arange(0, 3600, 30, dtype=np.int64)) * S
        assert ts_obj.add_points(ts, np.full(ts.size, float(hour))) == (120, 0)
        report = ts_obj.downsample()
        assert report.chunks == 1 and report.buckets == {"1m": 60, "1h": 1}
        trimmed, blobs = trimmed + report.trimmed_chunks, blobs + report.trimmed_buckets
    # watermark: hour 9 + 3570 s; raw chunks wholly older than watermark - 3 h: hours 0..5
    assert (trimmed, blobs) == (6, 7)  # 1m buckets: wholly older than watermark - 2 h
    assert ts_obj.add_points(np.array([T0 + 3600 * S]), np.array([5.0])) == (0, 1)
    raw = ts_obj.range()
    assert raw["timestamp"].min() == pd.Timestamp(T0 + 6 * 3600 * S, tz="UTC")
    assert len(raw) == 4 * 120
    minutes = ts_obj.range(interval=60)
    assert minutes["bucket"].min() == pd.Timestamp(T0 + 7 * 3600 * S, tz="UTC")
    hourly = ts_obj.range(interval=3600)  # no retention: every hour kept
    assert hourly["value"].tolist() == [120.0 * h for h in range(hours)]


def test_config_errors_name_every_problem(link: RedisLink) -> None:
    with pytest.raises(pm.ConfigError) as info:
        TimeSeries(
            link,
            "x",
            retention=-1,
            chunk=90,
            downsampling=[
                {"interval": 60, "aggregation": "median"},
                {"interval": "1h", "agregation": "sum"},
            ],
        )
    text = str(info.value)
    for part in ("retention must be positive", "unknown aggregation 'median'",
                 "unknown keys agregation", "1m does not divide it"):  # fmt: skip
        assert part in text, text
    ts_obj = TimeSeries(link, "x", downsampling=[{"interval": 60, "aggregation": "sum"}])
    with pytest.raises(pm.ConfigError, match="no downsampling at 5m"):
        ts_obj.range(interval=300)
    with pytest.raises(ValueError, match="keep no max"):
        ts_obj.add_points(np.array([T0]), np.array([1.0]))
        ts_obj.downsample()
        ts_obj.range(interval=60, aggregation="max")


def test_a_memory_on_redis_is_a_source_and_other_stores_are_refused(redis_server: Any) -> None:
    mem = pm.open_memory(redis_server.url, namespace="metrics", key_prefix="tmem")
    ts_obj = TimeSeries(mem, "cpu")
    assert ts_obj.link.namespace == "metrics" and ts_obj.base.startswith("tmem:{metrics}:ts:")
    with pytest.raises(pm.ConfigError, match="need a Redis store"):
        TimeSeries(pm.open_memory("memory://"), "cpu")


def test_points_appended_during_a_run_are_not_lost(link: RedisLink, monkeypatch: Any) -> None:
    from prefect_memory.analytics import downsample as engine

    ts_obj = TimeSeries(link, "race", downsampling=[{"interval": 60, "aggregation": "sum"}])
    ts_obj.add_points(np.array([T0, T0 + S]), np.array([1.0, 2.0]))
    real_read = engine._read

    def read_then_append(series: TimeSeries, ids: list[int]) -> Any:
        snapshot = real_read(series, ids)
        series.add_points(np.array([T0 + 2 * S]), np.array([4.0]))  # lands mid-run
        return snapshot

    monkeypatch.setattr(engine, "_read", read_then_append)
    report = ts_obj.downsample()
    assert report.retry_chunks == 1  # written from its snapshot, but left dirty
    assert ts_obj.range(interval=60)["value"].tolist() == [3.0]
    monkeypatch.setattr(engine, "_read", real_read)
    report = ts_obj.downsample()
    assert (report.chunks, report.late_chunks, report.retry_chunks) == (1, 1, 0)
    assert ts_obj.range(interval=60)["value"].tolist() == [7.0]


def test_a_series_pickles_and_reconnects(link: RedisLink) -> None:
    import pickle

    ts_obj = TimeSeries(link, "pk", downsampling=[{"interval": 60, "aggregation": "max"}])
    ts_obj.add_points(np.array([T0]), np.array([1.0]))
    clone = pickle.loads(pickle.dumps(ts_obj))
    clone.downsample()
    assert ts_obj.range(interval=60)["value"].tolist() == [1.0]

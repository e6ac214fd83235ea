"""Request events of the demo and their downsampling, with or without Redis.

- :class:`RedisRecorder` (services profile): the analytics module as the tutorial's
  "Real-time Analytics" example has it: an :class:`~prefect_memory.analytics.EventStream`
  trimmed with ``MAXLEN``, a :class:`~prefect_memory.analytics.Counter` over windows, and a
  :class:`~prefect_memory.analytics.TimeSeries` downsampled on Redis.
- :class:`FrameRecorder` (embedded profile; streams and time series need Redis): one
  events frame per hour in the tiered memory (``events:<YYYY-MM-DDTHH>``, validated by the
  built-in ``EventsModel``), downsampled with the same numpy engine
  (:mod:`prefect_memory.analytics.aggregate`) that the time series uses on Redis.

Both give the buckets as the built-in ``aggregates`` table, which the pipeline stores
with ``mem.frames.put`` (``aggregates:latency_ms``).

Example:
    >>> LEVELS[0], LEVELS[1]["aggregation"]
    ({'interval': 60, 'aggregation': 'avg'}, ['avg', 'max', 'count'])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from ..memory import Memory
    from .stores import DemoConfig

SERIES = "latency_ms"
#: Downsampling of the latency series (the tutorial's ``aggregations`` section).
LEVELS: list[dict[str, Any]] = [
    {"interval": 60, "aggregation": "avg"},
    {"interval": 3600, "aggregation": ["avg", "max", "count"]},
]
#: Entries the Redis stream keeps (``MAXLEN ~``).
STREAM_MAX_LENGTH = 50_000
_NS = 1_000_000_000

Advance = Callable[[int], None]


class Recorder(Protocol):
    """Records request events and downsamples them."""

    kind: str

    def reset(self) -> None:
        """Forget every event recorded before."""

    def record(
        self, ts_ns: np.ndarray, latency_ms: np.ndarray, cached: np.ndarray, *,
        live: bool = False, advance: Advance | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Record events; return what was written."""

    def downsample(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The buckets as an ``aggregates`` frame, and a report."""

    def close(self) -> None:
        """Release connections."""


def _events_frame(ts_ns: np.ndarray, latency: np.ndarray, cached: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({
        "timestamp": pd.to_datetime(ts_ns, unit="ns", utc=True),
        "type": "prediction",
        "value": latency.astype(np.float64),
        "source": np.where(cached, "cache", "model"),
    })  # fmt: skip


def aggregates_frame(states_by_level: dict[int, np.ndarray]) -> pd.DataFrame:
    """The ``aggregates`` table of bucket states per interval (seconds), for ``LEVELS``."""
    import pandas as pd

    from ..analytics.aggregate import finalize

    parts = []
    for level in LEVELS:
        interval = int(level["interval"])
        states = states_by_level[interval]
        aggs = level["aggregation"]
        for agg in [aggs] if isinstance(aggs, str) else aggs:
            parts.append(pd.DataFrame({
                "metric": SERIES,
                "bucket": pd.to_datetime(states["bucket"], unit="ns", utc=True),
                "interval": interval,
                "aggregation": agg,
                "value": finalize(states, agg),
                "count": states["count"].astype(np.int64),
            }))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


class FrameRecorder:
    """Events as hourly frames in a memory, downsampled in numpy (no Redis needed).

    Args:
        memory: Where the frames go (the demo's tiered memory: they land in the warm tier).
    """

    kind = "frames"

    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def reset(self) -> None:
        """Delete the events frames of the namespace."""
        self.memory.delete_many(list(self.memory.keys("events:*")))

    def record(
        self, ts_ns: np.ndarray, latency_ms: np.ndarray, cached: np.ndarray, *,
        live: bool = False, advance: Advance | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Write the events into their hour's frame (a new frame, or appended to one)."""
        from ..tabular.models import EventsModel

        hours = ts_ns // (3600 * _NS)
        frames = appended = 0
        for hour in np.unique(hours):
            rows = hours == hour
            key = "events:" + time.strftime("%Y-%m-%dT%H", time.gmtime(int(hour) * 3600))
            frame = _events_frame(ts_ns[rows], latency_ms[rows], cached[rows])
            if self.memory.exists(key):
                self.memory.frames.append(key, frame, schema=EventsModel)
                appended += 1
            else:
                self.memory.frames.put(key, frame, schema=EventsModel, tags=["events"])
                frames += 1
            if advance is not None:
                advance(int(rows.sum()))
        return {"events": int(ts_ns.size), "frames written": frames, "frames appended": appended}

    def downsample(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Read every events frame and aggregate it per minute and per hour in numpy."""
        from ..analytics.aggregate import fields_for, merge_states, states_from_points

        started = time.perf_counter()
        keys = sorted(self.memory.keys("events:*"))
        ts_parts, value_parts = [], []
        for key in keys:
            frame = self.memory.frames.get(key)
            ts_parts.append(frame["timestamp"].to_numpy("datetime64[ns]").view(np.int64))
            value_parts.append(frame["value"].to_numpy(np.float64))
        ts = np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64)
        values = np.concatenate(value_parts) if value_parts else np.empty(0)
        aggs = {a for lv in LEVELS for a in ([lv["aggregation"]] if isinstance(
            lv["aggregation"], str) else lv["aggregation"])}  # fmt: skip
        finest = states_from_points(ts, values, LEVELS[0]["interval"] * _NS, fields_for(aggs))
        states = {LEVELS[0]["interval"]: finest}
        for level in LEVELS[1:]:
            states[level["interval"]] = merge_states(finest, level["interval"] * _NS)
        report = {
            "engine": "numpy (prefect_memory.analytics.aggregate) over hourly events frames",
            "frames read": len(keys),
            "points": int(ts.size),
            "buckets": {f"{lv['interval']}s": int(states[lv["interval"]].size) for lv in LEVELS},
            "seconds": round(time.perf_counter() - started, 3),
        }
        return aggregates_frame(states), report

    def close(self) -> None:
        """Nothing to release (the frames live in the memory)."""


class RedisRecorder:
    """Events in a Redis stream, counters per window, and a downsampled time series.

    Args:
        url: ``redis://`` URL (``?key_prefix=`` allowed).
        namespace: Namespace of the analytics keys.
    """

    kind = "redis"

    def __init__(self, url: str, namespace: str) -> None:
        from ..analytics import Counter, EventStream, TimeSeries

        self.stream = EventStream(url, "requests", max_length=STREAM_MAX_LENGTH,
                                  namespace=namespace)  # fmt: skip
        self.counter = Counter(
            self.stream.link,
            {"realtime": {"size": 60, "slide": 10}, "hourly": {"size": 3600, "slide": 3600}},
            handlers=[],
        )
        self.series = TimeSeries(self.stream.link, SERIES, retention=86400, downsampling=LEVELS)

    def reset(self) -> None:
        """Delete the stream and the series (counters expire by themselves)."""
        self.stream.delete()
        self.series.delete()

    def record(
        self, ts_ns: np.ndarray, latency_ms: np.ndarray, cached: np.ndarray, *,
        live: bool = False, advance: Advance | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Append to the stream (``MAXLEN ~``) and the series; count live requests."""
        chunk = 10_000
        for start in range(0, ts_ns.size, chunk):
            end = min(start + chunk, ts_ns.size)
            rows = [
                {"ts": int(t), "type": "prediction", "value": float(v),
                 "source": "cache" if c else "model"}
                for t, v, c in zip(ts_ns[start:end], latency_ms[start:end], cached[start:end],
                                   strict=True)
            ]  # fmt: skip
            self.stream.add_many(rows)
            self.series.add_points(ts_ns[start:end], latency_ms[start:end])
            if advance is not None:
                advance(end - start)
        windows: dict[str, float] = {}
        if live and ts_ns.size:
            hits = int(np.count_nonzero(cached))
            now = float(ts_ns[-1]) / _NS
            self.counter.incr_many({"metric:prediction": int(ts_ns.size)}, at=now)
            windows = self.counter.incr_many(
                {"metric:cache_hit": hits, "metric:cache_miss": int(ts_ns.size) - hits}, at=now
            )["metric:cache_hit"]
        return {"events": int(ts_ns.size), "stream length": len(self.stream),
                "cache hits per window": windows}  # fmt: skip

    def downsample(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Run the series' incremental downsampling on Redis; read every bucket back."""
        report = self.series.downsample()
        return self.series.aggregates(), {
            "engine": "TimeSeries.downsample on Redis",
            "points": int(report.points),
            "buckets": dict(report.buckets),
            "stream length": len(self.stream),
            "stream MAXLEN": STREAM_MAX_LENGTH,
            "seconds": round(report.seconds, 3),
        }

    def close(self) -> None:
        """Release the Redis connection."""
        self.stream.link.backend.close()


def open_recorder(config: DemoConfig, memory: Memory) -> Recorder:
    """A Redis recorder when the config names an analytics Redis, else the frames one."""
    if config.analytics:
        return RedisRecorder(config.analytics, f"{config.namespace}-analytics")
    return FrameRecorder(memory)

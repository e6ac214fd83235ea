"""Time series on Redis: raw points in packed chunks, downsampled buckets per resolution.

``add_many`` appends points (any order, duplicates kept) and marks their chunks dirty;
``downsample`` (what the scheduled flow runs) recomputes the buckets of the dirty chunks
only, so a late point re-aggregates exactly the buckets of its chunk while the chunk's raw
points are retained; ``range`` reads buckets (or raw points) as a DataFrame.

Retention follows RedisTimeSeries: it counts back from the series' newest timestamp (the
watermark), not from the wall clock, so a replay of old data behaves as live data did.
A point older than ``watermark - min(retention, late_window)`` is dropped on arrival.

Example (the storage layout is in :mod:`~prefect_memory.analytics.tsconfig`; a series needs
a Redis server, so here only its configuration)::

    >>> ts = TimeSeries("redis://127.0.0.1:6390/0", "cpu", retention=86400,
    ...                 downsampling=[{"interval": 60, "aggregation": "avg"},
    ...                               {"interval": 3600, "aggregation": "sum"}])
    >>> ts
    TimeSeries('cpu', levels=['1m:avg', '1h:sum'], retention=86400s, chunk=1h)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import EntryNotFound
from ..keys import ns_token
from ._redis import RedisLink
from .aggregate import finalize, normalize_aggregation, sort_points
from .tsconfig import Level, SeriesConfig, decode_states

if TYPE_CHECKING:
    import pandas as pd

    from .downsample import DownsampleReport

logger = logging.getLogger("prefect_memory.analytics")
_BATCH_BYTES = 32 * 1024 * 1024


class Added(NamedTuple):
    """What :meth:`TimeSeries.add_many` did: points stored, and points dropped as too old."""

    added: int
    dropped: int


class TimeSeries:
    """One time series and its downsampled resolutions, on Redis.

    Args:
        source: ``redis://`` URL, Redis-backed :class:`~prefect_memory.Memory`, or link.
        name: Name of the series (any string).
        retention: How long raw points are kept, in seconds (or ``"1d"``), counted back from
            the newest point; whole chunks are dropped, so up to one chunk more is kept.
        downsampling: Rules ``{"interval": 60, "aggregation": "avg", "retention": ...}``
            (``aggregation`` may be a list; one of avg, sum, min, max, count, first, last,
            std; ``retention`` of the buckets, default: kept).
        late_window: How late a point may arrive (seconds before the newest point) and still
            be counted; default and upper bound: ``retention``.
        chunk: Length of a raw chunk in seconds; a multiple of every interval (default:
            their least common multiple, rounded up to an hour or more).
        namespace: Namespace of the keys (default: the memory's, else ``"default"``).
        validate: Check frames given to :meth:`add_many` with :class:`PointsModel`.
        **options: Redis options for a URL (``key_prefix``, ``timeout``...).
    """

    def __init__(
        self,
        source: Any,
        name: str,
        *,
        retention: Any = 86400,
        downsampling: Iterable[Mapping[str, Any]] = (),
        late_window: Any = None,
        chunk: Any = None,
        namespace: str | None = None,
        validate: bool = True,
        config: SeriesConfig | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a series name must be a non-empty str, got {name!r}")
        self.link = RedisLink.open(source, namespace=namespace, **options)
        self.name = name
        self.config = config or SeriesConfig.build(
            retention=retention, downsampling=downsampling, late_window=late_window, chunk=chunk
        )
        self.validate = validate
        self.base = self.link.key("ts", ns_token(name)) + ":"

    @classmethod
    def open(
        cls, source: Any, name: str, *, namespace: str | None = None, **options: Any
    ) -> TimeSeries:
        """The series ``name`` with the config stored by its writer.

        Raises:
            EntryNotFound: No series ``name`` in the namespace (a ``KeyError``).
        """
        link = RedisLink.open(source, namespace=namespace, **options)
        raw = link.run("HGET", link.key("ts", ns_token(name)) + ":m", "config")
        if raw is None:
            raise EntryNotFound(f"no time series {name!r} in namespace {link.namespace!r}")
        return cls(link, name, config=SeriesConfig.from_json(raw))

    @staticmethod
    def names(source: Any, *, namespace: str | None = None, **options: Any) -> list[str]:
        """The names of the series written in a namespace (sorted)."""
        link = RedisLink.open(source, namespace=namespace, **options)
        return sorted(n.decode() for n in link.run("SMEMBERS", link.key("ts")))

    def __repr__(self) -> str:
        levels = [f"{lv.label}:{'+'.join(lv.aggregations)}" for lv in self.config.levels]
        return (
            f"TimeSeries({self.name!r}, levels={levels}, "
            f"retention={self.config.retention_ns / 1e9:g}s, chunk={self.config.chunk_label})"
        )

    def labeled(self, labels: Any) -> TimeSeries:
        """The sub-series of ``labels`` (a mapping or its JSON text): ``cpu{host=a}``."""
        from .models import canonical_labels

        text = canonical_labels(labels)
        if not text:
            return self
        return TimeSeries(self.link, f"{self.name}{{{text}}}", config=self.config,
                          validate=self.validate)  # fmt: skip

    # -- writing ------------------------------------------------------------------------------
    def add(self, timestamp: Any, value: float) -> Added:
        """Add one point (``timestamp``: epoch seconds, datetime or ISO string)."""
        from .models import to_epoch_ns

        return self.add_points(np.array([to_epoch_ns(timestamp)]), np.array([float(value)]))

    def add_many(self, frame: pd.DataFrame) -> Added:
        """Add the rows of a DataFrame with columns ``timestamp``, ``value`` (+ ``labels``).

        The frame is validated by :class:`~prefect_memory.analytics.models.PointsModel`
        (every failure in one :class:`~prefect_memory.ValidationError`); rows with
        ``labels`` go to the sub-series of their labels (see :meth:`labeled`).
        """
        if self.validate:
            from ..tabular.schemas import validate_frame
            from .models import PointsModel

            frame = validate_frame(frame, PointsModel)
        import pandas as pd

        stamps = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ns")
        ts = np.asarray(stamps.array.asi8, dtype=np.int64)
        values = frame["value"].to_numpy(dtype=np.float64)
        if "labels" not in frame.columns or frame["labels"].isna().all():
            return self.add_points(ts, values)
        added = dropped = 0
        groups = frame["labels"].fillna("").to_numpy(dtype=object)
        for text in dict.fromkeys(groups):
            mask = groups == text
            got = self.labeled(text or None).add_points(ts[mask], values[mask])
            added, dropped = added + got.added, dropped + got.dropped
        return Added(added, dropped)

    def add_points(self, ts: np.ndarray, values: np.ndarray) -> Added:
        """Add points given as epoch nanoseconds (``int64``) and values (``float64``).

        The fast path under :meth:`add_many` (no validation beyond finiteness). Points
        older than ``watermark - late_window`` are dropped and counted.
        """
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        if ts.shape != values.shape or ts.ndim != 1:
            raise ValueError("timestamps and values must be 1-d arrays of the same length")
        if not np.isfinite(values).all():
            raise ValueError("time series values must be finite numbers")
        if ts.size == 0:
            return Added(0, 0)
        cfg = self.config
        old = self.link.run("ZSCORE", self.base + "w", "wm")
        newest = int(ts.max())
        watermark = max(newest, round(float(old) * 1e9)) if old is not None else newest
        keep = ts >= watermark - cfg.late_window_ns
        dropped = int(ts.size - keep.sum())
        if dropped:
            logger.info("series %s: %d points older than the late window dropped",
                        self.name, dropped)  # fmt: skip
            ts, values = ts[keep], values[keep]
            if ts.size == 0:
                return Added(0, dropped)
        chunks = ts // cfg.chunk_ns
        if ts.size > 1 and bool((chunks[1:] < chunks[:-1]).any()):
            order = np.argsort(chunks, kind="stable")  # arrival order kept inside a chunk
            ts, values, chunks = ts[order], values[order], chunks[order]
        cuts = np.flatnonzero(chunks[1:] != chunks[:-1]) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = [*cuts.tolist(), ts.size]
        b = self.base
        head: list[tuple[Any, ...]] = [
            ("SADD", self.link.key("ts"), self.name),
            ("HSET", b + "m", "config", cfg.to_json()),
            ("ZADD", b + "w", "GT", watermark / 1e9, "wm"),
        ]
        commands, size = list(head), 0
        for s, e in zip(starts, ends, strict=True):
            c = int(chunks[s])
            commands += [
                ("APPEND", f"{b}r:{c}:t", ts[s:e].tobytes()),
                ("APPEND", f"{b}r:{c}:v", values[s:e].tobytes()),
                ("HINCRBY", b + "v", c, 1), ("SADD", b + "d", c), ("ZADD", b + "i", c, c),
            ]  # fmt: skip
            size += (e - s) * 16
            if size >= _BATCH_BYTES:
                self.link.transaction(commands)
                commands, size = [], 0
        if commands:
            self.link.transaction(commands)
        return Added(int(ts.size), dropped)

    def downsample(self) -> DownsampleReport:
        """Recompute the buckets of every chunk written since the last run; trim old data.

        Returns:
            A :class:`~prefect_memory.analytics.downsample.DownsampleReport`.
        """
        from .downsample import downsample_series

        return downsample_series(self)

    # -- reading ------------------------------------------------------------------------------
    def watermark(self) -> pd.Timestamp | None:
        """The newest timestamp of the series (``None`` when empty)."""
        import pandas as pd

        raw = self.link.run("ZSCORE", self.base + "w", "wm")
        return None if raw is None else pd.Timestamp(round(float(raw) * 1e9), tz="UTC")

    def _chunk_ids(self, key: str, start_ns: int, end_ns: int) -> list[int]:
        lo, hi = start_ns // self.config.chunk_ns, (end_ns - 1) // self.config.chunk_ns
        return [int(c) for c in self.link.run("ZRANGEBYSCORE", key, lo, hi)]

    def points(self, start: Any = None, end: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw points in ``[start, end)`` as sorted ``(epoch ns, values)`` arrays."""
        start_ns, end_ns = _bounds(start, end)
        ids = self._chunk_ids(self.base + "i", start_ns, end_ns)
        blobs = self.link.fetch([("GET", f"{self.base}r:{c}:{part}") for c in ids for part in "tv"])
        parts_t, parts_v = [], []
        for t, v in zip(blobs[0::2], blobs[1::2], strict=True):
            if t is not None and v is not None:
                n = min(len(t), len(v)) // 8
                parts_t.append(np.frombuffer(t, dtype=np.int64, count=n))
                parts_v.append(np.frombuffer(v, dtype=np.float64, count=n))
        if not parts_t:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        ts, values, _ = sort_points(np.concatenate(parts_t), np.concatenate(parts_v))
        keep = (ts >= start_ns) & (ts < end_ns)
        return ts[keep], values[keep]

    def states(self, interval: Any, start: Any = None, end: Any = None) -> np.ndarray:
        """The stored bucket states of a resolution in ``[start, end)`` (sorted)."""
        level = self.config.level(interval)
        start_ns, end_ns = _bounds(start, end)
        ids = self._chunk_ids(f"{self.base}i:{level.label}", start_ns, end_ns)
        blobs = self.link.pipeline([("GET", f"{self.base}a:{level.label}:{c}") for c in ids])
        parts = [decode_states(b) for b in blobs if b]
        if not parts:
            return self.config.empty_states(level)
        states = np.concatenate(parts)
        keep = (states["bucket"] >= start_ns - start_ns % level.interval_ns) & (
            states["bucket"] < end_ns
        )
        return states[keep]

    def range(
        self,
        start: Any = None,
        end: Any = None,
        interval: Any = None,
        *,
        aggregation: str | None = None,
        fill: bool = False,
    ) -> pd.DataFrame:
        """Buckets of a resolution (or raw points) in ``[start, end)`` as a DataFrame.

        Args:
            start: First time (epoch seconds, datetime, ISO string); default: the beginning.
            end: End time, excluded; default: no end.
            interval: A configured resolution (``60`` or ``"1m"``); ``None`` for the raw
                points (columns ``timestamp``, ``value``).
            aggregation: Which aggregation of the resolution (default: its first one).
            fill: Also return the empty buckets between ``start`` and ``end`` (sum and
                count 0, others NaN), as pandas' ``resample`` does between its first and
                last bucket.

        Returns:
            Columns ``bucket`` (start, UTC), ``value``, ``count``: buckets as of the last
            :meth:`downsample`, equal to ``resample(f"{interval}s", origin="epoch")``.
        """
        import pandas as pd

        from .models import ns_to_index

        if interval is None:
            ts, values = self.points(start, end)
            return pd.DataFrame({"timestamp": ns_to_index(ts), "value": values})
        level = self.config.level(interval)
        agg = normalize_aggregation(aggregation or level.aggregations[0])
        states = self.states(interval, start, end)
        values = finalize(states, agg)
        buckets, counts = states["bucket"], states["count"]
        if fill and (states.size or (start is not None and end is not None)):
            buckets, values, counts = _filled(level, agg, buckets, values, counts, start, end)
        return pd.DataFrame({
            "bucket": ns_to_index(buckets), "value": values, "count": counts.astype(np.int64),
        })  # fmt: skip

    def aggregates(self, start: Any = None, end: Any = None, interval: Any = None) -> pd.DataFrame:
        """Every aggregation of one resolution (default: all) as the built-in ``aggregates``
        table (validated by ``AggregatesModel``: ready for ``mem.put_frame``)."""
        import pandas as pd

        from ..tabular.models import AggregatesModel
        from ..tabular.schemas import validate_frame

        levels = [self.config.level(interval)] if interval is not None else self.config.levels
        parts = []
        for level in levels:
            for agg in level.aggregations:
                frame = self.range(start, end, level.interval, aggregation=agg)
                parts.append(frame.assign(metric=self.name, aggregation=agg,
                                          interval=int(level.interval)))  # fmt: skip
        columns = ["metric", "bucket", "interval", "aggregation", "value", "count"]
        frame = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(
            columns=columns
        )  # fmt: skip
        return validate_frame(frame, AggregatesModel)

    def plot(self, path: Any, start: Any = None, end: Any = None, **options: Any) -> Any:
        """Draw raw points and every resolution to a PNG (needs matplotlib)."""
        from .plot import plot_timeseries

        return plot_timeseries(self, path, start, end, **options)

    def trim(self) -> tuple[int, int]:
        """Drop the raw chunks and buckets past their retention; ``(chunks, bucket blobs)``."""
        from .downsample import trim_series

        return trim_series(self)

    def delete(self) -> None:
        """Remove the series and every resolution."""
        names = [name for name in _scan(self.link, self.base + "*")]
        for i in range(0, len(names), 500):
            self.link.run("DEL", *names[i : i + 500])
        self.link.run("SREM", self.link.key("ts"), self.name)


def _scan(link: RedisLink, match: str) -> Iterable[bytes]:
    cursor: Any = 0
    pattern = match.replace("[", "\\[").replace("]", "\\]")
    while True:
        cursor, found = link.run("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        yield from found
        if int(cursor) == 0:
            return


def _bounds(start: Any, end: Any) -> tuple[int, int]:
    from .models import to_epoch_ns

    lo = -(2**62) if start is None else to_epoch_ns(start)
    hi = 2**62 if end is None else to_epoch_ns(end)
    return lo, hi


def _filled(
    level: Level, agg: str, buckets: np.ndarray, values: np.ndarray, counts: np.ndarray,
    start: Any, end: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    iv = level.interval_ns
    lo, hi = _bounds(start, end)
    first = lo - lo % iv if start is not None else int(buckets[0])
    last = hi - 1 - (hi - 1) % iv if end is not None else int(buckets[-1])
    grid = np.arange(first, last + 1, iv, dtype=np.int64)
    empty = 0.0 if agg in ("sum", "count") else np.nan
    out_values = np.full(grid.size, empty)
    out_counts = np.zeros(grid.size, dtype=np.int64)
    where = (buckets - first) // iv
    inside = (where >= 0) & (where < grid.size)
    out_values[where[inside]] = values[inside]
    out_counts[where[inside]] = counts[inside]
    return grid, out_values, out_counts

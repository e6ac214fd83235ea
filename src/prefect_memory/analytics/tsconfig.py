"""Configuration of a time series (resolutions, retention, late window, chunks) and its
storage format on Redis.

Redis layout of series ``S`` (``B`` = ``{prefix}:{<ns token>}:ts:<S token>:``):

- ``B r:<c>:t`` / ``B r:<c>:v``: raw chunk ``c`` (the points with ``ts // chunk == c``) as
  two strings, packed little-endian ``int64`` epoch nanoseconds and ``float64`` values,
  appended together in one MULTI/EXEC (so they always have the same length). Reading a
  chunk is two GETs and ``numpy.frombuffer``: no parsing per point.
- ``B i``: sorted set of the raw chunks; ``B v``: hash chunk -> version (bumped by each
  append); ``B d``: set of the chunks appended to since their last downsampling;
  ``B av``: hash chunk -> the version its buckets were computed from.
- ``B a:<interval>:<c>``: the bucket states of chunk ``c`` at one resolution
  (``b"PMS1"``, a byte of field flags, then the structured array of
  :mod:`~prefect_memory.analytics.aggregate`); ``B i:<interval>``: their chunks.
- ``B w``: sorted set holding the watermark (newest timestamp, seconds; ``ZADD GT``);
  ``B m``: hash with the config (JSON), so any process can open the series by name.
- ``{prefix}:{<ns token>}:ts``: set of the series names of the namespace.

The chunk length is a multiple of every interval (default: their least common multiple,
times what makes it an hour or more), so a bucket never straddles two chunks and a
chunk's buckets are recomputed from its raw points alone.

Example:
    >>> cfg = SeriesConfig.build(retention=86400, downsampling=[
    ...     {"interval": 60, "aggregation": "avg"}, {"interval": "1h", "aggregation": "sum"}])
    >>> [(lv.label, lv.aggregations) for lv in cfg.levels], cfg.chunk_label
    ([('1m', ('avg',)), ('1h', ('sum',))], '1h')
    >>> cfg.late_window_ns == cfg.retention_ns
    True
    >>> states = decode_states(encode_states(cfg.empty_states(cfg.levels[0])))
    >>> states.dtype.names
    ('bucket', 'count', 'sum')
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .aggregate import STATE_FIELDS, fields_for, normalize_aggregation, state_dtype
from .windows import duration_label, to_ns

_MAGIC = b"PMS1"
_LEVEL_KEYS = {"interval", "aggregation", "aggregations", "retention"}
_MAX_CHUNK_NS = int(100 * 365.25 * 86400) * 10**9


@dataclass(frozen=True)
class Level:
    """One resolution: an interval, its aggregations and how long its buckets are kept."""

    interval_ns: int
    aggregations: tuple[str, ...]
    retention_ns: int | None = None

    @property
    def label(self) -> str:
        """``"1m"``, ``"1h"``: the interval as it appears in keys."""
        return duration_label(self.interval_ns / 1e9)

    @property
    def interval(self) -> float:
        """The interval in seconds."""
        return self.interval_ns / 1e9

    @property
    def fields(self) -> tuple[str, ...]:
        """The state fields stored for this level."""
        return fields_for(self.aggregations)

    def spec(self) -> dict[str, Any]:
        """The JSON form of this level."""
        out: dict[str, Any] = {"interval": self.interval, "aggregations": list(self.aggregations)}
        if self.retention_ns is not None:
            out["retention"] = self.retention_ns / 1e9
        return out


def _seconds_ns(value: Any, name: str) -> int:
    from ..units import parse_duration

    seconds = parse_duration(value, name=name)
    if seconds is None or not math.isfinite(seconds) or to_ns(seconds) <= 0:
        raise ConfigError(f"{name} must be a positive duration, got {value!r}")
    return to_ns(seconds)


@dataclass(frozen=True)
class SeriesConfig:
    """Resolutions, raw retention, late window and chunk length of a series (all in ns)."""

    retention_ns: int
    levels: tuple[Level, ...]
    chunk_ns: int
    late_window_ns: int

    @classmethod
    def build(
        cls,
        *,
        retention: Any = 86400,
        downsampling: Iterable[Mapping[str, Any]] = (),
        late_window: Any = None,
        chunk: Any = None,
    ) -> SeriesConfig:
        """Check and normalize a config; one ConfigError names every problem.

        Warns (``UserWarning``) when a retention is shorter than the late window.
        """
        problems: list[str] = []
        try:
            retention_ns = _seconds_ns(retention, "retention")
        except ConfigError as err:
            problems.append(str(err))
            retention_ns = 1
        by_interval: dict[int, tuple[list[str], int | None]] = {}
        if downsampling is not None and (
            isinstance(downsampling, str | bytes | Mapping)
            or not isinstance(downsampling, Iterable)
        ):
            problems.append(f"downsampling: a list of levels, got {type(downsampling).__name__}")
            downsampling = ()
        for i, raw in enumerate(downsampling or ()):
            where = f"downsampling[{i}]"
            if not isinstance(raw, Mapping):
                problems.append(f"{where}: must be an object with interval and aggregation")
                continue
            unknown = sorted(set(raw) - _LEVEL_KEYS)
            if unknown:
                problems.append(f"{where}: unknown keys {', '.join(unknown)}")
            try:
                iv = _seconds_ns(raw.get("interval"), f"{where}.interval")
            except ConfigError as err:
                problems.append(str(err))
                continue
            aggs = raw.get("aggregations", raw.get("aggregation", "avg"))
            aggs = [aggs] if isinstance(aggs, str) else aggs
            if not isinstance(aggs, list | tuple):
                problems.append(f"{where}.aggregation: a name or a list of names, got {aggs!r:.40}")
                aggs = []
            names: list[str] = []
            for agg in aggs:
                try:
                    if not isinstance(agg, str):
                        raise ValueError(f"an aggregation is a name, got {agg!r:.40}")
                    names.append(normalize_aggregation(agg))
                except ValueError as err:
                    problems.append(f"{where}.aggregation: {err}")
            keep = None
            if raw.get("retention") is not None:
                try:
                    keep = _seconds_ns(raw["retention"], f"{where}.retention")
                except ConfigError as err:
                    problems.append(str(err))
            old_aggs, old_keep = by_interval.get(iv, ([], keep))
            if old_keep != keep:
                problems.append(f"{where}: another rule of this interval has another retention")
            by_interval[iv] = (old_aggs + [a for a in names if a not in old_aggs], keep)
        levels = tuple(
            Level(iv, tuple(aggs) or ("avg",), keep)
            for iv, (aggs, keep) in sorted(by_interval.items())
        )
        if chunk is None:
            # The least common multiple of the intervals, times what makes it an hour at
            # least: fewer, larger chunks (each read is two GETs) for short intervals.
            lcm = math.lcm(*(lv.interval_ns for lv in levels)) if levels else 1
            chunk_ns = lcm * -(-3600 * 10**9 // lcm)
            if chunk_ns > _MAX_CHUNK_NS:
                problems.append(
                    "the intervals have no common multiple of at most 100 years: give 'chunk'"
                )
                chunk_ns = 3600 * 10**9
        else:
            try:
                chunk_ns = _seconds_ns(chunk, "chunk")
            except ConfigError as err:
                problems.append(str(err))
                chunk_ns = 3600 * 10**9
        for lv in levels:
            if chunk_ns % lv.interval_ns:
                problems.append(
                    f"chunk ({duration_label(chunk_ns / 1e9)}) must be a multiple of every "
                    f"interval, and {lv.label} does not divide it"
                )
        late_ns = retention_ns
        if late_window is not None:
            try:
                late_ns = _seconds_ns(late_window, "late_window")
            except ConfigError as err:
                problems.append(str(err))
        if problems:
            raise ConfigError("invalid time series config:\n  " + "\n  ".join(problems))
        shorter = [("raw points", retention_ns)] + [
            (f"{lv.label} buckets", lv.retention_ns) for lv in levels if lv.retention_ns
        ]
        for what, keep in shorter:
            if keep is not None and keep < late_ns:
                warnings.warn(
                    f"the retention of the {what} ({keep / 1e9:g}s) is shorter than the late "
                    f"window ({late_ns / 1e9:g}s): late points older than the retention "
                    + ("are dropped" if what == "raw points" else "re-create expired buckets"),
                    UserWarning,
                    stacklevel=3,
                )
        return cls(retention_ns, levels, chunk_ns, min(late_ns, retention_ns))

    @property
    def chunk_label(self) -> str:
        """The chunk length as a label (``"1h"``)."""
        return duration_label(self.chunk_ns / 1e9)

    def level(self, interval: Any) -> Level:
        """The level of ``interval`` (seconds or ``"1m"``), or ConfigError naming them all."""
        iv = _seconds_ns(interval, "interval")
        for lv in self.levels:
            if lv.interval_ns == iv:
                return lv
        known = ", ".join(lv.label for lv in self.levels) or "none"
        raise ConfigError(
            f"no downsampling at {duration_label(iv / 1e9)} (configured: {known}; "
            "interval=None reads the raw points)"
        )

    def empty_states(self, level: Level) -> np.ndarray:
        """An empty state array of ``level``."""
        return np.empty(0, dtype=state_dtype(level.fields))

    def to_json(self) -> str:
        """The config as JSON (stored with the series)."""
        return json.dumps({
            "retention": self.retention_ns / 1e9, "late_window": self.late_window_ns / 1e9,
            "chunk": self.chunk_ns / 1e9, "downsampling": [lv.spec() for lv in self.levels],
        }, sort_keys=True)  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> SeriesConfig:
        """The config stored by :meth:`to_json` (without warnings)."""
        spec = json.loads(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.build(**spec)


def encode_states(states: np.ndarray) -> bytes:
    """The bytes of a state array: magic, a flag byte of its fields, the array."""
    names = states.dtype.names or ()
    flags = sum(1 << i for i, f in enumerate(STATE_FIELDS) if f in names)
    return _MAGIC + bytes([flags]) + np.ascontiguousarray(states).tobytes()


def decode_states(data: bytes) -> np.ndarray:
    """The state array of :func:`encode_states` bytes."""
    if data[:4] != _MAGIC:
        raise ValueError("not a prefect-memory bucket blob")
    flags = data[4]
    fields = [f for i, f in enumerate(STATE_FIELDS) if flags & (1 << i)]
    return np.frombuffer(data, dtype=state_dtype(fields), offset=5)

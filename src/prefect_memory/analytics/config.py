"""The tutorial's analytics sections as objects, and the engine of the downsampling flow.

``pm.from_config(...)`` keeps the ``streams`` and ``processing`` sections of an analytics
config as written (``Namespaces.extras``); :class:`Analytics` builds from them:

- ``streams.<name>`` with ``type: "redis-stream"`` -> :meth:`Analytics.stream`
  (``maxLength``, ``trimStrategy``, ``approximate``, ``maxAge``);
- ``streams.<name>`` with ``type: "time-series"`` -> :meth:`Analytics.series`
  (``retention``, ``downsampling``, ``lateWindow``, ``chunk``);
- ``processing.windows`` -> :meth:`Analytics.counter`.

:func:`downsample_all` is what the ``downsample_analytics`` flow calls: it downsamples every
series written in the analytics namespace and returns one report.

Example:
    >>> import prefect_memory as pm
    >>> spaces = pm.from_config({"memory": {"backend": "hybrid",
    ...     "streams": {"events": {"type": "redis-stream", "maxLength": 1000,
    ...                            "trimStrategy": "MAXLEN"},
    ...                 "aggregations": {"type": "time-series", "retention": 86400,
    ...                                  "downsampling": [{"interval": 60, "aggregation": "avg"}]}},
    ...     "processing": {"windows": {"realtime": {"size": 60, "slide": 10}}}}})
    >>> analytics = Analytics.from_config(spaces, connection="redis://127.0.0.1:6390/0")
    >>> analytics.stream("events").trim_args(), analytics.series("cpu")
    (['MAXLEN', '~', 1000], TimeSeries('cpu', levels=['1m:avg'], retention=86400s, chunk=1h))
    >>> sorted(analytics.counter().windows)
    ['realtime']
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..errors import ConfigError, PrefectMemoryError
from ..units import parse_duration
from ._redis import RedisLink
from .counters import Counter
from .downsample import DownsampleReport
from .streams import EventStream
from .timeseries import TimeSeries
from .tsconfig import SeriesConfig
from .windows import windows_from_config

logger = logging.getLogger("prefect_memory.analytics")
_STREAM_KEYS = {"type", "maxLength", "trimStrategy", "approximate", "maxAge"}
_SERIES_KEYS = {"type", "retention", "downsampling", "lateWindow", "chunk"}


@dataclass
class AnalyticsReport:
    """What :func:`downsample_all` did: one report per series, and the failures.

    Attributes:
        series: One report per series downsampled.
        failed: Series that failed, with their error.
        seconds: Time of the run.
        partition: ``"2/4"`` for one partition of the flow's series, ``"total"`` for the
            merged reports of every partition, ``None`` for the whole namespace in one.

    Example:
        >>> a = AnalyticsReport([DownsampleReport("cpu", chunks=2, points=10,
        ...                                       buckets={"1m": 4})], partition="1/2")
        >>> b = AnalyticsReport([DownsampleReport("mem", chunks=1, points=5,
        ...                                       buckets={"1m": 2})], partition="2/2")
        >>> row = AnalyticsReport.merged([a, b]).row()
        >>> row["partition"], row["series"], row["chunks"], row["points"], row["buckets"]
        ('total', 2, 3, 15, 6)
    """

    series: list[DownsampleReport] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    partition: str | None = None

    @property
    def points(self) -> int:
        """Raw points of the chunks this run wrote, over every series."""
        return sum(r.points for r in self.series)

    @property
    def chunks(self) -> int:
        """Chunks this run wrote, over every series."""
        return sum(r.chunks for r in self.series)

    @property
    def buckets(self) -> int:
        """Buckets this run wrote, over every series and resolution."""
        return sum(sum(r.buckets.values()) for r in self.series)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a Prefect artifact."""
        return {"series": [r.as_dict() for r in self.series], "failed": dict(self.failed),
                "points": self.points, "seconds": self.seconds}  # fmt: skip

    def row(self) -> dict[str, Any]:
        """A table row of the run: partition, series, chunks, points, buckets, seconds."""
        return {
            "partition": self.partition or "all",
            "series": len(self.series),
            "chunks": self.chunks,
            "points": self.points,
            "buckets": self.buckets,
            "seconds": round(self.seconds, 3),
            "failed": len(self.failed),
        }

    @classmethod
    def merged(cls, reports: Iterable[AnalyticsReport]) -> AnalyticsReport:
        """The reports of several partitions as one (``partition="total"``; seconds added,
        as the migration's partition totals are)."""
        out = cls(partition="total")
        for report in reports:
            out.series += report.series
            out.failed.update(report.failed)
            out.seconds += report.seconds
        out.series.sort(key=lambda r: r.series)
        return out

    def markdown(self) -> str:
        """A markdown table of the run (a Prefect artifact's body)."""
        lines = ["| series | chunks | points | buckets | late chunks | trimmed | seconds |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in self.series:
            lines.append(
                f"| {r.series} | {r.chunks} | {r.points} | {sum(r.buckets.values())} | "
                f"{r.late_chunks} | {r.trimmed_chunks} | {r.seconds:.3f} |"
            )
        lines += [f"| {name} | failed: {error} | | | | | |" for name, error in self.failed.items()]
        return "\n".join(lines)


class StreamSection(BaseModel):
    """A ``streams.<name>`` section of ``type: "redis-stream"``, checked (values as written)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    type: Literal["redis-stream"] = "redis-stream"
    max_length: int | None = Field(100_000, alias="maxLength")
    trim: str = Field("MAXLEN", alias="trimStrategy")
    approximate: bool = True
    max_age: Any = Field(None, alias="maxAge")


class SeriesSection(BaseModel):
    """A ``streams.<name>`` section of ``type: "time-series"``, checked (values as written)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    type: Literal["time-series"] = "time-series"
    retention: Any = 86400
    downsampling: list[Any] | None = None
    late_window: Any = Field(None, alias="lateWindow")
    chunk: Any = None


#: One ``streams.<name>`` section, told apart by ``type``.
Section = Annotated[StreamSection | SeriesSection, Field(discriminator="type")]
_SECTION: TypeAdapter[Any] = TypeAdapter(Section)


def read_sections(
    streams: Any, processing: Any
) -> tuple[dict[str, StreamSection | SeriesSection] | None, list[str]]:
    """The ``streams`` sections by name, typed, or ``None`` and every problem of ``streams``
    and ``processing`` (see :func:`check_sections`).

    Example:
        >>> sections, problems = read_sections({"events": {"type": "redis-stream"}}, None)
        >>> sections["events"].max_length, problems
        (100000, [])
    """
    problems = check_sections(streams, processing)
    if problems:
        return None, problems
    return {name: _SECTION.validate_python(spec) for name, spec in (streams or {}).items()}, []


def check_sections(streams: Any, processing: Any) -> list[str]:
    """Every problem of the ``streams`` and ``processing`` sections, with its path.

    Checked without a Redis (``pm.from_config`` calls it, so a bad analytics config fails
    when it is loaded, not when the first stream is opened).

    Example:
        >>> check_sections({"events": {"type": "redis-stream", "maxLength": True}}, None)
        ['memory.streams.events.maxLength: must be a positive integer, got True']
    """
    problems: list[str] = []
    if streams is not None and not isinstance(streams, Mapping):
        problems.append(f"memory.streams: must be an object, got {type(streams).__name__}")
        streams = {}
    for name, spec in (streams or {}).items():
        where = f"memory.streams.{name}"
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        allowed = {"redis-stream": _STREAM_KEYS, "time-series": _SERIES_KEYS}.get(
            kind if isinstance(kind, str) else ""
        )
        if allowed is None:
            problems.append(f"{where}.type: 'redis-stream' or 'time-series', got {kind!r:.60}")
            continue
        problems += [f"{where}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})"
                     for key in spec if key not in allowed]  # fmt: skip
        if kind == "redis-stream":
            problems += [f"{where}.{p}" for p in _stream_problems(spec)]
            continue
        try:
            SeriesConfig.build(
                retention=spec.get("retention", 86400), late_window=spec.get("lateWindow"),
                downsampling=_levels(spec.get("downsampling")), chunk=spec.get("chunk"),
            )  # fmt: skip
        except ConfigError as err:
            lines = str(err).splitlines()[1:] or [str(err)]
            problems += [f"{where}.{line.strip()}" for line in lines]
    if processing is not None and not isinstance(processing, Mapping):
        problems.append(f"memory.processing: must be an object, got {type(processing).__name__}")
        processing = {}
    for key in processing or {}:
        if key != "windows":
            problems.append(f"memory.processing.{key}: unknown key (allowed: windows)")
    try:
        windows_from_config((processing or {}).get("windows"))
    except ConfigError as err:
        lines = str(err).splitlines()[1:] or [str(err)]
        problems += [f"memory.{line.strip()}" for line in lines]
    return problems


def _levels(raw: Any) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"downsampling: must be a list, got {type(raw).__name__}")
    return raw


def _stream_problems(spec: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    length = spec.get("maxLength", 100_000)
    if length is not None and (
        not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 2**63
    ):
        out.append(f"maxLength: must be a positive integer, got {length!r:.60}")
    trim = spec.get("trimStrategy", "MAXLEN")
    if not isinstance(trim, str) or trim.upper() not in ("MAXLEN", "MINID"):
        out.append(f"trimStrategy: must be 'MAXLEN' or 'MINID', got {trim!r:.60}")
    if not isinstance(spec.get("approximate", True), bool):
        out.append(f"approximate: must be true or false, got {spec['approximate']!r:.60}")
    try:
        max_age = parse_duration(spec.get("maxAge"), name="maxAge")
    except ConfigError as err:
        out.append(f"maxAge: {err}")
    else:
        if isinstance(trim, str) and trim.upper() == "MINID" and max_age is None:
            out.append("maxAge: trimStrategy 'MINID' needs maxAge (seconds or '1h')")
    return out


class Analytics:
    """Streams, time series and counters of one analytics config on one Redis.

    Args:
        source: ``redis://`` URL, Redis-backed :class:`~prefect_memory.Memory`, or link.
        streams: The ``streams`` section (by name: ``redis-stream`` or ``time-series``).
        processing: The ``processing`` section (``windows``).
        namespace: Namespace of the keys (default ``"analytics"``).
        **options: Redis options for a URL (``key_prefix``, ``timeout``...).
    """

    def __init__(
        self,
        source: Any,
        streams: Mapping[str, Any] | None = None,
        processing: Mapping[str, Any] | None = None,
        *,
        namespace: str = "analytics",
        **options: Any,
    ) -> None:
        self.link = RedisLink.open(source, namespace=namespace, **options)
        self.streams = dict(streams or {})
        self.processing = dict(processing or {})
        sections, problems = read_sections(self.streams, self.processing)
        if sections is None:
            raise ConfigError("invalid analytics config:\n  " + "\n  ".join(problems))
        #: The ``streams`` sections, typed.
        self.sections = sections
        self.windows = windows_from_config(self.processing.get("windows"))

    @classmethod
    def from_config(
        cls, config: Any, *, connection: Any = None, namespace: str = "analytics", **options: Any
    ) -> Analytics:
        """From ``pm.from_config``'s :class:`~prefect_memory.Namespaces` (or a config dict
        or JSON path).

        The Redis is ``connection`` (URL or memory), else ``$PREFECT_MEMORY_URL`` when it
        is a Redis URL, else the first Redis memory of the config.
        """
        from ..config import Namespaces, from_config

        spaces = config if isinstance(config, Namespaces) else from_config(config)
        if not isinstance(spaces, Namespaces):
            raise ConfigError("an analytics config has a 'streams' section (none found)")
        source = connection
        env = os.environ.get("PREFECT_MEMORY_URL", "")
        if source is None and env.startswith(("redis://", "rediss://")):
            source = env
        if source is None:
            source = next((m for m in spaces.memories.values()
                           if getattr(m.backend, "scheme", None) == "redis"), None)  # fmt: skip
        if source is None:
            raise ConfigError(
                "analytics need a Redis: pass connection='redis://...', set "
                "PREFECT_MEMORY_URL, or add a redis namespace to the config"
            )
        return cls(source, spaces.extras.get("streams"), spaces.extras.get("processing"),
                   namespace=namespace, **options)  # fmt: skip

    def _section(self, kind: str, name: str | None) -> tuple[str, Any]:
        found = {n: s for n, s in self.sections.items() if s.type == kind}
        if name is not None and name in found:
            return name, found[name]
        if name is None and len(found) == 1:
            return next(iter(found.items()))
        raise ConfigError(
            f"no {kind} section {name or ''!r} in streams (has: {', '.join(found) or 'none'})"
        )

    def stream(self, name: str = "events") -> EventStream:
        """The event stream of ``streams.<name>``."""
        _, spec = self._section("redis-stream", name)
        return EventStream(
            self.link, name, max_length=spec.max_length, trim=spec.trim,
            approximate=spec.approximate, max_age=spec.max_age,
        )  # fmt: skip

    def series(self, name: str, section: str | None = None) -> TimeSeries:
        """The time series ``name`` configured by a ``time-series`` section (the only one,
        or ``section``)."""
        _, spec = self._section("time-series", section)
        levels = () if spec.downsampling is None else spec.downsampling
        return TimeSeries(
            self.link, name, retention=spec.retention, downsampling=levels,
            late_window=spec.late_window, chunk=spec.chunk,
        )  # fmt: skip

    def counter(self, alerts: Any = (), **options: Any) -> Counter:
        """A counter over ``processing.windows`` (a tumbling minute without it)."""
        return Counter(self.link, self.windows or None, alerts=alerts, **options)

    def downsample(self, partition: Any = None) -> AnalyticsReport:
        """Downsample every series written in the namespace (each with its stored config).

        A series that fails is reported in ``failed`` and the others still run.

        Args:
            partition: Only the series of this
                :class:`~prefect_memory.tiers.partitions.Partition` (a stable hash of the
                series name; the ``downsample_analytics`` flow maps one task per partition).
        """
        started = time.perf_counter()
        report = AnalyticsReport(partition=None if partition is None else str(partition))
        names = TimeSeries.names(self.link)
        if partition is not None:
            names = [name for name in names if partition.holds(name)]
        for name in names:
            try:
                report.series.append(TimeSeries.open(self.link, name).downsample())
            except (PrefectMemoryError, KeyError, ValueError) as err:
                logger.error("downsampling %s failed: %s", name, err)
                report.failed[name] = f"{type(err).__name__}: {err}"
        report.seconds = time.perf_counter() - started
        for item in report.series:
            logger.info("downsampled %s", item.summary())
        return report


def downsample_all(
    namespaces: Any,
    *,
    connection: Any = None,
    namespace: str = "analytics",
    partition: Any = None,
    **options: Any,
) -> AnalyticsReport:
    """Downsample every time series of an analytics config (the flow's engine).

    Args:
        namespaces: ``pm.from_config(...)`` of the config, the config itself, or its path.
        connection: The Redis (URL or memory); see :meth:`Analytics.from_config`.
        namespace: Namespace of the analytics keys.
        partition: Only the series of this partition (see :meth:`Analytics.downsample`).
        **options: Redis options for a URL.

    Returns:
        An :class:`AnalyticsReport` (``markdown()`` for an artifact).
    """
    analytics = Analytics.from_config(namespaces, connection=connection, namespace=namespace,
                                      **options)  # fmt: skip
    return analytics.downsample(partition)

"""Real-time analytics on Redis: event streams, windowed counters, alerts, time series.

The tutorial's "Real-time Analytics" example as Prefect users would want it:

- :class:`EventStream` / :class:`Consumer`: Redis Streams with ``MAXLEN ~``/``MINID``
  trimming, consumer groups whose position survives restarts with persistence on;
- :class:`Counter` / :class:`Window`: counters per tumbling or sliding window with TTL;
- :class:`Alert`: thresholds checked on every counter update, emitted as Prefect events;
- :class:`TimeSeries`: raw points, incremental exact downsampling, ``range`` as DataFrames;
- :func:`downsample_all` / :class:`Analytics`: everything a ``from_config`` analytics
  section describes, for the scheduled flow.

Importing this package is cheap; numpy, pandas and pandera load with the first name used.

Example:
    >>> from prefect_memory.analytics import Window
    >>> Window(size=60, slide=10).pane_starts(125)
    [70, 80, 90, 100, 110, 120]
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "RedisLink": "_redis",
    "AGGREGATIONS": "aggregate",
    "Window": "windows",
    "windows_from_config": "windows",
    "PointsModel": "models",
    "SeriesConfig": "tsconfig",
    "TimeSeries": "timeseries",
    "Added": "timeseries",
    "DownsampleReport": "downsample",
    "EventStream": "streams",
    "Consumer": "streams",
    "Counter": "counters",
    "Alert": "alerts",
    "AlertFired": "alerts",
    "emit_prefect_event": "alerts",
    "Analytics": "config",
    "downsample_all": "config",
    "plot_series": "plot",
    "series_table": "plot",
    "publish_artifact": "plot",
    "AnalyticsReport": "config",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

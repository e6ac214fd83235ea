"""Raw vs downsampled: a PNG (matplotlib, optional) and a table for a Prefect artifact.

:func:`plot_series` is what ``prefect-memory plot`` calls; :func:`series_table` gives the
rows and markdown of a Prefect table/markdown artifact and :func:`publish_artifact` creates
it (through :mod:`prefect_memory.prefect_bridge`: Prefect imported only there).

Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"bucket": pd.to_datetime([0, 60], unit="s", utc=True),
    ...                       "value": [1.5, 2.0], "count": [3, 1]})
    >>> print(frame_markdown(frame))
    | bucket | value | count |
    | --- | ---: | ---: |
    | 1970-01-01T00:00:00+00:00 | 1.5 | 3 |
    | 1970-01-01T00:01:00+00:00 | 2 | 1 |
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    import pandas as pd

    from .timeseries import TimeSeries


def _figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MissingDependencyError(
            "plots need matplotlib: pip install 'prefect-memory[plot]'"
        ) from err
    return Figure(figsize=(11, 4.5), dpi=110)


def plot_timeseries(
    series: TimeSeries,
    path: str | Path,
    start: Any = None,
    end: Any = None,
    *,
    intervals: list[Any] | None = None,
    title: str | None = None,
    max_raw: int = 200_000,
) -> Path:
    """Draw the raw points of ``[start, end)`` and each resolution's buckets to a PNG.

    Args:
        series: The series.
        path: Where to write the PNG (folders are created).
        start: First time shown (default: everything kept).
        end: End time, excluded.
        intervals: Resolutions drawn (default: every configured one).
        title: Title of the figure (default: the series name).
        max_raw: Most raw points drawn (evenly thinned beyond).

    Returns:
        The path written.
    """
    import pandas as pd

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    raw = series.range(start, end)
    if len(raw) > max_raw:
        raw = raw.iloc[:: -(-len(raw) // max_raw)]
    if len(raw):
        ax.plot(raw["timestamp"], raw["value"], lw=0.6, alpha=0.45, color="0.35",
                label=f"raw ({len(raw):,} shown)")  # fmt: skip
    levels = intervals or [lv.interval for lv in series.config.levels]
    for interval in levels:
        level = series.config.level(interval)
        for agg in level.aggregations:
            buckets = series.range(start, end, interval, aggregation=agg)
            if len(buckets):  # each step drawn to the end of its bucket
                end_of_last = buckets["bucket"].iloc[-1] + pd.Timedelta(level.interval, "s")
                x = [*buckets["bucket"], end_of_last]
                y = [*buckets["value"], buckets["value"].iloc[-1]]
                ax.step(x, y, where="post", lw=1.4, label=f"{level.label} {agg}")
    ax.set_title(title or series.name)
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", bbox_inches="tight")
    return out


def plot_series(
    url: Any,
    name: str,
    out: str | Path,
    start: Any = None,
    end: Any = None,
    *,
    namespace: str | None = "analytics",
    intervals: list[Any] | None = None,
    **options: Any,
) -> Path:
    """Plot the stored series ``name`` (with the config its writer stored) to a PNG.

    Args:
        url: ``redis://`` URL (or a Redis-backed memory).
        name: Name of the series.
        out: Path of the PNG.
        start: First time shown (epoch seconds, datetime, ISO string).
        end: End time, excluded.
        namespace: Namespace of the analytics keys.
        intervals: Resolutions drawn (default: all).
        **options: Redis options (``key_prefix``, ``timeout``...).

    Returns:
        The path written.
    """
    from .timeseries import TimeSeries

    series = TimeSeries.open(url, name, namespace=namespace, **options)
    return plot_timeseries(series, out, start, end, intervals=intervals)


def frame_markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (timestamps in ISO form, numbers with ``%g``)."""
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---" if frame[c].dtype.kind in "OMm" or "datetime" in str(
                 frame[c].dtype) else "---:" for c in columns) + " |"]  # fmt: skip
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if hasattr(value, "isoformat"):
                cells.append(value.isoformat())
            elif isinstance(value, float):
                cells.append(f"{value:g}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def series_table(
    series: TimeSeries, start: Any = None, end: Any = None, interval: Any = None,
    *, max_rows: int = 200,
) -> dict[str, Any]:  # fmt: skip
    """Data for a Prefect artifact: the newest ``max_rows`` buckets of a resolution.

    Returns:
        ``{"key", "description", "rows", "markdown"}``: ``rows`` for
        ``create_table_artifact``, ``markdown`` for ``create_markdown_artifact``.
    """
    level = series.config.level(interval or series.config.levels[0].interval)
    frame = series.range(start, end, level.interval).tail(max_rows)
    rows = [
        {"bucket": b.isoformat(), "value": None if v != v else float(v), "count": int(c)}
        for b, v, c in zip(frame["bucket"], frame["value"], frame["count"], strict=True)
    ]
    title = f"{series.name}: {level.label} {level.aggregations[0]}"
    key = "".join(ch if ch.isalnum() else "-" for ch in f"ts-{series.name}-{level.label}")
    return {"key": key.lower().strip("-"), "description": title, "rows": rows,
            "markdown": f"### {title}\n\n{frame_markdown(frame)}"}  # fmt: skip


def publish_artifact(series: TimeSeries, start: Any = None, end: Any = None,
                     interval: Any = None, *, max_rows: int = 200) -> Any:  # fmt: skip
    """Create a Prefect table artifact of :func:`series_table` (inside a flow or task run).

    Created by :func:`prefect_memory.prefect_bridge.publish_table_artifact` (Prefect is
    imported there, at the call).
    """
    from ..prefect_bridge import publish_table_artifact

    data = series_table(series, start, end, interval, max_rows=max_rows)
    return publish_table_artifact(data["rows"], key=data["key"], description=data["description"])

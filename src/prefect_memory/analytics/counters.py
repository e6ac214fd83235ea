"""Counters per window with TTL: tumbling and sliding windows over Redis panes.

``incr(metric, n)`` adds ``n`` to the pane of each configured window (``INCRBYFLOAT`` +
``EXPIRE`` in one pipeline, which also reads the panes of the current windows back), so
the value of every window is known after each update, and the alerts watching the metric
are checked on it. A pane key reads like the tutorial's: ``metric:<type>:1m`` plus the
pane start, ``{prefix}:{ns}:c:metric:click:1m:1714557600``; it expires once no window
kept (``size + history``) needs it.

Example (the keys of an update; counting needs a Redis server)::

    >>> counter = Counter("redis://127.0.0.1:6390/0", windows={
    ...     "realtime": {"size": 60, "slide": 10}, "hourly": {"size": 3600, "slide": 3600}})
    >>> [(key.split(":c:")[1], ttl) for key, ttl in counter.pane_keys("metric:click", 125)]
    [('metric:click:10s:120', 120), ('metric:click:1h:0', 7200)]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._redis import RedisLink
from .alerts import Alert, AlertFired, emit_prefect_event, log_alert
from .windows import Window, duration_label, windows_from_config

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("prefect_memory.analytics")
Handler = Callable[[AlertFired], Any]


def _windows(spec: Any) -> dict[str, Window]:
    if spec is None:
        return {"1m": Window(60)}
    if isinstance(spec, Window):
        return {spec.name: spec}
    if isinstance(spec, Mapping):
        if all(isinstance(w, Window) for w in spec.values()):
            return dict(spec)
        return windows_from_config(spec)
    out: dict[str, Window] = {}
    for item in spec:
        w = item if isinstance(item, Window) else Window.tumbling(item)
        out[w.name] = w
    return out


class Counter:
    """Counters of metrics per window, with alerts checked on every update.

    Args:
        source: ``redis://`` URL, Redis-backed :class:`~prefect_memory.Memory`, or link.
        windows: ``processing.windows`` of the tutorial (``{"realtime": {"size": 60,
            "slide": 10}}``), :class:`Window` objects, or sizes in seconds; default one
            tumbling minute (``"1m"``).
        alerts: :class:`Alert` objects checked on each update.
        handlers: Called with each :class:`AlertFired` (default: log it and emit a Prefect
            event).
        namespace: Namespace of the keys (default: the memory's, else ``"default"``).
        clock: Source of epoch seconds (tests may pass their own).
        **options: Redis options for a URL (``key_prefix``, ``timeout``...).
    """

    def __init__(
        self,
        source: Any,
        windows: Any = None,
        *,
        alerts: Iterable[Alert] = (),
        handlers: Sequence[Handler] | None = None,
        namespace: str | None = None,
        clock: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        import time

        self.link = RedisLink.open(source, namespace=namespace, **options)
        self.windows = _windows(windows)
        if not self.windows:
            raise ConfigError("a Counter needs at least one window")
        self.alerts = list(alerts)
        for alert in self.alerts:
            self.window(alert.window)  # fail now on an unknown window
        self.handlers = list(handlers) if handlers is not None else [log_alert, emit_prefect_event]
        self.clock = clock or time.time
        ttl: dict[int, int] = {}
        for w in self.windows.values():
            ttl[w.pane] = max(ttl.get(w.pane, 0), w.ttl)
        self._pane_ttl = ttl

    def __repr__(self) -> str:
        shown = {n: f"{w.size}s/{w.slide}s" for n, w in self.windows.items()}
        return f"Counter({self.link.url!r}, windows={shown}, alerts={len(self.alerts)})"

    def window(self, window: Any) -> Window:
        """A configured window by name (``"realtime"``), size label (``"1m"``) or size."""
        if isinstance(window, Window):
            return window
        if isinstance(window, str):
            if window in self.windows:
                return self.windows[window]
            for w in self.windows.values():
                if w.label == window:
                    return w
        else:
            for w in self.windows.values():
                if w.size == window and w.tumbling_window:
                    return w
            return Window.tumbling(window)
        raise ConfigError(f"no window {window!r} (configured: {', '.join(self.windows)})")

    def _key(self, metric: str, pane: int, start: int) -> str:
        return self.link.key("c", metric, duration_label(pane), start)

    def pane_keys(self, metric: str, at: float) -> list[tuple[str, int]]:
        """``(key, ttl)`` of the panes an update of ``metric`` at ``at`` adds to."""
        out: dict[str, int] = {}
        for w in self.windows.values():
            out[self._key(metric, w.pane, w.pane_of(at))] = self._pane_ttl[w.pane]
        return list(out.items())

    def incr(self, metric: str, n: float = 1, *, at: float | None = None) -> dict[str, float]:
        """Add ``n`` to ``metric`` (now or at epoch seconds ``at``); check alerts.

        Returns:
            The value of each window at ``at``, by window name.
        """
        return self.incr_many([(metric, n)], at=at)[metric]

    def incr_many(
        self, updates: Iterable[tuple[str, float]] | Mapping[str, float], *, at: float | None = None
    ) -> dict[str, dict[str, float]]:
        """Add to several metrics in one round trip; return their window values."""
        at = self.clock() if at is None else float(at)
        items = list(updates.items() if isinstance(updates, Mapping) else updates)
        commands: list[tuple[Any, ...]] = []
        reads: list[tuple[str, str, int]] = []  # (metric, window name, panes)
        for metric, n in items:
            if not isinstance(metric, str) or not metric:
                raise TypeError(f"a metric name is a non-empty str, got {metric!r}")
            if isinstance(n, bool) or not isinstance(n, (int, float)):
                raise TypeError(f"a counter increment is a number, got {n!r}")
            for key, ttl in self.pane_keys(metric, at):  # (INCRBY refuses a float pane)
                commands += [("INCRBYFLOAT", key, n), ("EXPIRE", key, ttl)]
        for metric in dict.fromkeys(m for m, _ in items):
            for name, w in self.windows.items():
                keys = [self._key(metric, w.pane, p) for p in w.pane_starts(at)]
                commands.append(("MGET", *keys))
                reads.append((metric, name, len(keys)))
        replies = self.link.pipeline(commands)[-len(reads) :]
        values: dict[str, dict[str, float]] = {}
        for (metric, name, _), reply in zip(reads, replies, strict=True):
            values.setdefault(metric, {})[name] = sum(float(v) for v in reply if v is not None)
        self._check(values, at)
        return values

    def value(self, metric: str, window: Any = None, *, at: float | None = None) -> float:
        """The value of ``metric`` in the window at ``at`` (default: now)."""
        w = self.window(window) if window is not None else next(iter(self.windows.values()))
        at = self.clock() if at is None else float(at)
        keys = [self._key(metric, w.pane, p) for p in w.pane_starts(at)]
        return sum(float(v) for v in self.link.run("MGET", *keys) if v is not None)

    def series(self, metric: str, window: Any, start: float, end: float) -> pd.DataFrame:
        """The window values of ``metric`` for each slide step in ``[start, end)``.

        Returns:
            Columns ``start``, ``end`` (UTC) and ``value``; windows whose panes expired
            count 0.
        """
        import pandas as pd

        w = self.window(window)
        first = (int(start) // w.slide) * w.slide
        steps = list(range(first, int(end), w.slide))
        panes = sorted({p for s in steps for p in w.pane_starts(s)})
        got = self.link.run("MGET", *(self._key(metric, w.pane, p) for p in panes)) if panes else []
        by_pane = {p: float(v) for p, v in zip(panes, got, strict=True) if v is not None}
        rows = []
        for s in steps:
            lo, hi = w.bounds(s)
            rows.append((lo, hi, sum(by_pane.get(p, 0.0) for p in range(lo, hi, w.pane))))
        frame = pd.DataFrame(rows, columns=["start", "end", "value"])
        for column in ("start", "end"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def _check(self, values: dict[str, dict[str, float]], at: float) -> list[AlertFired]:
        fired: list[AlertFired] = []
        for alert in self.alerts:
            w = self.window(alert.window)
            for metric, by_window in values.items():
                value = by_window.get(w.name)
                if value is None or not alert.matches(metric) or not alert.check(value):
                    continue
                start, end = w.bounds(at)
                claim = self.link.key("al", alert.name, metric, start)
                if self.link.run("SET", claim, 1, "NX", "EX", w.ttl) is None:
                    continue  # this window instance already fired (here or elsewhere)
                event = AlertFired(alert, metric, value, float(start), float(end))
                fired.append(event)
                for handler in self.handlers:
                    try:
                        handler(event)
                    except Exception:  # a failing handler must not fail the update
                        logger.exception("alert handler %r failed", handler)
        return fired

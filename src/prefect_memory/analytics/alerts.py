"""Threshold alerts on windowed counters, emitted as Prefect events and logged.

An :class:`Alert` is checked by :class:`~prefect_memory.analytics.counters.Counter` on
every update of a matching metric, against the value of the window the update falls in.
It fires at most once per window instance, across processes: the first updater to see
the condition true claims ``{prefix}:{ns}:al:<alert>:<metric>:<window start>`` with
``SET NX`` (expiring with the window), so ten workers crossing together emit one event.

Firing logs a warning and calls the alert handlers; the default one,
:func:`emit_prefect_event`, sends ``prefect-memory.alert.triggered`` about the resource
``prefect-memory.metric.<metric>``, which a Prefect automation can match (trigger on that
event, filter on ``prefect.resource.id``) to run a deployment, notify, or pause work.

Example:
    >>> alert = Alert("metric:error:*", threshold=100, op=">=", window="1m")
    >>> alert.name, alert.matches("metric:error:db"), alert.check(120.0)
    ('metric:error:* >= 100 over 1m', True, True)
    >>> fired = AlertFired(alert, "metric:error:db", 120.0, 1714557600.0, 1714557660.0)
    >>> event, resource, payload = prefect_event_parts(fired)
    >>> event, resource["prefect.resource.id"], payload["value"]
    ('prefect-memory.alert.triggered', 'prefect-memory.metric.metric:error:db', 120.0)
"""

from __future__ import annotations

import datetime as _dt
import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..keys import glob_match

logger = logging.getLogger("prefect_memory.analytics")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_OP_NAMES = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "ne": "!="}
#: Name of the Prefect event an alert emits.
EVENT_NAME = "prefect-memory.alert.triggered"


@dataclass(frozen=True)
class Alert:
    """Fire when a metric's window value crosses ``threshold``.

    Args:
        metric: Metric name, or a glob of metric names (``"metric:error:*"``).
        threshold: The value compared with.
        op: ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=`` (or ``gt``, ``gte``...).
        window: Name of a counter window (``"realtime"``) or its size label (``"1m"``).
        name: Name of the alert (default: a description of it).
    """

    metric: str
    threshold: float
    op: str = ">"
    window: str = "1m"
    name: str = ""

    def __post_init__(self) -> None:
        op = _OP_NAMES.get(str(self.op).lower(), str(self.op))
        if op not in _OPS:
            raise ConfigError(f"unknown alert op {self.op!r} (known: {', '.join(_OPS)})")
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "threshold", float(self.threshold))
        if not isinstance(self.window, str):  # seconds given: use the size label
            from .windows import duration_label

            object.__setattr__(self, "window", duration_label(float(self.window)))
        if not self.name:
            shown = f"{self.threshold:g}"
            object.__setattr__(self, "name", f"{self.metric} {op} {shown} over {self.window}")

    def matches(self, metric: str) -> bool:
        """Whether this alert watches ``metric``."""
        return metric == self.metric or glob_match(metric, self.metric)

    def check(self, value: float) -> bool:
        """Whether ``value`` crosses the threshold."""
        return _OPS[self.op](float(value), self.threshold)


@dataclass(frozen=True)
class AlertFired:
    """One firing: the alert, the metric, its value and the window it was measured on."""

    alert: Alert
    metric: str
    value: float
    window_start: float
    window_end: float

    def message(self) -> str:
        """The log line of this firing."""
        start = _dt.datetime.fromtimestamp(self.window_start, tz=_dt.timezone.utc)
        return (
            f"alert {self.alert.name!r}: {self.metric} = {self.value:g} "
            f"({self.alert.op} {self.alert.threshold:g}) in the window from {start.isoformat()}"
        )


def prefect_event_parts(fired: AlertFired) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``(event, resource, payload)`` of the Prefect event of a firing."""
    resource = {
        "prefect.resource.id": f"prefect-memory.metric.{fired.metric}",
        "prefect.resource.name": fired.metric,
        "prefect-memory.alert": fired.alert.name,
    }
    payload = {
        "metric": fired.metric, "value": fired.value, "threshold": fired.alert.threshold,
        "op": fired.alert.op, "window": fired.alert.window, "alert": fired.alert.name,
        "window_start": fired.window_start, "window_end": fired.window_end,
    }  # fmt: skip
    return EVENT_NAME, resource, payload


def emit_prefect_event(fired: AlertFired) -> Any:
    """Send the firing to Prefect as an event (``None`` when Prefect is not installed or
    no API is configured; Prefect sends events in the background).

    Sent by :func:`prefect_memory.prefect_bridge.emit_alert_event`, imported at the first
    firing (Prefect with it), not before.
    """
    from ..prefect_bridge import emit_alert_event

    return emit_alert_event(fired)


def log_alert(fired: AlertFired) -> None:
    """Log a firing as a warning (on ``prefect_memory.analytics``)."""
    logger.warning(fired.message())

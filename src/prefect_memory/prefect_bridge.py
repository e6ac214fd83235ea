"""The one module below the flows that calls Prefect: events, artifacts and Secret blocks.

The core (stores, tiers, resilience, analytics, validation) never imports Prefect: it
reports through logging and small callbacks, and the four places where a callback becomes
a Prefect call end here:

- breaker state changes -> Prefect events (:func:`emit_breaker_event`, behind
  :func:`prefect_memory.resilience.breaker.prefect_events_listener`);
- analytics alerts -> Prefect events (:func:`emit_alert_event`, behind
  :func:`prefect_memory.analytics.alerts.emit_prefect_event`);
- time-series tables -> Prefect table artifacts (:func:`publish_table_artifact`, behind
  :func:`prefect_memory.analytics.plot.publish_artifact`);
- encryption keys in Prefect ``Secret`` blocks (:func:`load_secret`, behind
  :meth:`prefect_memory.validation.secrets.PrefectSecretKey.load`).

Those public names stay where users call them; they import this module when they are
used, not before, and this module imports Prefect inside each call. So importing any of
them (or this module) costs no ``import prefect``, and a test can patch
``prefect.events.emit_event`` or ``Secret.load`` as before.

Example:
    >>> from prefect_memory.resilience.breaker import BreakerEvent, BreakerState
    >>> event = BreakerEvent("redis://cache", BreakerState.CLOSED, BreakerState.OPEN,
    ...                      3, "refused", 0.0)
    >>> name, resource, payload = breaker_event_parts(event, None, {"prefect-memory.store": "c"})
    >>> name, resource["prefect.resource.id"], payload["new_state"]
    ('prefect-memory.breaker.opened', 'prefect-memory.breaker.redis://cache', 'open')
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .analytics.alerts import prefect_event_parts
from .errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from .analytics.alerts import AlertFired
    from .resilience.breaker import BreakerEvent

_analytics_logger = logging.getLogger("prefect_memory.analytics")


def breaker_event_parts(
    event: BreakerEvent, resource_id: str | None, labels: Mapping[str, str]
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``(event, resource, payload)`` of the Prefect event of a breaker's state change.

    Args:
        event: The state change.
        resource_id: ``prefect.resource.id`` (default: from the breaker name).
        labels: More resource labels.
    """
    resource = {
        "prefect.resource.id": resource_id or f"prefect-memory.breaker.{event.breaker}",
        "prefect.resource.name": event.breaker,
        **labels,
    }
    payload = {
        "old_state": event.old.value,
        "new_state": event.new.value,
        "failures": event.failures,
        "error": event.error,
    }
    return event.name, resource, payload


def emit_breaker_event(
    event: BreakerEvent, resource_id: str | None = None, labels: Mapping[str, str] | None = None
) -> None:
    """Emit a breaker's state change as a Prefect event (see :func:`breaker_event_parts`)."""
    from prefect.events import emit_event

    name, resource, payload = breaker_event_parts(event, resource_id, labels or {})
    emit_event(event=name, resource=resource, payload=payload)


def emit_alert_event(fired: AlertFired) -> Any:
    """Send an alert's firing to Prefect as an event.

    Returns:
        The event, or ``None`` when Prefect is not installed (a warning is logged) or no API
        is configured; Prefect sends events in the background.
    """
    try:
        from prefect.events import emit_event
    except ImportError:
        _analytics_logger.warning(
            "prefect is not installed: alert %r not sent as an event", fired.alert.name
        )
        return None
    event, resource, payload = prefect_event_parts(fired)
    occurred = _dt.datetime.fromtimestamp(fired.window_end, tz=_dt.timezone.utc)
    now = _dt.datetime.now(tz=_dt.timezone.utc)
    return emit_event(event, resource=resource, payload=payload, occurred=min(occurred, now))


def publish_table_artifact(
    table: Sequence[Mapping[str, Any]], *, key: str | None = None, description: str | None = None
) -> Any:
    """Create a Prefect table artifact (inside a flow or task run); returns its id."""
    from prefect.artifacts import create_table_artifact

    return create_table_artifact(table=table, key=key, description=description)


def load_secret(block_name: str) -> Any:
    """The value of the Prefect ``Secret`` block ``block_name`` (a sync call, usable in flows).

    Raises:
        MissingDependencyError: Prefect is not installed.
        ConfigError: No ``Secret`` block has that name.
    """
    try:
        from prefect.blocks.system import Secret
    except ImportError as err:  # pragma: no cover - prefect is a dev dependency here
        raise MissingDependencyError(
            "a key from a Prefect Secret block needs prefect, a dependency of "
            "prefect-memory: reinstall it (pip install prefect-memory)"
        ) from err
    try:
        block = Secret.load(block_name, _sync=True)  # type: ignore[call-arg]
    except ValueError as err:
        raise ConfigError(f"no Prefect Secret block named {block_name!r}") from err
    return block.get()


__all__ = [
    "breaker_event_parts",
    "emit_alert_event",
    "emit_breaker_event",
    "load_secret",
    "publish_table_artifact",
]

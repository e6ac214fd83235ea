"""Resilience: retries, circuit breakers, deadlines, the resilient wrapper and health.

The hybrid memory (hybrid backend, pending writes, journal, fallback, sync) lives in
:mod:`prefect_memory.hybrid`; its former names here (``HybridMemory``, ``HybridBackend``,
``Journal``, ...) and modules (``prefect_memory.resilience.hybrid``, ``.lanes``,
``.journal``, ``.fallback``, ``.sync``) still work and are the same objects.

Example:
    >>> import prefect_memory as pm
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.resilience import ExponentialBackoff, Retry, protect
    >>> backend = protect(InProcessBackend(), "cache", retry=Retry(ExponentialBackoff(0.05)),
    ...                   breaker=None, deadline=None)
    >>> mem = pm.Memory(backend, "docs")
    >>> mem.set("k", 1); mem.get("k")
    1
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .breaker import (
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    prefect_events_listener,
)
from .health import BackendHealth, HealthReport, health
from .resilient import ResilientBackend, protect
from .retry import Backoff, ConstantBackoff, ExponentialBackoff, Retry

if TYPE_CHECKING:
    from ..hybrid import HybridBackend, HybridMemory, HybridWriteError, Journal, SyncReport

#: Names that moved to :mod:`prefect_memory.hybrid`, resolved on first use (the hybrid
#: package imports this one, so importing it here eagerly would be a cycle).
_MOVED = ("HybridBackend", "HybridMemory", "HybridWriteError", "Journal", "Strategy", "SyncReport")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("prefect_memory.hybrid"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendHealth",
    "Backoff",
    "BreakerEvent",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "ConstantBackoff",
    "ExponentialBackoff",
    "HealthReport",
    "HybridBackend",
    "HybridMemory",
    "HybridWriteError",
    "Journal",
    "ResilientBackend",
    "Retry",
    "SyncReport",
    "health",
    "prefect_events_listener",
    "protect",
]

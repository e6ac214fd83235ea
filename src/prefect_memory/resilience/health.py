"""Health of a memory: every store it is built from, checked at once and within a bound.

:func:`health` walks any composition (a plain memory, a hybrid, tiers, stores wrapped in
a :class:`~prefect_memory.resilience.ResilientBackend`; see
:func:`~prefect_memory.plugins.base.walk`) and reports per store whether it answers, how
fast, the state of its circuit breaker, the journal backlog of a hybrid, and how full it
is, as the store reports it (:meth:`~prefect_memory.plugins.base.Backend.usage`: Redis
``used_memory`` against ``maxmemory``, the MongoDB collection's size, a SQLite file's
size, an in-process store's entries against its bound), and for a tier with a budget the
namespace's bytes and entries against ``max_bytes``/``max_entries``.

Every store is pinged in its own thread, on the store itself (not through its breaker, so
a check never changes a breaker's state); a store that does not answer within
``timeout`` is reported unreachable and the call returns anyway.

Example:
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("memory://?max_entries=10")
    >>> mem.set_many({"a": 1, "b": 2})
    >>> report = health(mem)
    >>> report.ok, [(b.path, b.reachable, b.entries, b.max_entries) for b in report.stores]
    (True, [('store', True, 2, 10)])
    >>> report.stores[0].pressure
    0.2
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..memory import register_memory_method
from ..plugins.base import Backend, Part, walk


@dataclass(frozen=True)
class BackendHealth:
    """The health of one store (or of a hybrid's journal).

    Attributes:
        path: Where it sits in the composition (``store``, ``primary``, ``tier:hot``,
            ``tier:hot/primary``...).
        kind: The backend class.
        url: The store's URL (credentials masked by the backend).
        reachable: It answered a ping within the timeout.
        latency_ms: Round trip of the ping (``None`` when unreachable).
        error: Why it is unreachable, or why usage could not be read.
        breaker: State of its circuit breaker (``None`` without one).
        breaker_failures: Consecutive failures its breaker counted.
        journal_backlog: Hybrid memories: journal entries per lane not yet applied.
        memory_used: Bytes the store uses (Redis ``used_memory``, Mongo collection size,
            SQLite file size).
        memory_limit: Bytes it may use (Redis ``maxmemory``; ``None``: no limit).
        entries: Entries of the namespace in this tier / store (when known).
        max_entries: The bound on ``entries`` (tier budget or in-process bound).
        bytes: Bytes of the namespace's values in this tier (tiers with a byte budget).
        max_bytes: The tier's byte budget.
        details: Anything else worth showing (degraded writes, stuck calls, counts...).
    """

    path: str
    kind: str
    url: str
    reachable: bool
    latency_ms: float | None = None
    error: str | None = None
    breaker: str | None = None
    breaker_failures: int | None = None
    journal_backlog: dict[str, int] | None = None
    memory_used: int | None = None
    memory_limit: int | None = None
    entries: int | None = None
    max_entries: int | None = None
    bytes: int | None = None
    max_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def pressure(self) -> float | None:
        """The fullest of used/limit over memory, entries and bytes (``None``: no limit)."""
        ratios = [
            used / limit
            for used, limit in (
                (self.memory_used, self.memory_limit),
                (self.entries, self.max_entries),
                (self.bytes, self.max_bytes),
            )
            if used is not None and limit
        ]
        return round(max(ratios), 4) if ratios else None


@dataclass(frozen=True)
class HealthReport:
    """What :func:`health` found: one :class:`BackendHealth` per store."""

    stores: tuple[BackendHealth, ...]
    namespace: str
    checked_at: float
    seconds: float

    @property
    def ok(self) -> bool:
        """Every store answered and no breaker is open."""
        return all(s.reachable and s.breaker in (None, "closed") for s in self.stores)

    def store(self, path: str) -> BackendHealth:
        """The health of the store at ``path`` (raises ``KeyError`` if there is none)."""
        for item in self.stores:
            if item.path == path:
                return item
        raise KeyError(path)

    def under_pressure(self, threshold: float = 0.8) -> list[BackendHealth]:
        """Stores at or past ``threshold`` of a limit (memory pressure alerts)."""
        return [s for s in self.stores if (s.pressure or 0.0) >= threshold]

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per store, for a table artifact."""
        return [
            {
                "store": s.path,
                "kind": s.kind,
                "reachable": s.reachable,
                "latency_ms": s.latency_ms,
                "breaker": s.breaker,
                "backlog": sum((s.journal_backlog or {}).values()) or None,
                "pressure": s.pressure,
                "error": s.error,
            }
            for s in self.stores
        ]


# -- probes -----------------------------------------------------------------------------------
def _budget(backend: Backend, ns: str, max_bytes: int | None, limit: int) -> dict[str, Any]:
    """Entries (and bytes when there is a byte budget) of ``ns`` in a tier's store."""
    now = time.time()
    keys: list[str] = []
    for key in backend.scan(ns, None, now=now):
        keys.append(key)
        if len(keys) >= limit:
            break
    out: dict[str, Any] = {"entries": len(keys)}
    if max_bytes is not None:
        total = 0
        for start in range(0, len(keys), 500):
            found = backend.get_many(ns, keys[start : start + 500], now=now, touch=False)
            total += sum(r.size for r in found.values())
        out["bytes"] = total
    if len(keys) >= limit:
        out["details"] = {"counted_up_to": limit}
    return out


@dataclass
class _Probe:
    """One store to check, and what the walk already knows about it."""

    path: str
    backend: Backend
    known: dict[str, Any]
    budget: tuple[str, int | None] | None = None  # (namespace, max_bytes) for tiers
    result: BackendHealth | None = None


def _inherited(part: Part, known: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What the parts above ``part`` tell about its store (breaker state, tier budget)."""
    parent = part.parent
    if parent is None:
        return {}
    return parent.backend.child_facts(part.role, known[id(parent)])


def _items(backend: Backend) -> Iterator[_Probe | BackendHealth]:
    """A probe per store of the composition (and a row per hybrid journal), in order."""
    known: dict[int, dict[str, Any]] = {}
    for part in walk(backend):
        known[id(part)] = mine = _inherited(part, known)
        for row in part.backend.report_rows(part.path):
            yield BackendHealth(**row)
        if part.backend.children():
            continue
        budget = None
        if mine.get("tier") and (mine.get("max_bytes") or mine.get("max_entries")):
            budget = ("", mine.get("max_bytes"))
        yield _Probe(part.path or "store", part.backend, mine, budget)


def _check(probe: _Probe, scan_limit: int) -> None:
    backend, known = probe.backend, dict(probe.known)
    known.pop("tier", None)
    started = time.perf_counter()
    try:
        backend.ping()
    except Exception as err:
        probe.result = BackendHealth(
            probe.path, type(backend).__name__, backend.shown_url, False,
            error=f"{type(err).__name__}: {err}", **known,
        )  # fmt: skip
        return
    latency = round((time.perf_counter() - started) * 1000, 3)
    measured: dict[str, Any] = {}
    details = dict(known.pop("details", {}))
    try:
        usage = backend.usage()
        measured = {} if usage is None else usage.fields()
        if probe.budget is not None:
            ns, max_bytes = probe.budget
            measured.update(_budget(backend, ns, max_bytes, scan_limit))
    except Exception as err:
        measured["error"] = f"usage unavailable: {type(err).__name__}: {err}"
    details.update(measured.pop("details", {}))
    # a tier's budget wins over the store's own bound; measured values fill the rest
    fields = {**known, **measured, **{k: v for k, v in known.items() if v is not None}}
    probe.result = BackendHealth(
        probe.path, type(backend).__name__, backend.shown_url, True,
        latency_ms=latency, details=details, **fields,
    )  # fmt: skip


def health(memory: Any, *, timeout: float = 5.0, scan_limit: int = 100_000) -> HealthReport:
    """Check every store of ``memory`` (a Memory or a Backend) at once, within ``timeout``.

    Args:
        memory: A :class:`~prefect_memory.Memory` (any composition) or a backend.
        timeout: Seconds to wait for all stores together.
        scan_limit: Most keys counted per tier for a budget check.
    """
    started = time.perf_counter()
    if isinstance(memory, Backend):
        backend, namespace = memory, "default"
    else:
        backend, namespace = memory.backend, memory.namespace
    items = list(_items(backend))
    probes = [p for p in items if isinstance(p, _Probe)]
    for probe in probes:
        if probe.budget is not None:
            probe.budget = (namespace, probe.budget[1])
    threads = [
        threading.Thread(target=_check, args=(p, scan_limit), name="pm-health", daemon=True)
        for p in probes
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stores: list[BackendHealth] = []
    for item in items:
        if isinstance(item, BackendHealth):
            stores.append(item)
            continue
        result = item.result
        if result is None:  # still waiting: a stalled store
            known = {k: v for k, v in item.known.items() if k != "tier"}
            result = BackendHealth(
                item.path, type(item.backend).__name__, item.backend.shown_url,
                False, error=f"no answer within {timeout}s", **known,
            )  # fmt: skip
        stores.append(result)
    return HealthReport(tuple(stores), namespace, time.time(), time.perf_counter() - started)


def _memory_health(memory: Any, timeout: float = 5.0) -> HealthReport:
    return health(memory, timeout=timeout)


#: ``mem.health()``, the former method of every memory (``HybridMemory`` keeps its own).
register_memory_method("health", _memory_health, deprecated="prefect_memory.health(mem)")

__all__ = ["BackendHealth", "HealthReport", "health"]

"""Hybrid memory: a primary and a secondary store kept in step, through failures.

The machinery of a hybrid memory, one job per module:

- :mod:`.backend`: :class:`HybridBackend`, the two stores and the write strategies;
- :mod:`.pending`: the writes owed to each store (two journal lanes) and their replay;
- :mod:`.journal`: the durable local journal those writes wait in (SQLite);
- :mod:`.keylocks`: one writer of a key at a time (threads and processes of the machine),
  so a key's writes reach both stores in the same order;
- :mod:`.fallback`: reads around a store that is down, and the rules of a replay;
- :mod:`.sync`: reconciliation of both stores (the ``sync_hybrid`` flow's engine).

Retries, circuit breakers, deadlines and health are :mod:`prefect_memory.resilience`: a
hybrid memory wraps each of its stores with them (:func:`~.resilience.resilient.protect`).
The former paths (``prefect_memory.resilience.hybrid``, ``.lanes``, ``.journal``,
``.fallback``, ``.sync``, and ``prefect_memory.resilience.HybridMemory``) still work.

Example:
    >>> import os, tempfile
    >>> from prefect_memory.hybrid import HybridMemory
    >>> folder = tempfile.mkdtemp()
    >>> mem = HybridMemory("memory://", f"json:///{folder}/backup.json", namespace="docs")
    >>> mem.set("k", {"v": 1})
    >>> mem.secondary.get_many("docs", ["k"], now=0.0)["k"].version
    1
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codecs import Codec
from ..memory import TTL, Memory
from ..plugins.base import Backend
from ..registry import open_backend

# Before our own modules: the resilience package imports its health module, which
# imports .backend (through its former path), so it must load first, whichever of the
# two packages is imported first.
from ..resilience.breaker import CircuitBreaker
from ..resilience.resilient import protect
from ..resilience.retry import Retry
from .backend import HybridBackend, HybridWriteError, Strategy
from .journal import Journal
from .pending import Lanes
from .sync import SyncReport

if TYPE_CHECKING:
    from ..resilience.health import HealthReport


def _backend(spec: Backend | Memory | str, options: dict[str, Any] | None) -> Backend:
    if isinstance(spec, Memory):
        return spec.backend
    if isinstance(spec, Backend):
        return spec
    return open_backend(spec, **(options or {}))


class HybridMemory(Memory):
    """A :class:`~prefect_memory.Memory` over a primary and a secondary store.

    Args:
        primary: URL, backend or memory of the fast store.
        secondary: URL, backend or memory of the durable store.
        strategy: ``"write-through"`` (default) or ``"write-behind"``.
        journal: Journal file (default ``.prefect-memory/journal-<digest>.db``).
        journal_sync: How durable a journal commit is: ``"full"`` (default: an fsync per
            commit, an acknowledged write survives a crash of the machine) or ``"normal"``
            (no fsync per commit: it survives a crash of the process, not of the machine);
            see :mod:`.journal`.
        flush_batch: Journal entries applied per batch.
        flush_interval: Seconds between background flushes.
        accept_degraded: Write-through: acknowledge a write that reached one store and is
            queued for the other instead of raising (see :mod:`.backend`).
        recheck_after: Seconds after a store write failed in a way that may still land
            before its keys are checked in that store (see :meth:`.pending.Lanes.recheck`).
        retry: Retry policy for each store's transient errors.
        breaker: Circuit breaker template; each store gets its own copy, so reads fall
            back to the secondary at once while the primary's breaker is open.
        deadline: Hard bound in seconds on each call to a store.
        primary_options: Backend options when ``primary`` is a URL.
        secondary_options: Backend options when ``secondary`` is a URL.
        namespace: As for :class:`~prefect_memory.Memory`.
        ttl: As for :class:`~prefect_memory.Memory`.
        refresh: As for :class:`~prefect_memory.Memory`.
        codec: As for :class:`~prefect_memory.Memory`.
        batch_size: As for :class:`~prefect_memory.Memory`.
        clock: As for :class:`~prefect_memory.Memory`.
    """

    backend: HybridBackend
    #: Seconds between reconciliations by the ``sync_hybrid`` flow (the config's
    #: ``sync.interval``); ``None`` when periodic sync is off.
    sync_interval: float | None = None

    def __init__(
        self,
        primary: Backend | Memory | str,
        secondary: Backend | Memory | str,
        *,
        strategy: Strategy = "write-through",
        journal: str | None = None,
        journal_sync: str = "full",
        flush_batch: int = 500,
        flush_interval: float = 1.0,
        accept_degraded: bool = False,
        recheck_after: float = 30.0,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        deadline: float | None = None,
        primary_options: dict[str, Any] | None = None,
        secondary_options: dict[str, Any] | None = None,
        namespace: str = "default",
        ttl: TTL = None,
        refresh: bool = False,
        codec: Codec | None = None,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        stores = {
            name: protect(
                _backend(spec, options), name, retry=retry, breaker=breaker, deadline=deadline
            )
            for name, spec, options in (
                ("primary", primary, primary_options),
                ("secondary", secondary, secondary_options),
            )
        }
        backend = HybridBackend(
            stores["primary"],
            stores["secondary"],
            strategy=strategy,
            journal=journal,
            journal_sync=journal_sync,
            flush_batch=flush_batch,
            flush_interval=flush_interval,
            accept_degraded=accept_degraded,
            recheck_after=recheck_after,
        )
        super().__init__(
            backend,
            namespace,
            ttl=ttl,
            refresh=refresh,
            codec=codec,
            batch_size=batch_size,
            clock=clock,
        )

    @property
    def primary(self) -> Backend:
        """The fast store."""
        return self.backend.primary

    @property
    def secondary(self) -> Backend:
        """The durable store."""
        return self.backend.secondary

    def flush(self, timeout: float | None = None) -> int:
        """Apply the journal to both stores now; return the entries applied."""
        return self.backend.flush(timeout)

    def settle(self, timeout: float = 60.0) -> None:
        """Flush, then wait until no write a store timed out on can still land late.

        A store may apply a write it did not answer in time after later writes of the
        same key (a server holding a request). Such keys are rechecked ``recheck_after``
        seconds after the failure and put right; ``settle`` waits for that.

        Raises:
            BackendTimeout: Keys are still in doubt after ``timeout`` seconds.
        """
        self.backend.settle(timeout)

    def backlog(self, lane: str | None = None) -> int:
        """Journal entries not yet applied (to ``"primary"``, ``"secondary"`` or either)."""
        return self.backend.backlog(lane)

    def in_doubt(self, lane: str | None = None) -> int:
        """Keys whose write to a store may still land late, not yet rechecked there."""
        return self.backend.in_doubt(lane)

    def sync(self) -> SyncReport:
        """Reconcile both stores for this namespace (newer write wins)."""
        return self.backend.sync(self.namespace, now=self.clock())

    def health(self, timeout: float = 5.0) -> HealthReport:
        """Reachability, latency, breakers, journal backlog and usage of both stores."""
        from ..resilience.health import health  # deferred: health imports this package

        return health(self, timeout=timeout)


__all__ = [
    "HybridBackend",
    "HybridMemory",
    "HybridWriteError",
    "Journal",
    "Lanes",
    "Strategy",
    "SyncReport",
]

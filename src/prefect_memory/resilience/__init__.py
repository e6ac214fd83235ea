"""Resilience: hybrid memory (write-through / durable write-behind) and its journal.

Example:
    >>> import os, tempfile
    >>> from prefect_memory.resilience import HybridMemory
    >>> folder = tempfile.mkdtemp()
    >>> mem = HybridMemory("memory://", f"json:///{folder}/backup.json", namespace="docs")
    >>> mem.set("k", {"v": 1})
    >>> mem.secondary.get_many("docs", ["k"], now=0.0)["k"].version
    1
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..codecs import Codec
from ..memory import TTL, Memory
from ..plugins.base import Backend
from ..registry import open_backend
from .hybrid import HybridBackend, HybridWriteError, Strategy, SyncReport
from .journal import Journal


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
        journal: Journal file for write-behind.
        flush_batch: Journal entries applied per batch.
        flush_interval: Seconds between background flushes.
        primary_options: Backend options when ``primary`` is a URL.
        secondary_options: Backend options when ``secondary`` is a URL.
        namespace, ttl, refresh, codec, batch_size, clock: As for
            :class:`~prefect_memory.Memory`.
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
        flush_batch: int = 500,
        flush_interval: float = 1.0,
        primary_options: dict[str, Any] | None = None,
        secondary_options: dict[str, Any] | None = None,
        namespace: str = "default",
        ttl: TTL = None,
        refresh: bool = False,
        codec: Codec | None = None,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        backend = HybridBackend(
            _backend(primary, primary_options),
            _backend(secondary, secondary_options),
            strategy=strategy,
            journal=journal,
            flush_batch=flush_batch,
            flush_interval=flush_interval,
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
        """Apply the write-behind journal to the secondary now; return the entries applied."""
        return self.backend.flush(timeout)

    def backlog(self) -> int:
        """Write-behind entries not yet applied to the secondary."""
        return self.backend.backlog()

    def sync(self) -> SyncReport:
        """Reconcile both stores for this namespace (newer write wins)."""
        return self.backend.sync(self.namespace, now=self.clock())



__all__ = ["HybridBackend", "HybridMemory", "HybridWriteError", "Journal", "SyncReport"]

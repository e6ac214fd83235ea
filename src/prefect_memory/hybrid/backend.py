"""Hybrid storage: a primary and a secondary store kept in step, through failures.

Strategies:

- ``write-through``: every write goes to both stores before it returns. When one store
  is unavailable (:class:`~prefect_memory.errors.BackendUnavailable`, an open breaker
  included) and the other took the write, the write is queued in the durable journal for
  the missing store, and then, by default, :class:`HybridWriteError` is raised naming the
  failed store and saying the write is queued (``queued``): the failure is reported, never
  merely logged, and retrying is safe. With ``accept_degraded=True`` such a write is
  acknowledged instead (counted in ``degraded_writes``, logged, visible in ``health``).
  Any other failure raises without queueing, and the primary's copy of the keys is
  dropped so that no reader sees a value only one store has. That includes a
  :class:`~prefect_memory.errors.PermanentBackendError` (a missing bucket, refused
  credentials): waiting cannot fix it, so it is never journaled nor retried.
- ``write-behind``: the write is appended to the :class:`Journal` first (as durably as
  ``journal_sync`` says: ``"full"`` survives a crash of the machine, ``"normal"`` only of
  the process), then written to the primary, and the call returns; a background flusher
  applies the journal to the secondary (``flush_batch`` entries, every ``flush_interval``
  seconds, and at exit). A primary that is unavailable does not fail the write: it is
  queued for the primary too; a primary that refuses for good fails it (nothing is
  queued). A secondary that refuses the replay for good stops its lane (see
  :mod:`~prefect_memory.hybrid.pending`).

Whatever a store missed is replayed to it when it returns (background flusher, or
:meth:`HybridBackend.flush`); a replay never overwrites a newer write of the same key.

Reads go to the primary. When it is unavailable they go to the journal and the secondary
(fallback); a miss reads through the journal and the secondary and repopulates the
primary, so a primary that restarts empty (Redis without persistence) loses nothing.
While the primary has queued writes, reads merge them over what it answers.

Example:
    >>> import os, tempfile
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.plugins.sqlite import SqliteBackend
    >>> primary = InProcessBackend()
    >>> secondary = SqliteBackend(os.path.join(tempfile.mkdtemp(), "s.db"))
    >>> hybrid = HybridBackend(primary, secondary, strategy="write-through")
    >>> from prefect_memory import Memory
    >>> mem = Memory(hybrid, "docs")
    >>> mem.set("k", 1)
    >>> import time
    >>> sorted(primary.get_many("docs", ["k"], now=time.time())), mem.get("k")
    (['k'], 1)
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from ..errors import BackendError, BackendUnavailable, ConfigError
from ..plugins.base import Backend, Capabilities, Record, refuse_stale_reads
from .fallback import FallbackReads
from .journal import PRIMARY, SECONDARY, Journal, check_sync
from .keylocks import KeyLocks
from .pending import Lanes
from .sync import SyncReport, reconcile

logger = logging.getLogger("prefect_memory.hybrid")

Strategy = Literal["write-through", "write-behind"]
STRATEGIES = ("write-through", "write-behind")


class HybridWriteError(BackendError):
    """A write reached only part of a hybrid memory.

    Attributes:
        failed: The stores that failed (``"primary"``/``"secondary"``) and their errors.
        queued: The failed stores the write is queued for in the journal (it will reach
            them when they return; retrying the write is safe either way).
    """

    def __init__(
        self, message: str, failed: dict[str, BaseException], queued: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.failed = failed
        self.queued = queued


_live_hybrids: weakref.WeakSet[HybridBackend] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for backend in list(_live_hybrids):
        with contextlib.suppress(Exception):
            if backend.journal.exists():
                backend.lanes.flush_pass()


def default_journal_path(primary: Backend, secondary: Backend) -> str:
    """``.prefect-memory/journal-<digest of both URLs>.db``: the same in every process."""
    names = f"{primary.url or '?'}+{secondary.url or '?'}"
    digest = hashlib.sha1(names.encode(), usedforsecurity=False).hexdigest()[:16]
    return os.path.join(".prefect-memory", f"journal-{digest}.db")


class HybridBackend(FallbackReads, Backend):
    """Primary + secondary, write-through or durable write-behind (module docstring).

    Args:
        primary: The fast store answering reads.
        secondary: The durable store.
        strategy: ``"write-through"`` or ``"write-behind"``.
        journal: Journal file (default ``.prefect-memory/journal-<digest>.db``, created on
            the first write that needs it).
        journal_sync: How durable a journal commit is: ``"full"`` (default: an fsync per
            commit; an acknowledged write survives a crash of the process and of the
            machine) or ``"normal"`` (no fsync per commit; it survives a crash of the
            process, ``kill -9``, but not an OS crash or power loss). See
            :mod:`~prefect_memory.hybrid.journal`.
        flush_batch: Journal entries applied per batch.
        flush_interval: Seconds between background flushes.
        accept_degraded: Write-through: acknowledge a write that reached one store and is
            queued for the other, instead of raising :class:`HybridWriteError`.
        max_backoff: Longest wait between replays to a store that keeps failing.
        recheck_after: Seconds after a write to a store failed in a way that may still
            land (timeout, reset) before its keys are checked there and repaired if a
            late landing left an older value (see :meth:`.Lanes.recheck`).
    """

    scheme: ClassVar[str] = "hybrid"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(
        self,
        primary: Backend,
        secondary: Backend,
        *,
        strategy: Strategy = "write-through",
        journal: str | None = None,
        journal_sync: str = "full",
        flush_batch: int = 500,
        flush_interval: float = 1.0,
        accept_degraded: bool = False,
        max_backoff: float = 30.0,
        recheck_after: float = 30.0,
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if flush_batch < 1 or flush_interval <= 0 or max_backoff <= 0:
            raise ConfigError("flush_batch must be >= 1, flush_interval and max_backoff > 0")
        if not recheck_after >= 0:
            raise ConfigError(f"recheck_after must be seconds >= 0, got {recheck_after!r}")
        check_sync(journal_sync, "journal_sync")
        refuse_stale_reads("the primary of a hybrid memory", primary)
        refuse_stale_reads("the secondary of a hybrid memory", secondary)
        self.primary = primary
        self.secondary = secondary
        self.strategy = strategy
        self.accept_degraded = bool(accept_degraded)
        self.url = f"hybrid://{primary.url or '?'}+{secondary.url or '?'}"
        self.journal = Journal(
            journal or default_journal_path(primary, secondary), sync=journal_sync
        )
        self.lanes = Lanes(
            self.journal,
            primary,
            secondary,
            # write-behind sends every write to the secondary through its lane
            only_writer=(SECONDARY,) if strategy == "write-behind" else (),
            flush_batch=flush_batch,
            flush_interval=flush_interval,
            max_backoff=max_backoff,
            recheck_after=recheck_after,
        )
        self.lanes.on_applied = self._applied
        self.keylocks = KeyLocks(self.journal.path)
        #: Since when (epoch seconds) the primary has been seen unavailable, else ``None``.
        self.primary_down_since: float | None = None
        #: Write-through writes acknowledged with one store only (``accept_degraded``).
        self.degraded_writes = 0
        _live_hybrids.add(self)
        if self.journal.exists() and (self.journal.backlog() or self.journal.in_doubt()):
            self.lanes.ensure_flusher()  # replay (and recheck) what a previous process left

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HybridBackend:
        """Hybrid memories are built from two stores (``HybridMemory`` or ``from_config``)."""
        raise ConfigError("a hybrid memory is built from a primary and a secondary store")

    def children(self) -> tuple[tuple[str, Backend], ...]:
        """The two stores: ``primary`` and ``secondary``."""
        return (("primary", self.primary), ("secondary", self.secondary))

    def child_facts(self, role: str, above: Mapping[str, Any]) -> dict[str, Any]:
        """Nothing: the journal has a row of its own; each store is checked as it is."""
        return {}

    def report_rows(self, path: str) -> tuple[dict[str, Any], ...]:
        """The row of the journal: its backlog and what this hybrid counts."""
        journal = self.journal
        lanes = (PRIMARY, SECONDARY)
        return (
            {
                "path": f"{path}/journal" if path else "journal",
                "kind": "Journal",
                "url": journal.path,
                "reachable": True,
                "journal_backlog": {lane: journal.backlog(lane) for lane in lanes},
                "details": {
                    "strategy": self.strategy,
                    "journal_sync": journal.sync,
                    "degraded_writes": self.degraded_writes,
                    "primary_down_since": self.primary_down_since,
                    "last_flush_error": self.last_flush_error,
                    "last_replay_error": self.last_replay_error,
                    "in_doubt": {lane: journal.in_doubt(lane) for lane in lanes},
                    "repaired_late_writes": dict(self.repaired),
                },
            },
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("keylocks", None)  # made again from the journal's path (older pickles too)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.keylocks = KeyLocks(self.journal.path)
        self.lanes.on_applied = self._applied
        _live_hybrids.add(self)

    # -- the journal ------------------------------------------------------------------------
    @property
    def flush_batch(self) -> int:
        """Journal entries applied per batch."""
        return self.lanes.flush_batch

    @flush_batch.setter
    def flush_batch(self, value: int) -> None:
        self.lanes.flush_batch = value

    @property
    def journal_sync(self) -> str:
        """How durable a journal commit is: ``"full"`` or ``"normal"`` (see the class)."""
        return self.journal.sync

    @property
    def flush_interval(self) -> float:
        """Seconds between background flushes."""
        return self.lanes.flush_interval

    @property
    def last_flush_error(self) -> str | None:
        """Last failure of the background flusher applying writes to the secondary."""
        return self.lanes.errors[SECONDARY]

    @property
    def last_replay_error(self) -> str | None:
        """Last failure of the background flusher replaying writes to the primary."""
        return self.lanes.errors[PRIMARY]

    def flush_once(self) -> int:
        """Apply one batch of the journal to the secondary; return how many entries."""
        return self.lanes.drain_once(SECONDARY, wait=30.0)

    def replay_once(self) -> int:
        """Apply one batch of the writes the primary missed; return how many entries."""
        return self.lanes.drain_once(PRIMARY, wait=30.0)

    def flush(self, timeout: float | None = None) -> int:
        """Apply the whole journal (both lanes) now; see :meth:`.Lanes.flush`."""
        return self.lanes.flush(timeout)

    def settle(self, timeout: float = 60.0) -> None:
        """Flush, then wait until no write can still land late; see :meth:`.Lanes.settle`."""
        self.lanes.settle(timeout)

    def backlog(self, lane: str | None = None) -> int:
        """Journal entries not yet applied (to ``"primary"``, ``"secondary"``, or either)."""
        return self.lanes.backlog(lane)

    def in_doubt(self, lane: str | None = None) -> int:
        """Keys whose write to a store may still land late, not yet rechecked there."""
        return self.lanes.in_doubt(lane)

    @property
    def repaired(self) -> dict[str, int]:
        """Keys put back per store after a late write had overwritten them."""
        return self.lanes.repaired

    # -- bookkeeping of the primary's health -------------------------------------------------
    def _applied(self, lane: str) -> None:
        if lane == PRIMARY and not self.lanes.pending(PRIMARY):
            self.primary_down_since = None

    def _primary_failed(self, err: BaseException) -> None:
        if self.primary_down_since is None:
            self.primary_down_since = time.time()
            logger.warning("primary store unavailable, serving from the secondary: %s", err)

    def _primary_answered(self) -> None:
        if self.primary_down_since is not None:
            if not self.lanes.pending(PRIMARY):
                self.primary_down_since = None
                return
            self.lanes.ensure_flusher()
            self.lanes.kick()  # replay what it missed now rather than at the next interval

    def _drop_from_primary(self, ns: str, keys: Sequence[str], now: float) -> None:
        """Best effort: remove the primary's copy so readers fall through to the secondary."""
        with contextlib.suppress(Exception):
            self.lanes.direct(
                PRIMARY, ns, None, keys, lambda: self.primary.delete_many(ns, keys, now=now),
                now=now,
            )  # fmt: skip

    # -- writes -------------------------------------------------------------------------------
    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        if self.strategy == "write-behind":
            self._write_behind(ns, records, (), now)
        else:
            self._write_through("write", ns, records, (), now)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        if self.strategy == "write-behind":
            live = self._live_for_delete(ns, keys, now)
            self._write_behind(ns, None, keys, now)
            return len(live)
        counts = self._write_through("delete", ns, None, keys, now)
        return max(n for n in counts if n is not None)

    def _live_for_delete(self, ns: str, keys: Sequence[str], now: float) -> set[str]:
        """Keys a delete removes; with the secondary down, as far as the rest knows."""
        try:
            return self.exists_many(ns, keys, now=now)
        except BackendUnavailable:  # the delete itself needs only the journal
            found = self.primary.exists_many(ns, keys, now=now)
            for key, entry in self.journal.latest(ns, keys).items():
                if entry.record is not None and not entry.record.expired(now):
                    found.add(key)
            return found

    @staticmethod
    def _writer(
        ns: str, puts: Mapping[str, Record] | None, deletes: Sequence[str], now: float
    ) -> Callable[[Backend], Any]:
        def write(store: Backend) -> Any:
            if puts is not None:
                return store.put_many(ns, puts, now=now)
            return store.delete_many(ns, deletes, now=now)

        return write

    def _write_behind(
        self, ns: str, puts: Mapping[str, Record] | None, deletes: Sequence[str], now: float
    ) -> None:
        write = self._writer(ns, puts, deletes, now)
        # the journal's order (the secondary's) is the primary's: one writer of a key at a time
        with self.keylocks.hold(ns, puts if puts is not None else deletes):
            # the entry and the state of the primary's lane: one transaction
            seqs, busy = self.journal.append_checked(ns, puts=puts, deletes=deletes, at=now)
            try:
                self.lanes.direct(
                    PRIMARY, ns, puts, deletes, lambda: write(self.primary), now=now, busy=busy
                )
            except BackendUnavailable as err:  # journaled: acknowledged, replayed later
                self._primary_failed(err)
                self.lanes.queue(PRIMARY, ns, puts, deletes, now=now)
            except Exception:
                # Refused for good (not a connectivity problem): the write is not
                # acknowledged, so it must not reach the secondary either.
                with contextlib.suppress(Exception):
                    self.journal.remove(seqs)
                raise
            else:
                self._primary_answered()
        self.lanes.ensure_flusher()
        self.lanes.queued(len(seqs))

    def _write_through(
        self,
        what: str,
        ns: str,
        puts: Mapping[str, Record] | None,
        deletes: Sequence[str],
        now: float,
    ) -> list[Any]:
        keys = list(puts) if puts is not None else list(deletes)
        # both stores in the same order of writes of a key: one writer of a key at a time
        with self.keylocks.hold(ns, keys):
            return self._write_both(what, ns, puts, deletes, keys, now)

    def _write_both(
        self,
        what: str,
        ns: str,
        puts: Mapping[str, Record] | None,
        deletes: Sequence[str],
        keys: list[str],
        now: float,
    ) -> list[Any]:
        write = self._writer(ns, puts, deletes, now)
        failed: dict[str, BaseException] = {}
        results: list[Any] = []
        try:  # both lanes in one query (none busy while there is no journal file)
            busy: frozenset[str] | None = self.journal.busy_lanes()
        except BackendUnavailable:
            busy = None  # each store's write reads it again, and fails as it would
        # A delete reaches the secondary first: a refill of the primary that read the key
        # before it then sees it gone when it checks again (FallbackReads._recheck_refill).
        order = ((PRIMARY, self.primary), (SECONDARY, self.secondary))
        for name, store in order if puts is not None else order[::-1]:
            try:
                call = functools.partial(write, store)
                is_busy = None if busy is None else name in busy
                results.append(
                    self.lanes.direct(name, ns, puts, deletes, call, now=now, busy=is_busy)
                )
            except Exception as err:
                failed[name] = err
                results.append(None)
        if PRIMARY in failed and isinstance(failed[PRIMARY], BackendUnavailable):
            self._primary_failed(failed[PRIMARY])
        elif PRIMARY not in failed:
            self._primary_answered()
        if not failed:
            return results
        queued: tuple[str, ...] = ()
        (name, error), *others = failed.items()
        if not others and isinstance(error, BackendUnavailable):
            try:
                self.lanes.queue(name, ns, puts, deletes, now=now)
                queued = (name,)
            except BackendUnavailable as journal_err:
                failed["journal"] = journal_err
        if not queued and sum(n not in failed for n in (PRIMARY, SECONDARY)) == 1:
            # One store has the write, the other does not and will not get it: the
            # primary's copy goes, so that readers see what the secondary holds.
            self._drop_from_primary(ns, keys, now)
        if queued and self.accept_degraded:
            self.degraded_writes += 1
            logger.warning(
                "hybrid %s reached only the %s store; queued for the %s store (%s: %s)",
                what, SECONDARY if name == PRIMARY else PRIMARY, name, type(error).__name__, error,
            )  # fmt: skip
            return results
        detail = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in failed.items())
        tail = f"; queued for the {name} store" if queued else ""
        raise HybridWriteError(
            f"hybrid {what} did not reach every store ({detail}){tail}", failed, queued
        )

    def ping(self) -> None:
        """Raise :class:`HybridWriteError` naming the store(s) that do not answer."""
        failed: dict[str, BaseException] = {}
        for name, store in (("primary", self.primary), ("secondary", self.secondary)):
            try:
                store.ping()
            except Exception as err:
                failed[name] = err
        if failed:
            detail = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in failed.items())
            raise HybridWriteError(f"hybrid ping did not reach every store ({detail})", failed)

    def close(self) -> None:
        """Apply what can be applied now (one pass), stop the flusher, close both stores."""
        self.lanes.stop()
        if self.journal.exists():
            self.lanes.flush_pass()
        self.primary.close()
        self.secondary.close()

    # -- reconciliation -----------------------------------------------------------------------
    def sync(self, ns: str, *, now: float, batch_size: int = 500) -> SyncReport:
        """Apply the journal, then reconcile both stores for ``ns`` (newer write wins)."""
        self.flush()
        return reconcile(self.primary, self.secondary, ns, now=now, batch_size=batch_size)


__all__ = ["STRATEGIES", "HybridBackend", "HybridWriteError", "Strategy", "SyncReport"]

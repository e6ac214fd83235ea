"""The writes a hybrid memory owes each store: two journal lanes and their replay.

A :class:`Lanes` object owns the :class:`~.journal.Journal` of a hybrid memory and knows
its two stores. It queues writes for a store (``queue``), applies them in journal order
(``drain_once``, ``flush``, a background flusher with exponential backoff), and keeps a
store's own order when the memory writes to it directly (``direct``): before a key is
written to a store, whatever is still queued for that key in that store's lane is applied
first, under the lane's lock (one flusher per lane across threads and processes), so an
old queued write can never land after a newer direct one, and a queued write can never
resurrect a key deleted since.

Example:
    >>> import os, tempfile
    >>> from prefect_memory.plugins.base import Record
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.resilience.journal import Journal
    >>> primary, secondary = InProcessBackend(), InProcessBackend()
    >>> lanes = Lanes(Journal(os.path.join(tempfile.mkdtemp(), "j.db")), primary, secondary)
    >>> lanes.queue("primary", "ns", {"k": Record(b"v", 1.0, 1.0, 1.0)}, (), now=1.0)
    >>> lanes.backlog("primary"), lanes.flush(timeout=5), lanes.backlog()
    (1, 1, 0)
    >>> sorted(primary.scan("ns", None, now=1.0))
    ['k']
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import BackendTimeout, BackendUnavailable
from ..plugins.base import Backend, Record
from .fallback import apply_entries
from .journal import PRIMARY, SECONDARY, Entry, Journal
from .retry import ExponentialBackoff

logger = logging.getLogger("prefect_memory.hybrid")

T = TypeVar("T")
_FLUSH_RETRY = ExponentialBackoff(0.05, cap=1.0)


class Lanes:
    """Queues of writes per store, replayed in order (module docstring).

    Args:
        journal: Where the queued writes live.
        primary: The store of the ``"primary"`` lane.
        secondary: The store of the ``"secondary"`` lane.
        only_writer: Lanes whose store gets every write through the lane (write-behind's
            secondary): their replay skips the check for a newer write in the store.
        flush_batch: Entries applied per batch.
        flush_interval: Seconds between background passes.
        max_backoff: Longest wait between passes while a store keeps failing.
        lane_wait: Most seconds a direct write waits for a lane busy with a replay.
    """

    def __init__(
        self,
        journal: Journal,
        primary: Backend,
        secondary: Backend,
        *,
        only_writer: tuple[str, ...] = (),
        flush_batch: int = 500,
        flush_interval: float = 1.0,
        max_backoff: float = 30.0,
        lane_wait: float = 10.0,
    ) -> None:
        self.journal = journal
        self.stores = {PRIMARY: primary, SECONDARY: secondary}
        self.only_writer = tuple(only_writer)
        self.flush_batch = flush_batch
        self.flush_interval = float(flush_interval)
        self.backoff = ExponentialBackoff(flush_interval, cap=max(max_backoff, flush_interval))
        self.lane_wait = lane_wait
        #: Last failure per lane of the background flusher (``None`` once it succeeds).
        self.errors: dict[str, str | None] = {PRIMARY: None, SECONDARY: None}
        #: Called with the lane after a batch was applied to its store.
        self.on_applied: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake: threading.Event | None = None
        self._stop: threading.Event | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_thread", "_wake", "_stop", "on_applied"):
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- queueing -------------------------------------------------------------------------
    def pending(self, lane: str) -> bool:
        """Tell whether writes are queued for ``lane``'s store."""
        return self.journal.has_pending(lane)

    def backlog(self, lane: str | None = None) -> int:
        """Entries queued (for ``lane``, or for either store)."""
        return self.journal.backlog(lane)

    def queue(
        self,
        lane: str,
        ns: str,
        puts: Mapping[str, Record] | None,
        deletes: Sequence[str],
        *,
        now: float,
    ) -> None:
        """Durably queue writes for ``lane``'s store and make sure a flusher runs."""
        self.journal.append(ns, puts=puts, deletes=deletes, at=now, lanes=(lane,))
        self.ensure_flusher()

    def direct(self, lane: str, ns: str, keys: Sequence[str], call: Callable[[], T]) -> T:
        """Run ``call`` (a write of ``keys`` to ``lane``'s store) after what is queued for them.

        Raises:
            BackendTimeout: The lane stayed busy (another flusher) for ``lane_wait`` seconds.
            Whatever the store raises while the queued writes are applied.
        """
        if not self.journal.has_pending(lane):
            return call()
        with self.journal.flush_lock(lane, self.lane_wait) as got:
            if not got:
                raise BackendTimeout(f"the {lane} store's queue stayed busy {self.lane_wait}s")
            queued = self.journal.pending_for(ns, keys, lane)
            if queued:
                self._apply(lane, queued)
            return call()

    # -- replay ---------------------------------------------------------------------------
    def _apply(self, lane: str, entries: Sequence[Entry]) -> None:
        guard = lane not in self.only_writer
        apply_entries(self.stores[lane], entries, now=time.time(), guard=guard)
        self.journal.remove(e.seq for e in entries)
        if self.on_applied is not None:
            self.on_applied(lane)

    def drain_once(self, lane: str, wait: float = 0.0) -> int:
        """Apply one batch of ``lane`` to its store; return how many entries (0: none, busy)."""
        if not self.journal.has_pending(lane):
            return 0  # (and no lock file for a journal that was never needed)
        with self.journal.flush_lock(lane, wait) as got:
            if not got:
                return 0
            entries = self.journal.pending(self.flush_batch, lane)
            if entries:
                self._apply(lane, entries)
            return len(entries)

    def flush_pass(self) -> bool:
        """Drain both lanes once, as the background flusher does; ``False`` if one failed."""
        ok = True
        for lane in (SECONDARY, PRIMARY):
            try:
                while self.drain_once(lane):
                    pass
                self.errors[lane] = None
            except Exception as err:  # keep the journal; try again later with backoff
                ok = False
                self.errors[lane] = f"{type(err).__name__}: {err}"
                logger.warning("replay to the %s store failed (will retry): %s", lane, err)
        return ok

    def flush(self, timeout: float | None = None) -> int:
        """Apply every queued write now; return how many entries were applied.

        Args:
            timeout: Most seconds to spend; an unavailable store (or an open breaker) is
                tried again until then. ``None``: one pass, raising the first error.

        Raises:
            BackendUnavailable: A store is still unavailable (its entries stay queued).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        applied = failures = 0
        for lane in (SECONDARY, PRIMARY):
            while True:
                left = 30.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    if self.journal.has_pending(lane):
                        raise BackendTimeout(f"flush of the {lane} lane did not end in time")
                    break
                try:
                    n = self.drain_once(lane, wait=min(left, 30.0))
                except BackendUnavailable as err:
                    failures += 1
                    pause = max(getattr(err, "retry_after", 0.0), _FLUSH_RETRY.compute(failures))
                    if deadline is None or time.monotonic() + pause >= deadline:
                        raise
                    time.sleep(pause)
                    continue
                if not n:
                    break
                applied += n
        return applied

    # -- the background flusher -----------------------------------------------------------
    def _running(self) -> bool:
        thread, stop = self._thread, self._stop
        return thread is not None and thread.is_alive() and stop is not None and not stop.is_set()

    def ensure_flusher(self) -> None:
        """Start the background flusher unless it runs."""
        if self._running():
            return
        with self._lock:
            if self._running():
                return
            wake, stop = threading.Event(), threading.Event()
            self._wake, self._stop = wake, stop
            self._thread = threading.Thread(
                target=_flush_loop,
                args=(weakref.ref(self), wake, stop),
                name="prefect-memory-write-behind",
                daemon=True,
            )
            self._thread.start()

    def kick(self) -> None:
        """Make the flusher run a pass now rather than at its next interval."""
        if self._wake is not None:
            self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the flusher, waiting up to ``timeout`` for its current pass to end.

        A later ``queue`` (or ``ensure_flusher``) starts a new one.
        """
        if self._stop is not None and self._wake is not None:
            self._stop.set()
            self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _flush_loop(ref: weakref.ref[Lanes], wake: threading.Event, stop: threading.Event) -> None:
    """The background flusher; it ends when stopped or when its lanes are garbage."""
    failures = 0
    while not stop.is_set():
        lanes = ref()
        if lanes is None:
            return
        delay = lanes.flush_interval if not failures else lanes.backoff.compute(failures)
        del lanes
        wake.wait(delay)
        wake.clear()
        lanes = ref()
        if lanes is None or stop.is_set():
            return
        with contextlib.suppress(Exception):  # flush_pass reports its own errors
            failures = 0 if lanes.flush_pass() else failures + 1
        del lanes


__all__ = ["Lanes"]

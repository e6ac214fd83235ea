"""Pending writes: what a hybrid memory owes each store, in two journal lanes, and their replay.

A :class:`Lanes` object owns the :class:`~.journal.Journal` of a hybrid memory and knows
its two stores. It queues writes for a store (``queue``), applies them in journal order
(``drain_once``, ``flush``, a background flusher with exponential backoff), and keeps a
store's own order when the memory writes to it directly (``direct``): before a key is
written to a store, whatever is still queued for that key in that store's lane is applied
first, under the lane's lock (one flusher per lane across threads and processes), so an
old queued write can never land after a newer direct one, and a queued write can never
resurrect a key deleted since. A write that may still land late (a timeout, a reset, a
driver's retry) puts its keys in doubt; they are rechecked in the store ``recheck_after``
seconds later and put right (``recheck``; ``settle`` waits for it).

A store that refuses a replay for good (:class:`~prefect_memory.errors.PermanentBackendError`:
a missing bucket, refused credentials, a name too long) is not retried: the background
flusher stops replaying that lane (``refused`` names the error, logged once), its writes
stay in the journal, and an explicit :meth:`Lanes.flush` (after the store was fixed)
tries again, raising the error at once if it persists. Retrying with backoff would only
repeat the same refusal forever.

Example:
    >>> import os, tempfile
    >>> from prefect_memory.plugins.base import Record
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.hybrid.journal import Journal
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
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import BackendTimeout, BackendUnavailable, PermanentBackendError, maybe_applied
from ..plugins.base import Backend, Record
from ..resilience.retry import ExponentialBackoff
from .fallback import apply_entries, coalesce
from .journal import PRIMARY, SECONDARY, Doubt, Entry, Journal

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
        recheck_after: Seconds after a write failed in a way that may still land (a
            timeout, a reset connection) before its keys are checked in the store and
            repaired if a late landing left an older value there.
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
        recheck_after: float = 30.0,
    ) -> None:
        self.journal = journal
        self.stores = {PRIMARY: primary, SECONDARY: secondary}
        self.only_writer = tuple(only_writer)
        self.flush_batch = flush_batch
        self.flush_interval = float(flush_interval)
        self.backoff = ExponentialBackoff(flush_interval, cap=max(max_backoff, flush_interval))
        self.lane_wait = lane_wait
        self.recheck_after = float(recheck_after)
        #: Keys a check found overwritten by a late write, and put back, per lane.
        self.repaired: dict[str, int] = {PRIMARY: 0, SECONDARY: 0}
        #: Last failure per lane of the background flusher (``None`` once it succeeds).
        self.errors: dict[str, str | None] = {PRIMARY: None, SECONDARY: None}
        #: Lanes whose store refused a replay for good: the error; the background flusher
        #: leaves them alone until :meth:`flush` succeeds.
        self.refused: dict[str, str | None] = {PRIMARY: None, SECONDARY: None}
        #: Called with the lane after a batch was applied to its store.
        self.on_applied: Callable[[str], None] | None = None
        #: Entries queued since the flusher was last kicked (see :meth:`queued`).
        self.since_kick = 0
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
        self.__dict__.setdefault("refused", {PRIMARY: None, SECONDARY: None})
        self.since_kick = 0
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

    def direct(
        self,
        lane: str,
        ns: str,
        puts: Mapping[str, Record] | None,
        deletes: Sequence[str],
        call: Callable[[], T],
        *,
        now: float,
        busy: bool | None = None,
    ) -> T:
        """Run ``call`` (the write ``puts``/``deletes`` to ``lane``'s store) in lane order.

        What is still queued for these keys is applied first; a failure that may still
        land puts the keys in doubt (see :meth:`recheck`). ``busy`` is what the caller
        just read of :meth:`.Journal.busy` for ``lane`` in a query of its own (``None``:
        it is read here).

        Raises:
            BackendTimeout: The lane stayed busy (another flusher) for ``lane_wait`` seconds.
            BackendError: Whatever the store raises while the queued writes are applied.
        """
        writes = _writes(puts, deletes)
        if not (self.journal.busy(lane) if busy is None else busy):
            return self._write(lane, ns, writes, call, now=now)
        with self.journal.flush_lock(lane, self.lane_wait) as got:
            if not got:
                raise BackendTimeout(f"the {lane} store's queue stayed busy {self.lane_wait}s")
            queued = self.journal.pending_for(ns, [k for k, _ in writes], lane)
            if queued:
                self._apply(lane, queued)
            result = self._write(lane, ns, writes, call, now=now)
            if self.journal.has_doubts(lane):
                self.journal.written(lane, ns, [(k, r, now) for k, r in writes])
            return result

    def _write(
        self, lane: str, ns: str, writes: Sequence[_Write], call: Callable[[], T], *, now: float
    ) -> T:
        """Run ``call``, the store write of ``writes``; put their keys in doubt if need be."""
        keys = [k for k, _ in writes]
        retried = self.stores[lane].retried_writes
        try:
            result = call()
        except BackendUnavailable as err:
            if maybe_applied(err):
                self._doubt(lane, ns, keys)
            raise
        if self.stores[lane].retried_writes != retried:  # a failed attempt may land late
            self._doubt(lane, ns, keys)
            self.journal.written(lane, ns, [(k, r, now) for k, r in writes])
        return result

    def _doubt(self, lane: str, ns: str, keys: Iterable[str]) -> None:
        try:
            self.journal.doubt(lane, ns, keys, due=time.time() + self.recheck_after)
        except BackendUnavailable as err:  # never hide the store's own outcome behind it
            logger.error(
                "cannot record keys in doubt for the %s store (a late write there will "
                "not be rechecked; run sync): %s", lane, err,
            )  # fmt: skip
            return
        self.ensure_flusher()

    # -- replay ---------------------------------------------------------------------------
    def _apply(self, lane: str, entries: Sequence[Entry]) -> None:
        guard = lane not in self.only_writer
        retried = self.stores[lane].retried_writes
        try:
            apply_entries(self.stores[lane], entries, now=time.time(), guard=guard)
        except BackendUnavailable as err:
            if maybe_applied(err):
                for ns, last in coalesce(entries).items():
                    self._doubt(lane, ns, last)
            raise
        if self.stores[lane].retried_writes != retried:  # a failed attempt may land late
            for ns, last in coalesce(entries).items():
                self._doubt(lane, ns, last)
        if self.journal.has_doubts(lane):
            for ns, last in coalesce(entries).items():
                self.journal.written(lane, ns, [(e.key, e.record, e.at) for e in last.values()])
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

    # -- writes in doubt -------------------------------------------------------------------
    def in_doubt(self, lane: str | None = None) -> int:
        """Keys whose write may still land late, not checked yet (``lane`` or both)."""
        return self.journal.in_doubt(lane)

    def recheck(self, lane: str, *, wait: float = 0.0) -> int:
        """Check ``lane``'s keys in doubt that are due; return how many were put back.

        A store may apply a write long after the client gave up on it (SeaweedFS was seen
        applying a PUT 5 s later, after newer writes of the same key had been answered).
        ``recheck_after`` seconds after such a failure, each key's value in the store is
        compared with the last write that reached it since: an older value (or a key a
        late delete removed) is replaced by that write, a value a late put brought back
        after a delete is removed. Keys with writes still queued wait for them.
        """
        store = self.stores[lane]
        if not self.journal.has_doubts(lane) or getattr(store, "stuck", 0):
            return 0  # (a call abandoned at its deadline still runs: it could land later)
        fixed = 0
        with self.journal.flush_lock(lane, wait) as got:
            if not got:
                return 0
            while True:
                due = self.journal.due_doubts(lane, time.time(), self.flush_batch)
                n, checked = self._check(lane, due)
                fixed += n
                if not checked or len(due) < self.flush_batch:
                    break
        if fixed:
            self.repaired[lane] += fixed
            logger.warning(
                "put back %d key(s) in the %s store that a late write had overwritten",
                fixed, lane,
            )  # fmt: skip
        return fixed

    def _check(self, lane: str, doubts: Sequence[Doubt]) -> tuple[int, int]:
        """Check and repair ``doubts``; return ``(repaired, checked)``."""
        store = self.stores[lane]
        now = time.time()
        by_ns: dict[str, dict[str, Doubt]] = {}
        for doubt in doubts:
            by_ns.setdefault(doubt.ns, {})[doubt.key] = doubt
        checked: list[Doubt] = []
        fixed = 0
        for ns, group in by_ns.items():
            queued = {e.key for e in self.journal.pending_for(ns, list(group), lane)}
            group = {k: d for k, d in group.items() if k not in queued and d.op != "?"}
            if group:
                held = store.get_many(ns, list(group), now=now, touch=False)
                puts, stale = _repairs(group, held, now)
                # (a repair that may itself land late pushes the key's recheck later)
                if puts:
                    put = functools.partial(store.put_many, ns, puts, now=now)
                    self._write(lane, ns, _writes(puts, ()), put, now=now)
                if stale:
                    drop = functools.partial(store.delete_if_unchanged, ns, stale, now=now)
                    self._write(lane, ns, _writes(None, list(stale)), drop, now=now)
                fixed += len(puts) + len(stale)
            # nothing reached the store after the failure: nothing to hold it to
            checked += [d for k, d in by_ns[ns].items() if k not in queued]
        self.journal.resolve(checked)
        return fixed, len(checked)

    def flush_pass(self) -> bool:
        """Drain both lanes once, as the background flusher does; ``False`` if one failed."""
        ok = True
        for lane in (SECONDARY, PRIMARY):
            if self.refused[lane] is not None:
                continue  # refused for good: only an explicit flush() tries again
            try:
                while self.drain_once(lane):
                    pass
                self.recheck(lane)
                self.errors[lane] = None
            except PermanentBackendError as err:
                self._refuse(lane, err)
            except Exception as err:  # keep the journal; try again later with backoff
                ok = False
                self.errors[lane] = f"{type(err).__name__}: {err}"
                logger.warning("replay to the %s store failed (will retry): %s", lane, err)
        return ok

    def _refuse(self, lane: str, err: PermanentBackendError) -> None:
        """Stop replaying ``lane``: its store refused for good (see the module docstring)."""
        self.refused[lane] = self.errors[lane] = f"{type(err).__name__}: {err}"
        logger.error(
            "the %s store refused a replay for good; its %d queued write(s) stay in the "
            "journal and are not retried until flush() is called after the store is "
            "fixed: %s", lane, self.journal.backlog(lane), err,
        )  # fmt: skip

    def flush(self, timeout: float | None = None) -> int:
        """Apply every queued write now; return how many entries were applied.

        Args:
            timeout: Most seconds to spend; an unavailable store (or an open breaker) is
                tried again until then. ``None``: one pass, raising the first error.

        Keys in doubt that are due are rechecked too; :meth:`settle` waits for the others.

        Raises:
            BackendUnavailable: A store is still unavailable (its entries stay queued).
            PermanentBackendError: A store refused for good (at once, not retried; its
                entries stay queued and the background flusher leaves the lane alone).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        applied = failures = 0
        for lane in (SECONDARY, PRIMARY):
            self.refused[lane] = None  # an explicit flush tries a refused lane again
            while True:
                left = 30.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    if self.journal.has_pending(lane):
                        raise BackendTimeout(f"flush of the {lane} lane did not end in time")
                    break
                try:
                    n = self.drain_once(lane, wait=min(left, 30.0))
                except PermanentBackendError as err:
                    self._refuse(lane, err)
                    raise
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
        for lane in (SECONDARY, PRIMARY):
            self.recheck(lane)  # what is due now; ``settle`` waits for the rest
        return applied

    def settle(self, timeout: float) -> None:
        """Wait until no key is in doubt: each is rechecked when due (:meth:`recheck`).

        After :meth:`flush`, every write the stores missed has been applied; after
        ``settle``, a write that a store may still have applied late has been ruled
        out too.

        Raises:
            BackendTimeout: Keys are still in doubt after ``timeout`` seconds (or are due
                after it: the error says when).
            BackendUnavailable: A store stayed unavailable until the timeout.
        """
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        for lane in (SECONDARY, PRIMARY):
            failures = 0
            while self.journal.has_doubts(lane):
                try:
                    self.recheck(lane, wait=self.lane_wait)
                except BackendUnavailable as err:
                    failures += 1
                    pause = max(getattr(err, "retry_after", 0.0), _FLUSH_RETRY.compute(failures))
                    if time.monotonic() + pause >= deadline:
                        raise
                    time.sleep(pause)
                    continue
                if not self.journal.has_doubts(lane):
                    break
                due = self.journal.next_due(lane)
                wait = 0.05 if due is None else max(due - time.time(), 0.05)
                if time.monotonic() + wait >= deadline:
                    n = self.journal.in_doubt(lane)
                    raise BackendTimeout(
                        f"{n} key(s) whose write to the {lane} store may land late are "
                        f"checked {self.recheck_after:g}s after the failure, later than "
                        f"the timeout of {timeout:g}s: settle again later"
                    )
                time.sleep(min(wait, 1.0))

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

    def queued(self, n: int) -> None:
        """Count ``n`` entries this process queued; kick the flusher every ``flush_batch``.

        Counted here rather than read from the journal (a count of the whole backlog at
        every write grows with the backlog); other processes kick their own flushers.
        """
        self.since_kick += n
        if self.since_kick >= self.flush_batch:
            self.since_kick = 0
            self.kick()

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


_Write = tuple[str, Record | None]  # (key, the record put, or None for a delete)


def _writes(puts: Mapping[str, Record] | None, deletes: Sequence[str]) -> list[_Write]:
    """One write of ``puts`` or ``deletes`` as ``(key, record or None)`` pairs."""
    return list(puts.items()) if puts is not None else [(k, None) for k in deletes]


def _repairs(
    group: Mapping[str, Doubt], held: Mapping[str, Record], now: float
) -> tuple[dict[str, Record], dict[str, tuple[int, float]]]:
    """What a store must be told so that it holds the last write of each key in ``group``.

    Returns the records to put back (the store holds an older write, or none) and the
    ``(version, updated_at)`` of older records to delete (the last write was a delete).
    """
    puts: dict[str, Record] = {}
    stale: dict[str, tuple[int, float]] = {}
    for key, doubt in group.items():
        current, last = held.get(key), doubt.record
        if doubt.op == "put" and last is not None and not last.expired(now):
            if current is None or (current.updated_at, current.version) < (
                last.updated_at,
                last.version,
            ):
                puts[key] = last
        elif current is not None and current.updated_at <= doubt.at:
            stale[key] = (current.version, current.updated_at)
    return puts, stale


__all__ = ["Lanes"]

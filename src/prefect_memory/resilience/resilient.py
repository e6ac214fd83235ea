"""A backend wrapper that adds retries, a circuit breaker and a hard deadline per call.

``ResilientBackend(inner, retry=..., breaker=..., deadline=...)`` is a
:class:`~prefect_memory.plugins.base.Backend` like the others, so a plain
:class:`~prefect_memory.Memory`, a hybrid memory or a tier composes it. Per call:

1. the breaker admits the call or refuses it at once (:class:`CircuitOpen`);
2. the call runs, bounded by ``deadline`` when one is set (see below);
3. the outcome is recorded by the breaker; a transient failure
   (:class:`~prefect_memory.errors.BackendUnavailable`) is retried by ``retry`` after its
   backoff, each attempt passing through the breaker again. Bad input is never retried.

**Deadline.** Drivers have their own timeouts (the ``timeout`` option of every store), but
some retry internally (s3fs retries a read timeout up to five times), so a stalled server
can hold a call for many timeouts. With ``deadline=`` each attempt runs on a small pool of
daemon worker threads and the caller stops waiting after ``deadline`` seconds with a
:class:`~prefect_memory.errors.BackendTimeout`. The abandoned call finishes in the
background (bounded by the driver's timeouts); until every abandoned *write* has finished,
new writes are refused with ``BackendUnavailable``, so a late write can never land after
a newer one. When all ``max_stuck`` workers are stuck, calls fail at once.

**Ambiguous writes.** A write that timed out may have been applied. Upserts are safe to
repeat; the two conditional writes tiered moves rely on are reconciled after a retry:
``put_absent_many`` counts a key as written when the store holds exactly our write, and
``delete_if_unchanged`` counts a key that is gone as deleted (a move then keeps its copy:
an entry may survive twice in a rare race, but it is never lost).

Example:
    >>> import prefect_memory as pm
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.resilience import (
    ...     CircuitBreaker, ExponentialBackoff, ResilientBackend, Retry)
    >>> backend = ResilientBackend(
    ...     InProcessBackend(),
    ...     retry=Retry(ExponentialBackoff(0.05, cap=1.0), attempts=4),
    ...     breaker=CircuitBreaker("cache", failure_threshold=5, reset_timeout=10),
    ...     deadline=2.0)
    >>> mem = pm.Memory(backend, "docs")
    >>> mem.set("k", 1); mem.get("k")
    1
    >>> backend.breaker.state.value
    'closed'
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from ..errors import BackendTimeout, BackendUnavailable, ConfigError, maybe_applied
from ..plugins.base import Backend, Capabilities, EntryColumns, Record
from .breaker import CircuitBreaker
from .retry import Retry

T = TypeVar("T")
_SCAN_CHUNK = 1000


def _refused(message: str) -> BackendUnavailable:
    """A call refused before it was sent (so a refused write cannot land later)."""
    err = BackendUnavailable(message)
    err.sent = False
    return err


def _take(it: Iterator[str], n: int) -> list[str]:
    return list(itertools.islice(it, n))


class _Task:
    """One call handed to a worker: its result, and whether its caller gave up."""

    __slots__ = ("abandoned", "done", "error", "finished", "fn", "result", "write")

    def __init__(self, fn: Callable[[], Any], write: bool) -> None:
        self.fn = fn
        self.write = write
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False  # set under the pool's lock, before ``done``
        self.abandoned = False


class _Workers:
    """At most ``size`` daemon threads; a call never waits in a queue for one."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.pid = os.getpid()
        self._slots = threading.BoundedSemaphore(size)
        self._queue: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self.stuck = 0  # abandoned calls still running
        self.stuck_writes = 0

    def submit(self, fn: Callable[[], Any], write: bool) -> _Task | None:
        """Start ``fn`` on a worker; ``None`` when every worker is busy."""
        if not self._slots.acquire(blocking=False):
            return None
        task = _Task(fn, write)
        with self._lock:
            if self._idle == 0 and self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
            else:
                self._idle -= 1
        self._queue.put(task)
        return task

    def abandon(self, task: _Task) -> bool:
        """Give up on ``task``; return ``False`` if it finished meanwhile."""
        with self._lock:
            if task.finished:
                return False
            task.abandoned = True
            self.stuck += 1
            self.stuck_writes += task.write
            return True

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            try:
                task.result = task.fn()
            except BaseException as err:
                task.error = err
            task.fn = None  # type: ignore[assignment]
            with self._lock:
                task.finished = True
                if task.abandoned:
                    self.stuck -= 1
                    self.stuck_writes -= task.write
                self._idle += 1
            self._slots.release()  # before ``done``: the caller may submit again at once
            task.done.set()


class ResilientBackend(Backend):
    """Retries, a circuit breaker and a deadline around another backend (module docstring).

    Args:
        inner: The backend to protect.
        retry: Retry policy for transient errors (``None``: no retries).
        breaker: Circuit breaker of this backend (``None``: none). Its name defaults to
            the inner backend's URL.
        deadline: Most seconds a caller waits for one attempt (``None``: rely on the
            driver's own timeouts).
        max_stuck: Worker threads for deadline-bounded calls; when all are stuck on a
            stalled server, calls fail at once.
    """

    scheme: ClassVar[str] = "resilient"
    _transient = ("_workers",)

    def __init__(
        self,
        inner: Backend,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        deadline: float | None = None,
        max_stuck: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(inner, Backend):
            raise ConfigError(f"inner must be a Backend, got {type(inner).__name__}")
        if deadline is not None and not deadline > 0:
            raise ConfigError(f"deadline must be positive seconds, got {deadline!r}")
        if max_stuck < 1:
            raise ConfigError(f"max_stuck must be >= 1, got {max_stuck!r}")
        self.inner = inner
        self.retry = retry
        self.breaker = breaker
        self.deadline = deadline
        self.max_stuck = max_stuck
        self.url = inner.url or type(inner).__name__
        if breaker is not None and not breaker.name:
            breaker.name = self.url
        self._workers: _Workers | None = None
        self._retried = 0

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """The inner backend's capabilities, without ``pushdown``.

        ``scan_query`` is not passed through: a query stream has no point to restart
        from after a retry (``scan`` has one), so a migration scans through the wrapper.
        """
        return replace(self.inner.capabilities, pushdown=False)

    def children(self) -> tuple[tuple[str, Backend], ...]:
        """The wrapped backend (an empty role: the same store, behind retries and a breaker)."""
        return (("", self.inner),)

    def child_facts(self, role: str, above: Mapping[str, Any]) -> dict[str, Any]:
        """The state of the breaker and the stuck calls, for the store inside."""
        details = {**above.get("details", {}), "stuck_calls": self.stuck}
        extra: dict[str, Any] = {"details": details}
        if self.breaker is not None:
            extra["breaker"] = self.breaker.state.value
            extra["breaker_failures"] = self.breaker.failures
            if self.breaker.last_error:
                details["breaker_last_error"] = self.breaker.last_error
        return {**above, **extra}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ResilientBackend:
        """Open ``url`` with the registry and wrap it (``retry``, ``breaker``, ``deadline``)."""
        from ..registry import open_backend

        names = ("retry", "breaker", "deadline", "max_stuck")
        own = {k: options.pop(k) for k in names if k in options}
        return cls(open_backend(url, **options), **own)

    def __repr__(self) -> str:
        return f"ResilientBackend({self.inner!r})"

    @property
    def retried_writes(self) -> int:
        """Write attempts retried here (after a failure that may land) or by the driver."""
        return self._retried + self.inner.retried_writes

    @property
    def stuck(self) -> int:
        """Calls abandoned at their deadline that are still running."""
        workers = self._workers
        return 0 if workers is None else workers.stuck

    # -- one call -------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], *, write: bool = False) -> T:
        attempts = self.retry.start() if self.retry is not None else None
        while True:
            try:
                return self._once(fn, write)
            except BaseException as err:
                if attempts is None or not attempts.failed(err):
                    raise
                if write and maybe_applied(err):  # this attempt may still land, late
                    self._retried += 1

    def _once(self, fn: Callable[[], T], write: bool) -> T:
        breaker = self.breaker
        if breaker is not None:
            breaker.before_call()
        try:
            result = fn() if self.deadline is None else self._bounded(fn, write)
        except BaseException as err:
            if breaker is not None:
                breaker.record_failure(err)
            raise
        if breaker is not None:
            breaker.record_success()
        return result

    def _pool(self) -> _Workers:
        workers = self._workers
        if workers is None or workers.pid != os.getpid():
            with self._lock:
                workers = self._workers
                if workers is None or workers.pid != os.getpid():
                    workers = self._workers = _Workers(self.max_stuck, f"pm-deadline {self.url}")
        return workers

    def _bounded(self, fn: Callable[[], T], write: bool) -> T:
        assert self.deadline is not None
        workers = self._pool()
        if write and workers.stuck_writes:
            raise _refused(
                f"{self.url}: {workers.stuck_writes} write(s) abandoned at the deadline are "
                "still running; new writes wait until they finish"
            )
        task = workers.submit(fn, write)
        if task is None:
            raise _refused(
                f"{self.url}: all {workers.size} workers are stuck on calls past the deadline"
            )
        if not task.done.wait(self.deadline) and workers.abandon(task):
            raise BackendTimeout(f"{self.url}: no answer within the deadline of {self.deadline}s")
        if task.error is not None:
            raise task.error
        return task.result  # type: ignore[no-any-return]

    # -- protocol -------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        return self._call(lambda: self.inner.get_many(ns, keys, now=now, touch=touch))

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        self._call(lambda: self.inner.put_many(ns, records, now=now), write=True)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        return self._call(lambda: self.inner.delete_many(ns, keys, now=now), write=True)

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        return self._call(lambda: self.inner.meta_many(ns, keys, now=now))

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        return self._call(lambda: self.inner.exists_many(ns, keys, now=now))

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        tags = list(tags)
        return self._call(lambda: self.inner.tagged(ns, tags, now=now))

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        """Yield keys; a transient failure mid-scan restarts it, skipping keys already seen."""
        seen: set[str] = set()
        attempts = self.retry.start() if self.retry is not None else None
        while True:
            try:
                it = self.inner.scan(ns, pattern, now=now)
                while True:
                    chunk = self._once(functools.partial(_take, it, _SCAN_CHUNK), False)
                    for key in chunk:
                        if key not in seen:
                            seen.add(key)
                            yield key
                    if len(chunk) < _SCAN_CHUNK:
                        return
            except BaseException as err:
                if attempts is None or not attempts.failed(err):
                    raise

    def scan_columns(
        self,
        ns: str,
        *,
        now: float,
        batch_size: int = 1000,
        value_bytes: int = 0,
        query: Mapping[str, Any] | None = None,
    ) -> Iterator[EntryColumns]:
        """The inner store's column scan (its native one where it has it), one batch per call
        through the breaker and the deadline; a transient failure mid-scan restarts it, as
        :meth:`scan` does, leaving out the entries already yielded.

        With a ``query`` the base class does the work (no pushdown through this wrapper,
        see :attr:`capabilities`).
        """
        if query is not None:
            yield from super().scan_columns(
                ns, now=now, batch_size=batch_size, value_bytes=value_bytes, query=query
            )
            return
        seen: set[str] = set()
        attempts = self.retry.start() if self.retry is not None else None
        it: Iterator[EntryColumns] | None = None
        while True:
            try:
                if it is None:
                    it = self.inner.scan_columns(
                        ns, now=now, batch_size=batch_size, value_bytes=value_bytes
                    )
                batch = self._once(functools.partial(next, it, None), False)
            except BaseException as err:
                if attempts is None or not attempts.failed(err):
                    raise
                it = None  # start again: the entries already yielded are left out
                continue
            if batch is None:
                return
            if attempts is not None:  # (without retries there is no restart to skip for)
                if seen:
                    fresh = [i for i, key in enumerate(batch.keys) if key not in seen]
                    if len(fresh) < len(batch):
                        batch = batch.take(fresh)
                seen.update(batch.keys)
            if len(batch):
                yield batch
            del batch

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        tries = [0]

        def attempt() -> set[str]:
            tries[0] += 1
            return self.inner.put_absent_many(ns, records, now=now)

        written = set(self._call(attempt, write=True))
        left = [k for k in records if k not in written]
        if tries[0] > 1 and left:  # an attempt that failed may have written some of them
            current = self._call(lambda: self.inner.get_many(ns, left, now=now, touch=False))
            written |= {k for k, r in current.items() if r.token == records[k].token}
        return written

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        tries = [0]

        def attempt() -> set[str]:
            tries[0] += 1
            return self.inner.delete_if_unchanged(ns, expected, now=now)

        deleted = set(self._call(attempt, write=True))
        left = [k for k in expected if k not in deleted]
        if tries[0] > 1 and left:  # gone after an ambiguous attempt: count it as ours
            present = self._call(lambda: self.inner.exists_many(ns, left, now=now))
            deleted |= set(left) - present
        return deleted

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        return self._call(lambda: self.inner.clear(ns, now=now, batch_size=batch_size), write=True)

    def purge_expired(self, ns: str, *, now: float) -> int:
        return self._call(lambda: self.inner.purge_expired(ns, now=now), write=True)

    def ping(self) -> None:
        """Ping through the breaker and the deadline (not retried: it asks "up now?")."""
        self._once(self.inner.ping, False)

    def close(self) -> None:
        self.inner.close()


__all__ = ["ResilientBackend"]


def protect(
    backend: Backend,
    name: str,
    *,
    retry: Retry | None,
    breaker: CircuitBreaker | None,
    deadline: float | None,
) -> Backend:
    """``backend`` wrapped in a :class:`ResilientBackend` when any protection is asked for.

    ``breaker`` is a template: the store gets its own copy called ``name``.
    """
    if retry is None and breaker is None and deadline is None:
        return backend
    own = None if breaker is None else breaker.clone(f"{name} {backend.url}")
    return ResilientBackend(backend, retry=retry, breaker=own, deadline=deadline)

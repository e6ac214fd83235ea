"""A circuit breaker per backend: CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

- CLOSED: calls pass; consecutive transient failures are counted (a success resets the
  count). At ``failure_threshold`` the breaker opens.
- OPEN: calls are refused at once with :class:`CircuitOpen` (a
  :class:`~prefect_memory.errors.BackendUnavailable`), instead of each one waiting for a
  dead server's timeout. After ``reset_timeout`` seconds the next call is let through as a
  trial: the breaker is HALF_OPEN.
- HALF_OPEN: up to ``half_open_calls`` trial calls at a time; the others are refused. A
  trial that succeeds closes the breaker, one that fails opens it again for another
  ``reset_timeout``.

Only transient errors (``BackendUnavailable``: refused, reset, timed out) count as
failures. Any other outcome, an error answer of the server included, proves the server
is there and counts as a success. That holds for a
:class:`~prefect_memory.errors.PermanentBackendError` (a missing bucket, refused
credentials) even when ``counts`` names a parent class: it is not an outage, so it never
opens the breaker (which would turn a clear "create the bucket" into "circuit open"
for every call); it reaches the caller at once, and is never retried.

State changes call listeners with a :class:`BreakerEvent`; a listener that raises is
logged and ignored (it never breaks the data path). :func:`prefect_events_listener`
turns them into Prefect events (Prefect is imported only when an event is emitted).

Example:
    >>> from prefect_memory.errors import BackendUnavailable
    >>> now = [0.0]
    >>> seen = []
    >>> breaker = CircuitBreaker("redis", failure_threshold=2, reset_timeout=30,
    ...                          clock=lambda: now[0], listeners=[seen.append])
    >>> def down():
    ...     raise BackendUnavailable("refused")
    >>> for _ in range(2):
    ...     try:
    ...         breaker.call(down)
    ...     except BackendUnavailable:
    ...         pass
    >>> breaker.state, [e.new.value for e in seen]
    (<BreakerState.OPEN: 'open'>, ['open'])
    >>> try:
    ...     breaker.call(lambda: "never called")
    ... except CircuitOpen as err:
    ...     print(err)
    circuit 'redis' is open (2 consecutive failures); next trial in 30.0s
    >>> now[0] = 31.0
    >>> breaker.call(lambda: "back"), breaker.state.value
    ('back', 'closed')
    >>> [e.new.value for e in seen]
    ['open', 'half_open', 'closed']
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import BackendUnavailable, ConfigError, PermanentBackendError

logger = logging.getLogger("prefect_memory.breaker")

T = TypeVar("T")


class CircuitOpen(BackendUnavailable):
    """A circuit breaker refused the call: the store failed repeatedly and is left alone.

    Attributes:
        breaker: Name of the breaker.
        retry_after: Seconds until the breaker lets a trial call through.
    """

    sent = False  # the call was refused before it reached the store

    def __init__(self, message: str, *, breaker: str = "", retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.retry_after = retry_after


class BreakerState(str, enum.Enum):
    """The state of a :class:`CircuitBreaker`."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerEvent:
    """A state change of a breaker, as given to listeners.

    Attributes:
        breaker: Name of the breaker (for example the store's URL).
        old: State before.
        new: State after.
        failures: Consecutive failures counted when it changed.
        error: The error that opened it (``None`` for other changes).
        at: Wall-clock time of the change (epoch seconds).
    """

    breaker: str
    old: BreakerState
    new: BreakerState
    failures: int
    error: str | None
    at: float

    @property
    def name(self) -> str:
        """The event name: ``prefect-memory.breaker.opened`` / ``.half-opened`` / ``.closed``."""
        verb = {"open": "opened", "half_open": "half-opened", "closed": "closed"}[self.new.value]
        return f"prefect-memory.breaker.{verb}"


Listener = Callable[[BreakerEvent], None]


class CircuitBreaker:
    """Fail fast on a store that keeps failing (see the module docstring).

    Args:
        name: Shown in errors and events (for example the store's URL).
        failure_threshold: Consecutive transient failures that open the breaker.
        reset_timeout: Seconds the breaker stays open before a trial call.
        half_open_calls: Trial calls allowed at a time while half open.
        counts: Error types counted as failures (default: ``BackendUnavailable``).
        listeners: Called with a :class:`BreakerEvent` on every state change.
        clock: Monotonic clock (tests pass their own).

    A breaker pickles (a Memory ships to Prefect workers) as a fresh, closed breaker with
    the same settings and listeners.
    """

    def __init__(
        self,
        name: str = "",
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_calls: int = 1,
        counts: tuple[type[BaseException], ...] = (BackendUnavailable,),
        listeners: Iterable[Listener] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise ConfigError(f"failure_threshold must be an int, got {failure_threshold!r}")
        if failure_threshold < 1 or half_open_calls < 1:
            raise ConfigError("failure_threshold and half_open_calls must be >= 1")
        if not reset_timeout > 0:
            raise ConfigError(f"reset_timeout must be positive seconds, got {reset_timeout!r}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.half_open_calls = half_open_calls
        self.counts = tuple(counts)
        self.listeners: list[Listener] = list(listeners)
        self.clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        state = self._state.value
        return f"CircuitBreaker({self.name!r}, state={state}, failures={self._failures})"

    def clone(self, name: str) -> CircuitBreaker:
        """A new, closed breaker with these settings and listeners, called ``name``."""
        return CircuitBreaker(
            name,
            failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout,
            half_open_calls=self.half_open_calls,
            counts=self.counts,
            listeners=self.listeners,
            clock=self.clock,
        )

    # -- state ----------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state (OPEN until a call after ``reset_timeout`` makes it HALF_OPEN)."""
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far."""
        return self._failures

    @property
    def last_error(self) -> str | None:
        """The last failure counted, as ``"Type: message"``."""
        return self._last_error

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - self.clock())

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with a :class:`BreakerEvent` on every state change."""
        self.listeners.append(listener)

    def reset(self) -> None:
        """Close the breaker and forget the failures (an operator's override)."""
        with self._lock:
            event = self._move(BreakerState.CLOSED, None)
            self._failures = 0
            self._trials = 0
        self._notify(event)

    # -- calls ----------------------------------------------------------------------------
    def before_call(self) -> None:
        """Admit a call, or raise :class:`CircuitOpen` at once."""
        if self._state is BreakerState.CLOSED:
            return  # the hot path: no lock
        event = None
        with self._lock:
            state: BreakerState = self._state  # again, under the lock
            if state is BreakerState.CLOSED:
                return
            if state is BreakerState.OPEN:
                wait = self._opened_at + self.reset_timeout - self.clock()
                if wait > 0:
                    raise self._refusal(wait)
                event = self._move(BreakerState.HALF_OPEN, None)
                self._trials = 0
            if self._state is BreakerState.HALF_OPEN:
                if self._trials >= self.half_open_calls:
                    raise self._refusal(0.0)
                self._trials += 1
        self._notify(event)

    def _refusal(self, wait: float) -> CircuitOpen:
        if self._state is BreakerState.HALF_OPEN:
            detail = "a trial call is in progress"
        else:
            detail = f"next trial in {wait:.1f}s"
        return CircuitOpen(
            f"circuit {self.name!r} is {self._state.value.replace('_', ' ')} "
            f"({self._failures} consecutive failures); {detail}",
            breaker=self.name,
            retry_after=wait,
        )

    def record_success(self) -> None:
        """Count a call that reached the store (closes a half-open breaker)."""
        if self._state is BreakerState.CLOSED and not self._failures:
            return  # the hot path: nothing to change
        event = None
        with self._lock:
            self._failures = 0
            if self._state is not BreakerState.CLOSED:
                event = self._move(BreakerState.CLOSED, None)
                self._trials = 0
        self._notify(event)

    def record_failure(self, err: BaseException) -> None:
        """Count a failed call; a non-transient error (a permanent one included) counts as
        a success: the store answered."""
        if not isinstance(err, self.counts) or isinstance(
            err, (CircuitOpen, PermanentBackendError)
        ):
            self.record_success()
            return
        event = None
        with self._lock:
            self._failures += 1
            self._last_error = f"{type(err).__name__}: {err}"
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                event = self._move(BreakerState.OPEN, self._last_error)
                self._opened_at = self.clock()
                self._trials = 0
        self._notify(event)

    def call(self, fn: Callable[[], T]) -> T:
        """Return ``fn()`` through the breaker (refused at once while open)."""
        self.before_call()
        try:
            result = fn()
        except BaseException as err:
            self.record_failure(err)
            raise
        self.record_success()
        return result

    # -- events ---------------------------------------------------------------------------
    def _move(self, new: BreakerState, error: str | None) -> BreakerEvent | None:
        old = self._state
        if old is new:
            return None
        self._state = new
        logger.log(
            logging.WARNING if new is BreakerState.OPEN else logging.INFO,
            "circuit %r: %s -> %s%s", self.name, old.value, new.value,
            f" after {self._failures} failures ({error})" if error else "",
        )  # fmt: skip
        return BreakerEvent(self.name, old, new, self._failures, error, time.time())

    def _notify(self, event: BreakerEvent | None) -> None:
        if event is None:
            return
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("breaker listener %r failed on %s", listener, event.name)

    # -- pickling -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "failure_threshold": self.failure_threshold,
            "reset_timeout": self.reset_timeout,
            "half_open_calls": self.half_open_calls,
            "counts": self.counts,
            "listeners": self.listeners,
            "clock": None if self.clock is time.monotonic else self.clock,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        clock = state.pop("clock") or time.monotonic
        self.__init__(state.pop("name"), clock=clock, **state)  # type: ignore[misc]


def prefect_events_listener(
    resource_id: str | None = None, *, extra: dict[str, str] | None = None
) -> Listener:
    """A listener that emits each state change as a Prefect event.

    Events are named ``prefect-memory.breaker.opened``, ``...half-opened`` and
    ``...closed``; the resource is ``prefect-memory.breaker.<breaker name>`` (or
    ``resource_id``), and the payload holds the old and new state, the failure count and
    the error. Prefect is imported when the first event is emitted, not before (by
    :func:`prefect_memory.prefect_bridge.emit_breaker_event`); an event that cannot be
    emitted is logged by the breaker and dropped.

    Args:
        resource_id: ``prefect.resource.id`` of the events (default: from the breaker name).
        extra: More resource labels (for example ``{"prefect-memory.store": "cache"}``).

    Example:
        >>> listener = prefect_events_listener()
        >>> breaker = CircuitBreaker("redis://cache:6379/0", listeners=[listener])
        >>> callable(listener)
        True
    """
    labels = dict(extra or {})
    return _PrefectEvents(resource_id, labels)


class _PrefectEvents:
    """The picklable callable behind :func:`prefect_events_listener`."""

    def __init__(self, resource_id: str | None, labels: dict[str, str]) -> None:
        self.resource_id = resource_id
        self.labels = labels

    def __call__(self, event: BreakerEvent) -> None:
        from ..prefect_bridge import emit_breaker_event  # the Prefect floor, on first event

        emit_breaker_event(event, self.resource_id, self.labels)

    def __repr__(self) -> str:
        return f"prefect_events_listener({self.resource_id!r})"


__all__ = [
    "BreakerEvent",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "Listener",
    "prefect_events_listener",
]

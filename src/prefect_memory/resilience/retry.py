"""Retry policies as objects: a backoff that computes delays, a retry that applies them.

One mechanism, configured, instead of loops scattered through the code (the shape of
redis-py's ``redis/backoff.py`` and ``redis/retry.py``). A :class:`Retry` retries
*transient* errors only: by default :class:`~prefect_memory.errors.BackendUnavailable`
(refused, reset, timed out). Bad input (``ConfigError``, ``InvalidKeyError``,
``SerializationError``, ``ValidationError``), a store that refused for good
(:class:`~prefect_memory.errors.PermanentBackendError`: a missing bucket, refused
credentials) and an open circuit breaker pass straight through on the first attempt:
retrying cannot fix them, even under a policy whose ``on`` names a parent class
(``BackendError``).

Example:
    >>> from prefect_memory.errors import BackendUnavailable, ConfigError
    >>> ExponentialBackoff(0.1, cap=1.0, jitter=False).compute(1)
    0.1
    >>> [ExponentialBackoff(0.1, cap=1.0, jitter=False).compute(n) for n in (2, 3, 5, 9)]
    [0.2, 0.4, 1.0, 1.0]
    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise BackendUnavailable("refused")
    ...     return "ok"
    >>> retry = Retry(ExponentialBackoff(0.001), attempts=5)
    >>> retry.call(flaky), len(calls)
    ('ok', 3)
    >>> def bad():
    ...     calls.append(1)
    ...     raise ConfigError("no")
    >>> calls.clear()
    >>> try:
    ...     retry.call(bad)
    ... except ConfigError:
    ...     len(calls)
    1
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidKeyError,
    PermanentBackendError,
    SerializationError,
    ValidationError,
)
from .breaker import CircuitOpen

logger = logging.getLogger("prefect_memory.retry")

T = TypeVar("T")

#: Errors retried by default: the store could not be reached or did not answer in time.
TRANSIENT: tuple[type[BaseException], ...] = (BackendUnavailable, BackendTimeout)
#: Errors never retried, even when they subclass a retried one: bad input, a store that
#: refused for good, an open breaker.
NEVER_RETRIED: tuple[type[BaseException], ...] = (
    ConfigError,
    InvalidKeyError,
    SerializationError,
    ValidationError,
    PermanentBackendError,
    CircuitOpen,
)


class Backoff:
    """How long to wait before the next attempt, given how many attempts failed."""

    def compute(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``)."""
        raise NotImplementedError


class ConstantBackoff(Backoff):
    """The same delay after every failure.

    Example:
        >>> ConstantBackoff(0.5).compute(7)
        0.5
    """

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ConfigError(f"delay must be >= 0, got {delay!r}")
        self.delay = float(delay)

    def compute(self, failures: int) -> float:
        return self.delay

    def __repr__(self) -> str:
        return f"ConstantBackoff({self.delay:g})"


class ExponentialBackoff(Backoff):
    """``base * 2 ** (failures - 1)`` seconds, at most ``cap``; "full jitter" by default.

    With ``jitter`` the delay is drawn uniformly from ``[0, that]`` (as AWS recommends), so
    clients that failed together do not retry together.

    Args:
        base: Delay after the first failure, in seconds.
        cap: Longest delay, in seconds.
        jitter: Randomize each delay in ``[0, delay]``.
        rng: Random source (tests pass a seeded ``random.Random``).

    Example:
        >>> b = ExponentialBackoff(0.5, cap=10, jitter=True, rng=random.Random(1))
        >>> all(0 <= b.compute(n) <= min(10, 0.5 * 2 ** (n - 1)) for n in range(1, 20))
        True
    """

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 10.0,
        jitter: bool = True,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap <= 0:
            raise ConfigError(f"base and cap must be positive, got base={base!r}, cap={cap!r}")
        self.base = float(base)
        self.cap = float(cap)
        self.jitter = bool(jitter)
        self._rng = rng or random.Random()

    def compute(self, failures: int) -> float:
        exponent = min(max(failures, 1) - 1, 62)  # 2**62 * base is past any cap
        delay = min(self.cap, self.base * 2.0**exponent)
        return self._rng.uniform(0.0, delay) if self.jitter else delay

    def __repr__(self) -> str:
        return f"ExponentialBackoff({self.base:g}, cap={self.cap:g}, jitter={self.jitter})"


class Retry:
    """Call a function again after transient failures, waiting by a :class:`Backoff`.

    Args:
        backoff: Delays between attempts (default: ``ExponentialBackoff(0.1, cap=10)``).
        attempts: Attempts in total, the first one included (``1``: never retry).
        on: Error types that are retried.
        never: Error types that are never retried, even when they subclass one of ``on``.
        deadline: Most seconds spent over all attempts and waits (``None``: no bound
            besides ``attempts``); no attempt starts that its wait would push past it.
        sleep: How to wait (tests pass a fake).
        clock: Monotonic clock for the deadline.
    """

    def __init__(
        self,
        backoff: Backoff | None = None,
        attempts: int = 3,
        *,
        on: tuple[type[BaseException], ...] = TRANSIENT,
        never: tuple[type[BaseException], ...] = NEVER_RETRIED,
        deadline: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"attempts must be an int >= 1, got {attempts!r}")
        if deadline is not None and deadline <= 0:
            raise ConfigError(f"deadline must be positive seconds, got {deadline!r}")
        self.backoff = backoff if backoff is not None else ExponentialBackoff()
        self.attempts = attempts
        self.on = tuple(on)
        self.never = tuple(never)
        self.deadline = deadline
        self.sleep = sleep
        self.clock = clock

    def __repr__(self) -> str:
        return f"Retry({self.backoff!r}, attempts={self.attempts}, deadline={self.deadline})"

    def retries(self, err: BaseException) -> bool:
        """Tell whether ``err`` is of a kind this policy retries."""
        return isinstance(err, self.on) and not isinstance(err, self.never)

    def start(self) -> _Attempts:
        """A fresh count of attempts for one logical call (see :meth:`_Attempts.failed`)."""
        return _Attempts(self)

    def call(self, fn: Callable[[], T]) -> T:
        """Return ``fn()``, retrying transient failures; raise the last error otherwise."""
        attempts = self.start()
        while True:
            try:
                return fn()
            except BaseException as err:
                if not attempts.failed(err):
                    raise

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if state.get("sleep") is time.sleep:
            state["sleep"] = None
        if state.get("clock") is time.monotonic:
            state["clock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.sleep = state.get("sleep") or time.sleep
        self.clock = state.get("clock") or time.monotonic


class _Attempts:
    """The attempts of one logical call: counts failures, waits, knows when to stop."""

    __slots__ = ("failures", "policy", "started")

    def __init__(self, policy: Retry) -> None:
        self.policy = policy
        self.failures = 0
        self.started = policy.clock()

    def failed(self, err: BaseException) -> bool:
        """Record a failure; wait and return ``True`` if another attempt should follow."""
        policy = self.policy
        self.failures += 1
        if not policy.retries(err) or self.failures >= policy.attempts:
            return False
        delay = policy.backoff.compute(self.failures)
        if policy.deadline is not None:
            left = policy.deadline - (policy.clock() - self.started)
            if left <= delay:
                return False
        logger.debug(
            "attempt %d failed (%s: %s); retrying in %.3fs",
            self.failures, type(err).__name__, err, delay,
        )  # fmt: skip
        if delay > 0:
            policy.sleep(delay)
        return True


__all__ = [
    "NEVER_RETRIED",
    "TRANSIENT",
    "Backoff",
    "ConstantBackoff",
    "ExponentialBackoff",
    "Retry",
]

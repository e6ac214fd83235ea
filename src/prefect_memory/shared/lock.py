"""A distributed lock with a hold timeout and fencing tokens, and Prefect's lock protocol.

:class:`DistributedLock` is a context manager: it waits (bounded) for the lock, holds it
for at most ``hold`` seconds (a crashed holder never blocks the others for longer), and
exposes the term's fencing ``token``: pass it to whatever the lock protects, and refuse a
write whose token is older than the newest seen (:meth:`DistributedLock.check` does it
against the lock itself). Not re-entrant: every lock object is its own holder.

:class:`DistributedLockManager` offers the same locks through Prefect's ``LockManager``
protocol, for ``cache_policy.configure(lock_manager=...)`` (re-entrant per holder there,
as Prefect expects; releasing a lock nobody holds is a no-op, another holder's raises).

Example:
    >>> DistributedLockManager.__name__, hasattr(DistributedLockManager, "aacquire_lock")
    ('DistributedLockManager', True)
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..errors import ConfigError, FencingError
from ..memory import Memory
from ._leases import Terms
from ._redis import namespace_of, object_key, redis_backend
from .lock_protocol import LockManagerProtocol, Release


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be positive seconds, got {value!r}")
    return float(value)


class DistributedLock:
    """A lock held by one holder at a time across processes and machines.

    Args:
        target: A Memory on Redis or a ``redis://`` URL (its namespace scopes the name).
        name: What is locked.
        hold: Most seconds the lock is held (it is free again afterwards).
        acquire_timeout: Most seconds ``with lock:`` waits (``None``: wait for as long as
            ``hold``, then give up).
        poll_interval: Seconds between two attempts while waiting.
        holder: This holder's id (default: unique per lock object).
    """

    def __init__(
        self,
        target: Memory | str,
        name: str,
        hold: float = 30.0,
        *,
        acquire_timeout: float | None = None,
        poll_interval: float = 0.05,
        holder: str | None = None,
    ) -> None:
        backend = redis_backend(target)
        self.name = name
        self.hold = _positive(hold, "hold")
        self.acquire_timeout = self.hold if acquire_timeout is None else float(acquire_timeout)
        self.poll_interval = _positive(poll_interval, "poll_interval")
        self.holder = holder or uuid.uuid4().hex
        self.terms = Terms(backend, object_key(backend, namespace_of(target), "lock", name))
        self.token: int | None = None

    def __repr__(self) -> str:
        return f"DistributedLock({self.name!r}, hold={self.hold}, token={self.token})"

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (default ``acquire_timeout``)."""
        wait = self.acquire_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            token = self.terms.acquire(self.holder, self.hold)
            if token is not None:
                self.token = token
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def release(self) -> bool:
        """Release the lock; ``False`` when it had lapsed (and maybe been taken) already."""
        token, self.token = self.token, None
        return token is not None and self.terms.release(self.holder, token)

    def extend(self, hold: float | None = None) -> bool:
        """Hold the lock for ``hold`` more seconds from now; ``False`` if it was lost."""
        if self.token is None:
            return False
        return self.terms.renew(self.holder, self.token, hold or self.hold)

    def locked(self) -> bool:
        """Tell whether anyone holds the lock."""
        return self.terms.current()[0] is not None

    def check(self, token: int | None = None) -> int:
        """Raise :class:`~prefect_memory.errors.FencingError` unless ``token`` (default:
        ours) is the lock's current term; return it."""
        token = self.token if token is None else token
        holder, current, _left = self.terms.current()
        if token is None or holder is None or token != current:
            raise FencingError(
                f"lock {self.name!r}: token {token} is not the current term "
                f"({'free' if holder is None else f'token {current}'})",
                token=token, current=current,
            )  # fmt: skip
        return token

    def __enter__(self) -> DistributedLock:
        if not self.acquire():
            holder, token, left = self.terms.current()
            raise TimeoutError(
                f"lock {self.name!r} not acquired within {self.acquire_timeout}s "
                f"(held by {holder!r}, token {token}, {left}s left)"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class DistributedLockManager(LockManagerProtocol):
    """Prefect's ``LockManager`` protocol on :class:`DistributedLock` terms.

    Args:
        target: A Memory on Redis or a ``redis://`` URL.
        hold_timeout: Seconds a lock lives when Prefect passes no ``hold_timeout``.
        poll_interval: Seconds between two attempts while waiting.
    """

    def __init__(
        self, target: Memory | str, *, hold_timeout: float = 300.0, poll_interval: float = 0.05
    ) -> None:
        self.backend = redis_backend(target)
        self.namespace = namespace_of(target)
        self.hold_timeout = _positive(hold_timeout, "hold_timeout")
        self.poll_interval = _positive(poll_interval, "poll_interval")

    def terms(self, key: str) -> Terms:
        """The terms of the lock of ``key``."""
        return Terms(self.backend, object_key(self.backend, self.namespace, "lock", key))

    def _try_acquire(self, key: str, holder: str, hold: float) -> bool:
        return self.terms(key).acquire(holder, hold) is not None

    def _release(self, key: str, holder: str) -> Release:
        return self.terms(key).end(holder)

    def _holder(self, key: str) -> str | None:
        return self.terms(key).current()[0]


__all__ = ["DistributedLock", "DistributedLockManager", "LockManagerProtocol"]

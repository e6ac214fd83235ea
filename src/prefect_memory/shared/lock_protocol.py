"""Prefect's lock protocol written once over three primitives (no store driver imported).

:class:`LockManagerProtocol` is what every lock manager of ours shares: the block lock
managers (:mod:`prefect_memory.blocks.locks`) and
:class:`~prefect_memory.shared.DistributedLockManager`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

#: How a release ended: the holder's lock released, nobody held it, or another holds it.
Release = Literal["released", "free", "other"]


class LockManagerProtocol:
    """Prefect's ``LockManager`` protocol over three primitives, for every lock manager.

    A subclass says how one attempt takes a lock (:meth:`_try_acquire`), how a release
    ends (:meth:`_release`: ``"released"``, ``"free"`` or ``"other"``) and who holds a lock
    (:meth:`_holder`); waiting, deadlines, the async twins and what a release may raise
    are written here once (:class:`DistributedLockManager` and the block lock managers of
    :mod:`prefect_memory.blocks.locks` share them). Needs ``hold_timeout`` and
    ``poll_interval`` attributes.

    Example:
        >>> class Local(LockManagerProtocol):
        ...     hold_timeout, poll_interval, held = 30.0, 0.01, {}
        ...     def _try_acquire(self, key, holder, hold):
        ...         return self.held.setdefault(key, holder) == holder
        ...     def _release(self, key, holder):
        ...         if key not in self.held:
        ...             return "free"
        ...         return "released" if self.held.pop(key) == holder else "other"
        ...     def _holder(self, key):
        ...         return self.held.get(key)
        >>> locks = Local()
        >>> locks.acquire_lock("k", "a"), locks.acquire_lock("k", "b", acquire_timeout=0)
        (True, False)
        >>> locks.release_lock("k", "a"), locks.release_lock("k", "a")  # twice: a no-op
        (None, None)
    """

    hold_timeout: float
    poll_interval: float

    def _try_acquire(self, key: str, holder: str, hold: float) -> bool:
        """One attempt to take (or, for its holder, extend) the lock of ``key``."""
        raise NotImplementedError

    def _release(self, key: str, holder: str) -> Release:
        """End ``holder``'s lock of ``key``: released, already free, or another's."""
        raise NotImplementedError

    def _holder(self, key: str) -> str | None:
        """Who holds the lock of ``key`` (``None``: free)."""
        raise NotImplementedError

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """Take the lock of ``key`` for ``holder`` (re-entrant: the holder refreshes it).

        Args:
            key: The cache key to lock.
            holder: Who takes the lock.
            acquire_timeout: Seconds to wait while someone else holds it (``None``: wait
                until it is released or expires; ``0``: do not wait).
            hold_timeout: Seconds the lock lives at most (default: the manager's).

        Returns:
            Whether the lock was taken.
        """
        hold = hold_timeout or self.hold_timeout
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._try_acquire(key, holder, hold):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval)
        return True

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """Async twin of :meth:`acquire_lock`."""
        hold = hold_timeout or self.hold_timeout
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not await asyncio.to_thread(self._try_acquire, key, holder, hold):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll_interval)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        """Release the lock of ``key``; a no-op when nobody holds it any more.

        Prefect releases a transaction's lock again at commit when a retried task already
        rolled the transaction back (and released the lock): that second release must not
        fail the flow (PrefectHQ/prefect#17676, as prefect-redis's manager does).

        Raises:
            ValueError: Another holder holds the lock of ``key``.
        """
        if self._release(key, holder) == "other":
            raise ValueError(f"No lock held by {holder} for transaction with key {key}")

    def is_locked(self, key: str) -> bool:
        """Tell whether someone holds the lock of ``key``."""
        return self._holder(key) is not None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        """Tell whether ``holder`` holds the lock of ``key``."""
        return self._holder(key) == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until the lock of ``key`` is free; return ``False`` if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Async twin of :meth:`wait_for_lock`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while await asyncio.to_thread(self.is_locked, key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll_interval)
        return True


__all__ = ["LockManagerProtocol", "Release"]

"""Lock managers with a hold timeout, for ``cache_policy.configure(lock_manager=...)``.

Prefect takes a lock per cache key when a task runs with ``isolation_level=SERIALIZABLE``, so
that two runs do not compute the same result at once. Prefect passes no hold timeout; a task
that crashes while holding the lock would block every later run. These managers always
give a lock an expiry (``hold_timeout``, 300 s by default), after which it is free again.

- :class:`RedisLockManager` (for :class:`~prefect_memory.blocks.RedisMemory`): ``SET NX PX``
  and compare-and-delete scripts, atomic across every process and machine, sent through
  the connection of the block's Redis backend (its TLS, ACL and Cluster settings).
- :class:`MemoryLockManager` (every other block): the lock is an entry with a TTL in the
  namespace ``<namespace>/prefect-locks``, taken with a set-if-absent and released (or
  extended) with a compare-and-delete. On stores whose moves are atomic
  (``capabilities.atomic_moves``: SQLite, MongoDB, JSON files, local folders, S3 servers
  that enforce conditional requests, in-process) that holds across processes; elsewhere
  only between the threads of one process.

Releasing a lock that nobody holds any more (released already, or expired) is a no-op, as in
prefect-redis; releasing a lock that another holder holds raises ``ValueError``.

Example:
    >>> from prefect_memory.blocks import InProcessMemory
    >>> locks = InProcessMemory(name="docs-locks").lock_manager(hold_timeout=30)
    >>> locks.acquire_lock("cache-key", holder="run-1")
    True
    >>> locks.acquire_lock("cache-key", holder="run-2", acquire_timeout=0)
    False
    >>> locks.release_lock("cache-key", holder="run-1")
    >>> locks.is_locked("cache-key")
    False
    >>> locks.release_lock("cache-key", holder="run-1")  # released already: a no-op
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..keys import ns_token
from ..memory import Memory
from ..shared.lock_protocol import LockManagerProtocol, Release

if TYPE_CHECKING:
    from .base import MemoryBlock

LOCKS_SUFFIX = "/prefect-locks"
_PROCESS_LOCK = threading.Lock()

"""What a release found: the holder's lock (now released), no lock, or another's lock."""

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# 1: released; 0: nobody holds it (a no-op); -1: another holder has it. One script, so that
# "free" and "another's" are told apart atomically with the delete.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
if current == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return -1
"""
_OUTCOMES = {1: "released", 0: "free", -1: "other"}


class MemoryLockManager(LockManagerProtocol):
    """Locks as entries with a TTL in a memory block (Prefect's ``LockManager`` protocol).

    Args:
        block: The memory block holding the locks.
        hold_timeout: Seconds after which a lock expires when Prefect passes no
            ``hold_timeout`` (it never does).
        poll_interval: Seconds between two attempts while waiting for a lock.
    """

    def __init__(
        self, block: MemoryBlock, *, hold_timeout: float = 300.0, poll_interval: float = 0.05
    ) -> None:
        if isinstance(hold_timeout, bool) or not hold_timeout > 0:
            raise ConfigError(f"hold_timeout must be positive seconds, got {hold_timeout!r}")
        if not poll_interval > 0:
            raise ConfigError(f"poll_interval must be positive seconds, got {poll_interval!r}")
        self.block = block
        self.hold_timeout = float(hold_timeout)
        self.poll_interval = float(poll_interval)
        self._memory: Memory | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.block).__name__}(namespace="
            f"{self.block.namespace!r}), hold_timeout={self.hold_timeout})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memory"] = None
        return state

    # Prefect refuses to add two cache policies whose lock managers differ (``!=``): two
    # managers of equal blocks with equal settings are the same locks.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemoryLockManager):
            return NotImplemented
        return type(self) is type(other) and self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash((type(self), *self._settings()))

    def _settings(self) -> tuple[Any, ...]:
        return (self.block, self.hold_timeout, self.poll_interval)

    # -- primitives (overridden by the Redis manager) ----------------------------------------
    @property
    def memory(self) -> Memory:
        """The memory holding the locks (namespace ``<namespace>/prefect-locks``)."""
        if self._memory is None:
            self._memory = self.block.memory.with_namespace(self.block.namespace + LOCKS_SUFFIX)
        return self._memory

    def _entry(self, key: str) -> tuple[Any, tuple[int, float]] | None:
        """``(holder, token)`` of the lock entry of ``key``, or ``None`` when it is free."""
        memory = self.memory
        found = memory.backend.get_many(memory.namespace, [key], now=memory.clock(), touch=False)
        record = found.get(key)
        if record is None:
            return None
        return memory._decode(key, record.value), record.token  # hooks applied

    def _held_by(self, key: str, holder: str) -> tuple[int, float] | None:
        """The token of the lock entry of ``key`` when ``holder`` holds it, else ``None``."""
        entry = self._entry(key)
        return entry[1] if entry is not None and entry[0] == holder else None

    def _drop(self, key: str, token: tuple[int, float]) -> bool:
        memory = self.memory
        gone = memory.backend.delete_if_unchanged(
            memory.namespace, {key: token}, now=memory.clock()
        )
        return key in gone

    def _try_acquire(self, key: str, holder: str, hold: float) -> bool:
        with _PROCESS_LOCK:
            if self.memory.add(key, holder, ttl=hold):
                return True
            token = self._held_by(key, holder)
            if token is None:  # another holder's (or gone just now: the next attempt takes it)
                return False
            # Ours: extend it. Compare-and-delete then add, so that a lock that expired and
            # was taken by someone else meanwhile is never overwritten.
            return self._drop(key, token) and self.memory.add(key, holder, ttl=hold)

    def _release(self, key: str, holder: str) -> Release:
        with _PROCESS_LOCK:
            for _ in range(100):  # the entry changed between read and delete: look again
                entry = self._entry(key)
                if entry is None:
                    return "free"
                if entry[0] != holder:
                    return "other"
                if self._drop(key, entry[1]):
                    return "released"
            return "other"  # ours at every look, yet changed under every delete: not ours alone

    def _holder(self, key: str) -> str | None:
        return self.memory.get(key)


class RedisLockManager(MemoryLockManager):
    """Locks in Redis with ``SET NX PX``: atomic across processes, always expiring.

    A lock is the string key ``<key_prefix>:lock:{<namespace token>}:<key>`` holding the
    holder's id, with a Redis expiry.

    Args:
        block: A :class:`~prefect_memory.blocks.RedisMemory`.
        hold_timeout: Seconds after which a lock expires.
        poll_interval: Seconds between two attempts while waiting for a lock.
    """

    def __init__(
        self, block: MemoryBlock, *, hold_timeout: float = 300.0, poll_interval: float = 0.05
    ) -> None:
        super().__init__(block, hold_timeout=hold_timeout, poll_interval=poll_interval)
        self._scripts: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_scripts=None)
        return state

    def _redis(self) -> tuple[Any, Any]:
        """The connection of the block's Redis backend and the two scripts."""
        from ..plugins.redis.scripts import LuaScript
        from ..shared._redis import redis_backend

        if self._scripts is None:
            self._scripts = (LuaScript(_ACQUIRE), LuaScript(_RELEASE))
        return redis_backend(self.block.memory).connection, self._scripts

    def _name(self, key: str) -> str:
        block: Any = self.block
        return f"{block.key_prefix}:lock:{{{ns_token(block.namespace)}}}:{key}"

    def _try_acquire(self, key: str, holder: str, hold: float) -> bool:
        conn, (acquire, _release) = self._redis()
        ms = max(int(hold * 1000), 1)
        return bool(conn.run_script(acquire, [self._name(key)], [holder, ms]))

    def _release(self, key: str, holder: str) -> Release:
        conn, (_acquire, release) = self._redis()
        outcome: Release = _OUTCOMES[int(conn.run_script(release, [self._name(key)], [holder]))]
        return outcome

    def _holder(self, key: str) -> str | None:
        conn, _ = self._redis()
        name = self._name(key)
        value = conn.execute("GET", name, route=name)
        return None if value is None else value.decode("utf-8")

    def hold_remaining(self, key: str) -> float | None:
        """Seconds until the lock of ``key`` expires (``None`` when it is free)."""
        conn, _ = self._redis()
        name = self._name(key)
        ms = conn.execute("PTTL", name, route=name)
        return None if ms is None or ms < 0 else ms / 1000


def lock_manager_for(block: MemoryBlock, *, hold_timeout: float = 300.0) -> MemoryLockManager:
    """The lock manager that suits ``block`` (Redis: :class:`RedisLockManager`)."""
    from .remote import RedisMemory

    if isinstance(block, RedisMemory):
        return RedisLockManager(block, hold_timeout=hold_timeout)
    return MemoryLockManager(block, hold_timeout=hold_timeout)

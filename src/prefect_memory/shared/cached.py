"""SharedMemory: a Memory with an in-process L1 kept fresh by change broadcasts.

Reads (``get``/``get_many``) look in a private ``memory://`` L1 first; a miss reads the
shared store and copies the entry into the L1 (for at most ``l1_ttl`` seconds, never past
the entry's own expiry). Every write goes to the shared store and publishes one change
message per batch (``{key, namespace, version, source}`` for each key); every
SharedMemory on that channel, in any process, drops (or re-reads, ``on_change="refresh"``)
its L1 copy of a changed key. On Redis the write script itself publishes, so a batch costs
no extra round trip. A listener that loses its connection drops its whole L1 and reads
through to the store until it has subscribed again.

A fill that races with a change is not kept: each change bumps the key's epoch, and a read
started before it never lands in the L1. L1 hits count no access in the store and do not
push a sliding expiry; ``info``, ``exists``, ``keys`` and ``tagged`` always ask the store.

Example:
    >>> from prefect_memory.shared.cached import SharedBackend
    >>> SharedBackend.capabilities.shared
    True
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from ..keys import validate_ttl
from ..memory import Memory
from ..plugins.base import Backend, Capabilities, Record
from ..plugins.inprocess import InProcessBackend
from ..plugins.redis.backend import RedisBackend
from ._redis import redis_backend
from .broadcast import Change, Listener, decode_changes, encode_changes

OnChange = Literal["drop", "refresh"]


class SharedBackend(Backend):
    """The backend of a :class:`SharedMemory`: the shared store plus a private L1."""

    scheme: ClassVar[str] = "shared"
    capabilities: ClassVar[Capabilities] = Capabilities(shared=True)

    def __init__(
        self,
        inner: Backend,
        *,
        bus: RedisBackend,
        channel: str,
        source: str,
        l1_max_entries: int,
        l1_ttl: float | None,
        on_change: OnChange,
        subscribe_timeout: float,
    ) -> None:
        super().__init__()
        if on_change not in ("drop", "refresh"):
            raise ConfigError(f"on_change must be 'drop' or 'refresh', got {on_change!r}")
        if l1_ttl is not None:  # a ConfigError (InvalidTTLError) past the bound every TTL has
            l1_ttl = validate_ttl(l1_ttl, name="l1_ttl")
        self.inner, self.bus, self.channel, self.source = inner, bus, channel, source
        self.l1_max_entries, self.l1_ttl, self.on_change = l1_max_entries, l1_ttl, on_change
        self.subscribe_timeout = subscribe_timeout
        self.url = inner.url
        self.listeners: list[Callable[[Change], None]] = []
        self.stats = {"hits": 0, "misses": 0, "dropped": 0, "resets": 0}
        self._setup()

    def _setup(self) -> None:
        self.l1 = InProcessBackend(max_entries=self.l1_max_entries)
        self._epoch = 0
        self._floor = 0  # every key counts as changed at this epoch
        self._changed: dict[tuple[str, str], tuple[int, int]] = {}  # (epoch, version)
        self._listener: Listener | None = None
        self._native = isinstance(self.inner, RedisBackend) and self.inner is self.bus

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "l1", "_listener", "_changed"):
            state.pop(name, None)
        state["listeners"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._setup()

    # -- listening --------------------------------------------------------------------------
    def listening(self) -> bool:
        """Start the listener once (bounded wait); tell whether the L1 may serve reads."""
        listener = self._listener
        if listener is None:
            with self._lock:  # create under the lock, wait outside it (the thread takes it)
                if self._listener is None:
                    self._listener = Listener(
                        self.bus, {self.channel: self._on_message}, on_reset=self._reset,
                        subscribe_timeout=self.subscribe_timeout,
                    )  # fmt: skip
                listener = self._listener
            listener.start()
        return listener.subscribed.is_set()

    def _reset(self) -> None:
        with self._lock:
            self._epoch += 1
            self._floor = self._epoch
            self._changed.clear()
            self.l1 = InProcessBackend(max_entries=self.l1_max_entries)
            self.stats["resets"] += 1

    def _on_message(self, data: bytes) -> None:
        changes = decode_changes(data)
        stale: dict[str, list[str]] = {}
        with self._lock:
            self._epoch += 1
            if len(self._changed) > 100_000:
                self._changed.clear()
                self._floor = self._epoch
            for change in changes:
                ns, key = change.namespace, change.key
                if not key:  # the namespace was cleared
                    self._floor = self._epoch
                    self.l1.clear(ns, now=0.0)
                    continue
                self._changed[(ns, key)] = (self._epoch, change.version)
                held = self.l1.get_many(ns, [key], now=0.0).get(key)
                if held is None or (0 < change.version <= held.version):
                    continue  # not cached, or our copy is that version already
                self.l1.delete_many(ns, [key], now=0.0)
                self.stats["dropped"] += 1
                stale.setdefault(ns, []).append(key)
            epoch = self._epoch
        if self.on_change == "refresh":
            for ns, keys in stale.items():
                now = time.time()
                self._fill(ns, self.inner.get_many(ns, keys, now=now, touch=False), epoch, now)
        for listener in list(self.listeners):
            for change in changes:
                listener(change)

    def _fill(self, ns: str, records: Mapping[str, Record], epoch: int, now: float) -> None:
        with self._lock:
            if self._floor > epoch:
                return
            keep = {
                key: _l1_copy(record, now, self.l1_ttl)
                for key, record in records.items()
                if _fresh(self._changed.get((ns, key)), epoch, record)
            }
            if keep:
                self.l1.delete_many(ns, list(keep), now=now)
                self.l1.put_many(ns, keep, now=now)

    def _invalidate(self, ns: str, keys: Iterable[str], now: float) -> None:
        with self._lock:
            self._epoch += 1
            for key in keys:
                self._changed[(ns, key)] = (self._epoch, -1)
            self.l1.delete_many(ns, list(keys), now=now)

    def _publish(self, ns: str, keys: Sequence[str], versions: Sequence[int]) -> None:
        if keys:
            message = encode_changes(ns, self.source, keys, versions)
            self.bus.execute("PUBLISH", self.channel, message)

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        if not touch or not self.listening():
            return self.inner.get_many(ns, keys, now=now, touch=touch)
        with self._lock:
            found = self.l1.get_many(ns, keys, now=now)
            epoch = self._epoch
        self.stats["hits"] += len(found)
        missing = [key for key in keys if key not in found]
        if missing:
            self.stats["misses"] += len(missing)
            fetched = self.inner.get_many(ns, missing, now=now, touch=True)
            self._fill(ns, fetched, epoch, now)
            found.update(fetched)
        return found

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        self.listening()
        if self._native:
            self.inner.put_many(ns, records, now=now, notify=(self.channel, self.source))  # type: ignore[call-arg]
        else:
            self.inner.put_many(ns, records, now=now)
            self._publish(ns, list(records), [-1] * len(records))
        self._invalidate(ns, records, now)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        self.listening()
        if self._native:
            removed = self.inner.delete_many(ns, keys, now=now, notify=(self.channel, self.source))  # type: ignore[call-arg]
        else:
            removed = self.inner.delete_many(ns, keys, now=now)
            self._publish(ns, list(keys), [0] * len(keys))
        self._invalidate(ns, keys, now)
        return removed

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        written = self.inner.put_absent_many(ns, records, now=now)
        self._publish(ns, sorted(written), [-1] * len(written))
        self._invalidate(ns, written, now)
        return written

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        deleted = self.inner.delete_if_unchanged(ns, expected, now=now)
        self._publish(ns, sorted(deleted), [0] * len(deleted))
        self._invalidate(ns, deleted, now)
        return deleted

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        removed = self.inner.clear(ns, now=now, batch_size=batch_size)
        self._publish(ns, [""], [0])
        with self._lock:
            self._epoch += 1
            self._floor = self._epoch
            self.l1.clear(ns, now=now)
        return removed

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        return self.inner.exists_many(ns, keys, now=now)

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        return self.inner.scan(ns, pattern, now=now)

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        return self.inner.tagged(ns, tags, now=now)

    def purge_expired(self, ns: str, *, now: float) -> int:
        return self.inner.purge_expired(ns, now=now)

    def ping(self) -> None:
        self.inner.ping()

    def children(self) -> tuple[tuple[str, Backend], ...]:
        """The shared store (an empty role: the L1 is a cache of its entries, not a store)."""
        return (("", self.inner),)

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._reset()
        self.inner.close()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SharedBackend:
        """Not opened from a URL: wrap a Memory with :class:`SharedMemory`."""
        raise ConfigError("wrap a memory with prefect_memory.shared.SharedMemory(memory)")


class SharedMemory(Memory):
    """A Memory whose writes are broadcast and whose reads go through an in-process L1.

    Args:
        memory: The shared memory to wrap (its namespace, TTL, codec and hooks are kept).
        bus: Redis to broadcast on when ``memory`` is not on Redis (a URL or a Memory).
        channel: Pub/sub channel (default ``<key_prefix>:changes``).
        source: Who this writer is in change messages (default: a fresh unique id).
        l1_max_entries: Most entries kept in the L1 (least recently used evicted).
        l1_ttl: Most seconds an entry stays in the L1 (a bound on staleness should a
            message be lost while connected); ``None``: until changed or evicted.
        on_change: ``"drop"`` the L1 copy of a changed key, or ``"refresh"`` it at once.
        subscribe_timeout: Seconds to wait for the subscription before the first use.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        bus: str | Memory | None = None,
        channel: str | None = None,
        source: str | None = None,
        l1_max_entries: int = 10_000,
        l1_ttl: float | None = 60.0,
        on_change: OnChange = "drop",
        subscribe_timeout: float = 5.0,
    ) -> None:
        redis = redis_backend(memory if bus is None else bus)
        backend = SharedBackend(
            memory.backend, bus=redis, channel=channel or f"{redis.key_prefix}:changes",
            source=source or uuid.uuid4().hex[:12], l1_max_entries=l1_max_entries,
            l1_ttl=l1_ttl, on_change=on_change, subscribe_timeout=subscribe_timeout,
        )  # fmt: skip
        super().__init__(
            backend, memory.namespace, ttl=memory.ttl, refresh=memory.refresh,
            codec=memory.codec, batch_size=memory.batch_size, clock=memory.clock,
            hooks=memory.hooks,
        )  # fmt: skip
        backend.listening()

    @property
    def source(self) -> str:
        """This writer's id in change messages."""
        return self.backend.source  # type: ignore[attr-defined,no-any-return]

    @property
    def stats(self) -> dict[str, int]:
        """L1 counters: ``hits``, ``misses``, ``dropped`` copies, ``resets``."""
        return dict(self.backend.stats)  # type: ignore[attr-defined]

    def on_change(self, callback: Callable[[Change], None]) -> None:
        """Call ``callback(change)`` (in the listener thread) for every broadcast change."""
        self.backend.listeners.append(callback)  # type: ignore[attr-defined]

    def cached(self, key: str) -> bool:
        """Tell whether the L1 holds a live copy of ``key``."""
        l1: InProcessBackend = self.backend.l1  # type: ignore[attr-defined]
        return bool(l1.get_many(self.namespace, [key], now=self.clock()))


def _fresh(changed: tuple[int, int] | None, epoch: int, record: Record) -> bool:
    """Whether a record read at ``epoch`` may enter the L1: no change of its key since, or
    the change announced a version this record already has."""
    return changed is None or changed[0] <= epoch or 0 < changed[1] <= record.version


def _l1_copy(record: Record, now: float, l1_ttl: float | None) -> Record:
    expires = record.expires_at
    if l1_ttl is not None:
        expires = now + l1_ttl if expires is None else min(expires, now + l1_ttl)
    return replace(record, expires_at=expires, sliding=False)


__all__ = ["SharedBackend", "SharedMemory"]

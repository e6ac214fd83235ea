"""In-process backend (``memory://``): an LRU-bounded dictionary, the L1 of tiered memory.

``memory://`` is private to the Memory that opens it; ``memory://name`` is shared by
every Memory of this process that opens the same name. When ``max_entries`` is reached
the least recently used entry is evicted and handed to ``on_evict`` (tiered memory
demotes it there instead of losing it).

Example:
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> backend = InProcessBackend.from_url("memory://?max_entries=2")
    >>> backend.max_entries
    2
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigError
from ..keys import glob_match
from .base import Backend, Capabilities, Record, StoreUsage

_SHARED: dict[str, _Store] = {}
_SHARED_LOCK = threading.Lock()

EvictHook = Callable[[str, str, Record], None]


class _Store:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[str, str], Record] = OrderedDict()
        self.lock = threading.RLock()
        self.evictions = 0


class InProcessBackend(Backend):
    """A bounded in-process store (thread-safe; not shared across processes).

    Args:
        name: Share the store with every backend of this process opened with the same name
            (``None``: a private store).
        max_entries: Most entries kept; the least recently used are evicted past it.
        on_evict: Called with ``(namespace, key, record)`` for each evicted entry.
    """

    scheme: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=False, shared=False, atomic_moves=True, metadata_reads=True, local=True
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        max_entries: int = 100_000,
        on_evict: EvictHook | None = None,
    ) -> None:
        super().__init__()
        if max_entries < 1:
            raise ConfigError(f"max_entries must be >= 1, got {max_entries}")
        self.name = name or None
        self.max_entries = max_entries
        self.on_evict = on_evict
        self.url = f"memory://{name or ''}"
        if self.name is None:
            self._store = _Store(max_entries)
        else:
            with _SHARED_LOCK:
                self._store = _SHARED.setdefault(self.name, _Store(max_entries))

    @classmethod
    def from_url(cls, url: str, **options: Any) -> InProcessBackend:
        """Build from ``memory://[name][?max_entries=N]``."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        name = (parts.netloc + parts.path).strip("/") or None
        if "max_entries" in query:
            try:
                options.setdefault("max_entries", int(query.pop("max_entries")))
            except ValueError as err:
                raise ConfigError(f"max_entries in {url!r} must be an integer") from err
        if query:
            raise ConfigError(f"unknown memory:// options in {url!r}: {', '.join(sorted(query))}")
        options.pop("timeout", None)
        return cls(name, **options)

    @property
    def evictions(self) -> int:
        """How many entries were evicted over ``max_entries`` so far."""
        return self._store.evictions

    def usage(self) -> StoreUsage:
        """Entries held against ``max_entries``, and the evictions so far."""
        store = self._store
        return StoreUsage(
            entries=len(store.entries),
            max_entries=store.max_entries,
            details={"evictions": store.evictions},
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self.name is None:
            raise TypeError(
                "a private memory:// store cannot be pickled (its data lives in this process); "
                "use memory://NAME, sqlite:// or a server backend"
            )
        state.pop("_store")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        with _SHARED_LOCK:
            self._store = _SHARED.setdefault(self.name, _Store(self.max_entries))  # type: ignore[arg-type]

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        store = self._store
        out: dict[str, Record] = {}
        with store.lock:
            for key in keys:
                record = store.entries.get((ns, key))
                if record is None:
                    continue
                if record.expired(now):
                    del store.entries[(ns, key)]
                    continue
                if touch:
                    record = record.touched(now)
                    store.entries[(ns, key)] = record
                    store.entries.move_to_end((ns, key))
                out[key] = record
        return out

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """The live records of ``keys`` without values (the stored values are not copied)."""
        store = self._store
        out: dict[str, Record] = {}
        with store.lock:
            for key in keys:
                record = store.entries.get((ns, key))
                if record is not None and not record.expired(now):
                    out[key] = record.without_value()
        return out

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        store = self._store
        evicted: list[tuple[tuple[str, str], Record]] = []
        with store.lock:
            for key, record in records.items():
                old = store.entries.get((ns, key))
                store.entries[(ns, key)] = record.merged_over(old, now)
                store.entries.move_to_end((ns, key))
            while len(store.entries) > store.max_entries:
                evicted.append(store.entries.popitem(last=False))
                store.evictions += 1
        if self.on_evict is not None:
            for (ens, ekey), record in evicted:
                if not record.expired(now):
                    self.on_evict(ens, ekey, record)

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        with self._store.lock:
            absent = {
                k: r
                for k, r in records.items()
                if (old := self._store.entries.get((ns, k))) is None or old.expired(now)
            }
            self.put_many(ns, absent, now=now)
        return set(absent)

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        deleted: set[str] = set()
        with self._store.lock:
            for key, token in expected.items():
                record = self._store.entries.get((ns, key))
                if record is not None and record.token == tuple(token):
                    del self._store.entries[(ns, key)]
                    deleted.add(key)
        return deleted

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        removed = 0
        with self._store.lock:
            for key in keys:
                record = self._store.entries.pop((ns, key), None)
                if record is not None and not record.expired(now):
                    removed += 1
        return removed

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        with self._store.lock:
            keys = [
                key
                for (ens, key), record in self._store.entries.items()
                if ens == ns and not record.expired(now) and glob_match(key, pattern)
            ]
        yield from keys

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        wanted = set(tags)
        with self._store.lock:
            return {
                key
                for (ens, key), record in self._store.entries.items()
                if ens == ns and not record.expired(now) and wanted.intersection(record.tags)
            }

    def purge_expired(self, ns: str, *, now: float) -> int:
        with self._store.lock:
            dead = [
                k for k, record in self._store.entries.items() if k[0] == ns and record.expired(now)
            ]
            for k in dead:
                del self._store.entries[k]
        return len(dead)

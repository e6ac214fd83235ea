"""A lazy mapping view of a memory: the Python form of the tutorial's Proxy pattern.

``view["key"]`` loads the value on first access and keeps it locally; later accesses
cost nothing. ``prefetch`` loads many keys in one batch; ``forget`` drops local copies.

Example:
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("memory://", namespace="lazy-doc")
    >>> mem.set_many({"a": 1, "b": 2})
    >>> view = mem.lazy()
    >>> view["a"], "b" in view, view.get("missing", 0)
    (1, True, 0)
    >>> view.loaded
    ['a', 'b', 'missing']
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from .errors import EntryNotFound

if TYPE_CHECKING:
    from .memory import Memory

_MISSING: Any = object()


class LazyView(MutableMapping[str, Any]):
    """Values of a memory loaded on first access and cached in this process.

    Writes (``view[k] = v``, ``del view[k]``) go to the memory and update the local copy.
    Iteration lists the memory's keys (a scan); ``len`` counts them.
    """

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self._cache: dict[str, Any] = {}
        self._absent: set[str] = set()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        """Keys whose value (or absence) is held locally, sorted."""
        return sorted(set(self._cache) | self._absent)

    def __getitem__(self, key: str) -> Any:
        value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            return value
        if key in self._absent:
            raise EntryNotFound(key)
        value = self.memory.get(key, _MISSING)
        with self._lock:
            if value is _MISSING:
                self._absent.add(key)
            else:
                self._cache[key] = value
        if value is _MISSING:
            raise EntryNotFound(key)
        return value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __setitem__(self, key: str, value: Any) -> None:
        self.memory.set(key, value)
        with self._lock:
            self._cache[key] = value
            self._absent.discard(key)

    def __delitem__(self, key: str) -> None:
        if not self.memory.delete(key):
            raise EntryNotFound(key)
        with self._lock:
            self._cache.pop(key, None)
            self._absent.add(key)

    def __iter__(self) -> Iterator[str]:
        return self.memory.keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.memory.keys())  # noqa: SIM118 - a Memory, not a dict

    def prefetch(self, keys: Iterable[str]) -> int:
        """Load ``keys`` not yet held, in batches; return how many were found."""
        wanted = [k for k in keys if k not in self._cache and k not in self._absent]
        found = self.memory.get_many(wanted)
        with self._lock:
            self._cache.update(found)
            self._absent.update(k for k in wanted if k not in found)
        return len(found)

    def forget(self, *keys: str) -> None:
        """Drop local copies (all of them when no key is given), so the next access reloads."""
        with self._lock:
            if not keys:
                self._cache.clear()
                self._absent.clear()
            for key in keys:
                self._cache.pop(key, None)
                self._absent.discard(key)

"""The Memory facade: namespaces, tags, TTL policy and codecs, above every backend.

Example:
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("memory://", namespace="docs")
    >>> mem.set("session:42", {"user": 7}, ttl=1800, tags=["user:7"])
    >>> mem.get("session:42")
    {'user': 7}
    >>> mem.info("session:42").access_count
    1
    >>> mem.invalidate_tags("user:7")
    1
    >>> mem.get("session:42", default="gone")
    'gone'
"""

from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import enum
import functools
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .aio import Body, Call, adrive, async_twin, call, drive
from .codecs import Codec
from .errors import ConfigError, EntryNotFound, SerializationError
from .keys import (
    glob_match,
    validate_key,
    validate_keys,
    validate_namespace,
    validate_pattern,
    validate_tags,
    validate_ttl,
)
from .plugins.base import Backend, Record

if TYPE_CHECKING:
    from .lazy_view import LazyView


class _Unset(enum.Enum):
    """Says "not given" where ``None`` means something (``ttl=None``: no expiry).

    An enum member: it pickles to itself, so a default that crossed to a Dask worker or
    a Prefect task run in another process is still recognised, and its repr is stable
    (Prefect's input hashing gives the same cache key in every process).
    """

    UNSET = "unset"

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset.UNSET
R = TypeVar("R")
TTL = float | int | _dt.timedelta | None


_UTC = _dt.timezone.utc
_LATEST = _dt.datetime.max.replace(tzinfo=_UTC)
_EARLIEST = _dt.datetime.min.replace(tzinfo=_UTC)


def _to_datetime(ts: float | None, key: str = "", field: str = "timestamp") -> _dt.datetime | None:
    """Epoch seconds as an aware UTC datetime; stored values beyond ``datetime`` are clamped.

    Another writer of the store may leave any number in an entry's metadata: a finite or
    infinite one outside ``datetime``'s range reads as its latest or earliest value, and
    anything else (NaN, not a number) is a :class:`SerializationError` naming the key.
    """
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, tz=_UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts == ts:
            return _LATEST if ts > 0 else _EARLIEST
        raise SerializationError(
            f"entry {key!r} has an unreadable {field} in its stored metadata: {ts!r}"
        ) from None


def normalize_ttl(ttl: Any, *, name: str = "ttl") -> float | None:
    """Turn a TTL (seconds, ``timedelta`` or ``None``) into positive seconds or ``None``.

    Raises:
        InvalidTTLError: Not a number or ``timedelta``, not positive, not finite, or above
            :data:`~prefect_memory.keys.MAX_TTL` (100 years).
    """
    if ttl is None:
        return None
    if isinstance(ttl, _dt.timedelta):
        return validate_ttl(ttl.total_seconds(), name=name)
    return validate_ttl(ttl, name=name)


class Hook:
    """A save/load hook; override what you need (each default passes the value through).

    Value hooks see Python values (validate, transform, migrate old formats); byte hooks
    see the encoded bytes (encrypt, sign). On save, hooks run in order; on load, in reverse.

    Example:
        >>> import prefect_memory as pm
        >>> class Upper(pm.Hook):
        ...     def before_save(self, key, value):
        ...         return value.upper()
        >>> mem = pm.open_memory("memory://", hooks=[Upper()])
        >>> mem.set("k", "shout"); mem.get("k")
        'SHOUT'
    """

    def before_save(self, key: str, value: Any) -> Any:
        """Return the value to store for ``key`` (raise to refuse it)."""
        return value

    def after_load(self, key: str, value: Any) -> Any:
        """Return the value to hand out for ``key``."""
        return value

    def encode_bytes(self, key: str, data: bytes) -> bytes:
        """Return the bytes to store (after encoding)."""
        return data

    def decode_bytes(self, key: str, data: bytes) -> bytes:
        """Return the bytes to decode (before decoding)."""
        return data

    def encode_bytes_in(self, namespace: str, key: str, data: bytes) -> bytes:
        """:meth:`encode_bytes`, told the memory's namespace (override to bind it)."""
        return self.encode_bytes(key, data)

    def decode_bytes_in(self, namespace: str, key: str, data: bytes) -> bytes:
        """:meth:`decode_bytes`, told the memory's namespace (override to bind it)."""
        return self.decode_bytes(key, data)


@dataclass(frozen=True)
class EntryInfo:
    """Metadata of one entry, as returned by :meth:`Memory.info`."""

    key: str
    namespace: str
    created_at: _dt.datetime
    updated_at: _dt.datetime
    last_access: _dt.datetime
    access_count: int
    expires_at: _dt.datetime | None
    ttl: float | None
    sliding: bool
    tags: tuple[str, ...]
    size: int
    version: int
    tier: str | None = None

    @classmethod
    def from_record(
        cls, key: str, namespace: str, record: Record, tier: str | None = None
    ) -> EntryInfo:
        """Build the public view of a backend record."""
        created, updated, last = (
            _to_datetime(ts, key, field)
            for ts, field in (
                (record.created_at, "created_at"),
                (record.updated_at, "updated_at"),
                (record.last_access, "last_access"),
            )
        )
        return cls(
            key=key,
            namespace=namespace,
            created_at=created,  # type: ignore[arg-type]
            updated_at=updated,  # type: ignore[arg-type]
            last_access=last,  # type: ignore[arg-type]
            access_count=record.access_count,
            expires_at=_to_datetime(record.expires_at, key, "expires_at"),
            ttl=record.ttl,
            sliding=record.sliding,
            tags=tuple(record.tags),
            size=record.size,
            version=record.version,
            tier=tier if tier is not None else record.tier,
        )


class Memory:
    """A namespaced key-value memory over one backend.

    Packages on the floors above attach their features without this module knowing them
    (see :func:`register_memory_accessor`): DataFrames are ``mem.frames.put``/``get``/
    ``append`` (from :mod:`prefect_memory.tabular`); the health of every store is
    ``prefect_memory.health(mem)``.

    Args:
        backend: The storage backend.
        namespace: Keys of this memory never collide with another namespace's.
        ttl: Default time to live of entries (seconds or ``timedelta``; ``None``: no expiry).
        refresh: Default for sliding expiry: an access pushes ``expires_at`` to now + ttl.
        codec: How values become bytes (msgpack by default; compression and pickle opt-in).
        batch_size: Largest batch sent to the backend in one round trip.
        clock: Source of the current time in epoch seconds (tests may pass their own).
        hooks: Save/load hooks (validation, transformation, encryption), see :class:`Hook`.
    """

    def __init__(
        self,
        backend: Backend,
        namespace: str = "default",
        *,
        ttl: TTL = None,
        refresh: bool = False,
        codec: Codec | None = None,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.time,
        hooks: Iterable[Hook] = (),
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.namespace = validate_namespace(namespace)
        self.ttl = normalize_ttl(ttl)
        self.refresh = bool(refresh)
        self.codec = codec or Codec()
        self.batch_size = batch_size
        self.clock = clock
        self.hooks: tuple[Hook, ...] = tuple(hooks)
        for hook in self.hooks:
            if not isinstance(hook, Hook):
                raise ConfigError(f"hooks must be prefect_memory.Hook objects, got {hook!r}")

    def __repr__(self) -> str:
        return f"Memory({self.backend!r}, namespace={self.namespace!r}, ttl={self.ttl})"

    def with_namespace(self, namespace: str) -> Memory:
        """Return a memory of the same kind, backend and options with another namespace."""
        clone = copy.copy(self)
        clone.namespace = validate_namespace(namespace)
        return clone

    # -- helpers ------------------------------------------------------------------------------
    def _encode(self, key: str, value: Any) -> bytes:
        for hook in self.hooks:
            value = hook.before_save(key, value)
        data = self.codec.encode(value)
        for hook in self.hooks:
            data = hook.encode_bytes_in(self.namespace, key, data)
        return data

    def _decode(self, key: str, data: bytes) -> Any:
        for hook in reversed(self.hooks):
            data = hook.decode_bytes_in(self.namespace, key, data)
        value = self.codec.decode(data)
        for hook in reversed(self.hooks):
            value = hook.after_load(key, value)
        return value

    def _record_factory(
        self, now: float, ttl: Any, tags: Iterable[str], refresh: bool | None
    ) -> Callable[[str, Any], Record]:
        """A maker of new records written at ``now`` with the given TTL policy and tags."""
        tags = validate_tags(tags)
        seconds = self.ttl if ttl is _UNSET else normalize_ttl(ttl)
        sliding = (self.refresh if refresh is None else bool(refresh)) and seconds is not None
        expires_at = None if seconds is None else now + seconds
        encode = self._encode if self.hooks else (lambda _key, value: self.codec.encode(value))

        def make(key: str, value: Any) -> Record:
            return Record(encode(key, value), now, now, now, 0, expires_at, seconds, sliding, tags)

        return make

    def _batches(self, items: list[Any]) -> Iterator[list[Any]]:
        for start in range(0, len(items), self.batch_size):
            yield items[start : start + self.batch_size]

    # -- how a method and its async twin share their code --------------------------------------
    # A single-entry method is a prepare (validate, build the records), one backend call and
    # a finish (decode): its ``a`` twin runs the same prepare and finish around the
    # backend's async call. A batch method is a sans-I/O body (``_set_many``...) yielding
    # its backend calls, one per batch (see :mod:`prefect_memory.aio`), run with the
    # backend's blocking methods or awaited with its async ones. Either way the twin is
    # native only on a backend that declares ``capabilities.native_async`` (no thread per
    # call); on any other it runs the blocking method in a worker thread.
    def _call(self, request: Call) -> Any:
        method, args, kwargs = request
        return getattr(self.backend, method)(*args, **kwargs)

    async def _acall(self, request: Call) -> Any:
        method, args, kwargs = request
        return await getattr(self.backend, "a" + method)(*args, **kwargs)

    def _run(self, body: Body[R]) -> R:
        return drive(body, self._call)

    async def _arun(
        self, method: Callable[..., R], body: Callable[..., Body[R]], *args: Any, **kwargs: Any
    ) -> R:
        if self.backend.capabilities.native_async:
            return await adrive(body(*args, **kwargs), self._acall)
        return await asyncio.to_thread(method, *args, **kwargs)

    def _one_record(
        self, key: str, value: Any, ttl: Any, tags: Iterable[str], refresh: bool | None
    ) -> tuple[dict[str, Record], float]:
        """``({key: record}, now)`` of a single write (the key checked first)."""
        validate_key(key)
        now = self.clock()
        return {key: self._record_factory(now, ttl, tags, refresh)(key, value)}, now

    def _value(self, key: str, found: Mapping[str, Record], default: Any) -> Any:
        record = found.get(key)
        if record is None:
            return default
        return self._decode(key, record.value) if self.hooks else self.codec.decode(record.value)

    def _info(self, key: str, found: Mapping[str, Record]) -> EntryInfo | None:
        record = found.get(key)
        return None if record is None else EntryInfo.from_record(key, self.namespace, record)

    # -- single entries -----------------------------------------------------------------------
    def set(
        self,
        key: str,
        value: Any,
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Store ``value`` under ``key``.

        Args:
            key: Non-empty ``str``.
            value: Anything msgpack carries, plus bytes, datetimes, tuples, sets, numpy arrays
                (and any object when the memory was opened with ``pickle=True``).
            ttl: Seconds (or ``timedelta``) to live, positive and at most 100 years
                (:data:`~prefect_memory.keys.MAX_TTL`); ``None`` for no expiry; default: the
                memory's ``ttl``.
            tags: Tags for :meth:`invalidate_tags` (a lone ``str`` is one tag).
            refresh: Sliding expiry for this entry (default: the memory's ``refresh``).

        Raises:
            InvalidKeyError: The key or a tag is empty, holds NUL or a lone surrogate
                (:class:`~prefect_memory.errors.KeyTypeError` when not a ``str``).
            InvalidTTLError: ``ttl`` is out of bounds. Either is raised before anything is
                written.
        """
        records, now = self._one_record(key, value, ttl, tags, refresh)
        self.backend.put_many(self.namespace, records, now=now)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key`` (counting an access), or ``default``."""
        validate_key(key)
        found = self.backend.get_many(self.namespace, [key], now=self.clock(), touch=True)
        return self._value(key, found, default)

    def exists(self, key: str) -> bool:
        """Tell whether ``key`` has a live entry (does not count an access)."""
        validate_key(key)
        return key in self.backend.exists_many(self.namespace, [key], now=self.clock())

    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether a live entry was removed."""
        validate_key(key)
        return self.backend.delete_many(self.namespace, [key], now=self.clock()) == 1

    def info(self, key: str) -> EntryInfo | None:
        """Return the metadata of ``key`` (``None`` when missing); does not count an access."""
        validate_key(key)
        found = self.backend.get_many(self.namespace, [key], now=self.clock(), touch=False)
        return self._info(key, found)

    # -- batches ------------------------------------------------------------------------------
    def set_many(
        self,
        entries: Mapping[str, Any],
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Store every item of ``entries`` (one round trip per batch)."""
        self._run(self._set_many(entries, ttl=ttl, tags=tags, refresh=refresh))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys that have a live entry (counting accesses)."""
        return self._run(self._get_many(keys))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete ``keys``; return how many live entries were removed."""
        return self._run(self._delete_many(keys))

    def _set_many(
        self,
        entries: Mapping[str, Any],
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> Body[None]:
        if not isinstance(entries, Mapping):
            raise TypeError(f"set_many takes a mapping of key to value, got {type(entries)}")
        validate_keys(entries)
        now = self.clock()
        make = self._record_factory(now, ttl, tags, refresh)
        items = list(entries.items())
        for batch in self._batches(items):
            records = {key: make(key, value) for key, value in batch}
            yield call("put_many", self.namespace, records, now=now)

    def _get_many(self, keys: Iterable[str]) -> Body[dict[str, Any]]:
        keys = list(dict.fromkeys(validate_keys(keys)))
        codec_decode = self.codec.decode
        hooked = bool(self.hooks)
        out: dict[str, Any] = {}
        for batch in self._batches(keys):
            found = yield call("get_many", self.namespace, batch, now=self.clock(), touch=True)
            for key in batch:
                record = found.get(key)
                if record is not None:
                    data = record.value
                    out[key] = self._decode(key, data) if hooked else codec_decode(data)
        return out

    def _delete_many(self, keys: Iterable[str]) -> Body[int]:
        keys = list(dict.fromkeys(validate_keys(keys)))
        removed = 0
        for batch in self._batches(keys):
            removed += yield call("delete_many", self.namespace, batch, now=self.clock())
        return removed

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Yield the keys of this namespace matching the glob ``pattern``."""
        validate_pattern(pattern)
        for key in self.backend.scan(self.namespace, pattern, now=self.clock()):
            if glob_match(key, pattern):
                yield key

    def add(
        self,
        key: str,
        value: Any,
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> bool:
        """Store ``value`` only if ``key`` has no live entry; return whether it was stored.

        Atomic on stores that offer it (Redis, SQLite, in-process); elsewhere a check then
        a write.
        """
        records, now = self._one_record(key, value, ttl, tags, refresh)
        return key in self.backend.put_absent_many(self.namespace, records, now=now)

    def tagged(self, *tags: str | Iterable[str]) -> list[str]:
        """Return the keys carrying any of ``tags`` (sorted)."""
        return self._run(self._tagged(*tags))

    def invalidate_tags(self, *tags: str | Iterable[str]) -> int:
        """Delete every entry carrying any of ``tags``; return how many were removed."""
        return self._run(self._invalidate_tags(*tags))

    def _tagged(self, *tags: str | Iterable[str]) -> Body[list[str]]:
        flat: list[str] = []
        for tag in tags:
            flat.extend(validate_tags(tag))
        flat = list(dict.fromkeys(flat))
        if not flat:
            return []
        found = yield call("tagged", self.namespace, flat, now=self.clock())
        return sorted(found)

    def _invalidate_tags(self, *tags: str | Iterable[str]) -> Body[int]:
        keys = yield from self._tagged(*tags)
        return (yield from self._delete_many(keys)) if keys else 0

    def clear(self) -> int:
        """Delete every entry of this namespace; return how many were removed."""
        return self.backend.clear(self.namespace, now=self.clock())

    def purge_expired(self) -> int:
        """Remove expired entries the store keeps until cleaned; return how many."""
        return self.backend.purge_expired(self.namespace, now=self.clock())

    def lazy(self) -> LazyView:
        """A mapping view loading each value on first access and keeping it locally."""
        from .lazy_view import LazyView

        return LazyView(self)

    def ping(self) -> None:
        """Raise :class:`~prefect_memory.errors.BackendUnavailable` if the store is down."""
        self.backend.ping()

    def close(self) -> None:
        """Release the backend's connections (the memory reconnects if used again)."""
        self.backend.close()

    # -- mapping sugar ------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(key) and self.exists(key)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _UNSET)
        if value is _UNSET:
            raise EntryNotFound(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise EntryNotFound(key)

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- async twins: the same code, native on a backend with an async driver -----------------
    async def aset(
        self,
        key: str,
        value: Any,
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Async twin of :meth:`set` (same arguments and result)."""
        if not self.backend.capabilities.native_async:
            return await asyncio.to_thread(
                self.set, key, value, ttl=ttl, tags=tags, refresh=refresh
            )
        records, now = self._one_record(key, value, ttl, tags, refresh)
        await self.backend.aput_many(self.namespace, records, now=now)

    async def aget(self, key: str, default: Any = None) -> Any:
        """Async twin of :meth:`get` (same arguments and result)."""
        if not self.backend.capabilities.native_async:
            return await asyncio.to_thread(self.get, key, default)
        validate_key(key)
        found = await self.backend.aget_many(self.namespace, [key], now=self.clock(), touch=True)
        return self._value(key, found, default)

    async def aexists(self, key: str) -> bool:
        """Async twin of :meth:`exists` (same arguments and result)."""
        if not self.backend.capabilities.native_async:
            return await asyncio.to_thread(self.exists, key)
        validate_key(key)
        return key in await self.backend.aexists_many(self.namespace, [key], now=self.clock())

    async def adelete(self, key: str) -> bool:
        """Async twin of :meth:`delete` (same arguments and result)."""
        if not self.backend.capabilities.native_async:
            return await asyncio.to_thread(self.delete, key)
        validate_key(key)
        return await self.backend.adelete_many(self.namespace, [key], now=self.clock()) == 1

    async def ainfo(self, key: str) -> EntryInfo | None:
        """Async twin of :meth:`info` (same arguments and result)."""
        if not self.backend.capabilities.native_async:
            return await asyncio.to_thread(self.info, key)
        validate_key(key)
        found = await self.backend.aget_many(self.namespace, [key], now=self.clock(), touch=False)
        return self._info(key, found)

    async def aadd(
        self,
        key: str,
        value: Any,
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> bool:
        """Async twin of :meth:`add` (same arguments and result)."""
        if not self.backend.capabilities.native_async:
            return await asyncio.to_thread(
                self.add, key, value, ttl=ttl, tags=tags, refresh=refresh
            )
        records, now = self._one_record(key, value, ttl, tags, refresh)
        return key in await self.backend.aput_absent_many(self.namespace, records, now=now)

    async def aset_many(
        self,
        entries: Mapping[str, Any],
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Async twin of :meth:`set_many` (same arguments and result)."""
        await self._arun(
            self.set_many, self._set_many, entries, ttl=ttl, tags=tags, refresh=refresh
        )

    async def aget_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Async twin of :meth:`get_many` (same arguments and result)."""
        return await self._arun(self.get_many, self._get_many, keys)

    async def adelete_many(self, keys: Iterable[str]) -> int:
        """Async twin of :meth:`delete_many` (same arguments and result)."""
        return await self._arun(self.delete_many, self._delete_many, keys)

    async def atagged(self, *tags: str | Iterable[str]) -> list[str]:
        """Async twin of :meth:`tagged` (same arguments and result)."""
        return await self._arun(self.tagged, self._tagged, *tags)

    async def ainvalidate_tags(self, *tags: str | Iterable[str]) -> int:
        """Async twin of :meth:`invalidate_tags` (same arguments and result)."""
        return await self._arun(self.invalidate_tags, self._invalidate_tags, *tags)

    # Scans and whole-namespace work: in a worker thread on every backend.
    aclear = async_twin(clear)
    apurge_expired = async_twin(purge_expired)

    async def akeys(self, pattern: str = "*") -> list[str]:
        """Async twin of :meth:`keys`, returning a list."""
        return await async_twin(_list_keys)(self, pattern)


def _list_keys(memory: Memory, pattern: str) -> list[str]:
    return list(memory.keys(pattern))


# -- extensions: features of the floors above, attached without this module importing them --
A = TypeVar("A", bound=type)


class _Accessor:
    """A class attribute giving ``accessor(memory)`` on each access from a memory.

    Not cached on the instance: ``with_namespace`` copies a memory, and a cached accessor
    would stay bound to the original.
    """

    def __init__(self, name: str, accessor: type) -> None:
        self.name = name
        self.accessor = accessor

    def __get__(self, memory: Memory | None, owner: type) -> Any:
        return self.accessor if memory is None else self.accessor(memory)


def register_memory_accessor(name: str) -> Callable[[A], A]:
    """Class decorator: ``mem.<name>`` becomes an instance of the class, bound to ``mem``.

    The way pandas registers DataFrame accessors (and pandera its ``df.pandera``): the
    package that owns a feature registers it when imported, so :class:`Memory` never
    imports the floors above it. Re-registering the same name replaces the accessor; a
    name :class:`Memory` defines itself is refused.

    Example:
        >>> import prefect_memory as pm
        >>> @register_memory_accessor("shout")
        ... class Shout:
        ...     def __init__(self, memory):
        ...         self._memory = memory
        ...     def get(self, key):
        ...         return self._memory.get(key).upper()
        >>> mem = pm.open_memory("memory://")
        >>> mem.set("k", "hi"); mem.shout.get("k")
        'HI'
        >>> del Memory.shout
    """

    def decorator(accessor: A) -> A:
        _check_free(name)
        setattr(Memory, name, _Accessor(name, accessor))
        return accessor

    return decorator


def register_memory_method(
    name: str, function: Callable[..., Any], *, deprecated: str | None = None
) -> None:
    """Attach ``function`` to :class:`Memory` as method ``name`` (called with the memory).

    Args:
        name: The method's name.
        function: Takes the memory first, then the method's arguments.
        deprecated: When given, the spelling users should use instead: each call then
            emits a :class:`DeprecationWarning` naming it.

    Example:
        >>> import warnings
        >>> import prefect_memory as pm
        >>> register_memory_method("size", lambda mem: len(list(mem.keys())),
        ...                        deprecated="len(list(mem.keys()))")
        >>> mem = pm.open_memory("memory://")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     mem.size()
        0
        >>> print(caught[0].message)
        Memory.size() is deprecated; use len(list(mem.keys()))
        >>> del Memory.size
    """
    _check_free(name)
    message = f"Memory.{name}() is deprecated; use {deprecated}"

    @functools.wraps(function)
    def method(self: Memory, *args: Any, **kwargs: Any) -> Any:
        if deprecated is not None:
            warnings.warn(message, DeprecationWarning, stacklevel=2)
        return function(self, *args, **kwargs)

    method.__name__ = name
    method.__qualname__ = f"Memory.{name}"
    if deprecated is not None:
        method.__doc__ = f"Deprecated: use ``{deprecated}``."
    setattr(Memory, name, method)


def _check_free(name: str) -> None:
    if name in _CORE:
        raise ValueError(f"Memory already defines {name!r}; pick another name")


#: What :class:`Memory` defines itself (an extension may not shadow it).
_CORE = frozenset(name for name in vars(Memory) if not name.startswith("__"))

"""The backend protocol: a handful of batch methods on raw bytes and metadata.

A backend stores :class:`Record` objects per namespace and key. It knows nothing of
codecs, hooks or TTL policy (those live in :mod:`prefect_memory.memory`, written once
above every backend); it does know how to keep its own metadata consistent:

- ``put_many`` upserts: for a key that already has a live entry it keeps ``created_at``,
  ``access_count`` and ``last_access`` and sets ``version`` to the old version plus one.
- ``get_many`` never returns an expired entry; with ``touch=True`` it counts an access
  (``access_count + 1``, ``last_access = now``) and, for a sliding entry, pushes
  ``expires_at`` to ``now + ttl``.
- every method is a batch: one round trip (pipeline, bulk write, concurrent calls) per
  batch, not per key.

Backends must be safe to share between threads and to pickle (clients are created
lazily and dropped from the pickled state).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..errors import ConfigError
from ..urls import redact_url


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do natively (composition layers consult these).

    Attributes:
        native_ttl: The store removes expired entries by itself.
        batch: Batches are sent in one round trip (pipeline, bulk write, concurrent calls).
        server_scripts: Server-side scripts (for atomic multi-step updates).
        persistent: Data survives a restart of the process (and of the server).
        shared: Several processes (or machines) see the same data.
        pushdown: Filters can run inside the store: :meth:`Backend.scan_query` is
            implemented (a migration then reads only the candidates of its rules).
        atomic_moves: ``put_absent_many`` and ``delete_if_unchanged`` are atomic per key
            against other writers (else: check then act, a small race).
        metadata_reads: ``meta_many`` reads the metadata and the stored size of entries
            without transferring their values (else it falls back to ``get_many``), so a
            migration decides on metadata and loads only the values that move.
        native_async: The store has an async driver: the ``a``-prefixed twins of the
            batch methods (:meth:`Backend.aget_many`...) run on the event loop, with no
            thread per call (else they run the blocking method in a worker thread, and
            :class:`~prefect_memory.Memory` hops to a thread once per call instead).
        column_scans: :meth:`Backend.scan_columns` reads a namespace in batches straight
            into columns, metadata and small values in one query per batch (else it is
            built from ``scan`` and ``meta_many``): a migration then decides on columns
            and makes records only for the entries that move.
        local: The data is read by this process itself (in memory, or from a local file or
            folder), not fetched from a server: a read is CPU work here. A migration then
            reads its next batch only after moving the current one (a reader thread would
            compete with the moves for the cores, and on SQLite for the file: 100k entries
            SQLite -> Parquet took 1.31 s read ahead, 1.13 s not); from a server it reads
            ahead (Redis -> SQLite: 4.5 s read ahead, 5.2 s not).
        prefix_scans: :meth:`Backend.scan` with a glob whose literal part starts it (``P*``)
            reads only the keys starting with ``P`` (an ordered index: one range read),
            not the whole namespace. A migration then asks for the tombstones of a
            batch's key range with one such scan instead of a lookup per key.
    """

    native_ttl: bool = False
    batch: bool = True
    server_scripts: bool = False
    persistent: bool = True
    shared: bool = True
    pushdown: bool = False
    atomic_moves: bool = False
    metadata_reads: bool = False
    native_async: bool = False
    column_scans: bool = False
    local: bool = False
    prefix_scans: bool = False


@dataclass(frozen=True)
class StoreUsage:
    """How full a store is, as the store itself reports it (:meth:`Backend.usage`).

    Attributes:
        used_bytes: Bytes the store uses (Redis ``used_memory``, the size of the MongoDB
            collection's documents, a SQLite file with its write-ahead log).
        limit_bytes: Bytes it may use (Redis ``maxmemory``; ``None``: no limit known).
        entries: Entries it holds (stores bounded by a count of entries).
        max_entries: The bound on ``entries``.
        details: Anything else the store reports (eviction policy, document count...).

    Example:
        >>> StoreUsage(used_bytes=512, limit_bytes=1024).fields()
        {'memory_used': 512, 'memory_limit': 1024}
    """

    used_bytes: int | None = None
    limit_bytes: int | None = None
    entries: int | None = None
    max_entries: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The values known, named as a health report names them (``None`` left out)."""
        named = {
            "memory_used": self.used_bytes,
            "memory_limit": self.limit_bytes,
            "entries": self.entries,
            "max_entries": self.max_entries,
            "details": dict(self.details) or None,
        }
        return {name: value for name, value in named.items() if value is not None}


@dataclass(slots=True)
class Record:
    """One stored entry: the encoded value and its metadata (times are epoch seconds).

    A record read by :meth:`Backend.meta_many` has no value (``b""``) and carries the
    size of the stored value in ``stored_size``; every other record leaves it ``None``
    and its size is ``len(value)``. Such a record is for decisions only: it is never
    written back.

    Example:
        >>> full = Record(b"abc", 1.0, 1.0, 1.0)
        >>> meta = full.without_value()
        >>> (full.size, full.stored_size), (meta.value, meta.size, meta.token == full.token)
        ((3, None), (b'', 3, True))
    """

    value: bytes
    created_at: float
    updated_at: float
    last_access: float
    access_count: int = 0
    expires_at: float | None = None
    ttl: float | None = None
    sliding: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    version: int = 1
    tier: str | None = None  # set by tiered memory: the tier the entry was found in
    stored_size: int | None = None  # set by meta_many: the size of the value not read

    def expired(self, now: float) -> bool:
        """Tell whether the entry is expired at ``now``."""
        return self.expires_at is not None and self.expires_at <= now

    def touched(self, now: float) -> Record:
        """The record after one access at ``now`` (count, last access, sliding expiry)."""
        expires_at = self.expires_at
        if self.sliding and self.ttl is not None:
            expires_at = now + self.ttl
        return replace(
            self, access_count=self.access_count + 1, last_access=now, expires_at=expires_at
        )

    def merged_over(self, old: Record | None, now: float) -> Record:
        """This new record as written over ``old`` (keeps creation and access history)."""
        if old is None or old.expired(now):
            return self
        return replace(
            self,
            created_at=old.created_at,
            access_count=old.access_count,
            last_access=max(old.last_access, self.last_access),
            version=old.version + 1,
        )

    @property
    def token(self) -> tuple[int, float]:
        """What identifies this exact write: ``(version, updated_at)``."""
        return (self.version, self.updated_at)

    @property
    def size(self) -> int:
        """Size of the stored value in bytes (``stored_size`` for a metadata-only record)."""
        return len(self.value) if self.stored_size is None else self.stored_size

    def without_value(self) -> Record:
        """This record's metadata and stored size, without the value (nothing is copied)."""
        return replace(self, value=b"", stored_size=self.size)


# The names of a record's fields in stored documents, hashes and headers (MongoDB, JSON
# file, fsspec objects, Redis hashes): one letter each, to keep every stored entry small.
# The letters are the on-disk format: they never change (a store written before reads the
# same after); Python code names them through these constants, never through bare letters
# (the Lua scripts of plugins/redis/scripts.py spell the Redis hash fields in their text).
F_KEY = "k"  #: the key (documents that do not keep it in their id)
F_VALUE = "v"  #: the encoded value
F_CREATED = "c"  #: ``created_at``
F_UPDATED = "u"  #: ``updated_at``
F_ACCESSED = "a"  #: ``last_access``
F_ACCESS_COUNT = "n"  #: ``access_count``
F_EXPIRES = "x"  #: ``expires_at`` (``None``: never)
F_TTL = "l"  #: ``ttl`` (``None``: no TTL)
F_SLIDING = "s"  #: ``sliding`` (Redis hashes: the TTL of a sliding entry)
F_TAGS = "g"  #: ``tags`` (a list)
F_VERSION = "r"  #: ``version``
F_META = "m"  #: Redis hashes: the metadata fixed by a write, in one msgpack field

#: Each :class:`Record` attribute and the letter that stores it (a table to read; the
#: stores use the constants above).
FIELD_OF: Mapping[str, str] = {
    "created_at": F_CREATED,
    "updated_at": F_UPDATED,
    "last_access": F_ACCESSED,
    "access_count": F_ACCESS_COUNT,
    "expires_at": F_EXPIRES,
    "ttl": F_TTL,
    "sliding": F_SLIDING,
    "tags": F_TAGS,
    "version": F_VERSION,
}


def record_fields(record: Record) -> dict[str, Any]:
    """The metadata of a record as a short-keyed dict (for stores that keep documents).

    Example:
        >>> record_fields(Record(b"v", 1.0, 2.0, 3.0, tags=("t",)))
        {'c': 1.0, 'u': 2.0, 'a': 3.0, 'n': 0, 'x': None, 'l': None, 's': False, 'g': ['t'], 'r': 1}
    """
    return {
        F_CREATED: record.created_at,
        F_UPDATED: record.updated_at,
        F_ACCESSED: record.last_access,
        F_ACCESS_COUNT: record.access_count,
        F_EXPIRES: record.expires_at,
        F_TTL: record.ttl,
        F_SLIDING: record.sliding,
        F_TAGS: list(record.tags),
        F_VERSION: record.version,
    }


def record_from_fields(fields: Mapping[str, Any], value: bytes) -> Record:
    """Inverse of :func:`record_fields`, with the value."""
    return Record(
        value,
        fields[F_CREATED],
        fields[F_UPDATED],
        fields[F_ACCESSED],
        fields[F_ACCESS_COUNT],
        fields[F_EXPIRES],
        fields[F_TTL],
        fields[F_SLIDING],
        tuple(fields[F_TAGS]),
        fields[F_VERSION],
    )


class Backend(ABC):
    """Base class of every storage backend.

    Subclasses implement the abstract batch methods and set ``scheme`` and
    ``capabilities``. ``from_url`` builds an instance from a URL and keyword options.

    The optional abilities are declared, never detected: callers read ``capabilities``
    and call the hooks below (:meth:`usage`, :meth:`children`, :meth:`scan_query`),
    which every backend has; they do not test for methods, class names or private
    attributes.

    Attributes:
        url: Where the store lives, as reports and messages show it. Stores put no
            password in it (Redis and MongoDB mask theirs with ``***``); a URL given by
            the user as is (fsspec) is shown through :attr:`shown_url`. The default is
            ``""`` (a backend that has no URL). It also names a hybrid memory's journal
            file, so a store keeps the value it always had.
    """

    scheme: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    url: str = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        """Build a backend from its URL and options."""

    @abstractmethod
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        """Return the live records of ``keys`` (missing and expired ones left out)."""

    @abstractmethod
    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        """Upsert ``records`` (see the module docstring for the metadata rules)."""

    @abstractmethod
    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        """Delete ``keys``; return how many live entries were removed."""

    @abstractmethod
    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        """Yield the live keys of ``ns`` matching the glob ``pattern`` (``None``: all)."""

    @abstractmethod
    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        """Return the live keys of ``ns`` carrying any of ``tags``."""

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """Return the live records of ``keys`` without their values (no access counted).

        Each record has ``value=b""``, its stored size in ``stored_size`` and every other
        field as :meth:`get_many` returns it (what migration rules read: access count,
        times, expiry, tags, size). Stores that declare ``capabilities.metadata_reads``
        read only the metadata; this default reads the whole records with
        :meth:`get_many` and drops the values (callers that need the values anyway read
        them once with :meth:`get_many` instead).
        """
        found = self.get_many(ns, keys, now=now, touch=False)
        return {key: record.without_value() for key, record in found.items()}

    def scan_columns(
        self,
        ns: str,
        *,
        now: float,
        batch_size: int = 1000,
        value_bytes: int = 0,
        query: Mapping[str, Any] | None = None,
    ) -> Iterator[EntryColumns]:
        """Yield the live entries of ``ns`` as :class:`EntryColumns`, ``batch_size`` a batch.

        Each batch holds every field a migration rule reads (sizes included) and the
        values of at most ``value_bytes`` bytes (``0``: none; a larger value is left for
        :meth:`get_many`), so one batch holds at most ``batch_size * value_bytes`` bytes
        of values. ``query`` (a :meth:`scan_query` filter, on stores that declare
        ``capabilities.pushdown``) narrows the entries to its candidates.

        Stores that declare ``capabilities.column_scans`` read a batch in one query; this
        default reads the keys with :meth:`scan` (or :meth:`scan_query`) and then the
        batch with :meth:`meta_many`, or with :meth:`get_many` where the store cannot
        read metadata alone and values are wanted (it reads them anyway).

        Example:
            >>> from prefect_memory.plugins.inprocess import InProcessBackend
            >>> store = InProcessBackend()  # reads metadata alone: no value in a batch
            >>> store.put_many("ns", {"a": Record(b"va", 1.0, 1.0, 1.0),
            ...                       "b": Record(b"v" * 9, 1.0, 1.0, 1.0)}, now=1.0)
            >>> batch = next(store.scan_columns("ns", now=2.0, value_bytes=4))
            >>> batch.keys, sum(batch.sizes), batch.values.count(None)
            (['a', 'b'], 11, 2)
        """
        size = max(1, int(batch_size))
        if query is None:
            keys = self.scan(ns, None, now=now)
        else:
            keys = self.scan_query(ns, query, now=now)
        values = value_bytes > 0 and not self.capabilities.metadata_reads
        read = self.get_many if values else self.meta_many
        batch: list[str] = []
        for key in itertools.chain(keys, [None]):
            if key is not None:
                batch.append(key)
                if len(batch) < size:
                    continue
            if batch:
                found = read(ns, batch, now=now)
                yield EntryColumns.from_records(found, value_bytes if values else 0)
                batch = []

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        """Return which of ``keys`` have a live entry (without counting an access)."""
        return set(self.get_many(ns, keys, now=now, touch=False))

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        """Write only the records whose key has no live entry; return the keys written.

        Tiered memory promotes and migrates with it, so a move never overwrites a newer
        write. This default checks then writes (a small race); backends override it with an
        atomic version where the store offers one.
        """
        present = self.exists_many(ns, list(records), now=now)
        absent = {k: r for k, r in records.items() if k not in present}
        if absent:
            self.put_many(ns, absent, now=now)
        return set(absent)

    def put_absent_columns(self, ns: str, columns: EntryColumns, *, now: float) -> set[str]:
        """:meth:`put_absent_many` of a batch given as columns (every value read).

        A migration moves a batch read with :meth:`scan_columns` this way. Stores that
        build their writes from columns (the Parquet archive: an Arrow table) override
        it and make no :class:`Record`; this default makes the records and calls
        :meth:`put_absent_many`.

        Example:
            >>> from prefect_memory.plugins.inprocess import InProcessBackend
            >>> store = InProcessBackend()
            >>> cols = EntryColumns.from_records({"a": Record(b"v", 1.0, 1.0, 1.0)}, 8)
            >>> store.put_absent_columns("ns", cols, now=1.0), store.put_absent_columns(
            ...     "ns", cols, now=1.0)
            ({'a'}, set())
        """
        if None in columns.values:
            key = columns.keys[columns.values.index(None)]
            raise ValueError(f"put_absent_columns: the value of {key!r} was not read")
        return self.put_absent_many(ns, columns.records(range(len(columns))), now=now)

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        """Delete keys whose entry still has the given ``(version, updated_at)``.

        Returns the keys deleted; an entry rewritten since it was read is left alone. The
        default compares then deletes (a small race); backends override it atomically where
        they can.
        """
        current = self.get_many(ns, list(expected), now=now, touch=False)
        same = [
            k
            for k, token in expected.items()
            if k in current and (current[k].version, current[k].updated_at) == tuple(token)
        ]
        if same:
            self.delete_many(ns, same, now=now)
        return set(same)

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        """Delete every entry of ``ns``; return how many live entries were removed."""
        removed = 0
        batch: list[str] = []
        for key in self.scan(ns, None, now=now):
            batch.append(key)
            if len(batch) >= batch_size:
                removed += self.delete_many(ns, batch, now=now)
                batch = []
        if batch:
            removed += self.delete_many(ns, batch, now=now)
        return removed

    def purge_expired(self, ns: str, *, now: float) -> int:
        """Remove expired entries a store does not expire by itself; return how many."""
        return 0

    # -- async twins: native where ``capabilities.native_async``, else a worker thread --------
    async def aget_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        """Async twin of :meth:`get_many`."""
        return await asyncio.to_thread(self.get_many, ns, keys, now=now, touch=touch)

    async def aput_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        """Async twin of :meth:`put_many`."""
        await asyncio.to_thread(self.put_many, ns, records, now=now)

    async def adelete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        """Async twin of :meth:`delete_many`."""
        return await asyncio.to_thread(self.delete_many, ns, keys, now=now)

    async def aexists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        """Async twin of :meth:`exists_many`."""
        return await asyncio.to_thread(self.exists_many, ns, keys, now=now)

    async def aput_absent_many(
        self, ns: str, records: Mapping[str, Record], *, now: float
    ) -> set[str]:
        """Async twin of :meth:`put_absent_many`."""
        return await asyncio.to_thread(self.put_absent_many, ns, records, now=now)

    async def atagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        """Async twin of :meth:`tagged`."""
        return await asyncio.to_thread(self.tagged, ns, tags, now=now)

    @property
    def retried_writes(self) -> int:
        """Write attempts the driver itself failed and tried again (a running count).

        Such an attempt may still be applied by the server after the retry was answered,
        and after newer writes: a hybrid memory rechecks the keys of a write during which
        this count grew. ``0`` for drivers that never retry a write on their own.
        """
        return 0

    @property
    def shown_url(self) -> str:
        """:attr:`url` with any password and secret query option masked (``***``).

        Example:
            >>> from prefect_memory.plugins.fs import FsspecBackend
            >>> FsspecBackend("ftp://bob:hunter2@files.local/memory").shown_url
            'ftp://bob:***@files.local/memory'
        """
        return redact_url(self.url)

    def usage(self) -> StoreUsage | None:
        """How full the store is, as it reports it (``None``: it reports nothing).

        One cheap call to the store (Redis ``INFO memory``, MongoDB ``collStats``, the
        size of a SQLite file); a health check calls it after a successful ping and
        reports what it raises as "usage unavailable".

        Example:
            >>> from prefect_memory.plugins.inprocess import InProcessBackend
            >>> InProcessBackend(max_entries=10).usage().fields()
            {'entries': 0, 'max_entries': 10, 'details': {'evictions': 0}}
        """
        return None

    def children(self) -> tuple[tuple[str, Backend], ...]:
        """The backends this one is composed of, as ``(role, backend)`` pairs (``()``: none).

        A role names the child's place (``primary``, ``tier:hot``...); an empty role
        marks a wrapper whose child is the same store seen through it (retries and a
        breaker, a shared cache). :func:`walk` visits a whole composition with it.
        """
        return ()

    @property
    def stale_reads(self) -> bool:
        """Reads of this store may miss writes it acknowledged (Redis replica reads).

        Tiers and hybrid memories decide moves and replays on what they read, so they
        refuse such a store (:func:`refuse_stale_reads`). A wrapper says what its child says.

        Example:
            >>> from prefect_memory.plugins.inprocess import InProcessBackend
            >>> InProcessBackend().stale_reads
            False
        """
        return any(child.stale_reads for role, child in self.children() if not role)

    def child_facts(self, role: str, above: Mapping[str, Any]) -> dict[str, Any]:
        """What a health report says of the child at ``role`` because of this backend.

        ``above`` is what the parts above this one already say; the default passes it on
        unchanged. A wrapper adds its breaker state, tiers add a tier's budget, a hybrid
        starts afresh (each of its stores is checked as it is).

        Example:
            >>> from prefect_memory.plugins.inprocess import InProcessBackend
            >>> InProcessBackend().child_facts("", {"breaker": "closed"})
            {'breaker': 'closed'}
        """
        return dict(above)

    def report_rows(self, path: str) -> tuple[dict[str, Any], ...]:
        """Rows of its own for a health report, as fields of a ``BackendHealth``.

        ``()`` by default; a hybrid memory reports its journal (backlog, degraded writes).

        Example:
            >>> from prefect_memory.plugins.inprocess import InProcessBackend
            >>> InProcessBackend().report_rows("store")
            ()
        """
        return ()

    def scan_query(self, ns: str, query: Mapping[str, Any], *, now: float) -> Iterator[str]:
        """Yield the live keys of ``ns`` whose entries match ``query`` (query pushdown).

        ``query`` is a filter on the stored metadata in MongoDB's query language (what
        :func:`prefect_memory.tiers.pushdown.mongo_filter` writes); it only narrows the
        candidates, which callers check again. Only stores that declare
        ``capabilities.pushdown`` implement it: read the declaration first.

        Raises:
            NotImplementedError: The store does not declare ``capabilities.pushdown``.

        Example:
            >>> from prefect_memory.plugins.inprocess import InProcessBackend
            >>> InProcessBackend().scan_query("ns", {"n": {"$lt": 5}}, now=0.0)
            Traceback (most recent call last):
            ...
            NotImplementedError: InProcessBackend has no query pushdown ...
        """
        if not self.capabilities.pushdown:
            raise NotImplementedError(
                f"{type(self).__name__} has no query pushdown "
                "(capabilities.pushdown is False): use scan()"
            )
        raise NotImplementedError(
            f"{type(self).__name__} declares capabilities.pushdown but does not "
            "implement scan_query"
        )

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~prefect_memory.errors.BackendUnavailable` if the store is unreachable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections (the backend can still be used afterwards)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        for name in getattr(self, "_transient", ()):
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


@dataclass(frozen=True)
class Part:
    """One backend of a composition, as :func:`walk` finds it.

    Attributes:
        path: Where it sits: the roles from the top joined by ``/`` (``tier:hot/primary``;
            ``""`` for the top, and for what a wrapper wraps at the top).
        backend: The backend.
        role: Its role in its parent (``""``: the top, or the store inside a wrapper).
        parent: The part above it (``None`` for the top).
        depth: How many parts are above it.
    """

    path: str
    backend: Backend
    role: str = ""
    parent: Part | None = None
    depth: int = 0


def walk(backend: Backend, *, depth: int | None = None) -> Iterator[Part]:
    """Every backend of a composition, each before its children (:meth:`Backend.children`).

    Args:
        backend: The top of the composition.
        depth: Go at most this many levels down (``None``: down to the stores).

    Example:
        >>> from prefect_memory.plugins.inprocess import InProcessBackend
        >>> from prefect_memory.tiers import Tier, TieredBackend
        >>> tiers = TieredBackend([Tier("hot", InProcessBackend()),
        ...                        Tier("cold", InProcessBackend())])
        >>> [(part.path, type(part.backend).__name__) for part in walk(tiers)]
        [('', 'TieredBackend'), ('tier:hot', 'InProcessBackend'), ('tier:cold', 'InProcessBackend')]
    """
    stack = [Part("", backend)]
    while stack:
        part = stack.pop()
        yield part
        if depth is not None and part.depth >= depth:
            continue
        below = [
            Part("/".join(filter(None, (part.path, role))), child, role, part, part.depth + 1)
            for role, child in part.backend.children()
        ]
        stack.extend(reversed(below))


@dataclass
class EntryColumns:
    """A batch of entries as columns: row ``i`` of every list is the entry ``keys[i]``.

    What :meth:`Backend.scan_columns` yields: the metadata of every entry, its stored
    size, and its value where the batch carries it (``values[i] is None``: not read).
    No :class:`Record` exists until :meth:`record` makes one, so a migration evaluates
    its rules on the columns and makes records only for the entries that move.

    Example:
        >>> cols = EntryColumns.from_records({"a": Record(b"xy", 1.0, 2.0, 3.0)}, 8)
        >>> cols.keys, cols.updated_at, cols.sizes, cols.record(0) == Record(b"xy", 1.0, 2.0, 3.0)
        (['a'], [2.0], [2], True)
    """

    keys: list[str]
    created_at: list[float]
    updated_at: list[float]
    last_access: list[float]
    access_count: list[int]
    expires_at: list[float | None]
    ttl: list[float | None]
    sliding: list[bool]
    tags: list[tuple[str, ...]]
    version: list[int]
    sizes: list[int]
    values: list[bytes | None]

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "keys", "created_at", "updated_at", "last_access", "access_count", "expires_at",
        "ttl", "sliding", "tags", "version", "sizes", "values",
    )  # fmt: skip

    def __len__(self) -> int:
        return len(self.keys)

    def record(self, row: int) -> Record:
        """The entry of ``row`` as a record (without value, with its size, if not read)."""
        value = self.values[row]
        return Record(
            b"" if value is None else value,
            self.created_at[row],
            self.updated_at[row],
            self.last_access[row],
            self.access_count[row],
            self.expires_at[row],
            self.ttl[row],
            self.sliding[row],
            self.tags[row],
            self.version[row],
            stored_size=self.sizes[row] if value is None else None,
        )

    def records(self, rows: Sequence[int]) -> dict[str, Record]:
        """The entries at ``rows`` as records by key (as :meth:`record` makes them)."""
        columns = [[column[i] for i in rows] for column in map(self.__getattribute__, self._FIELDS)]
        return {
            k: Record(b"" if v is None else v, c, u, a, n, x, t, s, g, r, None,
                      size if v is None else None)
            for k, c, u, a, n, x, t, s, g, r, size, v in zip(*columns, strict=True)
        }  # fmt: skip

    def between(self, start: int, stop: int) -> EntryColumns:
        """The batch of rows ``start`` to ``stop`` (excluded), as list slices."""
        return EntryColumns(
            *(column[start:stop] for column in map(self.__getattribute__, self._FIELDS))
        )

    def take(self, rows: Sequence[int]) -> EntryColumns:
        """The batch of the entries at ``rows`` only, in that order."""
        return EntryColumns(
            *([column[i] for i in rows] for column in map(self.__getattribute__, self._FIELDS))
        )

    @classmethod
    def from_records(cls, records: Mapping[str, Record], value_bytes: int = 0) -> EntryColumns:
        """Columns of ``records``; their values of at most ``value_bytes`` bytes are kept."""
        rows = list(records.values())
        sizes = [r.size for r in rows]
        keep = [
            r.stored_size is None and n <= value_bytes for r, n in zip(rows, sizes, strict=True)
        ]
        return cls(
            list(records),
            [r.created_at for r in rows],
            [r.updated_at for r in rows],
            [r.last_access for r in rows],
            [r.access_count for r in rows],
            [r.expires_at for r in rows],
            [r.ttl for r in rows],
            [r.sliding for r in rows],
            [r.tags for r in rows],
            [r.version for r in rows],
            sizes,
            [r.value if k else None for r, k in zip(rows, keep, strict=True)],
        )


def refuse_stale_reads(role: str, backend: Backend) -> None:
    """Raise :class:`ConfigError` when ``backend`` may read stale data (see
    :attr:`Backend.stale_reads`): a tier or hybrid store must read what it was told.

    Example:
        >>> from prefect_memory.plugins.inprocess import InProcessBackend
        >>> refuse_stale_reads("tier 'hot'", InProcessBackend())
    """
    if backend.stale_reads:
        raise ConfigError(
            f"{role} reads from replicas (read_from_replicas=true): a tier or hybrid store "
            "decides moves and replays on what it reads, and a replica may be behind; "
            "remove read_from_replicas from that store's URL"
        )

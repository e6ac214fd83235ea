"""Parquet layout of the archive: schema, one file per batch, ranged reads of column chunks.

Every data file holds the rows of one write (a batch, a batch of tombstones, or the
output of a compaction), sorted by key, with row groups of about ``row_group_bytes``.

On-disk schema, version 2 (:data:`SCHEMA_VERSION`, also in each file's key-value
metadata as ``prefect_memory.archive_schema``). Times are epoch seconds as ``float64``,
exactly the floats of :class:`~prefect_memory.plugins.base.Record`, so a
``(version, updated_at)`` token read back compares equal:

==============  ==================  =====================================================
column          type                meaning
==============  ==================  =====================================================
key             string, not null    the entry's key
namespace       string              the memory's namespace (the folder is its token)
created_at      float64             first write of the key
updated_at      float64             this version's write
last_access     float64             last read (access statistics folded in by compaction)
access_count    int64               reads (same)
expires_at      float64, null       expiry time; null: never
ttl             float64, null       time to live in seconds; null: none
sliding         bool                an access pushes ``expires_at`` to now + ``ttl``
tags            list<string>        tags of the entry
version         int64               write counter of the key
archived_at     float64             when the row was written here (its ``date=``)
seq             int64               write order: the latest row of a key wins
deleted         bool                a tombstone (the key was deleted)
value           large_binary        the exact stored bytes (what reads use)
value_json      large_string, null  the value as JSON text when exact (:mod:`.value_json`;
                                    written when the archive's ``value_json`` is on)
==============  ==================  =====================================================

The partition folder adds ``date`` (``date=YYYY-MM-DD``, the UTC day of ``archived_at``).
Version 1 (files written before ``value_json`` existed) is the same without that last
column: every reader here accepts both (a missing ``value_json`` reads as null, and a
compaction rewriting such a file fills it in when the archive's ``value_json`` is on).

``seq`` orders writes (the latest row of a key wins, compaction keeps it; the rows of a
write take the slot of its claim in the commit log, see :mod:`.log`, whatever
they hold); ``deleted`` marks a tombstone. ``value`` and ``value_json`` are the last
columns, so every other column of a row group is one contiguous byte range: the key
index reads that range, a lookup reads the value chunk of one row group, and neither
reads anything else (:func:`fetch_tables`).

Example:
    >>> from prefect_memory.plugins.base import Record
    >>> records = [Record(b"\\x01\\x02", 1.0, 1.0, 1.0), Record(b"1", 1.0, 1.0, 1.0)]
    >>> table = build_table("ns", ["b", "a"], records, seq=7, archived_at=0.0, value_json=True)
    >>> table.column("key").to_pylist(), table.column("value_json").to_pylist(), day_of(0.0)
    (['a', 'b'], [None, '2'], '1970-01-01')
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import io
import itertools
import math
import os
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..base import EntryColumns, Record
from .value_json import json_column

#: Version of the data files' schema (see the module docstring).
SCHEMA_VERSION = 2
#: Key of the schema version in a data file's key-value metadata.
SCHEMA_KEY = "prefect_memory.archive_schema"
SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("namespace", pa.string()),
        pa.field("created_at", pa.float64()),
        pa.field("updated_at", pa.float64()),
        pa.field("last_access", pa.float64()),
        pa.field("access_count", pa.int64()),
        pa.field("expires_at", pa.float64()),
        pa.field("ttl", pa.float64()),
        pa.field("sliding", pa.bool_()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("version", pa.int64()),
        pa.field("archived_at", pa.float64()),
        pa.field("seq", pa.int64()),
        pa.field("deleted", pa.bool_()),
        pa.field("value", pa.large_binary()),
        pa.field("value_json", pa.large_string()),
    ],
    metadata={SCHEMA_KEY: str(SCHEMA_VERSION).encode()},
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
#: Columns of every schema version (version 1 files have exactly these).
COLUMNS_V1: tuple[str, ...] = COLUMNS[:-1]
#: Everything but the values: what the key index keeps in memory.
META_COLUMNS: tuple[str, ...] = tuple(
    c for c in COLUMNS if c not in ("value", "value_json", "namespace")
)
TIME_COLUMNS = ("created_at", "updated_at", "last_access", "expires_at", "archived_at")
_STATS_COLUMNS = ["key", "seq", "archived_at", "expires_at", "updated_at", "version"]
_FOOTER_READ = 64 * 1024
#: Chunks closer than this are fetched as one range (pyarrow itself coalesces reads
#: across holes of up to 8 KiB, so the parts it asks for must cover such holes).
_MERGE_GAP = 64 * 1024

T = TypeVar("T")
Fetch = Callable[[list[str], list[int], list[int]], list[bytes]]


def day_of(ts: float) -> str:
    """The UTC date (``YYYY-MM-DD``) of an epoch time: the partition a write lands in."""
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).date().isoformat()


#: Record attributes a data file stores, in :class:`EntryColumns`' names.
_ROW_FIELDS = ("created_at", "updated_at", "last_access", "access_count", "expires_at", "ttl",
               "sliding", "tags", "version")  # fmt: skip
Rows = Sequence[Record] | EntryColumns


def _lists(rows: Rows) -> dict[str, list[Any]]:
    """The stored fields of ``rows`` (records, or a batch as columns) as lists by name."""
    if isinstance(rows, EntryColumns):
        lists = {name: getattr(rows, name) for name in _ROW_FIELDS}
        lists["value"] = rows.values
        return lists
    lists = {name: list(map(attrgetter(name), rows)) for name in _ROW_FIELDS}
    lists["value"] = list(map(attrgetter("value"), rows))
    return lists


def _numbers(values: list[Any], dtype: Any) -> pa.Array:
    return pa.array(np.fromiter(values, dtype, len(values)))


def _optional(values: list[float | None]) -> pa.Array:
    nones = values.count(None)
    if nones == len(values):
        return pa.nulls(len(values), pa.float64())
    if nones:
        values = [math.nan if x is None else x for x in values]
    return pa.array(np.array(values, np.float64), from_pandas=True)


def _tags(tags: list[tuple[str, ...]]) -> pa.Array:
    offsets = np.zeros(len(tags) + 1, np.int32)
    if tags.count(()) < len(tags):
        np.cumsum(np.fromiter(map(len, tags), np.int32, len(tags)), out=offsets[1:])
    flat = pa.array(list(itertools.chain.from_iterable(tags)), pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def build_table(
    ns: str,
    keys: Sequence[str],
    records: Rows,
    *,
    seq: int,
    archived_at: float,
    deleted: bool = False,
    sort: bool = True,
    value_json: bool = False,
) -> pa.Table:
    """The rows of one write, sorted by key (``records[i]`` belongs to ``keys[i]``);
    ``value_json`` fills that column (else it is null). ``records`` may be a batch as
    :class:`EntryColumns` (a migration's: no record is made), every value read."""
    return _table(ns, keys, _lists(records), seq=seq, archived_at=archived_at,
                  deleted=deleted, sort=sort, value_json=value_json)  # fmt: skip


def _table(
    ns: str,
    keys: Sequence[str],
    lists: dict[str, list[Any]],
    *,
    seq: int,
    archived_at: float,
    deleted: bool,
    sort: bool,
    value_json: bool,
) -> pa.Table:
    n = len(keys)
    values = lists["value"]
    data = {
        "key": pa.array(keys, pa.string()),
        "namespace": pa.repeat(pa.scalar(ns, pa.string()), n),
        "created_at": _numbers(lists["created_at"], np.float64),
        "updated_at": _numbers(lists["updated_at"], np.float64),
        "last_access": _numbers(lists["last_access"], np.float64),
        "access_count": _numbers(lists["access_count"], np.int64),
        "expires_at": _optional(lists["expires_at"]),
        "ttl": _optional(lists["ttl"]),
        "sliding": _numbers(lists["sliding"], np.bool_),
        "tags": _tags(lists["tags"]),
        "version": _numbers(lists["version"], np.int64),
        "archived_at": pa.array(np.full(n, archived_at, dtype=np.float64)),
        "seq": pa.array(np.full(n, seq, dtype=np.int64)),
        "deleted": pa.array(np.full(n, deleted, dtype=np.bool_)),
        "value": pa.array(values, pa.large_binary()),
        "value_json": json_column(values, deleted or not value_json),
    }
    table = pa.table(data, schema=SCHEMA)
    if sort and n > 1:
        order = pc.sort_indices(data["key"]).to_numpy()
        if not (order[1:] > order[:-1]).all():  # not in key order yet
            table = table.take(order)
    return table


class _Background:
    """The archive's background threads (encoding, listing, uploads), started once per
    process and again in a forked child (a child has none of its parent's threads).

    A thread started per task costs a hand-over of the GIL that waits for the new
    thread to run (milliseconds while other threads hold it, as a migration's reader
    does); pooled threads take their task from a queue. No task waits for another one.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._pid = 0
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a pooled thread."""
        pid = os.getpid()
        if self._pid != pid or self._pool is None:
            with self._lock:
                if self._pid != pid or self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, "pm-archive-io")
                    self._pid = pid
        return self._pool.submit(fn, *args)


#: Background work of every archive of this process.
BACKGROUND = _Background(8)


def _writer_options(compression: str) -> dict[str, Any]:
    return {
        "compression": compression,
        "use_dictionary": ["namespace", "tags.list.element"],
        "write_statistics": _STATS_COLUMNS,
        "store_schema": True,
    }


def write_rows(
    ns: str,
    keys: Sequence[str],
    records: Rows,
    *,
    seq: int,
    archived_at: float,
    deleted: bool = False,
    row_group_bytes: int,
    compression: str,
    value_json: bool = False,
) -> tuple[bytes, pa.Table]:
    """One Parquet file of rows whose ``keys`` are sorted; return it and its non-value columns.

    Pipelined: the rows are turned into Arrow one row group at a time while a second
    thread encodes the previous row group (pyarrow releases the GIL while encoding).
    """
    n = len(keys)
    lists = _lists(records)
    sample = lists["value"][:256]
    row_bytes = 64 + sum(len(v) + 2 * len(k) for v, k in zip(sample, keys, strict=False))
    group = max(1, min(n, row_group_bytes * max(1, len(sample)) // row_bytes))
    sink = pa.BufferOutputStream()
    writer = pq.ParquetWriter(sink, SCHEMA, **_writer_options(compression))
    metas: list[pa.Table] = []
    pending: Future[None] | None = None
    try:
        step = group * max(1, -(-n // (8 * group)))  # about 8 chunks, whole row groups each
        for start in range(0, max(n, 1), step):
            rows = slice(start, start + step)
            part = {name: column[rows] for name, column in lists.items()}
            chunk = _table(ns, keys[rows], part, seq=seq, archived_at=archived_at,
                           deleted=deleted, sort=False, value_json=value_json)  # fmt: skip
            if pending is not None:
                pending.result()
            pending = BACKGROUND.submit(partial(writer.write_table, row_group_size=group), chunk)
            metas.append(chunk.select(list(META_COLUMNS)))
        done, pending = pending, None
        if done is not None:
            done.result()
    finally:
        if pending is not None:  # failed above: the encoding in flight ends before the error
            with contextlib.suppress(BaseException):
                pending.result()
    writer.close()
    return sink.getvalue().to_pybytes(), pa.concat_tables(metas)


def conform(table: pa.Table, *, value_json: bool = False) -> pa.Table:
    """Rows read from a data file of any schema version, as :data:`SCHEMA` (a version 1
    file's ``value_json`` is computed from ``value`` with ``value_json``, else null).

    Example:
        >>> old = build_table("ns", ["k"], [Record(b"\\x01\\x05", 0.0, 0.0, 0.0)], seq=1,
        ...                   archived_at=0.0).drop_columns(["value_json"])
        >>> conform(old, value_json=True).column("value_json").to_pylist()
        ['5']
    """
    if "value_json" not in table.schema.names:
        values = table.column("value").to_pylist()  # a tombstone's b"" has no JSON form
        table = table.append_column("value_json", json_column(values, not value_json))
    columns = [table.column(c) for c in COLUMNS]
    return pa.Table.from_arrays(columns, names=list(COLUMNS)).cast(SCHEMA)


def encode_table(table: pa.Table, *, row_group_bytes: int, compression: str) -> bytes:
    """Serialize ``table`` as one Parquet file with row groups of about ``row_group_bytes``."""
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    group_rows = max(1, min(table.num_rows, row_group_bytes // row_bytes))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=group_rows, **_writer_options(compression))
    return sink.getvalue().to_pybytes()


class _Sparse(io.RawIOBase):
    """A read-only file of known size served from prefetched byte ranges."""

    def __init__(self, size: int, parts: dict[int, bytes]) -> None:
        super().__init__()
        self.size, self.pos = size, 0
        self.parts = sorted(parts.items())

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self.pos)
        for start, data in self.parts:
            if start <= self.pos and self.pos + want <= start + len(data):
                chunk = data[self.pos - start : self.pos - start + want]
                buffer[: len(chunk)] = chunk
                self.pos += len(chunk)
                return len(chunk)
        raise OSError(f"byte range {self.pos}+{want} was not prefetched")


def read_footers(fetch: Fetch, files: dict[str, int]) -> dict[str, pq.FileMetaData]:
    """Footers of ``{path: size}`` with one batched ranged read (two for huge footers)."""
    paths = list(files)
    starts = [max(0, files[p] - _FOOTER_READ) for p in paths]
    tails = dict(zip(paths, fetch(paths, starts, [files[p] for p in paths]), strict=True))
    need = {p: int.from_bytes(tails[p][-8:-4], "little") + 8 for p in paths}
    short = [p for p in paths if need[p] > len(tails[p])]
    if short:  # footers larger than the tail read: read exactly each footer
        starts = [max(0, files[p] - need[p]) for p in short]
        whole = fetch(short, starts, [files[p] for p in short])
        tails.update(zip(short, whole, strict=True))
    out: dict[str, pq.FileMetaData] = {}
    for path in paths:
        tail = tails[path]
        out[path] = pq.read_metadata(_Sparse(files[path], {files[path] - len(tail): tail}))
    return out


def chunk_range(meta: pq.FileMetaData, rg: int, column: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of one column chunk of a row group."""
    chunk = meta.row_group(rg).column(column)
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
        start = min(start, chunk.dictionary_page_offset)
    return start, start + chunk.total_compressed_size


def _leaves(meta: pq.FileMetaData, columns: Sequence[str]) -> list[int]:
    """Parquet leaf column indices of top-level columns (``tags`` is ``tags.list.element``)."""
    schema = meta.schema
    wanted = set(columns)
    return [i for i in range(len(schema)) if schema.column(i).path.split(".")[0] in wanted]


@dataclass(frozen=True)
class ReadRequest:
    """Columns of some row groups of one file (see :func:`fetch_tables`)."""

    path: str
    size: int
    metadata: pq.FileMetaData
    row_groups: tuple[int, ...]
    columns: tuple[str, ...]


def fetch_tables(fetch: Fetch, requests: Sequence[ReadRequest]) -> list[pa.Table]:
    """Read every request with ONE batched ranged fetch (nearby chunks merged)."""
    plans: list[tuple[ReadRequest, list[tuple[int, int]]]] = []
    paths: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for req in requests:
        leaves = _leaves(req.metadata, req.columns)
        spans: list[tuple[int, int]] = []
        for rg in req.row_groups:
            for column in leaves:
                lo, hi = chunk_range(req.metadata, rg, column)
                if spans and lo <= spans[-1][1] + _MERGE_GAP:
                    spans[-1] = (spans[-1][0], max(hi, spans[-1][1]))
                else:
                    spans.append((lo, hi))
        plans.append((req, spans))
        for lo, hi in spans:
            paths.append(req.path)
            starts.append(lo)
            ends.append(hi)
    blobs = iter(fetch(paths, starts, ends)) if paths else iter(())
    tables: list[pa.Table] = []
    for req, spans in plans:
        parts = {lo: next(blobs) for lo, _ in spans}
        reader = pq.ParquetFile(_Sparse(req.size, parts), metadata=req.metadata)
        tables.append(reader.read_row_groups(list(req.row_groups), columns=list(req.columns)))
    return tables


_ARROW_OF = {np.dtype(np.int64): pa.int64(), np.dtype(np.float64): pa.float64(),
             np.dtype(np.bool_): pa.bool_()}  # fmt: skip


def column_numpy(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    """A numeric or boolean column as a numpy array, read from its Arrow buffers (a null
    reads as NaN, 0 or False). pyarrow's ``to_numpy`` imports pandas, which costs a new
    process 0.3 s or more: a cold lookup must not pay that.

    Example:
        >>> t = pa.table({"x": pa.array([1.5, None]), "b": pa.array([True, False])})
        >>> column_numpy(t, "x", np.float64).tolist(), column_numpy(t, "b", np.bool_).tolist()
        ([1.5, nan], [True, False])
    """
    dtype = np.dtype(dtype)
    arr = table.column(name).combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype)
    if arr.type != _ARROW_OF[dtype]:  # not our schema: let pyarrow convert it
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)
    validity, values = arr.buffers()[:2]
    rows = slice(arr.offset, arr.offset + n)
    if dtype == np.bool_:
        out = np.unpackbits(np.frombuffer(values, np.uint8), bitorder="little")[rows]
        out = out.astype(np.bool_)
    else:
        out = np.frombuffer(values, dtype)[rows]
    if arr.null_count:
        valid = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[rows]
        out = out.copy()
        out[valid == 0] = np.nan if dtype == np.float64 else 0
    return out


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return column_numpy(table, name, np.float64)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class PartFile:
    """One data file as the key index keeps it: its footer and every column but the value.

    Attributes:
        path, size, day: Where it is, how big, its ``date=`` partition.
        metadata: The Parquet footer (row groups, chunk offsets, statistics).
        keys: The keys, in file order; ``seq``, ``deleted``, ... : numpy columns.
        slot, void, void_rows: The file's claim in the commit log (:meth:`commit`).
    """

    def __init__(
        self,
        path: str,
        size: int,
        metadata: pq.FileMetaData,
        meta: pa.Table,
        keys: list[str] | None = None,
        *,
        slot: int = 0,
        void: Collection[str] = (),
    ) -> None:
        self.path, self.size, self.metadata = path, size, metadata
        self.day = path.rsplit("/date=", 1)[-1].split("/", 1)[0]
        # the writer passes its (sorted) keys: the same str objects as the caller's
        self.keys: list[str] = meta.column("key").to_pylist() if keys is None else keys
        self.seq = column_numpy(meta, "seq", np.int64)
        self.slot = 0
        self.void: tuple[str, ...] = ()
        self.void_rows: np.ndarray | None = None  # rows that never applied (None: none)
        self.deleted = column_numpy(meta, "deleted", np.bool_)
        self.created = _floats(meta, "created_at")
        self.updated = _floats(meta, "updated_at")
        self.last_access = _floats(meta, "last_access")
        self.count = column_numpy(meta, "access_count", np.int64)
        self.expires = _floats(meta, "expires_at")
        self.ttl = _floats(meta, "ttl")
        self.sliding = column_numpy(meta, "sliding", np.bool_)
        self.version = column_numpy(meta, "version", np.int64)
        self.archived = _floats(meta, "archived_at")
        self.tags = meta.column("tags").combine_chunks()
        self.seqs: list[int] = self.seq.tolist()
        #: Its key summary (:mod:`.summary`) as written or read, when known.
        self.summary: Any = None
        self._rows: dict[str, int] | None = None  # the writer's keys are sorted and unique
        if keys is None and any(a >= b for a, b in itertools.pairwise(self.keys)):
            self._rows = {k: i for i, k in enumerate(self.keys)}  # not written by us: map it
        sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        self.rg_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if slot or void:
            self.commit(slot, void)

    def commit(self, slot: int, void: Collection[str] = ()) -> None:
        """Apply the file's claim in the log: every row takes ``slot`` as its ``seq`` (a
        write; ``0``: the rows keep theirs), and the rows of ``void`` keys never apply."""
        if slot:
            self.slot = slot
            self.seq = np.full(len(self.keys), slot, dtype=np.int64)
            self.seqs = self.seq.tolist()
        self.void = tuple(sorted(void))
        self.void_rows = None
        if self.void:
            mask = np.zeros(len(self.keys), dtype=np.bool_)
            for key in self.void:
                try:
                    row = self.row_of(key)
                except KeyError:
                    continue
                if row < len(self.keys) and self.keys[row] == key:
                    mask[row] = True
            self.void_rows = mask

    @property
    def applied_keys(self) -> list[str]:
        """The keys whose row applies (every key but the ``void`` ones)."""
        if self.void_rows is None:
            return self.keys
        return [k for k, v in zip(self.keys, self.void_rows.tolist(), strict=True) if not v]

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"PartFile({self.path!r}, rows={len(self)})"

    def row_of(self, key: str) -> int:
        """The row of ``key`` (which the file holds)."""
        if self._rows is not None:
            return self._rows[key]
        return bisect.bisect_left(self.keys, key)

    def locate(self, row: int) -> tuple[int, int]:
        """``(row group, row inside it)`` of a row."""
        rg = int(np.searchsorted(self.rg_starts, row, side="right")) - 1
        return rg, row - int(self.rg_starts[rg])

    def record(self, row: int, value: bytes = b"") -> Record:
        """The stored record of a row (access statistics not applied)."""
        return Record(
            value=value,
            created_at=float(self.created[row]),
            updated_at=float(self.updated[row]),
            last_access=float(self.last_access[row]),
            access_count=int(self.count[row]),
            expires_at=_opt(self.expires[row]),
            ttl=_opt(self.ttl[row]),
            sliding=bool(self.sliding[row]),
            tags=tuple(self.tags[row].as_py() or ()),
            version=int(self.version[row]),
        )

    def request(self, row_groups: Sequence[int], columns: Sequence[str]) -> ReadRequest:
        """A :class:`ReadRequest` for some row groups of this file."""
        return ReadRequest(self.path, self.size, self.metadata, tuple(row_groups), tuple(columns))

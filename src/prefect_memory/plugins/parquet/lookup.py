"""Key lookups on a light index: key summaries pick the row group, one ranged read answers.

A cold process does not load every data file to answer ``get_many`` of a few keys. Its
index (:class:`~.index.NsIndex`) holds the files that have a key summary as
:class:`~.index.Stub` objects (:mod:`.summary`); for each key, :func:`find_rows` asks
every stub whose key range and bloom filter admit the key, newest first (by the highest
``seq`` the file can hold), reads the one row group that would hold it together with the
file's footer (one batched ranged read for all keys), and stops as soon as no remaining
candidate can hold a newer row. Files without a summary are loaded whole and answer
through the index as before; a row of a ``void`` key (its condition failed, see
:mod:`.log`) is never a candidate.

The answer is the same row the full index picks (highest ``(seq, path)``): a bloom
filter has no false negatives, so no file holding the key is skipped. Whatever cannot be
answered this way (too many row groups to read, a summary that does not match its file)
raises :class:`Unsure`, and the caller loads the index whole instead.

Example:
    >>> import tempfile
    >>> from prefect_memory.plugins.parquet import ParquetArchiveBackend
    >>> from prefect_memory.plugins.base import Record
    >>> root = "parquet:///" + tempfile.mkdtemp()
    >>> writer = ParquetArchiveBackend(root)
    >>> for i in range(3):
    ...     writer.put_many("ns", {f"k{i}": Record(b"v%d" % i, 0.0, 0.0, 0.0)}, now=0.0)
    >>> reader = ParquetArchiveBackend(root)  # a new process: nothing loaded
    >>> reader.get_many("ns", ["k1"], now=0.0)["k1"].value
    b'v1'
    >>> index = reader.refresh("ns", lazy=True)
    >>> len(index.stubs), len(index.files)  # known by their summaries, none read whole
    (3, 0)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..base import Record
from .format import META_COLUMNS, _Sparse
from .index import NsIndex, Stub
from .summary import hash_keys, utf8

#: Most row groups one lookup reads through summaries (more: the index is loaded whole).
MAX_GROUPS = 32
_FOOTER_READ = 64 * 1024
_COLUMNS = [*META_COLUMNS, "value"]

Fetch = Callable[[list[str], list[int], list[int]], list[bytes]]


class Unsure(Exception):
    """The summaries cannot answer this lookup: load the index whole and ask it.

    ``suspect``: because something read from the store does not fit (a summary or a
    manifest not written by us): start again from a full listing, which checks more.
    """

    def __init__(self, why: str, *, suspect: bool = True) -> None:
        super().__init__(why)
        self.suspect = suspect


@dataclass
class RowView:
    """One row read from a row group, shaped like the parts of
    :class:`~.format.PartFile` that :class:`~.index.NsIndex` reads (row ``0``)."""

    path: str
    seqs: list[int]
    deleted: list[bool]
    expires: list[float]
    stored: Record
    value: bytes

    def record(self, row: int, value: bytes = b"") -> Record:
        """The stored record of the row (access statistics not applied)."""
        stored = self.stored
        return Record(value, stored.created_at, stored.updated_at, stored.last_access,
                      stored.access_count, stored.expires_at, stored.ttl, stored.sliding,
                      stored.tags, stored.version)  # fmt: skip


def _opt(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


def _row(table: pa.Table, row: int, path: str, slot: int) -> RowView:
    """The row ``row`` of a row group read whole (scalars only: no pandas, no numpy)."""

    def get(name: str) -> Any:
        return table.column(name)[row].as_py()

    expires = _opt(get("expires_at"))
    stored = Record(b"", float(get("created_at")), float(get("updated_at")),
                    float(get("last_access")), int(get("access_count") or 0), expires,
                    _opt(get("ttl")), bool(get("sliding")), tuple(get("tags") or ()),
                    int(get("version") or 0))  # fmt: skip
    seq = slot or int(get("seq"))
    return RowView(path, [seq], [bool(get("deleted"))],
                   [math.nan if expires is None else expires], stored,
                   get("value") or b"")  # fmt: skip


def find_rows(
    fetch: Fetch, index: NsIndex, keys: Sequence[str], *, max_groups: int = MAX_GROUPS
) -> dict[str, tuple[Any, int]]:
    """The latest row of each key that has one: ``{key: (file or RowView, row)}``, a
    :class:`~.format.PartFile` for a file loaded whole, a :class:`RowView` (row ``0``,
    its value read) for a stub. Tombstones and expired rows included, as
    :meth:`NsIndex.find` does. Raises :class:`Unsure` when the summaries cannot answer.
    """
    try:
        hashes = hash_keys(*utf8(keys))
    except UnicodeEncodeError as err:  # no such key can be stored: let the index say so
        raise Unsure("a key is not UTF-8", suspect=False) from err
    candidates: dict[str, list[Stub]] = {k: [] for k in keys}
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
    sorted_keys = [keys[i] for i in order.tolist()]
    for stub in index.stubs.values():
        summary = stub.summary
        lo = bisect.bisect_left(sorted_keys, summary.lo)
        hi = bisect.bisect_right(sorted_keys, summary.hi)
        if lo >= hi:
            continue
        inside = order[lo:hi]
        passed = inside[summary.bloom.check(hashes[inside])]
        void = stub.entry.void
        for i in passed.tolist():
            key = keys[i]
            if key not in void:  # a void row never applies
                candidates[key].append(stub)
    best: dict[str, tuple[tuple[int, str], Any, int]] = {}
    for key in keys:
        found = index.find(key)
        if found is not None:
            file, row = found
            best[key] = ((file.seqs[row], file.path), file, row)
        candidates[key].sort(key=lambda s: (s.top, s.path), reverse=True)
    pending = [k for k in keys if candidates[k]]
    while pending:
        wanted: dict[str, tuple[Stub, int]] = {}
        for key in pending:
            queue = candidates[key]
            mark = best.get(key)
            while queue and mark is not None and (queue[0].top, queue[0].path) <= mark[0]:
                queue.pop(0)  # cannot hold a newer row than the one found
            if queue:
                stub = queue.pop(0)
                wanted[key] = (stub, stub.summary.group_of(key))
        if not wanted:
            break
        groups = {(s.path, g): s for s, g in wanted.values()}
        if len(groups) > max_groups:
            raise Unsure(f"{len(groups)} row groups to read", suspect=False)
        tables = read_groups(fetch, groups)
        for key, (stub, group) in wanted.items():
            table = tables[(stub.path, group)]
            names = table.column("key").to_pylist()
            row = bisect.bisect_left(names, key)
            if row == len(names) or names[row] != key:
                continue  # a false positive of the bloom filter
            view = _row(table, row, stub.path, stub.entry.slot)
            rank = (view.seqs[0], stub.path)
            if key not in best or rank > best[key][0]:
                best[key] = (rank, view, 0)
        pending = list(wanted)
    return {key: (file, row) for key, (_, file, row) in best.items()}


def read_groups(fetch: Fetch, groups: dict[tuple[str, int], Stub]) -> dict[tuple[str, int], Any]:
    """Row groups of stubs read whole, with the footers not read yet, in one batched
    ranged read (a second one only for a footer larger than 64 KiB)."""
    need = {stub.path: stub for stub in groups.values() if stub.footer is None}
    paths: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for stub in need.values():
        size = stub.entry.size
        paths.append(stub.path)
        starts.append(max(0, size - _FOOTER_READ))
        ends.append(size)
    for (path, group), stub in groups.items():
        _, start, end = stub.summary.groups[group]
        paths.append(path)
        starts.append(start)
        ends.append(end)
    blobs = fetch(paths, starts, ends)
    try:
        for i, stub in enumerate(need.values()):
            stub.footer = _footer(fetch, stub, starts[i], blobs[i])
        out = {}
        for i, ((path, group), stub) in enumerate(groups.items(), start=len(need)):
            parts = {starts[i]: blobs[i]}
            reader = pq.ParquetFile(_Sparse(stub.entry.size, parts), metadata=stub.footer)
            table = reader.read_row_group(group, columns=_COLUMNS)
            first = stub.summary.groups[group][0]
            if table.num_rows < 1 or table.column("key")[0].as_py() != first:
                raise Unsure(f"{path}: row group {group} is not the one its summary names")
            out[(path, group)] = table
    except (OSError, ValueError, TypeError, pa.ArrowException) as err:
        for stub in need.values():
            stub.footer = None
        raise Unsure(f"a summary does not match its file: {type(err).__name__}") from err
    return out


def _footer(fetch: Fetch, stub: Stub, start: int, tail: bytes) -> Any:
    """The footer of a stub's file from its tail (checked against its summary)."""
    size = stub.entry.size
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        raise ValueError("not a Parquet file")
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > len(tail):  # a footer larger than the tail read: read exactly all of it
        if need > size:
            raise ValueError("footer length past the file")
        start = size - need
        (tail,) = fetch([stub.path], [start], [size])
    footer = pq.read_metadata(_Sparse(size, {start: tail}))
    summary = stub.summary
    if footer.num_rows != summary.rows or footer.num_row_groups != len(summary.groups):
        raise ValueError("the footer does not match the summary")
    return footer


def values_of(hits: dict[Hashable, tuple[Any, int]], read_values: Any) -> dict[Hashable, bytes]:
    """Values of found rows: a :class:`RowView` carries its own; the rest are read with
    ``read_values`` (rows of files loaded whole)."""
    out: dict[Hashable, bytes] = {}
    loaded = {}
    for key, (file, row) in hits.items():
        if isinstance(file, RowView):
            out[key] = file.value
        else:
            loaded[key] = (file, row)
    if loaded:
        out.update(read_values(loaded))
    return out

"""The archive's key index: which row of which file holds the latest version of a key.

One :class:`NsIndex` per namespace, held in memory and kept in step with the store by
listing the namespace's folder before every operation (one LIST request): files are
immutable, so a file is read once per process (its footer and every column but the
value, see :class:`~prefect_memory.plugins.parquet.format.PartFile`) and a file that
vanished (compacted) is dropped. The latest row of a key is the one with the highest
``(seq, path)``; a tombstone or an expired row as the latest row means "no entry".
Which files count, the ``seq`` of a write's rows (its log slot) and the rows that never
applied (``void``: a conditional write whose condition failed) come from the commit log
(:mod:`.log`, kept in :attr:`NsIndex.log`): a void row is never a latest row.

Until a process needs every file (a write, a scan, a query...), files that have a key
summary (:mod:`.summary`) are kept as :class:`Stub` objects, not read: a lookup reads
only the row group that can hold its key (:mod:`.lookup`); ``NsIndex.light`` tells.

Access statistics (counts, last access, sliding expiry) never touch the data files: a
read that counts accesses writes one small ``_stats`` object per batch, and the index
folds them in (:class:`Stat`): a statistic applies only to the exact row version it was
taken on (``row_seq``), so an overwrite starts from the row's own (merged) counters.

Example:
    >>> from prefect_memory.plugins.parquet.format import build_table
    >>> import pyarrow.parquet as pq, pyarrow as pa
    >>> from prefect_memory.plugins.base import Record
    >>> def part(path, value, seq):
    ...     table = build_table("ns", ["k"], [Record(value, 1.0, 1.0, 1.0)], seq=seq,
    ...                         archived_at=0.0)
    ...     sink = pa.BufferOutputStream(); pq.write_table(table, sink)
    ...     return PartFile(path, 0, pq.read_metadata(pa.BufferReader(sink.getvalue())), table)
    >>> index = NsIndex()
    >>> index.add(part("ns/date=1970-01-01/part-2.parquet", b"new", 2))
    >>> index.add(part("ns/date=1970-01-01/part-1.parquet", b"old", 1))
    >>> file, row = index.find("k")
    >>> file.path, index.live("k", now=5.0)
    ('ns/date=1970-01-01/part-2.parquet', True)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..base import Record
from .format import PartFile
from .log import Entry, LogView
from .summary import KeySummary


@dataclass(frozen=True)
class Stat:
    """Access statistics of one row version: ``(key, row_seq)``, newest ``stat_seq`` wins."""

    row_seq: int
    stat_seq: int
    count: int
    last_access: float
    expires_at: float | None

    def pack(self, key: str) -> list[object]:
        """The statistic as one msgpack-able list."""
        return [key, self.row_seq, self.stat_seq, self.count, self.last_access, self.expires_at]

    @classmethod
    def unpack(cls, item: list[object]) -> tuple[str, Stat]:
        """Invert :meth:`pack`."""
        key, row_seq, stat_seq, count, last, expires = item
        return str(key), cls(int(row_seq), int(stat_seq), int(count), float(last), expires)  # type: ignore[arg-type]


@dataclass
class Stub:
    """A data file that counts, known by its key summary only (not read yet).

    A lookup reads from it only the row group that may hold a key (see
    :mod:`.lookup`); any other use of the index loads it whole first.
    """

    path: str
    entry: Entry
    summary: KeySummary
    #: The file's Parquet footer, once read.
    footer: Any = None

    @property
    def top(self) -> int:
        """The highest ``seq`` of its rows (a write's rows all take its slot)."""
        return self.entry.slot or self.summary.top


class NsIndex:
    """Latest row per key over the data files of one namespace, plus access statistics.

    ``latest`` maps a key to the file holding its latest row (a file holds a key at most
    once, sorted: :meth:`PartFile.row_of` finds the row), so taking in a file of new keys
    is one C-level dict update, whatever its size.
    """

    def __init__(self) -> None:
        self.files: dict[str, PartFile] = {}
        self.latest: dict[str, PartFile] = {}
        self.stats: dict[str, Stat] = {}
        self.stat_paths: set[str] = set()
        self.max_seq = 0
        self.log = LogView()
        #: Relative paths of every data file in the last listing (counted or not).
        self.listed: set[str] = set()
        #: Keys whose rows changed since :meth:`watch` (``None``: not watching).
        self.changed: set[str] | None = None
        #: Files known by their key summary only (see :class:`Stub`), by path.
        self.stubs: dict[str, Stub] = {}
        #: Key summaries as read (claims, manifests) or written, by data file path.
        self.summaries: dict[str, Any] = {}
        #: Index manifests listed: ``{slot: (path, size)}``.
        self.manifests: dict[int, tuple[str, int]] = {}
        #: True until the first use that needs every file loaded: until then new files
        #: with a summary become :class:`Stub` objects.
        self.light = True
        #: Files from before the log that count (``{relative path: size}``; ``None``: not
        #: known yet): what lets a light index list only the log, not the data files.
        self.legacy: dict[str, int] | None = None

    @property
    def cold(self) -> bool:
        """Nothing known yet (a new process, or after :meth:`ArchiveStore.forget`)."""
        log = self.log
        return not (log.base or log.claims or log.seen or self.files or self.stubs)

    @property
    def manifest_gen(self) -> int:
        """The slot of the newest manifest listed or written (0: none)."""
        return max(self.manifests, default=0)

    def add_stub(self, stub: Stub) -> None:
        """Take in a file known by its summary only."""
        self.stubs[stub.path] = stub
        self.max_seq = max(self.max_seq, stub.top)

    def watch(self) -> set[str]:
        """Start collecting the keys whose rows change (files added or removed)."""
        self.changed = set()
        return self.changed

    def add(self, file: PartFile, *, new_keys: bool = False) -> None:
        """Take the rows of a new data file into the index (``new_keys``: the caller knows
        that none of its keys is in the index yet). Rows of ``void`` keys never apply."""
        self.files[file.path] = file
        self.stubs.pop(file.path, None)
        if file.summary is not None:
            self.summaries[file.path] = file.summary
        if file.seqs:
            self.max_seq = max(self.max_seq, max(file.seqs))
        keys = file.applied_keys
        if self.changed is not None:
            self.changed.update(keys)
        latest = self.latest
        if new_keys or latest.keys().isdisjoint(keys):  # only new keys
            latest.update(zip(keys, itertools.repeat(file)))
            return
        seqs, path = file.seqs, file.path
        void = file.void_rows
        for row, key in enumerate(file.keys):
            if void is not None and void[row]:
                continue
            other = latest.get(key)
            if other is None or (seqs[row], path) >= (other.seqs[other.row_of(key)], other.path):
                latest[key] = file

    def remove(self, paths: Iterable[str]) -> None:
        """Forget data files (deleted from the store) and rebuild the pointers."""
        changed, self.changed = self.changed, None
        for path in paths:
            self.stubs.pop(path, None)
            self.summaries.pop(path, None)
            gone = self.files.pop(path, None)
            if gone is not None and changed is not None:
                changed.update(gone.keys)
        files = sorted(self.files.values(), key=lambda f: f.path)
        self.files, self.latest = {}, {}
        try:
            for file in files:
                self.add(file)
        finally:
            self.changed = changed

    def find(self, key: str) -> tuple[PartFile, int] | None:
        """``(file, row)`` of the latest row of ``key`` (a tombstone included)."""
        file = self.latest.get(key)
        return None if file is None else (file, file.row_of(key))

    def current_rows(self, file: PartFile) -> list[int]:
        """Rows of ``file`` that are the latest row of their key."""
        latest = self.latest
        return [row for row, key in enumerate(file.keys) if latest.get(key) is file]

    def add_stats(self, items: Iterable[tuple[str, Stat]]) -> None:
        """Merge access statistics (the newest ``stat_seq`` per key wins)."""
        stats = self.stats
        for key, stat in items:
            current = stats.get(key)
            if current is None or stat.stat_seq >= current.stat_seq:
                stats[key] = stat
                if self.changed is not None:  # a sliding expiry may have moved
                    self.changed.add(key)

    def stat_for(self, key: str, file: PartFile, row: int) -> Stat | None:
        """The statistic of this exact row version, if any."""
        stat = self.stats.get(key)
        return stat if stat is not None and stat.row_seq == file.seqs[row] else None

    def record(self, key: str, file: PartFile, row: int, value: bytes = b"") -> Record:
        """The effective record of a row: stored metadata with its statistics applied."""
        record = file.record(row, value)
        stat = self.stat_for(key, file, row)
        if stat is not None:
            record.access_count = stat.count
            record.last_access = max(record.last_access, stat.last_access)
            if stat.expires_at is not None:
                record.expires_at = stat.expires_at
        return record

    def expires_at(self, key: str, file: PartFile, row: int) -> float | None:
        """Effective expiry of a row (a sliding expiry pushed by reads included)."""
        stat = self.stat_for(key, file, row)
        if stat is not None and stat.expires_at is not None:
            return stat.expires_at
        value = file.expires[row]
        return None if value != value else float(value)  # NaN: no expiry

    def row_live(self, key: str, file: PartFile, row: int, now: float) -> bool:
        """Whether a row is a live entry (not a tombstone, not expired)."""
        if file.deleted[row]:
            return False
        expires = self.expires_at(key, file, row)
        return expires is None or expires > now

    def live_rows(self, file: PartFile, now: float) -> list[int]:
        """Rows of ``file`` that are the live entry of their key."""
        keys = file.keys
        return [r for r in self.current_rows(file) if self.row_live(keys[r], file, r, now)]

    def live(self, key: str, now: float) -> bool:
        """Whether ``key`` has a live entry."""
        found = self.find(key)
        return found is not None and self.row_live(key, found[0], found[1], now)

    def meta(self, key: str, now: float) -> Record | None:
        """The live record of ``key`` without its value (``None``: no live entry)."""
        found = self.find(key)
        if found is None or not self.row_live(key, found[0], found[1], now):
            return None
        return self.record(key, *found)

    def touched(self, key: str, record: Record, file: PartFile, row: int, seq: int) -> Stat:
        """Record one access of ``key`` (already applied to ``record``) as a statistic."""
        stat = Stat(file.seqs[row], seq, record.access_count, record.last_access, None)
        if record.sliding and record.ttl is not None:
            stat = replace(stat, expires_at=record.expires_at)
        self.add_stats([(key, stat)])
        return stat

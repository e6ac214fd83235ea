"""Compaction of the Parquet archive: merge small files, drop dead rows, never lose one.

Per date partition, oldest first, the *candidates* are the files smaller than
``small_bytes`` or with at least ``dead_fraction`` dead rows. When there are two or more,
or one with dead rows, their rows are merged into ONE new file of the same partition:

- the latest row of a key (highest ``seq``) is kept, with its access statistics folded in;
- superseded rows and duplicates (left by a crashed compaction) are dropped;
- a tombstone, or an expired latest row, is dropped when no other file still holds a row
  of that key; otherwise it is kept as a tombstone (it still hides the older row).

Rows that never applied (``void`` in the commit log) are dropped; the rows of a write
are written with the ``seq`` of its log slot.

The new files count once a *checkpoint* in the commit log (:mod:`.log`) names
them in place of the old ones; the old files and the claims below the checkpoint are
deleted after. A crash before the checkpoint leaves unreferenced new files (ignored), a
crash after it old files that no longer count (the next compaction deletes them). Rows
keep their ``seq`` and ``archived_at``, so a compaction never reorders writes or moves a
row to another partition.

Racing writers: a write claimed while the compaction runs is above every row it merges,
and its checkpoint, claimed like any write, names that write's file too; what a
conditional write decided is in its claim, so merging, dropping superseded rows or
turning expired rows into tombstones changes no outcome. Racing compactions: the first
checkpoint wins; the other finds its inputs gone and deletes its own new files.

Example:
    >>> import tempfile
    >>> from prefect_memory.plugins.parquet import ParquetArchiveBackend
    >>> from prefect_memory.plugins.base import Record
    >>> archive = ParquetArchiveBackend("parquet:///" + tempfile.mkdtemp())
    >>> for i in range(3):
    ...     archive.put_many("ns", {f"k{i}": Record(b"v", 0.0, 0.0, 0.0)}, now=10.0)
    >>> report = compact(archive, "ns", now=10.0)
    >>> report.files_before, report.files_after, report.rows_written
    (3, 1, 3)
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .format import COLUMNS, PartFile, conform, fetch_tables
from .index import NsIndex

if TYPE_CHECKING:
    from .backend import ParquetArchiveBackend


@dataclass
class CompactionReport:
    """What a compaction did."""

    partitions: list[str] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0
    rows_read: int = 0
    rows_written: int = 0
    tombstones_kept: int = 0
    expired_removed: int = 0
    seconds: float = 0.0

    @property
    def rows_dropped(self) -> int:
        """Rows that are gone (superseded, deleted, expired, duplicated)."""
        return self.rows_read - self.rows_written


@dataclass
class _Plan:
    keep: np.ndarray
    convert: np.ndarray
    count: np.ndarray
    last: np.ndarray
    expires: np.ndarray
    expired: int = 0

    @property
    def work(self) -> int:
        return int((~self.keep).sum() + self.convert.sum())


def _plan(index: NsIndex, file: PartFile, outside: Counter[str], now: float) -> _Plan:
    """Which rows of ``file`` survive, given how many rows of each key live elsewhere."""
    n = len(file)
    plan = _Plan(
        np.zeros(n, np.bool_),
        np.zeros(n, np.bool_),
        file.count.copy(),
        file.last_access.copy(),
        file.expires.copy(),
    )
    latest = index.latest
    for row, key in enumerate(file.keys):
        if latest.get(key) is not file:
            continue  # superseded, or a copy of a row kept elsewhere
        if index.row_live(key, file, row, now):
            plan.keep[row] = True
            stat = index.stat_for(key, file, row)
            if stat is not None:
                plan.count[row] = stat.count
                plan.last[row] = max(plan.last[row], stat.last_access)
                if stat.expires_at is not None:
                    plan.expires[row] = stat.expires_at
            continue
        if not file.deleted[row]:
            plan.expired += 1
        if outside[key] > 0:  # an older row elsewhere: keep hiding it
            plan.keep[row] = True
            plan.convert[row] = not file.deleted[row]
    return plan


def _rows(plan: _Plan, file: PartFile, table: pa.Table) -> pa.Table:
    names = table.schema.names
    if file.slot:  # a write's rows take the slot of its claim as their seq
        table = table.set_column(names.index("seq"), "seq", pa.array(file.seq))
    table = table.set_column(names.index("access_count"), "access_count", pa.array(plan.count))
    table = table.set_column(names.index("last_access"), "last_access", pa.array(plan.last))
    expires = pa.array(plan.expires, pa.float64(), from_pandas=True)
    table = table.set_column(names.index("expires_at"), "expires_at", expires)
    if plan.convert.any():
        convert = pa.array(plan.convert)
        empty = pa.scalar(b"", table.schema.field("value").type)
        value = pc.if_else(convert, empty, table.column("value"))
        table = table.set_column(names.index("value"), "value", value)
        blank = pa.scalar(None, table.schema.field("value_json").type)
        text = pc.if_else(convert, blank, table.column("value_json"))
        table = table.set_column(names.index("value_json"), "value_json", text)
        deleted = pa.array(file.deleted | plan.convert)
        table = table.set_column(names.index("deleted"), "deleted", deleted)
    return table.filter(pa.array(plan.keep))


def compact(
    backend: ParquetArchiveBackend,
    ns: str,
    *,
    now: float,
    small_bytes: int = 64 << 20,
    dead_fraction: float = 0.25,
    expired_only: bool = False,
) -> CompactionReport:
    """Compact the partitions of ``ns`` (see the module docstring).

    Args:
        backend: The archive.
        ns: Namespace.
        now: Current time (decides what is expired).
        small_bytes: Files smaller than this are merged.
        dead_fraction: Files with at least this share of dead rows are rewritten.
        expired_only: Only rewrite files holding expired entries (``purge_expired``).

    Returns:
        A :class:`CompactionReport`.
    """
    started = time.perf_counter()
    report = CompactionReport()
    with backend._errors("compact"), backend._lock:
        index = backend.refresh(ns)
        report.files_before = len(index.files)
        rows_of: Counter[str] = Counter()
        for file in index.files.values():
            rows_of.update(file.keys)
        days: dict[str, list[PartFile]] = {}
        for file in sorted(index.files.values(), key=lambda f: f.path):
            days.setdefault(file.day, []).append(file)
        removed: list[str] = []
        written: list[PartFile] = []
        try:
            if backend.finish_drops(ns, index):  # left by a compaction stopped half-way
                backend.prune_log(ns, index)
            options = (small_bytes, dead_fraction, expired_only)
            try:
                for day in sorted(days):
                    args = (index, day, days[day], rows_of, now, report, options, removed, written)
                    if _compact_day(backend, ns, *args):
                        report.partitions.append(day)
            except FileNotFoundError:  # another compaction replaced some files meanwhile
                backend.remove_files([f.path for f in written])
                return _abandoned(report, backend.refresh(ns), started)
            if removed and not _commit(backend, ns, index, written, removed):
                return _abandoned(report, index, started)
        except BaseException:
            backend.forget(ns)  # the store is consistent; the in-memory view is not
            raise
        if index.stat_paths and report.partitions:
            backend.fold_stats(ns, index, folded=[f.path for f in written])
        report.files_after = len(index.files)
    report.seconds = time.perf_counter() - started
    return report


def _commit(
    backend: ParquetArchiveBackend,
    ns: str,
    index: NsIndex,
    written: list[PartFile],
    removed: list[str],
) -> bool:
    """Make the new files count in place of the old ones (a checkpoint in the log), then
    delete the old files and the claims below the checkpoint. False (new files deleted)
    when another compaction replaced some of the same files first."""
    checkpoint = backend.commit_checkpoint(ns, index, written, removed)
    if checkpoint is None:
        backend.remove_files([f.path for f in written])
        return False
    backend.remove_files(removed)
    index.listed.difference_update(backend.rel_path(ns, p) for p in removed)
    backend.prune_log(ns, index)
    backend._manifest_after(ns, index, checkpoint)  # the summaries follow the new files
    return True


def _abandoned(report: CompactionReport, index: NsIndex, started: float) -> CompactionReport:
    """The report of a compaction that another one overtook: it changed nothing."""
    report.partitions = []
    report.rows_read = report.rows_written = 0
    report.tombstones_kept = report.expired_removed = 0
    report.files_after = len(index.files)
    report.seconds = time.perf_counter() - started
    return report


def _compact_day(
    backend: ParquetArchiveBackend,
    ns: str,
    index: NsIndex,
    day: str,
    files: list[PartFile],
    rows_of: Counter[str],
    now: float,
    report: CompactionReport,
    options: tuple[int, float, bool],
    removed: list[str],
    written: list[PartFile],
) -> bool:
    """Compact one partition (the new file is written, it counts once :func:`_commit`
    has run); return whether anything was rewritten."""
    small_bytes, dead_fraction, expired_only = options
    in_day = Counter(k for f in files for k in f.keys)
    outside = Counter({k: rows_of[k] - in_day[k] for k in in_day})
    plans = {f.path: _plan(index, f, outside, now) for f in files}
    if expired_only:
        group = [f for f in files if plans[f.path].expired]
    else:
        group = [
            f
            for f in files
            if f.size < small_bytes or plans[f.path].work >= dead_fraction * max(1, len(f))
        ]
    if not group or (len(group) < 2 and not plans[group[0].path].work):
        return False
    if len(group) < len(files):  # rows of the files left out count as "elsewhere"
        in_group = Counter(k for f in group for k in f.keys)
        outside = Counter({k: rows_of[k] - in_group[k] for k in in_group})
        plans = {f.path: _plan(index, f, outside, now) for f in group}
    tables = fetch_tables(
        backend.fetch, [f.request(range(f.metadata.num_row_groups), COLUMNS) for f in group]
    )
    tables = [conform(t, value_json=backend.value_json) for t in tables]  # any schema version
    kept = [_rows(plans[f.path], f, t) for f, t in zip(group, tables, strict=True)]
    merged = pa.concat_tables(kept)
    merged = merged.take(pc.sort_indices(merged, sort_keys=[("key", "ascending")]))
    for f in group:
        report.rows_read += len(f)
        report.expired_removed += plans[f.path].expired
        report.tombstones_kept += int(plans[f.path].convert.sum())
        report.tombstones_kept += int((plans[f.path].keep & f.deleted).sum())
        rows_of.subtract(f.keys)
    if merged.num_rows:
        new = backend.write_part(ns, day, merged, backend._next_seq(index))
        rows_of.update(new.keys)
        written.append(new)
        report.rows_written += merged.num_rows
    removed.extend(f.path for f in group)
    return True


def purge_expired(backend: ParquetArchiveBackend, ns: str, *, now: float) -> int:
    """Rewrite the files holding expired entries without them; return how many were removed."""
    return compact(backend, ns, now=now, expired_only=True).expired_removed

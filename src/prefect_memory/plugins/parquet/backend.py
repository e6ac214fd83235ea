"""The cold tier: a hive-partitioned Parquet archive on S3 (or a local folder).

Layout under the root, per namespace token (:func:`prefect_memory.keys.ns_token`)::

    <root>/<ns>/date=YYYY-MM-DD/part-<seq>-<uuid>-w.parquet  one file per write, never rewritten
    <root>/<ns>/date=YYYY-MM-DD/part-<seq>-<uuid>-c.parquet  a compaction's output
    <root>/<ns>/_log/<slot>                                 the commit log (which files count)
    <root>/<ns>/_index/<slot>.msgpack                       index manifests (key summaries)
    <root>/<ns>/_stats/stats-<seq>-<uuid>.msgpack           access statistics, one per read batch

- **Writes append.** ``put_many`` writes ONE new file per batch into the partition of
  its archive date; a delete writes a file of tombstones. Nothing is patched in place.
- **Several processes, one archive.** A file counts once a claim in the commit log
  (:mod:`.log`) names it: claims are created with a conditional write (S3
  ``If-None-Match``, ``link()`` locally), one per slot, so every process agrees on the
  order of writes, and a conditional write (``put_absent_many``, ``delete_if_unchanged``)
  records in its claim which of its rows no longer qualify at its place in that order.
  What they return is what applied, for every reader; no lock is taken.
  Files from before the log (``part-<seq>-<uuid>.parquet``) count as they did.
- **Lookups by key** go through an in-memory key index (:mod:`.index`) kept in
  step with one LIST per operation; a lookup then reads one byte range (the value chunk
  of one row group) per row group it needs, all row groups of a batch in one concurrent
  fetch. ``exists``, ``scan``, ``tagged`` and the metadata of ``put`` need no read at all.
  A new process does not build that index for its first lookups: every file has a key
  summary (key range, bloom filter, row-group ranges) committed with it, bundled in
  index manifests (:mod:`.summary`), so a cold ``get_many`` of a few keys reads the
  newest manifest, the claims above it and one row group per key (:mod:`.lookup`).
- **Access counting** on an append-only store: one small ``_stats`` object per read
  batch, tied to the row version it counts (folded when more than ``stats_fold_at``
  pile up, and into the rows by compaction).
- **Compaction** (:mod:`.compact`) merges small files per partition and drops
  superseded, deleted and expired rows: new file first, old files deleted after, so a
  crash anywhere loses nothing and a re-run finishes the job.
- **Queries** by archive date return a DataFrame, reading only the partitions in range
  (:mod:`.query`).

URLs: ``parquet:///relative/dir`` or ``parquet:////absolute/dir`` (a local folder, the
embedded default) and ``parquet::<fsspec URL>``, e.g. ``parquet::s3://bucket/prefix``
with ``storage_options`` as for ``s3://``.

Example:
    >>> import tempfile
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("parquet:///" + tempfile.mkdtemp(), namespace="docs")
    >>> mem.set_many({"report:1": {"rows": 10}, "report:2": {"rows": 20}}, tags=["q1"])
    >>> mem.get("report:1"), sorted(mem.keys("report:*"))
    ({'rows': 10}, ['report:1', 'report:2'])
    >>> mem.delete("report:2"), mem.backend.compact("docs").files_after
    (True, 1)
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from ...errors import ConfigError
from ...keys import glob_match, literal_prefix
from ..base import Backend, Capabilities, EntryColumns, Record
from ..fs import FsspecBackend
from ..local_paths import local_path_from_url
from .index import NsIndex
from .lookup import Unsure, find_rows, values_of
from .store import ArchiveStore, Encoded, in_background

#: Most keys a ``get_many`` looks up through key summaries in a cold process (more: the
#: key index is loaded whole, as it then pays off).
_LIGHT_KEYS = 256
_log = logging.getLogger(__name__)
_OPTIONS = {
    "storage_options", "timeout", "retries", "row_group_bytes", "compression",
    "parquet_compression", "stats_fold_at", "value_json",
}  # fmt: skip


def location_of(url: str) -> str:
    """The fsspec URL behind an archive URL.

    Example:
        >>> location_of("parquet::s3://bucket/archive"), location_of("parquet:////tmp/a")
        ('s3://bucket/archive', 'file:///tmp/a')
    """
    if url.startswith("parquet::"):
        return url[len("parquet::") :]
    if url.startswith("parquet://"):
        path, query = local_path_from_url(url)
        if query:
            raise ConfigError(f"parquet:// URLs take no query options, got {url!r}")
        return "file://" + os.path.abspath(path)
    if "://" in url:
        return url
    raise ConfigError(f"expected parquet:///dir or parquet::s3://bucket/prefix, got {url!r}")


class ParquetArchiveBackend(ArchiveStore, Backend):
    """Entries as rows of a hive-partitioned Parquet dataset (see the module docstring).

    Args:
        url: ``parquet:///dir``, ``parquet::s3://bucket/prefix`` or a plain fsspec URL.
        storage_options: Passed to fsspec (for S3: ``key``, ``secret``, ``client_kwargs``).
        timeout: Connect and read timeout in seconds for network filesystems.
        retries: Attempts per S3 request (see :class:`~prefect_memory.plugins.fs.FsspecBackend`).
        row_group_bytes: Target size of a row group: what one lookup reads at most
            (values larger than this get a row group of their own).
        compression: Parquet codec of the data files.
        stats_fold_at: Merge the access-statistics objects of a namespace into one when
            more than this many exist.
        value_json: Write each value's JSON text next to its bytes (the ``value_json``
            column, for DuckDB, Polars, Spark... see :mod:`.value_json` and
            ``docs/archive-engines.md``). Off by default: it decodes every value on the
            write path (about 3 µs a row, more than twice the CPU of a write of small
            values); off, the column is null (the schema stays the same).
    """

    scheme: ClassVar[str] = "parquet"
    _transient = ("_indexes",)

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """``atomic_moves`` where the commit log's create-if-absent is atomic: local
        folders (``link()``) and S3 (``If-None-Match``); other fsspec stores check then
        write.

        Example:
            >>> ParquetArchiveBackend("parquet::memory://a").capabilities.atomic_moves
            False
        """
        atomic = self.location.startswith(("file://", "s3://"))
        local = self.location.startswith(("file://", "memory://"))
        return Capabilities(atomic_moves=atomic, local=local)

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        retries: int | None = None,
        row_group_bytes: int = 1 << 20,
        compression: str = "snappy",
        stats_fold_at: int = 64,
        value_json: bool = False,
    ) -> None:
        super().__init__()
        if row_group_bytes < 1 or stats_fold_at < 1:
            raise ConfigError("row_group_bytes and stats_fold_at must be positive")
        if not isinstance(value_json, bool):
            raise ConfigError(f"value_json must be True or False, got {value_json!r}")
        self.url = url
        self.location = location_of(url)
        self.conn = FsspecBackend(
            self.location, storage_options=storage_options, timeout=timeout, retries=retries
        )
        self.row_group_bytes = int(row_group_bytes)
        self.compression = compression
        self.stats_fold_at = int(stats_fold_at)
        self.value_json = value_json
        self._indexes: dict[str, NsIndex] | None = None
        self._last_seq = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ParquetArchiveBackend:
        """Build from ``parquet:///dir`` or ``parquet::s3://bucket/prefix`` (see the class)."""
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(f"unknown options for {url!r}: {', '.join(sorted(unknown))}")
        if "parquet_compression" in options:  # the name open_memory passes through
            if "compression" in options:
                raise ConfigError("give compression or parquet_compression, not both")
            options["compression"] = options.pop("parquet_compression")
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"ParquetArchiveBackend({self.url!r})"

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        if not keys:
            return {}
        with self._errors("read"), self._lock:
            wanted = list(dict.fromkeys(keys))
            index = self.refresh(ns, lazy=len(wanted) <= _LIGHT_KEYS)
            light = self._light_hits(ns, index, wanted, now) if index.stubs else None
            if light is not None:
                hits, values = light
            for attempt in (0, 1):
                if light is not None:
                    break
                if attempt or index.stubs:
                    index = self.refresh(ns)
                hits = {}
                for key in wanted:
                    found = index.find(key)
                    if found is not None and index.row_live(key, *found, now):
                        hits[key] = found
                try:
                    values = self.read_values(hits)
                    break
                except FileNotFoundError:  # compacted away meanwhile: list again
                    if attempt:
                        raise
            out = {k: index.record(k, *hits[k], values[k]) for k in hits}
            if touch and out:
                seq = self._next_seq()
                entries = []
                for key, record in out.items():
                    out[key] = record = record.touched(now)
                    entries.append(index.touched(key, record, *hits[key], seq).pack(key))
                self.write_stats(ns, index, entries, seq)
                if len(index.stat_paths) > self.stats_fold_at:
                    self.fold_stats(ns, self.refresh(ns) if index.stubs else index)
        return out

    def _light_hits(
        self, ns: str, index: NsIndex, keys: list[str], now: float
    ) -> tuple[dict[str, Any], dict[Any, bytes]] | None:
        """Live rows of ``keys`` and their values read through key summaries (see
        :mod:`.lookup`); ``None`` when they cannot answer (the caller loads the index)."""
        try:
            found = find_rows(self.fetch, index, keys)
            hits = {k: f for k, f in found.items() if index.row_live(k, f[0], f[1], now)}
            return hits, values_of(hits, self.read_values)
        except Unsure as err:
            if err.suspect:
                self._distrust(ns, err)
            return None
        except OSError as err:  # compacted meanwhile, or sizes or ranges that do not fit
            self._distrust(ns, err)
            return None

    def _distrust(self, ns: str, err: BaseException) -> None:
        """Forget what a light index took from summaries and manifests (the caller then
        lists everything, which checks a manifest against the files' listed sizes)."""
        _log.info("%s: cold lookup falls back to the full index: %s", self.ns_root(ns), err)
        self.forget(ns)

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        with self._errors("read"), self._lock:
            index = self.refresh(ns)
            return {k for k in keys if index.live(k, now)}

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        if not records:
            return
        with self._errors("write"), self._lock:
            self._write_batch(ns, records, now, absent_only=False)

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        if not records:
            return set()
        with self._errors("write"), self._lock:
            return set(self._write_batch(ns, records, now, absent_only=True))

    def put_absent_columns(self, ns: str, columns: EntryColumns, *, now: float) -> set[str]:
        """:meth:`put_absent_many` of a batch as columns: the file is built from them (an
        Arrow table of the lists), no record is made unless a key was archived before."""
        if not len(columns):
            return set()
        if None in columns.values:
            return super().put_absent_columns(ns, columns, now=now)  # (which refuses it)
        with self._errors("write"), self._lock:
            return set(self._write_batch(ns, columns, now, absent_only=True))

    def _write_batch(
        self, ns: str, records: Mapping[str, Record] | EntryColumns, now: float, *,
        absent_only: bool,
    ) -> list[str]:  # fmt: skip
        """Encode the batch's file while the namespace is listed (one LIST, in parallel);
        when the listing shows changes by another writer, encode it again from the new state.
        Return the keys whose rows apply."""
        index = self._index(ns)
        listed = in_background(self._list, ns)
        try:
            encoded = self._encode(ns, index, records, now, absent_only)
        finally:
            listing = listed()
        if self.apply_or_refresh(ns, listing):
            encoded = self._encode(ns, index, records, now, absent_only)
        if encoded is None:
            return []
        if absent_only:  # rows of keys written by others meanwhile do not apply
            encoded.decide = lambda keys: {k for k in keys if index.live(k, now)}
        void = self.commit_write(ns, index, encoded)
        return [k for k in encoded.keys if k not in void] if void else encoded.keys

    def _encode(
        self, ns: str, index: NsIndex, records: Mapping[str, Record] | EntryColumns, now: float,
        absent: bool,
    ) -> Encoded | None:  # fmt: skip
        latest = index.latest
        if isinstance(records, EntryColumns):
            if latest.keys().isdisjoint(records.keys):  # new keys only (a migration's, usually)
                columns = records
                keys = columns.keys
                if any(map(str.__gt__, keys, itertools.islice(keys, 1, None))):  # not sorted
                    columns = columns.take(sorted(range(len(keys)), key=keys.__getitem__))
                encoded = self.encode_records(ns, columns.keys, columns, index.log.top + 1,
                                              now=now)  # fmt: skip
                encoded.new_keys = True
                return encoded
            records = records.records(range(len(records)))
        if absent and not latest.keys().isdisjoint(records):  # (a key never seen is absent)
            records = {k: r for k, r in records.items() if not index.live(k, now)}
            if not records:
                return None
        new_keys = latest.keys().isdisjoint(records)
        if not new_keys:  # upserts keep creation and access history (base.py's rules)
            records = {
                k: r.merged_over(index.meta(k, now), now) if k in latest else r
                for k, r in records.items()
            }
        keys = sorted(records)  # the file is sorted by key
        rows = list(records.values()) if keys == list(records) else [records[k] for k in keys]
        encoded = self.encode_records(ns, keys, rows, index.log.top + 1, now=now)
        encoded.new_keys = new_keys
        return encoded

    def _tombstones(
        self, ns: str, index: NsIndex, keys: list[str], now: float,
        decide: Callable[[set[str]], set[str]],
    ) -> int:  # fmt: skip
        """Write tombstones for ``keys``; ``decide`` names those that no longer qualify when
        the write takes its place in the log. Return how many applied."""
        if not keys:
            return 0
        stone = Record(b"", now, now, now, 0, None, None, False, (), 0)
        keys = sorted(keys)  # live keys only: all in the index already
        encoded = self.encode_records(
            ns, keys, [stone] * len(keys), index.log.top + 1, now=now, deleted=True
        )
        encoded.decide = decide
        return len(keys) - len(self.commit_write(ns, index, encoded))

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        if not keys:
            return 0
        with self._errors("delete"), self._lock:
            index = self.refresh(ns)
            live = [k for k in dict.fromkeys(keys) if index.live(k, now)]
            return self._tombstones(ns, index, live, now, self._not_live(index, now))

    @staticmethod
    def _not_live(index: NsIndex, now: float) -> Callable[[set[str]], set[str]]:
        return lambda keys: {k for k in keys if not index.live(k, now)}

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        with self._errors("delete"), self._lock:
            index = self.refresh(ns)

            def changed(keys: Iterable[str]) -> set[str]:
                out = set()
                for key in keys:
                    meta = index.meta(key, now)
                    if meta is None or meta.token != tuple(expected[key]):
                        out.add(key)
                return out

            same = sorted(set(expected) - changed(expected))
            if not same:
                return set()
            stone = Record(b"", now, now, now, 0, None, None, False, (), 0)
            encoded = self.encode_records(
                ns, same, [stone] * len(same), index.log.top + 1, now=now, deleted=True
            )
            encoded.decide = changed
            void = self.commit_write(ns, index, encoded)
            return set(same) - void

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        with self._errors("delete"), self._lock:
            index = self.refresh(ns)
            live = [k for k in index.latest if index.live(k, now)]
            return self._tombstones(ns, index, live, now, self._not_live(index, now))

    def _live_keys(self, ns: str, pattern: str | None, now: float) -> list[str]:
        with self._errors("list"), self._lock:
            index = self.refresh(ns)
            prefix = literal_prefix(pattern)
            found: list[str] = []
            for path in sorted(index.files):  # file order: a scan's batches hit few row groups
                file = index.files[path]
                keys = (file.keys[row] for row in index.live_rows(file, now))
                found.extend(k for k in keys if k.startswith(prefix) and glob_match(k, pattern))
        return found

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        yield from self._live_keys(ns, pattern, now)

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        wanted = pa.array(list(tags), pa.string())
        found: set[str] = set()
        with self._errors("list"), self._lock:
            index = self.refresh(ns)
            for file in index.files.values():
                flat = pc.list_flatten(file.tags)
                rows = pc.list_parent_indices(file.tags).filter(pc.is_in(flat, value_set=wanted))
                for row in set(rows.to_pylist()):
                    key = file.keys[row]
                    if index.latest.get(key) is file and index.row_live(key, file, row, now):
                        found.add(key)
        return found

    def purge_expired(self, ns: str, *, now: float) -> int:
        from .compact import purge_expired

        return purge_expired(self, ns, now=now)

    def compact(self, ns: str, *, now: float | None = None, **options: Any) -> Any:
        """Merge small files and drop dead rows of ``ns`` (see :func:`.compact.compact`)."""
        from .compact import compact

        return compact(self, ns, now=time.time() if now is None else now, **options)

    def query(self, ns: str, start: Any = None, end: Any = None, **options: Any) -> Any:
        """Rows archived from ``start`` to ``end`` as a DataFrame (see :mod:`.query`)."""
        from .query import query

        return query(self, ns, start, end, **options)

    def dataset(self, ns: str) -> Any:
        """The raw rows of ``ns`` as a pyarrow dataset (see :func:`.query.dataset`)."""
        from .query import dataset

        return dataset(self, ns)

    def ping(self) -> None:
        self.conn.ping()

    def close(self) -> None:
        self.conn.close()
        self._indexes = None

"""Storage side of the Parquet archive: listing, ranged reads, new files, statistics objects.

:class:`ArchiveStore` is the half of
:class:`~prefect_memory.tiers.archive.ParquetArchiveBackend` that talks to the store
through fsspec (a local folder or S3 through s3fs): connection, timeouts and error
translation come from :class:`~prefect_memory.plugins.fs.FsspecBackend`, local writes are
atomic (temporary file, then rename), a remote write is one PUT. Every read of a batch
is ONE concurrent ``cat_ranges`` call, whatever the number of files and row groups.

Example:
    >>> import tempfile
    >>> from prefect_memory.tiers.archive import ParquetArchiveBackend
    >>> from prefect_memory.plugins.base import Record
    >>> archive = ParquetArchiveBackend("parquet:///" + tempfile.mkdtemp())
    >>> archive.put_many("ns", {"k": Record(b"v", 0.0, 0.0, 0.0)}, now=0.0)
    >>> index = archive.refresh("ns")
    >>> archive.read_values({"k": index.find("k")})
    {'k': b'v'}
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..keys import ns_token
from ..plugins.base import Record
from ..plugins.fs import FsspecBackend
from .archive_format import (
    META_COLUMNS,
    PartFile,
    ReadRequest,
    day_of,
    encode_table,
    write_rows,
)
from .archive_format import fetch_tables as _fetch_tables
from .archive_format import read_footers as _read_footers
from .archive_index import NsIndex, Stat

_LOAD_BATCH = 256
T = TypeVar("T")


def in_background(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Run ``fn(*args)`` in a thread; return a function that waits for its result (or error).

    Example:
        >>> in_background(sum, [1, 2])()
        3
    """
    result: list[Any] = []

    def run() -> None:
        try:
            result.append((True, fn(*args)))
        except BaseException as err:
            result.append((False, err))

    thread = threading.Thread(target=run, name="pm-archive-io", daemon=True)
    thread.start()

    def wait() -> T:
        thread.join()
        ok, value = result[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    return wait


@dataclass
class Encoded:
    """A data file ready to be stored: its partition, sequence, bytes, index columns, keys
    (and whether none of them is in the index yet)."""

    day: str
    seq: int
    data: bytes
    meta: pa.Table
    keys: list[str]
    new_keys: bool = False


class ArchiveStore:
    """Files of the archive in an fsspec filesystem, and the key index of each namespace."""

    conn: FsspecBackend
    row_group_bytes: int
    compression: str
    stats_fold_at: int
    _lock: threading.RLock
    _indexes: dict[str, NsIndex] | None
    _last_seq: int

    @property
    def fs(self) -> Any:
        """The fsspec filesystem."""
        return self.conn.fs

    def ns_root(self, ns: str) -> str:
        """Folder of a namespace's dataset (``<root>/<ns token>``)."""
        return f"{self.conn.root}/{ns_token(ns)}"

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return self.conn._errors(what)

    def _next_seq(self, index: NsIndex | None = None) -> int:
        """A write sequence above every one this process made or saw in ``index``."""
        with self._lock:
            floor = max(self._last_seq, index.max_seq if index is not None else 0)
            self._last_seq = max(time.time_ns(), floor + 1)
            return self._last_seq

    def _index(self, ns: str) -> NsIndex:
        if self._indexes is None:
            self._indexes = {}
        return self._indexes.setdefault(ns, NsIndex())

    def forget(self, ns: str) -> None:
        """Drop the in-memory index of ``ns`` (it is rebuilt from the store on next use)."""
        if self._indexes is not None:
            self._indexes.pop(ns, None)

    def fetch(self, paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
        """Byte ranges of files, fetched concurrently on remote stores."""
        if not paths:
            return []
        if self.conn._is_local(self.fs):
            out: list[bytes] = []
            handles: dict[str, Any] = {}
            try:
                for path, start, end in zip(paths, starts, ends, strict=True):
                    fh = handles.get(path) or handles.setdefault(path, open(path, "rb"))  # noqa: SIM115
                    fh.seek(start)
                    out.append(fh.read(end - start))
            finally:
                for fh in handles.values():
                    fh.close()
            return out
        blobs = self.fs.cat_ranges(paths, starts, ends, on_error="return")
        for blob in blobs:
            if isinstance(blob, BaseException):
                raise blob
        return list(blobs)

    def _list(self, ns: str) -> dict[str, int]:
        base = self.ns_root(ns) + "/"
        try:
            found = self.fs.find(base.rstrip("/"), detail=True)
        except FileNotFoundError:
            return {}
        return {
            path: int(info.get("size") or 0)
            for path, info in found.items()
            if path.startswith(base) and not path.rsplit("/", 1)[-1].startswith(".tmp-")
        }

    def refresh(self, ns: str) -> NsIndex:
        """Bring the index of ``ns`` in step with the store (one LIST, reads of new files)."""
        with self._lock:
            self.apply_listing(ns, self._list(ns))
            return self._index(ns)

    def apply_listing(self, ns: str, listing: dict[str, int]) -> bool:
        """Bring the index of ``ns`` in step with a listing; return whether it changed."""
        with self._lock:
            index = self._index(ns)
            parts = {p: s for p, s in listing.items() if "/date=" in p and p.endswith(".parquet")}
            new = sorted(p for p in parts if p not in index.files)
            for start in range(0, len(new), _LOAD_BATCH):
                batch = {p: parts[p] for p in new[start : start + _LOAD_BATCH]}
                for file in self._load_parts(batch):
                    index.add(file)
            gone = [p for p in index.files if p not in parts]
            if gone:
                index.remove(gone)
            stats = {p for p in listing if "/_stats/" in p and p.endswith(".msgpack")}
            fresh = sorted(stats - index.stat_paths)
            for blob in self.conn._cat(fresh).values():
                index.add_stats(Stat.unpack(item) for item in msgpack.unpackb(blob)["e"])
            index.stat_paths = stats
            return bool(new or gone or fresh)

    def _load_parts(self, files: dict[str, int]) -> list[PartFile]:
        footers = _read_footers(self.fetch, files)
        requests = [
            ReadRequest(path, files[path], meta, tuple(range(meta.num_row_groups)), META_COLUMNS)
            for path, meta in footers.items()
        ]
        tables = _fetch_tables(self.fetch, requests)
        return [
            PartFile(req.path, req.size, req.metadata, table)
            for req, table in zip(requests, tables, strict=True)
        ]

    def write_part(self, ns: str, index: NsIndex, day: str, table: pa.Table, seq: int) -> PartFile:
        """Write ``table`` as a new data file of partition ``day`` and index it."""
        data = encode_table(
            table, row_group_bytes=self.row_group_bytes, compression=self.compression
        )
        meta = table.select(list(META_COLUMNS))
        return self._store_part(ns, index, day, seq, data, meta, None)

    def encode_records(
        self, ns: str, keys: list[str], records: list[Record], seq: int, *, now: float,
        deleted: bool = False,
    ) -> Encoded:  # fmt: skip
        """A new data file of records (``keys`` sorted) archived at ``now``, not yet stored."""
        data, meta = write_rows(ns, keys, records, seq=seq, archived_at=now, deleted=deleted,
                                row_group_bytes=self.row_group_bytes,
                                compression=self.compression)  # fmt: skip
        return Encoded(day_of(now), seq, data, meta, keys)

    def store_encoded(self, ns: str, index: NsIndex, file: Encoded) -> PartFile:
        """Store a file made by :meth:`encode_records` and index it."""
        return self._store_part(
            ns, index, file.day, file.seq, file.data, file.meta, file.keys, file.new_keys
        )

    def _store_part(
        self,
        ns: str,
        index: NsIndex,
        day: str,
        seq: int,
        data: bytes,
        meta: pa.Table,
        keys: list[str] | None,
        new_keys: bool = False,
    ) -> PartFile:
        """Upload a file while indexing it (the upload waits on the network, the index on
        the CPU); return it once it is stored. A failed upload drops the in-memory index."""
        path = f"{self.ns_root(ns)}/date={day}/part-{seq:019d}-{uuid.uuid4().hex[:12]}.parquet"
        uploaded = in_background(self.conn._write, {path: data})
        try:
            footer = pq.read_metadata(pa.BufferReader(data))
            part = PartFile(path, len(data), footer, meta, keys)
            index.add(part, new_keys=new_keys)
        finally:
            try:
                uploaded()
            except BaseException:
                self.forget(ns)  # it holds a file that does not exist: rebuild on next use
                raise
        return part

    def remove_files(self, paths: Sequence[str]) -> None:
        """Delete files from the store (compaction calls it after writing their replacement)."""
        self.conn._rm(list(paths))

    def write_stats(self, ns: str, index: NsIndex, entries: list[list[object]], seq: int) -> str:
        """Write one access-statistics object; return its path."""
        path = f"{self.ns_root(ns)}/_stats/stats-{seq:019d}-{uuid.uuid4().hex[:12]}.msgpack"
        self.conn._write({path: msgpack.packb({"v": 1, "e": entries}, use_bin_type=True)})
        index.stat_paths.add(path)
        return path

    def fold_stats(self, ns: str, index: NsIndex, folded: Iterable[str] = ()) -> None:
        """Merge the statistics objects of ``ns`` into one (written first, then the old removed).

        Statistics of rows in the ``folded`` files (written by a compaction, which put
        the statistics into the rows) and of superseded rows are left out.
        """
        old, skip = sorted(index.stat_paths), set(folded)
        keep = {}
        for key, stat in index.stats.items():
            found = index.find(key)
            if found is not None and found[0].path not in skip and index.stat_for(key, *found):
                keep[key] = stat
        index.stats = keep
        if keep:
            newest = max(s.stat_seq for s in keep.values())
            self.write_stats(ns, index, [s.pack(k) for k, s in keep.items()], newest)
        self.remove_files(old)
        index.stat_paths -= set(old)

    def read_values(self, hits: Mapping[Hashable, tuple[PartFile, int]]) -> dict[Hashable, bytes]:
        """Values of rows: the value chunk of each row group needed, in one batched fetch."""
        wanted: dict[str, dict[int, list[tuple[Hashable, int]]]] = {}
        files: dict[str, PartFile] = {}
        for key, (file, row) in hits.items():
            rg, local = file.locate(row)
            files[file.path] = file
            wanted.setdefault(file.path, {}).setdefault(rg, []).append((key, local))
        requests, picks = [], []
        for path, groups in wanted.items():
            rgs = sorted(groups)
            requests.append(files[path].request(rgs, ["value"]))
            offset, pick = 0, []
            for rg in rgs:
                pick.extend((key, offset + local) for key, local in groups[rg])
                offset += files[path].metadata.row_group(rg).num_rows
            picks.append(pick)
        out: dict[Hashable, bytes] = {}
        for table, pick in zip(_fetch_tables(self.fetch, requests), picks, strict=True):
            taken = pc.take(table.column("value"), pa.array([i for _, i in pick])).to_pylist()
            out.update(zip((k for k, _ in pick), taken, strict=True))
        return out

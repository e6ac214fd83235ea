"""Storage side of the Parquet archive: listing, ranged reads, new files, statistics objects.

:class:`ArchiveStore` is the half of
:class:`~prefect_memory.plugins.parquet.ParquetArchiveBackend` that talks to the store
through fsspec (a local folder or S3 through s3fs): connection, timeouts and error
translation come from :class:`~prefect_memory.plugins.fs.FsspecBackend`, local writes are
atomic (temporary file, then rename), a remote write is one PUT. Every read of a batch
is ONE concurrent ``cat_ranges`` call, whatever the number of files and row groups.

Which data files count, and in which order, is decided by the commit log
(:mod:`.log`): a write uploads its file, then claims the next log slot with a
conditional create (:meth:`ArchiveStore.create_exclusive`), deciding against the state
just below that slot which of its conditional rows apply (:meth:`ArchiveStore.commit_write`).

Example:
    >>> import tempfile
    >>> from prefect_memory.plugins.parquet import ParquetArchiveBackend
    >>> from prefect_memory.plugins.base import Record
    >>> archive = ParquetArchiveBackend("parquet:///" + tempfile.mkdtemp())
    >>> archive.put_many("ns", {"k": Record(b"v", 0.0, 0.0, 0.0)}, now=0.0)
    >>> index = archive.refresh("ns")
    >>> archive.read_values({"k": index.find("k")})
    {'k': b'v'}
"""

from __future__ import annotations

import contextlib
import functools
import logging
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

from ...errors import BackendError, BackendUnavailable, SerializationError
from ...keys import ns_token
from ..fs import FsspecBackend, no_such_object
from ..fs_atomic import link_new
from .format import (
    BACKGROUND,
    META_COLUMNS,
    PartFile,
    ReadRequest,
    Rows,
    day_of,
    encode_table,
    write_rows,
)
from .format import fetch_tables as _fetch_tables
from .format import read_footers as _read_footers
from .index import NsIndex, Stat, Stub
from .log import (
    COMPACT_SUFFIX,
    LOG_DIR,
    MAX_CLAIM_BYTES,
    WRITE_SUFFIX,
    Claim,
    Entry,
    check_claim_size,
    is_logged,
    name_seq,
    parse_slot,
    slot_name,
)
from .summary import (
    INDEX_DIR,
    MAX_MANIFEST_BYTES,
    Manifest,
    manifest_due,
    manifest_name,
    parse_manifest_name,
    summarize,
    summary_of,
)

_LOAD_BATCH = 256
#: Listings tried before giving up on a consistent view (each retry follows a change
#: that a new listing shows at once: a compaction's checkpoint, a claim just made).
_LIST_ATTEMPTS = 8
#: Slots tried by one write before giving up (each failed try means another writer
#: claimed a slot meanwhile: the system progresses).
_CLAIM_ATTEMPTS = 10_000
_MAX_GAP = 100_000
_log = logging.getLogger(__name__)


class _Relist(Exception):
    """The listing is not a consistent view yet (a file vanished, a claim is missing)."""


class _NeedFull(Exception):
    """A narrow listing (the log only) is not enough: list every object."""


T = TypeVar("T")


def in_background(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Run ``fn(*args)`` in a pooled thread (:data:`.format.BACKGROUND`); return a function
    that waits for its result (or error).

    Example:
        >>> in_background(sum, [1, 2])()
        3
    """
    return BACKGROUND.submit(fn, *args).result


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
    #: Called with the keys whose rows changed since the file was encoded; returns the
    #: ones whose condition no longer holds (their rows become ``void``).
    decide: Callable[[set[str]], set[str]] | None = None


class ArchiveStore:
    """Files of the archive in an fsspec filesystem, and the key index of each namespace."""

    conn: FsspecBackend
    row_group_bytes: int
    compression: str
    value_json: bool
    stats_fold_at: int
    #: Write key summaries and index manifests (off: the layout of earlier versions).
    _summaries: bool = True
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

    def refresh(self, ns: str, *, lazy: bool = False) -> NsIndex:
        """Bring the index of ``ns`` in step with the store (one LIST, reads of new files).

        ``lazy``: while the index is still light (:attr:`NsIndex.light`), files with a key
        summary are not read but kept as :class:`~.index.Stub` objects (a lookup reads
        only the row group it needs); otherwise every file that counts is loaded.
        """
        with self._lock:
            for attempt in range(_LIST_ATTEMPTS):
                try:
                    if lazy and self._narrow_ok(ns):
                        try:
                            self.apply_listing(ns, self._list_light(ns), lazy=True, narrow=True)
                            return self._index(ns)
                        except _NeedFull:  # start again from everything listed
                            self.forget(ns)
                    self.apply_listing(ns, self._list(ns), lazy=lazy)
                    return self._index(ns)
                except _Relist:
                    time.sleep(0.005 * attempt)
            raise BackendUnavailable(
                f"{self.ns_root(ns)}: no consistent listing in {_LIST_ATTEMPTS} attempts"
            )

    def apply_or_refresh(self, ns: str, listing: dict[str, int]) -> bool:
        """:meth:`apply_listing`, listing again when that listing was not consistent."""
        with self._lock:
            try:
                return self.apply_listing(ns, listing)
            except _Relist:
                self.refresh(ns)
                return True

    def _narrow_ok(self, ns: str) -> bool:
        """Whether a light refresh may list the log alone (S3: a LIST of every data file
        is the slowest part of a cold lookup once the rest comes from a manifest)."""
        index = self._index(ns)
        return (
            self.conn.protocol == "s3" and index.light and (index.cold or index.legacy is not None)
        )

    def _list_light(self, ns: str) -> dict[str, int]:
        """The listing a light index needs: statistics objects and the log from the slot it
        starts at (a cold index: the newest manifest's, listed first; ``_NeedFull`` when
        there is none), never the data files."""
        index = self._index(ns)
        if index.cold:
            first = self._list_prefixes(ns, [(INDEX_DIR, None), ("_stats", None)])
            gens = [g for g in map(parse_manifest_name, (p.rsplit("/", 1)[-1] for p in first))
                    if g is not None]  # fmt: skip
            if not gens:
                raise _NeedFull
            first.update(self._list_prefixes(ns, [(LOG_DIR, slot_name(max(gens) - 1))]))
            return first
        after = slot_name(index.log.top)
        return self._list_prefixes(ns, [("_stats", None), (LOG_DIR, after)])

    def _list_prefixes(self, ns: str, prefixes: list[tuple[str, str | None]]) -> dict[str, int]:
        """``{path: size}`` under some folders of a namespace on S3, each listed from just
        after a name (``None``: from the start), all in one concurrent round."""
        fs = self.fs
        bucket, _, key = self.ns_root(ns).partition("/")  # ours: "bucket/prefix/ns"

        async def listed(folder: str, after: str | None) -> dict[str, int]:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{key}/{folder}/"}
            if after is not None:
                params["StartAfter"] = f"{key}/{folder}/{after}"
            out: dict[str, int] = {}
            while True:
                page = await fs._call_s3("list_objects_v2", **params)
                for item in page.get("Contents", ()):
                    out[f"{bucket}/{item['Key']}"] = int(item.get("Size") or 0)
                if not page.get("IsTruncated"):
                    return out
                params["ContinuationToken"] = page["NextContinuationToken"]

        from ..fs_atomic import run_all

        found: dict[str, int] = {}
        for part in run_all(fs, [functools.partial(listed, f, a) for f, a in prefixes]):
            if isinstance(part, BaseException):
                raise part
            found.update(part)
        return found

    def apply_listing(
        self, ns: str, listing: dict[str, int], *, lazy: bool = False, narrow: bool = False
    ) -> bool:
        """Bring the index of ``ns`` in step with a listing; return whether it changed.

        The data files that count are the ones the log names (plus, until the first
        checkpoint, the listed files written before the log existed); a listing that
        misses a claim, or names a file deleted meanwhile, raises ``_Relist``. A cold
        index starts from the newest index manifest the log confirms (:mod:`.summary`),
        read with the claims above it and new statistics objects in one round.
        ``narrow``: the listing holds only statistics objects, manifests and the log from
        some slot on (:meth:`_list_light`); the files from before the log are the ones
        the index knows (``_NeedFull`` when it knows none: list everything).
        """
        with self._lock:
            index = self._index(ns)
            lazy = lazy and index.light
            log = index.log
            base = self.ns_root(ns) + "/"
            slots: dict[int, str] = {}
            legacy: dict[str, int] = {}
            listed: set[str] = set()
            sizes: dict[str, int] = {}
            stats: set[str] = set()
            manifests: dict[int, tuple[str, int]] = {}
            for path, size in listing.items():
                rel = path[len(base) :]
                if rel.startswith(LOG_DIR + "/"):
                    slot = parse_slot(rel[len(LOG_DIR) + 1 :])
                    if slot is not None:
                        check_claim_size(slot, size or 0)
                        slots[slot] = path
                elif rel.startswith(INDEX_DIR + "/"):
                    gen = parse_manifest_name(rel[len(INDEX_DIR) + 1 :])
                    if gen is not None:
                        manifests[gen] = (path, size or 0)
                elif "/_stats/" in path:
                    if path.endswith(".msgpack"):
                        if (size or 0) > MAX_CLAIM_BYTES:  # read whole: bounded first
                            raise SerializationError(
                                f"{path}: {size} bytes, not an access-statistics object "
                                "written by prefect-memory"
                            )
                        stats.add(path)
                elif "/date=" in path and path.endswith(".parquet"):
                    listed.add(rel)
                    sizes[rel] = size
                    if not is_logged(rel):
                        legacy[rel] = size
            if narrow:
                legacy = dict(index.legacy or {})
                manifests = manifests or index.manifests
            else:
                index.listed = listed
                index.legacy = dict(legacy)
            index.manifests = manifests
            if log.base is None:
                log.legacy_top = max(map(name_seq, legacy), default=0)
            # claims not read yet (those at or below the newest checkpoint are settled)
            known = set(log.claims) | log.seen
            fresh = [s for s in sorted(slots) if s not in known]
            seed = self._manifest_to_try(index, slots, manifests)
            first = [s for s in fresh if s > log.floor and (seed is None or s >= seed)]
            fresh_stats = sorted(stats - index.stat_paths)
            wanted_paths = [slots[s] for s in first] + fresh_stats
            if seed is not None:
                wanted_paths.append(manifests[seed][0])
            blobs = self.read_fresh(wanted_paths)
            claims = [Claim.unpack(s, blobs[slots[s]]) for s in first if slots[s] in blobs]
            self._take_stats(index, fresh_stats, blobs)
            seeded = seed is not None and self._seed(index, seed, blobs, claims, base, sizes)
            if narrow and (index.legacy is None or (seed is not None and not seeded)):
                raise _NeedFull  # the log below the manifest was not listed
            if narrow and seeded:
                legacy = dict(index.legacy or {})
            if seed is not None and not seeded:
                rest = [s for s in fresh if log.floor < s < seed]  # the manifest is ignored
                claims += self._read_claims(ns, rest, slots)
            log.seen.update(s for s in fresh if s <= log.floor)
            log.take(claims)
            missing = log.missing(max(slots, default=0))
            if missing:  # slots are dense: a claim the listing missed exists (or was pruned)
                if len(missing) > _MAX_GAP:
                    raise BackendError(f"{base}{LOG_DIR}: {len(missing)} log slots missing")
                more = self._read_claims(ns, missing, {})
                log.take(more)
                claims += more
                if log.missing(max(slots, default=0)):
                    raise _Relist
            log.seen.intersection_update(slots)
            for claim in claims:
                if claim.entry is not None and claim.summary is not None:
                    index.summaries[base + claim.entry.path] = claim.summary
            wanted = {base + rel: entry for rel, entry in log.files(legacy).items()}
            gone = [p for p in (*index.files, *index.stubs) if p not in wanted]
            for path in gone:
                if path in index.stubs:
                    index.stubs.pop(path)
            if any(p in index.files for p in gone):
                index.remove(gone)
            index.summaries = {p: s for p, s in index.summaries.items() if p in wanted}
            new = sorted(p for p in wanted if p not in index.files and p not in index.stubs)
            if lazy:
                for path in new:
                    summary = summary_of(index.summaries.get(path), wanted[path].size)
                    if summary is not None:
                        index.add_stub(Stub(path, wanted[path], summary))
                load = [p for p in new if p not in index.stubs]
                if narrow and load:  # files to read whole: their listed sizes are wanted
                    raise _NeedFull
            else:
                load = sorted({*new, *index.stubs})  # stubs are loaded whole now
            for start in range(0, len(load), _LOAD_BATCH):
                batch = {p: wanted[p] for p in load[start : start + _LOAD_BATCH]}
                try:
                    loaded = self._load_parts(batch)
                except FileNotFoundError as err:  # replaced by a checkpoint meanwhile
                    raise _Relist from err
                for file in loaded:
                    file.summary = index.summaries.get(file.path)
                    index.add(file)
            if not lazy:
                index.light = False
            index.stat_paths = stats
            return bool(new or gone or fresh_stats or claims or load)

    @staticmethod
    def _manifest_to_try(
        index: NsIndex, slots: Mapping[int, str], manifests: Mapping[int, tuple[str, int]]
    ) -> int | None:
        """The slot of the manifest a cold index starts from: the newest one at or below
        the highest slot listed, not too large to read (``None``: none, or not cold)."""
        log = index.log
        if log.base is not None or log.claims or log.seen or index.files or index.stubs:
            return None
        top = max(slots, default=0)
        usable = [g for g, (_, size) in manifests.items()
                  if log.floor < g <= top and size <= MAX_MANIFEST_BYTES]  # fmt: skip
        return max(usable, default=None)

    def _seed(
        self, index: NsIndex, gen: int, blobs: Mapping[str, bytes], claims: list[Claim],
        root: str, sizes: Mapping[str, int],
    ) -> bool:  # fmt: skip
        """Start the log view of a cold index from the manifest of slot ``gen``; False
        (nothing changed) when it is missing, malformed, or not confirmed by the log."""
        path = index.manifests[gen][0]
        blob = blobs.get(path)
        if blob is None:
            return False
        log = index.log
        try:
            manifest = Manifest.unpack(gen, blob)
        except SerializationError as err:
            _log.warning("%s: ignored (%s)", path, err)
            return False
        if not manifest.verified({c.slot: c for c in claims}):
            _log.info("%s: ignored (the log at slot %d is not the one it names)", path, gen)
            return False
        if manifest.base is None:  # files from before the log count by being listed
            if index.legacy is None:  # the data files were not listed: the manifest says
                log.legacy_top = max(map(name_seq, manifest.legacy), default=0)
            elif manifest.legacy != index.legacy:
                return False  # they changed since it was written
            if manifest.floor != log.legacy_top:
                return False
        entries = [*(manifest.base.files or () if manifest.base else ()),
                   *(c.entry for c in manifest.claims if c.entry)]  # fmt: skip
        if any(sizes.get(e.path, e.size) != e.size for e in entries):
            _log.warning("%s: ignored (names files of other sizes than listed)", path)
            return False
        log.base = manifest.base
        log.claims = {c.slot: c for c in manifest.claims}
        if index.legacy is None:
            index.legacy = dict(manifest.legacy) if manifest.base is None else {}
        for rel, raw in manifest.summaries.items():
            if isinstance(rel, str):
                index.summaries[root + rel] = raw
        for claim in manifest.claims:  # a write's own summary wins over the manifest's
            if claim.summary is not None and claim.entry is not None:
                index.summaries[root + claim.entry.path] = claim.summary
        return True

    def _take_stats(self, index: NsIndex, paths: list[str], blobs: Mapping[str, bytes]) -> None:
        """Fold statistics objects just read into the index (a foreign object is a
        :class:`SerializationError` naming it)."""
        for path in paths:
            blob = blobs.get(path)
            if blob is None:  # folded meanwhile
                continue
            try:
                items = [Stat.unpack(item) for item in msgpack.unpackb(blob)["e"]]
            except (ValueError, TypeError, KeyError, msgpack.UnpackException) as err:
                raise SerializationError(
                    f"{path}: not an access-statistics object written by prefect-memory "
                    f"({type(err).__name__})"
                ) from None
            index.add_stats(items)
            index.stat_paths.add(path)

    def _log_path(self, ns: str, slot: int) -> str:
        return f"{self.ns_root(ns)}/{LOG_DIR}/{slot_name(slot)}"

    def _read_claims(self, ns: str, wanted: list[int], paths: Mapping[int, str]) -> list[Claim]:
        """The claims of some slots (those that exist), in one concurrent read."""
        if not wanted:
            return []
        by_path = {paths.get(s) or self._log_path(ns, s): s for s in wanted}
        blobs = self.read_fresh(list(by_path))
        return [Claim.unpack(by_path[path], blob) for path, blob in blobs.items()]

    def read_fresh(self, paths: list[str]) -> dict[str, bytes]:
        """Whole small objects, those that exist, read concurrently and never through a
        cached listing (s3fs sizes a file from its folder's cached listing before reading
        it, and misses one created since that listing)."""
        if not paths:
            return {}
        fs = self.fs
        if self.conn._is_local(fs):
            out = {}
            for path in paths:
                with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
                    out[path] = fh.read()
            return out
        if self.conn.protocol == "s3":
            blobs = fs.cat(paths, on_error="return", max_concurrency=1)
        else:
            for path in paths:
                fs.invalidate_cache(path)
            blobs = fs.cat(paths, on_error="return")
        if not isinstance(blobs, dict):
            blobs = {paths[0]: blobs}
        found = {}
        for path, blob in blobs.items():
            if isinstance(blob, BaseException):
                if no_such_object(blob):
                    continue
                raise blob
            found[path] = blob
        return found

    def _load_parts(self, files: Mapping[str, Entry]) -> list[PartFile]:
        sizes = {path: entry.size for path, entry in files.items()}
        footers = _read_footers(self.fetch, sizes)
        requests = [
            ReadRequest(path, sizes[path], meta, tuple(range(meta.num_row_groups)), META_COLUMNS)
            for path, meta in footers.items()
        ]
        tables = _fetch_tables(self.fetch, requests)
        out = []
        for req, table in zip(requests, tables, strict=True):
            entry = files[req.path]
            out.append(PartFile(req.path, req.size, req.metadata, table, slot=entry.slot,
                                void=entry.void))  # fmt: skip
        return out

    def rel_path(self, ns: str, path: str) -> str:
        """A data file's path relative to the namespace folder."""
        return path[len(self.ns_root(ns)) + 1 :]

    # -- conditional creates and claims ------------------------------------------------------
    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; return whether this call did.

        Atomic across processes and machines: ``link()`` of a complete temporary file on a
        local folder, a PUT with ``If-None-Match: *`` on S3 (other fsspec stores: their
        ``mode="create"``, which may only check then write). A create whose answer was
        lost and that was retried finds its own bytes there: it counts as created.
        """
        fs = self.fs
        if self.conn._is_local(fs):
            if link_new(path, data):
                return True
            with open(path, "rb") as fh:
                return fh.read() == data
        if self.conn.protocol == "s3":
            self.conn._watch_retries(fs)
        failure: BaseException | None = None
        for attempt in range(3):
            time.sleep(0.05 * attempt)
            try:
                fs.pipe_file(path, data, mode="create")
                return True
            except Exception as err:  # s3fs: 412 Precondition Failed comes as an OSError
                failure = err
            found = self.read_fresh([path])
            if path in found:  # someone's create won: this one (retried), or another?
                return found[path] == data
            # nothing was created: the create failed, try again
        assert failure is not None
        raise failure

    def _claim(self, ns: str, index: NsIndex, make: Callable[[int], Claim | None]) -> Claim | None:
        """Claim the slot above the highest known for ``make(slot)`` (``None``: give up),
        reading the store again and retrying above whatever another writer claimed."""
        for _attempt in range(_CLAIM_ATTEMPTS):
            slot = index.log.top + 1
            claim = make(slot)
            if claim is None:
                return None
            path = self._log_path(ns, slot)
            if self.create_exclusive(path, claim.pack()):
                verdict = self._overtaken(ns, claim)
                if verdict is None:
                    self.forget(ns)
                    raise BackendError(
                        f"{path}: claimed, but two checkpoints that would tell whether the "
                        "slot had been freed are gone: the outcome of this write is unknown"
                    )
                if not verdict:
                    index.log.take([claim])
                    return claim
                with contextlib.suppress(Exception):  # counts for nobody: below a checkpoint
                    self.conn._rm([path])
            self.refresh(ns)
            if index.log.top < slot:  # the listing did not show the claim that won: read it
                index.log.take(self._read_claims(ns, [slot], {}))
                self.refresh(ns)
        raise BackendError(f"{self.ns_root(ns)}: no log slot after {_CLAIM_ATTEMPTS} attempts")

    def _overtaken(self, ns: str, claim: Claim) -> bool | None:
        """See :func:`.log.overtaken` (one LIST of the log above the slot, reads of the
        later slots)."""
        from .log import overtaken

        if self.conn.protocol == "s3":  # only the slots above: the log may be long
            found = list(self._list_prefixes(ns, [(LOG_DIR, slot_name(claim.slot))]))
        else:
            found = self.fs.find(f"{self.ns_root(ns)}/{LOG_DIR}")
        paths: dict[int, str] = {}
        for path in found:
            slot = parse_slot(path.rsplit("/", 1)[-1])
            if slot is not None and slot > claim.slot:
                paths[slot] = path
        if not paths:
            return False
        later = self._read_claims(ns, sorted(paths), paths)
        return overtaken(claim, {c.slot: c for c in later})

    def commit_write(self, ns: str, index: NsIndex, file: Encoded) -> set[str]:
        """Upload a file made by :meth:`encode_records`, claim a log slot for it and index
        it; return the keys whose rows do not apply (``file.decide`` said so)."""
        rel = f"date={file.day}/part-{file.seq:019d}-{uuid.uuid4().hex[:12]}{WRITE_SUFFIX}"
        path = f"{self.ns_root(ns)}/{rel}"
        uploaded = in_background(self.conn._write, {path: file.data})
        try:
            footer = pq.read_metadata(pa.BufferReader(file.data))
            part = PartFile(path, len(file.data), footer, file.meta, file.keys)
            part.summary = self._summarize(file.meta.column("key"), footer, len(file.data),
                                           file.seq)  # fmt: skip
        finally:
            try:
                uploaded()
            except BaseException:
                with contextlib.suppress(Exception):
                    self.conn._rm([path])
                raise
        nonce = uuid.uuid4().hex
        changed = index.watch()

        def make(slot: int) -> Claim:
            void: set[str] = set()
            if file.decide is not None and changed:
                void = file.decide(changed.intersection(file.keys))
            entry = Entry(rel, len(file.data), slot, tuple(sorted(void)))
            return Claim(slot, nonce, entry=entry, summary=part.summary)

        try:
            claim = self._claim(ns, index, make)
        finally:
            index.changed = None
        assert claim is not None and claim.entry is not None
        part.commit(claim.slot, claim.entry.void)
        index.add(part, new_keys=file.new_keys and not changed)
        self._manifest_after(ns, index, claim)
        return set(claim.entry.void)

    # -- key summaries and index manifests (see .summary) ------------------------------------
    def _summarize(self, keys: Any, footer: Any, size: int, top: int) -> dict[str, Any] | None:
        """The packed key summary of a new data file (``None``: summaries are off)."""
        if not self._summaries:
            return None
        made = summarize(keys, footer, size, top)
        return None if made is None else made.pack()

    def _manifest_after(self, ns: str, index: NsIndex, claim: Claim) -> None:
        """Write an index manifest at ``claim``'s slot when one is due (a failure is
        logged: the write it follows has happened, whatever becomes of the manifest)."""
        if not self._summaries:
            return
        log, newest = index.log, index.manifest_gen
        since = sum(c.entry.size for s, c in log.claims.items() if s > newest and c.entry)
        size = index.manifests[newest][1] if newest else 0
        if not claim.checkpoint and not manifest_due(claim.slot, newest, since, size):
            return
        try:
            self.write_manifest(ns, index, claim.slot, claim.nonce)
        except Exception as err:  # the manifest is a shortcut: readers do without it
            _log.warning("%s: index manifest %d not written: %s", self.ns_root(ns), claim.slot,
                         type(err).__name__)  # fmt: skip

    def write_manifest(self, ns: str, index: NsIndex, gen: int, nonce: str) -> str | None:
        """Write the index manifest of slot ``gen`` (the claim there has ``nonce``) from a
        loaded index whose log view ends at ``gen``; delete the manifests older than the
        previous one. Return its path (``None``: the view does not allow one)."""
        log = index.log
        claims = [log.claims[s] for s in sorted(log.claims) if s <= gen]
        if index.stubs or [c.slot for c in claims] != list(range(log.floor + 1, gen + 1)):
            return None
        root = self.ns_root(ns) + "/"
        summaries: dict[str, Any] = {}
        for path, file in index.files.items():
            raw = index.summaries.get(path)
            if summary_of(raw, file.size) is None:
                made = None
                if file._rows is None:  # sorted unique keys (written by us)
                    made = summarize(file.keys, file.metadata, file.size, max(file.seqs, default=0))
                raw = None if made is None else made.pack()
                if raw is not None:
                    index.summaries[path] = raw
            if raw is not None:
                summaries[path[len(root) :]] = raw
        legacy = dict(index.legacy or {}) if log.base is None else {}
        blob = Manifest(gen, nonce, log.floor, log.base, claims, summaries, legacy).pack()
        if len(blob) > MAX_MANIFEST_BYTES:
            return None
        path = f"{root}{INDEX_DIR}/{manifest_name(gen)}"
        self.conn._write({path: blob})
        index.manifests[gen] = (path, len(blob))
        old = sorted(index.manifests)[:-2]
        if old:
            self.remove_files([index.manifests.pop(g)[0] for g in old])
        return path

    def write_part(self, ns: str, day: str, table: pa.Table, seq: int) -> PartFile:
        """Upload ``table`` as a new data file of partition ``day`` (counted once a
        checkpoint names it, see :meth:`commit_checkpoint`)."""
        data = encode_table(
            table, row_group_bytes=self.row_group_bytes, compression=self.compression
        )
        rel = f"date={day}/part-{seq:019d}-{uuid.uuid4().hex[:12]}{COMPACT_SUFFIX}"
        path = f"{self.ns_root(ns)}/{rel}"
        uploaded = in_background(self.conn._write, {path: data})
        try:
            footer = pq.read_metadata(pa.BufferReader(data))
            meta = table.select(list(META_COLUMNS))
            part = PartFile(path, len(data), footer, meta)
            part.summary = self._summarize(table.column("key"), footer, len(data),
                                           max(part.seqs, default=0))  # fmt: skip
        finally:
            uploaded()
        return part

    def commit_checkpoint(
        self, ns: str, index: NsIndex, added: list[PartFile], removed: list[str]
    ) -> Claim | None:
        """Claim a checkpoint naming every data file that counts, with ``added`` in place of
        ``removed``; ``None`` when one of ``removed`` no longer counts (another compaction
        replaced it first). The index follows."""
        nonce = uuid.uuid4().hex
        gone = set(removed)

        def make(slot: int) -> Claim | None:
            if not gone <= index.files.keys():
                return None
            files = [
                Entry(self.rel_path(ns, f.path), f.size, f.slot, f.void)
                for f in index.files.values()
                if f.path not in gone
            ]
            files += [Entry(self.rel_path(ns, f.path), f.size) for f in added]
            base = index.log.base
            prev = (base.slot, base.nonce) if base is not None else (index.log.floor, "")
            drop = tuple(self.rel_path(ns, p) for p in removed)
            return Claim(slot, nonce, files=tuple(files), drop=drop, prev=prev)

        claim = self._claim(ns, index, make)
        if claim is not None:
            index.remove(removed)
            for part in added:
                index.add(part)
        return claim

    def finish_drops(self, ns: str, index: NsIndex) -> list[str]:
        """Delete the files the newest checkpoint replaced that still exist (a compaction
        stopped between its checkpoint and its deletes); return their paths."""
        base = index.log.base
        if base is None or not base.drop:
            return []
        root = self.ns_root(ns)
        left = [f"{root}/{rel}" for rel in base.drop if rel in index.listed]
        if left:
            self.remove_files(left)
            index.listed.difference_update(base.drop)
        return left

    def prune_log(self, ns: str, index: NsIndex) -> None:
        """Delete the claims below the newest checkpoint, and checkpoints but the last two."""
        base = index.log.base
        if base is None:
            return
        keep = {base.slot, base.prev[0]}
        old = []
        for path in self.fs.find(f"{self.ns_root(ns)}/{LOG_DIR}"):
            slot = parse_slot(path.rsplit("/", 1)[-1])
            if slot is not None and slot < base.slot and slot not in keep:
                old.append(path)
        if old:
            self.remove_files(old)

    def encode_records(
        self, ns: str, keys: list[str], records: Rows, seq: int, *, now: float,
        deleted: bool = False,
    ) -> Encoded:  # fmt: skip
        """A new data file of records (``keys`` sorted) archived at ``now``, not yet stored
        (``records``: a list, or a batch as columns with every value read)."""
        data, meta = write_rows(ns, keys, records, seq=seq, archived_at=now, deleted=deleted,
                                row_group_bytes=self.row_group_bytes,
                                compression=self.compression,
                                value_json=self.value_json)  # fmt: skip
        return Encoded(day_of(now), seq, data, meta, keys)

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

"""JSON file backend (``json:///path/backup.json``): the tutorial's JSON backup, made safe.

The whole memory lives in one human-inspectable JSON document. Every write takes an
exclusive lock (``fcntl`` on ``<file>.lock``), rewrites the file to a temporary and
renames it into place, so a crash never leaves a half-written backup and processes of
one machine can share the file. Access statistics (counts, last access, sliding expiry)
are kept in memory and written with the next write, at :meth:`flush`, at close, and at
most ``flush_interval`` seconds after they happen; they are metadata, not data.

Example:
    >>> import tempfile
    >>> from prefect_memory.plugins.jsonfile import JsonFileBackend
    >>> folder = tempfile.mkdtemp()
    >>> JsonFileBackend.from_url(f"json:///{folder}/memory/backup.json").path.endswith("backup.json")
    True
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import BackendError, BackendUnavailable, ConfigError, SerializationError
from ..keys import glob_match
from .base import (
    F_ACCESS_COUNT,
    F_ACCESSED,
    F_EXPIRES,
    F_TAGS,
    F_UPDATED,
    F_VALUE,
    F_VERSION,
    Backend,
    Capabilities,
    Record,
    record_fields,
    record_from_fields,
)
from .local_paths import local_path_from_url

FORMAT = "prefect-memory.json"

Doc = dict[str, dict[str, dict[str, Any]]]


def _encode(record: Record) -> dict[str, Any]:
    return {F_VALUE: base64.b64encode(record.value).decode("ascii"), **record_fields(record)}


def _decode(raw: dict[str, Any]) -> Record:
    return record_from_fields(raw, base64.b64decode(raw[F_VALUE]))


def _live(raw: dict[str, Any], now: float) -> bool:
    return raw[F_EXPIRES] is None or raw[F_EXPIRES] > now


_open_backends: weakref.WeakSet[JsonFileBackend] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:  # pragma: no cover - runs at interpreter exit
    for backend in list(_open_backends):
        with contextlib.suppress(Exception):
            backend.flush()


class JsonFileBackend(Backend):
    """Entries in one JSON file, shared safely by the processes of one machine.

    Args:
        path: The JSON file (created with its folder).
        indent: Indentation of the written JSON (``None``: compact).
        flush_interval: Most seconds access statistics wait before they are written.
    """

    scheme: ClassVar[str] = "json"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=True, atomic_moves=True, metadata_reads=True, local=True
    )

    def __init__(self, path: str, *, indent: int | None = 1, flush_interval: float = 5.0) -> None:
        super().__init__()
        self.path = path
        self.indent = indent
        self.flush_interval = float(flush_interval)
        self.url = f"json:///{path}"
        self._doc: Doc | None = None
        self._stamp: tuple[int, int, int] | None = None
        # pending access statistics: (ns, key) -> (accesses, last_access, expires_at)
        self._pending: dict[tuple[str, str], tuple[int, float, float | None]] = {}
        self._pending_since: float | None = None
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as err:
            raise BackendUnavailable(f"cannot create the folder of {path!r}: {err}") from err
        _open_backends.add(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> JsonFileBackend:
        """Build from ``json:///relative/file.json`` or ``json:////absolute/file.json``."""
        path, query = local_path_from_url(url)
        for name, conv in (("indent", int), ("flush_interval", float)):
            if name in query:
                options.setdefault(name, conv(query.pop(name)))
        if query:
            raise ConfigError(f"unknown json:// options in {url!r}: {', '.join(sorted(query))}")
        options.pop("timeout", None)
        return cls(path, **options)

    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        state = super().__getstate__()
        state.update(_doc=None, _stamp=None, _pending={}, _pending_since=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        _open_backends.add(self)

    # -- file access --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[Doc]:
        with self._lock:
            try:
                lock_file = open(self.path + ".lock", "a+b")  # noqa: SIM115
            except OSError as err:
                raise BackendUnavailable(f"cannot open {self.path}.lock: {err}") from err
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                yield self._load()
            finally:
                lock_file.close()

    def _load(self) -> Doc:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._doc, self._stamp = {}, None
            return self._doc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._doc is not None and stamp == self._stamp:
            return self._doc
        try:
            with open(self.path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except (OSError, ValueError) as err:
            raise BackendError(f"cannot read the JSON memory {self.path!r}: {err}") from err
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BackendError(
                f"{self.path!r} is not a prefect-memory JSON file (expected format {FORMAT!r})"
            )
        self._doc, self._stamp = raw.get("namespaces", {}), stamp
        self._apply_pending(self._doc)
        return self._doc

    def _apply_pending(self, doc: Doc) -> None:
        for (ns, key), (count, last, expires) in self._pending.items():
            raw = doc.get(ns, {}).get(key)
            if raw is not None:
                raw[F_ACCESS_COUNT] = raw.get(F_ACCESS_COUNT, 0) + count
                raw[F_ACCESSED] = max(raw[F_ACCESSED], last)
                if expires is not None:
                    raw[F_EXPIRES] = expires

    def _save(self, doc: Doc) -> None:
        """Write ``doc`` (the cached document, changed in place by the caller) to the file.

        On any failure the temporary file is removed and the cache dropped, so that the
        next call reads the file as it was: a failed write never leaks into later ones.
        """
        payload = {"format": FORMAT, "version": 1, "namespaces": doc}
        folder = os.path.dirname(os.path.abspath(self.path))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".backup-", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=self.indent, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException as err:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self._doc, self._stamp = None, None  # pending statistics stay, re-applied on load
            if isinstance(err, OSError):
                raise BackendUnavailable(
                    f"cannot write the JSON memory {self.path!r}: {err}"
                ) from err
            if isinstance(err, (ValueError, TypeError)):
                raise SerializationError(
                    f"cannot write the JSON memory {self.path!r}: {type(err).__name__}: {err}"
                ) from err
            raise
        st = os.stat(self.path)
        self._doc, self._stamp = doc, (st.st_mtime_ns, st.st_size, st.st_ino)
        self._pending.clear()
        self._pending_since = None

    def flush(self) -> None:
        """Write pending access statistics to the file now."""
        if not self._pending:
            return
        with self._locked(exclusive=True) as doc:
            self._save(doc)

    def close(self) -> None:
        self.flush()
        self._doc = None
        self._stamp = None

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        out: dict[str, Record] = {}
        with self._locked(exclusive=False) as doc:
            entries = doc.get(ns, {})
            for key in keys:
                raw = entries.get(key)
                if raw is None or not _live(raw, now):
                    continue
                record = _decode(raw)
                if touch:
                    record = record.touched(now)
                    raw.update(n=record.access_count, a=now, x=record.expires_at)
                    count, _, _ = self._pending.get((ns, key), (0, now, None))
                    self._pending[(ns, key)] = (count + 1, now, record.expires_at)
                out[key] = record
            if touch and out and self._pending_since is None:
                self._pending_since = now
        if self._pending_since is not None and now - self._pending_since >= self.flush_interval:
            self.flush()
        return out

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """The live records of ``keys`` without values: the size is taken from the length
        of the base64 text, which is never decoded."""
        out: dict[str, Record] = {}
        with self._locked(exclusive=False) as doc:
            entries = doc.get(ns, {})
            for key in keys:
                raw = entries.get(key)
                if raw is None or not _live(raw, now):
                    continue
                text = raw[F_VALUE]
                record = record_from_fields(raw, b"")
                record.stored_size = len(text) // 4 * 3 - text[-2:].count("=")
                out[key] = record
        return out

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        with self._locked(exclusive=True) as doc:
            entries = doc.setdefault(ns, {})
            for key, record in records.items():
                old = entries.get(key)
                merged = record.merged_over(None if old is None else _decode(old), now)
                entries[key] = _encode(merged)
            self._save(doc)

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        """Write the records whose key has no live entry, under the file lock (atomic)."""
        with self._locked(exclusive=True) as doc:
            entries = doc.setdefault(ns, {})
            written = {k for k in records if k not in entries or not _live(entries[k], now)}
            for key in written:
                entries[key] = _encode(records[key])
                self._pending.pop((ns, key), None)
            if written:
                self._save(doc)
            elif not entries:
                doc.pop(ns, None)
        return written

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        """Delete the keys still holding the write ``(version, updated_at)``, under the lock."""
        with self._locked(exclusive=True) as doc:
            entries = doc.get(ns, {})
            same = {
                k
                for k, (version, updated) in expected.items()
                if k in entries
                and _live(entries[k], now)
                and (entries[k][F_VERSION], entries[k][F_UPDATED]) == (version, updated)
            }
            for key in same:
                del entries[key]
                self._pending.pop((ns, key), None)
            if same:
                if not entries:
                    doc.pop(ns, None)
                self._save(doc)
        return same

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        removed = 0
        with self._locked(exclusive=True) as doc:
            entries = doc.get(ns, {})
            changed = False
            for key in keys:
                raw = entries.pop(key, None)
                if raw is not None:
                    changed = True
                    removed += _live(raw, now)
                    self._pending.pop((ns, key), None)
            if changed:
                if not entries:
                    doc.pop(ns, None)
                self._save(doc)
        return removed

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        with self._locked(exclusive=False) as doc:
            keys = [
                key
                for key, raw in doc.get(ns, {}).items()
                if _live(raw, now) and glob_match(key, pattern)
            ]
        yield from keys

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        wanted = set(tags)
        with self._locked(exclusive=False) as doc:
            return {
                key
                for key, raw in doc.get(ns, {}).items()
                if _live(raw, now) and wanted.intersection(raw[F_TAGS])
            }

    def purge_expired(self, ns: str, *, now: float) -> int:
        with self._locked(exclusive=True) as doc:
            entries = doc.get(ns, {})
            dead = [key for key, raw in entries.items() if not _live(raw, now)]
            for key in dead:
                del entries[key]
            if dead:
                self._save(doc)
        return len(dead)

    def ping(self) -> None:
        with self._locked(exclusive=False):
            pass

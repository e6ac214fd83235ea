"""Object-per-key backend through fsspec: ``file:///dir`` and ``s3://bucket/prefix``.

Layout under the root, per namespace token (see :func:`prefect_memory.keys.ns_token`)::

    <root>/<ns>/e/<name>          the entry: b"PMR1", header length, msgpack header, value
    <root>/<ns>/a/<name>          access statistics (count, last access, sliding expiry)
    <root>/<ns>/t/<tag>/<name>    tag markers (hold the key when the name is hashed)

``<name>`` is the key percent-encoded into one path segment, or ``~sha256`` for keys too
long for one (the real key is inside the object). Objects are written whole and never
patched in place (S3 cannot), which is why access statistics live in their own small
objects: a read never rewrites the value, so it can never overwrite a newer write.
Every batch is one concurrent fsspec call (``cat``, ``cat_ranges``, ``pipe``; deletes on
S3 are concurrent ``DeleteObjects`` calls whose per-object errors are checked),
so S3 sees parallel requests instead of one round trip after another. Local writes go
to a temporary file first and are renamed into place.

Example:
    >>> import tempfile
    >>> from prefect_memory.plugins.fs import FsspecBackend
    >>> FsspecBackend.from_url("file://" + tempfile.mkdtemp()).protocol
    'file'
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import msgpack

from ..errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError
from ..keys import file_name, glob_match, key_from_file_name, literal_prefix, ns_token
from .base import Backend, Capabilities, Record, record_fields, record_from_fields

MAGIC = b"PMR1"
_HEAD = struct.Struct(">4sI")
_HEAD_READ = 8192


def pack_object(key: str, record: Record) -> bytes:
    """Serialize a record (with its key) into the bytes of one object."""
    header = msgpack.packb({"k": key, **record_fields(record)}, use_bin_type=True)
    return _HEAD.pack(MAGIC, len(header)) + header + record.value


def no_such_object(err: BaseException) -> bool:
    """Tell whether ``err`` says "this object does not exist" (and nothing worse).

    s3fs turns ``NoSuchKey`` *and* ``NoSuchBucket`` into ``FileNotFoundError``; only the
    first is a miss. A missing bucket read as "no entries" would make a replayed delete
    look done, so it stays an error.

    Example:
        >>> no_such_object(FileNotFoundError("k")), no_such_object(OSError("disk"))
        (True, False)
    """
    if not isinstance(err, FileNotFoundError):
        return False
    response = getattr(err.__cause__, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code != "NoSuchBucket"


def delete_errors(replies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-object failures of S3 ``DeleteObjects`` replies (a missing key is no failure).

    ``DeleteObjects`` answers 200 even when some objects were not deleted; s3fs's ``rm``
    drops those errors, so the batch delete checks them itself.

    Example:
        >>> delete_errors([{"Errors": [{"Key": "a", "Code": "NoSuchKey"},
        ...                            {"Key": "b", "Code": "InternalError"}]}, {}])
        [{'Key': 'b', 'Code': 'InternalError'}]
    """
    return [
        dict(error)
        for reply in replies
        for error in reply.get("Errors", ())
        if error.get("Code") != "NoSuchKey"
    ]


def unpack_header(data: bytes) -> tuple[dict[str, Any], int] | None:
    """Return ``(header, value offset)``, or ``None`` when ``data`` is too short to hold it."""
    if len(data) < _HEAD.size:
        return None
    magic, size = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise BackendError("object is not a prefect-memory entry (bad magic)")
    end = _HEAD.size + size
    if len(data) < end:
        return None
    return msgpack.unpackb(data[_HEAD.size : end], raw=False), end


def _record(header: dict[str, Any], value: bytes, stats: dict[str, Any] | None) -> Record:
    record = record_from_fields(header, value)
    if stats:
        record.access_count = stats["n"]
        record.last_access = max(record.last_access, stats["a"])
        if stats.get("x") is not None:
            record.expires_at = stats["x"]
    return record


#: S3 operations that write (their failed attempts may land late).
_S3_WRITES = (
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
)


class FsspecBackend(Backend):
    """Entries as objects in any fsspec filesystem (local folder, S3 through s3fs, ...).

    Args:
        url: ``file:///absolute/dir`` or ``s3://bucket/prefix`` (any fsspec URL works).
        storage_options: Passed to fsspec (for S3: ``key``, ``secret``,
            ``client_kwargs={"endpoint_url": ...}``...).
        timeout: Connect and read timeout in seconds for network filesystems.
        retries: Attempts s3fs makes per S3 request (``None``: its default, 5, with
            backoff). A retried read timeout costs another ``timeout``, so ``1`` makes a
            stalled server fail within about ``timeout`` (retry above it instead, with
            :class:`~prefect_memory.Retry`). The filesystem is then this backend's own.
    """

    scheme: ClassVar[str] = "file"
    capabilities: ClassVar[Capabilities] = Capabilities()
    _transient = ("_fs",)

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        retries: int | None = None,
    ) -> None:
        super().__init__()
        if "://" not in url:
            raise ConfigError(f"expected an fsspec URL like s3://bucket/prefix, got {url!r}")
        if retries is not None and (isinstance(retries, bool) or int(retries) < 1):
            raise ConfigError(f"retries must be a positive number of attempts, got {retries!r}")
        self.url = url
        self.protocol = url.split("://", 1)[0].lower()
        self.storage_options = dict(storage_options or {})
        self.timeout = float(timeout)
        self.retries = None if retries is None else int(retries)
        self._fs: Any = None
        self._root: str | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FsspecBackend:
        """Build from ``file:///dir`` or ``s3://bucket/prefix`` (options: see the class)."""
        unknown = set(options) - {"storage_options", "timeout", "retries"}
        if unknown:
            raise ConfigError(f"unknown options for {url!r}: {', '.join(sorted(unknown))}")
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"FsspecBackend({self.url!r})"

    # -- filesystem ---------------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec filesystem, created on first use."""
        if self._fs is None:
            with self._lock:
                if self._fs is None:
                    self._fs, self._root = self._connect()
        return self._fs

    @property
    def root(self) -> str:
        """The root path inside the filesystem."""
        _ = self.fs
        assert self._root is not None
        return self._root

    def _connect(self) -> tuple[Any, str]:
        import fsspec

        options = dict(self.storage_options)
        if self.protocol == "s3":
            config = dict(options.pop("config_kwargs", {}) or {})
            config.setdefault("connect_timeout", self.timeout)
            config.setdefault("read_timeout", self.timeout)
            config.setdefault("retries", {"max_attempts": 2, "mode": "standard"})
            options["config_kwargs"] = config
            if self.retries is not None:  # an attribute of the instance: not a shared one
                options["skip_instance_cache"] = True
        try:
            fs, root = fsspec.core.url_to_fs(self.url, **options)
        except ImportError as err:
            raise ConfigError(f"{self.protocol}:// needs an fsspec implementation: {err}") from err
        root = root.rstrip("/")
        if self.retries is not None and self.protocol == "s3":
            fs.retries = self.retries
        if self._is_local(fs):
            os.makedirs(root, exist_ok=True)
        return fs, root

    @staticmethod
    def _is_local(fs: Any) -> bool:
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(fs, LocalFileSystem)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (BackendError, ConfigError):
            raise
        except TimeoutError as err:
            raise BackendTimeout(f"{self.url}: {what} timed out: {err}") from err
        except PermissionError as err:
            raise BackendError(f"{self.url}: {what} was refused: {err}") from err
        except (ConnectionError, OSError) as err:
            raise BackendUnavailable(f"{self.url}: {what} failed: {err}") from err
        except Exception as err:  # botocore/aiohttp errors that s3fs does not translate
            name = type(err).__name__
            if "Connect" in name or "Endpoint" in name or "Timeout" in name:
                raise BackendUnavailable(f"{self.url}: {what} failed: {name}: {err}") from err
            raise BackendError(f"{self.url}: {what} failed: {name}: {err}") from err

    def _entry(self, ns: str, key: str) -> str:
        return f"{self.root}/{ns_token(ns)}/e/{file_name(key)}"

    def _stats(self, ns: str, key: str) -> str:
        return f"{self.root}/{ns_token(ns)}/a/{file_name(key)}"

    def _marker(self, ns: str, tag: str, key: str) -> str:
        return f"{self.root}/{ns_token(ns)}/t/{file_name(tag)}/{file_name(key)}"

    def _cat(self, paths: list[str]) -> dict[str, bytes]:
        if not paths:
            return {}
        out = self.fs.cat(paths, on_error="return")
        if not isinstance(out, dict):
            out = {paths[0]: out}
        found: dict[str, bytes] = {}
        for path, data in out.items():
            if no_such_object(data):
                continue
            if isinstance(data, BaseException):
                raise data
            found[path] = data
        return found

    @property
    def retried_writes(self) -> int:
        """S3 write attempts that failed and were retried by botocore or s3fs."""
        return int(getattr(self._fs, "_pm_retried_writes", 0))

    def _watch_retries(self, fs: Any) -> None:
        """Count failed S3 write attempts (botocore's ``needs-retry`` event per attempt).

        Also drops botocore's ``Expect: 100-continue`` on uploads: aiohttp waits for the
        ``100 Continue`` with no timeout, so a server that accepted the connection and
        never answered held a put for two minutes whatever ``timeout`` said.
        """
        s3 = getattr(fs, "_s3", None)
        if s3 is None:
            fs.connect()
            s3 = fs._s3
        if getattr(s3, "_pm_watched", False):
            return
        from botocore.handlers import add_expect_header

        s3.meta.events.unregister("before-call.s3", add_expect_header)

        def counted(caught_exception: Any = None, response: Any = None, **_: Any) -> None:
            status = getattr(response[0], "status_code", 0) if response else 0
            if caught_exception is not None or status >= 500:
                fs._pm_retried_writes = getattr(fs, "_pm_retried_writes", 0) + 1
            return None  # (a value would be taken as the delay before the next attempt)

        for op in _S3_WRITES:
            s3.meta.events.register(f"needs-retry.s3.{op}", counted, unique_id=f"pm-{op}")
        s3._pm_watched = True

    def _write(self, blobs: dict[str, bytes]) -> None:
        if not blobs:
            return
        if not self._is_local(self.fs):
            if self.protocol == "s3":
                self._watch_retries(self.fs)
            self.fs.pipe(blobs)
            return
        for path, data in blobs.items():
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def _rm(self, paths: list[str]) -> None:
        if not paths:
            return
        if self._is_local(self.fs):
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return
        if self.protocol == "s3":
            self._watch_retries(self.fs)
            self._s3_delete(paths)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(paths)

    def _s3_delete(self, paths: list[str]) -> None:
        """Delete objects with concurrent ``DeleteObjects`` calls, checking every reply."""
        import asyncio

        from fsspec.asyn import sync

        fs = self.fs
        calls: list[tuple[str, list[str]]] = []
        by_bucket: dict[str, list[str]] = {}
        for path in paths:
            bucket, key, _version = fs.split_path(path)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            calls += [(bucket, keys[i : i + 1000]) for i in range(0, len(keys), 1000)]

        async def delete_all() -> list[dict[str, Any]]:
            return await asyncio.gather(*(
                fs._call_s3("delete_objects", Bucket=bucket, Delete={
                    "Objects": [{"Key": key} for key in keys], "Quiet": True,
                })
                for bucket, keys in calls
            ))  # fmt: skip

        try:
            replies = sync(fs.loop, delete_all)
        finally:
            for parent in {p.rsplit("/", 1)[0] for p in paths}:
                fs.invalidate_cache(parent)
        failed = delete_errors(replies)
        if failed:
            first = failed[0]
            raise OSError(
                f"{len(failed)} of {len(paths)} objects were not deleted, e.g. "
                f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message', '')}".rstrip()
            )

    def _heads(self, paths: list[str]) -> dict[str, tuple[dict[str, Any], bytes]]:
        """Headers of existing objects, read with ranged requests (values left out)."""
        if not paths:
            return {}
        parts = self.fs.cat_ranges(paths, [0] * len(paths), [_HEAD_READ] * len(paths))
        out: dict[str, tuple[dict[str, Any], bytes]] = {}
        retry: list[str] = []
        for path, data in zip(paths, parts, strict=True):
            if isinstance(data, BaseException):
                if no_such_object(data):
                    continue
                raise data
            parsed = unpack_header(data)
            if parsed is None:
                retry.append(path)
            else:
                out[path] = (parsed[0], b"")
        for path, data in self._cat(retry).items():
            parsed = unpack_header(data)
            if parsed is not None:
                out[path] = (parsed[0], b"")
        return out

    def _load(
        self, ns: str, keys: Sequence[str], *, values: bool
    ) -> dict[str, tuple[Record, dict[str, Any] | None]]:
        entries = {self._entry(ns, k): k for k in keys}
        stats = {self._stats(ns, k): k for k in keys}
        if values:
            blobs = self._cat([*entries, *stats])
            heads: dict[str, tuple[dict[str, Any], bytes]] = {}
            for path in entries:
                data = blobs.get(path)
                if data is None:
                    continue
                parsed = unpack_header(data)
                if parsed is None:
                    raise BackendError(f"{path}: truncated entry")
                heads[path] = (parsed[0], data[parsed[1] :])
        else:
            heads = self._heads(list(entries))
            blobs = self._cat([self._stats(ns, entries[p]) for p in heads])
        out: dict[str, tuple[Record, dict[str, Any] | None]] = {}
        for path, (header, value) in heads.items():
            key = entries[path]
            if header.get("k") != key:  # a hash collision or a foreign object
                continue
            raw_stats = blobs.get(self._stats(ns, key))
            stat = msgpack.unpackb(raw_stats) if raw_stats else None
            out[key] = (_record(header, value, stat), stat)
        return out

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        if not keys:
            return {}
        with self._errors("read"):
            loaded = self._load(ns, keys, values=True)
            out = {k: r for k, (r, _) in loaded.items() if not r.expired(now)}
            if touch and out:
                touched = {k: r.touched(now) for k, r in out.items()}
                self._write(
                    {
                        self._stats(ns, k): msgpack.packb(
                            {"n": r.access_count, "a": now, "x": r.expires_at}
                        )
                        for k, r in touched.items()
                    }
                )
                out = touched
        return out

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        with self._errors("read"):
            loaded = self._load(ns, keys, values=False)
        return {k for k, (r, _) in loaded.items() if not r.expired(now)}

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        if not records:
            return
        with self._errors("write"):
            old = self._load(ns, list(records), values=False)
            blobs: dict[str, bytes] = {}
            stale: list[str] = []
            for key, record in records.items():
                previous, stat = old.get(key, (None, None))
                merged = record.merged_over(previous, now)
                blobs[self._entry(ns, key)] = pack_object(key, merged)
                marker_body = key.encode() if file_name(key).startswith("~") else b""
                for tag in merged.tags:
                    blobs[self._marker(ns, tag, key)] = marker_body
                if previous is not None:
                    stale.extend(
                        self._marker(ns, tag, key)
                        for tag in previous.tags
                        if tag not in merged.tags
                    )
                    if stat is not None:
                        if previous.expired(now):
                            stale.append(self._stats(ns, key))
                        else:  # keep the count, forget a sliding expiry of the old value
                            blobs[self._stats(ns, key)] = msgpack.packb(
                                {"n": merged.access_count, "a": merged.last_access, "x": None}
                            )
            self._write(blobs)
            self._rm(stale)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        if not keys:
            return 0
        with self._errors("delete"):
            old = self._load(ns, keys, values=False)
            paths: list[str] = []
            for key, (record, _) in old.items():
                paths.append(self._entry(ns, key))
                paths.append(self._stats(ns, key))
                paths.extend(self._marker(ns, tag, key) for tag in record.tags)
            self._rm(paths)
        return sum(1 for record, _ in old.values() if not record.expired(now))

    def _names(self, folder: str) -> list[str]:
        try:
            found = self.fs.find(folder)
        except FileNotFoundError as err:
            if not no_such_object(err):
                raise
            return []
        return [p.rsplit("/", 1)[-1] for p in found if not p.rsplit("/", 1)[-1].startswith(".tmp-")]

    def _resolve(self, ns: str, names: list[str], marker_dir: str | None = None) -> list[str]:
        keys: list[str] = []
        hashed: list[str] = []
        for name in names:
            key = key_from_file_name(name)
            if key is None:
                hashed.append(name)
            else:
                keys.append(key)
        if hashed:
            if marker_dir is not None:
                blobs = self._cat([f"{marker_dir}/{n}" for n in hashed])
                keys.extend(b.decode() for b in blobs.values())
            else:
                heads = self._heads([f"{self.root}/{ns_token(ns)}/e/{n}" for n in hashed])
                keys.extend(header["k"] for header, _ in heads.values())
        return keys

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        prefix = literal_prefix(pattern)
        with self._errors("list"):
            names = self._names(f"{self.root}/{ns_token(ns)}/e")
            keys = [k for k in self._resolve(ns, names) if k.startswith(prefix)]
            keys = [k for k in keys if glob_match(k, pattern)]
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            yield from sorted(self.exists_many(ns, batch, now=now))

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        found: set[str] = set()
        with self._errors("list"):
            for tag in tags:
                folder = f"{self.root}/{ns_token(ns)}/t/{file_name(tag)}"
                found.update(self._resolve(ns, self._names(folder), marker_dir=folder))
        return found

    def purge_expired(self, ns: str, *, now: float) -> int:
        with self._errors("list"):
            names = self._names(f"{self.root}/{ns_token(ns)}/e")
            keys = self._resolve(ns, names)
        removed = 0
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            with self._errors("read"):
                loaded = self._load(ns, batch, values=False)
            dead = [k for k, (r, _) in loaded.items() if r.expired(now)]
            if dead:
                self.delete_many(ns, dead, now=now)
                removed += len(dead)
        return removed

    def ping(self) -> None:
        with self._errors("ping"):
            self.fs.ls(self.root.split("/", 1)[0] if self.protocol == "s3" else self.root)

    def close(self) -> None:
        self._fs = None

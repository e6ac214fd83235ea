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

``put_absent_many`` and ``delete_if_unchanged`` are atomic per key against other processes
(``capabilities.atomic_moves``) on S3 and in local folders (see
:mod:`prefect_memory.plugins.fs_atomic`):

- S3: conditional requests, sent concurrently per batch. An absent key is created with
  ``PutObject If-None-Match: *``; an expired entry is replaced with ``If-Match`` on the
  ETag of the object read; an entry is deleted with ``DeleteObject If-Match`` on the ETag
  of the object whose ``(version, updated_at)`` matched. AWS S3 and SeaweedFS enforce
  these conditions; MinIO's community edition ignores ``If-Match`` on ``DeleteObject``. So
  before relying on them the backend checks once (per process, endpoint and bucket) that
  the server refuses what it must (:func:`~prefect_memory.plugins.fs_atomic.probe`);
  where it does not, these two methods check then act and ``atomic_moves`` is ``False``
  (a warning says so). ``conditional_writes=False`` skips the check and the conditions.
- Local folders: every write and delete of entries takes an exclusive ``flock`` on the
  namespace folder (readers do not lock and never see a key missing); new entries are
  linked into place (``os.link`` fails if the name exists). Every writer must be this
  code on a filesystem whose ``flock`` works across its clients (not every network mount).

Access statistics name the write they count (its version and update time), so statistics
left behind by a touch racing a delete never apply to a later entry of the same key.

Example:
    >>> import tempfile
    >>> from prefect_memory.plugins.fs import FsspecBackend
    >>> FsspecBackend.from_url("file://" + tempfile.mkdtemp()).protocol
    'file'
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import msgpack
from pydantic import SecretStr

from ..errors import (
    BackendError,
    BackendNotFound,
    BackendPermissionError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidKeyError,
    MissingDependencyError,
    PrefectMemoryError,
)
from ..keys import file_name, glob_match, key_from_file_name, literal_prefix, ns_token
from ..urls import Secret
from ..urls import _unmask as _unmask  # old pickles of SecretOption name plugins.fs._unmask
from . import fs_atomic as atomic
from .base import (
    F_ACCESS_COUNT,
    F_ACCESSED,
    F_CREATED,
    F_EXPIRES,
    F_KEY,
    F_SLIDING,
    F_TAGS,
    F_TTL,
    F_UPDATED,
    F_VERSION,
    Backend,
    Capabilities,
    Record,
    record_fields,
    record_from_fields,
)

MAGIC = b"PMR1"
_HEAD = struct.Struct(">4sI")
_HEAD_READ = 8192
#: Rounds of conditional puts a put_absent_many tries for a key it finds expired or gone.
_MOVE_ATTEMPTS = 4
#: Whether an S3 server enforces conditional requests, per (endpoint, bucket), once probed.
_ENFORCED: dict[tuple[str, str], bool] = {}
#: Names listed per request (S3 ``ListObjectsV2`` returns at most 1000; local: per page).
_PAGE = 1000
#: Longest S3 object key, in UTF-8 bytes (AWS; SeaweedFS answers ``KeyTooLongError`` past it).
S3_MAX_KEY_BYTES = 1024
#: Longest file name where the filesystem does not say (``NAME_MAX`` of Linux and macOS).
_NAME_MAX = 255
#: Foreign objects warned about per backend (each once), at most.
_WARN_MAX = 1000
#: S3 error codes of refused credentials or operations (retrying cannot help).
_S3_REFUSED = frozenset({
    "AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AccountProblem", "InvalidSecurity",
})  # fmt: skip
#: ``storage_options`` names (top level or in ``client_kwargs``) whose values are credentials.
_SECRET_OPTION = re.compile(r"secret|token|password|passwd|credential|account_key|sas", re.I)
log = logging.getLogger(__name__)


#: The credential wrapper of ``storage_options`` (one class for every store; the old
#: name and ``_unmask``, which old pickles name, stay importable here).
SecretOption = Secret


def hide_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every credential (``secret``, ``token``, ``password``...; also in
    ``client_kwargs``) wrapped in :class:`~prefect_memory.urls.Secret`.

    Example:
        >>> hide_secrets({"key": "AK", "secret": "s", "client_kwargs": {"aws_session_token": "t"}})
        {'key': 'AK', 'secret': Secret('**********'), \
'client_kwargs': {'aws_session_token': Secret('**********')}}
    """
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name == "client_kwargs" and isinstance(value, Mapping):
            value = hide_secrets(value)
        elif isinstance(value, SecretStr):
            value = Secret(value.get_secret_value())
        elif isinstance(value, str) and _SECRET_OPTION.search(name):
            value = Secret(value)
        out[name] = value
    return out


def reveal_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`hide_secrets`: plain values, for the filesystem's constructor."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name == "client_kwargs" and isinstance(value, Mapping):
            value = reveal_secrets(value)
        elif isinstance(value, (Secret, SecretStr)):
            value = value.get_secret_value()
        out[name] = value
    return out


def _drop_tracebacks(results: Iterable[Any]) -> None:
    """Drop the tracebacks of the exceptions an fsspec batch call returned.

    fsspec returns the exceptions it caught (``on_error="return"``); each one's traceback
    holds the frame that caught it, that frame the results (the values read) and, through
    ``f_back``, every caller's frame: a reference cycle that kept whole batches of values
    alive until the next full garbage collection.
    """
    for item in results:
        if isinstance(item, BaseException):
            item.__traceback__ = None


def pack_object(key: str, record: Record) -> bytes:
    """Serialize a record (with its key) into the bytes of one object."""
    header = msgpack.packb({F_KEY: key, **record_fields(record)}, use_bin_type=True)
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


_NUMBER = (int, float)
#: The type of each header field (``None`` allowed where the tuple says so).
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    F_KEY: (str,), F_CREATED: _NUMBER, F_UPDATED: _NUMBER, F_ACCESSED: _NUMBER,
    F_ACCESS_COUNT: (int,), F_EXPIRES: (*_NUMBER, type(None)), F_TTL: (*_NUMBER, type(None)),
    F_SLIDING: (bool,), F_TAGS: (list, tuple), F_VERSION: (int,),
}  # fmt: skip


def unpack_header(data: bytes) -> tuple[dict[str, Any], int] | None:
    """Return ``(header, value offset)``, or ``None`` when ``data`` is too short to hold it.

    Raises:
        BackendError: ``data`` is not a prefect-memory entry (another program's object, or
            a corrupt one): bad magic, an unreadable header, or a field of the wrong type.

    Example:
        >>> unpack_header(b"PMR1") is None
        True
        >>> unpack_header(b"%PDF-1.7 not ours")
        Traceback (most recent call last):
        ...
        prefect_memory.errors.BackendError: object is not a prefect-memory entry (bad magic)
    """
    if len(data) < _HEAD.size:
        return None
    magic, size = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise BackendError("object is not a prefect-memory entry (bad magic)")
    end = _HEAD.size + size
    if len(data) < end:
        return None
    try:
        header = msgpack.unpackb(data[_HEAD.size : end], raw=False)
    except Exception as err:  # msgpack raises several types (ExtraData, StackError, ...)
        raise BackendError(
            f"object is not a prefect-memory entry (unreadable header: {type(err).__name__})"
        ) from None
    problem = _header_problem(header)
    if problem:
        raise BackendError(f"object is not a prefect-memory entry ({problem})")
    return header, end


def unpack_header_needs_more(data: bytes) -> bool:
    """Tell whether ``data`` (the first bytes of an object) ends before its header does.

    Example:
        >>> unpack_header_needs_more(b"PMR1"), unpack_header_needs_more(b"junk, but 8+ bytes")
        (True, False)
    """
    if len(data) < _HEAD.size:
        return data == MAGIC[: len(data)] or data.startswith(MAGIC)
    magic, size = _HEAD.unpack_from(data)
    return magic == MAGIC and len(data) < _HEAD.size + size


def _header_problem(header: Any) -> str | None:
    """Why ``header`` is not an entry header (``None``: it is one)."""
    if not isinstance(header, dict):
        return f"header is a {type(header).__name__}, not a map"
    for name, types in _HEADER_TYPES.items():
        value = header.get(name, ...)
        if (
            value is ...
            or not isinstance(value, types)
            or (isinstance(value, bool) and bool not in types)
        ):
            found = "missing" if value is ... else type(value).__name__
            return f"header field {name!r} is {found}"
    if not all(isinstance(tag, str) for tag in header[F_TAGS]):
        return f"header field {F_TAGS!r} holds a tag that is not a str"
    return None


def parse_stats(data: bytes | None) -> dict[str, Any] | None:
    """The access statistics in ``data``; ``None`` if absent or not statistics (foreign).

    Example:
        >>> parse_stats(stats_of(Record(b"", 1.0, 2.0, 3.0), expires_at=None))["u"]
        2.0
        >>> parse_stats(b"junk") is None
        True
    """
    if not data:
        return None
    try:
        stats = msgpack.unpackb(data)
    except Exception:  # foreign bytes: no statistics
        return None
    if not isinstance(stats, dict):
        return None
    if not isinstance(stats.get(F_ACCESS_COUNT), int):
        return None
    if not isinstance(stats.get(F_ACCESSED), _NUMBER):
        return None
    if not isinstance(stats.get(F_EXPIRES), (*_NUMBER, type(None))):
        return None
    return stats


def stats_of(record: Record, *, expires_at: float | None) -> bytes:
    """The access statistics object of ``record`` (tied to this write by its token).

    Example:
        >>> r = Record(b"", 1.0, 2.0, 3.0, access_count=4, version=5)
        >>> msgpack.unpackb(stats_of(r, expires_at=None))
        {'n': 4, 'a': 3.0, 'x': None, 'r': 5, 'u': 2.0}
    """
    return msgpack.packb(
        {
            F_ACCESS_COUNT: record.access_count,
            F_ACCESSED: record.last_access,
            F_EXPIRES: expires_at,
            F_VERSION: record.version,
            F_UPDATED: record.updated_at,
        }
    )


def _stats_match(header: dict[str, Any], stats: dict[str, Any]) -> bool:
    """Statistics apply to the entry whose write they name (older ones name none)."""
    version, updated = header[F_VERSION], header[F_UPDATED]
    return stats.get(F_VERSION, version) == version and stats.get(F_UPDATED, updated) == updated


def _record(header: dict[str, Any], value: bytes, stats: dict[str, Any] | None) -> Record:
    record = record_from_fields(header, value)
    if stats and _stats_match(header, stats):
        record.access_count = stats[F_ACCESS_COUNT]
        record.last_access = max(record.last_access, stats[F_ACCESSED])
        if stats.get(F_EXPIRES) is not None:
            record.expires_at = stats[F_EXPIRES]
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
            ``client_kwargs={"endpoint_url": ...}``...). Credentials (``secret``,
            ``token``, ``password``..., plain or ``SecretStr``) are kept as
            :class:`~prefect_memory.urls.Secret` and unwrapped only to build the filesystem.
        timeout: Connect and read timeout in seconds for network filesystems.
        retries: Attempts s3fs makes per S3 request (``None``: its default, 5, with
            backoff). A retried read timeout costs another ``timeout``, so ``1`` makes a
            stalled server fail within about ``timeout`` (retry above it instead, with
            :class:`~prefect_memory.Retry`). The filesystem is then this backend's own.
        conditional_writes: S3 only: make ``put_absent_many`` and ``delete_if_unchanged``
            atomic with conditional requests (``If-None-Match`` / ``If-Match``) if the
            server enforces them (checked once). ``False``: never use them (check then
            act, ``capabilities.atomic_moves`` is ``False``).
    """

    scheme: ClassVar[str] = "file"
    _transient = ("_fs", "_warned", "_name_limit")

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        retries: int | None = None,
        conditional_writes: bool = True,
    ) -> None:
        super().__init__()
        if "://" not in url:
            raise ConfigError(f"expected an fsspec URL like s3://bucket/prefix, got {url!r}")
        if retries is not None and (isinstance(retries, bool) or int(retries) < 1):
            raise ConfigError(f"retries must be a positive number of attempts, got {retries!r}")
        self.url = url
        self.protocol = url.split("://", 1)[0].lower()
        self.storage_options = hide_secrets(storage_options or {})
        self.timeout = float(timeout)
        self.retries = None if retries is None else int(retries)
        self.conditional_writes = bool(conditional_writes)
        self._fs: Any = None
        self._root: str | None = None
        self._warned: set[str] | None = None
        self._name_limit: int | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FsspecBackend:
        """Build from ``file:///dir`` or ``s3://bucket/prefix`` (options: see the class)."""
        unknown = set(options) - {"storage_options", "timeout", "retries", "conditional_writes"}
        if unknown:
            raise ConfigError(f"unknown options for {url!r}: {', '.join(sorted(unknown))}")
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"FsspecBackend({self.shown_url!r})"

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """What this URL's store can do: ``atomic_moves`` in local folders, and on S3 when
        the server enforces conditional requests (checked once, on first use).

        Example:
            >>> import tempfile
            >>> FsspecBackend("file://" + tempfile.mkdtemp()).capabilities.atomic_moves
            True
            >>> FsspecBackend("memory://x").capabilities.atomic_moves
            False
        """
        try:
            atomic_moves = self._atomic is not None
        except Exception:  # the S3 check could not run: nothing is promised
            atomic_moves = False
        metadata_reads = self.protocol in ("file", "local", "s3", "s3a")  # see meta_many
        local = self.protocol in ("file", "local", "memory")
        return Capabilities(atomic_moves=atomic_moves, metadata_reads=metadata_reads, local=local)

    @property
    def _atomic(self) -> str | None:
        """How moves are made atomic: ``"s3"``, ``"local"`` or ``None`` (check then act)."""
        if self.protocol in ("s3", "s3a"):
            if not getattr(self, "conditional_writes", True):
                return None
            return "s3" if self._s3_enforces_conditions() else None
        return "local" if self._local_locks else None

    @property
    def _local_locks(self) -> bool:
        """Whether writers of this store take the namespace folder lock (local folders)."""
        return self.protocol in ("file", "local") and atomic.local_locks_available()

    def _s3_enforces_conditions(self) -> bool:
        """Whether the S3 server refuses failed conditions (probed once per process)."""
        client = self.storage_options.get("client_kwargs") or {}
        endpoint = str(client.get("endpoint_url") or self.storage_options.get("endpoint_url") or "")
        bucket = self.url.split("://", 1)[1].split("/", 1)[0]
        known = _ENFORCED.get((endpoint, bucket))
        if known is not None:
            return known
        from fsspec.asyn import sync

        with self._errors("conditional request check"):
            path = f"{self.root}/.pm-probe-{os.urandom(8).hex()}"
            enforced = bool(sync(self.fs.loop, atomic.probe, self.fs, path))
        if not enforced:
            log.warning(
                "%s: the S3 server does not enforce conditional requests (If-None-Match, "
                "If-Match); put_absent_many and delete_if_unchanged check then act",
                self.url,
            )
        _ENFORCED[(endpoint, bucket)] = enforced
        return enforced

    def _ns_lock(self, ns: str) -> contextlib.AbstractContextManager[None]:
        """The writers' lock of a namespace folder (local folders; nothing elsewhere)."""
        if not self._local_locks:
            return contextlib.nullcontext()
        return atomic.folder_lock(self._ns_dir(ns))

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

        options = reveal_secrets(self.storage_options)
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
        except ImportError as err:  # e.g. s3fs not installed
            hint = "pip install 'prefect-memory[s3]'" if self.protocol == "s3" else str(err)
            raise MissingDependencyError(
                f"{self.protocol}:// needs an fsspec implementation; install it with: {hint}"
            ) from err
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
        """Translate filesystem errors: transient ones (refused, reset, timed out) into
        :class:`BackendUnavailable`, the ones retrying cannot fix into
        :class:`~prefect_memory.errors.PermanentBackendError` (a missing bucket, refused
        credentials) or :class:`InvalidKeyError` (a name too long for the store)."""
        try:
            yield
        except PrefectMemoryError:  # ours already (e.g. a foreign object refused by name)
            raise
        except TimeoutError as err:
            raise BackendTimeout(f"{self.url}: {what} timed out: {err}") from err
        except Exception as err:
            raise self._translate(err, what) from err

    def _translate(self, err: Exception, what: str) -> PrefectMemoryError:
        """Our error for the filesystem's ``err`` (see :meth:`_errors`)."""
        permanent = self._permanent(err, what)
        if permanent is not None:
            return permanent
        if isinstance(err, (ConnectionError, OSError)):
            return BackendUnavailable(f"{self.url}: {what} failed: {err}")
        name = type(err).__name__  # botocore/aiohttp errors that s3fs does not translate
        if "Connect" in name or "Endpoint" in name or "Timeout" in name:
            return BackendUnavailable(f"{self.url}: {what} failed: {name}: {err}")
        return BackendError(f"{self.url}: {what} failed: {name}: {err}")

    def _permanent(self, err: BaseException, what: str) -> PrefectMemoryError | None:
        """The error to raise for ``err`` if retrying cannot fix it (``None``: it may)."""
        code = atomic.s3_code(err)
        bucket = self.url.split("://", 1)[1].split("/", 1)[0]
        if code == "NoSuchBucket":
            return BackendNotFound(
                f"{self.url}: {what} failed: S3 bucket {bucket!r} does not exist: "
                "create it or fix the URL"
            )
        if code in _S3_REFUSED:
            return BackendPermissionError(
                f"{self.url}: {what} was refused by S3 ({code}): check the access key, its "
                f"secret and the key's permissions on bucket {bucket!r}"
            )
        if code == "KeyTooLongError" or getattr(err, "errno", None) == errno.ENAMETOOLONG:
            limit = (
                f"S3 object keys hold at most {S3_MAX_KEY_BYTES} bytes"
                if self.protocol in ("s3", "s3a")
                else f"this filesystem allows names of at most {self._name_max()} bytes"
            )
            return InvalidKeyError(
                f"{self.url}: {what} failed: a path is too long for this store ({limit}); "
                "use a shorter namespace or URL prefix"
            )
        if isinstance(err, PermissionError):
            return BackendPermissionError(f"{self.url}: {what} was refused: {err}")
        return None

    # -- paths ----------------------------------------------------------------------------------
    def _name_max(self) -> int:
        """Longest file name of the local filesystem under the root, in bytes."""
        limit = getattr(self, "_name_limit", None)
        if limit is None:
            try:
                limit = int(os.pathconf(self.root, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):
                limit = _NAME_MAX
            self._name_limit = limit
        return limit

    def _ns_dir(self, ns: str) -> str:
        """The folder of namespace ``ns``, checked to fit the store before any request.

        Raises:
            InvalidKeyError: The namespace's encoded name is longer than a file name may
                be (local folders), or leaves no room in an S3 object key (1024 bytes) for
                an entry's name (200 characters at most, see
                :func:`~prefect_memory.keys.file_name`).
        """
        token = ns_token(ns)
        folder = f"{self.root}/{token}"
        size = len(token.encode("utf-8"))
        if self.protocol in ("s3", "s3a"):
            path = f"{folder}/e/{'x' * 200}".split("/", 1)[-1]  # the key inside the bucket
            limit = S3_MAX_KEY_BYTES
            fits = len(path.encode("utf-8")) <= limit
            where = f"S3 object keys hold at most {limit} bytes"
        elif self._is_local(self.fs):
            limit = self._name_max()
            fits = size <= limit
            where = f"this filesystem allows names of at most {limit} bytes"
        else:
            return folder
        if not fits:
            raise InvalidKeyError(
                f"namespace {ns[:40]!r}{'...' if len(ns) > 40 else ''} is too long for "
                f"{self.url}: its encoded name has {size} bytes and {where} (with the URL "
                "prefix and an entry's name); use a shorter namespace"
            )
        return folder

    def _fits(self, path: str) -> str:
        """``path``, checked against the S3 limit of 1024 bytes per object key."""
        if self.protocol in ("s3", "s3a"):
            size = len(path.split("/", 1)[-1].encode("utf-8"))
            if size > S3_MAX_KEY_BYTES:
                raise InvalidKeyError(
                    f"{self.url}: object key of {size} bytes is too long for S3 (at most "
                    f"{S3_MAX_KEY_BYTES}): use a shorter namespace, tag or URL prefix"
                )
        return path

    def _entry(self, ns: str, key: str) -> str:
        return f"{self._ns_dir(ns)}/e/{file_name(key)}"

    def _stats(self, ns: str, key: str) -> str:
        return f"{self._ns_dir(ns)}/a/{file_name(key)}"

    def _marker(self, ns: str, tag: str, key: str) -> str:
        return self._fits(f"{self._ns_dir(ns)}/t/{file_name(tag)}/{file_name(key)}")

    def _foreign(self, path: str, why: str) -> None:
        """Warn, once per object, that ``path`` is not ours and is skipped."""
        warned = getattr(self, "_warned", None)
        if warned is None:
            warned = self._warned = set()
        if path in warned or len(warned) >= _WARN_MAX:
            return
        warned.add(path)
        log.warning("%s: skipped %s: %s", self.url, path, why)

    def _cat(self, paths: list[str]) -> dict[str, bytes]:
        """The bytes of the objects of ``paths`` that exist (one concurrent round).

        On S3 one ``GetObject`` per object: s3fs's ``cat`` first asks each object's size
        (``HeadObject``, and a ``ListObjectsV2`` for every object that is missing).
        """
        if not paths:
            return {}
        if self.protocol in ("s3", "s3a"):
            fs = self.fs

            async def read(path: str) -> Any:
                got = await atomic.get_object(fs, path)
                return FileNotFoundError(path) if got is None else got[1]

            results = atomic.run_all(fs, [functools.partial(read, path) for path in paths])
            out: Any = dict(zip(paths, results, strict=True))
        else:
            out = self.fs.cat(paths, on_error="return")
        if not isinstance(out, dict):
            out = {paths[0]: out}
        _drop_tracebacks(out.values())
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

    def _header(self, path: str, data: bytes) -> tuple[dict[str, Any], int] | None:
        """:func:`unpack_header` of an object where foreign objects are skipped (listings,
        existence checks, writes over them): ``None`` (and a warning) for one of those."""
        try:
            return unpack_header(data)
        except BackendError as err:
            self._foreign(path, str(err))
            return None

    def _first_bytes(self, paths: list[str]) -> list[Any]:
        """The first bytes of each object (or the exception reading it raised).

        On S3 one ranged ``GetObject`` per object, concurrently (s3fs's ``cat_ranges``
        first asks each object's size, with a ``HeadObject`` and a ``ListObjectsV2``).
        """
        fs = self.fs
        if self.protocol not in ("s3", "s3a"):
            parts = list(fs.cat_ranges(paths, [0] * len(paths), [_HEAD_READ] * len(paths)))
            _drop_tracebacks(parts)
            return parts

        async def first(path: str) -> Any:
            got = await atomic.get_object(fs, path, _HEAD_READ)
            if got is None:
                return FileNotFoundError(path)
            return got[1]

        return atomic.run_all(fs, [functools.partial(first, path) for path in paths])

    def _heads(self, paths: list[str]) -> dict[str, tuple[dict[str, Any], bytes]]:
        """Headers of existing objects, read with ranged requests (values left out).

        Objects that are not entries (foreign, corrupt, truncated) are left out, each
        with one warning: to a listing or a write they are no entry.
        """
        if not paths:
            return {}
        parts = self._first_bytes(paths)
        out: dict[str, tuple[dict[str, Any], bytes]] = {}
        retry: list[str] = []
        for path, data in zip(paths, parts, strict=True):
            if isinstance(data, BaseException):
                if no_such_object(data):
                    continue
                raise data
            if unpack_header_needs_more(data):
                retry.append(path)
                continue
            parsed = self._header(path, data)
            if parsed is not None:
                out[path] = (parsed[0], b"")
        for path, data in self._cat(retry).items():
            parsed = self._header(path, data)
            if parsed is not None:
                out[path] = (parsed[0], b"")
            elif unpack_header_needs_more(data):
                self._foreign(path, "truncated: shorter than its header")
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
                try:
                    parsed = unpack_header(data)
                except BackendError as err:  # a read names the object that is not ours
                    raise BackendError(f"{path}: {err}") from None
                if parsed is None:
                    raise BackendError(f"{path}: truncated entry")
                heads[path] = (parsed[0], data[parsed[1] :])
        else:
            heads = self._heads(list(entries))
            blobs = self._cat([self._stats(ns, entries[p]) for p in heads])
        out: dict[str, tuple[Record, dict[str, Any] | None]] = {}
        for path, (header, value) in heads.items():
            key = entries[path]
            if header.get(F_KEY) != key:  # a hash collision or a foreign object
                continue
            stat = parse_stats(blobs.get(self._stats(ns, key)))
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
                        self._stats(ns, k): stats_of(r, expires_at=r.expires_at)
                        for k, r in touched.items()
                    }
                )
                out = touched
        return out

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """The live records of ``keys`` without values: each entry's header (its first
        bytes, or exactly as many as its header holds) and statistics, and the object's
        size from the same read (local folders: ``fstat``; S3: the ranged ``GetObject``'s
        ``Content-Range``), all of a batch in one concurrent round on S3. Other
        filesystems read whole entries (the base class's way)."""
        if not keys:
            return {}
        if self.protocol not in ("file", "local", "s3", "s3a"):
            return super().meta_many(ns, keys, now=now)
        heads: dict[str, tuple[bytes, int]] = {}  # entry path -> (first bytes, object size)
        with self._errors("read metadata"):
            entries = {self._entry(ns, k): k for k in keys}
            stats = {self._stats(ns, k): k for k in keys}
            if self.protocol in ("file", "local"):
                for path in entries:
                    try:
                        with open(path, "rb") as fh:
                            data = fh.read(_HEAD_READ)
                            if unpack_header_needs_more(data) and len(data) >= _HEAD.size:
                                end = _HEAD.size + _HEAD.unpack_from(data)[1]
                                data += fh.read(end - len(data))
                            heads[path] = (data, os.fstat(fh.fileno()).st_size)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                found = self._cat([p for p, k in stats.items() if self._entry(ns, k) in heads])
            else:
                fs = self.fs

                async def head(path: str) -> tuple[str, bytes, int] | None:
                    got = await atomic.get_object(fs, path, _HEAD_READ)
                    if (
                        got is not None
                        and _HEAD.size <= len(got[1]) < got[2]
                        and unpack_header_needs_more(got[1])
                    ):  # a header longer than the first read: read exactly up to its end
                        end = _HEAD.size + _HEAD.unpack_from(got[1])[1]
                        got = await atomic.get_object(fs, path, min(end, got[2]))
                    return got

                reads = [functools.partial(head, p) for p in entries]
                reads += [functools.partial(atomic.get_object, fs, p) for p in stats]
                results = atomic.run_all(fs, reads)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                found = {}
                for path, got in zip([*entries, *stats], results, strict=True):
                    if got is not None and path in entries:
                        heads[path] = (got[1], got[2])
                    elif got is not None:
                        found[path] = got[1]
        out: dict[str, Record] = {}
        for path, (data, size) in heads.items():
            key = entries[path]
            parsed = self._header(path, data)
            if parsed is None or parsed[0].get(F_KEY) != key:  # foreign, or another key's
                continue
            record = _record(parsed[0], b"", parse_stats(found.get(self._stats(ns, key))))
            if not record.expired(now):
                record.stored_size = size - parsed[1]
                out[key] = record
        return out

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        with self._errors("read"):
            loaded = self._load(ns, keys, values=False)
        return {k for k, (r, _) in loaded.items() if not r.expired(now)}

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        if not records:
            return
        with self._errors("write"), self._ns_lock(ns):
            old = self._load(ns, list(records), values=False)
            blobs: dict[str, bytes] = {}
            stale: list[str] = []
            for key, record in records.items():
                previous, stat = old.get(key, (None, None))
                merged = record.merged_over(previous, now)
                blobs[self._entry(ns, key)] = pack_object(key, merged)
                blobs.update(self._markers(ns, key, merged.tags))
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
                            blobs[self._stats(ns, key)] = stats_of(merged, expires_at=None)
            self._write(blobs)
            self._rm(stale)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        if not keys:
            return 0
        with self._errors("delete"), self._ns_lock(ns):
            old = self._load(ns, keys, values=False)
            self._rm(self._objects_of(ns, {k: r for k, (r, _) in old.items()}))
        return sum(1 for record, _ in old.values() if not record.expired(now))

    def _markers(self, ns: str, key: str, tags: Iterable[str]) -> dict[str, bytes]:
        """The tag marker objects of ``key`` (they hold the key when its name is hashed)."""
        body = key.encode() if file_name(key).startswith("~") else b""
        return {self._marker(ns, tag, key): body for tag in tags}

    def _objects_of(self, ns: str, records: Mapping[str, Record]) -> list[str]:
        """Every object of these entries: the entry, its statistics, its tag markers."""
        paths: list[str] = []
        for key, record in records.items():
            paths.append(self._entry(ns, key))
            paths.append(self._stats(ns, key))
            paths.extend(self._marker(ns, tag, key) for tag in record.tags)
        return paths

    # -- atomic moves ---------------------------------------------------------------------------
    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        """Write only the records whose key has no live entry; return the keys written.

        Atomic per key against other processes on S3 and in local folders (see the module
        docstring); other filesystems check then write (the base class's way).
        """
        if not records:
            return set()
        if self._atomic is None:
            return super().put_absent_many(ns, records, now=now)
        with self._errors("write"):
            if self._atomic == "local":
                with self._ns_lock(ns):
                    return self._local_put_absent(ns, records, now)
            return self._s3_put_absent(ns, records, now)

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        """Delete keys whose live entry still has the given ``(version, updated_at)``.

        Atomic per key against other processes on S3 and in local folders: an entry
        rewritten at any moment before the delete is never deleted.
        """
        if not expected:
            return set()
        if self._atomic is None:
            return super().delete_if_unchanged(ns, expected, now=now)
        tokens = {key: tuple(token) for key, token in expected.items()}
        return self._delete_checked(
            ns, list(tokens), lambda key, r: not r.expired(now) and r.token == tokens[key]
        )

    def _delete_checked(
        self, ns: str, keys: Sequence[str], check: Callable[[str, Record], bool]
    ) -> set[str]:
        """Delete the entries of ``keys`` that pass ``check``, each exactly as checked."""
        with self._errors("delete"):
            if self._atomic == "local":
                with self._ns_lock(ns):
                    old = self._load(ns, keys, values=False)
                    doomed = {k: r for k, (r, _) in old.items() if check(k, r)}
                    self._rm(self._objects_of(ns, doomed))
                return set(doomed)
            return self._s3_delete_checked(ns, keys, check)

    def _local_put_absent(self, ns: str, records: Mapping[str, Record], now: float) -> set[str]:
        """``put_absent_many`` in a local folder; the caller holds the namespace lock."""
        old = self._load(ns, list(records), values=False)
        written: dict[str, Record] = {}
        for key, record in records.items():
            previous = old.get(key, (None, None))[0]
            if previous is not None and not previous.expired(now):
                continue
            path, data = self._entry(ns, key), pack_object(key, record)
            if previous is not None:  # expired: replaced (no locking writer can interfere)
                self._write({path: data})
            elif not atomic.link_new(path, data):
                # An object that is not this key's entry (a foreign one, or one written by
                # a writer that does not lock): look again, and replace it unless it is live.
                again = self._load(ns, [key], values=False).get(key)
                if again is not None and not again[0].expired(now):
                    continue
                self._write({path: data})
            written[key] = record
        blobs: dict[str, bytes] = {}
        stale: list[str] = []
        for key, record in written.items():
            blobs.update(self._markers(ns, key, record.tags))
            if key in old:  # the expired entry it replaced: its statistics and other tags
                previous, stat = old[key]
                stale.extend(
                    self._marker(ns, t, key) for t in previous.tags if t not in record.tags
                )
                if stat is not None:
                    stale.append(self._stats(ns, key))
        self._write(blobs)
        self._rm(stale)
        return set(written)

    def _s3_read(
        self, ns: str, keys: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, Record], dict[str, str]]:
        """Entries of ``keys`` with the ETags of the objects read, in one concurrent round.

        Returns the ETag of every entry object found, the records of those that are this
        key's entry (statistics applied), and the ETag of every statistics object found.
        """
        fs = self.fs

        async def entry(path: str) -> tuple[str, bytes, int] | None:
            got = await atomic.get_object(fs, path, _HEAD_READ)
            if got is not None and unpack_header(got[1]) is None and got[2] > len(got[1]):
                got = await atomic.get_object(fs, path)  # a header longer than the first read
            return got

        reads = [functools.partial(entry, self._entry(ns, k)) for k in keys]
        reads += [functools.partial(atomic.get_object, fs, self._stats(ns, k)) for k in keys]
        results = atomic.run_all(fs, reads)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        found: dict[str, str] = {}
        loaded: dict[str, Record] = {}
        stats_etags: dict[str, str] = {}
        entries, stats = results[: len(keys)], results[len(keys) :]
        for key, got, stat_got in zip(keys, entries, stats, strict=True):
            if stat_got is not None:
                stats_etags[key] = stat_got[0]
            if got is None:
                continue
            found[key] = got[0]
            parsed = self._header(self._entry(ns, key), got[1])
            if parsed is None or parsed[0].get(F_KEY) != key:  # truncated, foreign, another key's
                continue
            stat = parse_stats(stat_got[1]) if stat_got is not None else None
            loaded[key] = _record(parsed[0], b"", stat)
        return found, loaded, stats_etags

    def _s3_put_absent(self, ns: str, records: Mapping[str, Record], now: float) -> set[str]:
        """``put_absent_many`` on S3 with conditional ``PutObject`` requests.

        Every key is first created with ``If-None-Match: *``. A refused key is read: a live
        entry wins over this write; an expired (or foreign) object is replaced with
        ``If-Match`` on the ETag read, so that only that very object is replaced; a key
        gone meanwhile is created again. A key still contended after a few rounds counts
        as not written.
        """
        fs = self.fs
        self._watch_retries(fs)
        blobs = {key: pack_object(key, record) for key, record in records.items()}
        etags: dict[str, str | None] = dict.fromkeys(records)  # None: create only
        replaced: dict[str, Record] = {}  # the expired entry a key's last attempt replaces
        stats_etags: dict[str, str] = {}
        written: list[str] = []
        twins: list[str] = []  # keys refused because they hold this very record already
        error: BaseException | None = None
        pending = list(records)
        for attempt in range(_MOVE_ATTEMPTS):
            outcomes = atomic.run_all(fs, [
                functools.partial(atomic.put_if, fs, self._entry(ns, k), blobs[k], etags[k])
                for k in pending
            ])  # fmt: skip
            refused = []
            for key, outcome in zip(pending, outcomes, strict=True):
                if outcome == atomic.DONE:
                    written.append(key)
                elif outcome == atomic.REFUSED:
                    refused.append(key)
                elif isinstance(outcome, BaseException) and error is None:
                    error = outcome
            if not refused or error is not None or attempt == _MOVE_ATTEMPTS - 1:
                break
            try:
                found, loaded, stats_found = self._s3_read(ns, refused)
            except Exception as err:  # the keys written so far still get their markers
                error = err
                break
            pending = []
            for key in refused:
                current = loaded.get(key)
                replaced.pop(key, None)
                stats_etags.pop(key, None)
                if current is not None and not current.expired(now):
                    if current.token == records[key].token:
                        # This very record, created by another writer that may not have
                        # written its tag markers yet: write them too (the same objects),
                        # so that a caller who goes on (a move deleting its source) never
                        # leaves the key in no tag index.
                        twins.append(key)
                    continue  # a live entry: not absent
                etags[key] = found.get(key)
                if current is not None:
                    replaced[key] = current
                    if key in stats_found:
                        stats_etags[key] = stats_found[key]
                pending.append(key)
        markers: dict[str, bytes] = {}
        stale: list[str] = []
        stale_stats: list[tuple[str, str]] = []
        for key in twins:
            markers.update(self._markers(ns, key, records[key].tags))
        for key in written:
            markers.update(self._markers(ns, key, records[key].tags))
            previous = replaced.get(key)
            if previous is not None:  # the expired entry replaced: its other tags, its stats
                stale.extend(
                    self._marker(ns, t, key) for t in previous.tags if t not in records[key].tags
                )
                if key in stats_etags:
                    stale_stats.append((self._stats(ns, key), stats_etags[key]))
        self._write(markers)
        self._rm(stale)
        self._s3_delete_exact(stale_stats)
        if error is not None:
            raise error
        return set(written)

    def _s3_delete_exact(self, objects: Sequence[tuple[str, str]]) -> list[Any]:
        """Delete objects each with ``If-Match`` on its ETag (concurrently); the outcomes."""
        fs = self.fs
        return atomic.run_all(
            fs, [functools.partial(atomic.delete_if, fs, path, etag) for path, etag in objects]
        )

    def _s3_delete_checked(
        self, ns: str, keys: Sequence[str], check: Callable[[str, Record], bool]
    ) -> set[str]:
        """Delete entries that pass ``check`` with ``DeleteObject If-Match`` on the ETag read.

        An entry rewritten after the read is refused by S3 and stays. The statistics
        object read is deleted the same way; tag markers (one per key and tag, whoever
        wrote them) are deleted after the entry, then restored for a new entry of the key
        written in between.
        """
        fs = self.fs
        self._watch_retries(fs)
        found, loaded, stats_etags = self._s3_read(ns, keys)
        doomed = {key: record for key, record in loaded.items() if check(key, record)}
        outcomes = self._s3_delete_exact([(self._entry(ns, k), found[k]) for k in doomed])
        gone: dict[str, Record] = {}
        error: BaseException | None = None
        for (key, record), outcome in zip(doomed.items(), outcomes, strict=True):
            if outcome == atomic.DONE:
                gone[key] = record
            elif isinstance(outcome, BaseException) and error is None:
                error = outcome
        self._rm([self._marker(ns, t, k) for k, r in gone.items() for t in r.tags])
        self._s3_delete_exact(
            [(self._stats(ns, k), stats_etags[k]) for k in gone if k in stats_etags]
        )
        self._restore_markers(ns, {k: r.tags for k, r in gone.items() if r.tags})
        if error is not None:
            raise error
        return set(gone)

    def _restore_markers(self, ns: str, removed: Mapping[str, Iterable[str]]) -> None:
        """Write back the markers just removed that a key's current entry carries.

        Between the delete of an entry and the delete of its markers another writer may
        have created the key again with some of the same tags.
        """
        if not removed:
            return
        heads = self._heads([self._entry(ns, key) for key in removed])
        blobs: dict[str, bytes] = {}
        for key, tags in removed.items():
            head = heads.get(self._entry(ns, key))
            if head is not None and head[0].get(F_KEY) == key:
                blobs.update(self._markers(ns, key, set(head[0][F_TAGS]) & set(tags)))
        self._write(blobs)

    def _names(self, folder: str) -> list[str]:
        try:
            found = self.fs.find(folder)
        except FileNotFoundError as err:
            if not no_such_object(err):
                raise
            return []
        return [p.rsplit("/", 1)[-1] for p in found if not p.rsplit("/", 1)[-1].startswith(".tmp-")]

    def _pages(self, folder: str) -> Iterator[list[str]]:
        """The names of the objects directly in ``folder``, a page (at most 1000) at a time.

        Listed lazily: local folders through ``os.scandir``, S3 one ``ListObjectsV2``
        request per page, so memory stays bounded however large the namespace (other
        filesystems: one listing). A missing folder lists nothing; a missing bucket raises.
        """
        fs = self.fs
        if self._is_local(fs):
            try:
                listing = os.scandir(folder)
            except (FileNotFoundError, NotADirectoryError):
                return
            with listing:
                page: list[str] = []
                for item in listing:
                    if item.name.startswith(".tmp-") or not item.is_file(follow_symlinks=False):
                        continue
                    page.append(item.name)
                    if len(page) >= _PAGE:
                        yield page
                        page = []
                if page:
                    yield page
            return
        if self.protocol not in ("s3", "s3a"):
            yield self._names(folder)
            return
        from fsspec.asyn import sync

        bucket, key, _version = fs.split_path(folder)
        prefix = key.rstrip("/") + "/"
        params = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": _PAGE}
        while True:
            reply = sync(fs.loop, fs._call_s3, "list_objects_v2", **params)
            names = [item["Key"][len(prefix) :] for item in reply.get("Contents") or ()]
            names = [n for n in names if n and "/" not in n and not n.startswith(".tmp-")]
            if names:
                yield names
            token = reply.get("NextContinuationToken")
            if not reply.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    def _listed(self, ns: str, folder: str, what: str = "list") -> Iterator[list[str]]:
        """The keys named in ``folder`` (entries or a tag's markers), a page at a time."""
        pages = self._pages(folder)
        while True:
            with self._errors(what):
                names = next(pages, None)
                if names is None:
                    return
                keys = self._resolve(ns, folder, names)
            if keys:
                yield keys

    def _resolve(self, ns: str, folder: str, names: list[str]) -> list[str]:
        """The keys ``names`` stand for (hashed ones read from the objects); names that
        are no key's (not our encoding: another program's files) are skipped, with a
        warning."""
        keys: list[str] = []
        hashed: list[str] = []
        for name in names:
            try:
                key = key_from_file_name(name)
            except (ValueError, UnicodeDecodeError):  # "%ZZ", "%FF": not our escapes
                key = ""
            if key is None:
                hashed.append(name)
            elif key and file_name(key) == name:
                keys.append(key)
            else:
                self._foreign(f"{folder}/{name}", "not a key's file name")
        if not hashed:
            return keys
        paths = [f"{folder}/{n}" for n in hashed]
        if folder.endswith("/e"):
            for path, (header, _) in self._heads(paths).items():
                if file_name(header[F_KEY]) == path.rsplit("/", 1)[-1]:
                    keys.append(header[F_KEY])
                else:
                    self._foreign(path, "holds another name's entry")
        else:  # tag markers: they hold the key
            for path, blob in self._cat(paths).items():
                try:
                    key = blob.decode("utf-8")
                except UnicodeDecodeError:
                    key = ""
                if key and file_name(key) == path.rsplit("/", 1)[-1]:
                    keys.append(key)
                else:
                    self._foreign(path, "not a tag marker")
        return keys

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        """Yield the live keys matching ``pattern``, listed a page at a time (each page's
        keys sorted): the first key comes after one page is listed, not the whole folder."""
        prefix = literal_prefix(pattern)
        with self._errors("list"):
            folder = f"{self._ns_dir(ns)}/e"
        for keys in self._listed(ns, folder):
            keys = [k for k in keys if k.startswith(prefix) and glob_match(k, pattern)]
            if keys:
                yield from sorted(self.exists_many(ns, keys, now=now))

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        found: set[str] = set()
        with self._errors("list"):
            base = self._ns_dir(ns)
        for tag in tags:
            for keys in self._listed(ns, f"{base}/t/{file_name(tag)}"):
                found.update(keys)
        return found

    def purge_expired(self, ns: str, *, now: float) -> int:
        with self._errors("list"):
            folder = f"{self._ns_dir(ns)}/e"
        removed = 0
        for batch in self._listed(ns, folder):
            if self._atomic is not None:  # only entries still expired when deleted
                removed += len(self._delete_checked(ns, batch, lambda _k, r: r.expired(now)))
                continue
            with self._errors("read"):
                loaded = self._load(ns, batch, values=False)
            dead = [k for k, (r, _) in loaded.items() if r.expired(now)]
            if dead:
                self.delete_many(ns, dead, now=now)
                removed += len(dead)
        return removed

    def ping(self) -> None:
        """Check that the store answers: on S3 that the bucket exists (``HeadBucket``).

        Raises:
            BackendUnavailable: The store cannot be reached.
            BackendNotFound: The S3 bucket does not exist.
            BackendPermissionError: The credentials are refused.
        """
        with self._errors("ping"):
            if self.protocol not in ("s3", "s3a"):
                self.fs.ls(self.root)
                return
            from fsspec.asyn import sync

            bucket = self.root.split("/", 1)[0]
            try:
                sync(self.fs.loop, self.fs._call_s3, "head_bucket", Bucket=bucket)
            except FileNotFoundError as err:  # HeadBucket's 404 carries no error code
                raise BackendNotFound(
                    f"{self.url}: S3 bucket {bucket!r} does not exist: create it or fix the URL"
                ) from err

    def close(self) -> None:
        self._fs = None

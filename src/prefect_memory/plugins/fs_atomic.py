"""Per-key atomic steps of :class:`~prefect_memory.plugins.fs.FsspecBackend`.

Two stores, two mechanisms:

- S3: conditional requests. ``PutObject`` with ``If-None-Match: *`` creates an object only
  where none exists; ``PutObject`` and ``DeleteObject`` with ``If-Match: <etag>`` act only
  on the exact object that was read. The server checks and acts in one step (HTTP 412
  ``PreconditionFailed`` otherwise), so no other client can slip in between.
  Not every S3 server enforces them (MinIO's community edition ignores ``If-Match`` on
  ``DeleteObject``), so :func:`probe` checks once per process, bucket and endpoint that a
  refused condition really is refused before the backend relies on them.
- Local folders: every write of an entry takes an exclusive ``flock`` on the namespace
  folder, so a check and the write or delete that follows it are one step for every other
  writer (thread or process). New entries are created with ``os.link`` (fails when the
  name exists), readers never lock and never see a half-written or missing entry.

Example:
    >>> from prefect_memory.plugins.fs_atomic import DONE, REFUSED
    >>> DONE, REFUSED
    ('done', 'refused')
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process folder lock
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

#: Outcomes of one conditional request.
DONE, REFUSED, MISSING = "done", "refused", "missing"

_REFUSED = {"PreconditionFailed", "412"}
#: AWS answers 409 when another conditional write of the same key is in flight: try again.
_CONFLICT = {"ConditionalRequestConflict", "409"}
_MISSING = {"NoSuchKey", "404"}


def s3_code(err: BaseException) -> str | None:
    """The S3 error code behind ``err`` (s3fs keeps botocore's error as ``__cause__``).

    Example:
        >>> class Denied(Exception):
        ...     response = {"Error": {"Code": "PreconditionFailed"}}
        >>> s3_code(OSError("disk")) is None, s3_code(Denied())
        (True, 'PreconditionFailed')
    """
    for candidate in (err, err.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code or status:
                return str(code or status)
    return None


def local_locks_available() -> bool:
    """Tell whether this platform has ``flock`` (the local folder lock)."""
    return fcntl is not None


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (created if missing) until the block ends.

    Each call opens its own descriptor, so two threads of one process exclude each other
    as two processes do; the kernel releases the lock if the holder dies.

    Example:
        >>> import tempfile
        >>> with folder_lock(tempfile.mkdtemp()):
        ...     pass
    """
    assert fcntl is not None, "folder locks need fcntl (POSIX)"
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (closing the last descriptor releases the lock)


def link_new(path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if nothing is there; tell whether it was created.

    The bytes go to a temporary file first and are linked into place: ``os.link`` fails
    when ``path`` exists, so a reader sees either nothing or the whole file.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x")
        >>> link_new(path, b"1"), link_new(path, b"2"), open(path, "rb").read()
        (True, False, b'1')
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def run_all(fs: Any, coros: Sequence[Callable[[], Awaitable[T]]]) -> list[T | BaseException]:
    """Run coroutine factories concurrently on the loop of the s3fs filesystem ``fs``.

    Returns one result (or the exception it raised) per factory, in order. Concurrency is
    capped like fsspec's own batch calls.
    """
    if not coros:
        return []
    from fsspec.asyn import _run_coros_in_chunks, sync

    async def gather() -> list[Any]:
        return await _run_coros_in_chunks([make() for make in coros], return_exceptions=True)

    return sync(fs.loop, gather)


async def _conditional(
    fs: Any, path: str, method: str, missing: str | None, attempts: int, **params: Any
) -> str:
    """One conditional S3 call: :data:`DONE`, :data:`REFUSED` (412), ``missing`` (404; ``None``:
    raised, like any other error); a ``409 ConditionalRequestConflict`` is retried."""
    bucket, key, _version = fs.split_path(path)
    for attempt in range(attempts):
        try:
            await fs._call_s3(method, Bucket=bucket, Key=key, **params)
            return DONE
        except Exception as err:
            code = s3_code(err)
            if code in _REFUSED:
                return REFUSED
            if code in _MISSING and missing is not None:
                return missing
            if code not in _CONFLICT or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
        finally:
            fs.invalidate_cache(path)
    return REFUSED  # pragma: no cover - the loop returns or raises


async def put_if(fs: Any, path: str, data: bytes, etag: str | None, attempts: int = 3) -> str:
    """``PutObject`` with ``If-None-Match: *`` (``etag`` None) or ``If-Match: etag``.

    Returns :data:`DONE` or :data:`REFUSED` (the object exists, or is no longer ``etag``:
    an ``If-Match`` on a key that is gone is refused too); other errors are raised.
    """
    if etag is None:
        return await _conditional(
            fs, path, "put_object", None, attempts, Body=data, IfNoneMatch="*"
        )
    return await _conditional(fs, path, "put_object", REFUSED, attempts, Body=data, IfMatch=etag)


async def delete_if(fs: Any, path: str, etag: str, attempts: int = 3) -> str:
    """``DeleteObject`` with ``If-Match: etag``: :data:`DONE`, :data:`REFUSED` or :data:`MISSING`.

    A refusal means the object is no longer the one read; a 412 for a key that is gone
    (SeaweedFS answers so) counts as refused too: either way it was not this call's delete.
    """
    return await _conditional(fs, path, "delete_object", MISSING, attempts, IfMatch=etag)


async def get_object(fs: Any, path: str, end: int | None = None) -> tuple[str, bytes, int] | None:
    """``(etag, bytes, total size)`` of an object (its first ``end`` bytes if given), or
    ``None`` if it does not exist. The ETag and the bytes come from one response.

    A missing *bucket* is raised, not taken for a missing object.
    """
    bucket, key, _version = fs.split_path(path)
    ranged = {"Range": f"bytes=0-{end - 1}"} if end else {}
    try:
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, **ranged)
    except FileNotFoundError as err:
        if s3_code(err) == "NoSuchBucket":
            raise
        return None
    except OSError as err:
        if ranged and s3_code(err) in {"InvalidRange", "416"}:  # an empty object
            return await get_object(fs, path)
        raise
    try:
        data = await resp["Body"].read()
    finally:
        resp["Body"].close()
    size = len(data)
    content_range = resp.get("ContentRange") or ""
    if "/" in content_range:
        with contextlib.suppress(ValueError):
            size = int(content_range.rsplit("/", 1)[1])
    return resp["ETag"], data, size


#: An ETag no object can have (a multipart ETag of zero parts).
_NO_SUCH_ETAG = '"00000000000000000000000000000000-0"'


async def probe(fs: Any, path: str) -> bool:
    """Tell whether the server refuses each condition the backend relies on.

    Writes a small object at ``path``, then asks for what must be refused: a create over
    it (``If-None-Match: *``), a replace and a delete of it with an ETag it does not have
    (``If-Match``). A server that ignores a header does the write or the delete; the
    object is removed at the end either way.
    """
    bucket, key, _version = fs.split_path(path)
    await fs._call_s3("put_object", Bucket=bucket, Key=key, Body=b"prefect-memory probe")
    try:
        outcomes = [
            await put_if(fs, path, b"created over", None),
            await put_if(fs, path, b"replaced", _NO_SUCH_ETAG),
            await delete_if(fs, path, _NO_SUCH_ETAG),
        ]
        return outcomes == [REFUSED, REFUSED, REFUSED]
    finally:
        with contextlib.suppress(Exception):
            await fs._call_s3("delete_object", Bucket=bucket, Key=key)
        fs.invalidate_cache(path)

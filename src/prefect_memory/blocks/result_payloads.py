"""Prefect's result payloads: their kind and expiry, run tags, and the read grace.

Example:
    >>> payload_kind(b'{"storage_key":"abc","expiration":null}')
    'metadata'
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import logging
import re
import threading
from collections import OrderedDict

from ..errors import DecryptionError

#: Tag carried by every stored result or record.
RESULT_TAG = "prefect:result"
FLOW_TAG = "prefect:flow="
TASK_TAG = "prefect:task="
RUN_TAG = "prefect:tag="
#: How long bytes read by ``read_path`` in a task run stay available to that run's next read
#: of the same path if the store lost them in between (see :class:`_RecentReads`).
READ_GRACE_SECONDS = 60.0

#: First bytes of a result stored by a block with a ``result_signing_key``; the 32 bytes of
#: the HMAC-SHA256 follow, then Prefect's payload.
SIGNED_HEADER = b"prefect-memory signed result v1\n"
#: Fewest characters of a ``result_signing_key``.
MIN_SIGNING_KEY_LENGTH = 16
_TAG_BYTES = 32

_METADATA_HEAD = b'{"storage_key":'
_RECORD_HEAD = b'{"metadata":'
_EXPIRATION = re.compile(rb'"expiration":"([^"]+)"')
logger = logging.getLogger("prefect_memory.blocks")


class _RecentReads:
    """Payloads ``read_path`` returned during the current task run, for its next read only.

    Prefect reads a cached result twice in one task run: once to decide that it is cached
    (``ResultStore.exists``) and once to load it. If the store's TTL removes the entry
    between the two reads, the second would fail the task; it gets these bytes instead. An
    entry serves only the task run that read it, only once, and only within
    ``READ_GRACE_SECONDS``; the store is always asked first.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int = 64 * 2**20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, path: str, run_id: str | None, content: bytes, now: float) -> None:
        if run_id is None or len(content) > self.max_bytes:
            return
        with self._lock:
            while self._items:  # drop what no read can use any more
                (_, (first_at, first)) = next(iter(self._items.items()))
                if now - first_at <= READ_GRACE_SECONDS:
                    break
                self._items.popitem(last=False)
                self._size -= len(first)
            old = self._items.pop((path, run_id), None)
            if old is not None:
                self._size -= len(old[1])
            self._items[(path, run_id)] = (now, content)
            self._size += len(content)
            while len(self._items) > self.max_entries or self._size > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._size -= len(dropped)

    def pop(self, path: str, run_id: str | None, now: float, grace: float) -> bytes | None:
        if run_id is None:
            return None
        with self._lock:
            item = self._items.pop((path, run_id), None)
            if item is not None:
                self._size -= len(item[1])
        if item is None or now - item[0] > grace:
            return None
        return item[1]


def task_run_id() -> str | None:
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    return None if ctx is None else str(ctx.task_run.id)


def payload_kind(content: bytes) -> str:
    """Tell Prefect's payloads apart: ``"metadata"``, ``"record"`` or ``"result"``.

    Example:
        >>> payload_kind(b'{"storage_key":"abc","expiration":null}')
        'metadata'
        >>> payload_kind(b'{"metadata":{"storage_key":"abc"},"result":"gAR..."}')
        'record'
        >>> payload_kind(b"\\x80\\x05K*.")
        'result'
    """
    if content.startswith(_METADATA_HEAD):
        return "metadata"
    if content.startswith(_RECORD_HEAD):
        return "record"
    return "result"


def payload_expiration(content: bytes) -> float | None:
    """The ``expiration`` of a record or metadata payload in epoch seconds, if it has one.

    Example:
        >>> payload_expiration(b'{"storage_key":"k","expiration":"2030-01-01T00:00:00Z"}')
        1893456000.0
    """
    match = _EXPIRATION.search(content, 0, 4096)
    if match is None:
        return None
    text = match.group(1).decode("ascii", "replace").replace("Z", "+00:00")
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def run_tags() -> tuple[str, ...]:
    """Tags naming the current flow, task and run tags (empty outside a run)."""
    from prefect.context import FlowRunContext, TaskRunContext

    tags: list[str] = []
    flow_ctx = FlowRunContext.get()
    task_ctx = TaskRunContext.get()
    if flow_ctx is not None and flow_ctx.flow is not None:
        tags.append(FLOW_TAG + flow_ctx.flow.name)
    if task_ctx is not None:
        tags.append(TASK_TAG + task_ctx.task.name)
        tags.extend(RUN_TAG + tag for tag in sorted(task_ctx.task_run.tags or ()))
    elif flow_ctx is not None and flow_ctx.flow_run is not None:
        tags.extend(RUN_TAG + tag for tag in sorted(flow_ctx.flow_run.tags or ()))
    return tuple(tags)


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logger


class ResultSignatureError(DecryptionError):
    """A stored result is refused: it lacks a valid signature of the block's signing key.

    Missing, made with another key, for another path or namespace, or tampered with: either
    way the bytes were not written through a block holding the key, so they never reach
    Prefect's deserializer. A :class:`~prefect_memory.errors.DecryptionError` (the class of
    a failed AES-GCM tag check: the same question, "did a key holder write these bytes?"),
    so ``except DecryptionError`` catches both.
    """


def _signature(key: bytes, namespace: str, path: str, content: bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (namespace.encode("utf-8", "surrogatepass"), path.encode("utf-8", "surrogatepass")):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    mac.update(content)
    return mac.digest()


def sign_result(key: bytes, namespace: str, path: str, content: bytes) -> bytes:
    """The stored form of ``content``: :data:`SIGNED_HEADER`, its HMAC-SHA256, ``content``.

    The signature covers the namespace and the path, so a signed payload copied to another
    path or namespace is refused like a forged one.

    Example:
        >>> stored = sign_result(b"k" * 16, "results", "r1", b"payload")
        >>> len(stored) - len(b"payload") == len(SIGNED_HEADER) + 32
        True
        >>> verify_result(b"k" * 16, "results", "r1", stored)
        b'payload'
        >>> verify_result(b"k" * 16, "results", "r2", stored)
        Traceback (most recent call last):
        ...
        prefect_memory.blocks.result_payloads.ResultSignatureError: ... 'r2' ... wrong signature...
    """
    return SIGNED_HEADER + _signature(key, namespace, path, content) + content


def verify_result(key: bytes | None, namespace: str, path: str, stored: bytes) -> bytes:
    """Return the payload of ``stored`` if it is signed with ``key`` for this place.

    Args:
        key: The signing key; ``None``: the block does not sign, ``stored`` is returned
            as is unless it is signed (then it is refused: the key is needed to trust it).
        namespace: The namespace ``stored`` was read from.
        path: The path (key) ``stored`` was read from.
        stored: The bytes as stored.

    Raises:
        ResultSignatureError: The signature is missing or does not match. The message names
            the path and the namespace, never the key or the bytes.
    """
    signed = stored.startswith(SIGNED_HEADER)
    if key is None:
        if signed:
            raise ResultSignatureError(
                f"the stored result {path!r} (namespace {namespace!r}) is signed, and this "
                "block has no result_signing_key: set the key it was written with to read it"
            )
        return stored
    head = len(SIGNED_HEADER) + _TAG_BYTES
    if not signed or len(stored) < head:
        raise ResultSignatureError(
            f"the stored result {path!r} (namespace {namespace!r}) is not signed: it was not "
            "written through a block with this result_signing_key, so it is refused unread "
            "(purge it, or let the task run again to replace it)"
        )
    content = stored[head:]
    expected = _signature(key, namespace, path, content)
    if not hmac.compare_digest(stored[len(SIGNED_HEADER) : head], expected):
        raise ResultSignatureError(
            f"the stored result {path!r} (namespace {namespace!r}) has a wrong signature: "
            "written with another key, for another path, or altered since; refused unread"
        )
    return content

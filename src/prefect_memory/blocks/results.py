"""Result storage: how a memory block stores Prefect's task results and cache-key records.

Prefect writes three kinds of payload through ``write_path``, told apart by their first bytes:

- a *record* (``{"metadata": ..., "result": ...}``): result and metadata together, the
  default when a task has no ``key_storage``;
- a *metadata* record (``{"storage_key": ...}``): what a cache policy's ``key_storage`` holds;
- a bare *result*: the serialized value, when metadata lives in a ``key_storage``.

Results and records go to the block's namespace; metadata records to the namespace
``<namespace>/prefect-keys``, so a block used both as ``result_storage`` and as
``key_storage`` can never overwrite one with the other. Each write carries the block's
``ttl`` (or the record's own ``cache_expiration`` when it is sooner), so the store itself
removes expired results, and tags naming the flow, the task and the run's tags, which
:meth:`ResultStorageMixin.list_results` and :meth:`ResultStorageMixin.purge_results` use.

A path whose entry is gone raises :class:`ResultNotFound`; Prefect's cache lookup
(``ResultStore.exists``) treats any error of ``read_path`` as "not cached" and runs the task.

Prefect deserializes what ``read_path`` returns with the serializer named *inside* the stored
payload (pickle by default, whatever the reader's ``result_serializer``), so whoever can write
the store can run code in every reader. With a ``result_signing_key``, each payload is stored
as :data:`SIGNED_HEADER`, an HMAC-SHA256 of (namespace, path, payload), then the payload;
``read_path`` returns only payloads whose signature matches and raises
:class:`ResultSignatureError` for any other, before Prefect sees a byte of it.

Example:
    >>> from prefect_memory.blocks import InProcessMemory
    >>> block = InProcessMemory(name="docs-signed", result_signing_key="k" * 32)
    >>> block.write_path("result-1", b'{"metadata":{},"result":"42"}', _sync=True)
    'result-1'
    >>> block.read_path("result-1", _sync=True)
    b'{"metadata":{},"result":"42"}'
    >>> block.memory.get("result-1").startswith(SIGNED_HEADER)  # as stored
    True
    >>> block.memory.set("result-1", b"\\x80\\x04...")  # another client overwrites it
    >>> block.read_path("result-1", _sync=True)
    Traceback (most recent call last):
    ...
    prefect_memory.blocks.result_payloads.ResultSignatureError: the stored result 'result-1' ...
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect._internal.compatibility.async_dispatch import async_dispatch

from ..aio import async_twin
from ..errors import EntryNotFound, SerializationError
from ..memory import Memory
from .result_payloads import (
    FLOW_TAG,
    MIN_SIGNING_KEY_LENGTH,
    READ_GRACE_SECONDS,
    RESULT_TAG,
    RUN_TAG,
    SIGNED_HEADER,
    TASK_TAG,
    ResultSignatureError,
    payload_expiration,
    payload_kind,
    run_logger,
    run_tags,
    sign_result,
    task_run_id,
    verify_result,
)

__all__ = [
    "KEYS_SUFFIX",
    "MIN_SIGNING_KEY_LENGTH",
    "SIGNED_HEADER",
    "ResultNotFound",
    "ResultSignatureError",
    "ResultStorageMixin",
    "StoredResult",
    "payload_kind",
]

if TYPE_CHECKING:
    from pydantic import SecretStr

    from .locks import MemoryLockManager

#: Suffix of the namespace that holds cache-key (metadata) records.
KEYS_SUFFIX = "/prefect-keys"
_MISSING: Any = object()


class ResultNotFound(EntryNotFound, FileNotFoundError):
    """No stored result at this path (never written, expired, or purged)."""


@dataclass(frozen=True)
class StoredResult:
    """One stored task result, as listed by :meth:`ResultStorageMixin.list_results`."""

    key: str
    flow: str | None
    task: str | None
    tags: tuple[str, ...]
    created_at: _dt.datetime
    expires_at: _dt.datetime | None
    size: int


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"a result path must be a non-empty str, got {path!r}")
    return path


class ResultStorageMixin:
    """``WritableFileSystem`` on a memory, plus listing, purging and locks of results.

    Mixed into :class:`~prefect_memory.blocks.MemoryBlock`, which provides ``memory``,
    ``namespace``, ``ttl`` and the per-instance cache ``_lazy``.
    """

    if TYPE_CHECKING:  # provided by MemoryBlock (not annotations pydantic would collect)
        memory: Memory
        namespace: str
        ttl: float | None
        result_signing_key: SecretStr | None
        _lazy: Any

    # -- the two namespaces ----------------------------------------------------------------------
    def _is_key_storage(self) -> bool:
        return self.namespace.endswith(KEYS_SUFFIX)

    def _keys_memory(self) -> Memory:
        if self._is_key_storage():  # made by as_key_storage(): its namespace is the keys one
            return self.memory
        lazy = self._lazy
        if lazy.keys_memory is None:
            lazy.keys_memory = self.memory.with_namespace(self.namespace + KEYS_SUFFIX)
        return lazy.keys_memory

    def _signing_key(self) -> bytes | None:
        key: Any = self.result_signing_key
        if key is None:
            return None
        text = key.get_secret_value() if hasattr(key, "get_secret_value") else str(key)
        return text.encode("utf-8", "surrogatepass")

    def _result_ttl(self, expires_at: float | None, now: float) -> float | None:
        if expires_at is None:
            return self.ttl
        remaining = max(expires_at - now, 1.0)
        return remaining if self.ttl is None else min(self.ttl, remaining)

    # -- WritableFileSystem ----------------------------------------------------------------------
    def _write_result(self, path: str, content: bytes) -> str:
        _check_path(path)
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_path takes bytes, got {type(content).__name__}")
        content = bytes(content)
        kind = payload_kind(content)
        expires_at = payload_expiration(content) if kind != "result" else None
        ttl = self._result_ttl(expires_at, time.time())
        tags = run_tags()
        if kind == "metadata":
            if not self._is_key_storage() and self.memory.exists(path):
                run_logger().warning(
                    "The memory block of namespace %r is both the result storage and the "
                    "key storage of this task: cache-key records go to %r so nothing is "
                    "overwritten, but Prefect cannot read them back and the task will never "
                    "hit its cache. Pass key_storage=block.as_key_storage() or leave "
                    "key_storage unset.",
                    self.namespace,
                    self.namespace + KEYS_SUFFIX,
                )
            memory, tags = self._keys_memory(), tags
        else:
            memory, tags = self.memory, (RESULT_TAG, *tags)
        key = self._signing_key()
        if key is not None:
            content = sign_result(key, memory.namespace, path, content)
        memory.set(path, content, ttl=ttl, tags=tags)
        return path

    def _read_result(self, path: str) -> bytes:
        _check_path(path)
        memory = self.memory
        value = memory.get(path, _MISSING)
        if value is _MISSING:
            memory = self._keys_memory()
            value = memory.get(path, _MISSING)
        now = time.monotonic()
        run_id = task_run_id()
        if value is _MISSING:
            recent = self._lazy.recent.pop(path, run_id, now, READ_GRACE_SECONDS)
            if recent is None:
                raise ResultNotFound(f"no stored result at {path!r} (missing or expired)")
            return recent
        if not isinstance(value, bytes):
            raise SerializationError(
                f"the entry {path!r} holds a {type(value).__name__}, not a stored result"
            )
        try:
            value = verify_result(self._signing_key(), memory.namespace, path, value)
        except ResultSignatureError as err:
            # Prefect's cache lookup swallows read errors (the task just runs again): say it.
            run_logger().warning("Refused a stored task result: %s", err)
            raise
        self._lazy.recent.put(path, run_id, value, now)
        return value

    async def aread_path(self, path: str) -> bytes:
        """Return the bytes stored at ``path``.

        Raises:
            ResultNotFound: Nothing is stored there (never written, expired, purged).
            ResultSignatureError: The block has a ``result_signing_key`` and what is stored
                there is not signed with it (nothing of it is returned).
        """
        return await asyncio.to_thread(self._read_result, path)

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        """Return the bytes stored at ``path`` (Prefect passes ``_sync=True``).

        Raises:
            ResultNotFound: Nothing is stored there (never written, expired, purged).
            ResultSignatureError: The block has a ``result_signing_key`` and what is stored
                there is not signed with it (nothing of it is returned).
        """
        return self._read_result(path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        """Store ``content`` at ``path`` with the block's ``ttl`` (signed with its
        ``result_signing_key`` if it has one); return ``path``."""
        return await asyncio.to_thread(self._write_result, path, content)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        """Store ``content`` at ``path`` with the block's ``ttl`` (signed with its
        ``result_signing_key`` if it has one); return ``path``."""
        return self._write_result(path, content)

    def _resolve_path(self, path: str) -> None:
        """Paths are keys, not files: tells Prefect not to resolve them against a folder."""
        return None

    # -- key storage and locks ------------------------------------------------------------------
    def as_key_storage(self) -> Any:
        """A copy of this block for a cache policy's ``key_storage``.

        Its namespace is this block's plus ``/prefect-keys``: the same place this block
        puts cache-key records, so either form finds them, and results and cache-key
        records never share a key.

        Example:
            >>> from prefect_memory.blocks import InProcessMemory
            >>> InProcessMemory(name="docs-keys", namespace="results").as_key_storage().namespace
            'results/prefect-keys'
        """
        return self.model_copy(update={"namespace": self.namespace + KEYS_SUFFIX})  # type: ignore[attr-defined]

    def lock_manager(self, hold_timeout: float = 300.0) -> MemoryLockManager:
        """A lock manager for ``cache_policy.configure(lock_manager=...)``.

        Args:
            hold_timeout: Seconds after which a lock is released even if its holder never
                released it (a crashed task cannot block the next run forever).

        Returns:
            A Redis lock manager (``SET NX PX``) for Redis blocks, else one on this memory.
        """
        from .locks import lock_manager_for

        return lock_manager_for(self, hold_timeout=hold_timeout)

    # -- listing and purging ---------------------------------------------------------------------
    def _result_keys(self, flow: str | None, task: str | None, tags: Iterable[str]) -> list[str]:
        criteria = [RESULT_TAG]
        if flow is not None:
            criteria.append(FLOW_TAG + flow)
        if task is not None:
            criteria.append(TASK_TAG + task)
        criteria.extend(RUN_TAG + tag for tag in ([tags] if isinstance(tags, str) else tags))
        memory = self.memory
        # Memory has no public "keys carrying a tag" query; its backend protocol does.
        found: set[str] | None = None
        for tag in criteria:
            keys = memory.backend.tagged(memory.namespace, [tag], now=memory.clock())
            found = keys if found is None else found & keys
            if not found:
                return []
        return sorted(found or ())

    def list_results(
        self, *, flow: str | None = None, task: str | None = None, tags: Iterable[str] = ()
    ) -> list[StoredResult]:
        """List the live task results stored through this block.

        Args:
            flow: Only results written by runs of the flow of this name.
            task: Only results of the task of this name.
            tags: Only results of task runs carrying every one of these tags.

        Returns:
            The matching results, sorted by key.
        """
        out: list[StoredResult] = []
        for key in self._result_keys(flow, task, tags):
            info = self.memory.info(key)
            if info is None:
                continue
            out.append(
                StoredResult(
                    key=key,
                    flow=_tag_value(info.tags, FLOW_TAG),
                    task=_tag_value(info.tags, TASK_TAG),
                    tags=tuple(t[len(RUN_TAG) :] for t in info.tags if t.startswith(RUN_TAG)),
                    created_at=info.created_at,
                    expires_at=info.expires_at,
                    size=info.size,
                )
            )
        return out

    def purge_results(
        self, *, flow: str | None = None, task: str | None = None, tags: Iterable[str] = ()
    ) -> int:
        """Delete stored task results (and their cache-key records); the next runs recompute.

        With no filter, every result stored through this block's namespace is removed;
        other entries of the namespace are kept.

        Args:
            flow: Only results written by runs of the flow of this name.
            task: Only results of the task of this name.
            tags: Only results of task runs carrying every one of these tags.

        Returns:
            How many results were removed.
        """
        keys = self._result_keys(flow, task, tags)
        if not keys:
            return 0
        removed = self.memory.delete_many(keys)
        self._keys_memory().delete_many(keys)
        return removed

    alist_results = async_twin(list_results)
    apurge_results = async_twin(purge_results)


def _tag_value(tags: Iterable[str], prefix: str) -> str | None:
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return None

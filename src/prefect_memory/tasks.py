"""Prefect tasks on a memory block: get, set, delete, batches and tag invalidation.

Each task takes a memory block, either the loaded instance (best: no API call per run) or
the name of a saved block as ``"block-type-slug/block-name"`` (loaded on every run). They
work in sync and async flows, log what they did at debug level through the run logger
(keys and counts, never values), never cache (they have side effects), and retry only
transient errors: :class:`~prefect_memory.errors.BackendUnavailable` (a store that is down
or did not answer in time), three times with growing delays.

Example:
    .. code-block:: python

        from prefect import flow
        from prefect_memory.blocks import RedisMemory
        from prefect_memory.tasks import memory_get, memory_set

        @flow
        def remember(user: int) -> dict:
            memory = RedisMemory.load("sessions")
            memory_set(memory, f"user:{user}", {"seen": True}, ttl=3600, tags=[f"user:{user}"])
            return memory_get(memory, f"user:{user}")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prefect import Task, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State

from .blocks.base import MemoryBlock
from .errors import BackendUnavailable, ConfigError
from .memory import _UNSET, TTL

#: Retries of every memory task, for transient errors only.
RETRIES = 3
#: Seconds before each retry.
RETRY_DELAYS = [1, 2, 4]


def retry_if_unavailable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """``retry_condition_fn`` of the memory tasks: retry only when the store is unreachable.

    Args:
        task: The task that failed.
        task_run: Its run.
        state: The failed state (its ``data`` is the exception).

    Returns:
        Whether the failure is transient (:class:`~prefect_memory.errors.BackendUnavailable`).
    """
    return isinstance(state.data, BackendUnavailable)


def resolve_block(block: MemoryBlock | str) -> MemoryBlock:
    """Return ``block``, loading it first if it is a saved block's ``"type-slug/name"``.

    Raises:
        ConfigError: ``block`` is neither a memory block nor such a name.
    """
    if isinstance(block, MemoryBlock):
        return block
    if isinstance(block, str):
        if block.count("/") != 1:
            raise ConfigError(
                f"a saved memory block is named 'block-type-slug/block-name' "
                f"(e.g. 'redis-memory/sessions'), got {block!r}"
            )
        loaded = Block.load(block, _sync=True)
        if not isinstance(loaded, MemoryBlock):
            raise ConfigError(f"{block!r} is a {type(loaded).__name__}, not a memory block")
        return loaded
    raise ConfigError(f"expected a memory block or 'type-slug/name', got {type(block).__name__}")


def _label(block: MemoryBlock) -> str:
    name = block._block_document_name
    where = f"{block.get_block_type_slug()}/{name}" if name else type(block).__name__
    return f"{where} (namespace {block.namespace!r})"


_TASK_OPTIONS: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_if_unavailable,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}


@task(name="memory_get", **_TASK_OPTIONS)
def memory_get(block: MemoryBlock | str, key: str, default: Any = None) -> Any:
    """Return the value of ``key`` in the block's memory, or ``default``.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        key: The key.
        default: Returned when the key has no live entry.
    """
    memory = resolve_block(block)
    value = memory.get(key, _UNSET)
    get_run_logger().debug(
        "memory_get %r from %s: %s", key, _label(memory), "miss" if value is _UNSET else "hit"
    )
    return default if value is _UNSET else value


@task(name="memory_set", **_TASK_OPTIONS)
def memory_set(
    block: MemoryBlock | str,
    key: str,
    value: Any,
    *,
    ttl: TTL = _UNSET,
    tags: Iterable[str] = (),
) -> None:
    """Store ``value`` under ``key`` (``ttl`` defaults to the block's ``ttl``).

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        key: The key.
        value: The value.
        ttl: Seconds to live (``None``: no expiry; default: the block's ``ttl``).
        tags: Tags for :func:`memory_invalidate_tags`.
    """
    memory = resolve_block(block)
    memory.set(key, value, ttl=ttl, tags=tags)
    get_run_logger().debug("memory_set %r in %s", key, _label(memory))


@task(name="memory_delete", **_TASK_OPTIONS)
def memory_delete(block: MemoryBlock | str, key: str) -> bool:
    """Delete ``key``; return whether a live entry was removed.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        key: The key.
    """
    memory = resolve_block(block)
    removed = memory.delete(key)
    get_run_logger().debug("memory_delete %r in %s: removed=%s", key, _label(memory), removed)
    return removed


@task(name="memory_get_many", **_TASK_OPTIONS)
def memory_get_many(block: MemoryBlock | str, keys: Iterable[str]) -> dict[str, Any]:
    """Return ``{key: value}`` for the keys that have a live entry.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        keys: The keys.
    """
    memory = resolve_block(block)
    keys = list(keys)
    found = memory.get_many(keys)
    get_run_logger().debug(
        "memory_get_many from %s: %d of %d keys found", _label(memory), len(found), len(keys)
    )
    return found


@task(name="memory_set_many", **_TASK_OPTIONS)
def memory_set_many(
    block: MemoryBlock | str,
    entries: Mapping[str, Any],
    *,
    ttl: TTL = _UNSET,
    tags: Iterable[str] = (),
) -> int:
    """Store every item of ``entries``; return how many were stored.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        entries: Keys and values.
        ttl: Seconds to live (``None``: no expiry; default: the block's ``ttl``).
        tags: Tags of every entry.
    """
    memory = resolve_block(block)
    memory.set_many(entries, ttl=ttl, tags=tags)
    get_run_logger().debug("memory_set_many in %s: %d entries", _label(memory), len(entries))
    return len(entries)


@task(name="memory_invalidate_tags", **_TASK_OPTIONS)
def memory_invalidate_tags(block: MemoryBlock | str, tags: str | Iterable[str]) -> int:
    """Delete every entry carrying any of ``tags``; return how many were removed.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        tags: One tag or several.
    """
    memory = resolve_block(block)
    removed = memory.invalidate_tags(tags)
    get_run_logger().debug(
        "memory_invalidate_tags %r in %s: %d removed", tags, _label(memory), removed
    )
    return removed


__all__ = [
    "memory_delete",
    "memory_get",
    "memory_get_many",
    "memory_invalidate_tags",
    "memory_set",
    "memory_set_many",
    "resolve_block",
    "retry_if_unavailable",
]

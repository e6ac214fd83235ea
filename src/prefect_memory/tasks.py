"""Prefect tasks on a memory block: get, set, delete, batches, tag invalidation, raw Redis.

Each task takes a memory block, either the loaded instance (best: no API call per run) or
the name of a saved block as ``"block-type-slug/block-name"`` (loaded on every run). They
log what they did at debug level through the run logger (keys and counts, never values),
never cache (they have side effects), and retry only transient errors:
:class:`~prefect_memory.errors.BackendUnavailable` (a store that is down or did not answer
in time), three times with growing delays.

Sync or async, as Prefect's own integrations dispatch (prefect-aws's ``async_dispatch``):
called in a sync flow or task, a task runs and returns its result; called in an ``async``
flow or task, it returns an awaitable (``await memory_set(...)``) whose body awaits the
block's async methods. ``_sync=True`` forces the sync call anywhere; the async twin is
also the task's ``.aio``. ``.submit()`` and ``.map()`` run the sync task on the flow's
task runner in both kinds of flows.

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

        @flow
        async def remember_async(user: int) -> dict:
            memory = await RedisMemory.aload("sessions")
            await memory_set(memory, f"user:{user}", {"seen": True}, ttl=3600)
            return await memory_get(memory, f"user:{user}")
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prefect import Task, task
from prefect._internal.compatibility.async_dispatch import is_in_async_context
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


def _check_name(block: str) -> None:
    if block.count("/") != 1:
        raise ConfigError(
            f"a saved memory block is named 'block-type-slug/block-name' "
            f"(e.g. 'redis-memory/sessions'), got {block!r}"
        )


def _checked(block: str, loaded: Any) -> MemoryBlock:
    if not isinstance(loaded, MemoryBlock):
        raise ConfigError(f"{block!r} is a {type(loaded).__name__}, not a memory block")
    return loaded


def _not_a_block(block: Any) -> ConfigError:
    return ConfigError(f"expected a memory block or 'type-slug/name', got {type(block).__name__}")


def resolve_block(block: MemoryBlock | str) -> MemoryBlock:
    """Return ``block``, loading it first if it is a saved block's ``"type-slug/name"``.

    Raises:
        ConfigError: ``block`` is neither a memory block nor such a name.
    """
    if isinstance(block, MemoryBlock):
        return block
    if isinstance(block, str):
        _check_name(block)
        return _checked(block, Block.load(block, _sync=True))
    raise _not_a_block(block)


async def aresolve_block(block: MemoryBlock | str) -> MemoryBlock:
    """Async twin of :func:`resolve_block` (a saved block is loaded with ``Block.aload``).

    Raises:
        ConfigError: ``block`` is neither a memory block nor such a name.
    """
    if isinstance(block, MemoryBlock):
        return block
    if isinstance(block, str):
        _check_name(block)
        return _checked(block, await Block.aload(block))
    raise _not_a_block(block)


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


class MemoryTask(Task[..., Any]):
    """A Prefect task that runs in sync contexts and is awaitable in async ones.

    Calling it in an ``async`` flow or task (or in a running event loop outside a flow)
    returns the coroutine of its async twin :attr:`aio`; anywhere else it runs as a plain
    task. ``_sync=True`` / ``_sync=False`` force one or the other, as Prefect's
    ``async_dispatch`` does. ``submit``, ``map`` and ``fn`` are the sync task's;
    :meth:`with_options` applies the options to both twins.
    """

    aio: Task[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task (sync context) or return the awaitable of its async twin."""
        sync = kwargs.pop("_sync", None)
        if not sync if sync is not None else is_in_async_context():
            return self.aio(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def with_options(self, *args: Any, **options: Any) -> MemoryTask:
        """A copy with other task options (retries, name...), on both twins."""
        return _dispatching(
            super().with_options(*args, **options), self.aio.with_options(*args, **options)
        )


def _dispatching(sync_task: Task[..., Any], async_task: Task[..., Any]) -> MemoryTask:
    # Prefect's with_options builds a plain Task: the subclass is set on the result.
    sync_task.__class__ = MemoryTask
    sync_task.aio = async_task
    return sync_task  # type: ignore[return-value]


def memory_task(async_fn: Callable[..., Any]) -> Callable[[Callable[..., Any]], MemoryTask]:
    """Make a :class:`MemoryTask` of a sync function and its ``async`` twin ``async_fn``.

    Both carry the memory tasks' options and the sync function's name, so a run shows as
    ``memory_get`` in the UI whichever twin ran.
    """

    def decorate(sync_fn: Callable[..., Any]) -> MemoryTask:
        name = sync_fn.__name__
        return _dispatching(
            task(name=name, **_TASK_OPTIONS)(sync_fn), task(name=name, **_TASK_OPTIONS)(async_fn)
        )

    return decorate


def _got(memory: MemoryBlock, key: str, value: Any) -> None:
    verdict = "miss" if value is _UNSET else "hit"
    get_run_logger().debug("memory_get %r from %s: %s", key, _label(memory), verdict)


async def _amemory_get(block: MemoryBlock | str, key: str, default: Any = None) -> Any:
    """Async twin of :func:`memory_get`."""
    memory = await aresolve_block(block)
    value = await memory.aget(key, _UNSET)
    _got(memory, key, value)
    return default if value is _UNSET else value


@memory_task(_amemory_get)
def memory_get(block: MemoryBlock | str, key: str, default: Any = None) -> Any:
    """Return the value of ``key`` in the block's memory, or ``default``.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        key: The key.
        default: Returned when the key has no live entry.
    """
    memory = resolve_block(block)
    value = memory.get(key, _UNSET)
    _got(memory, key, value)
    return default if value is _UNSET else value


async def _amemory_set(
    block: MemoryBlock | str, key: str, value: Any, *, ttl: TTL = _UNSET, tags: Iterable[str] = ()
) -> None:
    """Async twin of :func:`memory_set`."""
    memory = await aresolve_block(block)
    await memory.aset(key, value, ttl=ttl, tags=tags)
    get_run_logger().debug("memory_set %r in %s", key, _label(memory))


@memory_task(_amemory_set)
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


def _deleted(memory: MemoryBlock, key: str, removed: bool) -> bool:
    get_run_logger().debug("memory_delete %r in %s: removed=%s", key, _label(memory), removed)
    return removed


async def _amemory_delete(block: MemoryBlock | str, key: str) -> bool:
    """Async twin of :func:`memory_delete`."""
    memory = await aresolve_block(block)
    return _deleted(memory, key, await memory.adelete(key))


@memory_task(_amemory_delete)
def memory_delete(block: MemoryBlock | str, key: str) -> bool:
    """Delete ``key``; return whether a live entry was removed.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        key: The key.
    """
    memory = resolve_block(block)
    return _deleted(memory, key, memory.delete(key))


def _found(memory: MemoryBlock, keys: list[str], found: dict[str, Any]) -> dict[str, Any]:
    get_run_logger().debug(
        "memory_get_many from %s: %d of %d keys found", _label(memory), len(found), len(keys)
    )
    return found


async def _amemory_get_many(block: MemoryBlock | str, keys: Iterable[str]) -> dict[str, Any]:
    """Async twin of :func:`memory_get_many`."""
    memory = await aresolve_block(block)
    keys = list(keys)
    return _found(memory, keys, await memory.aget_many(keys))


@memory_task(_amemory_get_many)
def memory_get_many(block: MemoryBlock | str, keys: Iterable[str]) -> dict[str, Any]:
    """Return ``{key: value}`` for the keys that have a live entry.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        keys: The keys.
    """
    memory = resolve_block(block)
    keys = list(keys)
    return _found(memory, keys, memory.get_many(keys))


def _stored(memory: MemoryBlock, entries: Mapping[str, Any]) -> int:
    get_run_logger().debug("memory_set_many in %s: %d entries", _label(memory), len(entries))
    return len(entries)


async def _amemory_set_many(
    block: MemoryBlock | str,
    entries: Mapping[str, Any],
    *,
    ttl: TTL = _UNSET,
    tags: Iterable[str] = (),
) -> int:
    """Async twin of :func:`memory_set_many`."""
    memory = await aresolve_block(block)
    await memory.aset_many(entries, ttl=ttl, tags=tags)
    return _stored(memory, entries)


@memory_task(_amemory_set_many)
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
    return _stored(memory, entries)


def _invalidated(memory: MemoryBlock, tags: str | Iterable[str], removed: int) -> int:
    get_run_logger().debug(
        "memory_invalidate_tags %r in %s: %d removed", tags, _label(memory), removed
    )
    return removed


async def _amemory_invalidate_tags(block: MemoryBlock | str, tags: str | Iterable[str]) -> int:
    """Async twin of :func:`memory_invalidate_tags`."""
    memory = await aresolve_block(block)
    return _invalidated(memory, tags, await memory.ainvalidate_tags(tags))


@memory_task(_amemory_invalidate_tags)
def memory_invalidate_tags(block: MemoryBlock | str, tags: str | Iterable[str]) -> int:
    """Delete every entry carrying any of ``tags``; return how many were removed.

    Args:
        block: A memory block, or a saved block's ``"type-slug/name"``.
        tags: One tag or several.
    """
    memory = resolve_block(block)
    return _invalidated(memory, tags, memory.invalidate_tags(tags))


def _redis_command(block: MemoryBlock, args: tuple[Any, ...]) -> tuple[Any, ...]:
    from .blocks.remote import RedisMemory

    if not isinstance(block, RedisMemory):
        raise ConfigError(f"redis_execute needs a RedisMemory block, got {type(block).__name__}")
    if not args:
        raise ConfigError("redis_execute needs a command, e.g. redis_execute(block, 'PING')")
    if len(args) == 1 and isinstance(args[0], str):  # "SET a b", as prefect-redis takes it
        args = tuple(shlex.split(args[0]))
    get_run_logger().debug("redis_execute %s on %s", str(args[0]).upper(), _label(block))
    return args


async def _aredis_execute(block: MemoryBlock | str, *args: Any) -> Any:
    """Async twin of :func:`redis_execute`."""
    from redis.exceptions import RedisError

    from .shared._redis import redis_backend

    memory = await aresolve_block(block)
    args = _redis_command(memory, args)
    try:
        return await memory.get_async_client().execute_command(*args)  # type: ignore[attr-defined]
    except RedisError as err:
        raise redis_backend(memory.memory).connection.translate(err) from err


@memory_task(_aredis_execute)
def redis_execute(block: MemoryBlock | str, *args: Any) -> Any:
    """Run one raw Redis command on the server of a ``RedisMemory`` block; return its reply.

    The prefect-redis task of the same name, on our block: ``redis_execute(block, "PING")``,
    ``redis_execute(block, "HSET", "h", "f", "v")`` or one string split like a shell line
    (``"SET a b"``), through the block's pooled ``get_client()`` (``get_async_client()`` when
    awaited). Replies are redis-py's (``True`` for ``PING`` and ``SET``, ``bytes`` values).
    Keys are used as given: the memory's ``key_prefix`` and namespace do not apply. Errors
    are ours (a down server is :class:`~prefect_memory.errors.BackendUnavailable`, retried
    like every memory task).

    Args:
        block: A ``RedisMemory`` block, or a saved one's ``"redis-memory/name"``.
        *args: The command and its arguments.
    """
    from redis.exceptions import RedisError

    from .shared._redis import redis_backend

    memory = resolve_block(block)
    args = _redis_command(memory, args)
    try:
        return memory.get_client().execute_command(*args)  # type: ignore[attr-defined]
    except RedisError as err:
        raise redis_backend(memory.memory).connection.translate(err) from err


__all__ = [
    "MemoryTask",
    "aresolve_block",
    "memory_delete",
    "memory_get",
    "memory_get_many",
    "memory_invalidate_tags",
    "memory_set",
    "memory_set_many",
    "redis_execute",
    "resolve_block",
    "retry_if_unavailable",
]

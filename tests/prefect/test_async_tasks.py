"""The memory tasks awaited in async flows, called in sync flows, submitted and mapped.

In an ``async`` flow every task returns an awaitable whose body awaits the block's async
twins (``aget``, ``aset``...); in a sync flow the same call runs and returns the result,
as Prefect's own integrations dispatch. Against the embedded default (SQLite) and Redis.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from prefect import flow, task
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import unmapped

import prefect_memory as pm
from prefect_memory.blocks import (
    InProcessMemory,
    MemoryBlock,
    MongoDBMemory,
    RedisMemory,
    SqliteMemory,
)
from prefect_memory.tasks import (
    MemoryTask,
    memory_delete,
    memory_get,
    memory_get_many,
    memory_invalidate_tags,
    memory_set,
    memory_set_many,
    redis_execute,
)

MakeBlock = Callable[..., MemoryBlock]
STORES = [SqliteMemory, RedisMemory, MongoDBMemory]  # (Redis, MongoDB: native async path)
EXPECTED = {
    "one": {"name": "Ada"},
    "missing": "none",
    "many": {"user:2": {"name": "Bob"}, "user:3": {}},
    "deleted": True,
    "invalidated": 2,
    "left": {},
}


@pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
def test_every_task_is_awaited_in_an_async_flow(make_block: MakeBlock, cls: type) -> None:
    block = make_block(cls)
    seen: list[bool] = []

    async def awaited(call: Any) -> Any:
        seen.append(inspect.isawaitable(call))
        return await call

    @flow
    async def session_flow() -> dict[str, Any]:
        await awaited(memory_set(block, "user:1", {"name": "Ada"}, tags=["team:a"]))
        entries = {"user:2": {"name": "Bob"}, "user:3": {}}
        stored = await awaited(memory_set_many(block, entries, ttl=60, tags=["team:a"]))
        assert stored == 2
        return {
            "one": await awaited(memory_get(block, "user:1")),
            "missing": await awaited(memory_get(block, "user:9", default="none")),
            "many": await awaited(memory_get_many(block, ["user:2", "user:3", "user:9"])),
            "deleted": await awaited(memory_delete(block, "user:3")),
            "invalidated": await awaited(memory_invalidate_tags(block, "team:a")),
            "left": await awaited(memory_get_many(block, ["user:1", "user:2"])),
        }

    assert asyncio.run(session_flow()) == EXPECTED
    assert seen == [True] * 8
    assert block.get("user:1") is None


@pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
def test_the_same_tasks_run_in_a_sync_flow(make_block: MakeBlock, cls: type) -> None:
    block = make_block(cls)

    @flow
    def session_flow() -> dict[str, Any]:
        assert memory_set(block, "user:1", {"name": "Ada"}, tags=["team:a"]) is None
        memory_set_many(block, {"user:2": {"name": "Bob"}, "user:3": {}}, ttl=60, tags=["team:a"])
        return {
            "one": memory_get(block, "user:1"),
            "missing": memory_get(block, "user:9", default="none"),
            "many": memory_get_many(block, ["user:2", "user:3", "user:9"]),
            "deleted": memory_delete(block, "user:3"),
            "invalidated": memory_invalidate_tags(block, "team:a"),
            "left": memory_get_many(block, ["user:1", "user:2"]),
        }

    assert session_flow() == EXPECTED


@pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
def test_submit_and_map_in_async_and_sync_flows(make_block: MakeBlock, cls: type) -> None:
    block = make_block(cls)
    keys, values = ["k1", "k2", "k3"], [1, 2, 3]

    @flow
    async def async_flow() -> tuple[Any, ...]:
        stored = memory_set.map(unmapped(block), keys, values)
        stored.wait()
        future = memory_get_many.submit(block, keys)
        assert isinstance(future, PrefectFuture)
        got = memory_get.map(unmapped(block), keys).result()
        return future.result(), got

    @flow
    def sync_flow() -> tuple[Any, ...]:
        deleted = memory_delete.map(unmapped(block), keys[:2]).result()
        return deleted, memory_get.submit(block, "k1", default="gone").result()

    assert asyncio.run(async_flow()) == ({"k1": 1, "k2": 2, "k3": 3}, [1, 2, 3])
    assert sync_flow() == ([True, True], "gone")
    assert block.get_many(keys) == {"k3": 3}


class AsyncOnlyMemory(InProcessMemory):
    """Its sync reads fail: a task that works on it in an async flow used the async twins."""

    _block_type_name = "Async Only Test Memory"
    calls: ClassVar[list[str]] = []
    failures: ClassVar[list[Exception]] = []

    def get(self, key: str, default: Any = None) -> Any:
        raise AssertionError("the sync get ran in an async flow")

    async def aget(self, key: str, default: Any = None) -> Any:
        AsyncOnlyMemory.calls.append(key)
        if AsyncOnlyMemory.failures:
            raise AsyncOnlyMemory.failures.pop(0)
        return await self.memory.aget(key, default)


def test_the_awaitable_path_uses_the_blocks_async_twins(unique: str) -> None:
    block = AsyncOnlyMemory(name=f"async-only-{unique}")
    block.memory.set("k", "v")
    AsyncOnlyMemory.calls.clear()
    AsyncOnlyMemory.failures[:] = [pm.BackendUnavailable("down")]
    fast = memory_get.with_options(retry_delay_seconds=0)
    assert isinstance(fast, MemoryTask)

    @flow
    async def reader() -> Any:
        return await fast(block, "k")

    assert asyncio.run(reader()) == "v"
    assert AsyncOnlyMemory.calls == ["k", "k"]  # the transient error was retried


def test_sync_tasks_inside_an_async_flow_and_forced_sync(make_block: MakeBlock) -> None:
    block = make_block(SqliteMemory)

    @task
    def inside_a_sync_task() -> Any:  # a sync task is a sync context, in any flow
        memory_set(block, "a", 1)
        return memory_get(block, "a")

    @flow
    async def mixed() -> tuple[Any, ...]:
        forced = memory_get(block, "a", default="none", _sync=True)  # runs now
        return forced, inside_a_sync_task(), await memory_get.aio(block, "a")

    assert asyncio.run(mixed()) == ("none", 1, 1)


def test_tasks_by_saved_block_name_in_an_async_flow(make_block: MakeBlock, unique: str) -> None:
    block = make_block(SqliteMemory)
    block.save(f"async-{unique}")
    slug = f"sqlite-memory/async-{unique}"

    @flow
    async def by_name() -> Any:
        await memory_set(slug, "a", {"x": 1})
        return await memory_get(slug, "a")

    assert asyncio.run(by_name()) == {"x": 1}
    with pytest.raises(pm.ConfigError, match="block-type-slug/block-name"):
        asyncio.run(_resolve("nope"))


async def _resolve(name: str) -> Any:
    from prefect_memory.tasks import aresolve_block

    return await aresolve_block(name)


def test_redis_execute_sync_and_async(redis_block: RedisMemory, unique: str) -> None:
    key = f"raw:{unique}"

    @flow
    def sync_flow() -> tuple[Any, ...]:
        return (
            redis_execute(redis_block, "PING"),
            redis_execute(redis_block, "SET", key, "v1"),
            redis_execute(redis_block, f"GET {key}"),  # one string, as prefect-redis takes it
        )

    @flow
    async def async_flow() -> tuple[Any, ...]:
        await redis_execute(redis_block, "HSET", key + ":h", "f", "v2")
        return await redis_execute(redis_block, "HGET", key + ":h", "f"), await redis_execute(
            redis_block, "DEL", key, key + ":h"
        )

    assert sync_flow() == (True, True, b"v1")
    assert asyncio.run(async_flow()) == (b"v2", 2)


def test_redis_execute_refuses_other_blocks_and_translates_errors(
    make_block: MakeBlock, redis_block: RedisMemory
) -> None:
    sqlite = make_block(SqliteMemory)

    @flow
    def on_sqlite() -> Any:
        return redis_execute(sqlite, "PING")

    state = on_sqlite(return_state=True)
    assert state.is_failed() and "needs a RedisMemory block" in state.message

    @flow
    async def bad_command() -> Any:
        return await redis_execute(redis_block, "NOSUCHCOMMAND", "x")

    state = asyncio.run(bad_command(return_state=True))
    assert state.is_failed()
    with pytest.raises(pm.BackendError, match="unknown command"):
        state.result()

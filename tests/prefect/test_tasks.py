"""The memory tasks in sync and async flows: results, debug logs, retries of transient errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from prefect import flow

import prefect_memory as pm
from prefect_memory.blocks import InProcessMemory, MemoryBlock, RedisMemory
from prefect_memory.tasks import (
    memory_delete,
    memory_get,
    memory_get_many,
    memory_invalidate_tags,
    memory_set,
    memory_set_many,
    resolve_block,
)

MakeBlock = Callable[..., MemoryBlock]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def task_logs() -> Iterator[list[str]]:
    """Messages of the task-run loggers, debug level included."""
    logger = logging.getLogger("prefect.task_runs")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_tasks_in_a_sync_flow(redis_block: RedisMemory, task_logs: list[str]) -> None:
    @flow
    def session_flow(block: Any) -> dict[str, Any]:
        memory_set(block, "user:1", {"name": "Ada"}, tags=["team:a"])
        memory_set_many(block, {"user:2": {"name": "Bob"}, "user:3": {}}, ttl=60, tags=["team:a"])
        one = memory_get(block, "user:1")
        missing = memory_get(block, "user:9", default="none")
        many = memory_get_many(block, ["user:2", "user:3", "user:9"])
        deleted = memory_delete(block, "user:3")
        invalidated = memory_invalidate_tags(block, "team:a")
        future = memory_get.submit(block, "user:1", default="gone")
        return {
            "one": one,
            "missing": missing,
            "many": many,
            "deleted": deleted,
            "invalidated": invalidated,
            "after": future.result(),
        }

    out = session_flow(redis_block)
    assert out == {
        "one": {"name": "Ada"},
        "missing": "none",
        "many": {"user:2": {"name": "Bob"}, "user:3": {}},
        "deleted": True,
        "invalidated": 2,
        "after": "gone",
    }
    assert redis_block.info("user:2") is None
    joined = "\n".join(task_logs)
    assert "memory_get 'user:1' from RedisMemory (namespace 'results'): hit" in joined
    assert "memory_get 'user:9'" in joined and ": miss" in joined
    assert "memory_get_many from RedisMemory (namespace 'results'): 2 of 3 keys found" in joined
    assert "memory_invalidate_tags 'team:a'" in joined and "2 removed" in joined
    assert "Ada" not in joined  # keys and counts are logged, never values


def test_tasks_in_an_async_flow(make_block: MakeBlock, unique: str) -> None:
    block = make_block(InProcessMemory)
    block.save(f"tasks-{unique}")
    slug = f"in-process-memory/tasks-{unique}"

    @flow
    async def async_flow() -> tuple[Any, ...]:
        await memory_set(block, "a", 1)  # awaitable in an async flow (Prefect's dispatch)
        await memory_set_many(slug, {"b": 2, "c": 3}, tags=["grp"])  # by saved block name
        future = memory_get_many.submit(block, ["a", "b", "c"])
        return (
            await memory_get(slug, "a"),
            future.result(),
            await memory_delete(block, "a"),
            await memory_invalidate_tags(slug, ["grp"]),
        )

    assert asyncio.run(async_flow()) == (1, {"a": 1, "b": 2, "c": 3}, True, 2)


class FlakyMemory(InProcessMemory):
    """Fails its first ``get`` calls with a transient or a permanent error."""

    _block_type_name = "Flaky Test Memory"
    calls: ClassVar[list[str]] = []
    failures: ClassVar[list[Exception]] = []

    def get(self, key: str, default: Any = None) -> Any:
        FlakyMemory.calls.append(key)
        if FlakyMemory.failures:
            raise FlakyMemory.failures.pop(0)
        return super().get(key, default)


@pytest.fixture
def flaky(unique: str) -> Iterator[FlakyMemory]:
    FlakyMemory.calls.clear()
    block = FlakyMemory(name=f"flaky-{unique}")
    block.memory.set("k", "v")
    yield block
    FlakyMemory.failures.clear()


def test_transient_errors_are_retried(flaky: FlakyMemory) -> None:
    FlakyMemory.failures[:] = [pm.BackendUnavailable("down"), pm.BackendTimeout("slow")]
    fast = memory_get.with_options(retry_delay_seconds=0)

    @flow
    def reader() -> Any:
        return fast(flaky, "k")

    assert reader() == "v"
    assert FlakyMemory.calls == ["k", "k", "k"]


def test_other_errors_are_not_retried(flaky: FlakyMemory) -> None:
    FlakyMemory.failures[:] = [pm.SerializationError("bad bytes")]
    fast = memory_get.with_options(retry_delay_seconds=0)

    @flow
    def reader() -> Any:
        return fast(flaky, "k")

    state = reader(return_state=True)
    assert state.is_failed() and "bad bytes" in state.message
    assert FlakyMemory.calls == ["k"]
    assert memory_get.retries == 3


def test_resolve_block_errors() -> None:
    with pytest.raises(pm.ConfigError, match="block-type-slug/block-name"):
        resolve_block("just-a-name")
    with pytest.raises(pm.ConfigError, match="memory block"):
        resolve_block(42)  # type: ignore[arg-type]

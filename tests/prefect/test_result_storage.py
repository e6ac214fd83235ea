"""Memory blocks as Prefect result storage: cache hits, real expiry, key storage, purging."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import redis
from prefect import flow, tags, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.states import State

from prefect_memory.blocks import MemoryBlock, RedisMemory, ResultNotFound, SqliteMemory
from prefect_memory.blocks.results import KEYS_SUFFIX, payload_kind
from prefect_memory.keys import ns_token

MakeBlock = Callable[..., MemoryBlock]


def saved(block: MemoryBlock, name: str) -> MemoryBlock:
    """Save ``block`` and return the loaded instance (the recipe: pass the instance)."""
    block.save(name, overwrite=True)
    return type(block).load(name)


def cached_pipeline(block: MemoryBlock, calls: list[int], **options: Any) -> Callable[..., State]:
    """A flow whose task ``double`` is cached by its inputs in ``block``."""

    @task(cache_policy=options.pop("cache_policy", INPUTS), result_storage=block, **options)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @flow
    def pipeline(x: int) -> State:
        return double(x, return_state=True)

    return pipeline


def redis_keys(block: RedisMemory, namespace: str | None = None) -> list[str]:
    client = redis.Redis.from_url(block.url)
    pattern = f"{block.key_prefix}:*"
    if namespace is not None:
        pattern = f"{block.key_prefix}:{{{ns_token(namespace)}}}:e:*"
    try:
        return sorted(k.decode() for k in client.keys(pattern))
    finally:
        client.close()


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_redis_cached_task_hits_and_its_ttl_expires_in_redis(
    redis_block: RedisMemory, unique: str
) -> None:
    block = saved(redis_block.model_copy(update={"ttl": 5.0}), f"results-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls)

    first = pipeline(21)
    assert (first.name, first.result(), calls) == ("Completed", 42, [21])
    second = pipeline(21)
    assert (second.name, second.result(), calls) == ("Cached", 42, [21])

    entries = redis_keys(block, "results")
    assert len(entries) == 1
    client = redis.Redis.from_url(block.url)
    stored = client.hget(entries[0], "v")
    assert stored is not None and b'"metadata"' in stored and b'"result"' in stored
    assert 0 < client.pttl(entries[0]) <= 5000  # the block's ttl, enforced by Redis
    client.close()

    wait_until(lambda: not redis_keys(block))  # Redis removed the result and its tag sets
    third = pipeline(21)
    assert (third.name, third.result(), calls) == ("Completed", 42, [21, 21])


def test_cache_expiration_sooner_than_ttl_sets_the_store_expiry(
    redis_block: RedisMemory, unique: str
) -> None:
    block = saved(redis_block.model_copy(update={"ttl": 3600.0}), f"exp-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls, cache_expiration=dt.timedelta(seconds=5))
    assert pipeline(1).name == "Completed"
    [entry] = redis_keys(block, "results")
    client = redis.Redis.from_url(block.url)
    assert 0 < client.pttl(entry) <= 5000
    client.close()


def test_sqlite_cached_task_hits_then_recomputes_after_ttl(
    make_block: MakeBlock, unique: str
) -> None:
    block = saved(make_block(SqliteMemory, namespace="results", ttl=4), f"sqlite-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls)
    assert pipeline(5).name == "Completed"
    assert (pipeline(5).name, calls) == ("Cached", [5])
    [key] = block.list_keys()
    assert payload_kind(block.get(key)) == "record"
    wait_until(lambda: not block.exists(key))
    after = pipeline(5)
    assert (after.name, after.result(), calls) == ("Completed", 10, [5, 5])


def test_async_task_in_async_flow_uses_the_async_paths(
    redis_block: RedisMemory, unique: str
) -> None:
    block = saved(redis_block, f"async-{unique}")
    calls: list[int] = []

    @task(cache_policy=INPUTS, result_storage=block)
    async def square(x: int) -> int:
        calls.append(x)
        return x * x

    @flow
    async def pipeline(x: int) -> State:
        return await square(x, return_state=True)

    assert asyncio.run(pipeline(3)).name == "Completed"
    again = asyncio.run(pipeline(3))
    assert (again.name, again.result(), calls) == ("Cached", 9, [3])


def test_a_result_lost_between_lookup_and_load_is_still_served(
    make_block: MakeBlock, unique: str
) -> None:
    class VanishingMemory(SqliteMemory):
        """Loses every entry right after it is read (a TTL ending at the worst moment)."""

        _block_type_name = "Vanishing Test Memory"
        vanish: ClassVar[bool] = False

        def _read_result(self, path: str) -> bytes:
            content = super()._read_result(path)
            if VanishingMemory.vanish:
                self.memory.delete(path)
            return content

    base = make_block(SqliteMemory, namespace="results")
    block = saved(VanishingMemory(path=base.path, namespace="results"), f"vanish-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls)
    assert pipeline(4).name == "Completed"
    VanishingMemory.vanish = True
    hit = pipeline(4)  # exists() reads it, then it is gone before read()
    assert (hit.name, hit.result(), calls) == ("Cached", 8, [4])
    again = pipeline(4)  # now it is really gone: a miss, not a crash
    assert (again.name, again.result(), calls) == ("Completed", 8, [4, 4])
    with pytest.raises(ResultNotFound):
        block.read_path("never-written", _sync=True)


def test_key_storage_in_its_own_namespace(redis_block: RedisMemory, unique: str) -> None:
    block = saved(redis_block, f"keys-{unique}")
    calls: list[int] = []
    policy = INPUTS.configure(key_storage=block.as_key_storage())
    pipeline = cached_pipeline(block, calls, cache_policy=policy)
    assert pipeline(7).name == "Completed"
    hit = pipeline(7)
    assert (hit.name, hit.result(), calls) == ("Cached", 14, [7])
    [result_entry] = redis_keys(block, "results")
    [key_entry] = redis_keys(block, "results" + KEYS_SUFFIX)
    key = result_entry.rsplit(":e:", 1)[1]
    assert key_entry.endswith(":e:" + key)
    assert payload_kind(block.get(key)) == "result"
    assert payload_kind(block.as_key_storage().get(key)) == "metadata"


def test_same_block_as_key_storage_never_corrupts(
    make_block: MakeBlock, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    block = saved(make_block(SqliteMemory, namespace="results"), f"same-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls, cache_policy=INPUTS.configure(key_storage=block))
    with caplog.at_level(logging.WARNING):
        first = pipeline(6)
        second = pipeline(6)
    assert (first.result(), second.result()) == (12, 12)  # recomputed, never crashed
    [key] = block.list_keys()
    assert payload_kind(block.get(key)) == "result"  # the result was not overwritten
    assert payload_kind(block.as_key_storage().get(key)) == "metadata"
    assert "as_key_storage" in caplog.text


def test_list_and_purge_results_by_flow_task_and_tag(make_block: MakeBlock, unique: str) -> None:
    block = saved(make_block(SqliteMemory, namespace="results"), f"purge-{unique}")
    block.set("not-a-result", 1)
    calls: list[str] = []

    @task(cache_policy=INPUTS + TASK_SOURCE, result_storage=block)
    def extract(day: str) -> str:
        calls.append(f"extract {day}")
        return day

    @task(cache_policy=INPUTS + TASK_SOURCE, result_storage=block)
    def fit(day: str) -> str:
        calls.append(f"fit {day}")
        return day.upper()

    @flow(name=f"etl-{unique}")
    def etl(day: str) -> None:
        extract(day)
        with tags("model"):
            fit(day)

    etl("mon")
    etl("tue")
    assert len(calls) == 4
    everything = block.list_results()
    assert len(everything) == 4 and {r.flow for r in everything} == {f"etl-{unique}"}
    assert {r.task for r in block.list_results(task="fit")} == {"fit"}
    assert [r.tags for r in block.list_results(tags=["model"])] == [("model",), ("model",)]
    assert block.list_results(flow="other") == []
    assert all(r.size > 0 and r.created_at for r in everything)

    assert block.purge_results(task="fit", tags=["model"]) == 2
    etl("mon")
    assert calls[4:] == ["fit mon"]  # extract hit its cache, fit recomputed
    assert block.purge_results() == 3
    assert block.list_results() == [] and block.get("not-a-result") == 1


def test_async_list_and_purge(make_block: MakeBlock) -> None:
    block = make_block(SqliteMemory)
    block.write_path("abc", b"\x80\x05K*.", _sync=True)
    assert block.read_path("abc", _sync=True) == b"\x80\x05K*."

    async def scenario() -> None:
        assert [r.key for r in await block.alist_results()] == ["abc"]
        assert await block.aread_path("abc") == b"\x80\x05K*."
        assert await block.awrite_path("d", b"x") == "d"
        assert await block.apurge_results() == 2

    asyncio.run(scenario())

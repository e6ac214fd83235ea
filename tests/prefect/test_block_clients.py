"""Driver clients of the server blocks, as prefect-redis and prefect-aws users get them.

``get_client()`` / ``get_async_client()`` / ``as_connection_params()`` on Redis (redis-py),
MongoDB (pymongo) and S3 (s3fs), built from the block's settings and pooled.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from prefect_memory.blocks import MemoryBlock, MongoDBMemory, RedisMemory, S3Memory

MakeBlock = Callable[..., MemoryBlock]


def test_redis_clients_reach_the_memorys_server(redis_block: RedisMemory) -> None:
    client = redis_block.get_client()
    assert isinstance(client, redis.Redis) and client is redis_block.get_client()
    redis_block.set("k", "v")
    raw = [key for key in client.scan_iter(f"{redis_block.key_prefix}:*")]
    assert raw, "the client sees the memory's keys"
    with redis_block.get_client() as borrowed:  # prefect-redis users close it: still usable
        assert borrowed.ping() is True
    assert redis_block.get_client().ping() is True
    params = redis_block.as_connection_params()
    assert {"host", "port", "db", "username", "password", "ssl"} <= set(params)
    assert redis.Redis(**params).ping() is True


def test_redis_async_client_per_event_loop(redis_block: RedisMemory) -> None:
    async def use() -> tuple[Any, Any]:
        client = redis_block.get_async_client()
        assert client is redis_block.get_async_client()
        await client.set("async-key", b"1")
        return client, await client.get("async-key")

    first, got = asyncio.run(use())
    second, again = asyncio.run(use())  # a new loop: a client of its own
    assert isinstance(first, redis.asyncio.Redis) and first is not second
    assert got == again == b"1"


def test_redis_client_settings_follow_the_block(redis_block: RedisMemory) -> None:
    before = redis_block.get_client()
    redis_block.url = redis_block.url.rsplit("/", 1)[0] + "/5"
    after = redis_block.get_client()
    assert after is not before
    assert after.connection_pool.connection_kwargs["db"] == 5
    copied = pickle.loads(pickle.dumps(redis_block))  # the cache is not pickled
    assert copied.get_client() is not after and copied.get_client().ping() is True
    assert copy.deepcopy(redis_block) == redis_block
    redis_block.close()
    assert redis_block.get_client() is not after


def test_mongo_clients(make_block: MakeBlock, mongo_server: Any) -> None:
    import pymongo

    block = make_block(MongoDBMemory)
    block.set("doc:1", {"n": 1})
    client = block.get_client()
    assert isinstance(client, pymongo.MongoClient) and client is block.get_client()
    assert client[mongo_server.database][block.collection].count_documents({}) == 1
    assert "collection=" not in block.as_connection_params()["host"]

    async def ping() -> Any:
        return await block.get_async_client().admin.command("ping")

    assert asyncio.run(ping())["ok"] == 1
    block.close()
    assert block.get_client() is not client


def test_s3_client(make_block: MakeBlock, s3_server: Any) -> None:
    import s3fs

    block = make_block(S3Memory)
    block.set("report", {"rows": 3})
    fs = block.get_client()
    assert isinstance(fs, s3fs.S3FileSystem)
    bucket_and_prefix = block.url.removeprefix("s3://")
    assert fs.find(bucket_and_prefix), "the filesystem sees the memory's objects"
    params = block.as_connection_params()
    assert params["client_kwargs"]["endpoint_url"] == s3_server.endpoint_url
    assert params["config_kwargs"]["connect_timeout"] == block.timeout

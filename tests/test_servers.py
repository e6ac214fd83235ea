"""The test servers are real: they serve, fail, and come back as real servers do."""

from __future__ import annotations

import uuid

import pytest

from servers import MongoWireServer, RedisServer, S3Server


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_set_get(redis_server: RedisServer) -> None:
    import redis

    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        key = _unique("k")
        assert client.set(key, b"value", ex=60)
        assert client.get(key) == b"value"
        assert client.ping()
    finally:
        client.close()


@pytest.mark.redis
def test_redis_kill_restart_reconnect() -> None:
    import redis

    with RedisServer(appendonly=True, appendfsync="always") as server:
        port, data_dir = server.port, server.data_dir
        client = redis.Redis.from_url(
            server.url, socket_connect_timeout=2, socket_timeout=2, retry_on_timeout=False
        )
        try:
            client.set("before-restart", "1")
            server.restart()  # graceful: AOF persisted
            assert (server.port, server.data_dir) == (port, data_dir)
            assert client.get("before-restart") == b"1"  # redis-py reconnects

            client.set("before-kill", "2")
            old_pid = server.pid
            server.kill()
            assert not server.is_running()
            with pytest.raises(redis.ConnectionError):
                client.ping()

            server.restart()
            assert server.pid != old_pid and server.port == port
            assert client.ping()
            assert client.get("before-kill") == b"2"  # appendfsync always survives SIGKILL
        finally:
            client.close()
    assert server.data_dir is None


# ---------------------------------------------------------------------------
# MongoDB wire protocol
# ---------------------------------------------------------------------------


@pytest.mark.mongodb
def test_mongo_crud_bulk_ping(mongo_server: MongoWireServer) -> None:
    import pymongo

    client = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=10_000)
    try:
        assert client.admin.command("ping")["ok"] == 1
        coll = client[mongo_server.database][_unique("things")]
        coll.insert_one({"_id": "a", "n": 1})
        result = coll.bulk_write(
            [
                pymongo.InsertOne({"_id": "b", "n": 2}),
                pymongo.UpdateOne({"_id": "a"}, {"$inc": {"n": 10}}),
                pymongo.UpdateOne({"_id": "c"}, {"$set": {"n": 3}}, upsert=True),
                pymongo.DeleteOne({"_id": "b"}),
            ],
            ordered=True,
        )
        assert (result.inserted_count, result.modified_count) == (1, 1)
        assert (result.upserted_count, result.deleted_count) == (1, 1)
        docs = list(coll.find({}, {"_id": 1, "n": 1}).sort("_id", 1))
        assert docs == [{"_id": "a", "n": 11}, {"_id": "c", "n": 3}]
        coll.drop()
    finally:
        client.close()


@pytest.mark.mongodb
def test_mongo_sqlite_engine_survives_kill() -> None:
    import pymongo

    server = MongoWireServer(engine="sqlite")
    if server.external:
        pytest.skip("PREFECT_MEMORY_TEST_MONGODB_URL points at an external server")
    with server:
        client = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=10_000)
        try:
            client[server.database].kv.insert_one({"_id": "x", "v": 1})
            server.kill()
            server.restart()
            assert client[server.database].kv.find_one({"_id": "x"}) == {"_id": "x", "v": 1}
        finally:
            client.close()


# ---------------------------------------------------------------------------
# S3 (SeaweedFS)
# ---------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_write_read(s3_server: S3Server) -> None:
    import s3fs

    assert "region_name" not in s3_server.storage_options["client_kwargs"]
    bucket = s3_server.make_bucket(_unique("pm"))
    assert s3_server.make_bucket(bucket) == bucket  # idempotent
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options)
    path = f"{bucket}/dir/object.bin"
    payload = uuid.uuid4().bytes * 1000
    with fs.open(path, "wb") as fh:
        fh.write(payload)
    assert fs.cat(path) == payload
    assert fs.ls(f"{bucket}/dir") == [path]
    fs.rm(path)
    assert not fs.exists(path)


@pytest.mark.s3
def test_s3_rejects_wrong_credentials(s3_server: S3Server) -> None:
    import s3fs

    bucket = s3_server.make_bucket(_unique("pm"))
    good = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options)
    good.pipe(f"{bucket}/secret.txt", b"top")

    options = {**s3_server.storage_options, "secret": "not-the-secret"}
    bad = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    with pytest.raises(PermissionError):
        bad.cat(f"{bucket}/secret.txt")
    with pytest.raises(PermissionError):
        bad.pipe(f"{bucket}/evil.txt", b"x")
    assert not good.exists(f"{bucket}/evil.txt")


@pytest.mark.s3
def test_s3_data_survives_kill_restart() -> None:
    with S3Server() as server:
        bucket = server.make_bucket("persist")
        fs = server.filesystem()
        fs.pipe(f"{bucket}/k", b"kept")
        ports = dict(server.ports)
        server.kill()
        server.restart()
        assert server.ports == ports
        assert server.filesystem().cat(f"{bucket}/k") == b"kept"


@pytest.mark.s3
def test_moto_s3(moto_s3_server) -> None:
    bucket = moto_s3_server.make_bucket(_unique("pm"))
    fs = moto_s3_server.filesystem()
    fs.pipe(f"{bucket}/a", b"1")
    assert fs.cat(f"{bucket}/a") == b"1"

"""Redis backend specifics against a real redis-server (no mocks).

Round trips are counted with MONITOR, which shows every command a client sends and
tells apart the ones a Lua script runs inside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pydantic import SecretStr

import prefect_memory as pm
from memories import memory_opener
from prefect_memory.errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError
from prefect_memory.keys import ns_token
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.redisdb import RedisBackend
from servers import RedisServer, free_port

pytestmark = pytest.mark.redis

PASSWORD = "pm-test-s3cret-" + uuid.uuid4().hex[:6]


def _prefix() -> str:
    return "pmt" + uuid.uuid4().hex[:10]


@pytest.fixture
def prefix() -> str:
    return _prefix()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def open_mem(redis_server: RedisServer, prefix: str) -> Iterator[Any]:
    with memory_opener(redis_server.url, prefix) as _open:
        yield _open


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RedisServer]:
    """A redis-server that requires a password.

    The password is set once the server runs: RedisServer's readiness probe is an
    unauthenticated PING, which ``--requirepass`` would answer with NOAUTH forever.
    """
    server = RedisServer()
    try:
        server.start()
    except Exception as exc:  # pragma: no cover - reported as a failure, with the reason
        pytest.fail(f"redis-server could not start: {exc}", pytrace=False)
    client = server.client()
    client.config_set("requirepass", PASSWORD)
    client.close()
    yield server
    server.stop()


@contextlib.contextmanager
def client_commands(server: RedisServer) -> Iterator[list[str]]:
    """Collect the names of the commands clients send while the block runs (MONITOR).

    Commands run by Lua scripts inside the server are left out: they cost no round trip.
    """
    names: list[str] = []
    marker = "pm-monitor-end-" + uuid.uuid4().hex
    closer = server.client()
    closer.ping()  # connected before MONITOR starts: its handshake is not counted
    watcher = server.client()
    ready = threading.Event()
    failed: list[BaseException] = []

    def watch() -> None:
        try:
            with watcher.monitor() as monitor:
                ready.set()
                for event in monitor.listen():
                    command = event["command"]
                    if marker in command:
                        return
                    if event.get("client_type") != "lua":
                        names.append(command.split(" ", 1)[0].strip('"').upper())
        except BaseException as exc:  # pragma: no cover - surfaced below
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert ready.wait(10), "MONITOR did not start"
    try:
        yield names
    finally:
        closer.echo(marker)
        closer.close()
        thread.join(20)
        watcher.close()
    assert not failed, failed
    assert not thread.is_alive(), "MONITOR did not see the end marker"


# -- configuration -----------------------------------------------------------------------------
def test_from_url_options_and_validation() -> None:
    backend = RedisBackend.from_url(
        "redis://localhost:6390/3?timeout=2.5&key_prefix=app", max_connections=4
    )
    assert (backend.host, backend.port, backend.db) == ("localhost", 6390, 3)
    assert backend.timeout == 2.5 and backend.key_prefix == "app"
    assert backend.max_connections == 4
    assert RedisBackend.from_url("redis://h").timeout == 5.0
    assert RedisBackend.from_url("redis://h").key_prefix == "pm"
    with pytest.raises(ConfigError, match=r"bogus.*other|other.*bogus"):
        RedisBackend.from_url("redis://h", bogus=1, other=2)
    with pytest.raises(ConfigError, match="nope"):
        RedisBackend.from_url("redis://h/0?nope=1")
    for bad in ("a{b", "a}b", "x*", "sp ace", ""):
        with pytest.raises(ConfigError, match="key_prefix"):
            RedisBackend.from_url("redis://h", key_prefix=bad)
    with pytest.raises(ConfigError, match="timeout"):
        RedisBackend.from_url("redis://h", timeout=0)
    with pytest.raises(ConfigError, match="rediss"):
        RedisBackend.from_url("redis://h", ssl_cert_reqs="none")
    tls = RedisBackend.from_url("rediss://h:6380/0", ssl_cert_reqs="none")
    assert tls.ssl_options == {"ssl_cert_reqs": "none"} and tls.url.startswith("rediss://")
    assert RedisBackend.capabilities.native_ttl and RedisBackend.capabilities.server_scripts
    assert not RedisBackend.capabilities.pushdown  # no scan_query: patterns go to SCAN MATCH
    assert pm.open_memory("rediss://h:1/0").backend.scheme == "redis"


def test_no_connection_until_used(prefix: str) -> None:
    port = free_port()  # nothing listens there: opening must not fail
    mem = pm.open_memory(f"redis://127.0.0.1:{port}/0", key_prefix=prefix)
    assert mem.backend._client is None


def test_password_never_shown(auth_server: RedisServer, prefix: str) -> None:
    url = auth_server.url
    for mem in (
        pm.open_memory(url, key_prefix=prefix, password=SecretStr(PASSWORD)),
        pm.open_memory(url, key_prefix=prefix, password=PASSWORD),
        pm.open_memory(url.replace("redis://", f"redis://:{PASSWORD}@"), key_prefix=prefix),
    ):
        try:
            mem.set("k", {"v": 1})
            assert mem.get("k") == {"v": 1}
            backend = mem.backend
            for text in (repr(mem), repr(backend), str(backend.url), repr(vars(backend))):
                assert PASSWORD not in text
            assert "***" in backend.url
        finally:
            mem.clear()
            mem.close()
    wrong = "wrong-" + PASSWORD
    mem = pm.open_memory(url, key_prefix=prefix, password=SecretStr(wrong), timeout=2)
    with pytest.raises(BackendError) as info:
        mem.get("k")
    assert wrong not in str(info.value) and PASSWORD not in str(info.value)
    assert f"{auth_server.host}:{auth_server.port}" in str(info.value)
    mem.close()
    with pytest.raises(BackendError):
        pm.open_memory(url, key_prefix=prefix, timeout=2).get("k")  # no password at all


# -- failures ------------------------------------------------------------------------------------
def test_dead_server_fails_fast(prefix: str) -> None:
    port = free_port()
    mem = pm.open_memory(f"redis://127.0.0.1:{port}/0", key_prefix=prefix, timeout=1)
    for call in (
        lambda: mem.get("k"),
        lambda: mem.set_many({"a": 1, "b": 2}),
        lambda: mem.ping(),
        lambda: list(mem.keys()),
        lambda: mem.exists("k"),
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert time.monotonic() - started < 1.5
        assert isinstance(info.value, ConnectionError)
        assert f"127.0.0.1:{port}" in str(info.value)
        assert isinstance(info.value.__cause__, redis.RedisError)
    mem.close()


def test_kill_and_restart_same_memory(redis_server: RedisServer, open_mem: Any) -> None:
    mem = open_mem(timeout=1)
    mem.set("k", 1)
    assert mem.get("k") == 1
    try:
        redis_server.kill()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            mem.get("k")
        with pytest.raises(BackendUnavailable):
            mem.set("k", 2)
        assert time.monotonic() - started < 3
    finally:
        redis_server.restart()
    # Same Memory object: stale connections are replaced and the scripts reloaded (NOSCRIPT).
    assert mem.get("k") is None  # no persistence configured: the data went with the process
    mem.set_many({"k": 3, "j": 4}, ttl=60, tags=["t"])
    assert mem.get_many(["k", "j"]) == {"k": 3, "j": 4}
    assert mem.invalidate_tags("t") == 2
    mem.ping()


def test_timeout_is_backend_timeout(redis_server: RedisServer, open_mem: Any) -> None:
    mem = open_mem(timeout=0.5)
    mem.set("k", 1)
    busy = redis_server.client()
    spin = busy.register_script(
        "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
        "while true do local u = redis.call('TIME') "
        "if u[1] * 1000000 + u[2] - s > 1500000 then return 1 end end"
    )
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as info:
            mem.get("k")
        assert time.monotonic() - started < 1.2
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, BackendUnavailable)
    finally:
        worker.join(10)
        busy.close()
    assert mem.get("k") == 1  # the timed-out connection was dropped, not reused


def test_server_error_is_backend_error(raw: redis.Redis, open_mem: Any, prefix: str) -> None:
    mem = open_mem("wrongtype")
    raw.set(f"{prefix}:{{{ns_token('wrongtype')}}}:e:k", "not a hash")
    with pytest.raises(BackendError) as info:
        mem.get("k")
    assert not isinstance(info.value, BackendUnavailable)
    assert "WRONGTYPE" in str(info.value)
    assert mem.get_many(["other"]) == {}  # the connection is still good


# -- round trips ---------------------------------------------------------------------------------
def test_batches_are_one_call_each(redis_server: RedisServer, open_mem: Any) -> None:
    mem = open_mem(batch_size=1000)
    data = {f"key:{i:05d}": {"i": i, "name": f"n{i}"} for i in range(2000)}
    # Connection made and scripts loaded outside the counted blocks (a fresh server answers
    # NOSCRIPT once per script: EVALSHA, SCRIPT LOAD, EVALSHA).
    mem.set("warm", 0)
    mem.get("warm")
    mem.delete("warm")
    batches = 2
    with client_commands(redis_server) as sent:
        mem.set_many(data, ttl=600)
    assert sent.count("EVALSHA") == batches, sent
    assert len(sent) <= batches + 2, sent  # + a SCRIPT LOAD at most
    with client_commands(redis_server) as sent:
        got = mem.get_many(list(data))
    assert got == data
    assert sent.count("EVALSHA") == batches and len(sent) <= batches + 2, sent
    with client_commands(redis_server) as sent:
        assert mem.delete_many(list(data)[:1500]) == 1500
    assert sent.count("EVALSHA") == batches and len(sent) <= batches + 2, sent
    with client_commands(redis_server) as sent:
        mem.get("key:01999")
        assert mem.exists("key:01999")
    assert sent == ["EVALSHA", "HGET"], sent


def test_async_twins_cost_the_same_round_trips(redis_server: RedisServer, open_mem: Any) -> None:
    mem = open_mem(batch_size=1000)
    data = {f"key:{i:05d}": {"i": i} for i in range(2000)}
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    try:
        # Connection, layout check and scripts (see above) outside the counted blocks.
        run(mem.aset("warm", 0, tags=["w"]))
        run(mem.aget("warm"))
        run(mem.atagged("w"))
        run(mem.adelete("warm"))
        run(mem.aexists("warm"))
        with client_commands(redis_server) as sent:
            run(mem.aset_many(data, ttl=600))
        assert sent.count("EVALSHA") == 2 and len(sent) <= 4, sent  # + a SCRIPT LOAD at most
        with client_commands(redis_server) as sent:
            assert run(mem.aget_many(list(data))) == data
        assert sent == ["EVALSHA", "EVALSHA"], sent
        with client_commands(redis_server) as sent:
            run(mem.aset("key:00001", 1, tags=["t"]))
            assert run(mem.aget("key:00001")) == 1
            assert run(mem.aexists("key:00001"))
            assert run(mem.atagged("t")) == ["key:00001"]
            assert run(mem.adelete_many(list(data)[:1500])) == 1500
        assert sent == ["EVALSHA", "EVALSHA", "HGET", "EVALSHA", "EVALSHA", "EVALSHA"], sent
    finally:
        loop.close()


def test_batch_of_thousands_in_one_script(open_mem: Any) -> None:
    mem = open_mem()
    backend, now = mem.backend, time.time()
    records = {
        f"big:{i}": Record(b"\x01\xa1x" * 20, now, now, now, expires_at=now + 60, ttl=60.0)
        for i in range(6000)
    }
    backend.put_many("ns", records, now=now)
    got = backend.get_many("ns", list(records), now=now, touch=True)
    assert len(got) == 6000 and all(r.access_count == 1 for r in got.values())
    assert len(backend.exists_many("ns", list(records)[:3000], now=now)) == 3000
    assert backend.delete_many("ns", list(records), now=now) == 6000


def test_records_with_different_metadata_in_one_batch(open_mem: Any) -> None:
    mem = open_mem()
    backend, now = mem.backend, time.time()
    records = {
        "plain": Record(b"p", now, now, now),
        "ttl": Record(b"t", now - 5, now, now - 1, 4, now + 30, 30.0, False, ("a",), 3),
        "slide": Record(b"s", now, now, now, 0, now + 10, 10.0, True, ("a", "b"), 1),
        "dead": Record(b"d", now - 20, now - 20, now - 20, 0, now - 10, 10.0),
    }
    backend.put_many("ns", records, now=now)
    got = backend.get_many("ns", list(records), now=now)
    assert set(got) == {"plain", "ttl", "slide"}
    for key in got:
        assert got[key] == records[key], key
    assert backend.tagged("ns", ["b"], now=now) == {"slide"}
    assert backend.tagged("ns", ["a"], now=now) == {"ttl", "slide"}


def test_upsert_keeps_history_and_times_follow_now(open_mem: Any) -> None:
    backend = open_mem().backend
    t0 = time.time()
    backend.put_many("ns", {"k": Record(b"1", t0, t0, t0, ttl=None)}, now=t0)
    backend.get_many("ns", ["k"], now=t0 + 1, touch=True)
    backend.get_many("ns", ["k"], now=t0 + 2, touch=True)
    backend.put_many("ns", {"k": Record(b"2", t0 + 3, t0 + 3, t0 + 3, tags=("x",))}, now=t0 + 3)
    record = backend.get_many("ns", ["k"], now=t0 + 4)["k"]
    assert (record.value, record.version, record.access_count) == (b"2", 2, 2)
    assert record.created_at == t0 and record.updated_at == t0 + 3
    assert record.last_access == t0 + 3 and record.tags == ("x",)
    # An entry expired by the caller's clock counts as gone, even before Redis drops it.
    backend.put_many("ns", {"e": Record(b"e", t0, t0, t0, expires_at=t0 + 100, ttl=100.0)}, now=t0)
    assert backend.get_many("ns", ["e"], now=t0 + 101) == {}
    assert backend.exists_many("ns", ["e"], now=t0) == {"e"}
    assert backend.delete_many("ns", ["e"], now=t0 + 101) == 0  # removed, but was not live
    assert backend.get_many("ns", ["e"], now=t0) == {}
    backend.put_many(
        "ns", {"e": Record(b"e", t0, t0, t0, 7, t0 + 100, 100.0, False, (), 5)}, now=t0
    )
    backend.put_many("ns", {"e": Record(b"f", t0 + 200, t0 + 200, t0 + 200)}, now=t0 + 200)
    fresh = backend.get_many("ns", ["e"], now=t0 + 200)["e"]
    assert (fresh.version, fresh.access_count, fresh.created_at) == (1, 0, t0 + 200)


def test_native_expiry_and_sliding(raw: redis.Redis, open_mem: Any, prefix: str) -> None:
    mem = open_mem()
    mem.set("fixed", 1, ttl=30)
    mem.set("slide", 1, ttl=30, refresh=True)
    mem.set("forever", 1)
    entry = f"{prefix}:{{ns}}:e:"
    assert 29_000 < raw.pttl(entry + "fixed") <= 30_000
    assert raw.pttl(entry + "forever") == -1
    time.sleep(0.3)
    before = raw.pttl(entry + "slide")
    assert mem.get("slide") == 1 and mem.get("fixed") == 1
    assert raw.pttl(entry + "slide") > before + 200  # pushed back to 30 s
    assert raw.pttl(entry + "fixed") < 30_000 - 200  # not pushed
    mem.set("fixed", 2)  # rewritten without ttl: persistent now
    assert raw.pttl(entry + "fixed") == -1
    assert mem.purge_expired() == 0


# -- layout --------------------------------------------------------------------------------------
def _hash_tag(name: str) -> str:
    start = name.index("{")
    return name[start + 1 : name.index("}", start)]


def test_layout_is_collision_free(raw: redis.Redis, open_mem: Any, prefix: str) -> None:
    spaces = ["a:b", "a", "x}{y", "s*", "s?", "{a}", "sp ace", "日本"]
    for ns in spaces:
        mem = open_mem(ns)
        mem.set("b:c", ns, tags=["t:1"])
        mem.set("c", ns)
    names = [name.decode() for name in raw.scan_iter(match=f"{prefix}:*", count=1000)]
    assert len(names) == len(spaces) * 3  # two entries and one tag index each
    tags_per_ns: dict[str, set[str]] = {}
    for name in names:
        assert name.count("{") == 1 and name.count("}") == 1, name
        tags_per_ns.setdefault(_hash_tag(name), set()).add(name)
    assert set(tags_per_ns) == {ns_token(ns) for ns in spaces}
    for ns in spaces:
        token = ns_token(ns)
        assert tags_per_ns[token] == {
            f"{prefix}:{{{token}}}:e:b:c",
            f"{prefix}:{{{token}}}:e:c",
            f"{prefix}:{{{token}}}:t:t:1",
        }
        mem = open_mem(ns)
        assert sorted(mem.keys()) == ["b:c", "c"] and mem.get("c") == ns
        assert mem.invalidate_tags("t:1") == 1


def test_scan_pattern_pushdown(open_mem: Any) -> None:
    mem = open_mem()
    keys = ["k:1", "k:2", "k:10", "é:1", "a[1]", "a\\b", "a^b", "a]b", "other"]
    mem.set_many({k: 1 for k in keys})
    assert sorted(mem.keys("k:?")) == ["k:1", "k:2"]
    assert sorted(mem.keys("?:1")) == ["k:1", "é:1"]
    assert sorted(mem.keys("a[[]*")) == ["a[1]"]
    assert sorted(mem.keys("a\\*")) == ["a\\b"]
    assert sorted(mem.keys("a^*")) == ["a^b"]
    assert sorted(mem.keys("a]*")) == ["a]b"]
    assert sorted(mem.keys("[!k]*")) == sorted(set(keys) - {"k:1", "k:2", "k:10"})
    assert len(list(mem.backend.scan("ns", None, now=time.time()))) == len(keys)


# -- tag indexes ---------------------------------------------------------------------------------
def test_tag_index_expires_with_its_members(raw: redis.Redis, open_mem: Any, prefix: str) -> None:
    mem = open_mem()
    tag_key = f"{prefix}:{{ns}}:t:"
    mem.set_many({"a": 1, "b": 2}, ttl=0.5, tags=["short"])
    mem.set("c", 3, ttl=30, tags=["mixed"])
    mem.set("d", 4, ttl=0.5, tags=["mixed"])
    assert 0 < raw.pttl(tag_key + "short") <= 500
    assert 29_000 < raw.pttl(tag_key + "mixed") <= 30_000  # its longest-lived member
    mem.set("e", 5, tags=["mixed"])  # no ttl: the index becomes persistent
    assert raw.pttl(tag_key + "mixed") == -1
    time.sleep(0.8)
    assert not raw.exists(tag_key + "short")  # gone with its members, by Redis itself
    assert mem.delete("e")  # the persistent member leaves: back to the 30 s of "c"
    assert 28_000 < raw.pttl(tag_key + "mixed") <= 30_000
    assert raw.zcard(tag_key + "mixed") == 1  # "d" expired and was purged on the way
    assert mem.invalidate_tags("mixed") == 1
    assert not raw.exists(tag_key + "mixed")


def test_tag_index_does_not_grow_with_dead_members(
    raw: redis.Redis, open_mem: Any, prefix: str
) -> None:
    mem = open_mem()
    tag_key = f"{prefix}:{{ns}}:t:user:7"
    mem.set("profile", 1, tags=["user:7"])  # keeps the index persistent
    for round_ in range(4):
        mem.set_many({f"session:{round_}:{i}": i for i in range(50)}, ttl=0.2, tags=["user:7"])
        time.sleep(0.3)
    mem.set("session:last", 1, ttl=60, tags=["user:7"])
    assert raw.zcard(tag_key) == 2  # profile + session:last; 200 dead ones purged
    assert raw.pttl(tag_key) == -1


def test_rewrite_and_delete_leave_old_tag_indexes(
    raw: redis.Redis, open_mem: Any, prefix: str
) -> None:
    mem = open_mem()
    tag_key = f"{prefix}:{{ns}}:t:"
    mem.set("k", 1, tags=["old", "kept"])
    mem.set("k", 2, tags=["kept", "new"])
    assert not raw.exists(tag_key + "old")
    assert raw.zrange(tag_key + "kept", 0, -1) == [b"k"]
    assert raw.zrange(tag_key + "new", 0, -1) == [b"k"]
    assert mem.delete("k")
    assert not raw.exists(tag_key + "kept") and not raw.exists(tag_key + "new")


def test_clear_drops_leftover_tag_indexes(raw: redis.Redis, open_mem: Any, prefix: str) -> None:
    mem = open_mem()
    other = open_mem("other")
    mem.set_many({"a": 1, "b": 2}, tags=["t"])
    other.set("a", 1, tags=["t"])
    assert mem.clear() == 2
    assert not list(raw.scan_iter(match=f"{prefix}:{{ns}}:*"))
    assert other.invalidate_tags("t") == 1


# -- clients -------------------------------------------------------------------------------------
def test_pickled_memory_reconnects(open_mem: Any) -> None:
    mem = open_mem()
    mem.set("k", {"v": 1})
    assert mem.backend._client is not None
    clone = pickle.loads(pickle.dumps(mem))
    assert clone.backend._client is None  # the client is not pickled...
    assert clone.get("k") == {"v": 1}  # ...and is rebuilt on first use
    clone.set("k2", 2)
    assert mem.get("k2") == 2
    clone.close()
    mem.close()
    assert mem.get("k2") == 2  # usable after close: reconnects
    again = pickle.loads(pickle.dumps(mem))
    assert again.get("k") == {"v": 1}
    again.close()


def test_threads_share_a_bounded_pool(open_mem: Any) -> None:
    mem = open_mem(max_connections=2)
    mem.set_many({f"k{i}": i for i in range(50)})
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(50):
                assert mem.get(f"k{i}") == i
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    client = mem.backend._client
    assert client is not None and len(client.idle) <= 2


def test_one_connection_reused_not_one_per_call(raw: redis.Redis, open_mem: Any) -> None:
    before = int(raw.info("stats")["total_connections_received"])
    mem = open_mem()
    for i in range(30):
        mem.set(f"k{i}", i)
        assert mem.get(f"k{i}") == i
        mem.exists(f"k{i}")
    assert int(raw.info("stats")["total_connections_received"]) - before <= 2


def _child_reads(mem: pm.Memory, queue: Any) -> None:
    queue.put((mem.get("k"), mem.backend._client is not None))
    mem.set("from-child", 1)


def test_forked_child_uses_its_own_connections(open_mem: Any) -> None:
    import multiprocessing

    mem = open_mem()
    mem.set("k", {"v": 1})  # the parent now holds a connection
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(mem, queue))
    child.start()
    assert queue.get(timeout=20) == ({"v": 1}, True)
    child.join(20)
    assert child.exitcode == 0
    for _ in range(20):  # the parent's connection was not shared with the child
        assert mem.get("k") == {"v": 1}
    assert mem.get("from-child") == 1

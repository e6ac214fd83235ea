"""The native async path of the Redis store, against real redis-servers (no mocks).

``mem.aget``/``aset``/... on ``redis://`` run the backend's bodies on the event loop through
redis.asyncio connections (no worker thread per call): what they return, what they store,
the errors they raise and their connections (per loop, after a fork, bounded, cancelled,
TLS, ACL) must be those of the blocking path.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import redis

import prefect_memory as pm
from memories import memory_opener
from prefect_memory.errors import (
    BackendPermissionError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ConsensusError,
    InvalidKeyError,
    InvalidTTLError,
    SerializationError,
)
from prefect_memory.keys import ns_token
from prefect_memory.plugins.redis import RedisBackend
from prefect_memory.plugins.redis.aio import AsyncRedisConnection
from servers import RedisServer, ServerError, TlsRedisServer, free_port

pytestmark = pytest.mark.redis

T0 = 1_700_000_000.0


@pytest.fixture
def open_mem(redis_server: RedisServer) -> Iterator[Callable[..., pm.Memory]]:
    with memory_opener(redis_server.url, "pma" + uuid.uuid4().hex[:10]) as _open:
        yield _open


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@contextlib.contextmanager
def no_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any hop to a worker thread while the block runs."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a call hopped to a thread: {args[:1]}")

    with monkeypatch.context() as patch:
        patch.setattr(asyncio, "to_thread", refuse)
        yield


def test_redis_declares_native_async() -> None:
    assert RedisBackend.capabilities.native_async
    assert not pm.open_memory("memory://").backend.capabilities.native_async


def test_every_twin_runs_on_the_loop_and_matches_the_blocking_path(
    open_mem: Callable[..., pm.Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [T0]
    mem = open_mem()
    mem.clock = lambda: now[0]

    async def first() -> None:
        await mem.aexists("warm")  # the first request learns the server is not a Cluster

    asyncio.run(first())

    async def twins() -> dict[str, Any]:
        out: dict[str, Any] = {}
        await mem.aset("a", {"n": 1}, ttl=60, tags=["t1", "t2"])
        await mem.aset_many({"b": [1, 2], "c": "three", "d": b"\x00raw"}, tags=["t2"])
        await mem.aset("s", 1, ttl=30, refresh=True)
        out["get"] = await mem.aget("a")
        out["default"] = await mem.aget("missing", "dflt")
        out["many"] = await mem.aget_many(["a", "b", "c", "d", "missing"])
        out["exists"] = (await mem.aexists("a"), await mem.aexists("missing"))
        out["add"] = (await mem.aadd("a", 0), await mem.aadd("e", 5, tags=["t1"]))
        out["tagged"] = await mem.atagged("t1", ["t2"])
        out["info"] = await mem.ainfo("a")
        now[0] += 10
        await mem.aget("s")  # sliding: pushed to now + 30
        out["sliding"] = await mem.ainfo("s")
        out["delete"] = (await mem.adelete("c"), await mem.adelete("c"))
        out["delete_many"] = await mem.adelete_many(["d", "missing"])
        out["invalidated"] = await mem.ainvalidate_tags("t1")
        out["left"] = await mem.aget_many(["a", "b", "e", "s"])
        return out

    with no_threads(monkeypatch):
        got = asyncio.run(twins())
    assert got["get"] == {"n": 1} and got["default"] == "dflt"
    assert got["many"] == {"a": {"n": 1}, "b": [1, 2], "c": "three", "d": b"\x00raw"}
    assert got["exists"] == (True, False)
    assert got["add"] == (False, True)
    assert got["tagged"] == ["a", "b", "c", "d", "e"]
    info = got["info"]
    assert (info.access_count, info.version, info.ttl, info.tags) == (2, 1, 60.0, ("t1", "t2"))
    assert info.expires_at.timestamp() == T0 + 60
    assert got["sliding"].expires_at.timestamp() == T0 + 10 + 30
    assert got["delete"] == (True, False) and got["delete_many"] == 1
    assert got["invalidated"] == 2  # a and e
    assert got["left"] == {"b": [1, 2], "s": 1}

    # The blocking path reads what the async one wrote, metadata included.
    sync_info = mem.info("b")
    assert (sync_info.access_count, sync_info.tags) == (2, ("t2",))
    mem.set("b", [3])  # a rewrite keeps the history: version 2

    async def after() -> Any:
        return await mem.ainfo("b")

    with no_threads(monkeypatch):
        again = asyncio.run(after())
    assert (again.version, again.access_count, again.created_at) == (
        2,
        2,
        sync_info.created_at,
    )


def test_ttl_expiry_and_bad_input_as_on_the_blocking_path(
    open_mem: Callable[..., pm.Memory],
) -> None:
    now = [T0]
    mem = open_mem()
    mem.clock = lambda: now[0]

    async def main() -> None:
        await mem.aset("short", 1, ttl=5)
        assert await mem.aget("short") == 1
        now[0] += 6
        assert await mem.aget("short") is None
        assert not await mem.aexists("short")
        with pytest.raises(InvalidTTLError):
            await mem.aset("k", 1, ttl=-1)
        with pytest.raises(InvalidKeyError):
            await mem.aget("")
        with pytest.raises(InvalidKeyError):
            await mem.aset_many({"ok": 1, "": 2})
        with pytest.raises(TypeError, match="mapping"):
            await mem.aset_many([("a", 1)])  # type: ignore[arg-type]
        assert await mem.aget_many(["ok"]) == {}  # refused whole, before any write

    asyncio.run(main())


def test_hooks_codecs_and_a_default_ttl(open_mem: Callable[..., pm.Memory]) -> None:
    class Upper(pm.Hook):
        def before_save(self, key: str, value: Any) -> Any:
            return value.upper()

        def encode_bytes(self, key: str, data: bytes) -> bytes:
            return data[::-1]

        def decode_bytes(self, key: str, data: bytes) -> bytes:
            return data[::-1]

    mem = open_mem(hooks=[Upper()], compression=True, compress_threshold=8, ttl=120)

    async def main() -> tuple[Any, ...]:
        await mem.aset("k", "quiet " * 50)
        return await mem.aget("k"), await mem.ainfo("k")

    value, info = asyncio.run(main())
    assert value == "QUIET " * 50 and info.ttl == 120.0
    assert mem.get("k") == value  # the blocking path decodes what the async one wrote


#: Fields another client may leave in an entry's hash, and what reading it gives.
HOSTILE = {
    "v": (b"\xc1 not msgpack", SerializationError),
    "m": (b"\xc1\xc1", SerializationError),  # not msgpack at all
    "m-short": (msgpack.packb([1.0, 2.0]), SerializationError),
    "m-tags": (msgpack.packb([1.0, 1.0, False, False, 5, 1]), SerializationError),
    "m-kinds": (msgpack.packb(["c", 1.0, False, False, [], 1]), SerializationError),
    "n": (b"not a count", None),  # read as no access yet, as the scripts read it
    "x": (b"not an expiry", None),  # no expiry, as the scripts read it
}


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_hostile_entries_raise_our_errors_on_both_paths(
    open_mem: Callable[..., pm.Memory], raw: redis.Redis, field: str
) -> None:
    mem = open_mem()
    mem.set("k", {"v": 1}, tags=["t"])
    value, error = HOSTILE[field]
    raw.hset(f"{mem.backend.key_prefix}:{{{ns_token('ns')}}}:e:k", field.split("-")[0], value)

    async def read() -> tuple[Any, ...]:
        return await mem.aget("k"), await mem.ainfo("k"), await mem.aget_many(["k"])

    if error is None:
        got, info, many = asyncio.run(read())
        assert got == {"v": 1} and many == {"k": {"v": 1}} and info.tags == ("t",)
        assert mem.get("k") == {"v": 1}
        return
    with pytest.raises(error, match=r"'k'|byte") as async_error:
        asyncio.run(read())
    with pytest.raises(error) as sync_error:
        mem.get("k")
    assert str(async_error.value) == str(sync_error.value)
    if field.startswith("m"):  # the metadata reads (no value) name it too
        with pytest.raises(SerializationError, match="'k'"):
            mem.backend.meta_many("ns", ["k"], now=T0)


def test_two_event_loops_one_after_the_other(open_mem: Callable[..., pm.Memory]) -> None:
    mem = open_mem()

    async def write(n: int) -> Any:
        await mem.aset("k", n)
        return await mem.aget("k")

    assert asyncio.run(write(1)) == 1
    first = mem.backend._aio._last
    assert first is not None and first.loop.is_closed()
    assert asyncio.run(write(2)) == 2  # a new loop: new connections, the closed one's dropped
    aio = mem.backend._aio
    assert aio._last is not first and list(aio._loops.values()) == [aio._last]
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(write(3)) == 3
    finally:
        loop.close()
    assert mem.get("k") == 3


def test_loops_in_two_threads_at_once(open_mem: Callable[..., pm.Memory]) -> None:
    import threading

    mem = open_mem()
    results: dict[int, Any] = {}

    def worker(n: int) -> None:
        async def main() -> list[Any]:
            keys = {f"t{n}:{i}": i for i in range(50)}
            await mem.aset_many(keys)
            got = await asyncio.gather(*(mem.aget(key) for key in keys))
            return [*got, await mem.adelete_many(list(keys))]

        results[n] = asyncio.run(main())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {n: [*range(50), 50] for n in range(4)}


def _child(state: bytes, queue: Any) -> None:
    try:
        mem = pickle.loads(state)

        async def main() -> Any:
            await mem.aset("from-child", "c")
            client_id = await mem.backend._aio.request("CLIENT", "ID")
            return await mem.aget("shared"), await mem.aget_many(["shared", "x"]), client_id

        queue.put(asyncio.run(main()))
    except BaseException as err:  # reported to the parent
        queue.put(repr(err))


def _forked_child(mem: pm.Memory, queue: Any) -> None:
    try:

        async def main() -> Any:
            await mem.aset("from-fork", "f")
            client_id = await mem.backend._aio.request("CLIENT", "ID")
            return await mem.aget("shared"), client_id

        queue.put(asyncio.run(main()))
    except BaseException as err:
        queue.put(repr(err))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_forked_child_and_a_pickled_memory_connect_afresh(
    open_mem: Callable[..., pm.Memory], redis_server: RedisServer
) -> None:
    mem = open_mem()

    async def parent() -> Any:
        await mem.aset("shared", {"p": 1})
        return await mem.backend._aio.request("CLIENT", "ID")

    loop = asyncio.new_event_loop()  # kept open across the fork: its connections stay idle
    try:
        parent_id = loop.run_until_complete(parent())
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_forked_child, args=(mem, queue))
        child.start()
        got = queue.get(timeout=60)
        child.join(30)
        assert not isinstance(got, str), got
        value, child_id = got
        assert value == {"p": 1} and child_id != parent_id
        # The parent's connection was never used by the child: it still answers in order.
        assert loop.run_until_complete(mem.aget("from-fork")) == "f"
        assert loop.run_until_complete(mem.backend._aio.request("CLIENT", "ID")) == parent_id
    finally:
        loop.close()

    state = pickle.dumps(mem)
    assert b"_LoopConnections" not in state and b"AsyncRedisConnection" not in state
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(state, queue))
    child.start()
    got = queue.get(timeout=120)
    child.join(30)
    assert not isinstance(got, str), got
    assert got[:2] == ({"p": 1}, {"shared": {"p": 1}})
    assert mem.get("from-child") == "c"


def test_many_coroutines_at_once(open_mem: Callable[..., pm.Memory]) -> None:
    mem = open_mem()

    async def worker(n: int) -> list[Any]:
        seen = []
        for i in range(20):
            await mem.aset(f"k{n}", i, tags=[f"w{n % 4}"])
            seen.append(await mem.aget(f"k{n}"))
        return seen

    async def main() -> tuple[Any, ...]:
        results = await asyncio.gather(*(worker(n) for n in range(100)))
        winners = await asyncio.gather(*(mem.aadd("race", n) for n in range(50)))
        tagged = await mem.atagged("w0")
        info = await mem.ainfo("k7")
        return results, winners, tagged, info

    results, winners, tagged, info = asyncio.run(main())
    assert results == [list(range(20))] * 100  # every reply read by the one who asked
    assert winners.count(True) == 1  # put-if-absent stays atomic
    assert tagged == sorted(f"k{n}" for n in range(0, 100, 4))
    assert (info.version, info.access_count) == (20, 20)


def test_bounded_pool_waits_then_times_out(open_mem: Callable[..., pm.Memory]) -> None:
    mem = open_mem(max_connections=2, timeout=1)

    async def main() -> tuple[Any, ...]:
        got = await asyncio.gather(*(mem.aset(f"k{i}", i) for i in range(60)))
        values = await asyncio.gather(*(mem.aget(f"k{i}") for i in range(60)))
        return got, values, len(mem.backend._aio._last.seed.idle)

    got, values, idle = asyncio.run(main())
    assert got == [None] * 60 and values == list(range(60))
    assert idle <= 2  # never more connections than max_connections

    async def starved() -> None:
        here = mem.backend._aio._here()
        if here.watch is None:
            await here.watched()
        for _ in range(2):  # both connections taken by someone else
            await here.seed.slots.acquire()
        try:
            await mem.aget("k1")
        finally:
            here.seed.slots.release()
            here.seed.slots.release()

    with pytest.raises(BackendUnavailable, match="no free connection"):
        asyncio.run(starved())


def test_cancelled_requests_never_leave_a_reply_behind(
    open_mem: Callable[..., pm.Memory],
) -> None:
    mem = open_mem(max_connections=1)  # one connection: a stale reply would be read next

    async def main() -> list[Any]:
        await mem.aset_many({f"k{i}": i for i in range(30)})
        seen = []
        for i in range(30):
            task = asyncio.ensure_future(mem.aget(f"k{(i + 1) % 30}"))
            await asyncio.sleep(0)  # sent (or about to be), not answered
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            seen.append(await mem.aget(f"k{i}"))
        return seen

    assert asyncio.run(main()) == list(range(30))


def test_errors_are_those_of_the_blocking_path(
    open_mem: Callable[..., pm.Memory], redis_server: RedisServer
) -> None:
    dead = pm.open_memory(f"redis://127.0.0.1:{free_port()}/0", key_prefix="x", timeout=1)

    async def down() -> None:
        await dead.aget("k")

    with pytest.raises(BackendUnavailable):
        asyncio.run(down())
    with pytest.raises(BackendUnavailable):
        dead.get("k")

    # A strong write no replica acknowledges: ConsensusError on both paths.
    strong = open_mem(consistency="strong", quorum=1, timeout=0.2)
    with pytest.raises(ConsensusError) as sync_error:
        strong.set("k", 1)

    async def wait() -> None:
        await strong.aset("k", 2)

    with pytest.raises(ConsensusError) as async_error:
        asyncio.run(wait())
    assert async_error.value.acknowledged == sync_error.value.acknowledged == 0
    assert strong.get("k") == 2  # on the primary all the same

    # Expiry beyond what Redis holds: refused before anything is sent.
    mem = open_mem()
    with pytest.raises(InvalidTTLError):
        asyncio.run(_put_far(mem))


def test_a_request_past_its_timeout(open_mem: Callable[..., pm.Memory], raw: redis.Redis) -> None:
    mem = open_mem(timeout=0.3)
    mem.set("k", 1)

    async def main() -> tuple[Any, ...]:
        await mem.aget("k")  # connected: the pause below stops the request, not the connect
        raw.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        with pytest.raises(BackendTimeout) as caught:
            await mem.aget("k")
        other = asyncio.ensure_future(asyncio.sleep(0.01, "on"))
        await asyncio.sleep(0.02)  # the task that timed out is not left cancelled
        raw.execute_command("CLIENT", "UNPAUSE")
        return caught.value, await other, await mem.aget("k"), await mem.aget("k")

    error, went_on, *after = asyncio.run(main())
    assert "0.3" in str(error) and went_on == "on"
    assert after == [1, 1]  # the late reply went with its dropped connection


async def _put_far(mem: pm.Memory) -> None:
    from prefect_memory.plugins.base import Record

    record = Record(b"\x01", T0, T0, T0, expires_at=T0 + 1e12)
    await mem.backend.aput_many("ns", {"k": record}, now=T0)


def test_a_server_restart_is_survived(open_mem: Callable[..., pm.Memory]) -> None:
    server = RedisServer()
    try:
        server.start()
    except ServerError as exc:  # pragma: no cover - reported with the reason
        pytest.fail(f"redis-server could not start: {exc}", pytrace=False)
    try:
        mem = pm.open_memory(server.url, key_prefix="restart")
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(mem.aset("k", 1))
            server.restart()
            # The idle connection is broken: retried once on a fresh one (no data: no AOF).
            assert loop.run_until_complete(mem.aget("k")) is None
            loop.run_until_complete(mem.aset("k", 2))
            assert loop.run_until_complete(mem.aget("k")) == 2
        finally:
            loop.close()
        mem.close()
    finally:
        server.stop()


def test_layout_2_and_a_refused_layout(open_mem: Callable[..., pm.Memory]) -> None:
    spread = open_mem("spread", layout=2, buckets=4)

    async def main() -> tuple[Any, ...]:
        entries = {f"k{i}": i for i in range(40)}
        await spread.aset_many(entries, tags=["all"])
        return (
            await spread.aget_many(list(entries)),
            await spread.atagged("all"),
            await spread.aexists("k3"),
            await spread.aadd("k3", 0),
            await spread.adelete_many(list(entries)[:10]),
        )

    got, tagged, exists, added, deleted = asyncio.run(main())
    assert got == {f"k{i}": i for i in range(40)}
    assert tagged == sorted(f"k{i}" for i in range(40))
    assert (exists, added, deleted) == (True, False, 10)
    assert spread.get("k39") == 39 and spread.get("k0") is None

    layout1 = open_mem("spread")  # a layout-1 client on a layout-2 namespace: refused

    async def refused() -> None:
        await layout1.aget("k20")

    with pytest.raises(ConfigError, match="layout") as async_error:
        asyncio.run(refused())
    with pytest.raises(ConfigError, match="layout") as sync_error:
        layout1.get("k20")
    assert str(async_error.value) == str(sync_error.value)


def test_settings_redis_asyncio_lacks_stay_on_the_blocking_path() -> None:
    ocsp = RedisBackend.from_url("rediss://127.0.0.1:1/0", ssl_validate_ocsp=True)
    assert not AsyncRedisConnection(ocsp.connection).supported
    plain = RedisBackend.from_url("rediss://127.0.0.1:1/0", ssl_cert_reqs="none")
    assert AsyncRedisConnection(plain.connection).supported


# -- secured servers: the async connections take the same TLS and ACL settings ----------------
@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsRedisServer]:
    server = TlsRedisServer()
    try:
        server.start()
    except ServerError as exc:  # pragma: no cover - reported with the reason
        pytest.fail(f"TLS redis-server could not start: {exc}", pytrace=False)
    yield server
    server.stop()


def test_tls_with_a_client_certificate(tls_server: TlsRedisServer) -> None:
    mem = pm.open_memory(
        tls_server.url, key_prefix="tls" + uuid.uuid4().hex[:6], **tls_server.ssl_options()
    )

    async def main() -> Any:
        await mem.aset("k", {"tls": True}, tags=["t"])
        return await mem.aget("k"), await mem.atagged("t")

    assert asyncio.run(main()) == ({"tls": True}, ["k"])
    assert mem.backend._aio.ready  # it went the async way
    mem.clear()
    mem.close()
    options = {**tls_server.ssl_options(), "ssl_certfile": None, "ssl_keyfile": None}
    options = {k: v for k, v in options.items() if v is not None}
    refused = pm.open_memory(tls_server.url, key_prefix="tls", timeout=2, **options)
    refused.backend.connection.cluster = False  # straight to the async connection

    async def without_certificate() -> None:
        await refused.aget("k")

    with pytest.raises(BackendPermissionError):
        asyncio.run(without_certificate())


def test_wrong_password_is_a_permission_error(redis_server: RedisServer) -> None:
    server = RedisServer(password="pm-" + uuid.uuid4().hex[:8])
    try:
        server.start()
    except ServerError as exc:  # pragma: no cover
        pytest.fail(f"redis-server could not start: {exc}", pytrace=False)
    try:
        good = pm.open_memory(server.url, key_prefix="acl", password=server.password)
        bad = pm.open_memory(server.url, key_prefix="acl", password="wrong", timeout=2)
        bad.backend.connection.cluster = False

        async def main() -> Any:
            await good.aset("k", 1)
            return await good.aget("k")

        assert asyncio.run(main()) == 1

        async def refused() -> None:
            await bad.aget("k")

        with pytest.raises(BackendPermissionError) as caught:
            asyncio.run(refused())
        assert "wrong" not in str(caught.value)
        good.close()
    finally:
        server.stop()

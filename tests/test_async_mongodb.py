"""The native async path of the MongoDB store, against the suite's MongoDB wire server.

``mem.aget``/``aset``/... on ``mongodb://`` run the backend's bodies on the event loop
through a :class:`pymongo.AsyncMongoClient` of that loop (no worker thread per call): what
they return, what they store, the commands they send, the errors they raise and their
clients (per loop, closed with the loop, pickled as settings only) must be those of the
blocking path. The wire server is mongoeco's (tests/servers.py), not a real mongod.

The backend contract also runs here once more, every memory call made through its async
twin on a new event loop (as ``tests/test_async_contract.py`` does for Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import pickle
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import monitoring

import prefect_memory as pm
from prefect_memory.errors import (
    BackendPermissionError,
    BackendUnavailable,
    InvalidKeyError,
    SerializationError,
)
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.mongodb import MongoBackend
from prefect_memory.plugins.mongodb_aio import AsyncMongoClients
from servers import MongoWireServer
from test_mongodb_backend import (  # the blocking path's helpers and fixtures
    Commands,
    _dead_port,
    _with_param,
    mongo_url,  # noqa: F401 - a fixture, used by name
    opened,  # noqa: F401 - a fixture, used by name
)

pytestmark = pytest.mark.mongodb


@pytest.fixture
def open_mongo(mongo_url: str, opened: list[pm.Memory]) -> Callable[..., pm.Memory]:  # noqa: F811
    def _open(**options: Any) -> pm.Memory:
        options.setdefault("namespace", "ns-" + uuid.uuid4().hex[:6])
        mem = pm.open_memory(mongo_url, **options)
        opened.append(mem)
        return mem

    return _open


@contextlib.contextmanager
def no_threads(monkeypatch: pytest.MonkeyPatch, executor: bool = True) -> Iterator[None]:
    """Fail any hop to a worker thread: ``asyncio.to_thread`` (the fallback of the
    twins), and with ``executor`` the loop's default executor too (which pymongo uses to
    resolve the address of each new connection: leave it when connections are made)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a call hopped to a thread: {args[:2]}")

    with monkeypatch.context() as patch:
        patch.setattr(asyncio, "to_thread", refuse)
        if executor:
            patch.setattr(asyncio.BaseEventLoop, "run_in_executor", refuse)
        yield


def _docs(mongo_server: Any, mem: pm.Memory) -> list[dict[str, Any]]:
    """The namespace's documents as stored (ids without the namespace token)."""
    client = mongo_server.client()
    try:
        coll = client[mem.backend.database][mem.backend.collection]
        docs = list(coll.find({"ns": mem.namespace}))
    finally:
        client.close()
    for doc in docs:
        doc["_id"] = doc["_id"].split(":", 1)[1]
        del doc["ns"]
    return sorted(docs, key=lambda d: d["_id"])


# -- what the twins return, store and send ------------------------------------------------------


def test_mongodb_declares_native_async() -> None:
    assert MongoBackend.capabilities.native_async
    backend = MongoBackend("mongodb://db.example/app")
    for name in ("get_many", "put_many", "put_absent_many", "delete_many", "exists_many", "tagged"):
        # a twin of its own, not the default one in a worker thread
        assert getattr(MongoBackend, "a" + name) is not getattr(pm.Backend, "a" + name), name
    assert backend._aio is None  # made on first async use


def _workload() -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The same calls, made through the blocking methods or their async twins."""
    return [
        ("set", ("a", {"n": 1}), {"tags": ["t", "u"]}),
        ("set", ("b", [1, 2]), {"ttl": 60}),
        ("set", ("w", "slide"), {"ttl": 30, "refresh": True}),
        ("set", ("a", {"n": 2}), {"tags": ["t"]}),  # merged over the first: version 2
        ("set_many", ({f"m{i}": i for i in range(12)},), {"tags": ["many"]}),  # > 8: general
        ("set_many", ({"m1": 10, "m2": 20},), {}),  # small batch over existing entries
        ("get", ("a",), {}),
        ("get", ("missing", "dflt"), {}),
        ("get", ("w",), {}),  # slides the expiry
        ("get_many", (["m1", "m2", "m11", "nope"],), {}),
        ("info", ("a",), {}),
        ("info", ("nope",), {}),
        ("exists", ("b",), {}),
        ("exists", ("nope",), {}),
        ("add", ("a", 0), {}),
        ("add", ("fresh", 0), {"tags": ["t"]}),
        ("tagged", ("t",), {}),
        ("tagged", ("many", "u"), {}),
        ("delete", ("b",), {}),
        ("delete", ("b",), {}),
        ("delete_many", (["m3", "m4", "nope"],), {}),
        ("invalidate_tags", ("u",), {}),
        ("tick", (), {}),  # "b" would have expired: gone for both
        ("get_many", (["a", "w", "m1"],), {}),
        ("info", ("w",), {}),
    ]


def _run_sync(mem: pm.Memory, clock: list[float]) -> list[Any]:
    out = []
    for name, args, kwargs in _workload():
        clock[0] += 1.0
        if name == "tick":
            clock[0] += 100
            continue
        out.append(getattr(mem, name)(*args, **kwargs))
    return out


async def _run_async(mem: pm.Memory, clock: list[float]) -> list[Any]:
    out = []
    for name, args, kwargs in _workload():
        clock[0] += 1.0
        if name == "tick":
            clock[0] += 100
            continue
        out.append(await getattr(mem, "a" + name)(*args, **kwargs))
    return out


def test_async_results_documents_and_commands_equal_the_blocking_ones(
    open_mongo: Callable[..., pm.Memory], mongo_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Commands()
    now = time.time()
    sync_clock, async_clock = [now], [now]
    blocking = open_mongo(client_kwargs={"event_listeners": [listener]})
    native = open_mongo(client_kwargs={"event_listeners": [listener]})
    blocking.clock = lambda: sync_clock[0]
    native.clock = lambda: async_clock[0]
    blocking.exists("warm-up")  # the indexes
    asyncio.run(native.aexists("warm-up"))
    listener.take()

    expected = _run_sync(blocking, sync_clock)
    sync_commands = listener.take()
    with no_threads(monkeypatch, executor=False):  # (a new loop: a new client connects)
        got = asyncio.run(_run_async(native, async_clock))
    async_commands = listener.take()

    def plain(results: list[Any]) -> list[Any]:  # EntryInfo names its namespace
        return [
            {**vars(r), "namespace": ""} if type(r).__name__ == "EntryInfo" else r for r in results
        ]

    assert plain(got) == plain(expected)
    assert _docs(mongo_server, native) == _docs(mongo_server, blocking)
    # the same commands, in the same order, with the same shapes
    assert [name for name, _ in async_commands] == [name for name, _ in sync_commands]

    def shape(command: dict[str, Any]) -> list[str]:
        return sorted(k for k in command if not k.startswith("$") and k != "lsid")

    assert [shape(c) for _, c in async_commands] == [shape(c) for _, c in sync_commands]
    assert native.backend._client is None  # the blocking client was never made


def test_merge_semantics_versions_and_conditional_deletes(
    open_mongo: Callable[..., pm.Memory],
) -> None:
    start = time.time()
    clock = [start]
    mem = open_mongo()
    mem.clock = lambda: clock[0]
    backend, ns = mem.backend, mem.namespace

    async def main() -> None:
        await mem.aset("k", 1)
        clock[0] += 5
        assert await mem.aget("k") == 1  # one access
        clock[0] += 5
        await mem.aset("k", 2)  # merged on the server: created and accesses kept
        info = await mem.ainfo("k")
        assert info is not None
        assert (info.version, info.access_count) == (2, 1)
        assert info.created_at.timestamp() == pytest.approx(start, abs=0.002)
        assert info.updated_at.timestamp() == pytest.approx(start + 10, abs=0.002)
        # a record of another version takes the general path (find, replace) and merges too
        t = clock[0]
        await backend.aput_many(ns, {"k": Record(b"\x03", t, t, t, version=7)}, now=t)
        stored = (await backend.aget_many(ns, ["k"], now=clock[0]))["k"]
        assert (stored.version, stored.access_count, stored.value) == (3, 1, b"\x03")
        # conditional delete: only the write read is deleted (blocking method, the same store)
        assert backend.delete_if_unchanged(ns, {"k": (7, t)}, now=clock[0]) == set()
        token = (stored.version, stored.updated_at)
        assert backend.delete_if_unchanged(ns, {"k": token}, now=clock[0]) == {"k"}
        assert await mem.aget("k") is None
        # put if absent: an existing key is never overwritten, an expired one is
        await mem.aset("old", 1, ttl=1)
        await mem.aset("live", 1)
        clock[0] += 2
        assert await mem.aadd("old", 2) and not await mem.aadd("live", 2)
        assert await mem.aget_many(["old", "live"]) == {"old": 2, "live": 1}
        assert await mem.adelete_many(["old", "live", "none"]) == 2

    asyncio.run(main())


def test_hostile_documents_raise_our_errors_on_both_paths(
    open_mongo: Callable[..., pm.Memory], mongo_server: Any
) -> None:
    mem = open_mongo()
    mem.set("ok", 1)
    client = mongo_server.client()
    try:
        coll = client[mem.backend.database][mem.backend.collection]
        token = mem.backend._ids(mem.namespace, ["x"])[0].rsplit(":", 1)[0]
        coll.insert_one({"_id": f"{token}:bad", "ns": mem.namespace, "k": "bad", "v": "text"})
        coll.insert_one({"_id": f"{token}:liar", "ns": mem.namespace, "k": 7, "g": ["t"]})
    finally:
        client.close()
    with pytest.raises(SerializationError, match="'v'") as sync_err:
        mem.get("bad")
    with pytest.raises(SerializationError, match="'v'") as async_err:
        asyncio.run(mem.aget("bad"))
    assert str(async_err.value) == str(sync_err.value)
    assert asyncio.run(mem.atagged("t")) == mem.tagged("t") == []  # skipped, not raised
    with pytest.raises(InvalidKeyError):
        asyncio.run(mem.aget(""))
    assert asyncio.run(mem.aget("ok")) == 1


# -- concurrency, event loops, pickles ----------------------------------------------------------


def test_64_coroutines_at_once(open_mongo: Callable[..., pm.Memory]) -> None:
    mem = open_mongo()
    mem.set("shared", -1)

    async def worker(i: int) -> tuple[Any, ...]:
        await mem.aset(f"k{i}", {"i": i})
        await mem.aset("shared", i)  # each merged over the last: the version counts them
        added = await mem.aadd("once", i)
        return await mem.aget(f"k{i}"), added, await mem.aexists(f"k{i}")

    async def main() -> list[tuple[Any, ...]]:
        return await asyncio.gather(*(worker(i) for i in range(64)))

    results = asyncio.run(main())
    assert [r[0] for r in results] == [{"i": i} for i in range(64)]
    assert sum(r[1] for r in results) == 1  # exactly one add won
    assert all(r[2] for r in results)
    info = mem.info("shared")
    assert info is not None and info.version == 65  # no write lost
    assert mem.get("shared") in range(64)
    assert mem.get("once") in range(64)
    assert mem.get_many([f"k{i}" for i in range(64)]) == {f"k{i}": {"i": i} for i in range(64)}


class Connections(monitoring.ConnectionPoolListener):
    """Counts the connections a client makes."""

    def __init__(self) -> None:
        self.created = 0

    def connection_created(self, event: Any) -> None:
        self.created += 1

    def _ignore(self, event: Any) -> None:
        pass

    pool_created = pool_ready = pool_cleared = pool_closed = _ignore
    connection_ready = connection_closed = connection_check_out_started = _ignore
    connection_check_out_failed = connection_checked_out = connection_checked_in = _ignore


def test_no_thread_hop_per_call(
    open_mongo: Callable[..., pm.Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No call goes to a worker thread; the loop's executor resolves the address of each
    new connection (pymongo's ``loop.getaddrinfo``), and serves nothing else."""
    connections = Connections()
    mem = open_mongo(client_kwargs={"event_listeners": [connections]})
    lookups: list[Any] = []
    original = asyncio.BaseEventLoop.run_in_executor

    def executor(loop: Any, pool: Any, func: Any, *args: Any) -> Any:
        if func is not socket.getaddrinfo:
            raise AssertionError(f"a call hopped to a thread: {func}")
        lookups.append(args[0])
        return original(loop, pool, func, *args)

    async def burst(tag: str) -> list[Any]:
        async def one(i: int) -> Any:
            await mem.aset(f"{tag}{i}", i, tags=["b"])
            await mem.aset_many({f"{tag}{i}.x": i, f"{tag}{i}.y": i})
            found = await mem.aget_many([f"{tag}{i}", f"{tag}{i}.x"])
            await mem.adelete(f"{tag}{i}.y")
            return found, await mem.aadd(f"{tag}{i}", 0), await mem.ainfo(f"{tag}{i}")

        return await asyncio.gather(*(one(i) for i in range(16)))

    async def main() -> list[Any]:
        await burst("warm")
        out = await burst("hot")
        assert await mem.atagged("b") == sorted(
            [f"hot{i}" for i in range(16)] + [f"warm{i}" for i in range(16)]
        )
        assert await mem.ainvalidate_tags("b") == 32
        return out

    with no_threads(monkeypatch, executor=False):
        monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", executor)
        results = asyncio.run(main())
    assert [r[0] for r in results] == [{f"hot{i}": i, f"hot{i}.x": i} for i in range(16)]
    assert not any(r[1] for r in results)
    # one lookup per connection made (the monitor's too), far fewer than the 200+ calls
    print(f"{connections.created} connections, {len(lookups)} address lookups")
    assert 0 < connections.created <= len(lookups) <= connections.created + 2
    assert connections.created < 40
    assert mem.backend._client is None  # never the blocking client


def test_two_event_loops_one_after_the_other(open_mongo: Callable[..., pm.Memory]) -> None:
    mem = open_mongo()

    async def write(n: int) -> Any:
        await mem.aset("k", n)
        return await mem.aget("k")

    assert asyncio.run(write(1)) == 1
    aio = mem.backend._aio
    assert isinstance(aio, AsyncMongoClients)
    first = aio._last
    assert first is not None and first.loop.is_closed()
    assert first.client._closed  # closed with its loop (asyncio.run shuts the loop down)
    assert asyncio.run(write(2)) == 2  # a new loop: a new client, the closed one's dropped
    assert aio._last is not first and list(aio._loops.values()) == [aio._last]
    loop = asyncio.new_event_loop()  # a loop closed without shutting down its generators
    try:
        assert loop.run_until_complete(write(3)) == 3
    finally:
        loop.close()
    assert asyncio.run(write(4)) == 4
    assert len(aio._loops) == 1
    with warnings.catch_warnings():  # that loop's client could not be closed: collected
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert mem.get("k") == 4


def test_loops_in_four_threads_at_once(open_mongo: Callable[..., pm.Memory]) -> None:
    mem = open_mongo()
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def main() -> list[Any]:
            keys = {f"t{n}:{i}": i for i in range(20)}
            await mem.aset_many(keys)
            got = await asyncio.gather(*(mem.aget(key) for key in keys))
            return [*got, await mem.adelete_many(list(keys))]

        try:
            results[n] = asyncio.run(main())
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == {n: [*range(20), 20] for n in range(4)}


def test_pickled_memory_connects_afresh(
    open_mongo: Callable[..., pm.Memory],
    opened: list[pm.Memory],  # noqa: F811
) -> None:
    mem = open_mongo()
    asyncio.run(mem.aset("k", {"v": 1}))
    clone = pickle.loads(pickle.dumps(mem))
    opened.append(clone)
    assert clone.backend._aio is None and clone.backend._client is None
    assert asyncio.run(clone.aget("k")) == {"v": 1}
    assert clone.backend._aio is not mem.backend._aio
    # the async clients themselves pickle as settings only
    aio = pickle.loads(pickle.dumps(clone.backend._aio))
    assert aio._loops == {} and aio.backend.collection == mem.backend.collection
    # a pickle made before the async path (no ``_aio``) loads and serves both paths
    state = mem.backend.__getstate__()
    del state["_aio"]
    old = MongoBackend.__new__(MongoBackend)
    old.__setstate__(state)
    assert asyncio.run(old.aget_many(mem.namespace, ["k"], now=time.time())).keys() == {"k"}
    old.close()


def test_close_and_aclose(open_mongo: Callable[..., pm.Memory]) -> None:
    mem = open_mongo()
    backend = mem.backend

    async def main() -> None:
        await mem.aset("k", 1)
        here = backend._aio._last
        await backend.aclose()
        assert here.client._closed and backend._aio._loops == {}
        assert await mem.aget("k") == 1  # a new client
        again = backend._aio._last
        assert again is not here
        mem.close()  # the blocking close, from inside the loop: closed by the loop
        await asyncio.sleep(0.05)
        assert again.client._closed and backend._aio._loops == {}
        assert await mem.aget("k") == 1

    asyncio.run(main())


def _child_reads(mem: pm.Memory, queue: Any) -> None:
    try:
        queue.put(asyncio.run(mem.aget("k")))
    except BaseException as err:  # pragma: no cover - reported to the parent
        queue.put(repr(err))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_forked_child_makes_its_own_client(open_mongo: Callable[..., pm.Memory]) -> None:
    mem = open_mongo()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(mem.aset("k", {"v": 2}))  # the parent's client, loop open
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        with warnings.catch_warnings():  # pymongo warns a forked child off inherited clients
            warnings.simplefilter("ignore")
            child = ctx.Process(target=_child_reads, args=(mem, queue))
            child.start()
            got = queue.get(timeout=60)
            child.join(60)
        assert got == {"v": 2} and child.exitcode == 0
        assert loop.run_until_complete(mem.aget("k")) == {"v": 2}  # the parent's still serves
        loop.run_until_complete(mem.backend.aclose())
    finally:
        loop.close()


def test_without_pymongos_async_api_the_twins_use_a_thread(
    open_mongo: Callable[..., pm.Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pymongo before 4.13 (the extra allows 4.6): the blocking methods, in a thread."""
    from prefect_memory.plugins import mongodb

    mem = open_mongo()
    monkeypatch.setattr(mongodb, "_ASYNC_DRIVER", False)
    hops: list[Any] = []
    to_thread = asyncio.to_thread

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func.__name__)
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    backend, ns, now = mem.backend, mem.namespace, time.time()

    async def main() -> Any:
        record = Record(b"\x01", now, now, now)
        await backend.aput_many(ns, {"k": record}, now=now)
        added = await backend.aput_absent_many(ns, {"k": record, "j": record}, now=now)
        return (
            added,
            set(await backend.aget_many(ns, ["k", "j"], now=now)),
            await backend.aexists_many(ns, ["k", "x"], now=now),
            await backend.atagged(ns, ["t"], now=now),
            await backend.adelete_many(ns, ["k", "j"], now=now),
        )

    assert asyncio.run(main()) == ({"j"}, {"k", "j"}, {"k"}, set(), 2)
    assert hops == [
        "put_many", "put_absent_many", "get_many", "exists_many", "tagged", "delete_many"
    ]  # fmt: skip
    assert backend._aio is None


# -- errors -------------------------------------------------------------------------------------


def test_a_stopped_server_is_unavailable() -> None:
    url = f"mongodb://127.0.0.1:{_dead_port()}/db?directConnection=true"
    mem = pm.open_memory(url, timeout=1)

    async def main() -> None:
        for call in (
            lambda: mem.aset("k", 1),
            lambda: mem.aget("k"),
            lambda: mem.aget_many(["k", "j"]),
            lambda: mem.adelete("k"),
            lambda: mem.aexists("k"),
            lambda: mem.aadd("k", 1),
            lambda: mem.atagged("t"),
        ):
            with pytest.raises(BackendUnavailable) as info:
                await call()
            assert isinstance(info.value, ConnectionError)
            assert "127.0.0.1" in str(info.value)

    asyncio.run(main())
    mem.close()


def test_a_silent_server_is_unavailable_not_a_hang() -> None:
    """Something accepts TCP connections but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        mem = pm.open_memory(f"mongodb://127.0.0.1:{port}/db?directConnection=true", timeout=1)
        with pytest.raises(BackendUnavailable):
            asyncio.run(asyncio.wait_for(mem.aget("k"), 30))
        mem.close()


def test_server_stopped_then_restarted(
    open_mongo: Callable[..., pm.Memory], mongo_server: Any
) -> None:
    if mongo_server.external:
        pytest.skip("cannot restart an external MongoDB server")
    mem = open_mongo(timeout=2)
    loop = asyncio.new_event_loop()  # one loop throughout: its client sees the outage
    try:
        loop.run_until_complete(mem.aset("k", 1))
        mongo_server.kill()
        try:
            with pytest.raises(BackendUnavailable):
                loop.run_until_complete(asyncio.wait_for(mem.aget("k"), 30))
        finally:
            mongo_server.restart()
        # The in-memory engine lost the data: reconnection, then indexes ensured again.
        loop.run_until_complete(mem.aset("k", 2))
        assert loop.run_until_complete(mem.aget("k")) == 2
        assert mem.backend._indexed
        mongo_server.restart()  # graceful this time, with pooled connections now closed
        loop.run_until_complete(mem.aset("k", 3))  # the merge upsert is sent once more
        assert loop.run_until_complete(mem.aget("k")) == 3
        loop.run_until_complete(mem.backend.aclose())
    finally:
        loop.close()


def test_a_wrong_password_is_a_permission_error() -> None:
    secret = "hunter2-" + uuid.uuid4().hex[:6]
    with MongoWireServer(auth_users={"bob": secret}) as server:
        good = pm.open_memory(_with_param(server.url_as("bob", secret), "collection=pw"))
        asyncio.run(good.aset("k", 1))
        assert asyncio.run(good.aget("k")) == 1
        good.close()
        wrong = "wrong-" + secret
        bad = pm.open_memory(_with_param(server.url_as("bob", wrong), "collection=pw"), timeout=2)
        with pytest.raises(BackendPermissionError) as info:
            asyncio.run(bad.aget("k"))
        assert wrong not in str(info.value) and secret not in str(info.value)
        bad.close()

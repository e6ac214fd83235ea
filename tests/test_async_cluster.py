"""The native async path on a real Redis Cluster (3 primaries + 3 replicas, no mocks).

``mem.aget``/``aset``/... on a Cluster run on the event loop: each request goes to the node
serving its slot over the loop's own connections (no worker thread per call), follows
``MOVED`` after a slot migration, waits out ``ASK`` during one, and a killed primary gives
our errors, then its promoted replica serves.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.crc import key_slot

import prefect_memory as pm
from memories import memory_opener
from prefect_memory.errors import BackendError
from prefect_memory.plugins.redis.aio import AsyncRedisConnection
from shared.conftest_replicas import (  # noqa: F401 - the fixture, used by name
    ReplicatedCluster,
    redis_cluster_replicas,
)
from test_async_redis import no_threads  # fails any hop to a worker thread

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


@pytest.fixture
def cluster(redis_cluster_replicas: ReplicatedCluster) -> ReplicatedCluster:  # noqa: F811
    redis_cluster_replicas.repair()  # what an earlier test left down or half moved
    return redis_cluster_replicas


@pytest.fixture
def open_mem(cluster: ReplicatedCluster) -> Iterator[Callable[..., pm.Memory]]:
    with memory_opener(cluster.url, "pmc" + uuid.uuid4().hex[:8]) as _open:
        yield _open


def warm(mem: pm.Memory) -> AsyncRedisConnection:
    """The first async call learns (once, on the blocking path) that this is a Cluster."""

    async def first() -> None:
        await mem.aexists("warm")

    asyncio.run(first())
    aio = mem.backend._aio
    assert aio is not None and aio.ready and mem.backend.connection.cluster
    return aio


def slot_of(mem: pm.Memory) -> int:
    return key_slot(mem.backend._base(mem.namespace).encode())


def node_id(cluster: ReplicatedCluster, node: Any) -> str:
    reply = cluster.command(node, "CLUSTER", "MYID")
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def move_slot(cluster: ReplicatedCluster, slot: int, source: Any, target: Any) -> None:
    """Migrate ``slot`` with its keys from ``source`` to ``target`` (``CLUSTER SETSLOT``,
    ``MIGRATE``), then tell every primary its new owner."""
    src, dst = node_id(cluster, source), node_id(cluster, target)
    cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", src)
    cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst)
    finish_move(cluster, slot, source, target)


def finish_move(cluster: ReplicatedCluster, slot: int, source: Any, target: Any) -> None:
    dst = node_id(cluster, target)
    while keys := cluster.command(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
        cluster.command(source, "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    for node in [target, source, *cluster.primaries()]:
        cluster.command(node, "CLUSTER", "SETSLOT", slot, "NODE", dst)


def test_single_key_and_batch_calls_go_straight_to_the_nodes(
    open_mem: Callable[..., pm.Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = open_mem()
    aio = warm(mem)
    sent, routed = aio.sent, aio.routed

    async def calls() -> dict[str, Any]:
        out: dict[str, Any] = {}
        await mem.aset("a", {"n": 1}, ttl=60, tags=["t"])
        await mem.aset_many({"b": [1, 2], "c": "three"})
        out["get"] = await mem.aget("a")
        out["many"] = await mem.aget_many(["a", "b", "c", "missing"])
        out["gathered"] = await asyncio.gather(*(mem.aset(f"k{i}", i) for i in range(40)))
        out["values"] = await asyncio.gather(*(mem.aget(f"k{i}") for i in range(40)))
        out["delete"] = (await mem.adelete("c"), await mem.adelete("c"))
        out["delete_many"] = await mem.adelete_many(["b", "missing"])
        out["tagged"] = await mem.atagged("t")
        return out

    with no_threads(monkeypatch):
        got = asyncio.run(calls())
    assert got["get"] == {"n": 1}
    assert got["many"] == {"a": {"n": 1}, "b": [1, 2], "c": "three"}
    assert got["gathered"] == [None] * 40 and got["values"] == list(range(40))
    assert got["delete"] == (True, False) and got["delete_many"] == 1
    assert got["tagged"] == ["a"]
    # Every request went to a node of the slot map, on the loop's own connections.
    assert aio.sent - sent >= 88 and aio.routed - routed == aio.sent - sent
    owner = mem.backend._slots.owner(mem.backend._base(mem.namespace))
    # The blocking path reads what the async one wrote (and the reverse).
    assert mem.get("a") == {"n": 1} and mem.get("k7") == 7 and not mem.exists("b")
    mem.set("z", "sync")

    async def read() -> Any:
        here = aio._here()
        return await mem.aget("z"), {address for address, _ in here.nodes if address}

    with no_threads(monkeypatch):
        value, nodes = asyncio.run(read())
    assert value == "sync" and nodes == {owner}


def test_layout_2_spreads_a_batch_over_every_primary_at_once(
    open_mem: Callable[..., pm.Memory], cluster: ReplicatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = open_mem("spread", layout=2)
    aio = warm(mem)
    items = {f"key{i:03d}": i for i in range(200)}

    async def calls() -> tuple[Any, ...]:
        await mem.aset_many(items)
        got = await mem.aget_many(list(items))
        gone = await mem.adelete_many([f"key{i:03d}" for i in range(0, 200, 2)])
        here = aio._here()
        return got, gone, {address for address, _ in here.nodes if address}

    with no_threads(monkeypatch):
        got, gone, nodes = asyncio.run(calls())
    assert got == items and gone == 100
    primaries = {(node.host, node.port) for node in cluster.primaries()}
    assert nodes == primaries  # the 16 buckets live on all three primaries
    assert mem.get_many(["key000", "key001"]) == {"key001": 1}


def test_reads_from_replicas_go_to_them_on_readonly_connections(
    open_mem: Callable[..., pm.Memory], cluster: ReplicatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = open_mem("replicas" + uuid.uuid4().hex[:6], read_from_replicas=True)
    aio = warm(mem)
    primary = cluster.owner(slot_of(mem))
    replica = cluster.replica_of(primary)
    assert replica is not None
    mem.set_many({"a": 1, "b": 2})
    cluster.command(primary, "WAIT", 1, 2000)  # the replica has them

    async def reads() -> tuple[list[bool], set[Any]]:
        found = [await mem.aexists("a") for _ in range(6)]  # in turn: primary, replica
        return found, {key for key in aio._here().nodes if key[1]}

    with no_threads(monkeypatch):
        found, readers = asyncio.run(reads())
    assert found == [True] * 6
    assert readers == {((replica.host, replica.port), True)}  # READONLY connections


def test_a_moved_slot_is_followed_and_learnt(
    open_mem: Callable[..., pm.Memory], cluster: ReplicatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = open_mem("moving" + uuid.uuid4().hex[:6])
    warm(mem)
    slot = slot_of(mem)
    source = cluster.owner(slot)
    target = next(node for node in cluster.primaries() if node is not source)

    async def write() -> None:
        await mem.aset_many({f"k{i}": i for i in range(20)})

    with no_threads(monkeypatch):
        asyncio.run(write())
    slots = mem.backend._slots
    assert slots.owner(mem.backend._base(mem.namespace)) == (source.host, source.port)
    move_slot(cluster, slot, source, target)
    try:
        # The client's map still names the source: it answers MOVED, the client follows.
        async def read() -> tuple[Any, Any]:
            return await mem.aget("k3"), await mem.aget_many([f"k{i}" for i in range(20)])

        with no_threads(monkeypatch):
            one, many = asyncio.run(read())
        assert one == 3 and many == {f"k{i}": i for i in range(20)}
        assert slots.owner(mem.backend._base(mem.namespace)) == (target.host, target.port)
    finally:
        move_slot(cluster, slot, target, source)
    cluster.wait_healthy()


def test_a_migrating_slot_is_waited_out(
    open_mem: Callable[..., pm.Memory], cluster: ReplicatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the slot is half moved the source answers ASK (a script's declared key, the
    namespace's base, is not a key of its own): the request asks the source again (on the
    loop: ``asyncio.sleep``) until the slot has moved and it answers MOVED."""
    mem = open_mem("asking" + uuid.uuid4().hex[:6], timeout=10)
    warm(mem)
    slot = slot_of(mem)
    source = cluster.owner(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    mem.set("kept", "v")
    src, dst = node_id(cluster, source), node_id(cluster, target)
    cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", src)
    cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst)
    moved = threading.Event()

    def finish() -> None:
        finish_move(cluster, slot, source, target)
        moved.set()

    finisher = threading.Timer(0.5, finish)
    try:

        async def read() -> tuple[Any, bool, Any]:
            kept = await mem.aget("kept")
            after = moved.is_set()  # it returned once the slot had moved, not before
            return kept, after, await mem.aget("absent", "default")

        finisher.start()
        with no_threads(monkeypatch):
            kept, after, absent = asyncio.run(read())
        finisher.join()
        assert (kept, after, absent) == ("v", True, "default")
        owner = mem.backend._slots.owner(mem.backend._base(mem.namespace))
        assert owner == (target.host, target.port)
    finally:
        finisher.join()
        move_slot(cluster, slot, target, source)
    cluster.wait_healthy()


def test_a_killed_primary_gives_our_error_then_its_replica_serves(
    open_mem: Callable[..., pm.Memory], cluster: ReplicatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = open_mem("killed" + uuid.uuid4().hex[:6], timeout=1.0)
    warm(mem)
    primary = cluster.owner(slot_of(mem))
    replica = cluster.replica_of(primary)
    assert replica is not None
    mem.set("k", 1)
    cluster.command(primary, "WAIT", 1, 2000)  # the replica has it

    async def main() -> tuple[list[BaseException], Any]:
        await mem.aget("k")  # a connection to the primary, left idle in the loop's pool
        primary.kill()
        errors: list[BaseException] = []
        for _ in range(3):
            try:
                await asyncio.wait_for(mem.aget("k"), 10)  # an error, never a hang
            except BaseException as err:
                errors.append(err)
        # The replica is promoted within the node timeout (2 s): then it serves.
        deadline = time.monotonic() + 30
        while True:
            try:
                return errors, await asyncio.wait_for(mem.aget("k"), 10)
            except BackendError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    try:
        with no_threads(monkeypatch):
            errors, value = asyncio.run(main())
        assert len(errors) == 3 and all(isinstance(e, BackendError) for e in errors), errors
        assert value == 1
        assert cluster.owner(slot_of(mem)).port == replica.port
        owner = mem.backend._slots.owner(mem.backend._base(mem.namespace))
        assert owner == (replica.host, replica.port)  # the map was refreshed on the loop
    finally:
        cluster.repair()


def test_pickled_and_reopened_memories_route_afresh(
    open_mem: Callable[..., pm.Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = open_mem()
    aio = warm(mem)

    async def write() -> None:
        await mem.aset("p", "q")

    with no_threads(monkeypatch):
        asyncio.run(write())
    copy = pickle.loads(pickle.dumps(mem))
    assert copy.backend._aio is None and copy.backend.connection._slots is None
    clone = AsyncRedisConnection(mem.backend.connection)
    assert pickle.loads(pickle.dumps(clone))._loops == {}
    assert aio._loops  # the original keeps its (closed) loop's pools until used again

    async def read() -> Any:
        return await copy.aget("p")

    assert asyncio.run(read()) == "q"  # learns the Cluster once, then routes natively
    copy.close()

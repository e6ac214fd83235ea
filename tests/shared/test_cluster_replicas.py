"""Reads from replicas and seeds down at startup, on a real 3+3 Redis Cluster.

- ``?read_from_replicas=true``: the reads that count no access (``exists``, ``info``,
  ``keys``, metadata, ``get_many(touch=False)``) go in turn to the slot's primary and its
  replica, seen in each node's ``INFO commandstats``; reads that count an access (``get``)
  never reach a replica; a replica killed while a read waits on it, or out of sync with its
  primary, leaves the read to the primary and the answer is right.
- ``?seeds=h:p,h:p``: a client whose URL's node is down at startup (a free port, or a
  killed replica) connects through another seed; all seeds down is
  :class:`~prefect_memory.errors.BackendUnavailable`; seeds on a single server, or malformed,
  are a :class:`~prefect_memory.errors.ConfigError`.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import prefect_memory as pm
from servers import RedisServer, free_port
from shared.conftest_replicas import (  # noqa: F401 - the fixture, used by name
    ReplicatedCluster,
    redis_cluster_replicas,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

#: The commands our reads send (a script call, the metadata pipelines, the key scan).
READS = ("evalsha", "hget", "hmget", "hstrlen", "scan")
DATA = {f"k{i:03d}": {"i": i, "pad": "x" * 20} for i in range(120)}


def calls(cluster: ReplicatedCluster, node: RedisServer, *commands: str) -> int:
    """How many times ``node`` ran ``commands`` since its last ``CONFIG RESETSTAT``."""
    stats = cluster.info(node, "commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in commands)


def reset_stats(cluster: ReplicatedCluster) -> None:
    for node in cluster.live():
        cluster.command(node, "CONFIG", "RESETSTAT")


def open_reader(cluster: ReplicatedCluster, layout: int, **options: Any) -> pm.Memory:
    """A memory reading from replicas; writes wait for the replica (so reads see them)."""
    return pm.open_memory(
        cluster.url + "?read_from_replicas=true",
        namespace="ns" + uuid.uuid4().hex[:6], key_prefix="pmr" + uuid.uuid4().hex[:8],
        layout=layout, consistency="strong", quorum=1, **options,
    )  # fmt: skip


def values(mem: pm.Memory, keys: list[str]) -> dict[str, Any]:
    """``get_many`` that counts no access (the backend's ``touch=False``), decoded."""
    found = mem.backend.get_many(mem.namespace, keys, now=time.time(), touch=False)
    return {key: mem.codec.decode(record.value) for key, record in found.items()}


def namespace_nodes(cluster: ReplicatedCluster, mem: pm.Memory) -> list[tuple[Any, Any]]:
    """``(primary, replica)`` of each node holding the namespace (from the client's map)."""
    backend = mem.backend
    slots = backend._slots
    spread = backend._spread(mem.namespace)
    bases = [backend._base(mem.namespace)] if spread is None else spread.bases
    primaries = {slots.owner(base) for base in bases}
    return [(cluster.node(p[1]), cluster.node(slots.replicas[p][0][1])) for p in sorted(primaries)]


@pytest.fixture
def cluster(redis_cluster_replicas: ReplicatedCluster) -> Iterator[ReplicatedCluster]:  # noqa: F811
    redis_cluster_replicas.repair()
    yield redis_cluster_replicas


# -- reads from replicas -----------------------------------------------------------------------
@pytest.mark.parametrize("layout", [1, 2], ids=["layout1", "layout2"])
def test_reads_go_to_replicas_in_turn_and_are_right(
    cluster: ReplicatedCluster, layout: int
) -> None:
    mem = open_reader(cluster, layout)
    mem.set_many(DATA, tags=["t"])
    keys = sorted(DATA)
    assert mem.backend.connection.read_from_replicas is True
    pairs = namespace_nodes(cluster, mem)
    assert len(pairs) == (1 if layout == 1 else 3)
    reset_stats(cluster)
    for _ in range(6):
        assert values(mem, keys) == DATA
        assert sorted(mem.keys()) == keys
        assert mem.exists("k007") and not mem.exists("nope")
        info = mem.info("k042")
        assert info is not None and info.tags == ("t",)
        metas = mem.backend.meta_many(mem.namespace, keys[:50], now=time.time())
        assert sorted(metas) == keys[:50]
    for primary, replica in pairs:
        on_replica, on_primary = calls(cluster, replica, *READS), calls(cluster, primary, *READS)
        # In turn: each side served a fair part (30 requests per node, one in two each).
        assert on_replica >= 8 and on_primary >= 8, (on_primary, on_replica)
        assert calls(cluster, replica, "readonly") >= 1  # the replica's connections
    # Reads that count an access write: they never reach a replica.
    reset_stats(cluster)
    for _ in range(6):
        assert mem.get_many(keys) == DATA
        assert mem.get("k001") == DATA["k001"]
    assert all(calls(cluster, replica, "evalsha") == 0 for _, replica in pairs)
    assert sum(calls(cluster, primary, "evalsha") for primary, _ in pairs) >= 12
    mem.clear()
    mem.close()


def test_read_from_replicas_off_by_default(cluster: ReplicatedCluster) -> None:
    mem = pm.open_memory(cluster.url, namespace="plain", key_prefix="pmr" + uuid.uuid4().hex[:8])
    mem.set_many(DATA)
    [(_, replica)] = namespace_nodes(cluster, mem)
    reset_stats(cluster)
    for _ in range(5):
        assert values(mem, sorted(DATA)) == DATA and mem.exists("k001")
    assert calls(cluster, replica, *READS) == 0
    mem.clear()
    mem.close()


def test_replica_killed_mid_read_falls_back_to_the_primary(cluster: ReplicatedCluster) -> None:
    """SIGSTOP the replica, send a read that must go to it, SIGKILL it while the read waits:
    the read is answered by the primary; later reads skip the dead replica, and use it
    again once it is back."""
    mem = open_reader(cluster, 1, timeout=20.0)
    mem.set_many(DATA)
    keys = sorted(DATA)
    assert values(mem, keys) == DATA  # connections and slot map made
    [(primary, replica)] = namespace_nodes(cluster, mem)
    slots = mem.backend._slots
    address = (replica.host, replica.port)
    slots.health[address] = (True, time.monotonic() + 600)  # known good: no check first
    slots.turns[(primary.host, primary.port)] = 0  # the next read is the replica's turn
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            outcome["found"] = values(mem, keys)
        except BaseException as err:  # reported below
            outcome["error"] = err

    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(0.5)
        assert reader.is_alive(), f"the read did not wait on the stopped replica: {outcome}"
    finally:
        replica.kill()  # SIGKILL of the stopped process: the waiting read sees the socket close
    reader.join(30)
    assert not reader.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["found"] == DATA
    assert slots.health[address][0] is False  # left alone for a while
    for _ in range(10):  # the replica is down (still listed until the cluster fails it)
        assert values(mem, keys) == DATA
        assert mem.exists("k003")
    replica.restart()
    cluster.wait_healthy()
    reset_stats(cluster)
    deadline = time.monotonic() + 30
    while calls(cluster, replica, "evalsha") == 0:  # back in turn once found in sync
        assert time.monotonic() < deadline, "the restarted replica never served a read"
        assert values(mem, keys) == DATA
        time.sleep(0.05)
    assert calls(cluster, primary, "evalsha") >= 1
    mem.clear()
    mem.close()


def test_replica_out_of_sync_is_skipped(cluster: ReplicatedCluster) -> None:
    """A replica whose link to its primary is down (it cannot authenticate to it) serves
    no read; once the link is back it does again."""
    mem = open_reader(cluster, 1)
    mem.set_many(DATA)
    keys = sorted(DATA)
    [(primary, replica)] = namespace_nodes(cluster, mem)
    cluster.command(replica, "CONFIG", "SET", "masterauth", "wrong-password")
    try:
        cluster.command(replica, "CLIENT", "KILL", "TYPE", "master")
        deadline = time.monotonic() + 30
        while cluster.info(replica, "replication").get("master_link_status") != "down":
            assert time.monotonic() < deadline, "the replica's link never went down"
            time.sleep(0.05)
        mem.backend._slots.health.clear()  # as if the last check were old
        reset_stats(cluster)
        for _ in range(10):
            assert values(mem, keys) == DATA and mem.exists("k009")
        assert calls(cluster, replica, *READS) == 0
        assert calls(cluster, primary, *READS) >= 20
    finally:
        cluster.command(replica, "CONFIG", "SET", "masterauth", "")
    cluster.wait_healthy()
    mem.backend._slots.health.clear()
    reset_stats(cluster)
    for _ in range(10):
        assert values(mem, keys) == DATA
    assert calls(cluster, replica, "evalsha") >= 3
    mem.clear()
    mem.close()


def test_read_from_replicas_is_checked() -> None:
    with pytest.raises(pm.ConfigError, match="read_from_replicas"):
        pm.open_memory("redis://127.0.0.1:7000/0?read_from_replicas=maybe")
    with pytest.raises(pm.ConfigError, match="read_from_replicas"):
        pm.open_memory("redis://127.0.0.1:7000/0", read_from_replicas="yes")
    with pytest.raises(pm.ConfigError, match="Cluster"):
        pm.open_memory("redis://127.0.0.1:7000/0?read_from_replicas=true", cluster=False)


def test_read_from_replicas_on_a_single_server_is_refused(redis_server: RedisServer) -> None:
    mem = pm.open_memory(redis_server.url + "?read_from_replicas=true", namespace="one")
    with pytest.raises(pm.ConfigError, match=r"single server.*read_from_replicas"):
        mem.exists("k")
    mem.close()


# -- seeds -------------------------------------------------------------------------------------
def seeds_of(nodes: list[RedisServer]) -> str:
    return ",".join(f"{node.host}:{node.port}" for node in nodes)


@pytest.mark.parametrize("cluster_mode", [None, True], ids=["detected", "forced"])
def test_first_seed_down_at_startup_connects_through_another(
    cluster: ReplicatedCluster, cluster_mode: bool | None
) -> None:
    dead = free_port()  # nothing listens there
    others = cluster.nodes[1:3]
    url = f"redis://127.0.0.1:{dead}/0?seeds={seeds_of(others)}&layout=2"
    mem = pm.open_memory(url, namespace="seeded", key_prefix="pms" + uuid.uuid4().hex[:8],
                         cluster=cluster_mode)  # fmt: skip
    mem.set_many(DATA, tags=["t"])
    assert mem.get_many(sorted(DATA)) == DATA
    assert sorted(mem.keys()) == sorted(DATA)
    assert mem.backend.cluster is True
    assert mem.backend.connection._at == (others[0].host, others[0].port)
    assert mem.backend.host == "127.0.0.1" and mem.backend.port == dead  # what was given
    # A pickled backend (a task on a worker) keeps its seeds and connects the same way.
    copy = pickle.loads(pickle.dumps(mem.backend))
    assert copy.exists_many(mem.namespace, ["k001"], now=time.time()) == {"k001"}
    copy.close()
    assert mem.invalidate_tags("t") == len(DATA)
    mem.close()


def test_killed_seed_node_at_startup(cluster: ReplicatedCluster) -> None:
    """The URL names a replica that was killed: the client connects through the next seed
    (the namespace's primary is elsewhere, so the cluster keeps serving)."""
    victim = cluster.replicas()[0]
    others = [node for node in cluster.nodes if node is not victim]
    victim.kill()
    try:
        url = f"{victim.url}?seeds={seeds_of(others[:2])}"
        mem = pm.open_memory(url, namespace="k", key_prefix="pms" + uuid.uuid4().hex[:8])
        mem.set("a", 1)
        assert mem.get("a") == 1 and mem.backend.cluster is True
        assert mem.backend.connection._at == (others[0].host, others[0].port)
        mem.clear()
        mem.close()
    finally:
        victim.restart()
        cluster.wait_healthy()


def test_all_seeds_down_is_unavailable() -> None:
    dead = [free_port() for _ in range(3)]
    url = f"redis://127.0.0.1:{dead[0]}/0?seeds=127.0.0.1:{dead[1]},127.0.0.1:{dead[2]}"
    mem = pm.open_memory(url, namespace="x", timeout=1.0)
    with pytest.raises(pm.BackendUnavailable, match=str(dead[0])):
        mem.get("k")
    mem.close()


def test_seeds_are_checked(redis_server: RedisServer) -> None:
    for bad in ("nohost", "h:0", "h:abc", ":7000", "h:70000"):
        with pytest.raises(pm.ConfigError, match="seed is host:port"):
            pm.open_memory(f"redis://127.0.0.1:7000/0?seeds={bad}")
    with pytest.raises(pm.ConfigError, match="Cluster"):
        pm.open_memory("redis://127.0.0.1:7000/0?seeds=h:7001", cluster=False)
    backend = pm.open_backend("redis://127.0.0.1:7000/0", seeds=["h:7001", ("::1", 7002)])
    assert backend.connection.seeds == [("h", 7001), ("::1", 7002)]
    backend = pm.open_backend("redis://127.0.0.1:7000/0?seeds=[::1]:7002")
    assert backend.connection.seeds == [("::1", 7002)]
    # A single server is no Cluster: its seeds are refused, not ignored.
    mem = pm.open_memory(f"{redis_server.url}?seeds=127.0.0.1:1", namespace="one")
    with pytest.raises(pm.ConfigError, match=r"single server.*seeds"):
        mem.exists("k")
    mem.close()

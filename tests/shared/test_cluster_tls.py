"""A Redis Cluster over TLS: 3 primaries + 3 replicas that speak TLS only.

The nodes run with ``--tls-cluster yes --tls-replication yes`` and check client
certificates; the client uses ``rediss://`` and the test CA. The contract suite of
``tests/contract`` runs unchanged on it (both layouts), then: a manual failover and a
``redis-cli --cluster reshard`` (over TLS) each send the client a ``MOVED`` that it follows,
and reads go to replicas over TLS when asked.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

import prefect_memory as pm
from prefect_memory.keys import ns_token
from shared.conftest_replicas import (  # noqa: F401 - the fixture, used by name
    ReplicatedCluster,
    redis_cluster_tls,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

_path = Path(__file__).resolve().parents[1] / "contract" / "test_contract.py"
_spec = importlib.util.spec_from_file_location("pm_contract_on_tls_cluster", _path)
assert _spec is not None and _spec.loader is not None
_contract = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _contract  # its classes pickle by module name
_spec.loader.exec_module(_contract)
globals().update({name: obj for name, obj in vars(_contract).items() if name.startswith("test_")})

DATA = {f"k{i:03d}": {"i": i} for i in range(100)}


@pytest.fixture(params=[1, 2], ids=["layout1", "layout2"])
def store(redis_cluster_tls: ReplicatedCluster, request: pytest.FixtureRequest) -> dict[str, Any]:  # noqa: F811
    """The contract suite's store: a fresh key prefix on the TLS Cluster, in both layouts."""
    options: dict[str, Any] = {
        "key_prefix": "pmt" + uuid.uuid4().hex[:10],
        **redis_cluster_tls.ssl_options(),
    }
    if request.param == 2:
        options["layout"] = 2
    return {"url": redis_cluster_tls.url, "options": options}


@pytest.fixture(autouse=True)
def _connected(request: pytest.FixtureRequest) -> None:
    """Open the TLS connections of a contract test's memory before the test (a read of its
    namespace on every node holding it): on a loaded machine the handshakes of the first
    call ate the 0.6 s TTL that ``test_ttl_expires`` writes and reads back within."""
    if "mem" in request.fixturenames:
        list(request.getfixturevalue("mem").keys())


def open_tls(cluster: ReplicatedCluster, namespace: str, **options: Any) -> pm.Memory:
    return pm.open_memory(
        cluster.url, namespace=namespace, key_prefix="pmt" + uuid.uuid4().hex[:8],
        **cluster.ssl_options(), **options,
    )  # fmt: skip


def address(node: Any) -> tuple[str, int]:
    return (node.host, node.port)


def test_tls_cluster_url_and_routing(redis_cluster_tls: ReplicatedCluster) -> None:  # noqa: F811
    cluster = redis_cluster_tls
    assert cluster.url.startswith("rediss://")
    mem = open_tls(cluster, "routing", layout=2)
    mem.set_many(DATA, tags=["t"])
    assert mem.backend.cluster is True
    assert mem.get_many(sorted(DATA)) == DATA
    slots = mem.backend._slots
    spread = mem.backend._spread("routing")
    assert {slots.owner(base) for base in spread.bases} == {address(p) for p in cluster.primaries()}
    assert mem.invalidate_tags("t") == len(DATA)
    mem.close()


def test_tls_moved_after_manual_failover(redis_cluster_tls: ReplicatedCluster) -> None:  # noqa: F811
    """``CLUSTER FAILOVER`` on the replica of the namespace's primary: the old primary, now a
    replica, answers the client's next request with ``MOVED``; the client follows it."""
    cluster = redis_cluster_tls
    cluster.repair()
    mem = open_tls(cluster, "failover", consistency="strong", quorum=1)
    mem.set_many(DATA)
    base = mem.backend._base("failover")
    old = cluster.owner(key_slot(base.encode()))
    new = cluster.replica_of(old)
    assert new is not None
    assert mem.backend._slots.owner(base) == address(old)
    cluster.command(new, "CLUSTER", "FAILOVER")
    deadline = time.monotonic() + 60
    while cluster.info(old, "replication")["role"] != "slave":
        assert time.monotonic() < deadline, "the manual failover did not happen"
        time.sleep(0.05)
    cluster.wait_healthy(60)
    assert mem.backend._slots.owner(base) == address(old)  # the client has not noticed yet
    mem.set("after", "failover")  # to the old primary: MOVED, followed
    assert mem.backend._slots.owner(base) == address(new)
    assert mem.get_many([*DATA, "after"]) == {**DATA, "after": "failover"}
    mem.clear()
    mem.close()


def lowest_slot_namespace(cluster: ReplicatedCluster) -> tuple[str, Any, int]:
    """A namespace whose slot is the lowest slot of a primary (``reshard`` moves those
    first): the namespace, the primary, the slot."""
    ranges: dict[int, int] = {}
    for start, _end, primary, *_ in cluster.command(cluster.live()[0], "CLUSTER", "SLOTS"):
        port = int(primary[1])
        ranges[port] = min(ranges.get(port, 16384), int(start))
    port, slot = min(ranges.items(), key=lambda item: item[1])
    for i in range(1_000_000):
        ns = f"moving{i}"
        if key_slot(f"p:{{{ns_token(ns)}}}:".encode()) == slot:
            return ns, cluster.node(port), slot
    raise AssertionError("no namespace found")  # pragma: no cover


def test_tls_moved_after_reshard(redis_cluster_tls: ReplicatedCluster) -> None:  # noqa: F811
    """``redis-cli --tls --cluster reshard`` moves the namespace's slot (its keys migrated
    over TLS): the client's next read gets ``MOVED`` and finds every entry on the new node."""
    cluster = redis_cluster_tls
    cluster.repair()
    ns, source, slot = lowest_slot_namespace(cluster)
    target = next(p for p in cluster.primaries() if p is not source)
    mem = open_tls(cluster, ns)
    mem.set_many(DATA, tags=["t"])
    base = mem.backend._base(ns)
    assert mem.backend._slots.owner(base) == address(source)
    ids = {n.port: cluster.command(n, "CLUSTER", "MYID") for n in (source, target)}
    ids = {port: i.decode() if isinstance(i, bytes) else str(i) for port, i in ids.items()}
    cluster.cli(
        "reshard", f"127.0.0.1:{source.port}", "--cluster-from", ids[source.port],
        "--cluster-to", ids[target.port], "--cluster-slots", "1", "--cluster-yes",
    )  # fmt: skip
    assert cluster.owner(slot) is target
    assert mem.backend._slots.owner(base) == address(source)  # not noticed yet
    assert mem.get_many(sorted(DATA)) == DATA  # MOVED, followed
    assert mem.backend._slots.owner(base) == address(target)
    assert mem.tagged("t") == sorted(DATA)
    mem.clear()
    mem.close()


def test_tls_reads_from_replicas(redis_cluster_tls: ReplicatedCluster) -> None:  # noqa: F811
    cluster = redis_cluster_tls
    cluster.repair()
    mem = open_tls(cluster, "replicas", layout=2, consistency="strong", quorum=1,
                   read_from_replicas=True)  # fmt: skip
    mem.set_many(DATA)
    for node in cluster.live():
        cluster.command(node, "CONFIG", "RESETSTAT")
    for _ in range(6):
        found = mem.backend.get_many("replicas", sorted(DATA), now=time.time(), touch=False)
        assert {k: mem.codec.decode(r.value) for k, r in found.items()} == DATA
        assert sorted(mem.keys()) == sorted(DATA)
    served = {
        node.port: int(
            cluster.info(node, "commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        )
        for node in cluster.replicas()
    }
    assert all(count >= 1 for count in served.values()), served
    mem.clear()
    mem.close()

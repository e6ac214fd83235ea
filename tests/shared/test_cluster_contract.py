"""The contract suite of tests/contract, unchanged, against a real 3-node Redis Cluster.

The test functions are those of ``tests/contract/test_contract.py`` (loaded from its file,
not copied); the ``store``/``open_mem``/``mem`` fixtures of ``tests/shared/conftest.py``
point them at the Cluster. Plus the Cluster specifics: namespaces spread over the nodes,
each namespace's keys on one slot, a redirected request followed.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm

pytestmark = pytest.mark.redis

_path = Path(__file__).resolve().parents[1] / "contract" / "test_contract.py"
_spec = importlib.util.spec_from_file_location("pm_contract_on_cluster", _path)
assert _spec is not None and _spec.loader is not None
_contract = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _contract  # its classes pickle by module name
_spec.loader.exec_module(_contract)
globals().update({name: obj for name, obj in vars(_contract).items() if name.startswith("test_")})


def test_namespaces_spread_over_the_nodes(redis_cluster: Any, store: dict[str, Any]) -> None:
    mems = [
        pm.open_memory(redis_cluster.url, namespace=f"n{i}", **store["options"]) for i in range(12)
    ]
    for mem in mems:
        mem.set_many({f"k{j}": j for j in range(5)}, tags=["t"])
    assert mems[0].backend.cluster is True
    for mem in mems:
        assert mem.get_many([f"k{j}" for j in range(5)]) == {f"k{j}": j for j in range(5)}
        assert sorted(mem.keys()) == [f"k{j}" for j in range(5)]
        assert mem.invalidate_tags("t") == 5
    prefix = store["options"]["key_prefix"]

    def mine(node: Any) -> int:
        client = node.client()
        try:
            # (a layout-2 namespace keeps its layout record, P:{N}:layout, when cleared)
            names = client.scan_iter(match=f"{prefix}:*")
            return sum(1 for name in names if not name.endswith(b":layout"))
        finally:
            client.close()

    assert sum(map(mine, redis_cluster.nodes)) == 0
    for mem in mems:
        mem.set("x", 1)
    used = [mine(node) > 0 for node in redis_cluster.nodes]
    assert sum(used) >= 2, "12 namespaces should land on more than one node"
    for mem in mems:
        mem.clear()
        mem.close()


def test_forced_and_detected_cluster_mode(redis_cluster: Any, store: dict[str, Any]) -> None:
    ns = "ns-" + uuid.uuid4().hex[:6]
    # Any node as the seed: requests are routed to the slot's node from the first one.
    for node in redis_cluster.nodes:
        mem = pm.open_memory(node.url, namespace=ns, cluster=True, **store["options"])
        mem.set("k", node.port)
        assert mem.get("k") == node.port and list(mem.keys()) == ["k"]
        mem.close()
    with pytest.raises(pm.ConfigError, match="database 0"):
        pm.open_memory(redis_cluster.url.replace("/0", "/1"), cluster=True)


def test_stale_slot_map_is_refreshed_on_moved(redis_cluster: Any, store: dict[str, Any]) -> None:
    mem = pm.open_memory(redis_cluster.url, namespace="moved", **store["options"])
    mem.set("k", 1)
    slots = mem.backend._slots
    wrong = next(
        (n.host, n.port)
        for n in redis_cluster.nodes
        if (n.host, n.port) != slots.owner(mem.backend._base("moved"))
    )
    slots.owners = [wrong] * 16384  # every slot now points at one node: MOVED elsewhere
    started = time.monotonic()
    assert mem.get("k") == 1
    assert time.monotonic() - started < 2
    assert slots.owner(mem.backend._base("moved")) != wrong
    mem.clear()
    mem.close()

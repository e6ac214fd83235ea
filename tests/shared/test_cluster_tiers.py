"""Tier moves with the hot tier on a real Redis Cluster (three primaries), in processes:
two migrations and two promoting readers of the same keys at once lose nothing, and the
tombstones (a namespace of their own, so a slot of their own) work across the nodes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.tiers import Tier, TieredMemory

WORKERS = Path(__file__).with_name("_workers.py")
N = 400


def test_migrations_and_promotions_on_a_cluster_lose_nothing(
    redis_cluster: Any, tmp_path: Path
) -> None:
    import prefect_memory as pm

    prefix, warm = "pmt" + uuid.uuid4().hex[:8], str(tmp_path / "warm.db")

    def memory() -> TieredMemory:
        return TieredMemory(
            [Tier("hot", pm.open_backend(redis_cluster.url, key_prefix=prefix),
                  patterns=("k:*",)),
             Tier("warm", SqliteBackend(warm))],
            rules=[{"from": "hot", "to": "warm", "condition": "accessCount >= 0"}],
            namespace="tiers",
        )  # fmt: skip

    mem = memory()
    mem.set_many({f"k:{i}": i for i in range(N)})
    roles = ["migrate", "read", "migrate", "read"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKERS), "tiers", redis_cluster.url, prefix, warm, role, str(N)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    for role, (out, _) in zip(roles, outs, strict=True):
        if role == "read":
            assert out.strip() == f"read {N}", out  # no false misses, no wrong values
    where: dict[str, list[str]] = {}
    for tier in mem.tiers:
        for key in tier.backend.scan("tiers", None, now=mem.clock()):
            where.setdefault(key, []).append(tier.name)
    assert sorted(where) == sorted(f"k:{i}" for i in range(N))  # nothing lost
    assert all(len(t) == 1 for t in where.values())  # each key in exactly one tier
    assert mem.get_many(list(where)) == {f"k:{i}": i for i in range(N)}
    mem.delete_many([f"k:{i}" for i in range(0, N, 2)])  # tombstones on the cluster
    assert mem.backend.tombstones.dead("tiers", {"k:0": [(1, 0.0)]}, now=mem.clock()) == {"k:0"}
    assert len(mem.get_many([f"k:{i}" for i in range(N)])) == N // 2
    mem.clear()

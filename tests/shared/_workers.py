"""Entry points of the worker processes of the shared-memory tests (run with ``python -m``
style: ``python _workers.py <role> ...``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import prefect_memory as pm
from prefect_memory.shared import GCounter, LeaderFollower


def count(url: str, prefix: str, replica: str, times: int) -> None:
    counter = GCounter(pm.open_memory(url, namespace="crdt", key_prefix=prefix), "hits",
                       replica=replica)  # fmt: skip
    for _ in range(times):
        counter.increment()


def lead(url: str, prefix: str, lease: float) -> None:
    node = LeaderFollower(pm.open_memory(url, namespace="lf", key_prefix=prefix), "cfg",
                          lease=lease, candidate="old-leader")  # fmt: skip
    while node.step() != "leader":
        time.sleep(0.05)
    node.set("x", 1)
    node.start()
    print(f"leader {node.token}", flush=True)
    time.sleep(120)  # until killed


def tiers(url: str, prefix: str, warm: str, role: str, n: int) -> None:
    """One actor on a tiered memory whose hot tier is the Redis Cluster: ``migrate`` (small
    batches) or ``read`` (every key, promoting home to the hot tier)."""
    from prefect_memory.plugins.sqlite import SqliteBackend
    from prefect_memory.tiers import Tier, TieredMemory

    hot = pm.open_backend(url, key_prefix=prefix)
    mem = TieredMemory(
        [Tier("hot", hot, patterns=("k:*",)), Tier("warm", SqliteBackend(warm))],
        rules=[{"from": "hot", "to": "warm", "condition": "accessCount >= 0"}],
        namespace="tiers",
    )
    if role == "migrate":
        report = mem.migrate(batch_size=20)
        print(f"moved {report.total_moved} written {report.written}", flush=True)
    else:
        keys = [f"k:{i}" for i in range(n)]
        got = {}
        for start in range(0, n, 37):
            got.update(mem.get_many(keys[start : start + 37]))
        print(f"read {sum(got.get(k) == int(k[2:]) for k in keys)}", flush=True)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "count":
        count(args[0], args[1], args[2], int(args[3]))
    elif role == "lead":
        lead(args[0], args[1], float(args[2]))
    elif role == "tiers":
        tiers(args[0], args[1], args[2], args[3], int(args[4]))

"""Partitioned migration on Dask worker processes vs the same migration in one process.

Workload: N entries (default 20,000; the ~100-byte feature dict of ``bench_redis.py``) in a
Redis hot tier, all due by the rule ``accessCount < 1``, moved to the warm tier (SQLite by
default, ``--warm redis`` for a second Redis database). Measured:

- ``one process``: ``TieredMemory.migrate()`` in this process (today's flow body);
- ``dask, P partitions``: one ``partitions.migrate`` per partition submitted to a
  ``distributed.LocalCluster`` of 2 worker processes with 1 thread each (what
  ``migrate_tiers(partitions=P)`` maps on ``DaskTaskRunner``, without Prefect's own task
  overhead, which is constant per task), each worker building its memory from the spec.

The store is refilled before each run; each figure is the median of the repetitions (best in
brackets), in entries moved per second; speed-up = dask / one process. The servers (Redis;
SQLite's file lock for the warm tier) share the machine's cores with the workers, so on 2
cores expect less than 2x.

Usage::

    python benchmarks/bench_fanout.py                 # starts redis-server
    python benchmarks/bench_fanout.py --quick         # N=5000, 2 repetitions
    python benchmarks/bench_fanout.py --warm redis
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_redis import VALUE, _load_servers  # noqa: E402

RULE = {"from": "hot", "to": "warm", "condition": "accessCount < 1"}


def build(spec: dict[str, Any]) -> Any:
    """The tiered memory of ``spec`` (in this process or in a Dask worker)."""
    import prefect_memory as pm
    from prefect_memory.tiers import Tier, TieredMemory

    tiers = [
        Tier(t["name"], pm.open_backend(t["url"], **t.get("options", {}))) for t in spec["tiers"]
    ]
    return TieredMemory(tiers, [RULE], namespace=spec["namespace"])


def run_partition(spec: dict[str, Any], index: int, count: int, batch_size: int) -> int:
    """Migrate one partition (in a Dask worker); the entries moved."""
    from prefect_memory.tiers import partitions

    part = partitions.Partition(index, count)
    return partitions.migrate(build(spec), part, batch_size=batch_size).entries


def fresh(redis_url: str, folder: str, warm: str, n: int) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    warm_tier = (
        {"name": "warm", "url": f"sqlite:///{folder}/warm-{unique}.db"}
        if warm == "sqlite"
        else {"name": "warm", "url": redis_url[:-1] + "1", "options": {"key_prefix": f"w{unique}"}}
    )
    spec = {
        "namespace": f"fan-{unique}",
        "tiers": [
            {"name": "hot", "url": redis_url, "options": {"key_prefix": f"h{unique}"}},
            warm_tier,
        ],
    }
    mem = build(spec)
    for start in range(0, n, 5000):
        mem.set_many({f"user:{i}": VALUE for i in range(start, min(n, start + 5000))})
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--partitions", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--warm", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="N=5000, 2 repetitions")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeat = 5000, 2

    from distributed import Client, LocalCluster

    servers = _load_servers()
    redis_server = servers.RedisServer().start()
    rates: dict[str, list[float]] = {}
    try:
        with (
            tempfile.TemporaryDirectory() as folder,
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1) as cluster,
            Client(cluster) as client,
        ):
            client.run(lambda: __import__("prefect_memory.tiers.partitions"))  # warm imports
            for _ in range(args.repeat):
                spec = fresh(redis_server.url, folder, args.warm, args.n)
                start = time.perf_counter()
                moved = build(spec).migrate(batch_size=args.batch_size).total_moved
                rates.setdefault("one process", []).append(moved / (time.perf_counter() - start))
                assert moved == args.n, moved
                for count in args.partitions:
                    spec = fresh(redis_server.url, folder, args.warm, args.n)
                    start = time.perf_counter()
                    futures = [
                        client.submit(run_partition, spec, i, count, args.batch_size, pure=False)
                        for i in range(count)
                    ]
                    moved = sum(client.gather(futures))
                    elapsed = time.perf_counter() - start
                    assert moved == args.n, moved
                    rates.setdefault(f"dask, {count} partitions", []).append(moved / elapsed)
    finally:
        redis_server.stop()

    base = statistics.median(rates["one process"])
    print(
        f"Redis -> {args.warm} migration, N={args.n}, batch_size={args.batch_size}, "
        f"{args.repeat} repetitions; Dask LocalCluster 2 worker processes x 1 thread"
    )
    print(f"{'run':<24}{'entries/s median [best]':>28}{'speed-up':>12}")
    print("-" * 64)
    for name, samples in rates.items():
        median, best = statistics.median(samples), max(samples)
        print(f"{name:<24}{median:>16,.0f} [{best:>9,.0f}]{median / base:>11.2f}x")
    print("speed-up: median entries/s over the one-process median")
    return 0


if __name__ == "__main__":
    sys.exit(main())

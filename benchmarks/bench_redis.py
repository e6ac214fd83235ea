"""Redis backend vs raw redis-py and vs prefect-redis's ``RedisDatabase`` block.

Workload: ``set_many`` and ``get_many`` of N entries (default 10,000; same msgpack-able
~100-byte feature dict, same TTL) and S single gets (default 1,000), each repeated and
summarised by the median (best also shown):

- raw: redis-py, one pipeline of ``SET key msgpack(value) EX ttl`` / ``GET key`` (values
  packed / unpacked with msgpack, so both sides pay serialization), and plain ``GET``;
- ours: ``Memory.set_many`` / ``Memory.get_many`` / ``Memory.get`` on ``redis://``;
- prefect-redis: ``RedisDatabase.write_path`` / ``read_path`` (its only API: one key per
  call, and a new client per call). It is far slower, so it runs a smaller N (``--block-n``)
  to keep the number of short-lived connections sane; rates are per second either way.

Targets: set_many and get_many >= 0.7x raw throughput, single get <= 1.5x raw latency.

Usage::

    python benchmarks/bench_redis.py            # starts its own redis-server
    python benchmarks/bench_redis.py --quick    # smaller, faster
    python benchmarks/bench_redis.py --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import redis
import redis.utils

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import prefect_memory as pm  # noqa: E402

TTL = 3600
VALUE: dict[str, Any] = {
    "user_id": 1234567,
    "segment": "premium",
    "score": 0.87315,
    "active": True,
    "features": [0.125, 0.5, 0.75, 0.0625, 0.3125, 0.875, 0.1875, 0.4375],
    "tags": ["a", "bc"],
}


def _load_servers() -> Any:
    spec = importlib.util.spec_from_file_location("pm_test_servers", REPO / "tests" / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Seconds ``fn(*args)`` takes (garbage collected before, not during)."""
    gc.collect()
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


class Stats:
    """Samples per measurement: rates (ops/s, higher is better) or latencies (lower)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def best(self, name: str, *, latency: bool = False) -> float:
        return min(self.samples[name]) if latency else max(self.samples[name])


# -- the three contenders -------------------------------------------------------------------
def raw_set_many(client: redis.Redis, keys: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    packb = msgpack.packb
    for key in keys:
        pipe.set(key, packb(VALUE), ex=TTL)
    pipe.execute()


def raw_get_many(client: redis.Redis, keys: list[str]) -> dict[str, Any]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    unpackb = msgpack.unpackb
    return {k: unpackb(v) for k, v in zip(keys, pipe.execute(), strict=True) if v is not None}


def raw_single_gets(client: redis.Redis, keys: list[str]) -> None:
    unpackb = msgpack.unpackb
    for key in keys:
        unpackb(client.get(key))


def ours_set_many(mem: pm.Memory, keys: list[str]) -> None:
    mem.set_many(dict.fromkeys(keys, VALUE), ttl=TTL)


def ours_get_many(mem: pm.Memory, keys: list[str]) -> dict[str, Any]:
    return mem.get_many(keys)


def ours_single_gets(mem: pm.Memory, keys: list[str]) -> None:
    get = mem.get
    for key in keys:
        get(key)


def block_set_many(block: Any, keys: list[str]) -> None:
    packb = msgpack.packb
    for key in keys:
        block.write_path(key, packb(VALUE))


def block_get_many(block: Any, keys: list[str]) -> dict[str, Any]:
    unpackb = msgpack.unpackb
    return {key: unpackb(block.read_path(key)) for key in keys}


def block_single_gets(block: Any, keys: list[str]) -> None:
    unpackb = msgpack.unpackb
    for key in keys:
        unpackb(block.read_path(key))


BLOCK = (block_set_many, block_get_many, block_single_gets)


RAW = (raw_set_many, raw_get_many, raw_single_gets)
OURS = (ours_set_many, ours_get_many, ours_single_gets)


# -- runner ---------------------------------------------------------------------------------
def measure(
    stats: Stats, side: str, target: Any, keys: list[str], n: int, singles: int, fns: tuple
) -> None:
    """One repetition of the workload on one side: set_many, get_many, single gets."""
    set_many, get_many, single_gets = fns
    stats.add(f"{side} set_many", n / timed(set_many, target, keys))
    got: dict[str, Any] = {}
    stats.add(f"{side} get_many", n / timed(lambda: got.update(get_many(target, keys))))
    assert len(got) == n and got[keys[0]] == VALUE, side
    stats.add(f"{side} single", timed(single_gets, target, keys[:singles]) / singles)


def run(url: str, args: argparse.Namespace) -> bool:
    n, singles, reps = args.n, args.singles, args.reps
    client = redis.Redis.from_url(url)
    client.ping()
    prefix = "bench" + uuid.uuid4().hex[:6]
    mem = pm.open_memory(url, namespace="bench", key_prefix=prefix)
    stats = Stats()

    # Warm-up: connections, script loading, code paths.
    warm = [f"{prefix}:warm:{i}" for i in range(200)]
    raw_set_many(client, warm)
    raw_get_many(client, warm)
    ours_set_many(mem, warm)
    ours_get_many(mem, warm)

    raw_keys_all: list[str] = list(warm)
    for rep in range(reps):
        keys = [f"user:{rep}:{i:06d}" for i in range(n)]
        raw_keys = [f"{prefix}:raw:{k}" for k in keys]
        raw_keys_all += raw_keys
        # alternate which side goes first, to even out drift
        for side in ("raw", "ours") if rep % 2 == 0 else ("ours", "raw"):
            if side == "raw":
                measure(stats, "raw", client, raw_keys, n, singles, RAW)
            else:
                measure(stats, "ours", mem, keys, n, singles, OURS)

    block_rows: dict[str, float] = {}
    if not args.no_block:
        block_rows = run_block(url, args, prefix)

    # clean up what we wrote (matters with --url)
    mem.clear()
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(raw_keys_all), 1000):
        pipe.delete(*raw_keys_all[start : start + 1000])
    pipe.execute()
    mem.close()
    client.close()

    return report(stats, block_rows, args)


def run_block(url: str, args: argparse.Namespace, prefix: str) -> dict[str, float]:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect_redis import RedisDatabase

    block = RedisDatabase.from_connection_string(url)
    block.key_ttl = TTL
    n, singles = args.block_n, min(args.singles, args.block_n)
    stats = Stats()
    client = redis.Redis.from_url(url)
    for rep in range(args.block_reps):
        keys = [f"{prefix}:block:{rep}:{i:06d}" for i in range(n)]
        measure(stats, "block", block, keys, n, singles, BLOCK)
        client.delete(*keys)
    client.close()
    return {op: stats.median(f"block {op}") for op in ("set_many", "get_many", "single")}


def report(stats: Stats, block: dict[str, float], args: argparse.Namespace) -> bool:
    """Print the table; return whether the targets hold (on the best repetitions)."""
    # What redis-py really uses (hiredis installed but too old is not used): both sides.
    active = redis.utils.HIREDIS_AVAILABLE
    parser = "hiredis" if active else "pure-Python parser"
    load = os.getloadavg()
    print(
        f"\nredis-py {redis.__version__} ({parser}; hiredis active: {active}), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f}\nN={args.n}, single gets={args.singles}, "
        f"{args.reps} repetitions"
    )
    print(
        "ratio = prefect-memory / raw redis-py (throughput for batches, latency for single "
        "gets);\nmedian of the repetitions, best repetition in brackets"
    )
    head = (
        f"{'operation':<20}{'raw redis-py':>22}{'prefect-memory':>22}{'ratio':>16}"
        f"{'target':>9}{'prefect-redis':>15}{'ours vs block':>15}"
    )
    print(head)
    print("-" * len(head))
    met = {"median": True, "best": True}
    for op in ("set_many", "get_many", "single"):
        latency = op == "single"
        raw_med, ours_med = stats.median(f"raw {op}"), stats.median(f"ours {op}")
        raw_best = stats.best(f"raw {op}", latency=latency)
        ours_best = stats.best(f"ours {op}", latency=latency)
        ratio_med, ratio_best = ours_med / raw_med, ours_best / raw_best
        if latency:
            ok_med, ok_best, target = ratio_med <= 1.5, ratio_best <= 1.5, "<=1.50x"
            cells = [f"{v * 1e6:,.1f}" for v in (raw_med, raw_best, ours_med, ours_best)]
            name = "single get (us/op)"
        else:
            ok_med, ok_best, target = ratio_med >= 0.7, ratio_best >= 0.7, ">=0.70x"
            cells = [f"{v:,.0f}" for v in (raw_med, raw_best, ours_med, ours_best)]
            name = f"{op} (ops/s)"
        met["median"] &= ok_med
        met["best"] &= ok_best
        blk = block.get(op)
        if blk is None:
            blk_cells = ("", "")
        elif latency:
            blk_cells = (f"{blk * 1e6:,.1f}", f"{blk / ours_med:.0f}x faster")
        else:
            blk_cells = (f"{blk:,.0f}", f"{ours_med / blk:.0f}x faster")
        print(
            f"{name:<20}{cells[0]:>11} [{cells[1]:>8}]{cells[2]:>11} [{cells[3]:>8}]"
            f"{ratio_med:>7.2f}x [{ratio_best:.2f}x]{target:>9}{blk_cells[0]:>15}{blk_cells[1]:>15}"
        )
    if block:
        print(
            f"prefect-redis RedisDatabase: write_path/read_path, one key and one new client "
            f"per call (N={args.block_n}, {args.block_reps} repetitions, median)"
        )
    print(
        f"targets: {'met' if met['best'] else 'NOT met'} on the best repetitions, "
        f"{'met' if met['median'] else 'NOT met'} on the medians"
    )
    return met["best"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use this Redis instead of starting a redis-server")
    parser.add_argument("--quick", action="store_true", help="smaller, faster run")
    parser.add_argument("--n", type=int, default=None, help="entries per batch workload")
    parser.add_argument("--singles", type=int, default=None, help="single gets per repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions")
    parser.add_argument("--block-n", type=int, default=None, help="entries for prefect-redis")
    parser.add_argument("--block-reps", type=int, default=None)
    parser.add_argument("--no-block", action="store_true", help="skip prefect-redis")
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or (2_000 if quick else 10_000)
    args.singles = args.singles or (300 if quick else 1_000)
    args.reps = args.reps or (3 if quick else 7)
    args.block_n = args.block_n or (300 if quick else 2_000)
    args.block_reps = args.block_reps or (1 if quick else 3)

    if args.url:
        run(args.url, args)
        return 0
    servers = _load_servers()
    with servers.RedisServer() as server:
        run(server.url, args)
    return 0  # informative: a noisy machine must not fail `make bench`


if __name__ == "__main__":
    raise SystemExit(main())

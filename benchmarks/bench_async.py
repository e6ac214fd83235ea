"""Concurrency on Redis: async coroutines vs redis.asyncio, threads vs one shared redis-py.

Workload (keys written beforehand, same msgpack-able ~100-byte feature dict, same TTL):

- async: ``C`` coroutines (default 64) each doing single operations in turn, on one event
  loop; ``mem.aget(key)`` / ``mem.aset(key, value, ttl=...)`` against redis.asyncio's
  ``GET`` (+ msgpack unpack) / ``SET key msgpack(value) EX ttl``. Both sides get the same
  pool size: unbounded (redis.asyncio's default ``ConnectionPool``, ``max_connections=None``
  for ours) and bounded (``--pool``, a ``BlockingConnectionPool`` for redis.asyncio, whose
  callers wait for a free connection as ours do);
- threads: ``T`` threads (default 8) doing single ``mem.get``/``mem.set`` on one memory,
  against the same threads sharing one redis-py client (``GET`` / ``SET ... EX``).

Each case runs ``--reps`` times, alternating which side goes first; the table shows the
median throughput (ops/s) of each side and their ratio (ours / raw), the target (>= 0.9x,
issue 19), and the CPU time this process spent per operation on each side with their ratio
(raw / ours): on a loaded machine the clocks of both sides are noisy, their CPU cost is not.
The header says whether hiredis is active (it then serves both sides).

Usage::

    python benchmarks/bench_async.py            # starts its own redis-server
    python benchmarks/bench_async.py --quick
    python benchmarks/bench_async.py --no-hiredis   # redis-py's pure-Python parser, both sides
    python benchmarks/bench_async.py --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack

if "--no-hiredis" in sys.argv:  # before redis-py looks for it: both sides go without it
    sys.modules["hiredis"] = None  # type: ignore[assignment]

import redis
import redis.asyncio
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
TARGET = 0.9


def _load_servers() -> Any:
    spec = importlib.util.spec_from_file_location("pm_test_servers", REPO / "tests" / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def header(args: argparse.Namespace) -> str:
    """The machine and the parser: no figure is read without them."""
    load = os.getloadavg()
    parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python parser"
    return (
        f"redis-py {redis.__version__} ({parser}; hiredis active: "
        f"{redis.utils.HIREDIS_AVAILABLE}), "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        f"{args.coroutines} coroutines x {args.ops} ops, {args.threads} threads x "
        f"{args.thread_ops} ops, {args.reps} repetitions (median)"
    )


# -- async ----------------------------------------------------------------------------------
async def _gather(count: int, worker: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """Seconds (wall clock, CPU of this process) ``count`` coroutines running ``worker(i)``
    take, together."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(count)))
    return time.perf_counter() - start, time.process_time() - cpu


async def async_case(
    url: str, prefix: str, pool: int | None, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Ops/s of each side for single gets and sets, ``args.reps`` times."""
    if pool is None:
        raw = redis.asyncio.Redis.from_url(url)
    else:
        raw = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                url, max_connections=pool, timeout=30
            )
        )
    mem = pm.open_memory(url, namespace="abench", key_prefix=prefix, max_connections=pool)
    count, ops = args.coroutines, args.ops
    keys = [[f"k:{c}:{i}" for i in range(ops)] for c in range(count)]
    raw_keys = [[f"{prefix}:raw:{key}" for key in row] for row in keys]
    packb, unpackb = msgpack.packb, msgpack.unpackb

    async def raw_set(c: int) -> None:
        for key in raw_keys[c]:
            await raw.set(key, packb(VALUE), ex=TTL)

    async def raw_get(c: int) -> None:
        for key in raw_keys[c]:
            unpackb(await raw.get(key))

    async def ours_set(c: int) -> None:
        for key in keys[c]:
            await mem.aset(key, VALUE, ttl=TTL)

    async def ours_get(c: int) -> None:
        for key in keys[c]:
            if await mem.aget(key) is None:
                raise AssertionError(f"{key} missing")

    sides = {
        "raw set": raw_set,
        "ours set": ours_set,
        "raw get": raw_get,
        "ours get": ours_get,
    }
    await _gather(count, raw_set)  # warm-up: connections, scripts, code paths
    await _gather(count, ours_set)
    total = count * ops
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(args.reps):
        for op in ("set", "get"):
            order = ("raw", "ours") if rep % 2 == 0 else ("ours", "raw")
            for side in order:
                name = f"{side} {op}"
                wall, cpu = await _gather(count, sides[name])
                rates[name].append(total / wall)
                rates.setdefault(f"{name} cpu", []).append(cpu / total)
    await raw.delete(*[key for row in raw_keys for key in row])
    await mem.aclear()
    await raw.aclose()
    mem.close()
    return rates


# -- threads --------------------------------------------------------------------------------
def _threads(count: int, worker: Callable[[int], None]) -> tuple[float, float]:
    """Seconds (wall clock, CPU of this process) ``count`` threads running ``worker(i)``
    take, together."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, time.process_time() - cpu


def thread_case(url: str, prefix: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Ops/s of each side for single gets and sets from ``args.threads`` threads."""
    raw = redis.Redis.from_url(url)
    mem = pm.open_memory(url, namespace="tbench", key_prefix=prefix)
    count, ops = args.threads, args.thread_ops
    keys = [[f"k:{c}:{i}" for i in range(ops)] for c in range(count)]
    raw_keys = [[f"{prefix}:traw:{key}" for key in row] for row in keys]
    packb, unpackb = msgpack.packb, msgpack.unpackb

    def raw_set(c: int) -> None:
        for key in raw_keys[c]:
            raw.set(key, packb(VALUE), ex=TTL)

    def raw_get(c: int) -> None:
        for key in raw_keys[c]:
            unpackb(raw.get(key))

    def ours_set(c: int) -> None:
        for key in keys[c]:
            mem.set(key, VALUE, ttl=TTL)

    def ours_get(c: int) -> None:
        for key in keys[c]:
            if mem.get(key) is None:
                raise AssertionError(f"{key} missing")

    sides = {"raw set": raw_set, "ours set": ours_set, "raw get": raw_get, "ours get": ours_get}
    _threads(count, raw_set)
    _threads(count, ours_set)
    total = count * ops
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(args.reps):
        for op in ("set", "get"):
            order = ("raw", "ours") if rep % 2 == 0 else ("ours", "raw")
            for side in order:
                name = f"{side} {op}"
                wall, cpu = _threads(count, sides[name])
                rates[name].append(total / wall)
                rates.setdefault(f"{name} cpu", []).append(cpu / total)
    raw.delete(*[key for row in raw_keys for key in row])
    mem.clear()
    raw.close()
    mem.close()
    return rates


# -- report ---------------------------------------------------------------------------------
def report(rows: list[tuple[str, str, dict[str, list[float]]]]) -> bool:
    """Print the table; return whether every ratio meets the target (on the medians).

    Besides the throughputs, the CPU time this process spent per operation on each side
    (all its threads): a loaded machine slows both sides' clocks, but hardly their CPU
    cost, so the CPU ratio (raw / ours) tells the client's own cost when the wall clock is
    noisy.
    """
    head = (
        f"{'case':<56}{'raw ops/s':>11}{'ours ops/s':>11}{'ratio':>8}{'target':>8}"
        f"{'raw CPU us':>11}{'ours CPU us':>12}{'CPU ratio':>10}"
    )
    print(head)
    print("-" * len(head))
    met = True
    for case, raw_name, rates in rows:
        for op in ("get", "set"):
            raw_med = statistics.median(rates[f"raw {op}"])
            ours_med = statistics.median(rates[f"ours {op}"])
            raw_cpu = statistics.median(rates[f"raw {op} cpu"]) * 1e6
            ours_cpu = statistics.median(rates[f"ours {op} cpu"]) * 1e6
            ratio = ours_med / raw_med
            met &= ratio >= TARGET
            name = f"{case}: single {op} vs {raw_name}"
            print(
                f"{name:<56}{raw_med:>11,.0f}{ours_med:>11,.0f}{ratio:>7.2f}x"
                f"{'>=' + format(TARGET, '.2f') + 'x':>8}{raw_cpu:>11.1f}{ours_cpu:>12.1f}"
                f"{raw_cpu / ours_cpu:>9.2f}x"
            )
    print(f"targets: {'met' if met else 'NOT met'} on the medians (throughput ratio)")
    return met


def run(url: str, args: argparse.Namespace) -> bool:
    print(header(args))
    prefix = "abench" + uuid.uuid4().hex[:6]
    rows = []
    for pool in (None, args.pool):
        rates = asyncio.run(async_case(url, prefix, pool, args))
        shown = "unbounded pool" if pool is None else f"pool of {pool}"
        rows.append((f"{args.coroutines} coroutines, {shown}", "redis.asyncio", rates))
    rates = thread_case(url, prefix, args)
    rows.append((f"{args.threads} threads", "shared redis-py", rates))
    return report(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use this Redis instead of starting a redis-server")
    parser.add_argument("--quick", action="store_true", help="smaller, faster run")
    parser.add_argument("--coroutines", type=int, default=64)
    parser.add_argument("--ops", type=int, default=None, help="operations per coroutine")
    parser.add_argument("--pool", type=int, default=16, help="bounded pool size")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--thread-ops", type=int, default=None, help="operations per thread")
    parser.add_argument("--reps", type=int, default=None, help="repetitions")
    parser.add_argument(
        "--no-hiredis", action="store_true", help="both sides without hiredis, if installed"
    )
    args = parser.parse_args(argv)
    args.ops = args.ops or (50 if args.quick else 150)
    args.thread_ops = args.thread_ops or (300 if args.quick else 1_000)
    args.reps = args.reps or (3 if args.quick else 7)
    if args.url:
        run(args.url, args)
        return 0
    servers = _load_servers()
    with servers.RedisServer() as server:
        run(server.url, args)
    return 0  # informative: a noisy machine must not fail `make bench`


if __name__ == "__main__":
    raise SystemExit(main())

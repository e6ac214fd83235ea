"""Concurrency: async coroutines vs redis.asyncio and AsyncMongoClient, threads vs redis-py.

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

MongoDB (``--store mongodb``, or ``all``, the default): ``C`` coroutines each doing single
``mem.aget(key)`` / ``mem.aset(key, value, ttl=...)`` (the native path: the memory's
AsyncMongoClient of the loop) against a raw :class:`pymongo.AsyncMongoClient` doing the same
commands (a get: ``find_one`` of the live document, msgpack unpack, ``update_one`` counting
the access, as ``aget`` counts it; a set: ``update_one(upsert=True)`` of the msgpack value and
its expiry), and the thread-hop path for comparison (``asyncio.to_thread(mem.get, key)``:
what every async twin did before, and still does on stores without an async driver), each in
its own collection of the same server, with the same indexes (the raw documents carry the
same fields; the raw set is a plain ``$set`` upsert, ours merges the old metadata on the
server in the same command). The server is the suite's MongoDB wire-protocol server
(mongoeco, Python: tests/servers.py), not a real mongod, unless ``--mongodb-url`` names one:
its per-command cost dominates the throughputs, so read the ratios and the CPU columns.

Redis Cluster (``--store cluster``, or ``all``): the async case against redis.asyncio's
``RedisCluster`` on a cluster of 3 primaries (started, or ``--cluster-url``), with the same
pool per node (``--cluster-pool``, RedisCluster's default 100) and RESP2 on both sides;
ours in layout 1 (the namespace in one slot, so on one primary) and layout 2 (spread over
the primaries as the raw keys are).

Usage::

    python benchmarks/bench_async.py            # starts its own redis-server, MongoDB server
    python benchmarks/bench_async.py --quick
    python benchmarks/bench_async.py --no-hiredis   # redis-py's pure-Python parser, both sides
    python benchmarks/bench_async.py --url redis://127.0.0.1:6379/0
    python benchmarks/bench_async.py --store mongodb --quick
    python benchmarks/bench_async.py --store cluster --quick
    python benchmarks/bench_async.py --store mongodb --mongodb-url mongodb://127.0.0.1:27017/db
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
import redis.asyncio.cluster
import redis.utils

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import prefect_memory as pm  # noqa: E402
from bench_redis import TTL, VALUE, _load_servers  # noqa: E402 - the same value, the same servers

TARGET = 0.9


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
    url: str, prefix: str, pool: int | None, args: argparse.Namespace, layout: int | None = None
) -> dict[str, list[float]]:
    """Ops/s of each side for single gets and sets, ``args.reps`` times.

    ``layout``: ``url`` is a Redis Cluster, the raw side redis.asyncio's ``RedisCluster``
    (its pool of ``pool`` connections per node, RESP2 as ours), ours a namespace of this
    layout with the same bound per node.
    """
    options: dict[str, Any] = {"max_connections": pool}
    if layout is not None:
        raw: Any = redis.asyncio.cluster.RedisCluster.from_url(
            url, max_connections=pool, protocol=2
        )
        options["layout"] = layout
    elif pool is None:
        raw = redis.asyncio.Redis.from_url(url)
    else:
        raw = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                url, max_connections=pool, timeout=30
            )
        )
    if layout is not None:
        # Its slot map first: 64 first commands at once each load it and disconnect the
        # others' new connections (redis-py 8.1: AttributeError, no writer).
        await raw.initialize()
    mem = pm.open_memory(url, namespace="abench", key_prefix=prefix, **options)
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
    if layout is None:
        await raw.delete(*[key for row in raw_keys for key in row])
    else:  # keys of many slots: one DEL each
        for row in raw_keys:
            await asyncio.gather(*(raw.delete(key) for key in row))
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


# -- MongoDB ---------------------------------------------------------------------------------
async def mongo_case(url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Ops/s (and CPU per op) of the raw AsyncMongoClient, the native path and the thread
    hop, for single gets and sets from ``args.coroutines`` coroutines."""
    import datetime as dt

    import pymongo
    from bson import Binary

    name = "abench" + uuid.uuid4().hex[:8]
    sep = "&" if "?" in url else "?"
    mem = pm.open_memory(f"{url}{sep}collection={name}", namespace="abench")
    raw_client: Any = pymongo.AsyncMongoClient(url)
    raw = raw_client.get_database(mem.backend.database).get_collection(name + "_raw")
    await raw.create_indexes(mem.backend._indexes())  # the same collection layout as ours
    count, ops = args.coroutines, args.mongo_ops
    keys = [[f"k:{c}:{i}" for i in range(ops)] for c in range(count)]
    hop_keys = [[f"h:{c}:{i}" for i in range(ops)] for c in range(count)]
    packb, unpackb = msgpack.packb, msgpack.unpackb
    utc = dt.timezone.utc

    async def raw_set(c: int) -> None:
        for key in keys[c]:
            now = time.time()
            expires = dt.datetime.fromtimestamp(now + TTL, utc)
            doc = {"ns": "abench", "k": key, "v": Binary(packb(VALUE)), "u": now, "x": expires,
                   "l": TTL, "s": False, "g": []}  # fmt: skip
            update = {"$set": doc, "$setOnInsert": {"c": now, "n": 0}, "$inc": {"r": 1}}
            await raw.update_one({"_id": key}, update, upsert=True)

    async def raw_get(c: int) -> None:
        for key in keys[c]:
            now = time.time()
            live = {"$or": [{"x": None}, {"x": {"$gt": dt.datetime.fromtimestamp(now, utc)}}]}
            doc = await raw.find_one({"_id": key, **live})
            if doc is None:
                raise AssertionError(f"{key} missing")
            unpackb(doc["v"])
            await raw.update_one({"_id": key}, {"$inc": {"n": 1}, "$set": {"a": now}})

    async def ours_set(c: int) -> None:
        for key in keys[c]:
            await mem.aset(key, VALUE, ttl=TTL)

    async def ours_get(c: int) -> None:
        for key in keys[c]:
            if await mem.aget(key) is None:
                raise AssertionError(f"{key} missing")

    async def hop_set(c: int) -> None:
        for key in hop_keys[c]:
            await asyncio.to_thread(mem.set, key, VALUE, ttl=TTL)

    async def hop_get(c: int) -> None:
        for key in hop_keys[c]:
            if await asyncio.to_thread(mem.get, key) is None:
                raise AssertionError(f"{key} missing")

    sides = {
        "raw set": raw_set, "ours set": ours_set, "hop set": hop_set,
        "raw get": raw_get, "ours get": ours_get, "hop get": hop_get,
    }  # fmt: skip
    for side in ("raw", "ours", "hop"):  # warm-up: connections, indexes, the keys exist
        await _gather(count, sides[f"{side} set"])
    total = count * ops
    rates: dict[str, list[float]] = {}
    orders = [("raw", "ours", "hop"), ("hop", "ours", "raw"), ("ours", "raw", "hop")]
    for rep in range(args.reps):
        for op in ("set", "get"):
            for side in orders[rep % len(orders)]:
                key = f"{side} {op}"
                wall, cpu = await _gather(count, sides[key])
                rates.setdefault(key, []).append(total / wall)
                rates.setdefault(f"{key} cpu", []).append(cpu / total)
    database = raw_client.get_database(mem.backend.database)
    await database.drop_collection(name + "_raw")
    await database.drop_collection(name)
    await raw_client.close()
    await mem.backend.aclose()
    mem.close()
    return rates


def mongo_report(case: str, rates: dict[str, list[float]]) -> None:
    """Print the MongoDB table: native and thread hop, each against the raw client."""
    head = (
        f"{'case':<48}{'raw ops/s':>11}{'ours ops/s':>11}{'ratio':>8}"
        f"{'raw CPU us':>11}{'ours CPU us':>12}{'CPU ratio':>10}"
    )
    print(head)
    print("-" * len(head))
    for op in ("get", "set"):
        raw_med = statistics.median(rates[f"raw {op}"])
        raw_cpu = statistics.median(rates[f"raw {op} cpu"]) * 1e6
        for side, label in (("ours", "native"), ("hop", "thread hop")):
            ours_med = statistics.median(rates[f"{side} {op}"])
            ours_cpu = statistics.median(rates[f"{side} {op} cpu"]) * 1e6
            name = f"{case}: single {op}, {label} vs AsyncMongoClient"
            print(
                f"{name:<48}{raw_med:>11,.0f}{ours_med:>11,.0f}{ours_med / raw_med:>7.2f}x"
                f"{raw_cpu:>11.1f}{ours_cpu:>12.1f}{raw_cpu / ours_cpu:>9.2f}x"
            )


def run_mongo(url: str, args: argparse.Namespace) -> None:
    import pymongo

    load = os.getloadavg()
    print(
        f"\nMongoDB: pymongo {pymongo.version}, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; {args.coroutines} coroutines x {args.mongo_ops} ops, {args.reps} "
        f"repetitions (median); server {url.split('@')[-1].split('?')[0]}"
    )
    rates = asyncio.run(mongo_case(url, args))
    mongo_report(f"{args.coroutines} coroutines", rates)


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


def run_redis(url: str, args: argparse.Namespace) -> bool:
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


def run_cluster(url: str, args: argparse.Namespace) -> bool:
    """The async case on a Redis Cluster: ours (layouts 1 and 2) vs ``RedisCluster``."""
    load = os.getloadavg()
    print(
        f"\nRedis Cluster at {url}: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"pool of {args.cluster_pool} per node on both sides"
    )
    prefix = "acbench" + uuid.uuid4().hex[:6]
    rows = []
    for layout in (1, 2):
        rates = asyncio.run(async_case(url, prefix, args.cluster_pool, args, layout=layout))
        rows.append((f"Cluster, {args.coroutines} coroutines, layout {layout}",
                     "RedisCluster", rates))  # fmt: skip
    return report(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use this Redis instead of starting a redis-server")
    parser.add_argument(
        "--store", choices=("redis", "cluster", "mongodb", "all"), default="all",
        help="which store(s): cluster is a 3-primary Redis Cluster",
    )  # fmt: skip
    parser.add_argument(
        "--cluster-url", help="a node of a running Redis Cluster instead of starting one"
    )
    parser.add_argument(
        "--cluster-pool", type=int, default=100,
        help="connections per Cluster node, both sides (RedisCluster's default: 100)",
    )  # fmt: skip
    parser.add_argument(
        "--mongodb-url", help="use this MongoDB instead of starting the test wire server"
    )
    parser.add_argument(
        "--mongo-ops", type=int, default=None, help="operations per coroutine (MongoDB)"
    )
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
    args.mongo_ops = args.mongo_ops or (10 if args.quick else 30)
    servers = _load_servers() if not (args.url and args.mongodb_url) else None
    if args.store in ("redis", "all"):
        if args.url:
            run_redis(args.url, args)
        else:
            with servers.RedisServer() as server:
                run_redis(server.url, args)
    if args.store in ("cluster", "all"):
        if args.cluster_url:
            run_cluster(args.cluster_url, args)
        else:
            from bench_cluster import cluster

            with cluster() as url:
                run_cluster(url, args)
    if args.store in ("mongodb", "all"):
        if args.mongodb_url:
            run_mongo(args.mongodb_url, args)
        else:
            try:
                server = servers.MongoWireServer()
            except Exception as err:  # no Python with mongoeco: say so, do not fail
                print(f"\nMongoDB: skipped ({err})")
                return 0
            with server:
                run_mongo(server.url, args)
    return 0  # informative: a noisy machine must not fail `make bench`


if __name__ == "__main__":
    raise SystemExit(main())

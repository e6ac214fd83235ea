"""Hybrid memory (Redis primary + MongoDB secondary) vs the raw clients doing the same work.

Workload: N entries (default 300: the MongoDB wire server, mongoeco, is pure Python and
inserts a few hundred documents a second, so a larger batch of ours hits the 5 s socket
timeout; the ~100-byte feature dict of ``bench_redis.py``,
msgpack-packed on both sides) written with ``set_many``, and S single ``set`` calls,
each repeated, the raw and our sides interleaved (their order alternates per
repetition), and summarised by the median (best in brackets):

- write-through: ``HybridMemory.set_many`` / ``set`` vs one redis-py pipeline of ``SET``
  plus one pymongo ``bulk_write`` of upserting ``ReplaceOne`` (both stores written before
  returning, as ours does); a single ``set`` vs the raw pair of the issue: redis-py
  ``SET`` + pymongo ``update_one(..., upsert=True)``;
- write-behind: ``HybridMemory.set_many`` / ``set`` (durable SQLite journal + primary) vs
  the same redis-py pipeline plus an ``executemany`` into a SQLite WAL table committed
  with ``synchronous=FULL`` (the raw shape of "primary + durable local queue", as
  durable as our journal); a single ``set`` vs that pair and vs a raw Redis ``SET`` alone
  (the issue's anchor, which pays no fsync); and the flush of the queued N to MongoDB vs
  one raw ``bulk_write``.

The raw MongoDB side writes the same documents as ours (every metadata field) into a
collection with the same indexes (the TTL index on the expiry, ns+key, ns+tags): a hand
written client storing entries with expiry, tags and listing needs them, and the wire
server's cost per write grows with the indexes it maintains. Ours pays what the raw side
still does not: the record's metadata merged over the old one (on the server, in the
same upsert), the journal's lane checks, the Lua script on Redis. The figures are
informative (no target is enforced): ratios are ours / raw throughput for batches and
ours / raw latency for single sets. The header gives the load average (other processes
share the machine) and whether redis-py uses hiredis.

Usage::

    python benchmarks/bench_hybrid.py            # starts redis-server and the MongoDB wire server
    python benchmarks/bench_hybrid.py --quick
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
import pymongo
import redis
from pymongo import ReplaceOne
from redis.utils import HIREDIS_AVAILABLE

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import prefect_memory as pm  # noqa: E402
from bench_redis import TTL, VALUE, Stats, _load_servers, timed  # noqa: E402
from prefect_memory.plugins.base import Record  # noqa: E402
from prefect_memory.plugins.mongodb import _INDEXES, MongoBackend  # noqa: E402

OPS = ("set_many", "single set", "flush")


class Raw:
    """The raw clients: redis-py, pymongo and a SQLite WAL queue."""

    def __init__(self, redis_url: str, mongo_url: str, database: str, folder: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.mongo = pymongo.MongoClient(mongo_url, tz_aware=True)[database]["raw_bench"]
        self.mongo.create_indexes(_INDEXES)  # the same indexes as ours
        self.sql = sqlite3.connect(str(Path(folder) / "raw-queue.db"), isolation_level=None)
        self.sql.execute("PRAGMA journal_mode=WAL")
        self.sql.execute("PRAGMA synchronous=FULL")  # as durable as our journal
        self.sql.execute("CREATE TABLE IF NOT EXISTS q (seq INTEGER PRIMARY KEY, k TEXT, v BLOB)")

    @staticmethod
    def doc(key: str) -> dict[str, object]:
        """The document ours writes for a new entry (same fields, same types)."""
        now = time.time()
        record = Record(msgpack.packb(VALUE), now, now, now, expires_at=now + TTL, ttl=TTL)
        return MongoBackend._doc("raw", "raw", key, record)

    def redis_set(self, keys: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        packed = msgpack.packb(VALUE)
        for key in keys:
            pipe.set(key, packed, ex=TTL)
        pipe.execute()

    def mongo_set(self, keys: list[str]) -> None:
        ops = [ReplaceOne({"_id": f"raw:{k}"}, self.doc(k), upsert=True) for k in keys]
        self.mongo.bulk_write(ops, ordered=False)

    def queue(self, keys: list[str]) -> None:
        packed = msgpack.packb(VALUE)
        self.sql.execute("BEGIN IMMEDIATE")  # one transaction, one fsync (as our journal)
        self.sql.executemany("INSERT INTO q (k, v) VALUES (?, ?)", [(k, packed) for k in keys])
        self.sql.execute("COMMIT")

    def write_through(self, keys: list[str]) -> None:
        self.redis_set(keys)
        self.mongo_set(keys)

    def write_behind(self, keys: list[str]) -> None:
        self.queue(keys)
        self.redis_set(keys)

    def flush(self, keys: list[str]) -> None:
        self.mongo_set(keys)
        self.sql.execute("DELETE FROM q")

    # -- single writes: one key, one command per store ----------------------------------
    def one_through(self, key: str) -> None:
        """The issue's raw pair: redis-py SET + pymongo update_one with upsert."""
        self.redis.set(key, msgpack.packb(VALUE), ex=TTL)
        doc = self.doc(key)
        self.mongo.update_one({"_id": doc.pop("_id")}, {"$set": doc}, upsert=True)

    def one_behind(self, key: str) -> None:
        """A durable (fsynced) SQLite insert + redis-py SET."""
        packed = msgpack.packb(VALUE)
        self.sql.execute("BEGIN IMMEDIATE")
        self.sql.execute("INSERT INTO q (k, v) VALUES (?, ?)", (key, packed))
        self.sql.execute("COMMIT")
        self.redis.set(key, packed, ex=TTL)

    def one_set(self, key: str) -> None:
        """A raw Redis SET alone."""
        self.redis.set(key, msgpack.packb(VALUE), ex=TTL)


def run(redis_url: str, mongo_url: str, database: str, args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    folder = tempfile.mkdtemp(prefix="pm-bench-hybrid-")
    raw = Raw(redis_url, mongo_url, database, folder)
    stats = Stats()
    mems = {
        strategy: pm.HybridMemory(
            redis_url,
            mongo_url,
            strategy=strategy,
            journal=str(Path(folder) / f"journal-{strategy}.db"),
            flush_batch=args.n * 10,  # no kick: the flush is timed on its own
            flush_interval=3600.0,
            namespace="bench-" + strategy,
        )
        for strategy in ("write-through", "write-behind")
    }
    warm = [f"warm:{i}" for i in range(100)]
    for mem in mems.values():
        mem.set_many(dict.fromkeys(warm, VALUE), ttl=TTL)
        mem.flush()
    raw.write_through(warm)
    raw.write_behind(warm)
    raw.flush(warm)

    for rep in range(args.reps):
        keys = [f"user:{rep}:{i:06d}" for i in range(args.n)]
        singles = keys[: args.singles]
        for strategy, mem in mems.items():
            tag = "wt" if strategy == "write-through" else "wb"
            # new keys on both sides, per strategy: every batch inserts, none replaces
            raw_keys = [f"raw:{tag}:{uuid.uuid4().hex[:6]}:{k}" for k in keys]
            raw_batch = raw.write_through if tag == "wt" else raw.write_behind
            sides = ("raw", "ours") if rep % 2 == 0 else ("ours", "raw")
            for side in sides:
                if side == "raw":
                    stats.add(f"{tag} raw set_many", args.n / timed(raw_batch, raw_keys))
                    if tag == "wb":
                        stats.add("wb raw flush", args.n / timed(raw.flush, raw_keys))
                    single = raw.one_through if tag == "wt" else raw.one_behind
                    one = raw_keys[: args.singles]
                    elapsed = timed(lambda ks=one, f=single: [f(k) for k in ks])
                    stats.add(f"{tag} raw single set", elapsed / args.singles)
                    if tag == "wb":
                        elapsed = timed(lambda ks=one: [raw.one_set(k) for k in ks])
                        stats.add("wb raw SET set", elapsed / args.singles)
                else:
                    batch = dict.fromkeys(keys, VALUE)
                    elapsed = timed(lambda m=mem, b=batch: m.set_many(b, ttl=TTL))
                    stats.add(f"{tag} ours set_many", args.n / elapsed)
                    if tag == "wb":
                        stats.add("wb ours flush", args.n / timed(mem.flush))
                    elapsed = timed(
                        lambda m=mem, ks=singles: [m.set(k, VALUE, ttl=TTL) for k in ks]
                    )
                    stats.add(f"{tag} ours single set", elapsed / args.singles)
                    if tag == "wb":
                        stats.add("wb ours SET set", elapsed / args.singles)
                    mem.flush()
            got = mem.get_many(keys[:10])
            assert len(got) == 10 and got[keys[0]] == VALUE, strategy
    for mem in mems.values():
        assert mem.backend.backlog() == 0
        mem.clear()
        mem.close()
    raw.mongo.drop()
    report(stats, args, (load, os.getloadavg()[0]))


def report(stats: Stats, args: argparse.Namespace, load: tuple[float, float]) -> None:
    print(
        f"\nRedis primary + MongoDB wire server (mongoeco) secondary, N={args.n}, "
        f"single sets={args.singles}, {args.reps} repetitions; median [best]"
    )
    print(
        f"hiredis: {HIREDIS_AVAILABLE}; load average (1 min) before/after: "
        f"{load[0]:.2f}/{load[1]:.2f} on {os.cpu_count()} cores"
    )
    head = f"{'operation':<36}{'raw':>22}{'prefect-memory':>22}{'ratio':>16}"
    print(head)
    print("-" * len(head))
    rows = [
        ("wt", "set_many", "write-through set_many (ops/s)"),
        ("wt", "single set", "write-through set (us/op)"),
        ("wb", "set_many", "write-behind set_many (ops/s)"),
        ("wb", "single set", "write-behind set (us/op)"),
        ("wb", "SET set", "write-behind set vs raw SET (us/op)"),
        ("wb", "flush", "write-behind flush (ops/s)"),
    ]
    for tag, op, name in rows:
        latency = op.endswith(" set")
        raw_med, ours_med = stats.median(f"{tag} raw {op}"), stats.median(f"{tag} ours {op}")
        raw_best = stats.best(f"{tag} raw {op}", latency=latency)
        ours_best = stats.best(f"{tag} ours {op}", latency=latency)
        scale = 1e6 if latency else 1.0
        cells = [f"{v * scale:,.0f}" for v in (raw_med, raw_best, ours_med, ours_best)]
        print(
            f"{name:<36}{cells[0]:>11} [{cells[1]:>8}]{cells[2]:>11} [{cells[3]:>8}]"
            f"{ours_med / raw_med:>7.2f}x [{ours_best / raw_best:.2f}x]"
        )
    print("ratio: ours / raw (throughput for batches and flush, latency for single sets)")
    print("raw single sets: write-through = SET + update_one upsert; write-behind = fsynced")
    print("SQLite insert + SET; 'vs raw SET' = a Redis SET alone (no journal, no fsync)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster run")
    parser.add_argument("--n", type=int, default=None, help="entries per batch")
    parser.add_argument("--singles", type=int, default=None, help="single sets per repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions")
    args = parser.parse_args(argv)
    args.n = args.n or (200 if args.quick else 300)
    args.singles = args.singles or (20 if args.quick else 30)
    args.reps = args.reps or (2 if args.quick else 4)
    servers = _load_servers()
    with servers.RedisServer() as rds, servers.MongoWireServer() as mongo:
        run(rds.url, mongo.url, mongo.database, args)
    return 0  # informative: a noisy machine must not fail `make bench`


if __name__ == "__main__":
    raise SystemExit(main())

"""Hybrid memory (Redis primary + MongoDB secondary) vs the raw clients doing the same work.

Workload: N entries (default 200: the MongoDB wire server, mongoeco, is pure Python and
inserts a few hundred documents a second, so a larger batch of ours hits the 5 s socket
timeout; the ~100-byte feature dict of ``bench_redis.py``,
msgpack-packed on both sides) written with ``set_many``, and S single ``set`` calls,
each repeated, the raw and our sides interleaved (their order alternates per
repetition), and summarised by the median (best in brackets):

- write-through: ``HybridMemory.set_many`` / ``set`` vs one redis-py pipeline of ``SET``
  plus one pymongo ``bulk_write`` of upserting ``ReplaceOne`` (both stores written before
  returning, as ours does), and vs the same with one ``find`` of the batch's old
  ``created_at`` and access count first (the same work as ours: an overwritten entry keeps
  them); a single ``set`` vs the raw pair of the issue: redis-py
  ``SET`` + pymongo ``update_one(..., upsert=True)``;
- write-behind, once per ``journal_sync`` (``full``: the journal fsyncs every commit;
  ``normal``: it does not, an acknowledged write survives ``kill -9`` but not an OS
  crash): ``HybridMemory.set_many`` / ``set`` (SQLite journal + primary) vs the same
  redis-py pipeline plus an ``executemany`` into a SQLite WAL table committed with the
  same ``synchronous`` setting (the raw shape of "primary + local queue", as durable as
  our journal); a single ``set`` vs that pair and vs a raw Redis ``SET`` alone (the
  issue's anchor: <= 1.5x, which pays no journal at all); and the flush of the queued N
  to MongoDB vs one raw ``bulk_write``;
- reads: ``HybridMemory.get_many`` of the N keys just written (answered by the Redis
  primary, which counts an access of each entry: the ``accessCount`` that migration rules
  read) vs two raw anchors: a bare ``MGET`` of as many keys plus unpacking each value
  (counts nothing), and the same ``MGET`` plus what a hand-written client would pay to
  keep an access count per key, at its cheapest: one script in the same round trip that
  reads every count of the batch from one hash with one ``HMGET`` and writes them back with
  one ``HSET`` (two commands per batch, none per key).

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
from prefect_memory.plugins.base import (  # noqa: E402
    F_ACCESS_COUNT,
    F_ACCESSED,
    F_CREATED,
    Record,
)
from prefect_memory.plugins.mongodb import _INDEXES, MongoBackend  # noqa: E402

#: The memories measured: tag -> (strategy, journal_sync).
MODES = {
    "wt": ("write-through", "full"),
    "wb": ("write-behind", "full"),
    "wbn": ("write-behind", "normal"),
}


class Raw:
    """The raw clients: redis-py, pymongo and SQLite WAL queues (one per ``synchronous``)."""

    def __init__(self, redis_url: str, mongo_url: str, database: str, folder: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        # every count of a batch read with one HMGET and written with one HSET (ARGV[1]:
        # the hash of counts; a count spoiled by another client restarts at 1)
        self.count = self.redis.register_script(
            "local c = redis.call('HMGET', ARGV[1], unpack(KEYS)) local out = {} "
            "for i, k in ipairs(KEYS) do out[2 * i - 1] = k "
            "out[2 * i] = (tonumber(c[i]) or 0) + 1 end "
            "redis.call('HSET', ARGV[1], unpack(out)) return #KEYS"
        )
        self.mongo = pymongo.MongoClient(mongo_url, tz_aware=True)[database]["raw_bench"]
        self.mongo.create_indexes(_INDEXES)  # the same indexes as ours
        self.sql: dict[str, sqlite3.Connection] = {}
        for sync in ("full", "normal"):  # as durable as our journal with that journal_sync
            conn = sqlite3.connect(str(Path(folder) / f"raw-queue-{sync}.db"), isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={sync.upper()}")
            conn.execute("CREATE TABLE IF NOT EXISTS q (seq INTEGER PRIMARY KEY, k TEXT, v BLOB)")
            self.sql[sync] = conn

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

    def redis_get(self, keys: list[str]) -> None:
        values = [msgpack.unpackb(v) for v in self.redis.mget(keys) if v is not None]
        assert len(values) == len(keys)

    def redis_get_counted(self, keys: list[str]) -> None:
        """``MGET`` + one counting script, one round trip: the same work as ours."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.mget(keys)
        self.count(keys=keys, args=["raw:counts"], client=pipe)
        values = [msgpack.unpackb(v) for v in pipe.execute()[0] if v is not None]
        assert len(values) == len(keys)

    def mongo_set(self, keys: list[str]) -> None:
        ops = [ReplaceOne({"_id": f"raw:{k}"}, self.doc(k), upsert=True) for k in keys]
        self.mongo.bulk_write(ops, ordered=False)

    def mongo_set_merged(self, keys: list[str]) -> None:
        """The same work as ours: an overwritten entry keeps its created_at and access
        count, so the old ones are read first (one find for the batch), then written."""
        ids = [f"raw:{k}" for k in keys]
        fields = dict.fromkeys((F_CREATED, F_ACCESSED, F_ACCESS_COUNT), 1)
        old = {d["_id"]: d for d in self.mongo.find({"_id": {"$in": ids}}, fields)}
        ops = []
        for key in keys:
            doc = self.doc(key)
            for name in fields:
                if doc["_id"] in old and name in old[doc["_id"]]:
                    doc[name] = old[doc["_id"]][name]
            ops.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
        self.mongo.bulk_write(ops, ordered=False)

    def write_through_merged(self, keys: list[str]) -> None:
        self.redis_set(keys)
        self.mongo_set_merged(keys)

    def queue(self, keys: list[str], sync: str) -> None:
        packed = msgpack.packb(VALUE)
        sql = self.sql[sync]
        sql.execute("BEGIN IMMEDIATE")  # one transaction, one commit (as our journal)
        sql.executemany("INSERT INTO q (k, v) VALUES (?, ?)", [(k, packed) for k in keys])
        sql.execute("COMMIT")

    def write_through(self, keys: list[str]) -> None:
        self.redis_set(keys)
        self.mongo_set(keys)

    def write_behind(self, keys: list[str], sync: str) -> None:
        self.queue(keys, sync)
        self.redis_set(keys)

    def flush(self, keys: list[str], sync: str) -> None:
        self.mongo_set(keys)
        self.sql[sync].execute("DELETE FROM q")

    # -- single writes: one key, one command per store ----------------------------------
    def one_through(self, key: str) -> None:
        """The issue's raw pair: redis-py SET + pymongo update_one with upsert."""
        self.redis.set(key, msgpack.packb(VALUE), ex=TTL)
        doc = self.doc(key)
        self.mongo.update_one({"_id": doc.pop("_id")}, {"$set": doc}, upsert=True)

    def one_behind(self, key: str, sync: str) -> None:
        """A SQLite insert committed with ``synchronous=<sync>`` + redis-py SET."""
        packed = msgpack.packb(VALUE)
        sql = self.sql[sync]
        sql.execute("BEGIN IMMEDIATE")
        sql.execute("INSERT INTO q (k, v) VALUES (?, ?)", (key, packed))
        sql.execute("COMMIT")
        self.redis.set(key, packed, ex=TTL)

    def one_set(self, key: str) -> None:
        """A raw Redis SET alone."""
        self.redis.set(key, msgpack.packb(VALUE), ex=TTL)


def _raw_side(raw: Raw, stats: Stats, tag: str, sync: str, keys: list[str], singles: int) -> None:
    """The raw clients' turn for one mode: batch, flush, get_many, single sets."""
    if tag == "wt":
        stats.add("wt raw set_many", len(keys) / timed(raw.write_through, keys))
        merged = [f"{k}:m" for k in keys]  # new keys too, as ours
        stats.add("wt raw set_merged", len(keys) / timed(raw.write_through_merged, merged))
    else:
        stats.add(f"{tag} raw set_many", len(keys) / timed(raw.write_behind, keys, sync))
        stats.add(f"{tag} raw flush", len(keys) / timed(raw.flush, keys, sync))
    stats.add(f"{tag} raw get_many", len(keys) / timed(raw.redis_get, keys))
    stats.add(f"{tag} raw get_counted", len(keys) / timed(raw.redis_get_counted, keys))
    one = keys[:singles]
    if tag == "wt":
        elapsed = timed(lambda: [raw.one_through(k) for k in one])
    else:
        elapsed = timed(lambda: [raw.one_behind(k, sync) for k in one])
    stats.add(f"{tag} raw single set", elapsed / singles)
    if tag != "wt":
        stats.add(f"{tag} raw SET set", timed(lambda: [raw.one_set(k) for k in one]) / singles)


def _our_side(mem: pm.Memory, stats: Stats, tag: str, keys: list[str], singles: int) -> None:
    """Our turn for one mode: the same work through ``HybridMemory``."""
    batch = dict.fromkeys(keys, VALUE)
    stats.add(f"{tag} ours set_many", len(keys) / timed(lambda: mem.set_many(batch, ttl=TTL)))
    if tag == "wt":
        stats.add("wt ours set_merged", stats.samples["wt ours set_many"][-1])
    if tag != "wt":
        stats.add(f"{tag} ours flush", len(keys) / timed(mem.flush))  # type: ignore[attr-defined]
    stats.add(f"{tag} ours get_many", len(keys) / timed(lambda: mem.get_many(keys)))
    stats.add(f"{tag} ours get_counted", stats.samples[f"{tag} ours get_many"][-1])
    one = keys[:singles]
    elapsed = timed(lambda: [mem.set(k, VALUE, ttl=TTL) for k in one])
    stats.add(f"{tag} ours single set", elapsed / singles)
    if tag != "wt":
        stats.add(f"{tag} ours SET set", elapsed / singles)
    mem.flush()  # type: ignore[attr-defined]


def run(redis_url: str, mongo_url: str, database: str, args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    folder = tempfile.mkdtemp(prefix="pm-bench-hybrid-")
    raw = Raw(redis_url, mongo_url, database, folder)
    stats = Stats()
    mems = {
        tag: pm.HybridMemory(
            redis_url,
            mongo_url,
            strategy=strategy,
            journal=str(Path(folder) / f"journal-{tag}.db"),
            journal_sync=sync,
            flush_batch=args.n * 10,  # no kick: the flush is timed on its own
            flush_interval=3600.0,
            namespace="bench-" + tag,
        )
        for tag, (strategy, sync) in MODES.items()
    }
    warm = [f"warm:{i}" for i in range(100)]
    for mem in mems.values():
        mem.set_many(dict.fromkeys(warm, VALUE), ttl=TTL)
        mem.flush()
    raw.write_through(warm)
    for sync in ("full", "normal"):
        raw.write_behind(warm, sync)
        raw.flush(warm, sync)

    for rep in range(args.reps):
        keys = [f"user:{rep}:{i:06d}" for i in range(args.n)]
        for tag, mem in mems.items():
            sync = MODES[tag][1]
            # new keys on both sides, per mode: every batch inserts, none replaces
            raw_keys = [f"raw:{tag}:{uuid.uuid4().hex[:6]}:{k}" for k in keys]
            sides = ("raw", "ours") if rep % 2 == 0 else ("ours", "raw")
            for side in sides:
                if side == "raw":
                    _raw_side(raw, stats, tag, sync, raw_keys, args.singles)
                else:
                    _our_side(mem, stats, tag, keys, args.singles)
            got = mem.get_many(keys[:10])
            assert len(got) == 10 and got[keys[0]] == VALUE, tag
    for mem in mems.values():
        assert mem.backend.backlog() == 0
    report(stats, args, (load, os.getloadavg()[0]))
    for mem in mems.values():  # the servers are this run's own: nothing to clear
        mem.close()


def report(stats: Stats, args: argparse.Namespace, load: tuple[float, float]) -> None:
    print(
        f"\nRedis primary + MongoDB wire server (mongoeco) secondary, N={args.n}, "
        f"single sets={args.singles}, {args.reps} repetitions; median [best]"
    )
    print(
        f"hiredis: {HIREDIS_AVAILABLE}; load average (1 min) before/after: "
        f"{load[0]:.2f}/{load[1]:.2f} on {os.cpu_count()} cores"
    )
    head = f"{'operation':<52}{'raw':>22}{'prefect-memory':>22}{'ratio':>16}"
    print(head)
    print("-" * len(head))
    rows = [
        ("wt", "set_many", "write-through set_many (ops/s)"),
        ("wt", "set_merged", "write-through set_many vs find+write (ops/s)"),
        ("wt", "get_many", "write-through get_many vs MGET (ops/s)"),
        ("wt", "get_counted", "write-through get_many vs MGET+count (ops/s)"),
        ("wt", "single set", "write-through set vs SET+upsert (us/op)"),
    ]
    for tag, label in (("wb", "full"), ("wbn", "normal")):
        name = f"write-behind[{label}]"
        rows += [
            (tag, "set_many", f"{name} set_many (ops/s)"),
            (tag, "get_many", f"{name} get_many vs MGET (ops/s)"),
            (tag, "get_counted", f"{name} get_many vs MGET+count (ops/s)"),
            (tag, "single set", f"{name} set vs queue+SET (us/op)"),
            (tag, "SET set", f"{name} set vs raw SET (us/op)"),
            (tag, "flush", f"{name} flush (ops/s)"),
        ]
    for tag, op, name in rows:
        latency = op.endswith(" set")
        raw_med, ours_med = stats.median(f"{tag} raw {op}"), stats.median(f"{tag} ours {op}")
        raw_best = stats.best(f"{tag} raw {op}", latency=latency)
        ours_best = stats.best(f"{tag} ours {op}", latency=latency)
        scale = 1e6 if latency else 1.0
        cells = [f"{v * scale:,.0f}" for v in (raw_med, raw_best, ours_med, ours_best)]
        print(
            f"{name:<52}{cells[0]:>11} [{cells[1]:>8}]{cells[2]:>11} [{cells[3]:>8}]"
            f"{ours_med / raw_med:>7.2f}x [{ours_best / raw_best:.2f}x]"
        )
    print("ratio: ours / raw (throughput for batches and flush, latency for single sets)")
    print("raw single sets: write-through = SET + update_one upsert; write-behind = SQLite")
    print("insert committed with the same synchronous setting + SET; 'vs raw SET' = a Redis")
    print("SET alone (no journal). write-behind[full]: fsync per write (survives an OS crash);")
    print("[normal]: no fsync per write (survives kill -9, not an OS crash or power loss)")
    print("set_many vs find+write: the raw MongoDB side reads the old created_at and access")
    print("count of the batch first (one find), as ours does to keep them over an overwrite")
    print("get_many: ours counts an access per entry; 'vs MGET' counts nothing on the raw")
    print("side, 'vs MGET+count' adds one script reading and writing a count per key (2 calls)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster run")
    parser.add_argument("--n", type=int, default=None, help="entries per batch")
    parser.add_argument("--singles", type=int, default=None, help="single sets per repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions")
    args = parser.parse_args(argv)
    args.n = args.n or 200  # 300 hit the wire server's 5 s timeout (see the docstring)
    args.singles = args.singles or (20 if args.quick else 30)
    args.reps = args.reps or (2 if args.quick else 4)
    servers = _load_servers()
    with servers.RedisServer() as rds, servers.MongoWireServer() as mongo:
        run(rds.url, mongo.url, mongo.database, args)
    return 0  # informative: a noisy machine must not fail `make bench`


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a write-behind single ``set`` goes: the journal, the primary, the layers.

A write-behind ``HybridMemory.set`` (Redis primary, MongoDB secondary, SQLite journal)
commits a journal row, then writes the primary, then returns. This benchmark times each
part alone, single calls in a loop, against the raw clients doing the same work in the
same run, and prints every figure as a ratio to a raw Redis ``SET`` (the anchor of issue
19: a write-behind single set <= 1.5x of it):

- ``raw SET``: redis-py ``SET key value EX ttl`` (hiredis if installed);
- ``raw SQLite insert``: an INSERT committed alone into a table with an integer primary
  key (WAL, ``synchronous`` as the journal's) -- the least a local durable queue costs;
- the journal's shape, piece by piece: the same insert with ``AUTOINCREMENT`` (sequence
  numbers never reused: an applied entry is removed by its number), then with the lane
  index, then with the key index (per-key order and lookups) -- each B-tree page a commit
  touches is one more frame written to the WAL;
- ``journal append_checked``: our append (one statement, the primary lane's check in it);
- ``primary put``: our Redis put of the same record (one script call);
- ``script + XADD``: a Lua script writing the hash and adding a stream entry, vs the same
  script without the XADD -- what a journal kept in the primary would add to the put;
- ``HybridMemory.set``: the whole call.

Usage::

    python benchmarks/bench_journal.py            # starts redis-server and the MongoDB wire server
    python benchmarks/bench_journal.py --quick
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import redis
from redis.utils import HIREDIS_AVAILABLE

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import prefect_memory as pm  # noqa: E402
from bench_redis import TTL, VALUE, _load_servers  # noqa: E402
from prefect_memory.hybrid.journal import pack_record  # noqa: E402
from prefect_memory.plugins.base import Record  # noqa: E402

_TABLE = "ns TEXT, key TEXT, op TEXT, record BLOB, at REAL, lane TEXT"
#: The journal's shape built up one structure at a time (name, DDL).
SHAPES = [
    ("raw SQLite insert (integer key)", f"CREATE TABLE t (seq INTEGER PRIMARY KEY, {_TABLE})"),
    ("+ AUTOINCREMENT", f"CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, {_TABLE})"),
    (
        "+ lane index",
        f"CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, {_TABLE});"
        "CREATE INDEX il ON t (lane, seq)",
    ),
    (
        "+ key index (the journal's shape)",
        f"CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, {_TABLE});"
        "CREATE INDEX il ON t (lane, seq); CREATE INDEX ik ON t (ns, key, seq)",
    ),
]
_PUT = (
    "redis.call('HSET', KEYS[1], 'v', ARGV[1], 'm', ARGV[2]); redis.call('PEXPIRE', KEYS[1], {ms})"
)
_XADD = "; redis.call('XADD', KEYS[2], '*', 'k', KEYS[1], 'r', ARGV[1])"


def per_call(fn: Callable[[int], object], n: int, reps: int) -> float:
    """Median microseconds of one ``fn(i)`` over ``reps`` loops of ``n`` calls."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


def run(redis_url: str, mongo_url: str, args: argparse.Namespace) -> list[tuple[str, float]]:
    n, reps, sync = args.n, args.reps, args.sync
    folder = tempfile.mkdtemp(prefix="pm-bench-journal-")
    client = redis.Redis.from_url(redis_url)
    packed = msgpack.packb(VALUE)
    out: list[tuple[str, float]] = []
    out.append(("raw SET", per_call(lambda i: client.set(f"raw:{i}", packed, ex=TTL), n, reps)))

    record = Record(packed, time.time(), time.time(), time.time(), ttl=float(TTL))
    pack = pack_record
    for s, (name, ddl) in enumerate(SHAPES):
        conn = sqlite3.connect(os.path.join(folder, f"shape{s}.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync.upper()}")
        conn.executescript(ddl)
        sql = "INSERT INTO t (ns, key, op, record, at, lane) VALUES (?, ?, ?, ?, ?, ?)"

        def insert(i: int, conn: sqlite3.Connection = conn, sql: str = sql) -> None:
            row = ("ns", f"user:{(i * 7919) % 100_000:06d}", "put", pack(record), 1.0, "secondary")
            conn.execute(sql, row)

        out.append((name, per_call(insert, n, reps)))
        conn.close()

    mem = pm.HybridMemory(
        redis_url,
        mongo_url,
        strategy="write-behind",
        journal=os.path.join(folder, "journal.db"),
        journal_sync=sync,
        flush_batch=10**9,  # no flush while timing: the flush is not the single write
        flush_interval=3600.0,
        namespace="bench-journal",
    )
    hybrid = mem.backend
    mem.set("warm", VALUE, ttl=TTL)  # the journal file, the script, the connections
    now = time.time()
    rec = Record(packed, now, now, now, expires_at=now + TTL, ttl=float(TTL))
    journal, primary = hybrid.journal, hybrid.primary

    def append(i: int) -> None:
        journal.append_checked("ns", puts={f"j:{i}": rec}, at=now)

    def put(i: int) -> None:
        primary.put_many("bench-journal", {f"p:{i}": rec}, now=now)

    out.append(("journal append_checked (ours)", per_call(append, n, reps)))
    journal._conn().execute("DELETE FROM pm_journal")
    out.append(("primary put (ours, one script call)", per_call(put, n, reps)))

    ms = TTL * 1000
    plain = client.register_script(_PUT.format(ms=ms))
    stream = client.register_script(_PUT.format(ms=ms) + _XADD)
    out.append(
        (
            "script: HSET + PEXPIRE",
            per_call(lambda i: plain(keys=[f"s:{i}"], args=[packed, b"m" * 40]), n, reps),
        )
    )
    out.append((
        "script: HSET + PEXPIRE + XADD",
        per_call(lambda i: stream(keys=[f"x:{i}", "bench-q"], args=[packed, b"m" * 40]), n, reps),
    ))  # fmt: skip
    client.delete("bench-q")

    out.append((
        "HybridMemory.set (write-behind)",
        per_call(lambda i: mem.set(f"h:{i % 500}", VALUE, ttl=TTL), n, reps),
    ))  # fmt: skip
    journal._conn().execute("DELETE FROM pm_journal")  # (the secondary need not get them)
    mem.close()
    client.close()
    return out


def report(
    rows: list[tuple[str, float]], args: argparse.Namespace, load: tuple[float, float]
) -> None:
    anchor = rows[0][1]
    print(
        f"\nWrite-behind single set, piece by piece: {args.n} single calls x {args.reps}, "
        f"median; journal_sync={args.sync!r}; hiredis {'on' if HIREDIS_AVAILABLE else 'off'}; "
        f"load {load[0]:.1f} -> {load[1]:.1f}\n"
    )
    print("| part | us per call | vs raw SET |")
    print("|---|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:,.1f} | {us / anchor:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster run")
    parser.add_argument("--n", type=int, default=None, help="single calls per loop")
    parser.add_argument("--reps", type=int, default=None, help="loops (the median is kept)")
    parser.add_argument("--sync", choices=("normal", "full"), default="normal")
    args = parser.parse_args(argv)
    args.n = args.n or (300 if args.quick else 2000)
    args.reps = args.reps or (3 if args.quick else 7)
    servers = _load_servers()
    load = os.getloadavg()[0]
    with servers.RedisServer() as rds, servers.MongoWireServer() as mongo:
        rows = run(rds.url, mongo.url, args)
    report(rows, args, (load, os.getloadavg()[0]))
    return 0  # informative: a noisy machine must not fail `make bench`


if __name__ == "__main__":
    raise SystemExit(main())

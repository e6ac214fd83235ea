"""Migrations at the speed of the raw copy: ``TieredMemory.migrate()`` vs the raw work it does.

Two cases, N entries each (default 300,000; ~200-byte values, as a memory stores them:
codec format byte, then msgpack), every entry moving (rule ``age > 1h``), batches of B
(default 5,000; ``--batch 500,5000`` runs several sizes):

(a) SQLite -> local Parquet folder.
    raw: keyset ``SELECT`` of B rows (``key > last ORDER BY key LIMIT B``), the rows as
    an Arrow table (the archive's columns), ``pq.write_table`` into the folder, then one
    range ``DELETE`` (``key BETWEEN first AND last``) per batch.
    ours: ``TieredMemory([Tier(sqlite), Tier(parquet)]).migrate(batch_size=B)``.
(b) Redis -> SQLite.
    raw: ``SCAN MATCH P:{N}:e:* COUNT 1000`` until B keys, one pipeline of
    ``HMGET <entry> v m n a x s`` per batch (the layout of plugins/redis/backend.py:
    one hash per entry), the rows decoded (msgpack ``m``), one ``executemany`` INSERT
    into the store's table, then one ``DEL`` of the batch.
    ours: ``TieredMemory([Tier(redis), Tier(sqlite)]).migrate(batch_size=B)``.

"ours" pays what makes concurrent migrations safe and the raw copy does not: copies
written only where absent, deletes only of the write that was read, the tombstone check
(tiers/moves.py), the commit log of the archive. Each side runs in a fresh subprocess on
the same data (filled by this process before it, not timed), so its peak RSS growth
(sampled every 5 ms with psutil, else ``ru_maxrss``) is its own; the sides alternate
order per round. The ratio is ours / raw throughput, in the same run (load hits both).

Target (issue 19): >= 0.7x, and ours within +150 MB of RSS for 300,000 entries.

Usage::

    python benchmarks/bench_migrate.py                 # N=300,000, starts its own Redis
    python benchmarks/bench_migrate.py --quick         # N=30,000, smoke run
    python benchmarks/bench_migrate.py --case sqlite-parquet --batch 500,5000,20000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bench_redis import _load_servers  # noqa: E402 - the test suite's servers
from prefect_memory.plugins.base import Record  # noqa: E402
from prefect_memory.plugins.sqlite import SqliteBackend  # noqa: E402

NS = "bench"
T0 = 1_715_000_000.0
NOW = T0 + 86_400  # a day later: every entry is older than the rule's hour
RULE = "age > 1h"
FILL = 10_000  # entries written per fill batch (the filler never holds more)
CASES = ("sqlite-parquet", "redis-sqlite")
COLUMNS = (
    "key, value, created_at, updated_at, last_access, access_count, expires_at, ttl, "
    "sliding, tags, version"
)


def entries(n: int) -> Iterator[dict[str, Record]]:
    """The N entries, ``FILL`` at a time (deterministic)."""
    rng = random.Random(7)
    batch: dict[str, Record] = {}
    for i in range(n):
        value = b"\x01" + msgpack.packb(  # as Memory's codec stores it (format byte 0x01)
            {
                "order": i,
                "customer": f"cust-{rng.randrange(10**6):06d}",
                "status": rng.choice(["new", "paid", "shipped", "returned"]),
                "amount": round(rng.uniform(1, 500), 2),
                "items": [rng.randrange(10**5) for _ in range(12)],
                "note": "".join(rng.choice("abcdefghij klmnop") for _ in range(60)),
            }
        )
        at = T0 + i * 0.001
        batch[f"order:{i:07d}"] = Record(value, at, at, at, rng.randrange(5))
        if len(batch) >= FILL:
            yield batch
            batch = {}
    if batch:
        yield batch


# -- the sides (run in a child process) ------------------------------------------------------
def raw_sqlite_parquet(work: Path, batch: int, _url: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    conn = sqlite3.connect(str(work / "source.db"), isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")  # as SqliteBackend opens it
    out = work / "raw-archive"
    out.mkdir()
    moved, last, part = 0, "", 0
    while True:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM pm_entries WHERE ns = ? AND key > ? ORDER BY key LIMIT ?",
            (NS, last, batch),
        ).fetchall()
        if not rows:
            return moved
        keys, values, c, u, a, n, x, ttl, s, tags, r = zip(*rows, strict=True)
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "namespace": pa.array([NS] * len(keys), pa.string()),
                "created_at": pa.array(c, pa.float64()),
                "updated_at": pa.array(u, pa.float64()),
                "last_access": pa.array(a, pa.float64()),
                "access_count": pa.array(n, pa.int64()),
                "expires_at": pa.array(x, pa.float64()),
                "ttl": pa.array(ttl, pa.float64()),
                "sliding": pa.array([bool(v) for v in s], pa.bool_()),
                "tags": pa.array(
                    [[] if t == "[]" else json.loads(t) for t in tags], pa.list_(pa.string())
                ),
                "version": pa.array(r, pa.int64()),
                "value": pa.array(values, pa.large_binary()),
            }
        )
        pq.write_table(table, str(out / f"part-{part}.parquet"))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "DELETE FROM pm_entries WHERE ns = ? AND key >= ? AND key <= ?", (NS, keys[0], keys[-1])
        )
        conn.execute("COMMIT")
        moved += len(rows)
        last, part = keys[-1], part + 1
        del rows, table


def raw_redis_sqlite(work: Path, batch: int, url: str) -> int:
    import redis

    from prefect_memory.keys import ns_token

    client = redis.Redis.from_url(url)
    conn = sqlite3.connect(str(work / "target.db"), isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    prefix = f"pm:{{{ns_token(NS)}}}:e:"
    start = len(prefix.encode())
    insert = f"INSERT INTO pm_entries (ns, {COLUMNS}) VALUES ({','.join('?' * 12)})"

    def batches() -> Iterator[list[bytes]]:
        seen: set[bytes] = set()  # SCAN may return a key twice
        names: list[bytes] = []
        for name in client.scan_iter(match=prefix + "*", count=1000):
            if name not in seen:
                seen.add(name)
                names.append(name)
                if len(names) >= batch:
                    yield names
                    names = []
        if names:
            yield names

    moved = 0
    for names in batches():
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, "v", "m", "n", "a", "x", "s")
        rows = []
        for name, (v, m, n, a, x, _s) in zip(names, pipe.execute(), strict=True):
            if m is None:
                continue
            c, u, ttl, sliding, tags, version = msgpack.unpackb(m)
            key = name[start:].decode("utf-8", "surrogateescape")
            rows.append((NS, key, v, c, u, float(a) if a else c, int(n or 0),
                         float(x) if x else None, ttl or None, int(bool(sliding)),
                         json.dumps(tags) if tags else "[]", version))  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
        client.delete(*names)
        moved += len(rows)
    return moved


def ours(case: str, work: Path, batch: int, url: str) -> int:
    from prefect_memory.plugins.parquet import ParquetArchiveBackend
    from prefect_memory.tiers import Tier, TieredMemory

    if case == "sqlite-parquet":
        hot: Any = SqliteBackend(str(work / "source.db"))
        cold: Any = ParquetArchiveBackend("parquet:///" + str(work / "archive"))
    else:
        from prefect_memory.plugins.redis import RedisBackend

        hot, cold = RedisBackend(url), SqliteBackend(str(work / "target.db"))
    mem = TieredMemory([Tier("hot", hot), Tier("cold", cold)],
                       [{"from": "hot", "to": "cold", "condition": RULE}],
                       namespace=NS, clock=lambda: NOW)  # fmt: skip
    return mem.migrate(batch_size=batch).total_moved


def _rss() -> int:
    try:
        import psutil
    except ImportError:
        return 0
    return int(psutil.Process().memory_info().rss)


def child(args: argparse.Namespace) -> None:
    """One side in this process: warm up the imports, then time it and sample the RSS."""
    import pyarrow as pa  # imported by both sides before the baseline
    import redis

    from prefect_memory.plugins.parquet import ParquetArchiveBackend
    from prefect_memory.plugins.redis import RedisBackend
    from prefect_memory.tiers import TieredMemory

    assert ParquetArchiveBackend and RedisBackend and TieredMemory  # loaded before the baseline

    pa.array(["warm"], pa.string())  # pyarrow's first conversion imports pandas (both sides)
    work = Path(args.work)
    run: Callable[[], int]
    if args.side == "raw":
        raw = raw_sqlite_parquet if args.case == "sqlite-parquet" else raw_redis_sqlite
        run = lambda: raw(work, args.batch, args.url)  # noqa: E731
    else:
        run = lambda: ours(args.case, work, args.batch, args.url)  # noqa: E731
    gc.collect()
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    if base:
        sampler.start()
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu = time.process_time()
    started = time.perf_counter()
    moved = run()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    done.set()
    if base:
        sampler.join()
        growth = max(peak[0], _rss()) - base
    else:  # no psutil: the peak of the whole process over what it had before the run
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - max_before
    print(json.dumps({"seconds": seconds, "cpu": cpu, "moved": moved,
                      "rss_growth": max(0, growth),
                      "sampled": bool(base),
                      "hiredis": bool(redis.utils.HIREDIS_AVAILABLE)}))  # fmt: skip


# -- the parent ------------------------------------------------------------------------------
def fill_sqlite(path: Path, n: int) -> None:
    store = SqliteBackend(str(path))
    for batch in entries(n):
        store.put_many(NS, batch, now=T0)
    store.close()
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the whole database in one file
    conn.close()


def fill_redis(url: str, n: int) -> None:
    from prefect_memory.plugins.redis import RedisBackend

    store = RedisBackend(url)
    store.execute("FLUSHALL")
    for batch in entries(n):
        store.put_many(NS, batch, now=T0)
    store.close()


def run_side(case: str, side: str, work: Path, batch: int, url: str, n: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", side, "--case", case, "--work", str(work),
         "--batch", str(batch), "--url", url],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    out = json.loads(result.stdout.strip().splitlines()[-1])
    if out["moved"] != n:
        raise SystemExit(f"{case} {side}: moved {out['moved']} of {n}")
    return out


def measure(case: str, n: int, batch: int, rounds: int, url: str, base: Path) -> dict[str, Any]:
    seed = base / f"seed-{case}.db"
    if case == "sqlite-parquet" and not seed.exists():
        fill_sqlite(seed, n)
    results: dict[str, list[dict[str, Any]]] = {"raw": [], "ours": []}
    for round_ in range(rounds):
        for side in ("raw", "ours") if round_ % 2 == 0 else ("ours", "raw"):
            work = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=base))
            if case == "sqlite-parquet":
                shutil.copy(seed, work / "source.db")
            else:
                fill_redis(url, n)
                SqliteBackend(str(work / "target.db")).ping()  # the table exists for raw
            results[side].append(run_side(case, side, work, batch, url, n))
            shutil.rmtree(work, ignore_errors=True)
    return results


def report(case: str, n: int, batch: int, results: dict[str, list[dict[str, Any]]]) -> str:
    raw = statistics.median(r["seconds"] for r in results["raw"])
    ours_t = statistics.median(r["seconds"] for r in results["ours"])
    cpu = {side: statistics.median(r["cpu"] for r in rs) for side, rs in results.items()}
    mem = {side: max(r["rss_growth"] for r in rs) / 2**20 for side, rs in results.items()}
    rates = f"{n / raw:>12,.0f}{n / ours_t:>12,.0f}{raw / ours_t:>8.2f}x"
    return (f"{case:<16}{batch:>7,}{rates}{cpu['raw'] / cpu['ours']:>8.2f}x"
            f"{mem['raw']:>10.0f} MB{mem['ours']:>9.0f} MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--batch", default="5000", help="batch size(s), comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side (median)")
    parser.add_argument("--case", choices=(*CASES, "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="N=30,000: a smoke run")
    parser.add_argument("--child", choices=("raw", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.side, args.batch = args.child, int(args.batch)
        child(args)
        return
    if args.quick:
        args.n = 30_000
    batches = [int(b) for b in args.batch.split(",")]
    cases = CASES if args.case == "both" else (args.case,)
    base = Path(tempfile.mkdtemp(prefix="pm-bench-migrate-"))
    import redis

    print(f"N={args.n:,} entries of ~200 B, rule {RULE!r} (every entry moves), "
          f"{args.rounds} round(s) per side, hiredis={redis.utils.HIREDIS_AVAILABLE}, "
          f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at the start, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"\n{'case':<16}{'batch':>7}{'raw rows/s':>12}{'ours rows/s':>12}{'ratio':>9}"
          f"{'CPU':>9}{'RSS raw':>13}{'RSS ours':>12}")  # fmt: skip
    try:
        servers = _load_servers() if "redis-sqlite" in cases else None
        server = servers.RedisServer() if servers is not None else None
        url = server.__enter__().url if server is not None else ""
        try:
            for case in cases:
                for batch in batches:
                    results = measure(case, args.n, batch, args.rounds, url, base)
                    print(report(case, args.n, batch, results), flush=True)
        finally:
            if server is not None:
                server.__exit__(None, None, None)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at the end; "
          "ratio = ours / raw throughput (target >= 0.7x); CPU = raw / ours CPU seconds of "
          "the side's process (what a loaded machine distorts least); RSS = peak growth of "
          "the side's process during the run (target: ours within +150 MB)")  # fmt: skip


if __name__ == "__main__":
    main()

"""Parquet archive (cold tier) on S3 vs pyarrow ``write_dataset`` of the same rows.

Workload: N entries (default 200,000) of about 200 bytes (msgpack'd dicts) in a SQLite
warm tier, archived to a real S3 server (SeaweedFS, started here) in batches of B rows
(default 50,000), each batch one Parquet file. Measured in the same run, on the same
bucket, after one warm-up round, each repeated and summarised by the median:

- source read: reading the batches from SQLite (``scan`` + ``get_many``), what a
  migration pays before writing;
- write, ours: ``ParquetArchiveBackend.put_many`` per batch, from the records to the
  files on S3 (table building, sorting, encoding, upload, key index update);
- write, pyarrow: ``pyarrow.dataset.write_dataset`` of the same rows (the same Arrow
  table per batch, ``date`` hive partitioning, through the same s3fs filesystem); the
  table building is timed apart and NOT charged to pyarrow;
- end to end: ``TieredMemory.migrate()`` SQLite -> archive (read + write + delete);
- key lookups (single keys, S = 200 lookups): ours through the key index (warm: one LIST
  + one ranged GET), ours with a cold index (a new backend object in this process), and
  the same lookup with ``pyarrow.dataset`` filters: on our files (sorted by key:
  row-group statistics prune) and on ``write_dataset``'s files (no pruning);
- cold lookups in a NEW process on an archive of 100 files (the same N entries written
  as 100 ``put_many`` batches): P spawned processes each open the archive, connect
  (``ping``), then time their first single-key lookup; the same archive written with
  key summaries and index manifests (what a lookup reads: one LIST, the manifest and the
  claims above it, one ranged read) and without them (the layout of earlier versions:
  every file's footer and key columns read first). Each process then also times lookups
  through a new backend object (cold index, warm process) and warm lookups.

Targets: ours >= 0.8x the rate of ``write_dataset``; a cold lookup in a new process on
100 files <= 50 ms (with summaries).

Usage::

    python benchmarks/bench_archive.py            # starts its own SeaweedFS
    python benchmarks/bench_archive.py --quick    # 40,000 entries, fewer repeats
    python benchmarks/bench_archive.py --value-json   # archive with value_json=True

Values are what a memory stores (codec format byte, then msgpack). With ``--value-json``
the archive's ``value_json`` column (off by default) is computed for every row, and the
pyarrow side writes the same table, that column included (its building, JSON included,
is not charged to pyarrow).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from pyarrow.fs import FSSpecHandler, PyFileSystem

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from prefect_memory.plugins.base import Record  # noqa: E402
from prefect_memory.plugins.parquet import ParquetArchiveBackend  # noqa: E402
from prefect_memory.plugins.parquet.format import build_table, day_of  # noqa: E402
from prefect_memory.plugins.sqlite import SqliteBackend  # noqa: E402
from prefect_memory.tiers import Tier, TieredMemory  # noqa: E402

NS = "bench"
T0 = 1_715_000_000.0
NOW = T0 + 86400  # archive time (the date partition)


def _load_servers() -> Any:
    spec = importlib.util.spec_from_file_location("pm_test_servers", REPO / "tests" / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_records(n: int) -> dict[str, Record]:
    rng = random.Random(7)
    out: dict[str, Record] = {}
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
        # untagged: SqliteBackend.delete_if_unchanged clears tags with a per-key scan of its
        # tag table (quadratic), which would swamp the end-to-end migration figure
        out[f"order:{i:07d}"] = Record(value, at, at, at, rng.randrange(5), None, None, False,
                                       (), 1)  # fmt: skip
    return out


def read_source(warm: SqliteBackend, batch: int) -> list[dict[str, Record]]:
    batches: list[dict[str, Record]] = []
    keys: list[str] = []
    for key in warm.scan(NS, None, now=T0 + 1e6):
        keys.append(key)
        if len(keys) >= batch:
            batches.append(warm.get_many(NS, keys, now=T0 + 1e6))
            keys = []
    if keys:
        batches.append(warm.get_many(NS, keys, now=T0 + 1e6))
    return batches


def pyarrow_writer(fs: Any, tables: list[pa.Table], base: str) -> Callable[[], None]:
    """``write_dataset`` of each batch's table: one call (and one file) per batch, like ours."""
    partitioning = pds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")

    def write() -> None:
        for i, table in enumerate(tables):
            name = f"part-{i}-{{i}}.parquet"
            pds.write_dataset(table, base, format="parquet", filesystem=fs,
                              partitioning=partitioning, basename_template=name,
                              existing_data_behavior="overwrite_or_ignore")  # fmt: skip

    return write


def arrow(batch: dict[str, Record], value_json: bool = True) -> pa.Table:
    """A batch as the Arrow table both writers store (our schema, sorted by key)."""
    return build_table(
        NS, list(batch), list(batch.values()), seq=1, archived_at=NOW, value_json=value_json
    )


def measure_writes(args: Any, warm: SqliteBackend, options: dict[str, Any]) -> dict[str, Any]:
    """Source read, our write and write_dataset per round (the order alternates per round)."""
    samples: dict[str, list[float]] = {}
    paired: list[float] = []
    archive: ParquetArchiveBackend | None = None
    base = ""
    for round_ in range(args.repeat + 1):  # round 0 warms up the server, sockets and caches
        batches: list[dict[str, Record]] = []
        read = timed(lambda b=batches: b.extend(read_source(warm, args.batch)))
        json_on = options["value_json"]
        build = timed(lambda bs=batches, j=json_on: [arrow(b, j) for b in bs])
        tables = [
            arrow(b, json_on).append_column("date", pa.array([day_of(NOW)] * len(b)))
            for b in batches
        ]
        run = uuid.uuid4().hex[:8]
        archive = ParquetArchiveBackend(f"parquet::s3://bench/ours-{run}", **options)
        archive.ping()  # connected first: both sides write through a connected s3fs
        base = f"bench/pyarrow-{run}"
        raw = pyarrow_writer(PyFileSystem(FSSpecHandler(archive.fs)), tables, base)

        def ours(a: ParquetArchiveBackend = archive, bs: list = batches) -> None:
            for batch in bs:
                a.put_many(NS, batch, now=NOW)

        if round_ % 2:
            ours_t, raw_t = timed(ours), timed(raw)
        else:
            raw_t, ours_t = timed(raw), timed(ours)
        if round_:
            for name, value in (("source read (SQLite get_many)", read),
                                ("write: ours put_many", ours_t),
                                ("write: pyarrow write_dataset", raw_t),
                                ("  table building (records -> Arrow)", build)):  # fmt: skip
                samples.setdefault(name, []).append(value)
            paired.append(raw_t / ours_t)
    assert archive is not None
    return {"samples": samples, "paired": paired, "archive": archive, "base": base}


def measure_lookups(
    args: Any,
    archive: ParquetArchiveBackend,
    base: str,
    records: dict[str, Record],
    options: dict[str, Any],
) -> dict[str, list[float]]:
    """Single-key lookups: through the index (warm, cold) and with pyarrow dataset filters."""
    now = NOW
    keys = random.Random(3).sample(list(records), args.lookups)
    lat: dict[str, list[float]] = {"index (warm: LIST + 1 ranged GET)": []}
    for key in keys:
        t = time.perf_counter()
        got = archive.get_many(NS, [key], now=now)
        lat["index (warm: LIST + 1 ranged GET)"].append(time.perf_counter() - t)
        assert got[key].value == records[key].value
    cold = [ParquetArchiveBackend(archive.url, **options) for _ in range(5)]
    lat["index cold (new backend object in this process)"] = [
        timed(lambda a=a, k=k: a.get_many(NS, [k], now=now))
        for a, k in zip(cold, keys, strict=False)
    ]
    fs = PyFileSystem(FSSpecHandler(archive.fs))
    raw_ds = pds.dataset(base, format="parquet", filesystem=fs, partitioning="hive")
    for label, dataset in (("dataset filter, our files (key stats)", archive.dataset(NS)),
                           ("dataset filter, write_dataset files", raw_ds)):  # fmt: skip
        lat[label] = []
        for key in keys[: max(5, args.lookups // 10)]:
            t = time.perf_counter()
            found = dataset.to_table(columns=["key", "value"], filter=pc.field("key") == key)
            lat[label].append(time.perf_counter() - t)
            assert found.num_rows >= 1
    return lat


def _cold_process(url: str, options: dict[str, Any], keys: list[str], out: Any) -> None:
    """One new process: connect, then time the first lookup, lookups through new
    backend objects (cold index, warm process) and warm lookups."""
    archive = ParquetArchiveBackend(url, **options)
    archive.ping()  # connected, as a worker that has done anything else first
    first = timed(lambda: archive.get_many(NS, [keys[0]], now=NOW))
    again = []
    for key in keys[1:6]:
        fresh = ParquetArchiveBackend(url, **options)
        again.append(timed(lambda f=fresh, k=key: f.get_many(NS, [k], now=NOW)))
    warm = [timed(lambda k=key: archive.get_many(NS, [k], now=NOW)) for key in keys[6:]]
    found = archive.get_many(NS, keys[:1], now=NOW)
    out.put((first, again, warm, len(found)))


def build_hundred(
    url: str, options: dict[str, Any], records: dict[str, Record], summaries: bool
) -> None:
    """The N entries as 100 files (one ``put_many`` each), with or without summaries."""
    archive = ParquetArchiveBackend(url, **options)
    archive._summaries = summaries  # off: the layout written before summaries existed
    items = list(records.items())
    per_file = -(-len(items) // 100)
    for start in range(0, len(items), per_file):
        archive.put_many(NS, dict(items[start : start + per_file]), now=NOW)


def measure_cold(
    args: Any, records: dict[str, Record], options: dict[str, Any]
) -> dict[str, list[float]]:
    """Cold lookups in new (spawned) processes on 100-file archives, with and without
    key summaries."""
    ctx = multiprocessing.get_context("spawn")
    lat: dict[str, list[float]] = {}
    rng = random.Random(9)
    for summaries in (True, False):
        url = f"parquet::s3://bench/hundred-{uuid.uuid4().hex[:8]}"
        build_hundred(url, options, records, summaries)
        label = "with summaries" if summaries else "without summaries (earlier layout)"
        for _ in range(args.processes):
            keys = rng.sample(list(records), 16)
            out = ctx.Queue()
            proc = ctx.Process(target=_cold_process, args=(url, options, keys, out))
            proc.start()
            first, again, warm, found = out.get(timeout=600)
            proc.join()
            assert found == 1
            lat.setdefault(f"cold, new process, 100 files, {label}", []).append(first)
            lat.setdefault(f"cold index (new backend, same process), {label}", []).extend(again)
            lat.setdefault(f"warm (same backend after a cold lookup), {label}", []).extend(warm)
    return lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--processes", type=int, default=9, help="new processes per variant")
    parser.add_argument("--cold-only", action="store_true", help="only the 100-file lookups")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--value-json", action="store_true", help="archive value_json=True")
    args = parser.parse_args()
    if args.quick:
        args.n, args.batch, args.repeat, args.lookups = 40_000, 10_000, 3, 50
        args.processes = min(args.processes, 5)
    servers = _load_servers()
    work = Path(tempfile.mkdtemp(prefix="pm-bench-archive-"))
    with servers.S3Server() as s3:
        s3.make_bucket("bench")
        options = {"storage_options": s3.storage_options, "value_json": args.value_json}
        records = make_records(args.n)
        size = sum(len(r.value) for r in records.values()) / len(records)
        warm = SqliteBackend(str(work / "warm.db"))
        items = list(records.items())
        for start in range(0, args.n, 10_000):
            warm.put_many(NS, dict(items[start : start + 10_000]), now=T0)
        print(f"N={args.n:,} entries of ~{size:.0f} B values, batches of {args.batch:,} "
              f"(one file each), SeaweedFS {s3.endpoint_url}, median of {args.repeat}, "
              f"value_json={options['value_json']}, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
        cold_lat = measure_cold(args, records, options)
        if args.cold_only:
            report_lookups(cold_lat, "cold lookup (1 key), 100 files", target=True)
            return
        writes = measure_writes(args, warm, options)
        lat = measure_lookups(args, writes["archive"], writes["base"], records, options)
        cold = ParquetArchiveBackend(f"parquet::s3://bench/mig-{uuid.uuid4().hex[:8]}", **options)
        mem = TieredMemory([Tier("warm", warm), Tier("cold", cold)],
                           [{"from": "warm", "to": "cold", "condition": "age > 1h"}],
                           namespace=NS, clock=lambda: T0 + 86400)  # fmt: skip
        migrate_t = timed(lambda: mem.migrate(batch_size=args.batch))
        assert sum(1 for _ in cold.scan(NS, None, now=T0 + 86400)) == args.n
    report(args, writes, lat, migrate_t)
    report_lookups(cold_lat, "cold lookup (1 key), 100 files", target=True)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def report(
    args: Any, writes: dict[str, Any], lat: dict[str, list[float]], migrate_t: float
) -> None:
    samples = writes["samples"]
    med = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\n{'step':<40}{'rows/s':>12}{'median':>10}{'best':>10}")
    for name, values in samples.items():
        print(f"{name:<40}{args.n / med[name]:>12,.0f}{med[name]:>9.2f}s{min(values):>9.2f}s")
    print(f"{'migrate() SQLite -> archive (end to end)':<40}{args.n / migrate_t:>12,.0f}"
          f"{migrate_t:>9.2f}s")  # fmt: skip
    ours, raw = med["write: ours put_many"], med["write: pyarrow write_dataset"]
    build, read = med["  table building (records -> Arrow)"], med["source read (SQLite get_many)"]
    print(f"\n{'ratio':<56}{'value':>8}   target")
    print(f"{'ours / write_dataset, rate (ratio of medians)':<56}{raw / ours:>7.2f}x   >= 0.8x")
    print(f"{'ours / write_dataset, rate (median of paired rounds)':<56}"
          f"{statistics.median(writes['paired']):>7.2f}x")  # fmt: skip
    print(f"{'ours / (records -> Arrow + write_dataset)':<56}{(raw + build) / ours:>7.2f}x")
    print(f"{'source-read share of read + write (ours)':<56}{read / (read + ours):>8.0%}")
    print(f"{'write share of read + write (ours)':<56}{ours / (read + ours):>8.0%}")
    report_lookups(lat, "key lookup (1 key), 4 files")


def report_lookups(lat: dict[str, list[float]], title: str, *, target: bool = False) -> None:
    """Median and p95 of each kind of lookup (and the cold target when asked)."""
    width = max(56, *(len(label) + 2 for label in lat))
    print(f"\n{title:<{width}}{'n':>4}{'median':>9}{'p95':>10}")
    for label, values in lat.items():
        values = sorted(values)
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(f"{label:<{width}}{len(values):>4}{statistics.median(values) * 1e3:>7.1f}ms"
              f"{p95 * 1e3:>8.1f}ms")  # fmt: skip
    if target:
        print("target: cold lookup in a new process on 100 files <= 50 ms (with summaries)")


if __name__ == "__main__":
    main()

"""Maintenance flows fanned out over partitions, on Prefect's own task runners.

The same flows (``migrate_tiers``, ``archive_to_parquet``, ``cleanup_expired``,
``downsample_analytics``) with
``partitions=n`` on the default thread-pool runner and on ``DaskTaskRunner`` (prefect-dask)
with a ``LocalCluster`` of worker PROCESSES; stores Redis -> SQLite -> the Parquet archive
on a local folder. After each run, the model check: every entry written is in exactly one
tier with its value (none lost, none duplicated), and the reports reconcile (entries moved
= copies written = entries gone from the source). One Dask worker is killed (-9) mid-run:
its partition runs again (Dask reschedules it on a live worker and the task engine runs it
again; ``retries`` covers errors raised inside the task) and still moves each entry once.
A 1M-entry variant is marked ``slow`` (``make test-slow``).

``downsample_analytics`` splits the series of a namespace by a hash of their names: on both
runners, with two runs at once (one started inside the other, deterministically; and two
overlapping runs on Dask worker processes) and with a partition retried after it died
mid-series, the stored buckets are byte for byte those of a one-partition run and the
reports of all runs add up to its report (each chunk counted once).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect_dask import DaskTaskRunner

from prefect_memory.analytics import RedisLink, TimeSeries, downsample_all
from prefect_memory.blocks import (
    MemoryTier,
    ParquetArchiveMemory,
    RedisMemory,
    SqliteMemory,
    TieredMemoryBlock,
    TierRule,
)
from prefect_memory.flows.maintenance import (
    archive_to_parquet,
    cleanup_expired,
    downsample_analytics,
    migrate_tiers,
)
from prefect_memory.tiers.partitions import Partition

pytestmark = [pytest.mark.redis, pytest.mark.timeout(600)]

N = 3000
READ = 300  # entries read once: they stay hot
RULES = [
    {"from": "hot", "to": "warm", "condition": "accessCount < 1 AND size < 1000"},
    {"from": "hot", "to": "cold", "condition": "accessCount < 1 AND size >= 1000"},
]
DASK = {"n_workers": 2, "processes": True, "threads_per_worker": 1}


def slow(test: Any) -> Any:
    """A large variant: marked ``slow``, run by ``make test-slow`` (PREFECT_MEMORY_SLOW=1)."""
    skip = pytest.mark.skipif(
        not os.environ.get("PREFECT_MEMORY_SLOW"), reason="large variant: make test-slow"
    )
    return pytest.mark.slow(skip(test))


def value(i: int) -> dict[str, Any]:
    return {"key": f"k:{i}", "v": i, "pad": "x" * (2000 if i % 3 == 0 else 100)}


def _block(redis_server: Any, tmp_path: Path, unique: str) -> TieredMemoryBlock:
    return TieredMemoryBlock(
        namespace=f"fan-{unique}",
        tiers=[
            MemoryTier(name="hot", block=RedisMemory(url=redis_server.url, key_prefix=unique)),
            MemoryTier(name="warm", block=SqliteMemory(path=str(tmp_path / "warm.db"))),
            MemoryTier(name="cold", block=ParquetArchiveMemory(url=str(tmp_path / "archive"))),
        ],
        rules=[TierRule(**rule) for rule in RULES],
    )


def _fill(block: TieredMemoryBlock, n: int = N, chunk: int = 20_000) -> dict[str, Any]:
    written = {f"k:{i}": value(i) for i in range(n)}
    for start in range(0, n, chunk):
        block.set_many({f"k:{i}": written[f"k:{i}"] for i in range(start, min(n, start + chunk))})
    block.get_many([f"k:{i}" for i in range(READ)])
    return written


def _expected(n: int) -> dict[str, str]:
    def home(i: int) -> str:
        return "hot" if i < READ else ("cold" if i % 3 == 0 else "warm")

    return {f"k:{i}": home(i) for i in range(n)}


def _census(block: TieredMemoryBlock, written: dict[str, Any], values: bool = True) -> Any:
    """Where each key is (read without touching); problems against the model."""
    mem = block.memory
    now = time.time()
    where: dict[str, list[str]] = {}
    stale: list[str] = []
    for tier in mem.tiers:
        found = list(tier.backend.scan(mem.namespace, None, now=now))
        for key in found:
            where.setdefault(key, []).append(tier.name)
        if values:
            for start in range(0, len(found), 5000):
                got = tier.backend.get_many(mem.namespace, found[start : start + 5000], now=now)
                stale += [k for k, r in got.items() if mem.codec.decode(r.value) != written[k]]
    lost = [k for k in written if k not in where]
    duplicated = [k for k, t in where.items() if len(t) > 1]
    assert not lost and not duplicated and not stale, (lost[:5], duplicated[:5], stale[:5])
    counts: dict[str, int] = {}
    for tiers in where.values():
        counts[tiers[0]] = counts.get(tiers[0], 0) + 1
    return {k: t[0] for k, t in where.items()}, counts


def _artifact_rows(key: str) -> list[dict[str, Any]]:
    import asyncio

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> Any:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return sorted(found, key=lambda a: a.created)[-1]

    data = asyncio.run(read()).data
    return json.loads(data) if isinstance(data, str) else data


def _artifact_body(key: str) -> str:
    import asyncio

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> Any:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return sorted(found, key=lambda a: a.created)[-1]

    return str(asyncio.run(read()).data)


def _check_report(result: dict[str, Any], before: dict[str, int], after: dict[str, int]) -> None:
    """moved = written = deleted from the source, per partition rows adding up to the total."""
    rows = result["partitions"]
    total = rows[-1]
    assert total["partition"] == "total"
    parts = [r for r in rows[:-1] if r["partition"] != "budgets"]
    assert sum(r["entries"] for r in parts) == total["entries"]
    assert sum(r["bytes"] for r in parts) == total["bytes"]
    moved = sum(result["moved"].values())
    assert moved == total["entries"] == before["hot"] - after["hot"]
    assert after.get("warm", 0) + after.get("cold", 0) == moved
    if "written" in result:
        assert result["written"] == moved


@pytest.mark.parametrize("runner", ["default", "dask"])
def test_migrate_tiers_fans_out_and_moves_every_entry_once(
    redis_server: Any, tmp_path: Path, unique: str, runner: str
) -> None:
    block = _block(redis_server, tmp_path, unique)
    written = _fill(block)
    _, before = _census(block, written)
    flow = migrate_tiers
    if runner == "dask":
        flow = migrate_tiers.with_options(task_runner=DaskTaskRunner(cluster_kwargs=DASK))
    result = flow(block, partitions=4, batch_size=200)
    where, after = _census(block, written)
    assert where == _expected(N)
    _check_report(result, before, after)
    assert [r["partition"] for r in result["partitions"]] == ["1/4", "2/4", "3/4", "4/4", "total"]
    assert all(r["entries"] > 0 and r["seconds"] > 0 for r in result["partitions"])
    rows = _artifact_rows("migration-memory")
    assert rows == result["partitions"]
    again = flow(block, partitions=4)  # nothing left to move
    assert again["partitions"][-1]["entries"] == 0


def test_archive_to_parquet_on_dask_worker_processes(
    redis_server: Any, tmp_path: Path, unique: str
) -> None:
    block = _block(redis_server, tmp_path, unique)
    written = _fill(block)
    _, before = _census(block, written)
    flow = archive_to_parquet.with_options(task_runner=DaskTaskRunner(cluster_kwargs=DASK))
    result = flow(block, partitions=2, batch_size=500)
    where, after = _census(block, written)
    assert where == _expected(N)
    _check_report(result, before, after)
    assert result["compacted"]["cold"]["files_after"] >= 1


def test_cleanup_expired_by_store_partition(tmp_path: Path, unique: str) -> None:
    block = TieredMemoryBlock(
        namespace="clean",
        tiers=[
            MemoryTier(name="a", block=SqliteMemory(path=str(tmp_path / "a.db")), patterns=["a:*"]),
            MemoryTier(name="b", block=SqliteMemory(path=str(tmp_path / "b.db")), patterns=["b:*"]),
        ],
    )
    block.set_many({f"a:{i}": i for i in range(30)}, ttl=0.2)
    block.set_many({f"b:{i}": i for i in range(20)}, ttl=0.2)
    block.set("a:keep", 1)
    time.sleep(0.4)
    assert cleanup_expired(block, partitions=4) == 50  # two stores: two partitions
    assert block.get("a:keep") == 1


def _kill_a_busy_worker(client: Any, block: TieredMemoryBlock, seen: dict[str, Any]) -> None:
    """Wait until entries are moving, then kill -9 a Dask worker that runs a partition."""
    pids = client.run(os.getpid)
    warm = block.memory.tiers[1].backend
    ns = block.memory.namespace
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(1 for _ in warm.scan(ns, None, now=time.time())) > 50:
            busy = [addr for addr, tasks in client.processing().items() if tasks]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                seen["killed"] = (busy[0], client.processing()[busy[0]])
                now = time.time()
                seen["moved_then"] = sum(
                    sum(1 for _ in t.backend.scan(ns, None, now=now))
                    for t in block.memory.tiers[1:]
                )
                return
        time.sleep(0.002)


def test_a_dask_worker_killed_mid_run_still_moves_each_entry_once(
    redis_server: Any, tmp_path: Path, unique: str
) -> None:
    from distributed import Client, LocalCluster

    block = _block(redis_server, tmp_path, unique)
    written = _fill(block)
    _, before = _census(block, written)
    with LocalCluster(**DASK) as cluster, Client(cluster) as client:
        seen: dict[str, Any] = {}
        killer = threading.Thread(target=_kill_a_busy_worker, args=(client, block, seen))
        killer.start()
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        result = migrate_tiers.with_options(task_runner=runner)(block, partitions=2, batch_size=5)
        killer.join()
    assert "killed" in seen, "no worker was busy: the run ended before the kill"
    where, after = _census(block, written)
    assert where == _expected(N)  # nothing lost, nothing duplicated, every move done
    due = before["hot"] - after["hot"]
    reported = result["partitions"][-1]["entries"]
    # the killed attempt's moves are done but its report died with it: the retry reports
    # the rest, so the reports lack at most what had moved at the kill
    assert due - seen["moved_then"] <= reported <= due
    assert seen["moved_then"] < due  # killed mid-run
    print(f"killed {seen['killed']}; moved at kill {seen['moved_then']}, reported {reported}")


@slow
@pytest.mark.timeout(3600)
def test_one_million_entries_on_dask_worker_processes(
    redis_server: Any, tmp_path: Path, unique: str
) -> None:
    n = 1_000_000
    block = _block(redis_server, tmp_path, unique)
    written = _fill(block, n)
    _, before = _census(block, written, values=False)
    flow = migrate_tiers.with_options(task_runner=DaskTaskRunner(cluster_kwargs=DASK))
    result = flow(block, partitions=4, batch_size=2000)
    where, after = _census(block, written, values=False)
    assert where == _expected(n)
    _check_report(result, before, after)


def test_a_partition_is_plain_data_for_any_task_runner() -> None:
    import pickle

    part = Partition(2, 4)
    assert pickle.loads(pickle.dumps(part)) == part and str(part) == "3/4"


# -- downsample_analytics fanned out over the series ------------------------------------------
S = 1_000_000_000
T0 = 1_714_557_600 * S
SERIES = [f"cpu{{host=h{i:02d}}}" for i in range(20)] + ["mem", "disk", "net:in", "net:out"]
TS_RULES = [
    {"interval": 60, "aggregation": ["avg", "max"]},
    {"interval": 3600, "aggregation": "sum"},
]
CONFIG = {
    "memory": {
        "backend": "hybrid",
        "streams": {
            "metrics": {"type": "time-series", "retention": 30 * 86400, "downsampling": TS_RULES}
        },
    }
}


def _series_block(redis_server: Any, prefix: str) -> RedisMemory:
    """A Redis block of its own key prefix; the series are written in namespace analytics."""
    block = RedisMemory(url=redis_server.url, key_prefix=prefix, namespace="analytics")
    for k, name in enumerate(SERIES):
        rng = np.random.default_rng(k)
        hours = 6 + k % 7  # series of different sizes: partitions differ
        ts = T0 + np.arange(hours * 360, dtype=np.int64) * 10 * S
        late = rng.choice(ts.size, size=ts.size // 50, replace=False)
        ts[late] -= rng.integers(1, 600, late.size) * S  # arrive out of order: sorted later
        series = TimeSeries(block.memory, name, namespace="analytics", downsampling=TS_RULES,
                            retention=30 * 86400)  # fmt: skip
        series.add_points(ts, rng.normal(50.0, 10.0, ts.size))
    return block


def _stored(block: RedisMemory) -> dict[tuple[str, str], Any]:
    """Every series' buckets per resolution (exact bytes) and its dirty chunks left."""
    link = RedisLink.open(block.memory, namespace="analytics")
    out: dict[tuple[str, str], Any] = {}
    for name in TimeSeries.names(link):
        series = TimeSeries.open(link, name)
        for level in series.config.levels:
            out[name, level.label] = series.states(level.interval).tobytes()
        out[name, "dirty"] = link.run("SCARD", series.base + "d")
    return out


def _totals(*results: dict[str, Any]) -> tuple[int, int, int]:
    """Chunks, points and buckets reported over runs (their ``total`` rows added)."""
    rows = [r["partitions"][-1] for r in results]
    chunks, points, buckets = (sum(row[k] for row in rows) for k in ("chunks", "points", "buckets"))
    return chunks, points, buckets


@pytest.fixture
def reference(redis_server: Any, unique: str) -> dict[str, Any]:
    """The same series downsampled by one run of one partition: what every test must get."""
    block = _series_block(redis_server, f"ref{unique}")
    result = downsample_analytics(block, CONFIG)
    assert [s["series"] for s in result["series"]] == sorted(SERIES) and not result["failed"]
    assert all(v == 0 for (_, what), v in _stored(block).items() if what == "dirty")
    return {"stored": _stored(block), "totals": _totals(result), "result": result}


def _check_partition_rows(result: dict[str, Any], n: int) -> None:
    rows = result["partitions"]
    assert [r["partition"] for r in rows] == [f"{i + 1}/{n}" for i in range(n)] + ["total"]
    for key in ("series", "chunks", "points", "buckets"):
        assert sum(r[key] for r in rows[:-1]) == rows[-1][key]
    assert rows[-1]["series"] == len(result["series"]) == len(SERIES)


def test_downsample_one_partition_keeps_the_report_and_artifact(
    redis_server: Any, unique: str, reference: dict[str, Any]
) -> None:
    result = reference["result"]
    assert [r["partition"] for r in result["partitions"]] == ["1/1", "total"]
    assert result["points"] == sum(s["points"] for s in result["series"]) > 0
    body = _artifact_body("downsample-memory")
    assert body.startswith("| series | chunks | points | buckets |") and "total" not in body


@pytest.mark.parametrize("runner", ["default", "dask"])
def test_downsample_fans_out_over_series_like_one_partition(
    redis_server: Any, unique: str, runner: str, reference: dict[str, Any]
) -> None:
    block = _series_block(redis_server, f"fan{unique}")
    flow = downsample_analytics
    if runner == "dask":
        flow = flow.with_options(task_runner=DaskTaskRunner(cluster_kwargs=DASK))
    result = flow(block, CONFIG, partitions=3)
    _check_partition_rows(result, 3)
    assert sum(r["series"] > 0 for r in result["partitions"][:-1]) == 3
    assert _stored(block) == reference["stored"]
    assert _totals(result) == reference["totals"]
    body = _artifact_body("downsample-memory")
    assert body.startswith("| partition | series | chunks | points | buckets | seconds |")
    again = flow(block, CONFIG, partitions=3)  # nothing new: nothing written, nothing counted
    assert _totals(again) == (0, 0, 0)


def test_two_downsample_runs_at_once_count_each_chunk_once(
    redis_server: Any, unique: str, reference: dict[str, Any], monkeypatch: Any
) -> None:
    """Run B starts (a whole other run) after run A read its first snapshot, before A writes."""
    from prefect_memory.analytics import downsample as engine

    block = _series_block(redis_server, f"two{unique}")
    real_read = engine._read
    other: dict[str, Any] = {}

    def read_then_other_run(series: TimeSeries, ids: list[int]) -> Any:
        snapshot = real_read(series, ids)
        if not other:
            other["report"] = "running"
            other["report"] = downsample_all(CONFIG, connection=RedisLink.open(
                redis_server.url, namespace="analytics", key_prefix=f"two{unique}"))  # fmt: skip
        return snapshot

    monkeypatch.setattr(engine, "_read", read_then_other_run)
    result = downsample_analytics(block, CONFIG, partitions=2)
    b = other["report"]
    skipped = sum(s["skipped_chunks"] for s in result["series"])
    assert skipped > 0  # A lost the race for the chunks of its first snapshot...
    assert sum(r.chunks for r in b.series) > 0  # ...which B wrote and counted
    assert (result["partitions"][-1]["chunks"] + b.chunks, result["points"] + b.points,
            result["partitions"][-1]["buckets"] + b.buckets) == reference["totals"]  # fmt: skip
    assert _stored(block) == reference["stored"]


def test_two_overlapping_downsample_runs_on_dask_worker_processes(
    redis_server: Any, unique: str, reference: dict[str, Any]
) -> None:
    from distributed import Client, LocalCluster

    block = _series_block(redis_server, f"dsk{unique}")
    results: list[Any] = [None, None]
    with LocalCluster(**DASK) as cluster, Client(cluster):
        flow = downsample_analytics.with_options(
            task_runner=DaskTaskRunner(address=cluster.scheduler_address)
        )

        def run(i: int) -> None:
            results[i] = flow(block, CONFIG, partitions=2 + i)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    _check_partition_rows(results[0], 2)
    _check_partition_rows(results[1], 3)
    assert _stored(block) == reference["stored"]
    assert (
        tuple(map(sum, zip(*(_totals(r) for r in results), strict=True))) == (reference["totals"])
    )
    skipped = sum(s["skipped_chunks"] for r in results for s in r["series"])
    print(f"overlapping runs: chunks {[_totals(r)[0] for r in results]}, skipped {skipped}")


def test_a_retried_downsample_partition_counts_each_chunk_once(
    redis_server: Any, unique: str, reference: dict[str, Any], monkeypatch: Any
) -> None:
    """A partition's first attempt dies after writing some chunks; Prefect runs it again."""
    from prefect_memory.analytics import downsample as engine

    block = _series_block(redis_server, f"rty{unique}")
    real, died = engine._aggregate, {"chunks": 0, "points": 0, "attempts": 0}
    doomed = next(Partition(i, 4) for i in range(4) if Partition(i, 4).holds("mem"))

    def die_after_one_batch(series: TimeSeries, snapshot: Any, report: Any, scratch: Any) -> None:
        chunks, points = report.chunks, report.points
        real(series, snapshot, report, scratch)
        if died["attempts"] or not doomed.holds(series.name):
            return
        # what the first attempt of the doomed partition wrote (its report dies with it)
        died["chunks"] += report.chunks - chunks
        died["points"] += report.points - points
        if series.name == "mem":
            died["attempts"] = 1
            raise RuntimeError("worker killed")  # not a store error: the task fails, retried

    monkeypatch.setattr(engine, "BATCH_CHUNKS", 4)  # several batches a series
    monkeypatch.setattr(engine, "_aggregate", die_after_one_batch)
    result = downsample_analytics(block, CONFIG, partitions=4)
    assert died["attempts"] == 1 and died["chunks"] >= 4  # mem's first batch written, killed
    assert not result["failed"]
    _check_partition_rows(result, 4)
    assert _stored(block) == reference["stored"]
    chunks, points, _ = _totals(result)
    ref_chunks, ref_points, _ = reference["totals"]
    # the killed attempt's report died with it: the retry counts only what was left
    assert (chunks + died["chunks"], points + died["points"]) == (ref_chunks, ref_points)

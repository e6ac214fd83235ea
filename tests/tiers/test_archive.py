"""The Parquet archive (cold tier): layout, lookups, tombstones, compaction, queries, tiers.

Every test runs on a local folder and on the real S3 server (SeaweedFS).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import prefect_memory as pm
from prefect_memory.keys import ns_token
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.parquet import ParquetArchiveBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.tiers import Tier, TieredMemory

DAY = 86400.0
T0 = dt.datetime(2024, 5, 6, 12, tzinfo=dt.timezone.utc).timestamp()
NS = "reports"
Open = Callable[..., ParquetArchiveBackend]


@pytest.fixture(params=["local", "s3"])
def open_archive(request: pytest.FixtureRequest, tmp_path: Path) -> Open:
    """``open_archive(**options)``: a new backend on the same store each call."""
    if request.param == "local":
        url, options = f"parquet:///{tmp_path}/archive", {}
    else:
        server = request.getfixturevalue("s3_server")
        server.make_bucket("pm-archive")
        url = f"parquet::s3://pm-archive/{uuid.uuid4().hex[:10]}"
        options = {"storage_options": server.storage_options}
    return lambda **kw: ParquetArchiveBackend(url, **{**options, **kw})


def rec(value: bytes, at: float = T0, **kw: Any) -> Record:
    return Record(value, at, at, at, **kw)


def data_files(archive: ParquetArchiveBackend, ns: str = NS) -> list[str]:
    """Data files of a namespace, relative to its folder (read from the store itself)."""
    base = archive.ns_root(ns) + "/"
    found = archive.fs.find(base.rstrip("/"))
    return sorted(p[len(base) :] for p in found if p.endswith(".parquet"))


def raw_rows(archive: ParquetArchiveBackend, ns: str = NS) -> Counter[str]:
    """How many rows each key has over every data file (superseded and tombstones included)."""
    return Counter(archive.dataset(ns).to_table(columns=["key"]).column("key").to_pylist())


def test_partition_layout_by_date(open_archive: Open) -> None:
    archive = open_archive()
    for day in range(3):
        batch = {f"k{day}:{i}": rec(b"x" * 200) for i in range(50)}
        archive.put_many(NS, batch, now=T0 + day * DAY)
    files = data_files(archive)
    assert [f.split("/")[0] for f in files] == [
        "date=2024-05-06",
        "date=2024-05-07",
        "date=2024-05-08",
    ]  # one file per batch, in the partition of its archive date
    assert all(f.split("/")[1].startswith("part-") for f in files)
    assert archive.ns_root(NS).endswith("/" + ns_token(NS))
    with archive.fs.open(f"{archive.ns_root(NS)}/{files[1]}", "rb") as fh:
        table = pq.read_table(fh)
    assert {"key", "namespace", "value", "created_at", "last_access", "access_count",
            "expires_at", "tags", "archived_at", "version"} <= set(table.column_names)  # fmt: skip
    assert table.column("key").to_pylist() == sorted(f"k1:{i}" for i in range(50))
    assert set(table.column("namespace").to_pylist()) == {NS}
    dataset = archive.dataset(NS).to_table()
    assert dataset.num_rows == 150 and set(dataset.column("date").to_pylist()) == {
        "2024-05-06", "2024-05-07", "2024-05-08"}  # fmt: skip


def test_readable_by_key_after_archive(open_archive: Open) -> None:
    archive = open_archive(row_group_bytes=16 * 1024)
    data = {f"item:{i:05d}": f"value-{i}".encode() * 20 for i in range(3000)}
    for start in range(0, 3000, 1000):
        keys = list(data)[start : start + 1000]
        archive.put_many(NS, {k: rec(data[k], tags=("t",), version=3) for k in keys}, now=T0)
    cold = open_archive()  # a new process: index rebuilt from the files
    assert cold.exists_many(NS, ["item:00007", "missing"], now=T0) == {"item:00007"}
    got = cold.get_many(NS, list(data), now=T0)
    assert {k: r.value for k, r in got.items()} == data
    assert got["item:00042"].version == 3 and got["item:00042"].tags == ("t",)
    assert got["item:00042"].created_at == T0
    assert len(list(cold.scan(NS, "item:0001*", now=T0))) == 10
    assert len(cold.tagged(NS, ["t"], now=T0)) == 3000
    files = data_files(cold)
    assert len(files) == 3
    meta = pq.ParquetFile(cold.fs.open(f"{cold.ns_root(NS)}/{files[0]}", "rb")).metadata
    assert meta.num_row_groups > 5  # lookups read one small row group, not the file

    reads: list[int] = []
    inner = cold.fetch

    def counting(paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
        reads.extend(b - a for a, b in zip(starts, ends, strict=True))
        return inner(paths, starts, ends)

    cold.fetch = counting  # type: ignore[method-assign]
    assert cold.get_many(NS, ["item:02500"], now=T0)["item:02500"].value == data["item:02500"]
    assert len(reads) == 1 and reads[0] < 32 * 1024  # one ranged read: one value chunk


def test_overwrite_keeps_metadata_across_writers(open_archive: Open) -> None:
    archive, other = open_archive(), open_archive()
    archive.put_many(NS, {"k": rec(b"v1")}, now=T0)
    archive.get_many(NS, ["k"], now=T0 + 5, touch=True)
    other.put_many(NS, {"k": rec(b"v2", T0 + 10)}, now=T0 + 10)  # another process overwrites
    got = open_archive().get_many(NS, ["k"], now=T0 + 10)["k"]
    assert (got.value, got.version, got.created_at, got.access_count) == (b"v2", 2, T0, 1)
    assert archive.put_absent_many(NS, {"k": rec(b"x"), "n": rec(b"n")}, now=T0 + 11) == {"n"}
    assert other.get_many(NS, ["k", "n"], now=T0 + 11)["k"].value == b"v2"
    archive.put_many(NS, {"k": rec(b"v3", T0 + 12)}, now=T0 + 12)
    assert other.get_many(NS, ["k"], now=T0 + 12)["k"].version == 3


def test_tombstones_and_compaction(open_archive: Open) -> None:
    archive = open_archive()
    for day in range(4):  # four small files a day
        for part in range(4):
            batch = {f"k{day}:{part}:{i}": rec(f"{day}{part}{i}".encode()) for i in range(25)}
            archive.put_many(NS, batch, now=T0 + day * DAY + part)
    live = {f"k{d}:{p}:{i}": f"{d}{p}{i}".encode() for d in range(4) for p in range(4)
            for i in range(25)}  # fmt: skip
    now = T0 + 4 * DAY
    deleted = [k for k in live if k.endswith(":3")]
    assert archive.delete_many(NS, deleted, now=now) == len(deleted)
    rewritten = {k: rec(b"new", now) for k in live if k.endswith(":4")}
    archive.put_many(NS, rewritten, now=now)
    archive.put_many(NS, {"short": rec(b"s", now, ttl=5.0, expires_at=now + 5)}, now=now)
    for key in deleted:
        del live[key]
    live.update({k: b"new" for k in rewritten})
    before = len(data_files(archive))
    assert before == 16 + 3

    report = archive.compact(NS, now=now + 10)  # "short" has expired
    assert len(data_files(archive)) == report.files_after == 5 < before  # one per partition
    assert report.rows_read > report.rows_written == len(live)
    assert report.expired_removed == 1 and report.tombstones_kept == 0
    for fresh in (archive, open_archive()):
        got = fresh.get_many(NS, [*live, *deleted, "short"], now=now + 10)
        assert {k: r.value for k, r in got.items()} == live  # nothing lost, deleted stays deleted
        assert got["k0:0:4"].version == 2 and got["k0:0:4"].created_at == T0
    assert set(raw_rows(archive).values()) == {1} and set(raw_rows(archive)) == set(live)
    assert archive.compact(NS, now=now + 10).partitions == []  # nothing left to do


def test_tombstone_kept_while_an_older_row_lives_elsewhere(open_archive: Open) -> None:
    archive = open_archive()
    big = {f"big:{i}": rec(os.urandom(1024)) for i in range(100)}  # a large day-1 file
    archive.put_many(NS, {"a": rec(b"1"), **big}, now=T0)
    archive.delete_many(NS, ["a"], now=T0 + DAY)
    archive.put_many(NS, {"c": rec(b"3")}, now=T0 + DAY)
    # only the two small day-2 files are merged; the tombstone must keep hiding day 1's "a"
    only_day2 = archive.compact(NS, now=T0 + DAY, small_bytes=50_000, dead_fraction=1.0)
    assert only_day2.partitions == ["2024-05-07"] and only_day2.tombstones_kept == 1
    assert len(data_files(archive)) == 2
    assert archive.exists_many(NS, ["a", "big:1", "c"], now=T0 + DAY) == {"big:1", "c"}
    assert raw_rows(archive)["a"] == 2
    archive.compact(NS, now=T0 + DAY)  # day 1 drops "a"; then its tombstone can go too
    assert "a" not in raw_rows(archive) and raw_rows(archive)["c"] == 1
    assert open_archive().exists_many(NS, ["a", "big:1", "c"], now=T0 + DAY) == {"big:1", "c"}


def test_compaction_crash_between_write_and_delete(open_archive: Open) -> None:
    archive = open_archive()
    expected: dict[str, bytes] = {}
    for part in range(5):
        batch = {f"k{part}:{i}": f"{part}:{i}".encode() for i in range(40)}
        archive.put_many(NS, {k: rec(v) for k, v in batch.items()}, now=T0 + part)
        expected.update(batch)
    archive.put_many(NS, {"k0:0": rec(b"newer", T0 + 9)}, now=T0 + 9)
    expected["k0:0"] = b"newer"
    original = archive.remove_files

    def crash(paths: Any) -> None:
        raise RuntimeError("injected crash after writing the compacted file")

    archive.remove_files = crash  # type: ignore[method-assign]
    with pytest.raises(pm.PrefectMemoryError, match="injected crash"):
        archive.compact(NS, now=T0 + 10)
    assert len(data_files(archive)) == 7  # the new file exists, the old ones too
    for fresh in (archive, open_archive()):  # readable, same values, right after the crash
        got = fresh.get_many(NS, list(expected), now=T0 + 10)
        assert {k: r.value for k, r in got.items()} == expected
    archive.remove_files = original  # type: ignore[method-assign]
    archive.compact(NS, now=T0 + 10)  # re-run
    assert len(data_files(archive)) == 1
    assert raw_rows(archive) == Counter(dict.fromkeys(expected, 1))  # each exactly once
    got = open_archive().get_many(NS, list(expected), now=T0 + 10)
    assert {k: r.value for k, r in got.items()} == expected


def test_query_by_date_range_prunes_partitions(open_archive: Open) -> None:
    archive = open_archive()
    for day in range(3):
        archive.put_many(NS, {f"d{day}:{i}": rec(f"{day}".encode()) for i in range(10)},
                         now=T0 + day * DAY)  # fmt: skip
    archive.put_many(NS, {"d0:0": rec(b"moved on")}, now=T0 + 2 * DAY + 60)  # now on day 3
    fetched: list[str] = []
    inner = archive.fetch
    archive.fetch = lambda p, s, e: fetched.extend(p) or inner(p, s, e)  # type: ignore[method-assign]

    frame = archive.query(NS, dt.date(2024, 5, 6), "2024-05-06", now=T0 + 3 * DAY)
    assert sorted(frame["key"]) == [f"d0:{i}" for i in range(1, 10)]  # d0:0 lives on day 3
    assert set(frame["value"]) == {b"0"} and set(frame["date"]) == {"2024-05-06"}
    assert str(frame["archived_at"].dt.tz) == "UTC" and frame["version"].tolist() == [1] * 9
    assert {p.split("/date=")[1][:10] for p in fetched} == {"2024-05-06"}  # pruned

    history = archive.query(NS, start=T0, end=T0 + 1, latest_only=False, columns=["key"])
    assert len(history) == 10  # d0:0's first version included
    later = archive.query(NS, dt.datetime(2024, 5, 7, tzinfo=dt.timezone.utc), None,
                          columns=["key", "value", "date"], now=T0 + 3 * DAY)  # fmt: skip
    assert len(later) == 21 and later.iloc[-1].tolist() == ["d0:0", b"moved on", "2024-05-08"]
    assert archive.query(NS, "2030-01-01", columns=["key"]).empty
    with pytest.raises(pm.ConfigError, match="unknown columns"):
        archive.query(NS, columns=["nope"])


def test_access_statistics_sidecar(open_archive: Open) -> None:
    archive = open_archive(stats_fold_at=3)
    archive.put_many(NS, {"k": rec(b"v"), "s": rec(b"s", ttl=10.0, sliding=True,
                                                    expires_at=T0 + 10)}, now=T0)  # fmt: skip
    for i in range(1, 6):
        archive.get_many(NS, ["k", "s"], now=T0 + 8 * i, touch=True)  # "s" slides
    stats = [p for p in archive.fs.find(archive.ns_root(NS)) if "/_stats/" in p]
    assert 1 <= len(stats) <= 3  # folded into one object past stats_fold_at
    assert len(data_files(archive)) == 1  # reads never rewrite data files
    got = open_archive().get_many(NS, ["k", "s"], now=T0 + 45)
    assert got["k"].access_count == 5 and got["k"].last_access == T0 + 40
    assert got["s"].expires_at == T0 + 50
    archive.put_many(NS, {"k2": rec(b"v")}, now=T0 + 45)
    archive.compact(NS, now=T0 + 45)  # folds the statistics into the rows
    assert [p for p in archive.fs.find(archive.ns_root(NS)) if "/_stats/" in p] == []
    got = open_archive().get_many(NS, ["k", "s"], now=T0 + 45)
    assert got["k"].access_count == 5 and got["s"].expires_at == T0 + 50


def test_purge_expired_and_other_writers(open_archive: Open) -> None:
    writer, reader = open_archive(), open_archive()
    writer.put_many(NS, {f"t{i}": rec(b"x", ttl=5.0, expires_at=T0 + 5) for i in range(5)}, now=T0)
    writer.put_many(NS, {"keep": rec(b"k")}, now=T0)
    assert reader.exists_many(NS, ["t0", "keep"], now=T0) == {"t0", "keep"}
    assert reader.purge_expired(NS, now=T0 + 6) == 5
    assert writer.get_many(NS, ["t0", "keep"], now=T0 + 6)["keep"].value == b"k"
    assert raw_rows(writer) == {"keep": 1}  # the other process noticed the compaction


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def where(mem: TieredMemory) -> dict[str, list[str]]:
    return {t.name: sorted(t.backend.scan(mem.namespace, None, now=mem.clock())) for t in mem.tiers}


def test_migrate_sqlite_warm_into_archive_then_promote(open_archive: Open, tmp_path: Path) -> None:
    clock = Clock()

    def tiered(cold: ParquetArchiveBackend) -> TieredMemory:
        warm = Tier("warm", SqliteBackend(str(tmp_path / "warm.db")))
        rules = [{"from": "warm", "to": "cold", "condition": "lastAccess > 1d"}]
        return TieredMemory([warm, Tier("cold", cold)], rules, namespace=NS, clock=clock)

    mem = tiered(open_archive())
    data = {f"order:{i:04d}": {"id": i, "lines": list(range(i % 7))} for i in range(600)}
    mem.set_many(data, tags=["orders"])
    for _ in range(3):
        mem.get("order:0001")
    clock.now += 2 * DAY
    mem.set("order:fresh", "recent")
    report = mem.migrate(batch_size=250)
    assert report.moved == {"warm -> cold: lastAccess > 1d": 600}
    assert where(mem) == {"warm": ["order:fresh"], "cold": sorted(data)}
    files = data_files(mem.tiers[1].backend)
    assert len(files) == 3  # one file per migration batch, in the partition of the move
    assert all(f.startswith("date=2024-05-08/part-") for f in files)
    assert mem.migrate().total_moved == 0  # idempotent

    again = tiered(open_archive())  # another process: the archive's index from the files
    info = again.info("order:0001")
    assert (info.tier, info.access_count, info.tags) == ("cold", 3, ("orders",))
    assert again.get("order:0001") == data["order:0001"]  # promoted on read
    assert again.info("order:0001").tier == "warm"
    assert again.info("order:0001").access_count == 4
    assert again.get_many(list(data)) == data  # every entry, each promoted once
    assert where(again) == {"warm": sorted([*data, "order:fresh"]), "cold": []}
    assert again.invalidate_tags("orders") == 600


def test_migration_crash_then_rerun_keeps_every_entry_once(
    open_archive: Open, tmp_path: Path
) -> None:
    clock = Clock()
    warm = SqliteBackend(str(tmp_path / "warm.db"))
    cold = open_archive()
    rules = [{"from": "warm", "to": "cold", "condition": "age > 1h"}]
    mem = TieredMemory([Tier("warm", warm), Tier("cold", cold)], rules, namespace=NS, clock=clock)
    data = {f"k{i:03d}": i for i in range(120)}
    mem.set_many(data)
    clock.now += DAY
    original, calls = warm.delete_if_unchanged, []

    def crash_on_second_batch(ns: str, expected: Any, *, now: float) -> set[str]:
        calls.append(1)
        if len(calls) == 2:  # the second batch is in the archive, not yet deleted from SQLite
            raise RuntimeError("injected crash")
        return original(ns, expected, now=now)

    warm.delete_if_unchanged = crash_on_second_batch  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="injected crash"):
        mem.migrate(batch_size=50)
    assert where(mem)["cold"] == sorted(data)[:100]  # batch 2 is in both tiers now
    warm.delete_if_unchanged = original  # type: ignore[method-assign]
    mem.migrate(batch_size=50)  # the re-run: batch 2 is already archived, only deleted
    assert where(mem) == {"warm": [], "cold": sorted(data)}  # each entry exactly once
    assert raw_rows(cold) == Counter(dict.fromkeys(data, 1))  # and stored once
    assert mem.get_many(list(data)) == data


def test_open_memory_takes_the_parquet_codec_as_parquet_compression(tmp_path: Path) -> None:
    url = f"parquet:///{tmp_path}/zstd"
    mem = pm.open_memory(url, namespace=NS, parquet_compression="zstd", compression=True)
    mem.set("k", "x" * 10_000)
    assert mem.backend.compression == "zstd" and mem.codec.compression is True
    (path,) = data_files(mem.backend)
    meta = pq.ParquetFile(f"{tmp_path}/zstd/{ns_token(NS)}/{path}").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert mem.get("k") == "x" * 10_000
    with pytest.raises(pm.ConfigError, match="parquet_compression"):
        pm.open_memory(url, compression="zstd")
    with pytest.raises(pm.ConfigError, match="not both"):
        ParquetArchiveBackend.from_url(url, parquet_compression="zstd", compression="gzip")


def test_old_import_paths_still_work() -> None:
    """The archive moved to ``prefect_memory.plugins.parquet``; the old modules re-export it."""
    import prefect_memory.plugins.parquet.format as new_format
    from prefect_memory.tiers import archive, archive_format

    assert archive.ParquetArchiveBackend is ParquetArchiveBackend
    assert archive_format.write_rows is new_format.write_rows

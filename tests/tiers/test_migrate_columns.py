"""Migration on columns (issue 19): batches read as columns, rules evaluated a column at a
time, SQLite's batch primitives, the read-ahead thread, and the memory a run holds.

Real stores only (SQLite files, the in-process and JSON stores); no timing is asserted
(speed lives in benchmarks/bench_migrate.py).
"""

from __future__ import annotations

import gc
import random
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from prefect_memory.plugins.base import Backend, EntryColumns, Record
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.plugins.jsonfile import JsonFileBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.tiers import migration
from prefect_memory.tiers.migration import migrate
from prefect_memory.tiers.rules import parse_rule
from prefect_memory.tiers.tiered import MigrationRule, Tier, TieredBackend

T0 = 1_700_000_000.0
NS = "cols"
RULES = [
    "accessCount < 3",
    "age > 1h AND NOT tag == 'pin'",
    "lastAccess >= 30m OR size > 100B",
    "ttlLeft < 10m",
    "ttlLeft > 1h OR tag != 'a'",
    "idle <= 10m AND (accessCount == 2 OR accessCount != 4)",
    "NOT (size <= 40B OR tag == 'b')",
]


def random_records(count: int, seed: int = 11) -> dict[str, Record]:
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        created = T0 - rng.uniform(0, 7200)
        expires = rng.choice([None, T0 + rng.uniform(1, 7200)])
        tags = tuple(rng.sample(["a", "b", "pin"], rng.randrange(3)))
        out[f"k{i:04d}"] = Record(
            b"x" * rng.randrange(0, 200), created, created + 1, T0 - rng.uniform(0, 3600),
            rng.randrange(6), expires, None if expires is None else 60.0, False, tags,
            rng.randrange(1, 4),
        )  # fmt: skip
    return out


def test_rule_on_columns_agrees_with_rule_on_records() -> None:
    records = random_records(400)
    columns = EntryColumns.from_records(records)
    now = T0 + 5.0
    for text in RULES:
        rule = parse_rule(text)
        expected = [rule.matches(r, now) for r in records.values()]
        assert rule.select(columns, now) == expected, text
        assert 0 < sum(expected) < len(expected), text  # the rule tells entries apart


def test_columns_round_trip_records() -> None:
    records = random_records(50)
    columns = EntryColumns.from_records(records, value_bytes=100)
    rows = list(range(len(columns)))
    again = columns.records(rows)
    for key, record in records.items():
        row = columns.keys.index(key)
        if len(record.value) <= 100:
            assert again[key] == record == columns.record(row)
        else:  # not carried: a metadata record with the stored size
            assert again[key].value == b"" and again[key].size == len(record.value)
            assert again[key].token == record.token
    part = columns.take([3, 1])
    assert part.keys == [columns.keys[3], columns.keys[1]] and len(part) == 2


def _stores(tmp_path: Path) -> dict[str, Backend]:
    return {
        "sqlite": SqliteBackend(str(tmp_path / "s.db")),
        "memory": InProcessBackend(),
        "json": JsonFileBackend(str(tmp_path / "j.json")),
    }


@pytest.mark.parametrize("kind", ["sqlite", "memory", "json"])
def test_scan_columns_reads_live_entries_in_batches(kind: str, tmp_path: Path) -> None:
    store = _stores(tmp_path)[kind]
    records = random_records(230)
    store.put_many(NS, records, now=T0)
    now = T0 + 600.0
    live = {k: r for k, r in records.items() if not r.expired(now)}
    batches = list(store.scan_columns(NS, now=now, batch_size=50, value_bytes=120))
    assert all(len(b) <= 50 for b in batches) and len(batches) >= len(live) // 50
    seen = [k for b in batches for k in b.keys]
    assert sorted(seen) == sorted(live)  # each live entry once, none expired
    full = store.get_many(NS, list(live), now=now)
    for batch in batches:
        for row, key in enumerate(batch.keys):
            record, stored = batch.record(row), full[key]
            assert (record.token, record.tags, record.access_count, record.size) == (
                stored.token,
                stored.tags,
                stored.access_count,
                stored.size,
            )
            if batch.values[row] is not None:  # carried: the whole record, as stored
                assert len(stored.value) <= 120 and record == stored
            elif store.capabilities.column_scans:  # SQLite: every small value comes along
                assert len(stored.value) > 120
    store.close()


def test_sqlite_declares_column_scans() -> None:
    assert SqliteBackend.capabilities.column_scans
    assert not InProcessBackend.capabilities.column_scans


def test_sqlite_scan_columns_refuses_hostile_tags(tmp_path: Path) -> None:
    from prefect_memory.errors import SerializationError

    store = SqliteBackend(str(tmp_path / "h.db"))
    store.put_many(NS, {"ok": Record(b"v", T0, T0, T0)}, now=T0)
    with store._tx(write=True) as conn:  # another writer of the file
        conn.execute("UPDATE pm_entries SET tags = '{not json' WHERE key = 'ok'")
    with pytest.raises(SerializationError, match="'ok'"):
        list(store.scan_columns(NS, now=T0, value_bytes=10))
    store.close()


def _tokens(records: dict[str, Record]) -> dict[str, tuple[int, float]]:
    return {k: r.token for k, r in records.items()}


def test_sqlite_delete_if_unchanged_by_range_and_by_key(tmp_path: Path) -> None:
    store = SqliteBackend(str(tmp_path / "d.db"))
    records = {
        f"k{i}": Record(b"v", T0, T0 + i, T0, tags=("t",) if i % 2 else ()) for i in range(8)
    }
    store.put_many(NS, records, now=T0)
    # the whole range k0..k3, every write as expected: deleted (as one range)
    first = {k: records[k] for k in ("k0", "k1", "k2", "k3")}
    assert store.delete_if_unchanged(NS, _tokens(first), now=T0) == set(first)
    # k5 changed meanwhile, k6 not asked for (inside the range k4..k7): both stay
    store.put_many(NS, {"k5": Record(b"new", T0, T0 + 50, T0)}, now=T0)
    asked = {k: records[k].token for k in ("k4", "k5", "k7")}
    assert store.delete_if_unchanged(NS, asked, now=T0) == {"k4", "k7"}
    assert sorted(store.scan(NS, None, now=T0)) == ["k5", "k6"]
    assert store.tagged(NS, ["t"], now=T0) == set()  # k5 was rewritten untagged, k1/3/7 gone
    store.put_many(NS, {"k9": Record(b"v", T0, T0, T0, tags=("t",))}, now=T0)
    assert store.delete_if_unchanged(NS, {"k9": (9, T0), "nope": (1, T0)}, now=T0) == set()
    assert store.tagged(NS, ["t"], now=T0) == {"k9"}
    store.close()


def test_sqlite_put_absent_keeps_the_token_over_an_expired_row(tmp_path: Path) -> None:
    store = SqliteBackend(str(tmp_path / "p.db"))
    old = Record(b"old", T0, T0, T0, 3, T0 + 1, 1.0, False, ("gone",), 7)
    store.put_many(NS, {"k": old, "live": Record(b"l", T0, T0, T0)}, now=T0)
    copy = Record(b"moved", T0 - 9, T0 + 5, T0 + 4, 2, None, None, False, ("kept",), 4)
    written = store.put_absent_many(NS, {"k": copy, "live": copy}, now=T0 + 10)
    assert written == {"k"}  # "live" has a live entry: left alone
    got = store.get_many(NS, ["k", "live"], now=T0 + 10)
    assert got["k"] == copy  # version 4, access count 2: the record as given
    assert got["live"].value == b"l"
    assert store.tagged(NS, ["gone"], now=T0 + 10) == set()
    assert store.tagged(NS, ["kept"], now=T0 + 10) == {"k"}
    store.close()


def test_sqlite_batches_past_the_statement_variable_limit(tmp_path: Path) -> None:
    store = SqliteBackend(str(tmp_path / "big.db"))
    count = 40_000  # more keys than one IN (...) list takes on common SQLite builds
    records = {f"k{i:05d}": Record(b"v", T0, T0, T0) for i in range(count)}
    store.put_many(NS, records, now=T0)
    keys = [*records, "k00001"]  # a repeated key, counted once
    assert len(store.get_many(NS, keys, now=T0, touch=True)) == count
    assert store.get_many(NS, ["k00001"], now=T0)["k00001"].access_count == 1
    assert len(store.meta_many(NS, keys, now=T0)) == count
    odd = {k: r.token for i, (k, r) in enumerate(records.items()) if i % 2}
    assert store.delete_if_unchanged(NS, odd, now=T0) == set(odd)  # not a range: by key
    assert len(list(store.scan(NS, None, now=T0))) == count - len(odd)
    store.close()


def tiered(hot: Backend, warm: Backend, condition: str) -> TieredBackend:
    return TieredBackend([Tier("hot", hot), Tier("warm", warm)],
                         [MigrationRule.parse("hot", "warm", condition)])  # fmt: skip


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("prefect-memory-migrate")]


def test_read_ahead_by_the_store_declaration(tmp_path: Path) -> None:
    """By default a migration reads ahead from stores that fetch from a server, not from
    local ones (``capabilities.local``: SQLite, JSON, in-process, local folders)."""
    assert migration.READ_AHEAD is None
    local = SqliteBackend(str(tmp_path / "l.db"))
    assert local.capabilities.local and JsonFileBackend(str(tmp_path / "j.json")).capabilities.local
    assert InProcessBackend().capabilities.local
    seen: list[bool] = []
    real = migration._read_ahead

    def spy(batches: Any, ahead: bool) -> Any:
        seen.append(ahead)
        return real(batches, ahead)

    class Remote(InProcessBackend):  # a store that declares its reads go to a server
        capabilities = replace(InProcessBackend.capabilities, local=False)

    remote, warm = Remote(), InProcessBackend()
    remote.put_many(NS, {"k": Record(b"v", T0, T0, T0)}, now=T0)
    local.put_many(NS, {"k": Record(b"v", T0, T0, T0)}, now=T0)
    migration._read_ahead = spy  # type: ignore[assignment]
    try:
        for source in (local, remote):
            assert migrate(tiered(source, warm, "age > 1s"), NS, now=T0 + 10).total_moved == 1
            warm.delete_many(NS, ["k"], now=T0 + 10)
    finally:
        migration._read_ahead = real  # type: ignore[assignment]
    assert seen == [False, True]
    local.close()


@pytest.mark.parametrize("ahead", [True, False])
def test_migration_moves_the_same_with_and_without_read_ahead(
    ahead: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migration, "READ_AHEAD", ahead)
    hot, warm = SqliteBackend(str(tmp_path / "h.db")), SqliteBackend(str(tmp_path / "w.db"))
    records = random_records(700)
    hot.put_many(NS, records, now=T0)
    now = T0 + 5.0
    rule = "accessCount < 3 OR size > 150B"
    live = {k: r for k, r in records.items() if not r.expired(now)}
    moving = sorted(k for k, r in live.items() if parse_rule(rule).matches(r, now))
    # values up to 100 bytes come with their batch, larger ones are loaded after
    report = migrate(tiered(hot, warm, rule), NS, now=now, batch_size=64, batch_bytes=6400)
    assert report.total_moved == len(moving) and report.scanned == len(live)
    assert report.bytes_moved == sum(len(live[k].value) for k in moving)
    assert sorted(warm.scan(NS, None, now=now)) == moving
    for key, got in warm.get_many(NS, moving, now=now).items():
        want = live[key]
        assert (got.value, got.tags, got.version, got.access_count, got.created_at) == (
            want.value,
            want.tags,
            want.version,
            want.access_count,
            want.created_at,
        )
    assert _readers() == []  # the reader thread ended with the run
    hot.close()
    warm.close()


@pytest.mark.parametrize("ahead", [True, None])
def test_failing_read_stops_the_run_and_its_reader(
    ahead: bool | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migration, "READ_AHEAD", ahead)  # None: SQLite is local, no reader
    hot, warm = SqliteBackend(str(tmp_path / "h.db")), SqliteBackend(str(tmp_path / "w.db"))
    hot.put_many(NS, {f"k{i:03d}": Record(b"v", T0, T0, T0) for i in range(300)}, now=T0)
    scan_columns = hot.scan_columns

    def failing(ns: str, **options: Any) -> Iterator[EntryColumns]:
        for count, batch in enumerate(scan_columns(ns, **options)):
            if count == 2:
                raise OSError("disk gone")
            yield batch

    hot.scan_columns = failing  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk gone"):
        migrate(tiered(hot, warm, "age > 1s"), NS, now=T0 + 10, batch_size=50)
    assert len(list(warm.scan(NS, None, now=T0 + 10))) == 100  # two batches moved whole
    assert len(list(hot.scan(NS, None, now=T0 + 10))) == 200
    assert _readers() == []

    class Stop(Exception):
        pass

    def stop(report: Any) -> None:
        raise Stop

    hot.scan_columns = scan_columns  # type: ignore[method-assign]
    with pytest.raises(Stop):
        migrate(tiered(hot, warm, "age > 1s"), NS, now=T0 + 10, batch_size=50, progress=stop)
    assert _readers() == []
    assert len(list(warm.scan(NS, None, now=T0 + 10))) == 150  # a stopped run lost nothing
    assert len(list(hot.scan(NS, None, now=T0 + 10))) == 150
    hot.close()
    warm.close()


def test_sqlite_closes_the_connection_of_an_ended_thread(tmp_path: Path) -> None:
    store = SqliteBackend(str(tmp_path / "c.db"))
    store.ping()
    for _ in range(5):  # short-lived threads, such as a migration's reader
        thread = threading.Thread(target=store.ping)
        thread.start()
        thread.join()
    thread = threading.Thread(target=store.ping)
    thread.start()
    thread.join()
    store.ping()
    assert len(store._connections) <= 2  # this thread's, the last one's (closed on the next)
    store.close()


def test_migration_holds_a_few_batches_not_the_tier(tmp_path: Path) -> None:
    """Values that come with their batch are held a batch or two at a time."""
    hot, warm = SqliteBackend(str(tmp_path / "h.db")), SqliteBackend(str(tmp_path / "w.db"))
    value = b"v" * 2000
    count = 6000  # 12 MB of values in all
    for start in range(0, count, 1000):
        batch = {f"k{i:05d}": Record(value, T0, T0, T0) for i in range(start, start + 1000)}
        hot.put_many(NS, batch, now=T0)
    del batch
    warm.ping()
    backend = tiered(hot, warm, "age > 1s")
    gc.collect()
    tracemalloc.start()
    try:
        start_mem = tracemalloc.get_traced_memory()[0]
        report = migrate(backend, NS, now=T0 + 10, batch_size=200)
        peak = tracemalloc.get_traced_memory()[1] - start_mem
    finally:
        tracemalloc.stop()
    assert report.total_moved == count
    batch_bytes = 200 * len(value)
    print(f"peak {peak / 2**20:.1f} MiB for batches of {batch_bytes / 2**20:.1f} MiB")
    assert peak < 8 * batch_bytes < count * len(value) // 2
    hot.close()
    warm.close()


def test_a_move_from_columns_writes_what_a_move_of_records_writes(tmp_path: Path) -> None:
    """The migration's column path (no source records) and :func:`move` place the same
    copies (the same entry, one float step later) and report the same outcome."""
    from prefect_memory.tiers.moves import move, move_columns, moved_copy

    records = random_records(300, seed=5)
    for i, record in enumerate(records.values()):  # sliding expiries and ttls too
        record.sliding = record.expires_at is not None and i % 2 == 0
    src = SqliteBackend(str(tmp_path / "src.db"))
    src.put_many(NS, records, now=T0)
    now = T0 + 1.0
    batch = next(src.scan_columns(NS, now=now, batch_size=1000, value_bytes=1 << 10))
    assert None not in batch.values
    rows = [i for i, key in enumerate(batch.keys) if int(key[1:]) % 3]  # not every row
    by_records, by_columns = InProcessBackend(), InProcessBackend()
    read = src.get_many(NS, [batch.keys[i] for i in rows], now=now, touch=False)
    want = move(SqliteBackend(":memory:"), by_records, NS, read, now=now)
    got = move_columns(src, by_columns, NS, batch, rows, now=now)
    assert got.moved == set(read) and want.written == got.written == set(read)
    placed = by_columns.get_many(NS, list(read), now=now, touch=False)
    expected = by_records.get_many(NS, list(read), now=now, touch=False)
    assert placed == expected
    for key, record in read.items():
        copy = moved_copy(record)
        assert (placed[key].updated_at, placed[key].value, placed[key].tags) == (
            copy.updated_at, copy.value, copy.tags,
        )  # fmt: skip
    left = set(src.scan(NS, None, now=now))
    assert left == set(batch.keys) - set(read)  # the others stay in the source
    with pytest.raises(ValueError, match="was not read"):
        meta = next(src.scan_columns(NS, now=now, batch_size=1000, value_bytes=0))
        move_columns(src, by_columns, NS, meta, [0], now=now)
    src.close()

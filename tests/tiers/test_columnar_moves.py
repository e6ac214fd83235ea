"""A migration's batch moves as columns end to end (issue 19, part 2): the copies go to the
target as columns (``put_absent_columns``: the archive builds its file from the lists),
the tombstones of a batch are found with one prefix scan (``Tombstones.near``), and the
result is the one the record path gives, whoever else wrote or deleted meanwhile.

Real stores only (SQLite files, a local Parquet archive, the in-process and JSON stores);
no timing is asserted (speed lives in benchmarks/bench_migrate.py).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from prefect_memory.plugins.base import Backend, EntryColumns, Record
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.plugins.jsonfile import JsonFileBackend
from prefect_memory.plugins.parquet import ParquetArchiveBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.tiers.moves import TOMBSTONE_NS, Tombstones, move_columns, moved_copy

T0 = 1_700_000_000.0
NS = "colmoves"

STORES: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda _p: InProcessBackend(),
    "json": lambda p: JsonFileBackend(str(p / "store.json")),
    "sqlite": lambda p: SqliteBackend(str(p / "store.db")),
    "parquet": lambda p: ParquetArchiveBackend("parquet:///" + str(p / "archive")),
}
KINDS = [*sorted(STORES), "parquet-s3"]


def open_store(kind: str, path: Path, request: pytest.FixtureRequest) -> Backend:
    """A store of ``kind`` (``parquet-s3``: an archive on the real SeaweedFS S3 server)."""
    if kind != "parquet-s3":
        return STORES[kind](path)
    server = request.getfixturevalue("s3_server")
    server.make_bucket("pm-columns")
    return ParquetArchiveBackend(f"parquet::s3://pm-columns/{uuid.uuid4().hex[:10]}",
                                 storage_options=server.storage_options)  # fmt: skip


def records(count: int, *, seed: int = 3, prefix: str = "k") -> dict[str, Record]:
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        expires = rng.choice([None, T0 + rng.uniform(10, 7200)])
        out[f"{prefix}{i:04d}"] = Record(
            bytes([1]) + rng.randbytes(rng.randrange(0, 120)), T0 - 50, T0 - 10 + i * 1e-3,
            T0 - 5, rng.randrange(6), expires, None if expires is None else 60.0,
            expires is not None and i % 2 == 0, tuple(rng.sample(["a", "b"], rng.randrange(3))),
            rng.randrange(1, 5),
        )  # fmt: skip
    return out


def _same(a: Record, b: Record) -> bool:
    fields = ("value", "created_at", "updated_at", "expires_at", "ttl", "sliding", "version")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and set(a.tags) == set(b.tags)


@pytest.mark.parametrize("kind", KINDS)
def test_put_absent_columns_writes_what_put_absent_many_writes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    by_records = open_store(kind, tmp_path / "a", request)
    by_columns = open_store(kind, tmp_path / "b", request)
    batch = records(150)
    taken = {k: Record(b"\x01old", T0, T0, T0) for k in list(batch)[::7]}  # present already
    for store in (by_records, by_columns):
        store.put_many(NS, taken, now=T0)
    shuffled = dict(random.Random(1).sample(list(batch.items()), len(batch)))  # any order
    want = by_records.put_absent_many(NS, shuffled, now=T0)
    got = by_columns.put_absent_columns(NS, EntryColumns.from_records(shuffled, 1 << 20), now=T0)
    assert got == want == set(batch) - set(taken)
    a = by_records.get_many(NS, list(batch), now=T0, touch=False)
    b = by_columns.get_many(NS, list(batch), now=T0, touch=False)
    assert a.keys() == b.keys() == set(batch)
    assert all(_same(a[k], b[k]) for k in batch)
    assert all(b[k].value == b"\x01old" for k in taken)  # never overwritten
    assert by_columns.put_absent_columns(NS, EntryColumns.from_records({}), now=T0) == set()


@pytest.mark.parametrize("kind", KINDS)
def test_put_absent_columns_refuses_a_batch_without_its_values(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = open_store(kind, tmp_path, request)
    meta = EntryColumns.from_records(records(3), value_bytes=0)  # no value read
    with pytest.raises(ValueError, match=r"k0000.*was not read"):
        store.put_absent_columns(NS, meta, now=T0)
    assert store.get_many(NS, meta.keys, now=T0, touch=False) == {}


def test_archive_columns_over_a_deleted_key_and_in_any_order(tmp_path: Path) -> None:
    """A key archived before (then deleted) takes the record path; the file is sorted."""
    archive = ParquetArchiveBackend("parquet:///" + str(tmp_path / "archive"))
    first = records(5)
    archive.put_many(NS, first, now=T0)
    assert archive.delete_many(NS, ["k0002"], now=T0 + 1) == 1
    again = {"k0004": first["k0004"], "k0002": first["k0002"], "z": first["k0000"]}
    written = archive.put_absent_columns(NS, EntryColumns.from_records(again, 1 << 20), now=T0 + 2)
    assert written == {"k0002", "z"}  # k0004 is there (live)
    fresh = ParquetArchiveBackend("parquet:///" + str(tmp_path / "archive"))  # from the files
    found = fresh.get_many(NS, ["k0002", "z", "k0004"], now=T0 + 3, touch=False)
    assert _same(found["k0002"], first["k0002"]) and found["z"].value == first["k0000"].value
    assert sorted(fresh.scan(NS, None, now=T0 + 3)) == ["k0000", "k0001", "k0002", "k0003",
                                                       "k0004", "z"]  # fmt: skip


def _stones(tmp_path: Path, probe: bool) -> Tombstones:
    backend: Backend = SqliteBackend(str(tmp_path / f"stones-{probe}.db"))
    if not probe:  # the same store, looked up by name only
        backend = JsonFileBackend(str(tmp_path / "stones.json"))
    return Tombstones(backend)


@pytest.mark.parametrize("prefix", ["k", "a*[b]?c\\", "", "é|"])
def test_tombstones_found_by_a_prefix_scan_are_those_looked_up_by_name(
    prefix: str, tmp_path: Path
) -> None:
    """``dead`` with the prefix scan (SQLite declares ``prefix_scans``) answers what the
    lookup by name answers, for random batches, tombstones of keys in, around and
    outside the batch, glob metacharacters and ``|`` in the keys."""
    rng = random.Random(len(prefix))
    probed, named = _stones(tmp_path, True), _stones(tmp_path, False)
    assert probed.backend.capabilities.prefix_scans and not named.backend.capabilities.prefix_scans
    keys = [f"{prefix}{i:04d}" for i in range(400)]
    for round_ in range(6):
        now = T0 + round_
        hit = rng.sample(keys, rng.randrange(0, 12))
        stones = {k: [(rng.randrange(1, 4), T0 + rng.uniform(-5, 5))] for k in hit}
        for stones_store in (probed, named):
            stones_store.add(NS, stones, now=now, deleted=round_ % 2 == 0)
        start = rng.randrange(0, 300)
        batch = keys[start : start + rng.choice([64, 100, 250])]
        tokens = {k: [(rng.randrange(1, 4), T0 + rng.uniform(-5, 5))] for k in batch}
        near = probed.near(NS, batch, now=now)
        assert near is not None
        assert {k for k in batch if k in set(hit) or _ever(probed, k, now)} <= near
        assert probed.dead(NS, tokens, now=now) == named.dead(NS, tokens, now=now)


def _ever(stones: Tombstones, key: str, now: float) -> bool:
    """Whether ``key`` has any tombstone (read by name: its delete record or a version)."""
    names = [stones.deleted_name(key)] + [stones.name(key, v) for v in range(1, 5)]
    return bool(stones.backend.get_many(NS + TOMBSTONE_NS, names, now=now, touch=False))


def test_tombstone_probe_gives_way_to_the_lookup_when_the_range_is_crowded(
    tmp_path: Path,
) -> None:
    stones = _stones(tmp_path, True)
    batch = [f"k{i:04d}" for i in range(64)]
    crowded = {f"k{i:04d}x{j}": [(1, T0)] for i in range(64) for j in range(4)}  # 256 others
    stones.add(NS, crowded, now=T0)
    assert stones.near(NS, batch, now=T0) is None  # more than 2 per key: look them up
    stones.add(NS, {"k0007": [(2, T0)]}, now=T0, deleted=True)
    tokens = {k: [(1 if k != "k0007" else 2, T0)] for k in batch}
    assert stones.dead(NS, tokens, now=T0) == {"k0007"}
    assert stones.near(NS, batch[:10], now=T0) is None  # small batches: by name


@pytest.mark.parametrize("kind", ["parquet", "parquet-s3"])
def test_a_columnar_move_honours_deletes_made_after_the_batch_was_read(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A migration reads a batch, the user deletes three of its keys (tombstones first,
    then the source entries) and rewrites one: the move of the batch as columns to an
    archive (a local folder, S3) puts none of the deleted writes there, leaves the
    rewrite, moves the rest."""
    src = SqliteBackend(str(tmp_path / "src.db"))
    dst = open_store(kind, tmp_path, request)
    stones = Tombstones(src)
    batch_records = records(200)
    src.put_many(NS, batch_records, now=T0)
    now = T0 + 1
    batch = next(src.scan_columns(NS, now=now, batch_size=500, value_bytes=1 << 10))
    gone = ["k0010", "k0100", "k0199"]
    read = src.get_many(NS, gone, now=now, touch=False)
    stones.add(NS, {k: [r.token] for k, r in read.items()}, now=now, deleted=True)
    assert src.delete_many(NS, gone, now=now) == 3
    src.put_many(NS, {"k0050": Record(b"\x01new", T0, now, now)}, now=now)
    outcome = move_columns(src, dst, NS, batch, range(len(batch)), now=now, tombstones=stones)
    assert outcome.moved == set(batch_records) - set(gone) - {"k0050"}
    assert set(gone) <= outcome.killed | outcome.skipped
    archived = set(dst.scan(NS, None, now=now))
    assert archived == outcome.moved  # the deleted writes came back nowhere
    assert set(src.scan(NS, None, now=now)) == {"k0050"}
    assert src.get_many(NS, ["k0050"], now=now)["k0050"].value == b"\x01new"
    got = dst.get_many(NS, ["k0001"], now=now, touch=False)["k0001"]
    assert got.updated_at == moved_copy(batch_records["k0001"]).updated_at


def test_a_columnar_move_settles_keys_the_target_holds_already(tmp_path: Path) -> None:
    """Keys the target holds already (a newer write, an older leftover, our own copy placed
    by an earlier run) go the one-by-one way of :func:`place` after the columnar write."""
    src = SqliteBackend(str(tmp_path / "src.db"))
    dst = SqliteBackend(str(tmp_path / "dst.db"))
    batch_records = records(100)
    src.put_many(NS, batch_records, now=T0)
    now = T0 + 1
    batch = next(src.scan_columns(NS, now=now, batch_size=500, value_bytes=1 << 10))
    newer = Record(b"\x01newer", T0, T0, T0, version=99)
    older = Record(b"\x01older", T0, T0 - 100, T0, version=0)
    ours = moved_copy(batch_records["k0003"])
    dst.put_absent_many(NS, {"k0001": newer, "k0002": older}, now=now)
    dst.put_absent_many(NS, {"k0003": ours}, now=now)
    outcome = move_columns(src, dst, NS, batch, range(len(batch)), now=now)
    assert outcome.moved == set(batch_records) - {"k0001"}
    assert outcome.dropped == {"k0001"}  # the source's stale write went
    assert "k0003" not in outcome.written and "k0002" in outcome.written
    held = dst.get_many(NS, ["k0001", "k0002", "k0003"], now=now, touch=False)
    assert held["k0001"].value == b"\x01newer"
    assert held["k0002"].token == moved_copy(batch_records["k0002"]).token
    assert held["k0003"].token == ours.token
    assert list(src.scan(NS, None, now=now)) == []


def _traced(store: SqliteBackend) -> list[str]:
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    return statements


def test_sqlite_range_delete_trusts_its_own_unchanged_read(tmp_path: Path) -> None:
    """The batch this connection read last, unchanged since (no commit by any other
    connection, no write by this one, as many rows in the range), is deleted as a range
    without reading it again; any change sends it the checking way, which keeps it."""
    path = str(tmp_path / "r.db")
    store, other = SqliteBackend(path), SqliteBackend(path)
    now = T0 + 1

    def fill(tags: tuple[str, ...] = ()) -> EntryColumns:
        rows = {
            f"k{i:03d}": Record(b"v", T0, T0, T0, tags=tags if i % 9 else ()) for i in range(100)
        }
        store.put_many(NS, rows, now=T0)
        return next(store.scan_columns(NS, now=now, batch_size=100, value_bytes=64))

    def tokens(batch: EntryColumns) -> dict[str, tuple[int, float]]:
        return dict(zip(batch.keys, zip(batch.version, batch.updated_at, strict=True),
                        strict=True))  # fmt: skip

    batch = fill()
    statements = _traced(store)
    assert store.delete_if_unchanged(NS, tokens(batch), now=now) == set(batch.keys)
    assert any("count(*)" in s for s in statements)
    assert not any("SELECT key, version, updated_at" in s for s in statements)
    assert not any("tags IS NOT" in s for s in statements)  # no row had tags
    batch = fill(tags=("t",))
    statements.clear()
    assert store.delete_if_unchanged(NS, tokens(batch), now=now) == set(batch.keys)
    assert not any("SELECT key, version, updated_at" in s for s in statements)
    assert store.tagged(NS, ["t"], now=now) == set()  # their tags went with them

    def rewrite(through: SqliteBackend) -> Callable[[], None]:
        return lambda: through.put_many(NS, {"k050": Record(b"new", T0, now, now)}, now=now)

    changes = {"another connection": rewrite(other), "this connection": rewrite(store)}
    for why, change in changes.items():
        batch = fill()
        change()
        deleted = store.delete_if_unchanged(NS, tokens(batch), now=now)
        assert deleted == set(batch.keys) - {"k050"}, why
        assert store.get_many(NS, ["k050"], now=now)["k050"].value == b"new", why
        store.delete_many(NS, ["k050"], now=now)

    # a row the scan left out (expired), inside the range: the range is not trusted
    batch = fill()
    store.put_many(NS, {"k050x": Record(b"old", T0, T0, T0, 0, T0 + 0.5, 0.5)}, now=T0)
    batch = next(store.scan_columns(NS, now=now, batch_size=200, value_bytes=64))
    assert "k050x" not in batch.keys
    assert store.delete_if_unchanged(NS, tokens(batch), now=now) == set(batch.keys)
    assert store.get_many(NS, ["k050x"], now=T0 + 0.1) != {}  # kept: it was not read
    store.close()
    other.close()

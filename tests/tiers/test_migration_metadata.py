"""Migration decides on metadata and loads values only for the entries that move (issue 15).

A rule such as ``accessCount < 1`` reads no value, so a dry run must not load any, and a
real run loads only the entries that move, a byte-bounded batch at a time. Measured with
``tracemalloc`` (allocations of this process: deterministic, unlike the RSS) on the real
stores: SQLite, Redis, the MongoDB wire server, a local folder and S3 (SeaweedFS). Before
the fix a dry run over 30 values of 4 MiB grew the reader by the whole 120 MiB or more.

Correctness on every store (JSON and in-process included): the same keys move as before,
``size`` rules see the stored size of the value, budgets demote the same entries, and a
moved entry arrives whole.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_memory.plugins.base import Backend, Record
from prefect_memory.plugins.fs import FsspecBackend
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.plugins.jsonfile import JsonFileBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.resilience import ResilientBackend
from prefect_memory.tiers.migration import MigrationReport, migrate
from prefect_memory.tiers.tiered import MigrationRule, Tier, TieredBackend

MiB = 1 << 20
T0 = 1_700_000_000.0
NS = "meta"
BIG = 4 * MiB  # value size of the memory tests
COUNT = 30  # values of the memory tests: 120 MiB in all
BUSY = frozenset(range(0, COUNT, 3))  # read before: ``accessCount < 1`` leaves them
MEMORY_STORES = ["sqlite", "redis", "mongodb", "file", "s3"]
ALL_STORES = [*MEMORY_STORES, "json", "memory"]

Make = Callable[[str, str], Backend]


@pytest.fixture
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """``make(kind, tag)``: a backend of that kind, private to the test (one per tag)."""
    unique = uuid.uuid4().hex[:8]
    opened: list[Backend] = []

    def make(kind: str, tag: str) -> Backend:
        backend: Backend
        if kind == "sqlite":
            backend = SqliteBackend(str(tmp_path / f"{tag}.db"))
        elif kind == "json":
            backend = JsonFileBackend(str(tmp_path / f"{tag}.json"))
        elif kind == "memory":
            backend = InProcessBackend()
        elif kind == "file":
            backend = FsspecBackend(f"file://{tmp_path}/{tag}")
        elif kind == "s3":
            server = request.getfixturevalue("s3_server")
            server.make_bucket("pm-meta")
            backend = FsspecBackend(
                f"s3://pm-meta/{unique}/{tag}", storage_options=server.storage_options
            )
        elif kind == "redis":
            from prefect_memory.plugins.redisdb import RedisBackend

            url = request.getfixturevalue("redis_server").url
            backend = RedisBackend.from_url(url, key_prefix=f"m{unique}{tag}")
        elif kind == "mongodb":
            from prefect_memory.plugins.mongodb import MongoBackend

            url = request.getfixturevalue("mongo_server").url
            sep = "&" if "?" in url else "?"
            backend = MongoBackend.from_url(f"{url}{sep}collection=m{unique}{tag}")
        else:
            raise AssertionError(kind)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        try:
            backend.clear(NS, now=T0)
        finally:
            backend.close()


def value_of(i: int, size: int) -> bytes:
    """A value of ``size`` bytes that says which key it belongs to."""
    return i.to_bytes(4, "big") * (size // 4) + b"v" * (size % 4)


def fill(backend: Backend, sizes: dict[str, int], busy: frozenset[str] = frozenset()) -> None:
    """Write one entry per key, one at a time (the test never holds more than one value)."""
    for i, (key, size) in enumerate(sizes.items()):
        count = 5 if key in busy else 0
        record = Record(value_of(i, size), T0, T0, T0, access_count=count)
        backend.put_many(NS, {key: record}, now=T0)


def tiered(hot: Backend, warm: Backend, *conditions: str, **limits: Any) -> TieredBackend:
    rules = [MigrationRule.parse("hot", "warm", c) for c in conditions]
    return TieredBackend([Tier("hot", hot, **limits), Tier("warm", warm)], rules)


def peak_growth(run: Callable[[], MigrationReport]) -> tuple[MigrationReport, int]:
    """The report of ``run`` and the peak of the memory it allocated on top of the start."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        report = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return report, peak - start


def keys_of(backend: Backend) -> list[str]:
    return sorted(backend.scan(NS, None, now=T0 + 10))


@pytest.mark.parametrize("kind", MEMORY_STORES)
def test_metadata_rule_loads_only_moving_values(kind: str, make_store: Make) -> None:
    hot, warm = make_store(kind, "hot"), make_store(kind, "warm")
    keys = [f"k{i:03d}" for i in range(COUNT)]
    busy = frozenset(keys[i] for i in BUSY)
    fill(hot, dict.fromkeys(keys, BIG), busy)
    warm.exists_many(NS, ["x"], now=T0)  # connect outside the measurement
    backend = tiered(hot, warm, "accessCount < 1")
    moving = sorted(set(keys) - busy)
    total = COUNT * BIG

    dry, dry_growth = peak_growth(lambda: migrate(backend, NS, now=T0 + 10, dry_run=True))
    print(f"{kind}: dry run over {total // MiB} MiB grew the reader by {dry_growth / MiB:.1f} MiB")
    assert sorted(k for k, _, _ in dry.planned) == moving
    assert dry.bytes_moved == len(moving) * BIG  # sizes right without reading a value
    assert keys_of(hot) == keys and keys_of(warm) == []
    assert dry_growth < total // 10

    batch_bytes = 8 * MiB  # two values per load
    report, growth = peak_growth(lambda: migrate(backend, NS, now=T0 + 10, batch_bytes=batch_bytes))
    print(f"{kind}: real run, batches of {batch_bytes // MiB} MiB: {growth / MiB:.1f} MiB")
    assert report.moved == {"hot -> warm: accessCount < 1": len(moving)}
    assert report.bytes_moved == len(moving) * BIG
    assert keys_of(warm) == moving and keys_of(hot) == sorted(busy)
    # a batch is loaded, copied into the target's write and deleted: a few batches at most,
    # never the 80 MiB that move
    assert growth < 5 * batch_bytes
    got = warm.get_many(NS, [moving[-1]], now=T0 + 10)[moving[-1]]
    assert got.value == value_of(keys.index(moving[-1]), BIG)


SIZES = {"tiny": 10, "small": 900, "edge": 1024, "big": 5000, "huge": 70_000}


@pytest.mark.parametrize("kind", ALL_STORES)
def test_meta_many_reports_stored_sizes_without_values(kind: str, make_store: Make) -> None:
    store = make_store(kind, "s")
    fill(store, SIZES)
    store.put_many(NS, {"gone": Record(b"x" * 50, T0, T0, T0, expires_at=T0 + 5, ttl=5.0)}, now=T0)
    wanted = [*SIZES, "gone", "missing"]
    full = store.get_many(NS, wanted, now=T0 + 10)
    meta = store.meta_many(NS, wanted, now=T0 + 10)
    assert set(meta) == set(SIZES) == set(full)  # live entries only
    for key, size in SIZES.items():
        assert meta[key].size == size == full[key].size, key
        if store.capabilities.metadata_reads:
            assert meta[key].value == b"", key
        assert (meta[key].token, meta[key].access_count, meta[key].tags) == (
            full[key].token,
            full[key].access_count,
            full[key].tags,
        )
    assert store.meta_many(NS, [], now=T0 + 10) == {}
    after = store.get_many(NS, ["big"], now=T0 + 10)["big"]
    assert after.access_count == 0  # reading metadata is not an access


@pytest.mark.parametrize("kind", ALL_STORES)
def test_size_rule_and_budget_on_metadata(kind: str, make_store: Make) -> None:
    hot, warm = make_store(kind, "hot"), make_store(kind, "warm")
    fill(hot, SIZES)
    backend = tiered(hot, warm, "size >= 1KB AND size < 50KB")
    dry = migrate(backend, NS, now=T0 + 10, dry_run=True)
    assert sorted(k for k, _, _ in dry.planned) == ["big", "edge"]
    assert dry.bytes_moved == 1024 + 5000
    report = migrate(backend, NS, now=T0 + 10, batch_bytes=1)  # one entry per load
    assert report.total_moved == 2 and report.bytes_moved == 1024 + 5000
    assert keys_of(warm) == ["big", "edge"]
    assert warm.get_many(NS, ["big"], now=T0 + 10)["big"].value == value_of(3, 5000)

    # budget: "huge" was read last, so the least recently used entry goes first
    hot.get_many(NS, ["huge"], now=T0 + 5, touch=True)
    budget = tiered(hot, warm, max_bytes=70_100)  # hot holds 70_910 bytes: "small" goes
    dry = migrate(budget, NS, now=T0 + 10, dry_run=True)
    assert [k for k, _, _ in dry.planned] == ["small"] and dry.bytes_moved == 900
    assert keys_of(hot) == ["huge", "small", "tiny"]
    report = migrate(budget, NS, now=T0 + 10, batch_bytes=1)
    assert report.moved == {"hot -> warm: over budget (LRU)": 1} and report.bytes_moved == 900
    assert keys_of(hot) == ["huge", "tiny"] and keys_of(warm) == ["big", "edge", "small"]


def test_entry_changed_after_the_decision_is_rechecked(make_store: Make) -> None:
    """A rule decided on metadata is checked again on the loaded entry before it moves.

    (Values too large to come with their batch are loaded after the decision: here every
    value, ``batch_bytes=1``.)
    """
    hot, warm = make_store("sqlite", "hot"), make_store("sqlite", "warm")
    fill(hot, {"a": 100, "b": 100})
    backend = tiered(hot, warm, "accessCount < 1")
    scan_columns = hot.scan_columns

    def racing_scan(ns: str, **options: Any) -> Iterator[Any]:
        for batch in scan_columns(ns, **options):
            assert batch.values == [None, None]  # decided on metadata alone
            hot.get_many(ns, ["a"], now=options["now"], touch=True)  # read meanwhile
            yield batch

    hot.scan_columns = racing_scan  # type: ignore[method-assign]
    report = migrate(backend, NS, now=T0 + 10, batch_bytes=1)
    assert report.total_moved == 1 and report.skipped == 1
    assert keys_of(warm) == ["b"] and keys_of(hot) == ["a"]


def test_wrapped_store_forwards_metadata_reads(make_store: Make) -> None:
    store = make_store("sqlite", "w")
    fill(store, {"k": 4096})
    wrapped = ResilientBackend(store)
    assert wrapped.capabilities.metadata_reads
    meta = wrapped.meta_many(NS, ["k"], now=T0 + 1)
    assert meta["k"].value == b"" and meta["k"].size == 4096


def test_record_size_stays_compatible() -> None:
    plain = Record(b"abc", 1.0, 1.0, 1.0)
    assert plain.size == 3 and plain.stored_size is None
    meta = plain.without_value()
    assert (meta.value, meta.size, meta.token) == (b"", 3, plain.token)
    assert meta.without_value().size == 3


def test_mongo_foreign_document_is_refused_like_get(make_store: Make, mongo_server: Any) -> None:
    """A document whose value is not binary (another program's) fails both reads alike."""
    import pymongo

    from prefect_memory.errors import SerializationError
    from prefect_memory.keys import ns_token

    store = make_store("mongodb", "f")
    fill(store, {"ok": 10})
    client: Any = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000)
    try:
        coll = client[store.database][store.collection]  # type: ignore[attr-defined]
        doc = {"_id": f"{ns_token(NS)}:bad", "ns": NS, "k": "bad", "v": 5, "c": T0, "u": T0}
        coll.insert_one({**doc, "a": T0, "n": 0, "x": None, "g": [], "r": 1})
    finally:
        client.close()
    assert store.meta_many(NS, ["ok"], now=T0 + 1)["ok"].size == 10
    with pytest.raises(SerializationError, match=r"'meta:bad'.*field 'v'"):
        store.get_many(NS, ["ok", "bad"], now=T0 + 1)
    with pytest.raises(SerializationError, match=r"'meta:bad'.*field 'v'"):
        store.meta_many(NS, ["ok", "bad"], now=T0 + 1)

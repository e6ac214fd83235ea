"""The Redis store's native column scan (``RedisBackend.scan_columns``, issue 19) against a
real redis-server and a real 3-node Redis Cluster (no mocks).

What it must give is what the base class builds from ``scan`` and ``meta_many``: the same
rows and columns for the same data (tags, TTLs, sliding, versions, sizes; expired entries
and entries gone since the ``SCAN`` left out; hostile hash fields read the same way or
refused with our errors), plus the values of at most ``value_bytes`` bytes, equal to what
``get_many`` reads. A migration Redis -> SQLite still moves everything through it.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest

from prefect_memory.errors import BackendError, ConfigError, SerializationError
from prefect_memory.keys import ns_token
from prefect_memory.plugins.base import Backend, EntryColumns, Record
from prefect_memory.plugins.redis import RedisBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.resilience import ConstantBackoff, ResilientBackend, Retry
from prefect_memory.tiers.migration import migrate
from prefect_memory.tiers.tiered import MigrationRule, Tier, TieredBackend
from servers import RedisServer
from shared.conftest import Cluster, redis_cluster  # noqa: F401 - the fixture, used by name

pytestmark = pytest.mark.redis

T0 = 1_700_000_000.0  # the clock of every write: entries expire relative to it
NS = "scan"
Row = tuple[Any, ...]


def _store(url: str, layout: int = 1, **options: Any) -> RedisBackend:
    options.setdefault("key_prefix", "pmsc" + uuid.uuid4().hex[:10])
    return RedisBackend(url, layout=layout, **options)


def varied(count: int, seed: int = 5) -> dict[str, Record]:
    """Entries of every kind: tags, TTLs (sliding or not), sizes from 0 to 3 KB."""
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        expires = rng.choice([None, T0 + rng.uniform(600, 7200)])
        sliding = expires is not None and rng.random() < 0.5
        tags = tuple(rng.sample(["a", "b", "pin", "é"], rng.randrange(4)))
        size = rng.choice([0, 1, 40, 64, 65, 300, 3000])
        out[f"k{i:04d}:{rng.choice(['x', 'ü', '*', '?'])}"] = Record(
            bytes([i % 256]) * size, T0 - rng.uniform(0, 7200), T0 - 1, T0 - rng.uniform(0, 60),
            rng.randrange(6), expires, None if expires is None else expires - T0, sliding, tags,
        )  # fmt: skip
    return out


def fill(store: RedisBackend, records: dict[str, Record]) -> None:
    """Write ``records`` at ``T0``, then touch and rewrite some (counts, versions > 1)."""
    store.put_many(NS, records, now=T0)
    keys = sorted(records)
    store.get_many(NS, keys[::3], now=T0 + 1, touch=True)
    store.get_many(NS, keys[::6], now=T0 + 2, touch=True)
    store.put_many(NS, {k: records[k] for k in keys[::5]}, now=T0 + 3)


def rows(batches: list[EntryColumns]) -> dict[str, Row]:
    """Every field of every row but the value, by key (each key once)."""
    out: dict[str, Row] = {}
    for batch in batches:
        for i, key in enumerate(batch.keys):
            assert key not in out, key
            out[key] = tuple(
                getattr(batch, name)[i] for name in EntryColumns._FIELDS[1:-1]
            )  # created_at ... sizes
    return out


def values(batches: list[EntryColumns]) -> dict[str, bytes | None]:
    return {key: value for b in batches for key, value in zip(b.keys, b.values, strict=True)}


def base_scan(store: Backend, **options: Any) -> list[EntryColumns]:
    """What the base class builds (``scan``, then ``meta_many`` per batch)."""
    return list(Backend.scan_columns(store, NS, **options))


def check_same_as_base(store: RedisBackend, now: float, value_bytes: int, size: int) -> None:
    native = list(store.scan_columns(NS, now=now, batch_size=size, value_bytes=value_bytes))
    base = base_scan(store, now=now, batch_size=size, value_bytes=value_bytes)
    assert rows(native) == rows(base)
    assert all(0 < len(b) <= size for b in native)
    got = store.get_many(NS, list(rows(native)), now=now)
    assert set(got) == set(rows(native))
    for key, value in values(native).items():
        if value_bytes > 0 and len(got[key].value) <= value_bytes:
            assert value == got[key].value, key
        else:  # too large for the batch (or no values asked for): left for get_many
            assert value is None, key


def entry_name(store: RedisBackend, key: str) -> str:
    return f"{store.key_prefix}:{{{ns_token(NS)}}}:e:{key}"


# -- the same rows as the base class ---------------------------------------------------------
@pytest.mark.parametrize("layout", [1, 2])
def test_native_scan_equals_the_base_scan(redis_server: RedisServer, layout: int) -> None:
    store = _store(redis_server.url, layout)
    records = varied(300)
    fill(store, records)
    assert type(store).capabilities.column_scans
    # Some expire at the caller's clock (Redis keeps them until its own TTL runs out).
    later = T0 + 3600
    expired = {k for k, r in records.items() if r.expires_at is not None and r.expires_at <= later}
    assert 0 < len(expired) < len(records)
    for now, value_bytes, size in [(T0 + 5, 64, 7), (later, 300, 1000), (later, 0, 50)]:
        check_same_as_base(store, now, value_bytes, size)
    found = rows(list(store.scan_columns(NS, now=later, batch_size=64)))
    assert set(found) == set(records) - expired
    pick = next(k for k in sorted(records)[::15] if k not in expired)  # written again at T0+3
    names = EntryColumns._FIELDS[1:-1]
    fields = dict(zip(names, found[pick], strict=True))
    record = records[pick]
    assert fields["version"] == 2 and fields["sizes"] == len(record.value)
    assert fields["tags"] == record.tags and fields["ttl"] == record.ttl
    assert fields["sliding"] == record.sliding and fields["expires_at"] == record.expires_at
    store.clear(NS, now=later)


def test_batches_are_bounded_and_one_script_call_each(redis_server: RedisServer) -> None:
    store = _store(redis_server.url)
    records = {f"k{i:03d}": Record(b"v" * (i % 30), T0, T0, T0) for i in range(95)}
    store.put_many(NS, records, now=T0)
    list(store.scan_columns(NS, now=T0, batch_size=5))  # script loaded, layout checked
    client = redis_server.client()
    try:
        client.config_resetstat()
        batches = list(store.scan_columns(NS, now=T0, batch_size=10, value_bytes=20))
        stats = client.info("commandstats")
    finally:
        client.close()
    assert [len(b) for b in batches] == [10] * 9 + [5]
    assert stats["cmdstat_evalsha"]["calls"] == len(batches)  # one read per batch
    for batch in batches:  # at most batch_size * value_bytes bytes of values in a batch
        assert all(v is None or len(v) <= 20 for v in batch.values)
        assert sum(len(v) for v in batch.values if v is not None) <= 10 * 20
    assert {k: v for k, v in values(batches).items() if v is not None} == {
        k: r.value for k, r in records.items() if len(r.value) <= 20
    }
    store.clear(NS, now=T0)


def test_a_value_over_the_bound_never_travels(redis_server: RedisServer) -> None:
    store = _store(redis_server.url)
    big = b"B" * (2 << 20)
    store.put_many(NS, {"big": Record(big, T0, T0, T0), "small": Record(b"s", T0, T0, T0)}, now=T0)
    client = redis_server.client()
    try:
        before = client.info("stats")["total_net_output_bytes"]
        (batch,) = store.scan_columns(NS, now=T0, batch_size=10, value_bytes=1024)
        sent = client.info("stats")["total_net_output_bytes"] - before
    finally:
        client.close()
    assert dict(zip(batch.keys, batch.values, strict=True)) == {"big": None, "small": b"s"}
    assert dict(zip(batch.keys, batch.sizes, strict=True)) == {"big": len(big), "small": 1}
    assert sent < 64 << 10  # the 2 MB value stayed on the server
    store.clear(NS, now=T0)


def test_entries_gone_or_rewritten_between_scan_and_read(redis_server: RedisServer) -> None:
    # A database of its own: one SCAN call then finds every name of the namespace before
    # the first batch is read, so the later batches read names whose entries are gone.
    store = _store(redis_server.url.rsplit("/", 1)[0] + "/11")
    store.execute("FLUSHDB")
    records = {f"k{i:02d}": Record(b"v%d" % i, T0, T0, T0, tags=("t",)) for i in range(40)}
    store.put_many(NS, records, now=T0)
    scan = store.scan_columns(NS, now=T0 + 1, batch_size=10, value_bytes=100)
    first = next(scan)
    rest = sorted(set(records) - set(first.keys))
    store.delete_many(NS, rest[::2], now=T0 + 1)  # gone
    store.put_many(NS, {k: Record(b"new", T0 + 1, T0 + 1, T0 + 1) for k in rest[1::4]}, now=T0 + 1)
    store.execute("HDEL", entry_name(store, rest[3]), "m")  # half gone: no metadata left
    later = [first, *scan]
    found = rows(later)
    assert set(found) == set(records) - set(rest[::2]) - {rest[3]}
    for key in rest[1::4]:
        assert values(later)[key] == b"new" and found[key][-2] == 2  # version 2, as read
    assert rows(later) == rows(base_scan(store, now=T0 + 1, batch_size=10))
    store.execute("FLUSHDB")


# -- hostile hash contents: read as the other reads read them, or our errors ---------------------
READ_AS = {  # field: (stored bytes, what the scans read)
    "n": (b"not a count", ("access_count", 0)),
    "x": (b"not an expiry", ("expires_at", None)),
    "a": (b"", ("last_access", "created_at")),  # empty: never accessed, the creation time
}
REFUSED = {
    "m": b"\xc1\xc1",  # not msgpack
    "m-short": msgpack.packb([1.0, 2.0]),
    "m-tags": msgpack.packb([1.0, 1.0, False, False, 5, 1]),
    "m-kinds": msgpack.packb(["c", 1.0, False, False, [], 1]),
    "a": b"not a time",
    "n": b"2.5",  # a number, but not a count (get_many refuses it too)
}


@pytest.mark.parametrize("field", sorted(READ_AS))
def test_spoiled_fields_read_as_the_scripts_read_them(
    redis_server: RedisServer, field: str
) -> None:
    store = _store(redis_server.url)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0 + 1, 3), "ok": Record(b"w", T0, T0, T0)},
                   now=T0)  # fmt: skip
    data, (name, expected) = READ_AS[field]
    store.execute("HSET", entry_name(store, "k"), field, data)
    native = list(store.scan_columns(NS, now=T0, value_bytes=10))
    assert rows(native) == rows(base_scan(store, now=T0, value_bytes=10))
    (batch,) = native
    row = batch.keys.index("k")
    want = getattr(batch, expected)[row] if isinstance(expected, str) else expected
    assert getattr(batch, name)[row] == want and batch.values[row] == b"v"
    store.clear(NS, now=T0)


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_unreadable_fields_raise_our_error_naming_the_key(
    redis_server: RedisServer, field: str
) -> None:
    store = _store(redis_server.url)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0)}, now=T0)
    store.execute("HSET", entry_name(store, "k"), field.split("-")[0], REFUSED[field])
    for scan in (store.scan_columns, lambda ns, **kw: iter(base_scan(store, **kw))):
        with pytest.raises(SerializationError, match="'k'"):
            list(scan(NS, now=T0, value_bytes=10))
    store.execute("DEL", entry_name(store, "k"))


def test_an_entry_without_its_value_is_read_without_one(redis_server: RedisServer) -> None:
    store = _store(redis_server.url)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0)}, now=T0)
    store.execute("HDEL", entry_name(store, "k"), "v")
    (batch,) = store.scan_columns(NS, now=T0, value_bytes=10)
    assert (batch.keys, batch.sizes, batch.values) == (["k"], [0], [None])  # left for get_many
    assert rows([batch]) == rows(base_scan(store, now=T0, value_bytes=10))
    assert store.get_many(NS, ["k"], now=T0) == {}  # which finds nothing to move
    store.clear(NS, now=T0)


def test_foreign_keys_in_the_namespace_raise_our_errors(redis_server: RedisServer) -> None:
    store = _store(redis_server.url)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0)}, now=T0)
    client = redis_server.client()
    plain, bad = entry_name(store, "plain"), entry_name(store, "k").encode()[:-1] + b"\xff"
    try:
        client.set(plain, "not a hash")
        with pytest.raises(BackendError, match="WRONGTYPE"):
            list(store.scan_columns(NS, now=T0, value_bytes=10))
        client.delete(plain)
        client.hset(bad, "m", b"x")
        with pytest.raises(SerializationError, match="not UTF-8"):
            list(store.scan_columns(NS, now=T0))
    finally:
        client.delete(plain, bad)
        client.close()
    assert store.get_many(NS, ["k"], now=T0)["k"].value == b"v"  # the connection is fine


def test_a_layout_mismatch_is_refused_before_any_read(redis_server: RedisServer) -> None:
    store = _store(redis_server.url, layout=2)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0)}, now=T0)
    other = RedisBackend(redis_server.url, key_prefix=store.key_prefix)  # layout 1
    with pytest.raises(ConfigError, match="layout"):
        list(other.scan_columns(NS, now=T0))
    store.clear(NS, now=T0)


# -- Redis Cluster -------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [1, 2])
def test_native_scan_on_a_cluster(redis_cluster: Cluster, layout: int) -> None:  # noqa: F811
    store = _store(redis_cluster.url, layout)
    records = varied(200, seed=9)
    fill(store, records)
    assert store.cluster
    for now, value_bytes, size in [(T0 + 5, 64, 9), (T0 + 3600, 3000, 1000)]:
        check_same_as_base(store, now, value_bytes, size)
    assert set(rows(list(store.scan_columns(NS, now=T0 + 5)))) == set(records)
    store.clear(NS, now=T0 + 5)


# -- through the resilience wrapper, and in a migration -------------------------------------------
def test_the_resilience_wrapper_forwards_the_native_scan(redis_server: RedisServer) -> None:
    store = _store(redis_server.url, timeout=0.5)
    records = varied(120, seed=3)
    fill(store, records)
    retry = Retry(ConstantBackoff(0.2), attempts=20)
    wrapped = ResilientBackend(store, retry=retry)
    assert wrapped.capabilities.column_scans
    list(store.scan_columns(NS, now=T0 + 5, batch_size=1000))  # the script loaded
    client = redis_server.client()
    try:
        client.config_resetstat()
        through = list(wrapped.scan_columns(NS, now=T0 + 5, batch_size=25, value_bytes=64))
        assert client.info("commandstats")["cmdstat_evalsha"]["calls"] == len(through)
        direct = list(store.scan_columns(NS, now=T0 + 5, batch_size=25, value_bytes=64))
        assert rows(through) == rows(direct) and values(through) == values(direct)
        # The server stops answering after the first batch: the reads time out (a transient
        # error), the scan starts again once it answers, and no entry comes twice.
        scan = wrapped.scan_columns(NS, now=T0 + 5, batch_size=25, value_bytes=64)
        first = next(scan)
        client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        rest = list(scan)
    finally:
        client.close()
    assert rows([first, *rest]) == rows(direct)  # (rows() refuses a key seen twice)
    store.clear(NS, now=T0 + 5)


@pytest.mark.parametrize("layout", [1, 2])
@pytest.mark.parametrize("resilient", [False, True])
def test_a_migration_to_sqlite_moves_everything(
    redis_server: RedisServer, tmp_path: Path, layout: int, resilient: bool
) -> None:
    store = _store(redis_server.url, layout)
    records = varied(260, seed=21)
    records.update({f"big{i}": Record(b"Z" * 5000, T0 - 7200, T0 - 7200, T0) for i in range(7)})
    fill(store, records)
    now = T0 + 300  # every entry is older than a minute; none has expired yet
    before = store.get_many(NS, list(records), now=now)
    assert set(before) == set(records)
    hot: Backend = (
        ResilientBackend(store, retry=Retry(ConstantBackoff(0.01))) if resilient else store
    )
    cold = SqliteBackend(str(tmp_path / "cold.db"))
    tiers = TieredBackend(
        [Tier("hot", hot), Tier("cold", cold)], [MigrationRule.parse("hot", "cold", "age > 1m")]
    )
    # 20 entries a batch and at most 1 KB of values: the small values move with their batch,
    # the larger ones are loaded apart.
    report = migrate(tiers, NS, now=now, batch_size=20, batch_bytes=20 * 1024)
    assert report.total_moved == len(records) and report.skipped == 0
    assert list(store.scan(NS, None, now=now)) == []
    moved = cold.get_many(NS, list(records), now=now)
    assert set(moved) == set(records)
    for key, record in before.items():
        copy = moved[key]
        assert (copy.value, copy.version, copy.tags, copy.expires_at, copy.ttl, copy.sliding) == (
            record.value, record.version, record.tags, record.expires_at, record.ttl,
            record.sliding,
        )  # fmt: skip
        assert (copy.created_at, copy.access_count, copy.last_access) == (
            record.created_at, record.access_count, record.last_access,
        )  # fmt: skip


@pytest.mark.parametrize("field", ["m", "n", "a", "x"])
def test_a_metadata_field_larger_than_ours_never_travels(
    redis_server: RedisServer, field: str
) -> None:
    """A field another client made huge stays on the server: ``m`` is refused naming the
    key, ``n`` / ``x`` read as spoiled ones (no count, no expiry), ``a`` is refused."""
    store = _store(redis_server.url)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0, 3), "ok": Record(b"w", T0, T0, T0)},
                   now=T0)  # fmt: skip
    store.execute("HSET", entry_name(store, "k"), field, b"9" * (5 << 20))
    client = redis_server.client()
    try:
        before = client.info("stats")["total_net_output_bytes"]
        if field in ("m", "a"):
            with pytest.raises(SerializationError, match="'k'"):
                list(store.scan_columns(NS, now=T0, value_bytes=10))
        else:
            (batch,) = store.scan_columns(NS, now=T0, value_bytes=10)
            row = batch.keys.index("k")
            assert (batch.access_count[row], batch.expires_at[row], batch.values[row]) == (
                0 if field == "n" else 3, None, b"v",
            )  # fmt: skip
        sent = client.info("stats")["total_net_output_bytes"] - before
    finally:
        client.close()
    assert sent < 64 << 10  # the 5 MB field stayed on the server
    store.execute("DEL", entry_name(store, "k"))
    store.clear(NS, now=T0)


def test_an_oversized_m_never_travels_on_reads(redis_server: RedisServer) -> None:
    """``get_many`` (counting the access or not) refuses an entry whose ``m`` another client
    made larger than any this library writes, naming the key, without the field (or the
    value) leaving the server; the other entries read as before."""
    store = _store(redis_server.url)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0, 3), "ok": Record(b"w", T0, T0, T0)},
                   now=T0)  # fmt: skip
    store.execute("HSET", entry_name(store, "k"), "m", b"9" * (5 << 20))
    client = redis_server.client()
    try:
        before = client.info("stats")["total_net_output_bytes"]
        for touch in (False, True):
            with pytest.raises(SerializationError, match="'k'"):
                store.get_many(NS, ["ok", "k"], now=T0, touch=touch)
        sent = client.info("stats")["total_net_output_bytes"] - before
        assert int(client.hget(entry_name(store, "k"), "n") or 0) == 3  # no access counted
    finally:
        client.close()
    assert sent < 64 << 10  # the 5 MB field stayed on the server
    assert store.get_many(NS, ["ok"], now=T0)["ok"].value == b"w"
    store.execute("DEL", entry_name(store, "k"))
    store.clear(NS, now=T0)


@pytest.mark.parametrize("layout", [1, 2])
@pytest.mark.parametrize("field", ["m", "n", "a", "x"])
def test_a_metadata_field_larger_than_ours_never_travels_on_meta_reads(
    redis_server: RedisServer, field: str, layout: int
) -> None:
    """``meta_many`` (a migration's metadata reads) reads the fields as the column scan
    does: a huge ``m`` or ``a`` is refused naming the key, a huge ``n`` / ``x`` reads as a
    spoiled one; the field never leaves the server, and the other entries read as before."""
    store = _store(redis_server.url, layout)
    store.put_many(NS, {"k": Record(b"v", T0, T0, T0, 3), "ok": Record(b"ww", T0, T0, T0)},
                   now=T0)  # fmt: skip
    (name,) = store.execute("KEYS", f"{store.key_prefix}:*:e:k")  # (layout 2: in a bucket)
    store.execute("HSET", name, field, b"9" * (5 << 20))
    client = redis_server.client()
    try:
        before = client.info("stats")["total_net_output_bytes"]
        if field in ("m", "a"):
            with pytest.raises(SerializationError, match="'k'"):
                store.meta_many(NS, ["ok", "k"], now=T0)
        else:
            got = store.meta_many(NS, ["ok", "k", "missing"], now=T0)
            assert sorted(got) == ["k", "ok"]
            k = got["k"]
            assert (k.value, k.stored_size, k.access_count, k.expires_at) == (
                b"", 1, 0 if field == "n" else 3, None,
            )  # fmt: skip
        sent = client.info("stats")["total_net_output_bytes"] - before
    finally:
        client.close()
    assert sent < 64 << 10  # the 5 MB field stayed on the server
    ok = store.meta_many(NS, ["ok"], now=T0)["ok"]
    assert (ok.value, ok.stored_size, ok.created_at, ok.version) == (b"", 2, T0, 1)
    store.execute("DEL", name)
    store.clear(NS, now=T0)


def _script_calls(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


@pytest.mark.parametrize("layout", [1, 2])
def test_column_replies_stop_at_their_byte_budget(
    redis_server: RedisServer, layout: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose fields and values exceed the reply budget is read in several calls
    (the names a reply left out are asked again): the same rows, values included, as
    with the default budget (16 MiB, one call here), and the same metadata reads."""
    import prefect_memory.plugins.redis.backend as redis_backend

    store = _store(redis_server.url, layout)
    records = varied(120)
    big = {f"big:{i:02d}": Record(bytes([i]) * 20_000, T0, T0, T0, tags=("t" * 500,) * 40)
           for i in range(12)}  # fmt: skip
    records.update(big)
    fill(store, records)
    keys = sorted(records)
    client = redis_server.client()
    try:
        before = _script_calls(client)
        whole = list(store.scan_columns(NS, now=T0 + 5, batch_size=1000, value_bytes=30_000))
        meta_whole = store.meta_many(NS, keys, now=T0 + 5)
        calls_whole = _script_calls(client) - before
        monkeypatch.setattr(redis_backend, "COLUMN_BUDGET", 50_000)
        monkeypatch.setattr(redis_backend, "_MIN_CALL_BUDGET", 10_000)
        before = _script_calls(client)
        split = list(store.scan_columns(NS, now=T0 + 5, batch_size=1000, value_bytes=30_000))
        meta_split = store.meta_many(NS, keys, now=T0 + 5)
        calls = _script_calls(client) - before
    finally:
        client.close()
    assert rows(split) == rows(whole) and len(rows(whole)) == len(records)
    values = {k: v for b in split for k, v in zip(b.keys, b.values, strict=True)}
    assert values == {k: v for b in whole for k, v in zip(b.keys, b.values, strict=True)}
    assert all(values[k] == r.value for k, r in big.items())
    assert meta_split == meta_whole and set(meta_whole) == set(records)
    # 12 values of 20 KB and 12 m fields of ~20 KB: 2 big entries a scan call, 3 a
    # metadata call; with the default budget each read is one round
    assert calls >= calls_whole + 8, (calls_whole, calls)
    store.clear(NS, now=T0)


@pytest.mark.parametrize(
    "reply", [[], [b"m"] * 5, [None] * 18, "x", [None] * 7], ids=["empty", "5", "18", "str", "7"]
)
def test_a_column_reply_of_another_shape_is_refused(reply: Any) -> None:
    from prefect_memory.plugins.redis.backend import _column_rows

    with pytest.raises(BackendError, match="unexpected reply"):
        _column_rows([b"a", b"b"], reply, T0, {}, lambda row: None)


@pytest.mark.parametrize("layout", [1, 2])
def test_column_replies_stop_at_their_byte_budget_on_a_cluster(
    redis_cluster: Cluster,  # noqa: F811
    layout: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a Cluster (in layout 2 the buckets spread over the nodes, one call each per
    round) a budget that stops every reply early still gives every row and value, and the
    same metadata reads, as one round does."""
    import prefect_memory.plugins.redis.backend as redis_backend

    store = _store(redis_cluster.url, layout)
    records = varied(80, seed=11)
    records.update({f"big:{i:02d}": Record(bytes([i]) * 20_000, T0, T0, T0) for i in range(10)})
    fill(store, records)
    assert store.cluster  # (known once connected)
    keys = sorted(records)
    whole = list(store.scan_columns(NS, now=T0 + 5, batch_size=1000, value_bytes=30_000))
    meta_whole = store.meta_many(NS, keys, now=T0 + 5)
    monkeypatch.setattr(redis_backend, "COLUMN_BUDGET", 30_000)
    monkeypatch.setattr(redis_backend, "_MIN_CALL_BUDGET", 5_000)
    split = list(store.scan_columns(NS, now=T0 + 5, batch_size=1000, value_bytes=30_000))
    assert rows(split) == rows(whole) and len(rows(whole)) == len(records)
    assert values(split) == values(whole)
    assert all(values(split)[k] == r.value for k, r in records.items() if k.startswith("big:"))
    assert store.meta_many(NS, keys, now=T0 + 5) == meta_whole and set(meta_whole) == set(records)
    store.clear(NS, now=T0 + 5)

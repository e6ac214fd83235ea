"""The Parquet archive read by other engines, without our code: pyarrow.dataset, DuckDB, Polars.

Each engine reads the data files of one namespace (``<root>/<ns>/date=*/*.parquet``),
keeps the latest row of each key (highest ``seq``) that is neither a tombstone nor
expired and whose ``date`` partition is in a range, and must return exactly what
``Memory.get_many`` returns for a key set: ``json.loads(value_json)`` where the value has a
JSON form, and the ``value`` bytes (decoded with our codec) for every row. On SeaweedFS
(DuckDB through an fsspec s3fs filesystem registered with it, Polars and pyarrow with their
own S3 clients) and on a local folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

import prefect_memory as pm
from prefect_memory.plugins.parquet import ParquetArchiveBackend
from prefect_memory.plugins.parquet import format as fmt
from prefect_memory.plugins.parquet import store as store_mod

DAY = 86400.0
T0 = dt.datetime(2024, 5, 6, 12, tzinfo=dt.timezone.utc).timestamp()
NS = "sales"
FIRST, LAST = "2024-05-07", "2024-05-08"  # the date range asked (days 1 and 2)
CODEC = pm.Codec()


@dataclass
class Place:
    """Where an archive lives, and how each engine reaches it."""

    url: str
    options: dict[str, Any]
    root: str  # the namespace folder: a local path, or bucket/prefix/ns on S3
    s3: Any = None  # the S3 server, or None for a local folder

    def archive(self, **kw: Any) -> ParquetArchiveBackend:
        return ParquetArchiveBackend(self.url, **{**self.options, "value_json": True, **kw})


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "local":
        return Place(f"parquet:///{tmp_path}/archive", {}, f"{tmp_path}/archive/{NS}")
    server = request.getfixturevalue("s3_server")
    server.make_bucket("pm-engines")
    prefix = f"pm-engines/{uuid.uuid4().hex[:10]}"
    options = {"storage_options": server.storage_options}
    return Place(f"parquet::s3://{prefix}", options, f"{prefix}/{NS}", server)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def fill(mem: pm.Memory, clock: Clock) -> None:
    """Three days of writes: JSON records and scalars, values without a JSON form,
    overwrites, deletes and an expired entry."""
    orders = {
        f"order:{i:02d}": {
            "order": i,
            "status": ["new", "paid", "shipped"][i % 3],
            "amount": round(i * 10.25, 2),
            "items": [i, i + 1],
            "note": "café ✓" if i % 2 else None,
            "meta": {"big": 2**62 + i, "neg": -i, "flag": bool(i % 2)},
        }
        for i in range(30)
    }
    clock.now = T0  # day 0
    mem.set_many(orders)
    clock.now = T0 + DAY  # day 1
    mem.set_many({k: {**v, "status": "returned"} for k, v in orders.items() if v["order"] < 10})
    mem.set_many({f"order:{i:02d}": {"order": i, "late": True} for i in range(30, 40)})
    mem.delete_many([f"order:{i:02d}" for i in range(20, 25)])
    mem.set_many({"blob:1": b"\x00raw", "set:1": {1, 2}, "when:1": dt.datetime(2024, 1, 1),
                  "tuple:1": (1, 2), "nan:1": float("nan")})  # fmt: skip
    mem.set("ttl:1", {"short": True}, ttl=600)  # expired by day 2
    clock.now = T0 + 2 * DAY + 3600  # day 2
    mem.set_many({f"order:{i:02d}": {"order": i, "v": 2} for i in range(30, 35)})
    mem.set_many({"n:1": 42, "s:1": "text", "null:1": None, "list:1": [1.5, "x", None]})


KEYS = [
    "order:00",  # day 0, overwritten day 1: in range
    "order:05",
    "order:12",  # day 0 only: out of range
    "order:21",  # deleted day 1
    "order:31",  # day 1, overwritten day 2
    "order:36",  # day 1
    "blob:1", "set:1", "when:1", "tuple:1", "nan:1",  # no JSON form
    "ttl:1",  # expired
    "n:1", "s:1", "null:1", "list:1",  # day 2 scalars
    "missing:1",
]  # fmt: skip
IN_RANGE = {"order:00", "order:05", "order:31", "order:36", "blob:1", "set:1", "when:1",
            "tuple:1", "nan:1", "n:1", "s:1", "null:1", "list:1"}  # fmt: skip
NO_JSON = {"blob:1", "set:1", "when:1", "tuple:1", "nan:1"}


def expected(mem: pm.Memory, archive: ParquetArchiveBackend) -> dict[str, Any]:
    """``get_many`` of the key set, for the keys whose current row is in the date range."""
    in_range = set(archive.query(NS, FIRST, LAST, columns=["key"], now=mem.clock())["key"])
    got = mem.get_many(KEYS)
    out = {k: v for k, v in got.items() if k in in_range}
    assert set(out) == IN_RANGE  # the data is what the test means it to be
    return out


def check(rows: list[tuple[str, bytes, str | None]], want: dict[str, Any]) -> None:
    """An engine's rows ``(key, value, value_json)`` are exactly ``want``."""
    keys = [key for key, _, _ in rows]
    assert sorted(keys) == sorted(want), "each wanted key once, nothing else"
    for key, value, text in rows:
        assert CODEC.decode(value) == want[key] or key == "nan:1"
        if key in NO_JSON:
            assert text is None, key
        else:
            assert text is not None and json.loads(text) == want[key], key


# -- the three engines, as a user writes them --------------------------------------------------
Rows = list[tuple[str, bytes, "str | None"]]


# The documented schema (version 2), as each engine spells it: what a scan of an archive
# still holding version 1 files (no value_json) needs, since Polars and pyarrow take the
# columns from the first file they open.
POLARS_SCHEMA = {
    "key": pl.String, "namespace": pl.String, "created_at": pl.Float64,
    "updated_at": pl.Float64, "last_access": pl.Float64, "access_count": pl.Int64,
    "expires_at": pl.Float64, "ttl": pl.Float64, "sliding": pl.Boolean,
    "tags": pl.List(pl.String), "version": pl.Int64, "archived_at": pl.Float64,
    "seq": pl.Int64, "deleted": pl.Boolean, "value": pl.Binary, "value_json": pl.String,
}  # fmt: skip
ARROW_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False), ("namespace", pa.string()),
    ("created_at", pa.float64()), ("updated_at", pa.float64()), ("last_access", pa.float64()),
    ("access_count", pa.int64()), ("expires_at", pa.float64()), ("ttl", pa.float64()),
    ("sliding", pa.bool_()), ("tags", pa.list_(pa.field("element", pa.string()))),
    ("version", pa.int64()), ("archived_at", pa.float64()), ("seq", pa.int64()),
    ("deleted", pa.bool_()), ("value", pa.large_binary()), ("value_json", pa.large_string()),
    ("date", pa.string()),
])  # fmt: skip


def with_duckdb(place: Place, now: float, keys: list[str], mixed: bool = False) -> Rows:
    con = duckdb.connect()
    if place.s3 is not None:  # an fsspec filesystem registered with DuckDB
        import s3fs

        con.register_filesystem(
            s3fs.S3FileSystem(
                key=place.s3.key,
                secret=place.s3.secret,
                client_kwargs={"endpoint_url": place.s3.endpoint_url},
                use_listings_cache=False,  # s3fs would list files compacted away meanwhile
            )
        )
        files = f"s3://{place.root}/date=*/*.parquet"
    else:
        files = f"{place.root}/date=*/*.parquet"
    sql = f"""
        WITH latest AS (
            SELECT * FROM read_parquet('{files}', hive_partitioning = true, union_by_name = true)
            WHERE key IN (SELECT unnest(?::VARCHAR[]))
            QUALIFY row_number() OVER (PARTITION BY key ORDER BY seq DESC) = 1
        )
        SELECT key, value, value_json FROM latest
        WHERE NOT deleted AND (expires_at IS NULL OR expires_at > ?)
          AND date BETWEEN ? AND ?
    """
    rows = con.execute(sql, [keys, now, FIRST, LAST]).fetchall()
    con.close()
    return [(k, bytes(v), t) for k, v, t in rows]


def polars_options(place: Place) -> dict[str, str] | None:
    if place.s3 is None:
        return None
    return {
        "aws_endpoint_url": place.s3.endpoint_url,
        "aws_access_key_id": place.s3.key,
        "aws_secret_access_key": place.s3.secret,
        "aws_region": "us-east-1",
        "aws_allow_http": "true",
    }


def with_polars(place: Place, now: float, keys: list[str], mixed: bool = False) -> Rows:
    source = f"s3://{place.root}/date=*/*.parquet" if place.s3 else f"{place.root}/date=*/*.parquet"
    frame = (
        pl.scan_parquet(
            source,
            hive_partitioning=True,
            storage_options=polars_options(place),
            try_parse_hive_dates=False,
            schema=POLARS_SCHEMA if mixed else None,
            missing_columns="insert",
        )
        .filter(pl.col("key").is_in(keys))
        .filter(pl.col("seq") == pl.col("seq").max().over("key"))
        .filter(~pl.col("deleted"))
        .filter(pl.col("expires_at").is_null() | (pl.col("expires_at") > now))
        .filter(pl.col("date").is_between(pl.lit(FIRST), pl.lit(LAST)))
        .select("key", "value", "value_json")
        .collect()
    )
    return list(frame.iter_rows())


def arrow_filesystem(place: Place) -> Any:
    if place.s3 is None:
        return pa.fs.LocalFileSystem()
    return pa.fs.S3FileSystem(
        access_key=place.s3.key,
        secret_key=place.s3.secret,
        endpoint_override=place.s3.endpoint_url,
        region="us-east-1",
    )


def with_pyarrow(place: Place, now: float, keys: list[str], mixed: bool = False) -> Rows:
    import pyarrow.compute as pc

    dataset = pds.dataset(
        place.root,
        filesystem=arrow_filesystem(place),
        format="parquet",
        schema=ARROW_SCHEMA if mixed else None,
        partitioning=pds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
    )  # _log/ and _stats/ are skipped (pyarrow ignores names starting with "_")
    wanted = ["key", "seq", "deleted", "expires_at", "date", "value", "value_json"]
    rows = dataset.to_table(columns=wanted, filter=pc.field("key").isin(keys))
    latest = rows.group_by("key").aggregate([("seq", "max")]).rename_columns(["key", "seq"])
    current = rows.join(latest, ["key", "seq"], join_type="inner").filter(
        ~pc.field("deleted")
        & (pc.field("expires_at").is_null() | (pc.field("expires_at") > now))
        & (pc.field("date") >= FIRST)
        & (pc.field("date") <= LAST)
    )
    columns = [current.column(c).to_pylist() for c in ("key", "value", "value_json")]
    return list(zip(*columns, strict=True))


ENGINES: dict[str, Callable[..., Rows]] = {
    "duckdb": with_duckdb,
    "polars": with_polars,
    "pyarrow": with_pyarrow,
}


# -- tests -------------------------------------------------------------------------------------
@pytest.fixture
def filled(place: Place) -> tuple[Place, pm.Memory, ParquetArchiveBackend]:
    archive = place.archive()
    clock = Clock()
    mem = pm.Memory(archive, NS, clock=clock)
    fill(mem, clock)
    return place, mem, archive


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engines_return_exactly_get_many(
    engine: str, filled: tuple[Place, pm.Memory, ParquetArchiveBackend]
) -> None:
    place, mem, archive = filled
    want = expected(mem, archive)
    check(ENGINES[engine](place, mem.clock(), KEYS), want)


def test_engines_agree_after_compaction(
    filled: tuple[Place, pm.Memory, ParquetArchiveBackend],
) -> None:
    """Compaction rewrites the files (tombstones kept or dropped, rows merged): the
    ``value_json`` it writes still matches."""
    place, mem, archive = filled
    report = archive.compact(NS, now=mem.clock())
    assert report.files_after < report.files_before
    want = expected(mem, archive)
    for engine in ENGINES.values():
        check(engine(place, mem.clock(), KEYS), want)


def test_value_json_is_a_setting_off_by_default(place: Place) -> None:
    default = ParquetArchiveBackend(place.url, **place.options)
    mem = pm.Memory(default, NS)
    mem.set_many({"a": {"x": 1}, "b": [1, 2]})
    assert default.dataset(NS).to_table().column("value_json").null_count == 2
    on = pm.open_memory(place.url, namespace="on", value_json=True, **place.options)
    on.set_many({"a": {"x": 1}, "b": [1, 2]})
    table = on.backend.dataset("on").to_table()
    assert sorted(table.column("value_json").to_pylist()) == ["[1,2]", '{"x":1}']
    assert mem.get_many(["a", "b"]) == on.get_many(["a", "b"]) == {"a": {"x": 1}, "b": [1, 2]}
    with pytest.raises(pm.ConfigError, match="value_json"):
        place.archive(value_json="yes")
    with pytest.raises(pm.ConfigError, match="value_json"):
        pm.open_memory(place.url, value_json=1, **place.options)


def test_encrypted_values_never_reach_the_json_column(place: Place) -> None:
    """A memory with an EncryptionHook hands the archive ciphertext: ``value_json`` is null
    and no data file holds the plaintext. The same value from a memory without the hook is
    in the column (the check can fail)."""
    from prefect_memory.validation import EncryptionHook

    archive = place.archive(compression="none")  # plaintext would be visible as is
    secret = {"card": "PLAINTEXT-4111-1111"}
    hooked = pm.Memory(archive, NS, hooks=[EncryptionHook(key=os.urandom(32))])
    hooked.set_many({"card:1": secret, "card:2": [secret]})
    assert hooked.get_many(["card:1"]) == {"card:1": secret}
    table = archive.dataset(NS).to_table()
    assert table.column("value_json").to_pylist() == [None, None]
    assert not any(b"PLAINTEXT" in blob for blob in data_blobs(archive))

    plain = pm.Memory(archive, "other")
    plain.set("card:1", secret)
    assert archive.dataset("other").to_table().column("value_json").to_pylist() == [
        json.dumps(secret, separators=(",", ":"))
    ]
    assert any(b"PLAINTEXT" in blob for blob in data_blobs(archive, "other"))


def data_blobs(archive: ParquetArchiveBackend, ns: str = NS) -> list[bytes]:
    paths = [p for p in archive.fs.find(archive.ns_root(ns)) if p.endswith(".parquet")]
    assert paths
    return [archive.fs.cat_file(p) for p in paths]


def _version_1(write_rows: Callable[..., tuple[bytes, pa.Table]]) -> Callable[..., Any]:
    """A writer of version 1 files (no ``value_json``, no schema version): the code path of
    releases before it, as far as the bytes on the store go."""

    def write(*args: Any, **kw: Any) -> tuple[bytes, pa.Table]:
        data, meta = write_rows(*args, **kw)
        table = pq.read_table(pa.BufferReader(data)).drop_columns(["value_json"])
        old = pa.schema([fmt.SCHEMA.field(c) for c in fmt.COLUMNS_V1])
        sink = pa.BufferOutputStream()
        pq.write_table(table.cast(old), sink, row_group_size=max(1, len(table) // 3))
        return sink.getvalue().to_pybytes(), meta

    return write


def test_files_of_schema_version_1_still_read(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written before ``value_json`` existed: our reads, the dataset, compaction (which
    fills the column in) and the engines (``union_by_name``, ``missing_columns``)."""
    clock = Clock()
    archive = place.archive()
    mem = pm.Memory(archive, NS, clock=clock)
    with monkeypatch.context() as patch:
        patch.setattr(store_mod, "write_rows", _version_1(store_mod.write_rows))
        clock.now = T0 + DAY
        mem.set_many({"order:00": {"old": 0}, "order:05": {"old": 5}, "blob:1": b"x"})
        mem.set_many({"n:1": 41, "order:12": {"old": 12}})
    (old_file,) = [p for p in archive.fs.find(place.root.rstrip("/")) if "date=" in p][:1]
    assert "value_json" not in pq.read_schema(archive.fs.open(old_file, "rb")).names
    clock.now = T0 + 2 * DAY
    mem.set_many({"n:1": 42, "s:1": "text", "order:31": {"new": 31}})

    want = {"order:00": {"old": 0}, "order:05": {"old": 5}, "blob:1": b"x", "n:1": 42,
            "s:1": "text", "order:31": {"new": 31}}  # fmt: skip
    fresh = pm.Memory(place.archive(), NS, clock=clock)  # index built from the files
    assert fresh.get_many([*want, "missing"]) == want
    table = archive.dataset(NS).to_table().sort_by([("key", "ascending"), ("seq", "ascending")])
    texts = dict(
        zip(table.column("key").to_pylist(), table.column("value_json").to_pylist(), strict=True)
    )
    assert texts == {"order:00": None, "order:05": None, "blob:1": None, "order:12": None,
                     "n:1": "42", "s:1": '"text"', "order:31": '{"new":31}'}  # fmt: skip

    keys = [*want, "missing"]
    for name, engine in ENGINES.items():
        rows = engine(place, clock.now, keys, mixed=True)
        assert {k: CODEC.decode(v) for k, v, _ in rows} == want, name
        assert {k: t for k, _, t in rows} == {k: texts[k] for k in want}, name

    report = archive.compact(NS, now=clock.now)  # rewrites the small files of day 1
    assert report.rows_written
    table = archive.dataset(NS).to_table()
    texts = dict(
        zip(table.column("key").to_pylist(), table.column("value_json").to_pylist(), strict=True)
    )
    assert texts["order:00"] == '{"old":0}' and texts["blob:1"] is None
    assert fresh.get_many(list(want)) == want
    for name, engine in ENGINES.items():
        rows = engine(place, clock.now, keys)
        assert {k: json.loads(t) for k, _, t in rows if t is not None} == {
            k: v for k, v in want.items() if k != "blob:1"
        }, name


def test_the_engine_schemas_are_the_files_schema(tmp_path: Path) -> None:
    """The schema spelled out for the engines (and in docs/archive-engines.md) is the one
    the archive writes."""
    archive = ParquetArchiveBackend(f"parquet:///{tmp_path}", value_json=True)
    archive.put_many(NS, {"k": pm.plugins.base.Record(b"\x01\x05", T0, T0, T0)}, now=T0)
    (path,) = [p for p in archive.fs.find(str(tmp_path)) if p.endswith(".parquet")]
    written = pq.read_schema(path)
    assert written.metadata[fmt.SCHEMA_KEY.encode()] == str(fmt.SCHEMA_VERSION).encode()
    assert written.remove_metadata().equals(ARROW_SCHEMA.remove(ARROW_SCHEMA.names.index("date")))
    assert dict(pl.read_parquet_schema(path)) == POLARS_SCHEMA


def test_the_archive_block_applies_value_json(tmp_path: Path) -> None:
    """The block's ``value_json`` field reaches the archive (a field is applied, not kept)."""
    from prefect_memory.blocks import ParquetArchiveMemory

    for on in (False, True):
        folder = tmp_path / str(on)
        block = ParquetArchiveMemory(url=str(folder), namespace=NS, value_json=on)
        block.set("order:1", {"amount": 3})
        (path,) = [p for p in folder.rglob("*.parquet")]
        texts = pq.read_table(path).column("value_json").to_pylist()
        assert texts == (['{"amount":3}'] if on else [None])

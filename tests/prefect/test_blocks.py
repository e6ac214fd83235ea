"""Block standards: descriptions, code examples, save/load, pickle, secrets, validation."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr, ValidationError

import prefect_memory as pm
from prefect_memory.blocks import (
    BLOCKS,
    InProcessMemory,
    JsonMemory,
    MemoryBlock,
    MongoDBMemory,
    ParquetArchiveMemory,
    RedisMemory,
    S3Memory,
    SqliteMemory,
    blocks_from_config,
)

BLOCK_CLASSES = list(BLOCKS)

MakeBlock = Callable[..., MemoryBlock]


@pytest.mark.parametrize("cls", BLOCK_CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_described_with_a_period(cls: type[MemoryBlock]) -> None:
    assert {"namespace", "ttl"} <= set(cls.model_fields)
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name} has no description"
        assert field.description.endswith("."), f"{cls.__name__}.{name}: {field.description!r}"


@pytest.mark.parametrize("cls", BLOCK_CLASSES, ids=lambda c: c.__name__)
def test_block_type_metadata(cls: type[MemoryBlock]) -> None:
    assert cls.get_block_type_name().endswith("Memory")
    assert cls.get_description() and cls.get_description().endswith(".")
    example = cls.get_code_example()
    assert example and f"{cls.__name__}.load(" in example and "from prefect_memory" in example
    assert "write-path" in cls.get_block_capabilities()


@pytest.mark.parametrize("cls", BLOCK_CLASSES, ids=lambda c: c.__name__)
def test_code_example_runs(cls: type[MemoryBlock], make_block: MakeBlock, unique: str) -> None:
    name = f"example-{unique}"
    make_block(cls).save(name)
    code = cls.get_code_example().split("```python", 1)[1].rsplit("```", 1)[0]
    exec(compile(textwrap.dedent(code).replace("BLOCK_NAME", name), "<example>", "exec"), {})


@pytest.mark.parametrize("cls", BLOCK_CLASSES, ids=lambda c: c.__name__)
def test_save_load_round_trip(cls: type[MemoryBlock], make_block: MakeBlock, unique: str) -> None:
    block = make_block(cls, namespace=f"ns-{unique}", ttl=120)
    block.save(f"rt-{unique}")
    block.set("k", {"v": 1}, tags=["t"])
    loaded = cls.load(f"rt-{unique}")
    assert type(loaded) is cls
    assert loaded.model_dump() == block.model_dump()
    assert loaded.get("k") == {"v": 1}  # a loaded block reaches the same store
    assert loaded.memory.ttl == 120
    assert loaded.invalidate_tags("t") == 1
    assert Block.load(f"{cls.get_block_type_slug()}/rt-{unique}").namespace == f"ns-{unique}"


@pytest.mark.parametrize("cls", BLOCK_CLASSES, ids=lambda c: c.__name__)
def test_pickle_round_trip_rebuilds_the_memory(
    cls: type[MemoryBlock], make_block: MakeBlock
) -> None:
    block = make_block(cls, ttl=60)
    block.set("k", [1, 2])
    assert block._lazy.memory is not None
    copy = pickle.loads(pickle.dumps(block))
    assert copy._lazy.memory is None  # the memory was not pickled
    assert copy.model_dump() == block.model_dump()
    assert copy.get("k") == [1, 2]
    assert copy.memory is not block.memory


def test_secrets_stay_out_of_repr_logs_and_url(caplog: pytest.LogCaptureFixture) -> None:
    block = RedisMemory.from_connection_string("redis://app:s3cr%2Ft@127.0.0.1:1/0", timeout=0.2)
    assert block.url == "redis://app@127.0.0.1:1/0"
    assert block.password.get_secret_value() == "s3cr/t"
    s3 = S3Memory(url="s3://bucket/p", aws_access_key_id="AK", aws_secret_access_key="topsecret")
    mongo = MongoDBMemory(url="mongodb://u:m0ngopw@127.0.0.1:1/db", timeout=0.2)
    for thing, secret in ((block, "s3cr"), (s3, "topsecret"), (mongo, "m0ngopw")):
        for text in (repr(thing), str(thing), repr(thing.memory), str(thing.model_dump_json())):
            assert secret not in text
    caplog.set_level(logging.DEBUG)
    for thing in (block, mongo):
        with pytest.raises(pm.BackendUnavailable) as info:
            thing.get("k")
        assert "s3cr" not in str(info.value) and "m0ngopw" not in str(info.value)
    assert "s3cr" not in caplog.text and "m0ngopw" not in caplog.text


def test_password_given_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="password"):
        RedisMemory(url="redis://:a@h:1/0", password=SecretStr("b"))


def test_assignments_are_validated() -> None:
    block = RedisMemory()
    with pytest.raises(ValidationError, match="ttl"):
        block.ttl = -1
    with pytest.raises(ValidationError, match="password field"):
        block.url = "redis://:pw@h:1/0"
    block.url, block.ttl = "redis://h:2/1", 30
    assert (block.url, block.ttl, block.password) == ("redis://h:2/1", 30, None)


@pytest.mark.parametrize(
    ("cls", "fields", "field"),
    [
        (RedisMemory, {"url": "http://localhost:6379"}, "url"),
        (RedisMemory, {"timeout": 0}, "timeout"),
        (RedisMemory, {"key_prefix": "a b"}, "key_prefix"),
        (RedisMemory, {"ttl": -5}, "ttl"),
        (RedisMemory, {"namespace": ""}, "namespace"),
        (MongoDBMemory, {"url": "redis://x"}, "url"),
        (MongoDBMemory, {"collection": "a$b"}, "collection"),
        (S3Memory, {"url": "s3://ab/p"}, "url"),
        (S3Memory, {"url": "s3://bucket", "endpoint_url": "ftp://x"}, "endpoint_url"),
        (JsonMemory, {"path": ""}, "path"),
        (SqliteMemory, {"ttl": "soon"}, "ttl"),
        (InProcessMemory, {"max_entries": 0}, "max_entries"),
        (InProcessMemory, {"name": "a/b"}, "name"),
        (ParquetArchiveMemory, {"url": "redis://h/0"}, "url"),
        (ParquetArchiveMemory, {"url": "s3://ab/p"}, "url"),
        (ParquetArchiveMemory, {"url": "file://host/dir"}, "url"),
        (ParquetArchiveMemory, {"url": "/a", "compression": "lzma"}, "compression"),
        (ParquetArchiveMemory, {"url": "/a", "row_group_size": "10"}, "row_group_size"),
        (ParquetArchiveMemory, {"url": "/a", "row_group_size": "big"}, "row_group_size"),
    ],
)
def test_bad_values_name_the_field(
    cls: type[MemoryBlock], fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        cls(**fields)
    locations = {error["loc"][0] for error in info.value.errors() if error["loc"]}
    assert field in locations, info.value


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"unknown field.*urll"):
        RedisMemory(urll="redis://localhost")


def test_ttl_takes_a_timedelta() -> None:
    import datetime as dt

    assert SqliteMemory(path="x.db", ttl=dt.timedelta(minutes=2)).ttl == 120


def test_refresh_and_compression_are_applied(tmp_path: Path) -> None:
    from prefect_memory.blocks import HybridMemoryBlock, TieredMemoryBlock
    from prefect_memory.blocks.composite_parts import MemoryTier

    sqlite = SqliteMemory(path=str(tmp_path / "m.db"), ttl=60, refresh=True, compression=True)
    hybrid = HybridMemoryBlock(primary=InProcessMemory(name=f"h-{tmp_path.name}"),
                          secondary=SqliteMemory(path=str(tmp_path / "h.db")),
                          refresh=True, compression=True)  # fmt: skip
    tiered = TieredMemoryBlock(tiers=[MemoryTier(name="hot", block=InProcessMemory(name="t1"))],
                          refresh=True, compression=True)  # fmt: skip
    for block in (sqlite, hybrid, tiered):
        memory = block.memory
        assert memory.refresh is True and memory.codec.compression is True, block
    sqlite.set("big", "x" * 10_000, ttl=60)
    first = sqlite.info("big").expires_at
    sqlite.get("big")  # a sliding read pushes the expiry
    assert sqlite.info("big").expires_at >= first
    raw = sqlite.memory.backend.get_many("default", ["big"], now=0.0)["big"].value
    assert raw[0] == 0x02 and len(raw) < 1000  # stored zstd-compressed
    with pytest.raises(pm.ConfigError, match=r"memory\.pickle: a block never loads pickled"):
        blocks_from_config({"memory": {"backend": "memory", "pickle": True}})


def test_from_connection_string(tmp_path: Path) -> None:
    assert SqliteMemory.from_connection_string("sqlite:///data/m.db").path == "data/m.db"
    absolute = SqliteMemory.from_connection_string(f"sqlite:///{tmp_path}/m.db")
    assert absolute.path == f"{tmp_path}/m.db"
    assert JsonMemory.from_connection_string("json:///data/b.json", ttl=5).path == "data/b.json"
    block = InProcessMemory.from_connection_string("memory://hot?max_entries=10")
    assert (block.name, block.max_entries) == ("hot", 10)
    assert S3Memory.from_connection_string("s3://bucket/p", timeout=3).timeout == 3
    mongo = MongoDBMemory.from_connection_string("mongodb://u:pw@h:27017/db", collection="c")
    assert mongo.password.get_secret_value() == "pw" and "pw" not in mongo.url
    with pytest.raises(ValidationError, match="url"):
        RedisMemory.from_connection_string("mongodb://h")


@pytest.mark.parametrize(
    ("url", "stored", "opened"),
    [
        ("parquet::s3://lake/archive", "s3://lake/archive", "parquet::s3://lake/archive"),
        ("s3://lake/archive", "s3://lake/archive", "parquet::s3://lake/archive"),
        ("parquet:///rel/dir", "rel/dir", f"parquet:///{os.path.abspath('rel/dir')}"),
        ("parquet:////abs/dir", "/abs/dir", "parquet:////abs/dir"),
        ("file:///abs/dir", "/abs/dir", "parquet:////abs/dir"),
        ("/abs/a dir", "/abs/a dir", "parquet:////abs/a%20dir"),
    ],
)
def test_parquet_archive_locations(url: str, stored: str, opened: str) -> None:
    block = ParquetArchiveMemory.from_connection_string(url)
    assert block.url == stored
    assert block._memory_url() == opened
    s3 = stored.startswith("s3://")
    assert ("storage_options" in block._memory_options()) is s3


def test_parquet_archive_block_writes_a_dated_dataset(tmp_path: Path) -> None:
    block = ParquetArchiveMemory(url=str(tmp_path / "lake"), compression="zstd", namespace="ev")
    block.set_many({f"e{i}": {"i": i} for i in range(5)})
    assert block.get_many(["e1", "e4"]) == {"e1": {"i": 1}, "e4": {"i": 4}}
    files = list((tmp_path / "lake").rglob("*.parquet"))
    assert files and all(f.parent.name.startswith("date=") for f in files)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert sorted(block.query()["key"]) == [f"e{i}" for i in range(5)]
    block.delete("e0")
    block.compact()
    assert sorted(block.query()["key"]) == [f"e{i}" for i in range(1, 5)]


def test_odd_local_paths_survive_the_url(tmp_path: Path) -> None:
    block = SqliteMemory(path=str(tmp_path / "a dir?" / "m%20.db"))
    block.set("k", 1)
    assert (tmp_path / "a dir?" / "m%20.db").exists()


def test_class_delete_removes_the_block_document_instance_delete_an_entry(
    make_block: MakeBlock, unique: str
) -> None:
    block = make_block(RedisMemory)
    block.save(f"del-{unique}")
    block.set("k", 1)
    assert block.delete("k") is True
    assert block.delete("k") is False
    assert RedisMemory.load(f"del-{unique}").namespace == block.namespace  # still saved
    RedisMemory.delete(f"del-{unique}")
    with pytest.raises(ValueError, match="Unable to find block document"):
        RedisMemory.load(f"del-{unique}")


def test_async_class_and_instance_delete(make_block: MakeBlock, unique: str) -> None:
    block = make_block(SqliteMemory)
    block.save(f"adel-{unique}")

    async def scenario() -> None:
        await block.aset("k", 1)
        assert await block.adelete("k") is True
        await SqliteMemory.adelete(f"adel-{unique}")
        with pytest.raises(ValueError, match="Unable to find block document"):
            await SqliteMemory.aload(f"adel-{unique}")

    asyncio.run(scenario())


def test_memory_api_and_async_twins(make_block: MakeBlock) -> None:
    block = make_block(SqliteMemory, ttl=60)
    block.set_many({"a:1": 1, "a:2": 2, "b:1": 3}, tags=["grp"])
    assert block.get_many(["a:1", "a:2", "zz"]) == {"a:1": 1, "a:2": 2}
    assert block.list_keys("a:*") == ["a:1", "a:2"]
    assert block.exists("b:1") and block.info("b:1").tags == ("grp",)
    assert block.info("b:1").ttl == 60
    assert block.delete_many(["a:1", "zz"]) == 1
    assert block.invalidate_tags("grp") == 2

    async def scenario() -> None:
        await block.aset("x", {"y": 1}, ttl=None)
        assert await block.aget("x") == {"y": 1}
        assert await block.aexists("x")
        await block.aset_many({"m:1": 1, "m:2": 2})
        assert await block.aget_many(["m:1", "m:2"]) == {"m:1": 1, "m:2": 2}
        assert sorted(await block.alist_keys("m:*")) == ["m:1", "m:2"]
        assert (await block.ainfo("x")).expires_at is None
        assert await block.adelete_many(["m:1"]) == 1
        assert await block.ainvalidate_tags("none") == 0
        assert await block.apurge_expired() == 0
        assert await block.aclear() == 2

    asyncio.run(scenario())


def test_dict_of_a_block_is_its_fields(make_block: MakeBlock) -> None:
    block = make_block(InProcessMemory)
    block.set("k", 1)
    assert dict(block) == {name: getattr(block, name) for name in type(block).model_fields}


def test_changing_a_field_or_copying_rebuilds_the_memory(make_block: MakeBlock) -> None:
    block = make_block(InProcessMemory, namespace="one")
    first = block.memory
    other = block.model_copy(update={"namespace": "two"})
    assert other.memory.namespace == "two" and block.memory is first
    block.namespace = "three"
    assert block.memory is not first and block.memory.namespace == "three"


def test_prefect_collections_entry_point() -> None:
    points = importlib.metadata.entry_points(group="prefect.collections")
    assert {p.name: p.value for p in points}.get("prefect_memory") == "prefect_memory.blocks"


def test_block_register_cli_registers_every_block() -> None:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect = Path(sys.executable).with_name("prefect")
    done = subprocess.run(
        [str(prefect), "block", "register", "-m", "prefect_memory.blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Successfully registered {len(BLOCKS)} blocks" in done.stdout
    for cls in BLOCK_CLASSES:
        assert cls.get_block_type_name() in done.stdout

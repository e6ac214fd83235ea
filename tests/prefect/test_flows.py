"""Maintenance flows on the Prefect harness: reports as artifacts, schedules as deployments."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

import prefect_memory as pm
from prefect_memory.blocks import (
    HybridMemoryBlock,
    InProcessMemory,
    MemoryTier,
    ParquetArchiveMemory,
    RedisMemory,
    SqliteMemory,
    TieredMemoryBlock,
    TierRule,
)
from prefect_memory.flows import (
    archive_to_parquet,
    cleanup_expired,
    deployments_from_config,
    migrate_tiers,
    sync_hybrid,
)


def _artifacts(key: str) -> list[Any]:
    async def read() -> list[Any]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    return asyncio.run(read())


@pytest.fixture
def tiered(tmp_path: Path, unique: str) -> TieredMemoryBlock:
    block = TieredMemoryBlock(
        namespace="flows",
        tiers=[
            MemoryTier(name="hot", block=InProcessMemory(name=f"hot-{unique}")),
            MemoryTier(name="warm", block=SqliteMemory(path=str(tmp_path / "warm.db"))),
        ],
        rules=[TierRule(**{"from": "hot", "to": "warm", "condition": "accessCount < 1"})],
    )
    block.save_with_parts(f"flows-{unique}", overwrite=True)
    return block


def test_migrate_tiers_by_name_with_artifact(tiered: TieredMemoryBlock, unique: str) -> None:
    tiered.set_many({"a": 1, "b": 2})
    tiered.get("b")
    dry = migrate_tiers(f"tiered-memory/flows-{unique}", dry_run=True)
    assert dry["moved"] == {"hot -> warm: accessCount < 1": 1}
    assert tiered.info("a").tier == "hot"
    done = migrate_tiers(tiered)
    assert done["moved"] == {"hot -> warm: accessCount < 1": 1}
    assert tiered.info("a").tier == "warm" and tiered.info("b").tier == "hot"
    artifacts = _artifacts(f"migration-flows-{unique}")
    assert artifacts and artifacts[0].type == "table"


def test_archive_to_parquet_loads_a_tiered_block_with_an_s3_archive_by_name(
    redis_server: Any, s3_server: Any, unique: str
) -> None:
    """Redis hot tier, Parquet archive on the S3 server: saved blocks, the flow by name."""
    s3_server.make_bucket("pm-archive")
    archive = ParquetArchiveMemory(
        url=f"s3://pm-archive/{unique}",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
    )
    block = TieredMemoryBlock(
        namespace="orders",
        tiers=[
            MemoryTier(name="hot", block=RedisMemory(url=redis_server.url, key_prefix=unique)),
            MemoryTier(name="cold", block=archive, patterns=["archive:*"]),
        ],
        rules=[TierRule(**{"from": "hot", "to": "cold", "condition": "accessCount < 1"})],
    )
    saved = block.save_with_parts(f"shop-{unique}")
    assert ("parquet-archive-memory", f"shop-{unique}-cold") in saved
    block.set_many({f"order:{i}": {"total": i} for i in range(40)})
    block.get_many([f"order:{i}" for i in range(30)])  # 30 read: they stay hot
    for round_ in range(2):  # two archive files in the partition, compacted into one
        block.set_many({f"late:{round_}:{i}": i for i in range(5)})
        result = archive_to_parquet(f"tiered-memory/shop-{unique}")
        moved = 10 + 5 if round_ == 0 else 5
        assert result["moved"] == {"hot -> cold: accessCount < 1": moved}
    assert result["compacted"]["cold"]["files_after"] == 1
    assert result["compacted"]["cold"]["files_before"] >= 2

    files = archive.memory.backend.conn.fs.find(f"pm-archive/{unique}")
    data = [f for f in files if f.endswith(".parquet") and "/date=" in f]
    assert len(data) == 1, files  # one date partition, compacted into one file

    loaded = TieredMemoryBlock.load(f"shop-{unique}")
    assert type(loaded.tiers[1].block) is ParquetArchiveMemory
    assert loaded.info("order:35").tier == "cold" and loaded.info("order:5").tier == "hot"
    assert loaded.get("order:35") == {"total": 35}  # read from the archive (and promoted)
    assert loaded.info("order:35").tier == "hot"
    archived = ParquetArchiveMemory.load(f"shop-{unique}-cold").model_copy(
        update={"namespace": "orders"}
    )
    frame = archived.query(latest_only=True)
    assert {f"order:{i}" for i in range(30, 40)} - set(frame["key"]) == {"order:35"}  # promoted
    artifacts = _artifacts(f"archive-shop-{unique}")
    assert artifacts and artifacts[0].type == "table"


def test_migrate_tiers_refuses_a_plain_memory(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="tiered memory"):
        migrate_tiers(SqliteMemory(path=str(tmp_path / "x.db")))


def test_cleanup_expired(tmp_path: Path) -> None:
    block = SqliteMemory(path=str(tmp_path / "c.db"), namespace="clean")
    block.set("old", 1, ttl=0.2)
    block.set("new", 2)
    time.sleep(0.4)
    assert cleanup_expired(block) == 1
    assert block.memory.backend.get_many("clean", ["old", "new"], now=time.time()).keys() == {"new"}


def test_sync_hybrid(tmp_path: Path, unique: str) -> None:
    block = HybridMemoryBlock(
        namespace="sync",
        primary=InProcessMemory(name=f"p-{unique}"),
        secondary=SqliteMemory(path=str(tmp_path / "s.db")),
    )
    block.set("k", 1)
    now = time.time()
    block.memory.backend.secondary.put_many(
        "sync", {"only-secondary": pm.Record(block.memory.codec.encode(2), now, now, now)}, now=now
    )
    report = sync_hybrid(block)
    assert report["copied_to_primary"] == 1
    assert block.get("only-secondary") == 2


def test_schedules_become_deployments(tiered: TieredMemoryBlock, unique: str) -> None:
    config = {
        "memory": {"backend": "memory"},
        "maintenance": {
            "block": f"tiered-memory/flows-{unique}",
            "schedules": {
                "migrate_tiers": {"interval": 3600, "parameters": {"batch_size": 100}},
                "cleanup_expired": {"cron": "0 3 * * *"},
            },
        },
    }
    deployments = deployments_from_config(config)
    assert sorted(d.name for d in deployments) == [
        f"cleanup_expired-flows-{unique}",
        f"migrate_tiers-flows-{unique}",
    ]
    ids = [d.apply() for d in deployments]

    async def read() -> list[Any]:
        async with get_client() as client:
            return [await client.read_deployment(i) for i in ids]

    read_back = {d.name: d for d in asyncio.run(read())}
    migrate = read_back[f"migrate_tiers-flows-{unique}"]
    assert migrate.parameters == {"block": f"tiered-memory/flows-{unique}", "batch_size": 100}
    assert migrate.schedules[0].schedule.interval.total_seconds() == 3600
    assert read_back[f"cleanup_expired-flows-{unique}"].schedules[0].schedule.cron == "0 3 * * *"


def test_bad_schedules_are_listed() -> None:
    bad = {
        "schedules": {
            "migrate_tiers": {"interval": -1, "block": "tiered-memory/x"},
            "reticulate_splines": {"interval": 5},
            "cleanup_expired": {"interval": 5, "cron": "* * * * *", "block": "x/y"},
        }
    }
    with pytest.raises(pm.ConfigError) as info:
        deployments_from_config(bad)
    message = str(info.value)
    assert "migrate_tiers.interval" in message
    assert "reticulate_splines: unknown flow" in message
    assert "exactly one of 'interval'" in message

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
    HybridMemory,
    InProcessMemory,
    MemoryTier,
    SqliteMemory,
    TieredMemory,
    TierRule,
)
from prefect_memory.flows import (
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
def tiered(tmp_path: Path, unique: str) -> TieredMemory:
    block = TieredMemory(
        namespace="flows",
        tiers=[
            MemoryTier(name="hot", block=InProcessMemory(name=f"hot-{unique}")),
            MemoryTier(name="warm", block=SqliteMemory(path=str(tmp_path / "warm.db"))),
        ],
        rules=[TierRule(**{"from": "hot", "to": "warm", "condition": "accessCount < 1"})],
    )
    block.save_with_parts(f"flows-{unique}", overwrite=True)
    return block


def test_migrate_tiers_by_name_with_artifact(tiered: TieredMemory, unique: str) -> None:
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
    block = HybridMemory(
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


def test_schedules_become_deployments(tiered: TieredMemory, unique: str) -> None:
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

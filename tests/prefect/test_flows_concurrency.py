"""Overlapping maintenance runs (issue 14): the artifacts say when another actor got there first,
and every served or example deployment carries a concurrency limit of one run.

The concurrent actors are simulated deterministically: between the flow's read of its first
batch from the hot tier and its move, another migration moves two of the batch's keys (the
engine's own conditional move) and a user rewrites the third.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.states import Pending
from typer.testing import CliRunner

import prefect_memory as pm
from prefect_memory.blocks import (
    InProcessMemory,
    MemoryTier,
    ParquetArchiveMemory,
    SqliteMemory,
    TieredMemoryBlock,
    TierRule,
)
from prefect_memory.cli import app
from prefect_memory.flows import archive_to_parquet, deployments_from_config, migrate_tiers
from prefect_memory.flows.maintenance import SKIPPED_ROW
from prefect_memory.plugins.inprocess import InProcessBackend

ROOT = Path(__file__).resolve().parents[2]
RULE = "hot -> cold: accessCount < 1"
NOTE = "3 keys skipped: another migration or a writer moved, changed or deleted them first"


def _latest_artifact(key: str) -> Any:
    async def read() -> list[Any]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    artifacts = asyncio.run(read())
    assert artifacts, f"no artifact {key!r}"
    return max(artifacts, key=lambda a: a.created)


@pytest.fixture
def contended(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Make the next migration meet another migration and a writer on its first batch.

    Set ``seen["block"]`` to the tiered block to arm it: right after the migration's read of
    a batch of 3 keys from the hot tier, another migration moves two of them (the engine's own
    ``TieredBackend.move``) and a user rewrites the third, before the run moves them itself.
    """
    real_get_many = InProcessBackend.get_many
    seen: dict[str, Any] = {"block": None}

    def get_many(self: InProcessBackend, ns: str, keys: Any, **kwargs: Any) -> Any:
        found = real_get_many(self, ns, keys, **kwargs)
        block = seen["block"]
        if block is None or seen.get("done") or kwargs.get("touch") or len(found) != 3:
            return found
        seen["done"] = True
        keys = sorted(found)
        now = time.time()
        tiered = block.memory.backend
        other = tiered.move(ns, {k: found[k] for k in keys[:2]}, 0, 1, now=now)
        assert other == set(keys[:2])  # another migration moved two keys first...
        block.set(keys[2], "rewritten")  # ...and a user rewrote the third meanwhile
        seen["taken"], seen["rewritten"] = keys[:2], keys[2]
        return found

    monkeypatch.setattr(InProcessBackend, "get_many", get_many)
    yield seen


def _tiered(cold: Any, unique: str, name: str) -> TieredMemoryBlock:
    block = TieredMemoryBlock(
        namespace="overlap",
        tiers=[
            MemoryTier(name="hot", block=InProcessMemory(name=f"hot-{unique}")),
            MemoryTier(name="cold", block=cold),
        ],
        rules=[TierRule(**{"from": "hot", "to": "cold", "condition": "accessCount < 1"})],
    )
    block.save_with_parts(name, overwrite=True)
    block.set_many({f"k{i}": i for i in range(6)})
    return block


def _check_state(block: TieredMemoryBlock, seen: dict[str, Any]) -> None:
    for key in seen["taken"]:  # where the other migration put them
        assert block.info(key).tier == "cold"
    assert block.info(seen["rewritten"]).tier == "hot"  # the writer's entry stays hot...
    assert block.get_many([f"k{i}" for i in range(6)]) == {  # ...and nothing is lost
        **{f"k{i}": i for i in range(6)},
        seen["rewritten"]: "rewritten",
    }


def test_migrate_tiers_artifact_says_another_migration_or_a_writer_got_there_first(
    tmp_path: Path, unique: str, contended: dict[str, Any]
) -> None:
    block = _tiered(SqliteMemory(path=str(tmp_path / "cold.db")), unique, f"ovl-{unique}")
    contended["block"] = block

    result = migrate_tiers(f"tiered-memory/ovl-{unique}", batch_size=3)

    assert result["skipped"] == 3 and result["contended"] is True
    assert result["moved"] == {RULE: 3}  # the second batch, untouched by anyone else
    artifact = _latest_artifact(f"migration-ovl-{unique}")
    assert NOTE in artifact.description, artifact.description
    assert artifact.description.startswith("Moved 3 entries"), artifact.description
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert {"rule": SKIPPED_ROW, "entries": 3} in rows and {"rule": RULE, "entries": 3} in rows
    _check_state(block, contended)

    again = migrate_tiers(f"tiered-memory/ovl-{unique}")  # alone now: no contention reported
    assert again["skipped"] == 0 and again["contended"] is False
    quiet = _latest_artifact(f"migration-ovl-{unique}").description
    assert "; no keys skipped (no other migration or writer got to them first)" in quiet


def test_archive_to_parquet_artifact_shows_moved_skipped_and_compaction(
    tmp_path: Path, unique: str, contended: dict[str, Any]
) -> None:
    archive = ParquetArchiveMemory(url=str(tmp_path / "lake"))
    block = _tiered(archive, unique, f"arc-{unique}")
    contended["block"] = block

    result = archive_to_parquet(f"tiered-memory/arc-{unique}", batch_size=3)

    assert result["skipped"] == 3 and result["contended"] is True
    assert result["moved"] == {RULE: 3}
    assert "cold" in result["compacted"]
    artifact = _latest_artifact(f"archive-arc-{unique}")
    description = artifact.description
    assert description.startswith("Moved 3 entries") and NOTE in description, description
    assert "compaction: cold: " in description and "files_after=1" in description
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert {"rule": SKIPPED_ROW, "entries": 3} in rows and {"rule": RULE, "entries": 3} in rows
    _check_state(block, contended)


# -- deployment concurrency limits -------------------------------------------------------
def _config(**maintenance: Any) -> dict[str, Any]:
    schedules = maintenance.pop(
        "schedules",
        {"migrate_tiers": {"interval": 3600}, "cleanup_expired": {"cron": "0 3 * * *"}},
    )
    return {
        "memory": {"backend": "memory"},
        "maintenance": {"block": "tiered-memory/shop", "schedules": schedules, **maintenance},
    }


def _limits(deployments: list[Any]) -> dict[str, tuple[int | None, str | None]]:
    return {
        d.name: (
            d.concurrency_limit,
            d.concurrency_options.collision_strategy.value if d.concurrency_options else None,
        )
        for d in deployments
    }


def test_served_deployments_run_one_at_a_time_by_default() -> None:
    assert _limits(deployments_from_config(_config())) == {
        "migrate_tiers-shop": (1, "CANCEL_NEW"),
        "cleanup_expired-shop": (1, "CANCEL_NEW"),
    }


def test_concurrency_limit_from_the_section_and_per_schedule() -> None:
    config = _config(
        concurrency_limit={"limit": 1, "collision_strategy": "enqueue"},
        schedules={
            "migrate_tiers": {"interval": 3600},
            "cleanup_expired": {"cron": "0 3 * * *", "concurrency_limit": None},
            "sync_hybrid": {
                "interval": 30,
                "block": "hybrid-memory/c",
                "concurrency_limit": {"limit": 2, "collision_strategy": "CANCEL_NEW"},
            },
        },
    )
    assert _limits(deployments_from_config(config)) == {
        "migrate_tiers-shop": (1, "ENQUEUE"),
        "cleanup_expired-shop": (None, None),
        "sync_hybrid-c": (2, "CANCEL_NEW"),
    }
    assert _limits(deployments_from_config(_config(concurrency_limit=None))) == {
        "migrate_tiers-shop": (None, None),
        "cleanup_expired-shop": (None, None),
    }


def test_bad_concurrency_limits_are_refused_all_at_once() -> None:
    config = _config(
        concurrency_limit=1,
        concurrency={"limit": 1},
        schedules={
            "migrate_tiers": {"interval": 60, "concurrency_limit": {"limit": 0}},
            "cleanup_expired": {
                "interval": 60,
                "concurrency_limit": {"collision_strategy": "QUEUE", "grace": 5},
            },
        },
    )
    with pytest.raises(pm.ConfigError) as info:
        deployments_from_config(config)
    message = str(info.value)
    assert "maintenance: unknown keys concurrency (expected" in message
    assert "maintenance.concurrency_limit: must be an object" in message
    assert "migrate_tiers.concurrency_limit.limit: must be a whole number >= 1, got 0" in message
    assert "cleanup_expired.concurrency_limit: unknown keys grace" in message
    assert "collision_strategy: must be one of ENQUEUE, CANCEL_NEW, got 'QUEUE'" in message


def test_the_server_cancels_a_second_run_of_a_served_deployment(unique: str) -> None:
    """The limit reaches the Prefect API: a run due while one holds the slot is cancelled."""
    config = _config(
        schedules={"migrate_tiers": {"interval": 3600, "block": f"tiered-memory/one-{unique}"}}
    )
    (deployment,) = deployments_from_config(config)
    deployment_id = deployment.apply()

    async def two_runs() -> tuple[Any, Any, Any]:
        async with get_client() as client:
            read = await client.read_deployment(deployment_id)
            first = await client.create_flow_run_from_deployment(deployment_id)
            second = await client.create_flow_run_from_deployment(deployment_id)
            taken = await client.set_flow_run_state(first.id, Pending())
            refused = await client.set_flow_run_state(second.id, Pending())
            return read, taken, refused

    read, taken, refused = asyncio.run(two_runs())
    assert read.global_concurrency_limit.limit == 1
    assert read.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    assert taken.state.is_pending()
    assert refused.state.is_cancelled(), refused
    assert "concurrency limit" in (refused.state.message or "")


def test_serve_list_shows_the_concurrency_limit(tmp_path: Path) -> None:
    config = _config(
        schedules={
            "migrate_tiers": {"interval": 900},
            "cleanup_expired": {
                "cron": "30 2 * * *",
                "concurrency_limit": {"collision_strategy": "ENQUEUE"},
            },
        }
    )
    path = tmp_path / "memory.json"
    path.write_text(json.dumps(config))
    env = {"COLUMNS": "250", "NO_COLOR": "1"}
    result = CliRunner().invoke(app, ["serve", str(path), "--list"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "1, CANCEL_NEW" in next(line for line in lines if "migrate_tiers-shop" in line)
    assert "1, ENQUEUE" in next(line for line in lines if "cleanup_expired-shop" in line)

    path.write_text(json.dumps(_config(concurrency_limit={"limit": "one"})))
    bad = CliRunner().invoke(app, ["serve", str(path), "--list"], env=env)
    assert bad.exit_code == 2 and "concurrency_limit.limit" in bad.output


def test_every_example_deployment_declares_a_concurrency_limit() -> None:
    """``examples/prefect.yaml`` (deployed for real by the ``ui`` test)."""
    spec = yaml.safe_load((ROOT / "examples" / "prefect.yaml").read_text())
    limits = {
        d["name"]: ConcurrencyLimitConfig.model_validate(d["concurrency_limit"])
        for d in spec["deployments"]
    }
    assert len(limits) == len(spec["deployments"]) == 4
    for limit in limits.values():
        assert limit.limit == 1
        assert limit.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW

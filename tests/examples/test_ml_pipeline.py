"""examples/ml_pipeline.py (the demo's flow) on Redis, the MongoDB wire server and S3."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.mongodb, pytest.mark.s3, pytest.mark.timeout(240)]

SIZES = {"users": 300, "days": 4, "requests": 60, "distinct_users": 12, "backfill_events": 3000}


def test_ml_pipeline_on_services(
    load_example: Callable[[str], ModuleType], redis_server: Any, mongo_server: Any,
    s3_server: Any, prefect_api: str, unique: str,
) -> None:  # fmt: skip
    example = load_example("ml_pipeline")
    bucket = s3_server.make_bucket("pm-examples")
    summary = example.main(
        f"{redis_server.url}?key_prefix=t{unique}",
        mongo_server.url + f"&collection=c{unique}",
        f"s3://{bucket}/{unique}",
        s3_endpoint=s3_server.endpoint_url, s3_key=s3_server.key, s3_secret=s3_server.secret,
        sizes=SIZES, prefect_api="current", verbose=False,
    )  # fmt: skip

    assert summary["profile"] == "services"
    tiers = summary["tiers"]
    assert tiers["hot"]["store"].startswith("redis://")
    assert tiers["warm"]["store"].startswith("mongodb://")
    assert tiers["cold"]["store"].startswith("parquet::s3://")
    before = {name: t["history"]["before migration"] for name, t in tiers.items()}
    assert before["hot"] == SIZES["users"] + 3  # vectors, model:v1, model:v2, model:production
    assert before["cold"] == 0
    # +2 h: unused features and the retired model leave hot; +2 d: idle warm entries archived
    after = {name: t["entries"] for name, t in tiers.items()}
    assert sum(after.values()) == sum(before.values())  # nothing lost, each entry once
    assert after["cold"] == summary["archive"]["rows"] > SIZES["users"] // 2
    assert after["hot"] == summary["cache"]["distinct users"] + 2  # served users + v2 + pointer
    assert summary["archive"]["files"] >= 1

    cache = summary["cache"]
    assert cache["requests"] == SIZES["requests"]
    assert cache["hits"] == SIZES["requests"] - cache["distinct users"]  # one miss per user
    assert cache["stored_results"] == cache["distinct users"]
    assert cache["ttl_seconds"] == 3600 and "RedisMemory" in cache["storage"]

    assert summary["models"]["production"] in ("v1", "v2")
    assert summary["models"]["versions"] == ["model:v1", "model:v2"]
    assert summary["downsampling"]["engine"].startswith("TimeSeries.downsample")
    assert summary["downsampling"]["points"] == SIZES["backfill_events"] + SIZES["requests"]
    assert summary["events"]["stream length"] == SIZES["backfill_events"] + SIZES["requests"]
    assert list(summary["steps"]) == [
        "Compute and cache features", "Train and version models",
        "Serve predictions (cached Prefect task)", "Record events and downsample",
        "Migrate tiers (+2 h)", "Archive to Parquet and compact (+2 d)",
    ]  # fmt: skip

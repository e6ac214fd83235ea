"""Tiered memory across three real stores: Redis (hot), MongoDB wire server (warm), S3 (cold)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from prefect_memory.tiers import TieredMemory

sys.path.insert(0, str(Path(__file__).parent))
from _migrate_worker import build

T0 = 1_700_000_000.0


@pytest.fixture
def spec(redis_server: Any, mongo_server: Any, s3_server: Any) -> dict[str, Any]:
    s3_server.make_bucket("pm-tiers")
    unique = uuid.uuid4().hex[:8]
    sep = "&" if "?" in mongo_server.url else "?"
    return {
        "redis": redis_server.url,
        "prefix": f"tier{unique}",
        "mongodb": f"{mongo_server.url}{sep}collection=tiers{unique}",
        "s3": f"s3://pm-tiers/{unique}",
        "storage_options": s3_server.storage_options,
        "namespace": "shop",
    }


def where(mem: TieredMemory) -> dict[str, list[str]]:
    return {t.name: sorted(t.backend.scan(mem.namespace, None, now=mem.clock())) for t in mem.tiers}


def test_routing_rules_promotion_on_real_stores(spec: dict[str, Any]) -> None:
    mem = build(spec, T0)
    mem.set_many({"session:1": 1, "session:2": 2, "user:1": "u", "archive:1": "a", "misc": 0})
    assert where(mem) == {
        "hot": ["misc", "session:1", "session:2"],
        "warm": ["user:1"],
        "cold": ["archive:1"],
    }
    for _ in range(5):
        mem.get("session:2")  # busy: stays hot
    later = build(spec, T0 + 3601)
    dry = later.migrate(dry_run=True)
    assert sorted(k for k, _, _ in dry.planned) == ["misc", "session:1"]
    assert where(later)["hot"] == ["misc", "session:1", "session:2"]
    report = later.migrate()
    assert report.moved == {"hot -> warm: accessCount < 5 AND age > 3600": 2}
    assert where(later)["warm"] == ["misc", "session:1", "user:1"]
    much_later = build(spec, T0 + 3601 + 86401)
    much_later.migrate()
    assert where(much_later)["cold"] == ["archive:1", "misc", "session:1", "user:1"]
    assert much_later.get("session:1") == 1  # promoted home (hot) on read
    assert much_later.info("session:1").tier == "hot"
    assert much_later.get("user:1") == "u"  # home is warm
    assert where(much_later) == {
        "hot": ["session:1", "session:2"],
        "warm": ["user:1"],
        "cold": ["archive:1", "misc"],
    }
    much_later.clear()


def test_migration_killed_half_way_then_rerun(spec: dict[str, Any]) -> None:
    mem = build(spec, T0)
    data = {f"session:{i:03d}": {"i": i} for i in range(60)}
    mem.set_many(data)
    env = {**os.environ, "PM_TIER_SPEC": json.dumps(spec), "PM_NOW": str(T0 + 7200)}
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "_migrate_worker.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    batches = 0
    deadline = time.monotonic() + 60
    assert worker.stdout is not None
    while batches < 4 and time.monotonic() < deadline:
        line = worker.stdout.readline()
        if not line:
            break
        batches += line.startswith("batch")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert batches == 4, worker.stderr.read() if worker.stderr else ""
    later = build(spec, T0 + 7200)
    half = where(later)
    assert 0 < len(half["warm"]) < 60  # killed mid-way
    assert later.get_many(list(data)) == data  # every entry readable right after the kill
    later = build(spec, T0 + 7200)
    later.migrate(batch_size=7)
    after = where(later)
    assert after["hot"] == [] and after["cold"] == []
    assert after["warm"] == sorted(data)  # each entry exactly once
    assert later.get_many(list(data)) == data
    later.clear()


def test_budget_demotes_lru_on_real_stores(spec: dict[str, Any]) -> None:
    mem = build(spec, T0)
    mem.tiers[0].max_entries = 3  # hot Redis holds three entries at most
    clock = [T0]
    mem.clock = lambda: clock[0]
    for i in range(6):
        clock[0] += 1
        mem.set(f"session:{i}", i)
    clock[0] += 1
    mem.get("session:0")  # most recently used: stays hot
    report = mem.migrate()
    assert report.moved == {"hot -> warm: over budget (LRU)": 3}
    assert where(mem)["hot"] == ["session:0", "session:4", "session:5"]
    assert where(mem)["warm"] == ["session:1", "session:2", "session:3"]
    assert mem.get_many([f"session:{i}" for i in range(6)]) == {f"session:{i}": i for i in range(6)}
    mem.clear()


@pytest.mark.parametrize(
    "condition",
    [
        "accessCount < 2 AND age > 3600",
        "lastAccess > 100 OR tag == 'stale'",
        "NOT (accessCount >= 1) AND idle >= 50",
        "ttlLeft < 450",
        "ttlLeft > 550 AND tag != 'pinned'",
    ],
)
def test_rules_pushed_down_to_mongodb_move_exactly_the_same(
    spec: dict[str, Any], condition: str
) -> None:
    from prefect_memory.plugins.mongodb import MongoBackend
    from prefect_memory.plugins.sqlite import SqliteBackend
    from prefect_memory.tiers import Tier, TieredMemory

    base = time.time()  # MongoDB's TTL index works in real time: expiries must be ahead

    def memory(now: float) -> TieredMemory:
        tiers = [
            Tier("warm", MongoBackend.from_url(spec["mongodb"])),
            Tier("cold", SqliteBackend(f"/tmp/pm-push-{spec['prefix']}.db")),
        ]
        rules = [{"from": "warm", "to": "cold", "condition": condition}]
        return TieredMemory(tiers, rules, namespace="push", clock=lambda: now, promote="never")

    mem = memory(base)
    for i in range(12):
        tags = ["stale"] if i % 4 == 0 else ["pinned"] if i % 5 == 0 else []
        mem.set(f"k{i}", i, ttl=None if i % 3 else 3600 + i * 100, tags=tags)
    later = memory(base + 20)
    for i in range(0, 12, 2):
        later.get(f"k{i}")
    judge = memory(base + 3700)
    expected = {
        k
        for k, r in judge.tiers[0]
        .backend.get_many("push", [f"k{i}" for i in range(12)], now=base + 3700)
        .items()
        if judge.backend.rules[0].condition.matches(r, base + 3700)
    }
    assert 0 < len(expected) < 12  # the rule selects some entries, not all
    report = judge.migrate()
    assert report.pushed_down == 1  # the warm tier was queried, not scanned
    assert set(where(judge)["cold"]) == expected
    assert report.scanned == len(expected)  # only the candidates were read
    judge.clear()

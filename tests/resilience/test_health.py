"""health(): every store of any composition, checked at once and within a bound."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.resilience import CircuitBreaker, HybridMemory, ResilientBackend, health
from prefect_memory.tiers import Tier, TieredMemory
from servers import RedisServer


def test_plain_memory(tmp_path: Path) -> None:
    mem = pm.open_memory(f"sqlite:///{tmp_path}/m.db")
    mem.set("k", "v" * 1000)
    report = health(mem)
    (store,) = report.stores
    assert report.ok and store.path == "store" and store.kind == "SqliteBackend"
    assert store.reachable and store.latency_ms is not None and store.memory_used > 1000
    assert store.breaker is None and store.pressure is None
    assert report.rows()[0]["store"] == "store"


def test_hybrid_reports_journal_backlog_and_breakers(tmp_path: Path, flaky: Any) -> None:
    primary = flaky()
    mem = HybridMemory(primary, f"sqlite:///{tmp_path}/s.db", strategy="write-behind",
                       journal=str(tmp_path / "j.db"), flush_interval=60, namespace="h",
                       breaker=CircuitBreaker(failure_threshold=1))  # fmt: skip
    mem.set_many({"a": 1, "b": 2})
    primary.down = True
    mem.set("c", 3)  # opens the primary's breaker, queued for the primary
    report = mem.health()
    assert [s.path for s in report.stores] == ["journal", "primary", "secondary"]
    journal = report.store("journal")
    assert journal.journal_backlog == {"primary": 1, "secondary": 3}
    assert journal.details["primary_down_since"] is not None
    down = report.store("primary")
    assert not down.reachable and down.breaker == "open" and "down" in (down.error or "")
    assert report.store("secondary").reachable and not report.ok


def test_tiers_report_their_budgets(tmp_path: Path) -> None:
    mem = TieredMemory(
        [Tier("hot", InProcessBackend(max_entries=50), max_entries=4),
         Tier("warm", SqliteBackend(str(tmp_path / "w.db")), max_bytes=10_000)],
        namespace="t",
    )  # fmt: skip
    mem.set_many({f"k{i}": "x" * 100 for i in range(5)})
    report = health(mem)
    hot, warm = report.store("tier:hot"), report.store("tier:warm")
    assert (hot.entries, hot.max_entries, hot.pressure) == (5, 4, 1.25)  # over budget
    assert warm.entries == 0 and warm.max_bytes == 10_000 and warm.bytes == 0
    assert report.under_pressure() == [hot]


def test_a_stalled_store_is_reported_within_the_timeout(flaky: Any) -> None:
    store = flaky()
    store.stall()
    try:
        began = time.monotonic()
        report = health(pm.Memory(ResilientBackend(store, breaker=CircuitBreaker()), "ns"),
                        timeout=0.3)  # fmt: skip
        assert time.monotonic() - began < 1.0
        (item,) = report.stores
        assert not item.reachable and "no answer within 0.3s" in (item.error or "")
        assert item.breaker == "closed"  # a health check never moves a breaker
    finally:
        store.release()


@pytest.mark.redis
def test_redis_used_memory_against_maxmemory() -> None:
    with RedisServer(extra_args=["--maxmemory", "8mb"]) as server:
        mem = pm.open_memory(server.url, namespace="h")
        mem.set_many({f"k{i}": "x" * 10_000 for i in range(100)})
        (item,) = health(mem).stores
        assert item.memory_limit == 8 * 1024 * 1024
        assert 1_000_000 < item.memory_used < item.memory_limit
        assert 0.1 < (item.pressure or 0) < 1 and item.details["maxmemory_policy"] == "noeviction"


@pytest.mark.mongodb
def test_mongodb_collection_size(mongo_server: Any) -> None:
    sep = "&" if "?" in mongo_server.url else "?"
    mem = pm.open_memory(f"{mongo_server.url}{sep}collection=h{uuid.uuid4().hex[:8]}")
    mem.set_many({f"k{i}": "x" * 1000 for i in range(20)})
    (item,) = health(mem).stores
    assert item.reachable and item.memory_used > 20_000 and item.details["documents"] == 20

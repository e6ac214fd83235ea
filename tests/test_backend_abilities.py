"""Declared abilities: what each backend declares is what it implements, and callers read it.

A backend declares its optional abilities (``capabilities``, ``usage()``, ``children()``,
``scan_query``, ``url``) and every caller (health, the CLI, migration) reads the
declaration instead of testing for methods, class names or private attributes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.cli import _parts
from prefect_memory.plugins.base import Backend, StoreUsage, walk
from prefect_memory.plugins.fs import FsspecBackend
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.plugins.jsonfile import JsonFileBackend
from prefect_memory.plugins.mongodb import MongoBackend
from prefect_memory.plugins.redisdb import RedisBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.registry import open_backend
from prefect_memory.resilience import CircuitBreaker, HybridBackend, ResilientBackend, health
from prefect_memory.tiers import Tier, TieredBackend, TieredMemory

# -- every store, built without touching a server --------------------------------------------
STORES: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda tmp: InProcessBackend(),
    "sqlite": lambda tmp: SqliteBackend(str(tmp / "s.db")),
    "json": lambda tmp: JsonFileBackend(str(tmp / "j.json")),
    "file": lambda tmp: FsspecBackend(f"file://{tmp}/fs"),
    "redis": lambda tmp: RedisBackend("redis://127.0.0.1:1/0"),
    "mongodb": lambda tmp: MongoBackend("mongodb://127.0.0.1:1/db"),
    "parquet": lambda tmp: open_backend(f"parquet:///{tmp}/archive"),
    "resilient-mongodb": lambda tmp: ResilientBackend(MongoBackend("mongodb://127.0.0.1:1/db")),
    "tiered": lambda tmp: TieredBackend([Tier("hot", InProcessBackend())]),
    "hybrid": lambda tmp: HybridBackend(
        InProcessBackend(), SqliteBackend(str(tmp / "h.db")), journal=str(tmp / "j.db")
    ),
}
#: Stores that report how full they are.
REPORTS_USAGE = {"memory", "sqlite", "redis", "mongodb"}


def _overrides(backend: Backend, name: str) -> bool:
    return getattr(type(backend), name) is not getattr(Backend, name)


@pytest.mark.parametrize("name", STORES)
def test_pushdown_is_declared_iff_scan_query_is_implemented(name: str, tmp_path: Path) -> None:
    backend = STORES[name](tmp_path)
    assert backend.capabilities.pushdown == _overrides(backend, "scan_query")


@pytest.mark.parametrize("name", list(STORES))
def test_usage_children_and_url_are_declared(name: str, tmp_path: Path) -> None:
    backend = STORES[name](tmp_path)
    assert _overrides(backend, "usage") == (name in REPORTS_USAGE)
    composed = name in ("tiered", "hybrid", "resilient-mongodb")
    assert bool(backend.children()) == composed == _overrides(backend, "children")
    assert isinstance(backend.url, str) and backend.url
    assert backend.shown_url == backend.url  # no secret in any of these


def test_scan_query_without_pushdown_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match=r"SqliteBackend has no query pushdown"):
        SqliteBackend(str(tmp_path / "s.db")).scan_query("ns", {"n": 1}, now=0.0)


def test_a_backend_without_a_url_has_an_empty_one() -> None:
    bare = InProcessBackend()
    del bare.url  # as a third-party store that never sets one
    assert bare.url == "" and bare.shown_url == "" and repr(bare) == "InProcessBackend('')"
    assert ResilientBackend(bare).url == "InProcessBackend"


def test_shown_url_masks_a_password_given_in_the_url() -> None:
    backend = FsspecBackend("ftp://bob:hunter2@files.local/memory")
    assert backend.shown_url == "ftp://bob:***@files.local/memory"
    assert "hunter2" not in repr(backend)


# -- a tiered memory over a hybrid one -----------------------------------------------------------
@pytest.fixture
def tiered_over_hybrid(tmp_path: Path) -> Iterator[TieredMemory]:
    hybrid = HybridBackend(
        InProcessBackend(),
        ResilientBackend(SqliteBackend(str(tmp_path / "s.db")), breaker=CircuitBreaker()),
        journal=str(tmp_path / "j.db"),
    )
    cold = SqliteBackend(str(tmp_path / "c.db"))
    mem = TieredMemory([Tier("hot", hybrid, max_entries=10), Tier("cold", cold)], namespace="t")
    yield mem
    mem.backend.close()


def test_walk_visits_a_tiered_over_hybrid_composition(tiered_over_hybrid: TieredMemory) -> None:
    parts = [
        (p.path, type(p.backend).__name__, p.role, p.depth)
        for p in walk(tiered_over_hybrid.backend)
    ]
    assert parts == [
        ("", "TieredBackend", "", 0),
        ("tier:hot", "HybridBackend", "tier:hot", 1),
        ("tier:hot/primary", "InProcessBackend", "primary", 2),
        ("tier:hot/secondary", "ResilientBackend", "secondary", 2),
        ("tier:hot/secondary", "SqliteBackend", "", 3),
        ("tier:cold", "SqliteBackend", "tier:cold", 1),
    ]
    first = [p.path for p in walk(tiered_over_hybrid.backend, depth=1)]
    assert first == ["", "tier:hot", "tier:cold"]


def test_health_and_cli_read_the_same_walk(tiered_over_hybrid: TieredMemory) -> None:
    tiered_over_hybrid.set_many({"a": 1, "b": 2})
    report = health(tiered_over_hybrid)
    assert [(s.path, s.kind) for s in report.stores] == [
        ("tier:hot/journal", "Journal"),
        ("tier:hot/primary", "InProcessBackend"),
        ("tier:hot/secondary", "SqliteBackend"),
        ("tier:cold", "SqliteBackend"),
    ]
    assert report.ok and report.store("tier:hot/secondary").breaker == "closed"
    assert report.store("tier:hot/primary").entries == 2  # usage() of the in-process store
    assert report.store("tier:cold").memory_used > 0  # usage() of the SQLite file
    labels = [(label, type(b).__name__) for label, b in _parts(tiered_over_hybrid)]
    assert labels == [("tier hot", "HybridBackend"), ("tier cold", "SqliteBackend")]


def test_migration_pushes_down_only_where_declared(tmp_path: Path) -> None:
    rules = [{"from": "hot", "to": "cold", "condition": "accessCount < 1"}]
    mem = TieredMemory(
        [Tier("hot", SqliteBackend(str(tmp_path / "h.db"))), Tier("cold", InProcessBackend())],
        rules=rules,
    )
    mem.set("k", 1)
    report = mem.migrate()
    assert report.pushed_down == 0 and report.moved == {"hot -> cold: accessCount < 1": 1}


# -- usage() against real servers ------------------------------------------------------------
@pytest.mark.redis
def test_redis_usage(redis_server: Any) -> None:
    backend = RedisBackend(redis_server.url)
    usage = backend.usage()
    assert isinstance(usage, StoreUsage) and usage.used_bytes and usage.used_bytes > 0
    assert usage.limit_bytes is None or usage.limit_bytes > 0
    assert "maxmemory_policy" in usage.details
    backend.close()


@pytest.mark.mongodb
def test_mongodb_usage_and_pushdown(mongo_server: Any) -> None:
    sep = "&" if "?" in mongo_server.url else "?"
    url = f"{mongo_server.url}{sep}collection=a{uuid.uuid4().hex[:8]}"
    rules = [{"from": "hot", "to": "cold", "condition": "accessCount < 1"}]
    mem = TieredMemory([Tier("hot", MongoBackend(url)), Tier("cold", InProcessBackend())],
                       rules=rules)  # fmt: skip
    mem.set_many({f"k{i}": "x" * 1000 for i in range(5)})
    usage = mem.backend.tiers[0].backend.usage()
    assert usage is not None and usage.used_bytes and usage.used_bytes > 5000
    assert usage.details["documents"] == 5
    report = mem.migrate()
    assert report.pushed_down == 1 and sum(report.moved.values()) == 5
    mem.backend.close()


def test_sqlite_usage(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "u.db"))
    mem = pm.Memory(backend, "u")
    mem.set("k", "v" * 5000)
    usage = backend.usage()
    files = [str(tmp_path / "u.db"), str(tmp_path / "u.db-wal")]
    assert usage is not None
    assert usage.used_bytes == sum(os.path.getsize(f) for f in files if os.path.exists(f)) > 5000
    assert SqliteBackend(":memory:").usage() is None


def test_a_store_reading_replicas_is_refused_as_a_hybrid_store() -> None:
    """read_from_replicas may read stale data: a hybrid decides replays on its reads."""
    from prefect_memory.errors import ConfigError
    from prefect_memory.plugins.inprocess import InProcessBackend
    from prefect_memory.plugins.redis import RedisBackend

    stale = RedisBackend("redis://127.0.0.1:1/0", cluster=True, read_from_replicas=True)
    fresh = RedisBackend("redis://127.0.0.1:1/0", cluster=True)
    assert stale.stale_reads and not fresh.stale_reads
    assert ResilientBackend(stale).stale_reads  # a wrapper says what its store says
    for primary, secondary in ((stale, InProcessBackend()), (InProcessBackend(), stale)):
        with pytest.raises(ConfigError, match="read_from_replicas"):
            HybridBackend(primary, secondary)
    HybridBackend(fresh, InProcessBackend()).close()
    from prefect_memory.tiers import Tier, TieredBackend

    with pytest.raises(ConfigError, match="tier 'hot' reads from replicas"):
        TieredBackend([Tier("hot", stale), Tier("warm", InProcessBackend())], [])

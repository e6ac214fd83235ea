"""Tiered memory on local stores: routing, promotion, rules, budgets, crash safety."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.base import Backend
from prefect_memory.plugins.fs import FsspecBackend
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.tiers import Tier, TieredMemory

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Crashing(Backend):
    """Wraps a real backend and raises once a chosen method has been called ``after`` times."""

    def __init__(self, inner: Backend, method: str, after: int = 0) -> None:
        super().__init__()
        self.inner, self.method, self.after, self.calls = inner, method, after, 0
        self.armed = True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Backend:  # pragma: no cover
        raise NotImplementedError

    def __getattribute__(self, name: str) -> Any:
        if name in Backend.__abstractmethods__ | {
            "put_absent_many",
            "delete_if_unchanged",
            "exists_many",
        }:
            inner = object.__getattribute__(self, "inner")
            if name == object.__getattribute__(self, "method") and object.__getattribute__(
                self, "armed"
            ):
                calls = object.__getattribute__(self, "calls")
                object.__setattr__(self, "calls", calls + 1)
                if calls >= object.__getattribute__(self, "after"):
                    object.__setattr__(self, "armed", False)
                    raise RuntimeError(f"injected crash in {name}")
            return getattr(inner, name)
        return object.__getattribute__(self, name)

    get_many = put_many = delete_many = scan = tagged = None  # type: ignore[assignment]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def three_tiers(tmp_path: Path, clock: Clock) -> Callable[..., TieredMemory]:
    def build(**kw: Any) -> TieredMemory:
        tiers = [
            Tier("hot", InProcessBackend(), patterns=("session:*", "cache:*")),
            Tier("warm", SqliteBackend(str(tmp_path / "warm.db")), patterns=("user:*",)),
            Tier("cold", FsspecBackend(f"file://{tmp_path}/cold"), patterns=("archive:*",)),
        ]
        rules = kw.pop(
            "rules",
            [
                {"from": "hot", "to": "warm", "condition": "accessCount < 5 AND age > 3600"},
                {"from": "warm", "to": "cold", "condition": "lastAccess > 86400"},
            ],
        )
        return TieredMemory(tiers, rules, namespace="t", clock=clock, **kw)

    return build


def where(mem: TieredMemory) -> dict[str, list[str]]:
    """Keys per tier, read from each tier's own store."""
    return {t.name: sorted(t.backend.scan(mem.namespace, None, now=mem.clock())) for t in mem.tiers}


def test_writes_route_by_pattern(three_tiers: Callable[..., TieredMemory]) -> None:
    mem = three_tiers()
    mem.set_many({"session:1": 1, "user:1": 2, "archive:1": 3, "other": 4})
    assert where(mem) == {
        "hot": ["other", "session:1"],
        "warm": ["user:1"],
        "cold": ["archive:1"],
    }
    assert {k: mem.info(k).tier for k in ["session:1", "user:1", "archive:1", "other"]} == {
        "session:1": "hot",
        "user:1": "warm",
        "archive:1": "cold",
        "other": "hot",
    }
    assert mem.get_many(["session:1", "user:1", "archive:1", "other"]) == {
        "session:1": 1,
        "user:1": 2,
        "archive:1": 3,
        "other": 4,
    }
    assert sorted(mem.keys()) == ["archive:1", "other", "session:1", "user:1"]


def test_rules_exactly_as_written(three_tiers: Callable[..., TieredMemory], clock: Clock) -> None:
    mem = three_tiers()
    mem.set_many({"session:idle": 1, "session:busy": 2, "session:young": 3})
    for _ in range(5):
        mem.get("session:busy")
    clock.now += 3600  # age == 3600: not > 3600 yet
    mem.set("session:young", 3)  # rewriting keeps created_at
    assert mem.migrate().total_moved == 0
    clock.now += 1
    report = mem.migrate()
    assert report.moved == {"hot -> warm: accessCount < 5 AND age > 3600": 2}
    assert where(mem)["warm"] == ["session:idle", "session:young"]
    assert where(mem)["hot"] == ["session:busy"]
    clock.now += 86400 + 1  # warm entries idle for a day -> cold
    report = mem.migrate()
    assert report.moved == {
        "warm -> cold: lastAccess > 86400": 2,
        "hot -> warm: accessCount < 5 AND age > 3600": 0,
    } or report.moved == {"warm -> cold: lastAccess > 86400": 2}
    assert where(mem)["cold"] == ["session:idle", "session:young"]


def test_dry_run_moves_nothing(three_tiers: Callable[..., TieredMemory], clock: Clock) -> None:
    mem = three_tiers()
    mem.set_many({f"session:{i}": i for i in range(10)})
    clock.now += 7200
    before = where(mem)
    report = mem.migrate(dry_run=True)
    assert report.dry_run and report.total_moved == 10
    assert sorted(k for k, _, _ in report.planned) == sorted(f"session:{i}" for i in range(10))
    assert {(s, t) for _, s, t in report.planned} == {("hot", "warm")}
    assert where(mem) == before


def test_promotion_on_read(three_tiers: Callable[..., TieredMemory], clock: Clock) -> None:
    mem = three_tiers()
    mem.set("session:1", {"v": 1})
    clock.now += 7200
    mem.migrate()
    assert mem.info("session:1").tier == "warm"
    assert mem.get("session:1") == {"v": 1}
    assert mem.info("session:1").tier == "hot"
    assert where(mem)["warm"] == []
    assert mem.info("session:1").access_count == 1

    never = three_tiers(promote="never")
    never.set("session:2", 2)
    clock.now += 7200
    never.migrate()
    assert never.get("session:2") == 2
    assert never.info("session:2").tier == "warm"


def test_write_leaves_one_copy(three_tiers: Callable[..., TieredMemory], clock: Clock) -> None:
    mem = three_tiers()
    mem.set("session:1", "old")
    clock.now += 7200
    mem.migrate()
    first = mem.info("session:1")
    mem.set("session:1", "new")
    assert where(mem)["warm"] == [] and where(mem)["hot"] == ["session:1"]
    info = mem.info("session:1")
    assert info.created_at == first.created_at and info.version == first.version + 1
    assert mem.delete("session:1") and not mem.exists("session:1")


def test_budget_demotes_lru_and_never_drops(tmp_path: Path, clock: Clock) -> None:
    tiers = [
        Tier("hot", InProcessBackend(), max_entries=3),
        Tier("cold", SqliteBackend(str(tmp_path / "c.db")), max_entries=2),
    ]
    mem = TieredMemory(tiers, namespace="b", clock=clock, promote="never")
    for i in range(6):
        clock.now += 1
        mem.set(f"k{i}", i)
    clock.now += 1
    mem.get("k0")  # most recently used now
    report = mem.migrate()
    assert where(mem)["hot"] == ["k0", "k4", "k5"]
    assert where(mem)["cold"] == ["k1", "k2", "k3"]
    assert report.over_budget == {"cold": 1}  # over its budget, but nothing dropped
    assert mem.get_many([f"k{i}" for i in range(6)]) == {f"k{i}": i for i in range(6)}


def test_tier_ttl_demotes(tmp_path: Path, clock: Clock) -> None:
    tiers = [
        Tier("hot", InProcessBackend(), ttl=3600),
        Tier("warm", SqliteBackend(str(tmp_path / "w.db"))),
    ]
    mem = TieredMemory(tiers, namespace="x", clock=clock)
    mem.set("a", 1)
    clock.now += 3601
    assert mem.migrate().moved == {"hot -> warm: tier ttl 3600s": 1}
    assert mem.get("a") == 1


@pytest.mark.parametrize(
    ("tier_index", "method"),
    [(1, "put_absent_many"), (0, "delete_if_unchanged"), (0, "get_many")],
)
def test_crash_mid_migration_then_rerun(
    tmp_path: Path, clock: Clock, tier_index: int, method: str
) -> None:
    hot = InProcessBackend()
    warm = SqliteBackend(str(tmp_path / "w.db"))
    backends: list[Backend] = [hot, warm]
    crash = backends[tier_index] = Crashing(backends[tier_index], method, after=1)
    tiers = [Tier("hot", backends[0]), Tier("warm", backends[1])]
    rules = [{"from": "hot", "to": "warm", "condition": "age > 10"}]
    mem = TieredMemory(tiers, rules, namespace="c", clock=clock, promote="never")
    data = {f"k{i:03d}": i for i in range(50)}
    crash.armed = False  # the crash is the migration's: count its calls only
    mem.set_many(data)
    crash.armed = True
    clock.now += 11
    with pytest.raises(RuntimeError, match="injected crash"):
        mem.migrate(batch_size=10)
    assert mem.get_many(list(data)) == data  # readable right after the crash
    mem.migrate(batch_size=10)
    assert where(mem) == {"hot": [], "warm": sorted(data)}  # each entry exactly once
    assert mem.get_many(list(data)) == data


def test_rewrite_during_move_keeps_newer_value(tmp_path: Path, clock: Clock) -> None:
    hot = InProcessBackend()
    warm = SqliteBackend(str(tmp_path / "w.db"))
    mem = TieredMemory(
        [Tier("hot", hot), Tier("warm", warm)],
        [{"from": "hot", "to": "warm", "condition": "age > 10"}],
        namespace="r",
        clock=clock,
    )
    mem.set("k", "old")
    clock.now += 11
    original = warm.put_absent_many

    def racing_copy(ns: str, records: Any, *, now: float) -> set[str]:
        written = original(ns, records, now=now)
        clock.now += 0.5
        hot.put_many(
            ns,
            {"k": pm.Record(mem.codec.encode("new"), clock.now, clock.now, clock.now)},
            now=clock.now,
        )
        return written

    warm.put_absent_many = racing_copy  # type: ignore[method-assign]
    report = mem.migrate()
    assert report.total_moved == 0 and report.skipped == 1
    assert mem.get("k") == "new"
    assert where(mem) == {"hot": ["k"], "warm": []}


def test_bad_config_is_rejected_with_paths(tmp_path: Path) -> None:
    tiers = [Tier("hot", InProcessBackend()), Tier("hot", InProcessBackend())]
    with pytest.raises(pm.ConfigError) as info:
        TieredMemory(tiers, [{"from": "hot", "to": "nowhere", "condition": "age > 1"}])
    message = str(info.value)
    assert "duplicate tier name 'hot'" in message
    assert "migration.rules[0].to: unknown tier 'nowhere'" in message
    with pytest.raises(pm.ConfigError, match=r"rules\[0\].condition: .*position 6"):
        TieredMemory(
            [Tier("a", InProcessBackend())], [{"from": "a", "to": "a", "condition": "age > > 1"}]
        )
    with pytest.raises(pm.ConfigError, match="missing condition"):
        TieredMemory([Tier("a", InProcessBackend())], [{"from": "a", "to": "a"}])

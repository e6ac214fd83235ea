"""Hybrid memory: write-through, durable write-behind with replay, read-through, sync."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.base import Backend
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.resilience import HybridMemory, HybridWriteError


class Down(InProcessBackend):
    """An in-process store that can be switched off (raises BackendUnavailable)."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise pm.BackendUnavailable("store is down")

    def put_many(self, ns: str, records: Any, *, now: float) -> None:
        self._check()
        super().put_many(ns, records, now=now)

    def get_many(self, ns: str, keys: Any, *, now: float, touch: bool = False) -> Any:
        self._check()
        return super().get_many(ns, keys, now=now, touch=touch)


def secondary_keys(mem: HybridMemory) -> list[str]:
    return sorted(mem.secondary.scan(mem.namespace, None, now=time.time()))


def test_write_through_reaches_both(tmp_path: Path) -> None:
    mem = HybridMemory("memory://", f"sqlite:///{tmp_path}/s.db", namespace="wt")
    mem.set_many({"a": 1, "b": 2}, tags=["t"])
    assert secondary_keys(mem) == ["a", "b"]
    assert sorted(mem.primary.scan("wt", None, now=time.time())) == ["a", "b"]
    assert mem.invalidate_tags("t") == 2
    assert secondary_keys(mem) == []


def test_write_through_failure_is_raised_not_swallowed(tmp_path: Path) -> None:
    secondary = Down()
    mem = HybridMemory(InProcessBackend(), secondary, namespace="f")
    secondary.down = True
    with pytest.raises(HybridWriteError) as info:
        mem.set("k", 1)
    assert set(info.value.failed) == {"secondary"}
    assert isinstance(info.value, pm.PrefectMemoryError)
    assert mem.get("k") == 1  # the primary kept it; a retry is safe
    secondary.down = False
    mem.set("k", 1)
    assert secondary.get_many("f", ["k"], now=time.time())


def test_read_through_repopulates_an_emptied_primary(tmp_path: Path) -> None:
    primary = InProcessBackend()
    mem = HybridMemory(primary, f"sqlite:///{tmp_path}/s.db", namespace="rt")
    mem.set_many({f"k{i}": i for i in range(20)})
    primary.clear("rt", now=time.time())  # e.g. Redis restarted without persistence
    assert mem.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(20)}
    assert len(list(primary.scan("rt", None, now=time.time()))) == 20
    assert mem.info("k3").access_count == 1


def test_write_behind_answers_then_flushes(tmp_path: Path) -> None:
    mem = HybridMemory(
        "memory://",
        f"sqlite:///{tmp_path}/s.db",
        strategy="write-behind",
        journal=str(tmp_path / "journal.db"),
        flush_interval=60,  # only explicit flushes in this test
        namespace="wb",
    )
    mem.set("k", 1)
    mem.set("k", 2)
    mem.delete("gone")
    mem.set("gone", 0)
    mem.delete("gone")
    assert secondary_keys(mem) == []
    assert mem.backlog() == 5
    assert mem.flush() == 5
    assert mem.backlog() == 0
    assert secondary_keys(mem) == ["k"]
    assert mem.secondary.get_many("wb", ["k"], now=time.time())["k"].value == mem.codec.encode(2)


def test_write_behind_journal_replays_after_a_crash(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.db")
    secondary_url = f"sqlite:///{tmp_path}/s.db"
    crashed = HybridMemory(
        "memory://", secondary_url, strategy="write-behind", journal=journal,
        flush_interval=60, namespace="crash",
    )  # fmt: skip
    crashed.set_many({f"k{i}": i for i in range(100)})
    crashed.set("k5", "last")
    # the process dies here: no flush, no close; its in-process primary is gone
    restarted = HybridMemory(
        "memory://", secondary_url, strategy="write-behind", journal=journal,
        flush_interval=60, namespace="crash",
    )  # fmt: skip
    assert restarted.get("k5") == "last"  # read through the journal before any flush
    assert restarted.flush() == 101
    expected = {f"k{i}": i for i in range(100)} | {"k5": "last"}
    fresh = pm.open_memory(secondary_url, namespace="crash")
    assert fresh.get_many(list(expected)) == expected


def test_write_behind_background_flush_and_retry(tmp_path: Path) -> None:
    secondary = Down()
    mem = HybridMemory(
        "memory://", secondary, strategy="write-behind", journal=str(tmp_path / "j.db"),
        flush_interval=0.05, namespace="bg",
    )  # fmt: skip
    secondary.down = True
    mem.set_many({"a": 1, "b": 2})
    deadline = time.monotonic() + 10
    while mem.backend.last_flush_error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "down" in (mem.backend.last_flush_error or "")
    assert mem.backlog() == 2  # nothing lost while the secondary is down
    secondary.down = False
    while mem.backlog() and time.monotonic() < deadline + 30:
        time.sleep(0.05)
    assert mem.backlog() == 0
    assert sorted(secondary.scan("bg", None, now=time.time())) == ["a", "b"]


def test_sync_reconciles_newer_wins(tmp_path: Path) -> None:
    primary, secondary = InProcessBackend(), SqliteBackend(str(tmp_path / "s.db"))
    mem = HybridMemory(primary, secondary, namespace="sy")
    mem.set_many({"both": 1, "conflict": "old"})
    now = time.time()
    codec = mem.codec
    primary.put_many("sy", {"only-primary": pm.Record(codec.encode(1), now, now, now)}, now=now)
    secondary.put_many("sy", {"only-secondary": pm.Record(codec.encode(2), now, now, now)}, now=now)
    later = now + 5
    secondary.put_many(
        "sy", {"conflict": pm.Record(codec.encode("new"), later, later, later)}, now=later
    )
    report = mem.sync()
    assert report.copied_to_secondary == 1
    assert report.copied_to_primary == 2
    assert report.conflicts_resolved == 1
    for backend in (primary, secondary):
        got = {
            k: codec.decode(r.value)
            for k, r in backend.get_many(
                "sy", ["both", "conflict", "only-primary", "only-secondary"], now=later
            ).items()
        }
        assert got == {"both": 1, "conflict": "new", "only-primary": 1, "only-secondary": 2}


def test_bad_strategy_is_named() -> None:
    with pytest.raises(pm.ConfigError, match="write-sideways"):
        HybridMemory("memory://", "memory://", strategy="write-sideways")  # type: ignore[arg-type]


def test_backend_typing() -> None:
    assert isinstance(HybridMemory("memory://", "memory://").backend, Backend)

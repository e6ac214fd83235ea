"""Hybrid memory through store failures: fallback reads, queued writes, ordered replay."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.base import Record
from prefect_memory.resilience import (
    CircuitBreaker,
    HybridMemory,
    HybridWriteError,
    ResilientBackend,
    Retry,
)
from prefect_memory.resilience.hybrid import default_journal_path
from prefect_memory.resilience.journal import Journal


def hybrid(tmp_path: Path, primary: Any, secondary: Any, **options: Any) -> HybridMemory:
    options.setdefault("flush_interval", 60)  # explicit flushes only, unless a test says so
    return HybridMemory(primary, secondary, journal=str(tmp_path / "j.db"), namespace="ns",
                        **options)  # fmt: skip


def raw(store: Any, key: str) -> Any:
    record = store.get_many("ns", [key], now=time.time()).get(key)
    return None if record is None else pm.Codec().decode(record.value)


def test_reads_fall_back_to_the_secondary_and_an_open_breaker_skips_the_primary(
    tmp_path: Path, flaky: Any
) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary, breaker=CircuitBreaker(failure_threshold=1))
    mem.set_many({"a": 1, "b": 2})
    primary.down = True
    assert mem.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
    assert mem.exists("a") and sorted(mem.keys()) == ["a", "b"]
    calls = len(primary.calls)
    assert mem.get("a") == 1 and len(primary.calls) == calls  # breaker open: not even tried
    assert mem.backend.primary_down_since is not None


def test_write_behind_queues_for_a_dead_primary_and_refills_it(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary, strategy="write-behind")
    mem.set_many({"a": 1, "b": 2, "c": 3})
    mem.flush()
    primary.down = True
    mem.set("a", 10)  # acknowledged: journaled for both stores
    mem.delete("b")
    assert mem.backlog("primary") == 2
    assert mem.get_many(["a", "b", "c"]) == {"a": 10, "c": 3}
    primary.down = False
    primary.clear("ns", now=time.time())  # it came back empty (Redis without persistence)
    assert mem.get_many(["a", "b", "c"]) == {"a": 10, "c": 3}  # journal merged, read-through
    mem.flush()  # (the flusher may have replayed already: the primary answered again)
    assert mem.backlog() == 0
    assert (raw(primary, "a"), raw(primary, "b"), raw(primary, "c")) == (10, None, 3)
    assert (raw(secondary, "a"), raw(secondary, "b")) == (10, None)


def test_write_through_reports_and_queues_a_primary_failure(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary)
    mem.set("k", "old")
    primary.down = True
    with pytest.raises(HybridWriteError) as info:
        mem.set("k", "new")
    assert set(info.value.failed) == {"primary"} and info.value.queued == ("primary",)
    assert "queued for the primary" in str(info.value)
    primary.down = False  # back with its old value: it must not be served
    assert raw(primary, "k") == "old" and mem.get("k") == "new"
    mem.flush()
    assert raw(primary, "k") == "new"


def test_write_through_can_accept_degraded_writes(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary, accept_degraded=True)
    secondary.down = True
    mem.set("k", 1)  # no error: on the primary and queued for the secondary
    assert mem.backend.degraded_writes == 1 and mem.backlog("secondary") == 1
    secondary.down = False
    mem.flush()
    assert raw(secondary, "k") == 1


def test_a_refused_write_is_not_queued_and_leaves_no_stale_copy(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary)
    mem.set("k", "old")
    primary.fail(1, pm.BackendError("OOM command not allowed"))
    with pytest.raises(HybridWriteError) as info:
        mem.set("k", "new")
    assert info.value.queued == () and mem.backlog() == 0
    assert raw(primary, "k") is None and mem.get("k") == "new"  # the stale copy was dropped

    behind = hybrid(tmp_path / "wb", flaky(), flaky(), strategy="write-behind")
    behind.primary.fail(1, pm.BackendError("OOM"))
    with pytest.raises(pm.BackendError):
        behind.set("k", 1)
    assert behind.backlog() == 0  # not acknowledged, so it reaches no store


def test_a_queued_write_never_lands_after_a_newer_one(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary, strategy="write-behind")
    primary.down = True
    mem.set("k", "queued")
    mem.set("gone", "queued")
    primary.down = False
    mem.set("k", "direct")  # what was queued for k is applied first
    mem.delete("gone")
    mem.flush()
    assert raw(primary, "k") == "direct" and raw(primary, "gone") is None
    assert mem.get("k") == "direct" and mem.get("gone") is None


def test_a_replay_skips_a_newer_write_made_elsewhere(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary, strategy="write-behind")
    primary.down = True
    mem.set("k", "queued")
    primary.down = False
    later = time.time() + 60  # another machine's write, not in our journal
    newer = Record(mem.codec.encode("elsewhere"), later, later, later)
    primary.put_many("ns", {"k": newer}, now=later)
    mem.flush()
    assert raw(primary, "k") == "elsewhere"


def test_flush_with_a_timeout_waits_for_the_store(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary, strategy="write-behind")
    secondary.down = True
    mem.set("k", 1)
    with pytest.raises(pm.BackendUnavailable):
        mem.flush()  # one pass
    threading.Timer(0.2, lambda: setattr(secondary, "down", False)).start()
    assert mem.flush(timeout=10) == 1


def test_deletes_work_with_the_secondary_down(tmp_path: Path, flaky: Any) -> None:
    primary, secondary = flaky(), flaky()
    mem = hybrid(tmp_path, primary, secondary, strategy="write-behind")
    mem.set("k", 1)
    secondary.down = True
    assert mem.delete("k") is True and mem.delete("never") is False
    secondary.down = False
    mem.flush()
    assert raw(secondary, "k") is None


def test_tags_and_keys_follow_the_journal(tmp_path: Path) -> None:
    mem = hybrid(tmp_path, "memory://", f"sqlite:///{tmp_path}/s.db", strategy="write-behind")
    mem.set("a", 1, tags=["red"])
    mem.flush()
    mem.set("a", 2, tags=["blue"])  # pending: the secondary still says red
    mem.primary.clear("ns", now=time.time())
    assert mem.tagged("red") == [] and mem.tagged("blue") == ["a"]
    assert list(mem.keys()) == ["a"]


def test_an_old_journal_is_upgraded_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE pm_journal (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " ns TEXT NOT NULL, key TEXT NOT NULL, op TEXT NOT NULL, record BLOB);"
    )
    from prefect_memory.resilience.journal import pack_record

    now = time.time()
    record = Record(pm.Codec().encode("v"), now, now, now)
    conn.execute("INSERT INTO pm_journal (ns, key, op, record) VALUES ('ns','k','put',?)",
                 (pack_record(record),))  # fmt: skip
    conn.commit()
    conn.close()
    mem = HybridMemory("memory://", f"sqlite:///{tmp_path}/s.db", strategy="write-behind",
                       journal=str(path), namespace="ns", flush_interval=60)  # fmt: skip
    assert mem.backlog("secondary") == 1 and mem.get("k") == "v"
    assert mem.flush() == 1


def test_default_journal_path_is_the_same_in_every_process() -> None:
    code = (
        "from prefect_memory.registry import open_backend as o;"
        "from prefect_memory.resilience.hybrid import default_journal_path as d;"
        "print(d(o('memory://a'), o('sqlite:///x.db')))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60).stdout.strip()  # fmt: skip
    here = default_journal_path(pm.open_backend("memory://a"), pm.open_backend("sqlite:///x.db"))
    assert other == here


def test_one_flusher_per_lane(tmp_path: Path) -> None:
    a, b = Journal(str(tmp_path / "j.db")), Journal(str(tmp_path / "j.db"))
    a.append("ns", deletes=["k"])
    with a.flush_lock("secondary") as got:
        assert got
        with b.flush_lock("secondary", timeout=0.05) as other:
            assert not other
        with b.flush_lock("primary") as other_lane:
            assert other_lane


def test_the_flusher_stops_with_its_memory(tmp_path: Path) -> None:
    mem = hybrid(tmp_path, "memory://", f"sqlite:///{tmp_path}/s.db", strategy="write-behind",
                 flush_interval=0.01)  # fmt: skip
    mem.set("k", 1)
    thread = mem.backend.lanes._thread
    assert thread is not None and thread.is_alive()
    mem.close()
    thread.join(5)
    assert not thread.is_alive()
    mem.set("k", 2)  # usable after close: a new flusher
    other = mem.backend.lanes._thread
    assert other is not thread and other is not None and other.is_alive()
    del mem
    gc.collect()
    other.join(5)
    assert not other.is_alive()


def test_hybrid_memory_protects_each_store(tmp_path: Path) -> None:
    mem = hybrid(tmp_path, "memory://", f"sqlite:///{tmp_path}/s.db",
                 retry=Retry(attempts=2), breaker=CircuitBreaker(failure_threshold=3),
                 deadline=5.0)  # fmt: skip
    assert isinstance(mem.primary, ResilientBackend) and isinstance(mem.secondary, ResilientBackend)
    assert mem.primary.breaker is not mem.secondary.breaker
    assert mem.primary.breaker.name.startswith("primary memory://")
    mem.set("k", 1)
    assert mem.get("k") == 1

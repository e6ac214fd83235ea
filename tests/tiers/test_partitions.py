"""Partitions of a namespace (tiers/partitions.py), without Prefect.

The model check after every run (``_census``): each key written lives in exactly one tier,
holds the value written (none lost, none duplicated, none stale), and the reports reconcile:
entries moved = copies written = entries gone from the source tier. Concurrent runs are
separate processes (``subprocess``, each building its own memory from the same spec, as two
Prefect workers would), started together on a file barrier; a killed run is ``kill -9``.

Stores: Redis -> SQLite -> the Parquet archive on a local folder.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.errors import ConfigError
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.tiers import Tier, TieredMemory
from prefect_memory.tiers import partitions as P

pytestmark = [pytest.mark.timeout(300)]

N = 3000
RULES = [
    {"from": "hot", "to": "warm", "condition": "accessCount < 1"},
    {"from": "warm", "to": "cold", "condition": "accessCount < 1"},
]

#: For runs at once: each entry moves at most once however many runs overlap (small entries
#: to SQLite, large ones straight to the archive), so that every run order ends the same.
RULES_ONCE = [
    {"from": "hot", "to": "warm", "condition": "accessCount < 1 AND size < 1000"},
    {"from": "hot", "to": "cold", "condition": "accessCount < 1 AND size >= 1000"},
]


def value(i: int) -> dict[str, Any]:
    return {"key": f"k:{i}", "v": i, "pad": "x" * (2000 if i % 3 == 0 else 100)}


def _spec(redis_url: str, tmp_path: Path, rules: Any = RULES, **extra: Any) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:10]
    return {
        "namespace": f"parts-{unique}",
        "rules": rules,
        "tiers": [
            {"name": "hot", "url": redis_url, "options": {"key_prefix": f"t{unique}"}},
            {"name": "warm", "url": f"sqlite:///{tmp_path}/warm-{unique}.db"},
            {"name": "cold", "url": f"parquet:///{tmp_path}/archive-{unique}"},
        ],
        **extra,
    }


def _build(spec: dict[str, Any], **options: Any) -> TieredMemory:
    tiers = [
        Tier(t["name"], pm.open_backend(t["url"], **t.get("options", {}))) for t in spec["tiers"]
    ]
    return TieredMemory(tiers, spec["rules"], namespace=spec["namespace"], **options)


def _census(spec: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    """Where each written key is, and what it holds; problems counted against the model."""
    mem = _build(spec, promote="never")
    now = mem.clock()
    where: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    values: dict[str, Any] = {}
    for tier in mem.tiers:  # read without touching: access counts decide the moves
        found = list(tier.backend.scan(mem.namespace, None, now=now))
        counts[tier.name] = len(found)
        for key in found:
            where.setdefault(key, []).append(tier.name)
        records = tier.backend.get_many(mem.namespace, found, now=now, touch=False)
        values.update({k: mem.codec.decode(r.value) for k, r in records.items()})
    return {
        "counts": counts,
        "where": {k: t[0] for k, t in where.items() if len(t) == 1},
        "lost": sorted(k for k in keys if k not in where),
        "duplicated": sorted(k for k, t in where.items() if len(t) > 1),
        "stale": sorted(k for k in keys if k in values and values[k] != keys[k]),
        "unknown": sorted(k for k in where if k not in keys),
    }


def _assert_clean(census: dict[str, Any]) -> None:
    for problem in ("lost", "duplicated", "stale", "unknown"):
        assert not census[problem], f"{problem}: {census[problem][:10]}"


def _fill(spec: dict[str, Any], n: int = N, read: int = 0) -> dict[str, Any]:
    mem = _build(spec)
    written = {f"k:{i}": value(i) for i in range(n)}
    mem.set_many(written)
    if read:  # read entries stay hot (accessCount >= 1)
        mem.get_many([f"k:{i}" for i in range(read)])
    return written


# -- the partitions themselves --------------------------------------------------------------
def test_every_key_is_in_exactly_one_partition_and_the_ranges_tile_the_hash_space() -> None:
    keys = [f"user:{i}" for i in range(2000)] + ["", "é", "\U0001f600", "a" * 1000]
    for n in (1, 2, 3, 4, 7, 16):
        parts = [P.Partition(i, n) for i in range(n)]
        assert parts[0].low == 0 and parts[-1].high == 2**64
        assert all(a.high == b.low for a, b in itertools.pairwise(parts))
        for key in keys:
            assert sum(p.holds(key) for p in parts) == 1, (n, key)
        if n > 1:  # a fair share each (hash ranges of equal width)
            sizes = [sum(p.holds(k) for k in keys) for p in parts]
            assert min(sizes) > len(keys) / n * 0.7, sizes


def test_the_key_hash_is_stable_across_processes_and_releases() -> None:
    # a partition retried on another machine must hold the same keys: pinned values
    assert P.key_hash("user:1") == int.from_bytes(
        __import__("hashlib").blake2b(b"user:1", digest_size=8).digest(), "big"
    )
    code = "from prefect_memory.tiers.partitions import key_hash; print(key_hash('user:1'))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert int(out.stdout) == P.key_hash("user:1")


def test_bad_partition_counts_are_refused() -> None:
    mem = pm.Memory(InProcessBackend())
    for bad in (0, -1, 4097, 2.0, True, "2"):
        with pytest.raises(ConfigError, match="partitions"):
            P.partitions(mem, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        P.Partition(4, 4)
    with pytest.raises(TypeError, match="tiered memory"):
        P.migrate(mem, P.Partition(0, 2))


def test_store_partitions_are_at_most_one_per_store() -> None:
    mem = TieredMemory([Tier("a", InProcessBackend()), Tier("b", InProcessBackend())])
    parts = P.partitions(mem, 4, by="store")
    assert [str(p) for p in parts] == ["1/2", "2/2"]
    assert [p.stores(2) for p in parts] == [[0], [1]]
    assert [p.stores(3) for p in P.partitions(mem, 1, by="store")] == [[0, 1, 2]]


# -- migrations by partition on real stores -------------------------------------------------
@pytest.mark.redis
@pytest.mark.parametrize("count", [1, 3])
def test_partitions_move_every_entry_once_and_their_reports_add_up(
    redis_server: Any, tmp_path: Path, count: int
) -> None:
    spec = _spec(redis_server.url, tmp_path)
    written = _fill(spec, read=300)
    mem = _build(spec)
    for step, (source, target) in enumerate([("hot", "warm"), ("warm", "cold")]):
        before = _census(spec, written)["counts"]
        reports = [P.migrate(mem, p, batch_size=200) for p in P.partitions(mem, count)]
        total = P.total(reports)
        after = _census(spec, written)
        _assert_clean(after)
        due = N - 300
        assert total.entries == total.written == due, (step, total)
        assert before[source] - after["counts"][source] == due  # deleted from the source
        assert after["counts"][target] - before[target] == due
        assert total.bytes == sum(r.bytes for r in reports) > due * 100
        if count > 1:
            assert all(r.entries > due / count * 0.7 for r in reports), reports
    final = _census(spec, written)
    assert final["counts"] == {"hot": 300, "warm": 0, "cold": N - 300}
    assert {final["where"][f"k:{i}"] for i in range(300)} == {"hot"}


def test_a_partition_leaves_the_others_and_the_budgets_alone() -> None:
    hot = Tier("hot", InProcessBackend(), max_entries=10)
    mem = TieredMemory([hot, Tier("warm", InProcessBackend())], [RULES[0]])
    mem.set_many({f"k{i}": i for i in range(100)})
    mem.get_many([f"k{i}" for i in range(50)])  # these stay hot by the rule
    first = P.Partition(0, 4)
    done = P.migrate(mem, first)
    moved = {k for k in (f"k{i}" for i in range(50, 100)) if mem.info(k).tier == "warm"}
    assert moved == {f"k{i}" for i in range(50, 100) if first.holds(f"k{i}")}
    assert done.entries == len(moved) and done.migration is not None
    for p in P.partitions(mem, 4)[1:]:
        P.migrate(mem, p)
    assert sum(mem.info(f"k{i}").tier == "hot" for i in range(100)) == 50  # budgets untouched
    budgets = P.enforce_budgets(mem)
    assert budgets.entries == 40 and budgets.partition == "budgets"
    assert sum(mem.info(f"k{i}").tier == "hot" for i in range(100)) == 10
    # TieredMemory.migrate(partition=...) is the same engine call
    assert mem.migrate(partition=P.Partition(1, 4)).total_moved == 0


def test_cleanup_by_store_partition_adds_up(tmp_path: Path) -> None:
    clock = [1000.0]
    tiers = [
        Tier("hot", pm.open_backend(f"sqlite:///{tmp_path}/a.db"), patterns=("h:*",)),
        Tier("cold", pm.open_backend(f"sqlite:///{tmp_path}/b.db"), patterns=("c:*",)),
    ]
    mem = TieredMemory(tiers, namespace="clean", clock=lambda: clock[0])
    mem.set_many({f"h:{i}": i for i in range(30)}, ttl=10)
    mem.set_many({f"c:{i}": i for i in range(20)}, ttl=10)
    mem.set_many({"h:keep": 1, "c:keep": 2})
    clock[0] += 60
    reports = [P.cleanup(mem, p) for p in P.partitions(mem, 2, by="store")]
    assert [(r.partition, r.entries) for r in reports] == [("1/2", 30), ("2/2", 20)]
    assert P.total(reports).entries == 50
    assert mem.get_many(["h:keep", "c:keep", "h:1"]) == {"h:keep": 1, "c:keep": 2}


# -- exactly once under concurrency: processes ----------------------------------------------
CHILD = r"""
import json, os, sys, time
import prefect_memory as pm
from prefect_memory.tiers import Tier, TieredMemory
from prefect_memory.tiers import partitions as P

spec = json.loads(sys.argv[1])
tiers = [Tier(t["name"], pm.open_backend(t["url"], **t.get("options", {}))) for t in spec["tiers"]]
mem = TieredMemory(tiers, spec["rules"], namespace=spec["namespace"])
print("ready", flush=True)
while spec.get("go") and not os.path.exists(spec["go"]):
    time.sleep(0.005)
pause = spec.get("pause", 0)

def progress(report):
    print("batch", report.total_moved, flush=True)
    if pause:
        time.sleep(pause)

out = []
for i in spec["parts"]:
    r = P.migrate(mem, P.Partition(i, spec["count"]), batch_size=spec["batch_size"],
                  progress=progress)
    out.append({"partition": r.partition, "entries": r.entries, "written": r.written,
                "skipped": r.skipped})
print("report " + json.dumps(out), flush=True)
"""


def _child(spec: dict[str, Any], **run: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps({**spec, **run})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _report(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    line = [x for x in out.splitlines() if x.startswith("report ")][-1]
    return json.loads(line.removeprefix("report "))


@pytest.mark.redis
def test_two_runs_of_the_same_migration_in_two_processes_move_each_entry_once(
    redis_server: Any, tmp_path: Path
) -> None:
    reference = _spec(redis_server.url, tmp_path, RULES_ONCE)
    written = _fill(reference, read=200)
    mem = _build(reference)
    for p in P.partitions(mem, 2):
        P.migrate(mem, p, batch_size=50)
    expected = _census(reference, written)

    spec = _spec(redis_server.url, tmp_path, RULES_ONCE)
    assert _fill(spec, read=200) == written
    go = tmp_path / "go"
    procs = [
        _child(spec, parts=[0, 1], count=2, batch_size=50, go=str(go)),
        _child(spec, parts=[0, 1], count=2, batch_size=50, go=str(go)),
    ]
    for proc in procs:  # both built their memory: start together
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    reports = [_report(proc) for proc in procs]
    moved = sum(r["entries"] for rs in reports for r in rs)
    final = _census(spec, written)
    _assert_clean(final)
    assert moved == N - 200  # each entry counted by exactly one of the two runs
    big = sum(1 for i in range(200, N) if i % 3 == 0)
    assert final["counts"] == expected["counts"] == {"hot": 200, "warm": N - 200 - big, "cold": big}
    assert final["where"] == expected["where"]
    print(f"two processes: moved {[[r['entries'] for r in rs] for rs in reports]}, "
          f"skipped {[[r['skipped'] for r in rs] for rs in reports]}")  # fmt: skip


@pytest.mark.redis
def test_a_partition_retried_after_its_run_was_killed_moves_each_entry_once(
    redis_server: Any, tmp_path: Path
) -> None:
    spec = _spec(redis_server.url, tmp_path, RULES_ONCE)
    written = _fill(spec)
    part = P.Partition(0, 2)
    mine = {k for k in written if part.holds(k)}
    first = _child(spec, parts=[0], count=2, batch_size=20, pause=0.05)
    assert first.stdout is not None
    batches = 0
    for line in first.stdout:  # kill -9 mid-run, after a few batches
        if line.startswith("batch"):
            batches += 1
            if batches == 5:
                os.kill(first.pid, signal.SIGKILL)
                break
    first.wait()
    mid = _census(spec, written)
    _assert_clean(mid)
    left = sum(1 for k in mine if mid["where"][k] == "hot")
    assert 0 < left < len(mine)  # really killed mid-run
    retry = _report(_child(spec, parts=[0], count=2, batch_size=20))
    final = _census(spec, written)
    _assert_clean(final)
    assert retry[0]["entries"] == left  # the retry moves exactly what the kill left
    big = {k for k in mine if int(k.split(":")[1]) % 3 == 0}
    assert {final["where"][k] for k in mine - big} == {"warm"}
    assert {final["where"][k] for k in big} == {"cold"}
    assert {final["where"][k] for k in written if k not in mine} == {"hot"}

"""Partitions at once on MongoDB and S3, in processes (tiers/partitions.py, without Prefect).

``test_partitions.py`` runs partitions at once on Redis -> SQLite -> a local Parquet archive;
a store's own locking (SQLite's file lock) can hide a race another store shows, so the same
actors run here on the MongoDB wire server and on Parquet on S3 (SeaweedFS): its conditional
insert and its conditional delete are different code.

- Two processes run every partition of the same migration, started together on a file
  barrier, in the same order (the most contention): Redis -> MongoDB (small entries) and
  Redis -> the archive on S3 (large ones).
- A partition "retried while its first attempt is still alive" (the case of a worker that
  lost its heartbeat, or a Dask task rescheduled while the first run still works): a slow
  first attempt MongoDB -> S3 and a second attempt of the same partition started half-way.

After each: the model check (every key in exactly one tier, where the rules put it, with its
value; none lost, duplicated, stale or unknown) and the reports reconcile over the processes:
entries moved = copies written = entries gone from the source = entries that arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.tiers import Tier, TieredMemory
from prefect_memory.tiers import partitions as P

pytestmark = [pytest.mark.redis, pytest.mark.mongodb, pytest.mark.s3, pytest.mark.timeout(400)]

N = 750  # the MongoDB wire server is pure Python: each insert scans the collection
BUCKET = "pm-partitions"
RULES = [  # each entry moves at most once: every interleaving ends the same
    {"from": "hot", "to": "warm", "condition": "accessCount < 1 AND size < 1000"},
    {"from": "hot", "to": "cold", "condition": "accessCount < 1 AND size >= 1000"},
]


def value(i: int) -> dict[str, Any]:
    return {"key": f"k:{i}", "v": i, "pad": "x" * (2000 if i % 3 == 0 else 100)}


def _spec(tiers: list[dict[str, Any]], rules: list[dict[str, str]]) -> dict[str, Any]:
    return {"namespace": f"ps-{uuid.uuid4().hex[:8]}", "tiers": tiers, "rules": rules}


def _redis(redis_server: Any) -> dict[str, Any]:
    url, prefix = redis_server.url, f"t{uuid.uuid4().hex[:8]}"
    return {"name": "hot", "url": url, "options": {"key_prefix": prefix}}


def _mongo(mongo_server: Any, name: str) -> dict[str, Any]:
    url = mongo_server.url
    collection = f"ps{uuid.uuid4().hex[:8]}"
    return {"name": name, "url": url, "options": {"collection": collection, "timeout": 60}}


def _archive(s3_server: Any) -> dict[str, Any]:
    s3_server.make_bucket(BUCKET)
    url = f"parquet::s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    return {"name": "cold", "url": url, "options": {"storage_options": s3_server.storage_options}}


def _build(spec: dict[str, Any], **options: Any) -> TieredMemory:
    tiers = [Tier(t["name"], pm.open_backend(t["url"], **t["options"])) for t in spec["tiers"]]
    return TieredMemory(tiers, spec["rules"], namespace=spec["namespace"], **options)


def _census(spec: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """Where each key is (read without touching); fails on any problem against the model."""
    mem = _build(spec, promote="never")
    now = mem.clock()
    where: dict[str, list[str]] = {}
    stale: list[str] = []
    for tier in mem.tiers:
        found = list(tier.backend.scan(mem.namespace, None, now=now))
        for key in found:
            where.setdefault(key, []).append(tier.name)
        records = tier.backend.get_many(mem.namespace, found, now=now, touch=False)
        stale += [k for k, r in records.items() if mem.codec.decode(r.value) != written.get(k)]
    problems = {
        "lost": [k for k in written if k not in where],
        "duplicated": [k for k, t in where.items() if len(t) > 1],
        "stale": stale,
        "unknown": [k for k in where if k not in written],
    }
    assert not any(problems.values()), {k: v[:5] for k, v in problems.items()}
    counts = {t.name: 0 for t in mem.tiers}
    for tiers in where.values():
        counts[tiers[0]] += 1
    return {"where": {k: t[0] for k, t in where.items()}, "counts": counts}


def _reconcile(reports: list[dict[str, Any]], before: Any, after: Any, source: str) -> int:
    moved = sum(r["entries"] for r in reports)
    written = sum(r["written"] for r in reports)
    gone = before["counts"][source] - after["counts"][source]
    arrived = sum(after["counts"][t] - before["counts"][t] for t in after["counts"] if t != source)
    assert moved == written == gone == arrived, (reports, gone, arrived)
    return moved


CHILD = r"""
import json, os, sys, time
import prefect_memory as pm
from prefect_memory.tiers import Tier, TieredMemory
from prefect_memory.tiers import partitions as P

spec = json.loads(sys.argv[1])
tiers = [Tier(t["name"], pm.open_backend(t["url"], **t["options"])) for t in spec["tiers"]]
mem = TieredMemory(tiers, spec["rules"], namespace=spec["namespace"])
print("ready", flush=True)
while spec.get("go") and not os.path.exists(spec["go"]):
    time.sleep(0.005)

def progress(report):
    print("batch", report.total_moved, flush=True)
    time.sleep(spec.get("pause", 0))

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
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    line = [x for x in out.splitlines() if x.startswith("report ")][-1]
    return json.loads(line.removeprefix("report "))


def test_two_processes_run_every_partition_at_once_on_mongodb_and_s3(
    redis_server: Any, mongo_server: Any, s3_server: Any, tmp_path: Path
) -> None:
    spec = _spec([_redis(redis_server), _mongo(mongo_server, "warm"), _archive(s3_server)], RULES)
    written = {f"k:{i}": value(i) for i in range(N)}
    _build(spec).set_many(written)
    before = _census(spec, written)
    go = tmp_path / "go"
    run = {"parts": [0, 1, 2], "count": 3, "batch_size": 25, "go": str(go)}
    procs = [_child(spec, **run), _child(spec, **run)]
    for proc in procs:  # both built their memory: start together
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    reports = [r for proc in procs for r in _report(proc)]
    after = _census(spec, written)
    assert _reconcile(reports, before, after, "hot") == N  # each entry counted by one process
    big = {f"k:{i}" for i in range(N) if i % 3 == 0}
    assert after["where"] == {k: "cold" if k in big else "warm" for k in written}
    print(f"moved {[r['entries'] for r in reports]}, written {[r['written'] for r in reports]}, "
          f"skipped {[r['skipped'] for r in reports]}")  # fmt: skip


def test_a_partition_retried_while_its_first_attempt_still_runs_mongodb_to_s3(
    mongo_server: Any, s3_server: Any, tmp_path: Path
) -> None:
    rule = {"from": "hot", "to": "cold", "condition": "accessCount < 1"}
    spec = _spec([_mongo(mongo_server, "hot"), _archive(s3_server)], [rule])
    n = 480
    written = {f"k:{i}": value(i) for i in range(n)}
    _build(spec).set_many(written)
    before = _census(spec, written)
    part = P.Partition(0, 2)
    mine = sum(1 for k in written if part.holds(k))
    go = tmp_path / "go"
    retry = _child(spec, parts=[0], count=2, batch_size=10, go=str(go))  # waits for "go"
    assert retry.stdout is not None and retry.stdout.readline().strip() == "ready"
    first = _child(spec, parts=[0], count=2, batch_size=10, pause=0.2)
    assert first.stdout is not None
    for line in first.stdout:  # a third through its partition, the retry starts
        if line.startswith("batch") and int(line.split()[1]) >= mine // 3:
            go.touch()
            break
    reports = _report(retry) + _report(first)
    after = _census(spec, written)
    assert _reconcile(reports, before, after, "hot") == mine
    assert reports[1]["entries"] >= mine // 3  # the first attempt had really moved some
    assert {after["where"][k] for k in written if part.holds(k)} == {"cold"}
    assert {after["where"][k] for k in written if not part.holds(k)} == {"hot"}
    print(f"retry moved {reports[0]}, first attempt {reports[1]}")

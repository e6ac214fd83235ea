"""Partitioned maintenance on several Prefect workers, in runs at once, on MongoDB and S3.

Issue 18, section 2, the parts ``test_fanout.py`` does not cover:

- **Several workers of a process work pool.** A real ``prefect server`` (the session's
  ``server`` fixture), a process work pool and three ``prefect worker start --pool P --type
  process --limit 1`` workers. Two ways a Prefect user spreads maintenance over them:

  1. *Runs of the same migration at once*: a deployment of ``migrate_tiers`` and one of
     ``archive_to_parquet`` (the package's flows, unchanged, called by a two-line flow of the
     user's that waits on a barrier so that the runs really start together), each with
     ``partitions=``; each worker runs one flow run, whose partitions map on its thread pool.
  2. *A partition per flow run*: the usual Prefect fan-out over a pool's workers, a driver
     flow that calls ``run_deployment`` once per partition of a deployment running one
     partition (``prefect_memory.tiers.partitions.migrate``), waits for them, then compacts
     the archive once. The driver holds one worker; the partitions run on the two others
     (the first two wait for each other, so they must be on different workers).

  The label a worker gives each flow run it claims names it: the test asserts the spread.
- **Two flow runs at once in one process** (``prefect_test_harness``), started on a barrier.
- **MongoDB fan-out**: Redis -> MongoDB (the wire server) -> Parquet on S3 (SeaweedFS) with
  ``partitions=`` on the thread pool and on Dask worker processes.
- **A partition retried by Prefect** after it raised half-way through its work, archiving to
  Parquet on S3.

After every run the model check: each entry written is in exactly one tier, where the rules
put it, with its value (none lost, duplicated or stale), and the reports reconcile: entries
moved (summed over every run and partition) = entries that arrived in the target tiers =
entries gone from the source tier. The rules move each entry at most once (small entries to
SQLite or MongoDB, large ones to the archive), so every interleaving ends in the same state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect_dask import DaskTaskRunner

from prefect_memory.blocks import (
    MemoryTier,
    MongoDBMemory,
    ParquetArchiveMemory,
    RedisMemory,
    SqliteMemory,
    TieredMemoryBlock,
    TierRule,
)
from prefect_memory.flows.maintenance import archive_to_parquet, migrate_tiers
from prefect_memory.tiers import partitions as engine

pytestmark = [pytest.mark.redis, pytest.mark.s3, pytest.mark.timeout(600)]

N = 2000
READ = 200  # entries read once: they stay hot
RULES = [  # each entry moves at most once: every order of the runs ends the same
    {"from": "hot", "to": "warm", "condition": "accessCount < 1 AND size < 1000"},
    {"from": "hot", "to": "cold", "condition": "accessCount < 1 AND size >= 1000"},
]
CASCADE = [  # Redis -> MongoDB, then MongoDB -> the archive on S3 (one step per run)
    {"from": "hot", "to": "warm", "condition": "accessCount < 1"},
    {"from": "warm", "to": "cold", "condition": "accessCount < 1"},
]
DASK = {"n_workers": 2, "processes": True, "threads_per_worker": 1}
BUCKET = "pm-fanout"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def slow(test: Any) -> Any:
    """A large variant: marked ``slow``, run by ``make test-slow`` (PREFECT_MEMORY_SLOW=1)."""
    skip = pytest.mark.skipif(
        not os.environ.get("PREFECT_MEMORY_SLOW"), reason="large variant: make test-slow"
    )
    return pytest.mark.slow(skip(test))


def value(i: int) -> dict[str, Any]:
    return {"key": f"k:{i}", "v": i, "pad": "x" * (2000 if i % 3 == 0 else 100)}


def expected(n: int, read: int = READ) -> dict[str, str]:
    """Where :data:`RULES` put each entry: read ones stay hot, large ones go to the archive."""
    return {f"k:{i}": "hot" if i < read else ("cold" if i % 3 == 0 else "warm") for i in range(n)}


def archive_on_s3(s3_server: Any, folder: str) -> ParquetArchiveMemory:
    s3_server.make_bucket(BUCKET)
    return ParquetArchiveMemory(
        url=f"s3://{BUCKET}/{folder}",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
    )


def tiered(
    hot: Any, warm: Any, cold: Any, unique: str, rules: list[dict[str, str]] = RULES
) -> TieredMemoryBlock:
    return TieredMemoryBlock(
        namespace=f"fw-{unique}",
        tiers=[
            MemoryTier(name="hot", block=hot),
            MemoryTier(name="warm", block=warm),
            MemoryTier(name="cold", block=cold),
        ],
        rules=[TierRule(**rule) for rule in rules],
    )


def fill(block: TieredMemoryBlock, n: int = N, read: int = READ) -> dict[str, Any]:
    written = {f"k:{i}": value(i) for i in range(n)}
    block.set_many(written)
    block.get_many([f"k:{i}" for i in range(read)])
    return written


@dataclass
class Census:
    """Where each written key is (one tier each, else the test failed) and tier sizes."""

    where: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)


def census(block: TieredMemoryBlock, written: dict[str, Any]) -> Census:
    """Read every tier without touching; assert none lost, duplicated, stale or unknown."""
    mem = block.memory
    now = time.time()
    where: dict[str, list[str]] = {}
    stale: list[str] = []
    for tier in mem.tiers:
        found = list(tier.backend.scan(mem.namespace, None, now=now))
        for key in found:
            where.setdefault(key, []).append(tier.name)
        for start in range(0, len(found), 1000):
            got = tier.backend.get_many(
                mem.namespace, found[start : start + 1000], now=now, touch=False
            )
            stale += [k for k, r in got.items() if mem.codec.decode(r.value) != written.get(k)]
    lost = [k for k in written if k not in where]
    duplicated = [k for k, t in where.items() if len(t) > 1]
    unknown = [k for k in where if k not in written]
    assert not (lost or duplicated or stale or unknown), {
        "lost": lost[:5], "duplicated": duplicated[:5], "stale": stale[:5], "unknown": unknown[:5]
    }  # fmt: skip
    counts = {t.name: 0 for t in mem.tiers}
    for tiers in where.values():
        counts[tiers[0]] += 1
    return Census({k: t[0] for k, t in where.items()}, counts)


def reconcile(
    moved: list[int], written: list[int], before: Census, after: Census, source: str = "hot"
) -> int:
    """Over every run: entries moved = copies written = entries gone from the source = entries
    that arrived in the targets (per run, moved and written may differ when runs overlap: a
    run may commit a move whose copy the other run wrote)."""
    total = sum(moved)
    gone = before.counts[source] - after.counts[source]
    arrived = sum(after.counts[t] - before.counts[t] for t in after.counts if t != source)
    assert total == sum(written) == gone == arrived, (
        f"moved {moved}, written {written}, gone {gone}, arrived {arrived}"
    )
    return total


def partition_total(result: dict[str, Any]) -> tuple[int, int]:
    """A flow's partition rows add up to its total row and to its entries moved by rule;
    the total's entries moved and copies written."""
    rows = result["partitions"]
    assert rows[-1]["partition"] == "total"
    parts = [r for r in rows[:-1] if r["partition"] != "budgets"]
    assert sum(r["entries"] for r in parts) == rows[-1]["entries"] == sum(result["moved"].values())
    assert sum(r["written"] for r in parts) == rows[-1]["written"]
    return rows[-1]["entries"], rows[-1]["written"]


# -- several Prefect workers of a process work pool -----------------------------------------
USER_FLOWS = '''
"""A Prefect user's flows: maintenance spread over the workers of a process work pool."""

import json
import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from prefect_memory.flows import maintenance
from prefect_memory.tiers import partitions


def barrier(folder, mine, count, timeout=240.0):
    """Say that ``mine`` is ready, then wait until ``count`` runs are: they start together."""
    folder = Path(folder)
    (folder / f"ready-{mine}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("ready-*"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(list(folder.glob('ready-*')))} of {count} runs ready")
        time.sleep(0.02)


@flow
def start_together(flow_name, block, partitions, batch_size, folder, runs):
    """The package's flow, unchanged, once ``runs`` runs of this flow are running."""
    barrier(folder, flow_run.id, runs)
    result = getattr(maintenance, flow_name)(block, partitions=partitions, batch_size=batch_size)
    Path(folder, f"result-{flow_run.id}.json").write_text(json.dumps(result, default=str))
    return result


@flow
def archive_partition(block, index, count, batch_size, folder, together):
    """One partition of an archiving migration; its row is the run's artifact."""
    barrier(folder, index, together)
    memory = maintenance.load_memory(block)[1]
    report = partitions.migrate(memory, partitions.Partition(index, count), batch_size=batch_size)
    create_table_artifact([report.row()], key=f"archive-partition-{index + 1}-of-{count}")
    return report.row()


@flow
def archive_over_workers(block, deployment, count, batch_size, folder, together):
    """A flow run per partition (on whichever workers are free), then compaction once."""
    runs = [
        run_deployment(
            deployment,
            parameters={"block": block, "index": i, "count": count, "batch_size": batch_size,
                        "folder": folder, "together": together},
            timeout=0,
        )
        for i in range(count)
    ]
    with get_client(sync_client=True) as client:
        while True:
            states = [client.read_flow_run(run.id).state for run in runs]
            if all(state is not None and state.is_final() for state in states):
                break
            time.sleep(0.2)
    failed = [str(run.id) for run, state in zip(runs, states) if not state.is_completed()]
    if failed:
        raise RuntimeError(f"partition runs failed: {failed}")
    memory = maintenance.load_memory(block)[1]
    if partitions.has_budgets(memory):
        partitions.enforce_budgets(memory)
    return {"runs": [str(run.id) for run in runs], "compacted": partitions.compact(memory)}
'''


def api(server: Any, path: str, body: Any = None) -> Any:
    """GET (``body`` None) or POST ``/api<path>``, retried on 503 as Prefect's client does.

    The server answers 503 while its SQLite database is busy (several workers polling).
    """
    import urllib.error

    for attempt in range(20):
        try:
            return server.get(path) if body is None else server.post(path, body)
        except urllib.error.HTTPError as err:
            if err.code != 503 or attempt == 19:
                raise AssertionError(f"{path}: {err.code} {err.read()[:500]!r}") from err
            time.sleep(0.5 + attempt * 0.25)


@dataclass
class Pool:
    """A process work pool on the real server, its workers and a folder of user flows."""

    server: Any
    name: str
    folder: Path
    logs: dict[str, Path]
    processes: list[subprocess.Popen[bytes]]

    def deploy(self, flow_name: str, entrypoint: str, parameters: dict[str, Any]) -> str:
        """A deployment on the pool (as ``prefect deploy`` makes it); its id."""
        flow_id = api(self.server, "/flows/", {"name": flow_name})["id"]
        pull = [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(self.folder)}}
        ]
        body = {
            "name": f"{flow_name}-{self.name}",
            "flow_id": flow_id,
            "entrypoint": entrypoint,
            "work_pool_name": self.name,
            "parameters": parameters,
            "pull_steps": pull if ":" in entrypoint else [],
            "enforce_parameter_schema": False,
        }
        return api(self.server, "/deployments/", body)["id"]

    def run(self, deployment_id: str, parameters: dict[str, Any] | None = None) -> str:
        body = {"parameters": parameters or {}}
        return api(self.server, f"/deployments/{deployment_id}/create_flow_run", body)["id"]

    def wait(self, run_ids: list[str], timeout: float = 360) -> dict[str, str]:
        """The final state of each flow run (fails with the workers' logs if any is not)."""
        states: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {i: api(self.server, f"/flow_runs/{i}")["state_type"] for i in run_ids}
            if set(states.values()) <= TERMINAL:
                break
            time.sleep(0.5)
        assert set(states.values()) == {"COMPLETED"}, (states, self.log_tail())
        return states

    def ran_on(self, run_ids: list[str]) -> dict[str, str]:
        """Flow run id -> the worker that ran it: the label the worker gives a run it claimed.

        (Not the workers' "submitting flow run" log line: two workers polling at once both
        log it for the same run, and only the one whose Pending state the server accepts runs
        it.)
        """
        return {i: api(self.server, f"/flow_runs/{i}")["labels"]["prefect.worker.name"]
                for i in run_ids}  # fmt: skip

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {name}\n{log.read_text(errors='replace')[-chars:]}"
            for name, log in self.logs.items()
        )


@pytest.fixture(scope="module")
def pool(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """A process work pool with three workers (one flow run at a time each)."""
    from prefect.workers.process import ProcessWorker

    folder = tmp_path_factory.mktemp("fanout-workers")
    (folder / "user_flows.py").write_text(USER_FLOWS)
    name = f"fanout-{os.getpid()}-{int(time.time())}"
    template = ProcessWorker.get_default_base_job_template()
    api(server, "/work_pools/", {"name": name, "type": "process", "base_job_template": template})
    env = {**server.env(), "PREFECT_WORKER_QUERY_SECONDS": "2", "PYTHONUNBUFFERED": "1"}
    prefect = str(Path(sys.executable).with_name("prefect"))
    logs: dict[str, Path] = {}
    processes: list[subprocess.Popen[bytes]] = []
    for w in range(3):
        worker = f"{name}-w{w + 1}"
        logs[worker] = folder / f"{worker}.log"
        command = [prefect, "worker", "start", "--pool", name, "--type", "process",
                   "--name", worker, "--limit", "1"]  # fmt: skip
        with open(logs[worker], "wb") as log:
            process = subprocess.Popen(
                command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        processes.append(process)
    found = Pool(server, name, folder, logs, processes)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            listed = {w["name"] for w in api(server, f"/work_pools/{name}/workers/filter", {})}
            if set(logs) <= listed:
                break
            assert all(p.poll() is None for p in processes), found.log_tail()
            time.sleep(0.5)
        else:
            pytest.fail(f"workers did not start:\n{found.log_tail()}")
        yield found
    finally:
        for process in processes:  # the workers and the flow runs they started
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                    process.wait(timeout=20)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue


def save(block: TieredMemoryBlock, server: Any, name: str) -> str:
    """Save ``block`` on the real server; the ``"type-slug/name"`` the flows load."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        block.save_with_parts(name, overwrite=True)  # tiers with secrets: saved parts
    return f"tiered-memory/{name}"


def test_runs_of_the_same_migration_at_once_on_two_workers(
    pool: Pool, redis_server: Any, s3_server: Any, tmp_path: Path, unique: str
) -> None:
    block = tiered(
        RedisMemory(url=redis_server.url, key_prefix=unique),
        SqliteMemory(path=str(tmp_path / "warm.db")),
        archive_on_s3(s3_server, f"together-{unique}"),
        unique,
    )
    written = fill(block)
    before = census(block, written)
    ref = save(block, pool.server, f"fw-{unique}")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    deployment = pool.deploy("start_together", "user_flows.py:start_together", {})
    common = {"block": ref, "batch_size": 100, "folder": str(barrier), "runs": 2}
    runs = [
        pool.run(deployment, {**common, "flow_name": "migrate_tiers", "partitions": 4}),
        pool.run(deployment, {**common, "flow_name": "archive_to_parquet", "partitions": 3}),
    ]
    pool.wait(runs)
    workers = pool.ran_on(runs)
    assert len({workers[r] for r in runs}) == 2, workers  # two workers, one run each

    after = census(block, written)
    assert after.where == expected(N)
    results = [json.loads((barrier / f"result-{r}.json").read_text()) for r in runs]
    moved, copies = zip(*(partition_total(result) for result in results), strict=True)
    assert reconcile(list(moved), list(copies), before, after) == N - READ  # counted once
    assert results[0]["written"] == copies[0]  # migrate_tiers's own summary says the same
    assert [len(r["partitions"]) for r in results] == [5, 4]  # partitions and the total
    print(f"two workers {sorted(set(workers[r] for r in runs))}: moved {moved}, "
          f"skipped {[r['skipped'] for r in results]}")  # fmt: skip


def test_partitions_as_flow_runs_spread_over_the_workers(
    pool: Pool, redis_server: Any, s3_server: Any, tmp_path: Path, unique: str
) -> None:
    block = tiered(
        RedisMemory(url=redis_server.url, key_prefix=unique),
        SqliteMemory(path=str(tmp_path / "warm.db")),
        archive_on_s3(s3_server, f"spread-{unique}"),
        unique,
    )
    written = fill(block)
    before = census(block, written)
    ref = save(block, pool.server, f"fw-{unique}")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    child = pool.deploy("archive_partition", "user_flows.py:archive_partition", {})
    driver = pool.deploy("archive_over_workers", "user_flows.py:archive_over_workers", {})
    count = 3
    parameters = {
        "block": ref,
        "deployment": f"archive_partition/archive_partition-{pool.name}",
        "count": count,
        "batch_size": 100,
        "folder": str(barrier),
        "together": 2,  # the first two partitions wait for each other: two workers
    }
    (run,) = [pool.run(driver, parameters)]
    pool.wait([run])
    children = api(
        pool.server, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [child]}}}
    )
    child_runs = [c["id"] for c in children]
    assert len(child_runs) == count and {c["state_type"] for c in children} == {"COMPLETED"}
    workers = pool.ran_on([run, *child_runs])
    spread = {workers[c] for c in child_runs}
    assert len(spread) == 2 and workers[run] not in spread, workers

    after = census(block, written)
    assert after.where == expected(N)
    artifacts = api(
        pool.server, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": child_runs}}}
    )
    rows = [row for a in artifacts for row in json.loads(a["data"])]
    assert sorted(r["partition"] for r in rows) == [f"{i}/{count}" for i in range(1, count + 1)]
    moved = [r["entries"] for r in rows]
    assert [r["written"] for r in rows] == moved  # partitions share no key: no contention
    assert reconcile(moved, moved, before, after) == N - READ
    assert all(m > (N - READ) / count * 0.6 for m in moved), moved  # a fair share each
    again = block.memory.tiers[2].backend.compact(block.memory.namespace)
    assert again.files_before == again.files_after  # the driver compacted the archive once
    print(f"partitions on {sorted(spread)}, driver on {workers[run]}: moved {moved}")


# -- two flow runs at once in one process (prefect_test_harness) ----------------------------
@pytest.mark.parametrize(
    "flows", [("migrate_tiers", "migrate_tiers"), ("migrate_tiers", "archive_to_parquet")]
)
def test_two_flow_runs_at_once_move_each_entry_once(
    redis_server: Any,
    s3_server: Any,
    tmp_path: Path,
    unique: str,
    flows: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block = tiered(
        RedisMemory(url=redis_server.url, key_prefix=unique),
        SqliteMemory(path=str(tmp_path / "warm.db")),
        archive_on_s3(s3_server, f"harness-{unique}"),
        unique,
    )
    n = 1200
    written = fill(block, n)
    before = census(block, written)
    by_name = {"migrate_tiers": migrate_tiers, "archive_to_parquet": archive_to_parquet}
    counts = [3, 4]  # partitions of each run: their key ranges overlap unevenly
    # Flow runs started together still begin their tasks a flow start-up apart (the first
    # could finish before the second moves anything): every partition task of both runs
    # waits here until all of them are running, so the two runs really move at once.
    real, together = engine.migrate, threading.Barrier(sum(counts), timeout=120)

    def migrate(memory: Any, partition: Any = None, **kwargs: Any) -> Any:
        together.wait()
        return real(memory, partition, **kwargs)

    monkeypatch.setattr(engine, "migrate", migrate)
    start = threading.Barrier(len(flows))
    results: dict[int, Any] = {}

    def run(slot: int, name: str) -> None:
        start.wait()
        try:
            results[slot] = by_name[name](block, partitions=counts[slot], batch_size=100)
        except BaseException as err:  # reported by the assertion below
            results[slot] = err

    threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(flows)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(isinstance(r, dict) for r in results.values()) and len(results) == 2, results
    after = census(block, written)
    assert after.where == expected(n)
    moved, copies = zip(*(partition_total(results[i]) for i in range(2)), strict=True)
    assert reconcile(list(moved), list(copies), before, after) == n - READ
    print(f"{flows}: moved {moved}, skipped {[results[i]['skipped'] for i in range(2)]}")


# -- MongoDB and S3 -------------------------------------------------------------------------
def mongo_block(
    redis_server: Any, mongo_server: Any, s3_server: Any, unique: str
) -> TieredMemoryBlock:
    return tiered(
        RedisMemory(url=redis_server.url, key_prefix=unique),
        MongoDBMemory(url=mongo_server.url, collection=f"fan{unique}", timeout=60),
        archive_on_s3(s3_server, f"mongo-{unique}"),
        unique,
        CASCADE,
    )


def _redis_mongo_s3(block: TieredMemoryBlock, flow: Any, n: int, read: int, parts: int) -> None:
    written = fill(block, n, read)
    due = n - read
    steps = [("hot", "warm", migrate_tiers), ("warm", "cold", archive_to_parquet)]
    for source, target, maintenance in steps:  # Redis -> MongoDB, then MongoDB -> S3
        before = census(block, written)
        result = flow(maintenance)(block, partitions=parts, batch_size=50)
        after = census(block, written)
        moved, copies = partition_total(result)
        assert reconcile([moved], [copies], before, after, source) == due
        assert after.counts[target] - before.counts[target] == due
        rows = result["partitions"][:-1]
        assert len(rows) == parts and all(r["entries"] > due / parts * 0.6 for r in rows), rows
    final = census(block, written)
    assert final.counts == {"hot": read, "warm": 0, "cold": due}


def _on_dask(block: TieredMemoryBlock, n: int, read: int, parts: int) -> None:
    """Both steps on one LocalCluster of worker processes (started once: it costs seconds)."""
    from distributed import LocalCluster

    with LocalCluster(**DASK) as cluster:
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        _redis_mongo_s3(block, lambda m: m.with_options(task_runner=runner), n, read, parts)


@pytest.mark.mongodb
@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_redis_to_mongodb_to_s3_fans_out(
    redis_server: Any, mongo_server: Any, s3_server: Any, unique: str, runner: str
) -> None:
    block = mongo_block(redis_server, mongo_server, s3_server, unique)
    if runner == "threads":
        _redis_mongo_s3(block, lambda maintenance: maintenance, 900, 90, 3)
    else:
        _on_dask(block, 600, 60, 2)


@slow
@pytest.mark.mongodb
@pytest.mark.timeout(3600)
def test_redis_to_mongodb_to_s3_few_thousand_entries_on_dask(
    redis_server: Any, mongo_server: Any, s3_server: Any, unique: str
) -> None:
    _on_dask(mongo_block(redis_server, mongo_server, s3_server, unique), 4000, 400, 4)


def test_a_partition_retried_by_prefect_after_half_its_work_moves_each_entry_once(
    redis_server: Any,
    s3_server: Any,
    tmp_path: Path,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block = tiered(
        RedisMemory(url=redis_server.url, key_prefix=unique),
        SqliteMemory(path=str(tmp_path / "warm.db")),
        archive_on_s3(s3_server, f"retry-{unique}"),
        unique,
    )
    written = fill(block)
    before = census(block, written)
    count, failing = 3, engine.Partition(1, 3)
    mine = sum(1 for i in range(READ, N) if failing.holds(f"k:{i}"))
    real = engine.migrate
    attempts: list[int] = []  # entries the failing partition had moved at each attempt's end

    def migrate(memory: Any, partition: Any = None, **kwargs: Any) -> Any:
        if partition != failing:
            return real(memory, partition, **kwargs)

        def progress(report: Any) -> None:
            if not attempts and report.total_moved >= mine // 2:
                attempts.append(report.total_moved)
                raise RuntimeError("partition 2/3 dies half-way (injected)")

        report = real(memory, partition, **{**kwargs, "progress": progress})
        attempts.append(report.entries)
        return report

    monkeypatch.setattr(engine, "migrate", migrate)
    result = archive_to_parquet(block, partitions=count, batch_size=50)
    after = census(block, written)
    assert after.where == expected(N)
    first, retry = attempts  # the partition ran twice: Prefect retried it
    assert 0 < first < mine and first + retry == mine
    row = next(r for r in result["partitions"] if r["partition"] == "2/3")
    assert row["entries"] == retry  # the retry moved exactly what the first attempt left
    reported, copies = partition_total(result)
    # the failed attempt's moves (and copies) are done but its report died with it
    assert reported + first == reconcile([reported, first], [copies, first], before, after)
    assert reported + first == N - READ
    assert result["compacted"]["cold"]["files_after"] >= 1

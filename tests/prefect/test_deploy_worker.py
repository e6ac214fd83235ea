"""``examples/prefect.yaml`` deployed with ``prefect deploy`` and run by a process worker.

The path of a Prefect user, on a real ``prefect server`` (the session's ``server`` fixture):
``prefect-memory blocks create`` saves a tiered memory (two SQLite tiers in a temporary
folder), ``prefect work-pool create``, ``prefect deploy --all --prefect-file`` of a copy of
``examples/prefect.yaml`` (only the block, pool and deployment names made unique), then
``prefect deployment run`` and ``prefect worker start --run-once``. Every command runs in a
temporary directory outside the repository and without ``PREFECT_MEMORY_PROJECT_DIR``: the
entrypoints are module paths into the installed package, so nothing of the repository is
needed. The runs must complete and the migration must really move the entries.

A second test checks that ``prefect-memory serve`` builds, for the same schedules, the same
deployments as ``examples/prefect.yaml`` (names, entrypoints, parameters, schedules, limits).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import prefect_memory as pm
from prefect_memory.flows import MAINTENANCE_FLOWS, deployments_from_config

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prefect.yaml"
FLOWS = ("migrate_tiers", "archive_to_parquet", "cleanup_expired", "memory_health_report")
RUN = ("migrate_tiers", "cleanup_expired", "memory_health_report")  # each needs only the block
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def test_prefect_yaml_needs_no_project_files() -> None:
    spec = _example()
    assert spec["pull"] == []  # no pull step: nothing to fetch, no directory to change into
    assert "PREFECT_MEMORY_PROJECT_DIR" not in EXAMPLE.read_text(encoding="utf-8")
    for deployment in spec["deployments"]:
        assert ":" not in deployment["entrypoint"], deployment  # a module path, not a file


def test_prefect_yaml_and_serve_make_the_same_deployments() -> None:
    spec = _example()
    by_flow: dict[str, dict[str, Any]] = {}
    schedules: dict[str, Any] = {}
    for deployment in spec["deployments"]:
        flow = MAINTENANCE_FLOWS[deployment["name"].rsplit("-", 1)[0]]
        by_flow[flow.name] = deployment
        parameters = dict(deployment["parameters"])
        block = parameters.pop("block")
        assert block == "tiered-memory/shop"
        (schedule,) = deployment["schedules"]
        schedules[flow.name] = {**schedule, "parameters": parameters}
    assert sorted(by_flow) == sorted(FLOWS)

    served = deployments_from_config({"block": "tiered-memory/shop", "schedules": schedules})
    assert len(served) == len(by_flow)
    for built in served:
        declared = by_flow[built.flow_name]
        assert built.name == declared["name"]
        assert built.entrypoint == declared["entrypoint"]
        assert built.parameters == declared["parameters"]
        assert set(built.tags) == set(declared["tags"])
        assert built.concurrency_limit == declared["concurrency_limit"]["limit"]
        assert (
            built.concurrency_options.collision_strategy.value
            == declared["concurrency_limit"]["collision_strategy"]
        )
        (schedule,) = built.schedules
        (wanted,) = declared["schedules"]
        if "interval" in wanted:
            assert schedule.schedule.interval.total_seconds() == wanted["interval"]
        else:
            assert schedule.schedule.cron == wanted["cron"]


def test_deploy_then_process_worker_runs_the_flows(
    server: Any, tmp_path: Path, unique: str
) -> None:
    elsewhere = tmp_path / "elsewhere"  # the cwd of every command: not the repository
    elsewhere.mkdir()
    assert ROOT not in elsewhere.resolve().parents
    env = server.env()
    env.pop("PREFECT_MEMORY_PROJECT_DIR", None)
    env.pop("PYTHONPATH", None)

    # a tiered memory with 20 entries due to move, saved as blocks on the server
    name, pool = f"dw{unique}", f"maintenance-{unique}"
    config = {
        "memory": {
            "backend": "hybrid",
            "namespace": "deploy",
            "tiers": [
                {"name": "hot", "backend": "sqlite", "location": str(tmp_path / "hot.db")},
                {"name": "warm", "backend": "sqlite", "location": str(tmp_path / "warm.db")},
            ],
            "migration": {"rules": [{"from": "hot", "to": "warm", "condition": "age > 0"}]},
        }
    }
    (elsewhere / "memory.json").write_text(json.dumps(config))
    _cli(
        [_bin("prefect-memory"), "blocks", "create", "memory.json", "--name-prefix", name],
        env, elsewhere,
    )  # fmt: skip
    memory = pm.from_config(elsewhere / "memory.json")
    memory.set_many({f"k{i}": i for i in range(20)})
    assert {memory.info(f"k{i}").tier for i in range(20)} == {"hot"}

    # examples/prefect.yaml with this test's block, pool and deployment names
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("tiered-memory/shop", f"tiered-memory/{name}")
    text = text.replace("-shop\n", f"-{name}\n").replace("memory-maintenance", pool)
    (elsewhere / "prefect.yaml").write_text(text)
    _cli([_bin("prefect"), "work-pool", "create", pool, "--type", "process"], env, elsewhere)
    _cli(
        [_bin("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml"],
        env, elsewhere,
    )  # fmt: skip

    deployed = {
        d["name"]: d
        for d in server.post("/deployments/filter", {})
        if d["name"].endswith(f"-{name}")
    }
    assert set(deployed) == {f"{flow}-{name}" for flow in FLOWS}
    for flow in FLOWS:
        deployment = deployed[f"{flow}-{name}"]
        assert deployment["entrypoint"] == f"prefect_memory.flows.maintenance.{flow}"
        assert deployment["pull_steps"] == []
        assert deployment["work_pool_name"] == pool
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    migrate = deployed[f"migrate_tiers-{name}"]
    assert migrate["parameters"] == {"block": f"tiered-memory/{name}", "batch_size": 5000}
    assert migrate["schedules"][0]["schedule"]["interval"] == 3600
    cleanup = deployed[f"cleanup_expired-{name}"]
    assert cleanup["schedules"][0]["schedule"]["cron"] == "0 3 * * *"

    # the runs this test asks for (the schedules add runs due later): one from the CLI as a
    # user would, the others through the API (each CLI call costs seconds of imports)
    started = _cli(
        [_bin("prefect"), "deployment", "run", f"migrate_tiers/migrate_tiers-{name}"],
        env, elsewhere,
    )  # fmt: skip
    found = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout)
    assert found, started.stdout
    run_ids = {"migrate_tiers": found.group(1)}
    for flow in RUN[1:]:
        deployment_id = deployed[f"{flow}-{name}"]["id"]
        run_ids[flow] = server.post(f"/deployments/{deployment_id}/create_flow_run", {})["id"]
    worker = _cli(
        [_bin("prefect"), "worker", "start", "--pool", pool, "--run-once"], env, elsewhere
    )
    logs = worker.stdout[-4000:] + worker.stderr[-4000:]

    states: dict[str, str] = {}
    deadline = time.monotonic() + 120  # the worker waits for its runs; this is a safety net
    while time.monotonic() < deadline:
        states = {flow: server.get(f"/flow_runs/{i}")["state_type"] for flow, i in run_ids.items()}
        if set(states.values()) <= TERMINAL:
            break
        time.sleep(1)
    assert states == dict.fromkeys(RUN, "COMPLETED"), logs

    assert {memory.info(f"k{i}").tier for i in range(20)} == {"warm"}
    run_id = run_ids["migrate_tiers"]
    artifacts = server.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    (report,) = [a for a in artifacts if a["type"] == "table"]
    assert report["description"].startswith("Moved 20 entries"), report["description"]

"""Maintenance deployments on a real Prefect server: schedules in the UI, a scheduled run done.

``prefect-memory blocks create`` saves a tiered memory (two SQLite tiers) to the server,
``prefect-memory serve`` serves the maintenance flows with the config's schedules, and the
test waits for a *scheduled* run of ``migrate_tiers`` to complete, checks the entries moved,
and renders the deployments page in headless Chromium.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from conftest import load_ui_helper

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ui = load_ui_helper()


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture
def served(server: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    warm = tmp_path / "warm.db"
    hot = tmp_path / "hot.db"
    config = {
        "memory": {
            "backend": "hybrid",
            "namespace": "ui",
            "tiers": [
                {"name": "hot", "backend": "sqlite", "location": str(hot)},
                {"name": "warm", "backend": "sqlite", "location": str(warm)},
            ],
            "migration": {"rules": [{"from": "hot", "to": "warm", "condition": "age > 0"}]},
        },
        "maintenance": {
            "block": "tiered-memory/ui-shop",
            "schedules": {
                "migrate_tiers": {"interval": 5},
                "cleanup_expired": {"cron": "0 3 * * *"},
            },
        },
    }
    path = tmp_path / "memory.json"
    path.write_text(json.dumps(config))
    env = server.env()
    created = subprocess.run(
        [_bin("prefect-memory"), "blocks", "create", str(path), "--name-prefix", "ui-shop",
         "--overwrite"],
        env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    mem = pm.from_config(path)
    mem.set_many({f"k{i}": i for i in range(20)})
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [_bin("prefect-memory"), "serve", str(path)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        yield {"process": process, "log": tmp_path / "serve.log", "memory": mem}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_scheduled_migration_runs_and_deployments_show_in_the_ui(
    server: Any,
    served: dict[str, Any],
    chromium_path: str,
    tmp_path: Path,
) -> None:
    deadline = time.monotonic() + 240
    completed: list[dict[str, Any]] = []
    deployments: dict[str, Any] = {}
    while time.monotonic() < deadline and not completed:
        assert served["process"].poll() is None, served["log"].read_text()[-3000:]
        deployments = {d["name"]: d for d in server.post("/deployments/filter", {})}
        migrate = deployments.get("migrate_tiers-ui-shop")
        if migrate is not None:
            runs = server.post(
                "/flow_runs/filter",
                {"flow_runs": {"deployment_id": {"any_": [migrate["id"]]},
                               "state": {"type": {"any_": ["COMPLETED"]}}}},
            )  # fmt: skip
            completed = [r for r in runs if r.get("auto_scheduled")]
        time.sleep(2)
    assert completed, served["log"].read_text()[-3000:]
    assert {"migrate_tiers-ui-shop", "cleanup_expired-ui-shop"} <= set(deployments)
    schedules = deployments["cleanup_expired-ui-shop"]["schedules"]
    assert schedules[0]["schedule"]["cron"] == "0 3 * * *"
    mem = served["memory"]
    assert {mem.info(f"k{i}").tier for i in range(20)} == {"warm"}
    dom = ui.chromium(chromium_path, server.url + "/deployments")
    assert "migrate_tiers-ui-shop" in dom and "cleanup_expired-ui-shop" in dom
    shot = tmp_path / "deployments.png"
    ui.chromium(chromium_path, server.url + "/deployments", screenshot=shot, window=(1440, 900))
    assert shot.stat().st_size > 30_000
    if os.environ.get("PM_UPDATE_DOCS_IMAGES"):  # refresh the picture in the docs
        (ROOT / "docs" / "img" / "deployments.png").write_bytes(shot.read_bytes())


def test_examples_prefect_yaml_deploys_with_schedules(server: Any, tmp_path: Path) -> None:
    env = server.env()
    pool = subprocess.run(
        [_bin("prefect"), "work-pool", "create", "memory-maintenance", "--type", "process"],
        env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert pool.returncode == 0 or "already exists" in pool.stdout, pool.stdout + pool.stderr
    deploy = subprocess.run(
        [_bin("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file",
         str(ROOT / "examples" / "prefect.yaml")],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    deployed = {d["name"]: d for d in server.post("/deployments/filter", {})}
    assert {
        "migrate_tiers-shop",
        "archive_to_parquet-shop",
        "cleanup_expired-shop",
        "memory_health_report-shop",
    } <= set(deployed)
    migrate = deployed["migrate_tiers-shop"]
    assert migrate["schedules"][0]["schedule"]["interval"] == 3600
    assert migrate["parameters"] == {"block": "tiered-memory/shop", "batch_size": 5000}
    assert deployed["cleanup_expired-shop"]["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
    for name in ("migrate_tiers-shop", "archive_to_parquet-shop", "cleanup_expired-shop",
                 "memory_health_report-shop"):  # fmt: skip
        assert deployed[name]["global_concurrency_limit"]["limit"] == 1, deployed[name]
        assert deployed[name]["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

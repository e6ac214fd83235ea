"""``make demo``: the command end to end (embedded and services), its modules' examples."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--users", "200", "--days", "4", "--requests", "40", "--distinct-users", "8",
         "--events", "2000"]  # fmt: skip


@pytest.mark.timeout(240)
def test_make_demo_embedded_end_to_end(tmp_path: Path) -> None:
    """``python -m prefect_memory.demo`` as ``make demo`` runs it: no server, own Prefect API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    result = subprocess.run(
        [sys.executable, "-m", "prefect_memory.demo", "--workdir", str(tmp_path / "demo"),
         "--json", str(tmp_path / "summary.json"), *SMALL],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for text in ("Entries per tier", "Time per step", "prediction cache", "wall time"):
        assert text in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["profile"] == "embedded"
    tiers = summary["tiers"]
    assert tiers["hot"]["store"].startswith("memory://")
    assert tiers["warm"]["store"].startswith("sqlite:///")
    assert tiers["cold"]["store"].startswith("parquet:///")
    assert tiers["hot"]["history"]["before migration"] == 203
    assert tiers["cold"]["entries"] == summary["archive"]["rows"] > 100
    assert summary["archive"]["files"] == 1  # compacted
    files = list((tmp_path / "demo" / "archive").rglob("*.parquet"))
    assert len(files) == 1 and "date=" in str(files[0])
    cache = summary["cache"]
    assert cache["hits"] == 40 - cache["distinct users"] and cache["stored_results"] > 0
    assert summary["downsampling"]["engine"].startswith("numpy")
    assert summary["downsampling"]["points"] == 2040
    assert summary["wall_seconds"] < 200
    assert "Traceback" not in result.stderr


@pytest.mark.redis
@pytest.mark.mongodb
@pytest.mark.s3
@pytest.mark.timeout(240)
def test_demo_services_profile_starts_and_stops_its_servers(
    prefect_api: str, tmp_path: Path
) -> None:
    from prefect_memory.demo import run_demo

    summary = run_demo(
        "services", workdir=tmp_path, prefect_api="current",
        sizes={"users": 150, "days": 3, "requests": 20, "distinct_users": 5,
               "backfill_events": 500},
    )  # fmt: skip
    assert summary["profile"] == "services"
    assert set(summary["setup"]["before"]) >= {
        "Start Redis, MongoDB (wire server) and S3 (SeaweedFS)"
    }
    hot = summary["tiers"]["hot"]["store"]
    port = int(hot.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as sock:  # the demo's Redis is gone
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert summary["archive"]["rows"] == summary["tiers"]["cold"]["entries"] > 0


@pytest.mark.parametrize(
    "name", ["data", "model", "stores", "events", "report", "services", "prefect_api", "pipeline"]
)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"prefect_memory.demo.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_make_demo_target() -> None:
    def dry(*args: str) -> str:
        out = subprocess.run(["make", "-n", "demo", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "-m prefect_memory.demo --profile embedded" in dry()
    services = dry("PROFILE=services")
    assert "-m prefect_memory.demo --profile services" in services
    assert "install-servers.sh redis mongo" in services


def test_services_profile_outside_a_clone_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prefect_memory.demo import services

    monkeypatch.setattr(services, "servers_module_path", lambda: tmp_path / "servers.py")
    monkeypatch.delitem(sys.modules, "prefect_memory_demo_test_servers", raising=False)
    with pytest.raises(RuntimeError, match=r"examples/ml_pipeline\.py"):
        services.load_servers_module()

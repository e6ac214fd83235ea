"""``prefect-memory serve --list`` and ``prefect-memory plot`` on real stores."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import prefect_memory as pm
from prefect_memory.cli import app

WIDE = {"COLUMNS": "250", "NO_COLOR": "1"}


def test_serve_lists_scheduled_deployments(tmp_path: Path) -> None:
    config = {
        "memory": {"backend": "memory"},
        "maintenance": {
            "block": "tiered-memory/shop",
            "schedules": {
                "migrate_tiers": {"interval": 900},
                "cleanup_expired": {"cron": "30 2 * * *"},
            },
        },
    }
    path = tmp_path / "memory.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["serve", str(path), "--list"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "migrate_tiers-shop" in result.output and "30 2 * * *" in result.output
    assert "0:15:00" in result.output  # the 900 s interval


def test_serve_reports_bad_schedules(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    path.write_text(json.dumps({"maintenance": {"schedules": {"nope": {"interval": 5}}}}))
    result = CliRunner().invoke(app, ["serve", str(path), "--list"], env=WIDE)
    assert result.exit_code == 2
    assert "nope: unknown flow" in result.output


def test_plot_writes_a_png(redis_server: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from prefect_memory.analytics import TimeSeries

    prefix = "plot" + uuid.uuid4().hex[:6]
    mem = pm.open_memory(redis_server.url, namespace="analytics", key_prefix=prefix)
    ts = TimeSeries(mem, "cpu", downsampling=[{"interval": 60, "aggregation": "avg"}])
    stamps = 1_700_000_000 + np.arange(0, 3600, 5, dtype=np.int64)
    ts.add_points(stamps * 1_000_000_000, np.sin(stamps / 300.0))
    ts.downsample()
    out = tmp_path / "cpu.png"
    result = CliRunner().invoke(
        app, ["plot", redis_server.url, "cpu", str(out), "--key-prefix", prefix], env=WIDE
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000

"""Schedules for the maintenance flows, from the ``"maintenance"`` section of a config.

.. code-block:: json

    {"memory": {...},
     "maintenance": {"block": "tiered-memory/shop",
                     "schedules": {"migrate_tiers": {"interval": 3600},
                                   "cleanup_expired": {"cron": "0 3 * * *"},
                                   "sync_hybrid": {"interval": 30, "block": "hybrid-memory/c"}}}}

Each schedule becomes a deployment ``<flow>-<block name>`` with an interval (seconds) or a
cron schedule, visible and editable in the Prefect UI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prefect.deployments.runner import EntrypointType

from ..config import load_config
from ..errors import ConfigError
from .maintenance import (
    archive_to_parquet,
    cleanup_expired,
    downsample_analytics,
    memory_health_report,
    migrate_tiers,
    sync_hybrid,
)

MAINTENANCE_FLOWS = {
    f.name: f
    for f in (
        migrate_tiers,
        archive_to_parquet,
        cleanup_expired,
        sync_hybrid,
        memory_health_report,
        downsample_analytics,
    )
}


def _maintenance_section(source: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    if isinstance(source, Mapping) and "schedules" in source:
        return dict(source)
    load_config(source)  # validates the file and the memory section
    raw = source if isinstance(source, Mapping) else _read(source)
    section = raw.get("maintenance")
    if not isinstance(section, Mapping):
        raise ConfigError("the config has no 'maintenance' section with schedules")
    return dict(section)


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    import json
    from pathlib import Path

    return json.loads(Path(path).read_text(encoding="utf-8"))


def deployments_from_config(source: Mapping[str, Any] | str | os.PathLike[str]) -> list[Any]:
    """Build one Prefect deployment per configured schedule (every problem listed at once)."""
    section = _maintenance_section(source)
    default_block = section.get("block")
    schedules = section.get("schedules")
    problems: list[str] = []
    if not isinstance(schedules, Mapping) or not schedules:
        raise ConfigError("maintenance.schedules: must name at least one flow")
    deployments = []
    for name, spec in schedules.items():
        path = f"maintenance.schedules.{name}"
        flow = MAINTENANCE_FLOWS.get(name)
        if flow is None:
            problems.append(f"{path}: unknown flow (known: {', '.join(MAINTENANCE_FLOWS)})")
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"{path}: must be an object with 'interval' or 'cron'")
            continue
        unknown = set(spec) - {"interval", "cron", "block", "parameters"}
        if unknown:
            problems.append(f"{path}: unknown keys {', '.join(sorted(unknown))}")
        block = spec.get("block", default_block)
        if not isinstance(block, str) or "/" not in block:
            problems.append(f"{path}.block: a saved block 'type-slug/name' is needed")
            continue
        interval, cron = spec.get("interval"), spec.get("cron")
        if (interval is None) == (cron is None):
            problems.append(f"{path}: give exactly one of 'interval' (seconds) or 'cron'")
            continue
        if interval is not None and (
            not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0
        ):
            problems.append(f"{path}.interval: must be positive seconds, got {interval!r}")
            continue
        parameters = {"block": block, **dict(spec.get("parameters") or {})}
        deployment_name = f"{name}-{block.split('/', 1)[1]}"
        try:
            deployments.append(
                flow.to_deployment(
                    name=deployment_name,
                    interval=interval,
                    cron=cron,
                    parameters=parameters,
                    tags=["prefect-memory", "maintenance"],
                    entrypoint_type=EntrypointType.MODULE_PATH,
                    description=(flow.description or "").strip().splitlines()[0],
                )
            )
        except Exception as err:  # e.g. a cron string Prefect refuses
            problems.append(f"{path}: {err}")
    if problems:
        raise ConfigError("invalid maintenance config:\n  " + "\n  ".join(problems))
    return deployments


def serve_maintenance(source: Mapping[str, Any] | str | os.PathLike[str]) -> None:
    """Serve the configured maintenance deployments (blocks until interrupted)."""
    from prefect import serve

    serve(*deployments_from_config(source))

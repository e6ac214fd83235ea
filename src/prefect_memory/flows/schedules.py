"""Schedules for the maintenance flows, from the ``"maintenance"`` section of a config.

.. code-block:: json

    {"memory": {...},
     "maintenance": {"block": "tiered-memory/shop",
                     "concurrency_limit": {"limit": 1, "collision_strategy": "CANCEL_NEW"},
                     "schedules": {"migrate_tiers": {"interval": 3600},
                                   "cleanup_expired": {"cron": "0 3 * * *"},
                                   "sync_hybrid": {"interval": 30, "block": "hybrid-memory/c"}}}}

Each schedule becomes a deployment ``<flow>-<block name>`` with an interval (seconds) or a
cron schedule, visible and editable in the Prefect UI.

Every deployment carries a Prefect deployment concurrency limit, by default
``{"limit": 1, "collision_strategy": "CANCEL_NEW"}``: a scheduled run that starts while the
previous one is still working is cancelled ("Deployment concurrency limit reached.") instead
of queueing behind it; the next scheduled run picks up whatever is left. Overlapping runs
would be safe anyway (moves are conditional), the limit only avoids wasted work.
``concurrency_limit`` is accepted on the section (default of every schedule) and on one
schedule; ``"collision_strategy": "ENQUEUE"`` makes late runs wait for the slot instead, and
``null`` removes the limit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType

from ..config.document import load_document
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

SECTION_KEYS = ("block", "schedules", "concurrency_limit")
SCHEDULE_KEYS = ("interval", "cron", "block", "parameters", "concurrency_limit")
DEFAULT_CONCURRENCY_LIMIT: dict[str, Any] = {"limit": 1, "collision_strategy": "CANCEL_NEW"}
_STRATEGIES = {s.value: s for s in ConcurrencyLimitStrategy}  # CANCEL_NEW, ENQUEUE


def concurrency_limit_from(
    value: Any, path: str, problems: list[str]
) -> ConcurrencyLimitConfig | None:
    """The Prefect deployment concurrency limit a config value asks for (``None``: none).

    ``value`` is ``None`` (no limit) or ``{"limit": N, "collision_strategy": S}`` with ``N``
    at least 1 (default 1) and ``S`` ``"CANCEL_NEW"`` (default) or ``"ENQUEUE"``. A problem is
    appended to ``problems`` (and ``None`` returned) for anything else.

    Example:
        >>> concurrency_limit_from({"collision_strategy": "enqueue"}, "x", []).limit
        1
        >>> problems = []
        >>> concurrency_limit_from({"limit": 0}, "maintenance.concurrency_limit", problems)
        >>> problems
        ['maintenance.concurrency_limit.limit: must be a whole number >= 1, got 0']
    """
    if value is None:
        return None
    shape = "an object {'limit': 1, 'collision_strategy': 'CANCEL_NEW' or 'ENQUEUE'} or null"
    if not isinstance(value, Mapping):
        problems.append(f"{path}: must be {shape}, got {value!r}")
        return None
    before = len(problems)
    unknown = set(value) - {"limit", "collision_strategy"}
    if unknown:
        problems.append(f"{path}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    limit = value.get("limit", 1)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        problems.append(f"{path}.limit: must be a whole number >= 1, got {limit!r}")
    raw = value.get("collision_strategy", DEFAULT_CONCURRENCY_LIMIT["collision_strategy"])
    strategy = _STRATEGIES.get(raw.upper()) if isinstance(raw, str) else None
    if strategy is None:
        problems.append(
            f"{path}.collision_strategy: must be one of {', '.join(_STRATEGIES)}, got {raw!r}"
        )
    if len(problems) > before or strategy is None:
        return None
    return ConcurrencyLimitConfig(limit=limit, collision_strategy=strategy)


def _maintenance_section(source: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    if isinstance(source, Mapping) and "schedules" in source:
        return dict(source)
    document, _ = load_document(source)  # read and bounded once, the memory section's place checked
    section = document.get("maintenance")
    if not isinstance(section, Mapping):
        raise ConfigError("the config has no 'maintenance' section with schedules")
    return dict(section)


def deployments_from_config(source: Mapping[str, Any] | str | os.PathLike[str]) -> list[Any]:
    """Build one Prefect deployment per configured schedule (every problem listed at once)."""
    section = _maintenance_section(source)
    default_block = section.get("block")
    schedules = section.get("schedules")
    problems: list[str] = []
    if not isinstance(schedules, Mapping) or not schedules:
        raise ConfigError("maintenance.schedules: must name at least one flow")
    unknown_section = set(section) - set(SECTION_KEYS)
    if unknown_section:
        problems.append(
            f"maintenance: unknown keys {', '.join(sorted(map(str, unknown_section)))} "
            f"(expected {', '.join(SECTION_KEYS)})"
        )
    default_limit = concurrency_limit_from(
        section.get("concurrency_limit", DEFAULT_CONCURRENCY_LIMIT),
        "maintenance.concurrency_limit",
        problems,
    )
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
        unknown = set(spec) - set(SCHEDULE_KEYS)
        if unknown:
            problems.append(f"{path}: unknown keys {', '.join(sorted(map(str, unknown)))}")
        limit = (
            concurrency_limit_from(spec["concurrency_limit"], f"{path}.concurrency_limit", problems)
            if "concurrency_limit" in spec
            else default_limit
        )
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
                    concurrency_limit=limit,
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

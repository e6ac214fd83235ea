"""Maintenance flows: thin Prefect flows over the memory engines, deployable on schedules.

Each flow takes a memory block (an instance, or a saved block as ``"type-slug/name"``),
calls one engine method, logs what it did and publishes its report as a Prefect artifact:

================================  ===========================================================
``migrate_tiers``                 ``TieredMemory.migrate`` (rules, tier TTLs, size budgets)
``archive_to_parquet``            migration into a Parquet archive tier, then ``compact``
``cleanup_expired``               ``purge_expired`` on stores that do not expire by themselves
``sync_hybrid``                   ``HybridMemory.sync`` (flush the journal, reconcile)
``memory_health_report``          reachability, latency, breaker, backlog, memory use
``downsample_analytics``          ``TimeSeries.downsample`` for the configured series
================================  ===========================================================

``serve_maintenance(schedules)`` serves them with interval or cron schedules and a
deployment concurrency limit of one run (see :mod:`prefect_memory.flows.schedules`).
Overlapping runs are safe anyway; ``migrate_tiers`` and ``archive_to_parquet`` count the keys
another run or a writer moved, changed or deleted first as skipped, in their artifact.

For ``prefect deploy`` and a work pool, their entrypoints are the module paths
``prefect_memory.flows.maintenance.<flow>`` (as in ``examples/prefect.yaml``): a worker
imports them from the installed package, no project files needed. ``serve`` and such a
``prefect.yaml`` name a deployment the same way, ``<flow name>-<block name>``.
"""

from __future__ import annotations

from .maintenance import (
    archive_to_parquet,
    cleanup_expired,
    downsample_analytics,
    memory_health_report,
    migrate_tiers,
    sync_hybrid,
)
from .schedules import MAINTENANCE_FLOWS, deployments_from_config, serve_maintenance

__all__ = [
    "MAINTENANCE_FLOWS",
    "archive_to_parquet",
    "cleanup_expired",
    "deployments_from_config",
    "downsample_analytics",
    "memory_health_report",
    "migrate_tiers",
    "serve_maintenance",
    "sync_hybrid",
]

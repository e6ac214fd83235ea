"""Entrypoints of the maintenance flows for ``prefect deploy`` (see ``examples/prefect.yaml``).

``prefect deploy`` loads flows by file path; this file re-exports the library's flows so
their entrypoints are ``examples/maintenance_flows.py:<flow>``.
"""

from prefect_memory.flows import (
    archive_to_parquet,
    cleanup_expired,
    downsample_analytics,
    memory_health_report,
    migrate_tiers,
    sync_hybrid,
)

__all__ = [
    "archive_to_parquet",
    "cleanup_expired",
    "downsample_analytics",
    "memory_health_report",
    "migrate_tiers",
    "sync_hybrid",
]

"""The maintenance flows, imported from the installed package: an example entrypoint file.

``examples/prefect.yaml`` does not need this file: its entrypoints are module paths into the
installed package (``prefect_memory.flows.maintenance.migrate_tiers``, ...), so a worker
runs them with ``pip install prefect-memory`` alone. This file shows the other style, a
project file that re-exports the flows (for example next to flows of your own), deployed
with a file entrypoint such as ``maintenance_flows.py:migrate_tiers``; the worker then needs
the file too (a ``pull`` step that clones your repository or sets its working directory).

Run it to see the flows it exports:

    python examples/maintenance_flows.py
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

if __name__ == "__main__":
    for name in __all__:
        flow = globals()[name]
        print(f"{flow.name}: prefect_memory.flows.maintenance.{name}")

"""Maintenance fanned out: one Prefect task per partition, on the flow's task runner.

The maintenance flows (``migrate_tiers``, ``archive_to_parquet``, ``cleanup_expired``) take
``partitions=n``: they ask the engine for ``n`` partitions
(:func:`prefect_memory.tiers.partitions.partitions`), map one task per partition with
``Task.map`` on whatever task runner the flow runs with (the default thread pool,
``DaskTaskRunner`` from ``prefect-dask``, ...), wait for all of them, and publish one
artifact with a row per partition (entries, bytes, seconds, skipped) and the total.

Each task receives the block (a block pickles without its connections; a saved block's
``"type-slug/name"`` is loaded in the task) and builds its own memory where it runs.
Tasks retry (``retries=2``): a partition whose worker was killed runs again, and the
conditional moves make that safe (see :mod:`prefect_memory.tiers.partitions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from ..tiers import partitions as engine
from ..tiers.migration import MigrationReport
from ..tiers.partitions import Partition, PartitionReport

#: Retries of a partition task (a killed worker, a store briefly down).
PARTITION_RETRIES = 2


def _memory(block: Any) -> Any:
    from .maintenance import load_memory  # maintenance imports this module

    return load_memory(block)[1]


def check_partitions(partitions: Any) -> int:
    """``partitions`` as a count, or :class:`~prefect_memory.errors.ConfigError`.

    Example:
        >>> check_partitions(4)
        4
    """
    return engine.partitions_count(partitions)


@task(
    name="migrate_partition",
    retries=PARTITION_RETRIES,
    retry_delay_seconds=1,
    cache_policy=NO_CACHE,
)
def migrate_partition(
    block: Any, partition: Partition, dry_run: bool = False, batch_size: int = 500
) -> PartitionReport:
    """Apply the rules and tier TTLs to one partition's keys (budgets too for 1 of 1)."""
    logger = get_run_logger()
    report = engine.migrate(
        _memory(block),
        partition,
        dry_run=dry_run,
        batch_size=batch_size,
        progress=lambda r: logger.debug("partition %s: moved %d so far", partition, r.total_moved),
    )
    logger.info(
        "partition %s: moved %d entries (%d bytes)", partition, report.entries, report.bytes
    )
    return report


@task(name="enforce_budgets", retries=PARTITION_RETRIES, cache_policy=NO_CACHE)
def enforce_budgets(block: Any, dry_run: bool = False, batch_size: int = 500) -> PartitionReport:
    """Demote the least recently used entries of tiers over budget (after the partitions)."""
    return engine.enforce_budgets(_memory(block), dry_run=dry_run, batch_size=batch_size)


@task(name="cleanup_partition", retries=PARTITION_RETRIES, cache_policy=NO_CACHE)
def cleanup_partition(block: Any, partition: Partition) -> PartitionReport:
    """Remove the expired entries of the stores of one store partition."""
    return engine.cleanup(_memory(block), partition)


@task(name="compact_archive", retries=PARTITION_RETRIES, cache_policy=NO_CACHE)
def compact_archive(block: Any) -> dict[str, Any]:
    """Compact the archive's small files once, after every partition moved its entries."""
    return engine.compact(_memory(block))


def run_migration(
    block: Any, memory: Any, partitions: int, *, dry_run: bool = False, batch_size: int = 500
) -> tuple[MigrationReport, list[PartitionReport]]:
    """Map :func:`migrate_partition` over ``partitions`` partitions, then budgets once.

    Returns the merged migration report and the partition reports (budgets last, if any).
    """
    parts = engine.partitions(memory, check_partitions(partitions))
    futures = migrate_partition.map(
        unmapped(block), parts, dry_run=unmapped(dry_run), batch_size=unmapped(batch_size)
    )
    reports = [future.result() for future in futures]
    if len(parts) > 1 and engine.has_budgets(memory):
        reports.append(enforce_budgets(block, dry_run=dry_run, batch_size=batch_size))
    return engine.merged_migration(reports, dry_run=dry_run), reports


def run_cleanup(block: Any, memory: Any, partitions: int) -> list[PartitionReport]:
    """Map :func:`cleanup_partition` over the memory's store partitions."""
    parts = engine.partitions(memory, check_partitions(partitions), by="store")
    futures = cleanup_partition.map(unmapped(block), parts)
    return [future.result() for future in futures]


def partition_rows(reports: Sequence[PartitionReport]) -> list[dict[str, Any]]:
    """A row per partition and the total, for a table artifact.

    Example:
        >>> rows = partition_rows([PartitionReport("1/2", 3, 30, 0.5),
        ...                        PartitionReport("2/2", 1, 10, 0.25)])
        >>> [(r["partition"], r["entries"], r["bytes"], r["seconds"]) for r in rows]
        [('1/2', 3, 30, 0.5), ('2/2', 1, 10, 0.25), ('total', 4, 40, 0.75)]
    """
    return [r.row() for r in reports] + [engine.total(reports).row()]


def partition_markdown(reports: Sequence[PartitionReport]) -> str:
    """The rows of :func:`partition_rows` as a Markdown table."""
    rows = partition_rows(reports)
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def by_rule(moved: dict[str, int]) -> str:
    """The entries moved by rule, for an artifact's description.

    Example:
        >>> by_rule({"hot -> warm: idle > 1h": 3})
        'by rule: hot -> warm: idle > 1h = 3'
        >>> by_rule({})
        'by rule: nothing moved'
    """
    if not moved:
        return "by rule: nothing moved"
    return "by rule: " + "; ".join(f"{label} = {count}" for label, count in moved.items())

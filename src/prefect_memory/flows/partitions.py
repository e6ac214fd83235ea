"""Maintenance fanned out: one Prefect task per partition, on the flow's task runner.

The maintenance flows (``migrate_tiers``, ``archive_to_parquet``, ``cleanup_expired``,
``downsample_analytics``) take ``partitions=n``: they ask the engine for ``n`` partitions
(:func:`prefect_memory.tiers.partitions.partitions`; the series of an analytics namespace
by a stable hash of their names for ``downsample_analytics``), map one task per partition with
``Task.map`` on whatever task runner the flow runs with (the default thread pool,
``DaskTaskRunner`` from ``prefect-dask``, ...), wait for all of them, and publish one
artifact with a row per partition (entries, bytes, seconds, skipped; series, chunks,
points, buckets, seconds for the downsampling) and the total.

Each task receives the block (a block pickles without its connections; a saved block's
``"type-slug/name"`` is loaded in the task) and builds its own memory where it runs.
Tasks retry (``retries=2``): a partition whose worker was killed runs again, and the
conditional moves make that safe (see :mod:`prefect_memory.tiers.partitions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from ..tiers import partitions as engine
from ..tiers.migration import BATCH_SIZE, MigrationReport
from ..tiers.partitions import Partition, PartitionReport

if TYPE_CHECKING:
    from ..analytics.config import AnalyticsReport

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
    block: Any, partition: Partition, dry_run: bool = False, batch_size: int = BATCH_SIZE
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
def enforce_budgets(
    block: Any, dry_run: bool = False, batch_size: int = BATCH_SIZE
) -> PartitionReport:
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
    block: Any, memory: Any, partitions: int, *, dry_run: bool = False, batch_size: int = BATCH_SIZE
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


@task(name="downsample_partition", retries=PARTITION_RETRIES, retry_delay_seconds=1,
      cache_policy=NO_CACHE)  # fmt: skip
def downsample_partition(
    block: Any, config: Any, namespace: str, partition: Partition
) -> AnalyticsReport:
    """Downsample the time series of one partition (a stable hash of the series name)."""
    from ..analytics import downsample_all

    report = downsample_all(config, connection=_memory(block), namespace=namespace,
                            partition=partition)  # fmt: skip
    get_run_logger().info(
        "partition %s: %d series, %d chunks, %d points", partition, len(report.series),
        report.chunks, report.points,
    )  # fmt: skip
    return report


def run_downsample(
    block: Any, config: Any, namespace: str, partitions: int
) -> tuple[AnalyticsReport, list[AnalyticsReport]]:
    """Map :func:`downsample_partition` over ``partitions`` partitions of the series.

    A series belongs to the partition of its name's hash
    (:meth:`~prefect_memory.tiers.partitions.Partition.holds`), so each series is
    downsampled by exactly one task of a run. Two runs at once, or a partition retried, are
    safe: a chunk's buckets are recomputed from the whole chunk and written by one run only
    (see :mod:`prefect_memory.analytics.downsample`).

    Returns:
        The merged report (every series, sorted by name) and the partition reports.
    """
    from ..analytics.config import AnalyticsReport

    n = check_partitions(partitions)
    parts = [Partition(i, n) for i in range(n)]
    futures = downsample_partition.map(unmapped(block), unmapped(config), unmapped(namespace),
                                       parts)  # fmt: skip
    reports = [future.result() for future in futures]
    merged = AnalyticsReport.merged(reports)
    if n == 1:
        merged.partition = None
    return merged, reports


def downsample_rows(reports: Sequence[AnalyticsReport]) -> list[dict[str, Any]]:
    """A row per downsampling partition (series, chunks, points, buckets, seconds) and the
    total.

    Example:
        >>> from prefect_memory.analytics import AnalyticsReport, DownsampleReport
        >>> one = AnalyticsReport([DownsampleReport("a", chunks=2, points=7,
        ...                                         buckets={"1m": 3})], partition="1/2")
        >>> rows = downsample_rows([one, AnalyticsReport(partition="2/2")])
        >>> [(r["partition"], r["series"], r["points"], r["buckets"]) for r in rows]
        [('1/2', 1, 7, 3), ('2/2', 0, 0, 0), ('total', 1, 7, 3)]
    """
    from ..analytics.config import AnalyticsReport

    return [r.row() for r in reports] + [AnalyticsReport.merged(reports).row()]


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
    return markdown_table(partition_rows(reports))


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as a Markdown table.

    Example:
        >>> print(markdown_table([{"partition": "1/1", "points": 3}]))
        | partition | points |
        |---|---|
        | 1/1 | 3 |
    """
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

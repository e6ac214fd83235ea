"""The maintenance flows (see the package docstring)."""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.blocks.core import Block

from ..memory import Memory
from ..tiers.migration import BATCH_SIZE
from .partitions import (
    by_rule,
    compact_archive,
    downsample_rows,
    markdown_table,
    partition_markdown,
    partition_rows,
    run_cleanup,
    run_downsample,
    run_migration,
)

BlockRef = Any  # a MemoryBlock instance or "type-slug/name"


def load_memory(block: BlockRef) -> tuple[Any, Memory]:
    """The block (loaded when given by name) and its memory."""
    if isinstance(block, str):
        if "/" not in block:
            raise ValueError(
                "a saved block is named 'type-slug/name' (e.g. 'tiered-memory/shop'), "
                f"got {block!r}"
            )
        block = Block.load(block)
    memory = getattr(block, "memory", None)
    if not isinstance(memory, Memory):
        raise TypeError(f"{type(block).__name__} is not a prefect-memory block")
    return block, memory


def _artifact_key(name: str, block: Any) -> str:
    raw = f"{name}-{getattr(block, '_block_document_name', None) or 'memory'}".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in raw)[:100]


def skipped_note(skipped: int) -> str:
    """What a migration's skipped keys mean, in the words of its artifact.

    A key is skipped when another actor got to it between this run's read and its move:
    another migration run (an overlapping scheduled run, a manual one), a promotion on read,
    or a user's write or delete. Nothing is lost: the key is where that actor left it.

    Example:
        >>> skipped_note(3)
        '3 keys skipped: another migration or a writer moved, changed or deleted them first'
        >>> skipped_note(1)
        '1 key skipped: another migration or a writer moved, changed or deleted it first'
        >>> skipped_note(0)
        'no keys skipped (no other migration or writer got to them first)'
    """
    if skipped <= 0:
        return "no keys skipped (no other migration or writer got to them first)"
    count, them = ("1 key", "it") if skipped == 1 else (f"{skipped} keys", "them")
    return f"{count} skipped: another migration or a writer moved, changed or deleted {them} first"


def _fields(done: Any) -> str:
    """A compaction report as ``name=value`` pairs (seconds rounded)."""
    if not isinstance(done, dict):
        return str(done)
    return ", ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in done.items()
    )


SKIPPED_ROW = "skipped: moved, changed or deleted first by another migration or a writer"


def _skipped_row(skipped: int) -> list[dict[str, Any]]:
    return [{"rule": SKIPPED_ROW, "entries": skipped}] if skipped > 0 else []


def _rows(report: Any, parts: list[Any], nothing: str) -> list[dict[str, Any]]:
    """One partition: a row per rule and the skipped keys, as before; else per partition."""
    if len(parts) > 1:
        return partition_rows(parts)
    rows = report.rows() + _skipped_row(report.skipped)
    return rows or [{"rule": nothing, "entries": 0}]


@flow(name="migrate_tiers", log_prints=False)
def migrate_tiers(
    block: BlockRef, dry_run: bool = False, batch_size: int = BATCH_SIZE, partitions: int = 1
) -> dict[str, Any]:
    """Move entries between tiers by the block's rules, tier TTLs and size budgets.

    Safe to overlap with another run or with writers (moves are conditional); the keys
    another actor moved, changed or deleted first are counted as skipped in the artifact.
    ``partitions`` maps one task per key-hash partition on the flow's task runner (see
    :mod:`prefect_memory.flows.partitions`); the artifact has a row per partition.
    """
    logger = get_run_logger()
    blk, memory = load_memory(block)
    if getattr(memory, "migrate", None) is None:
        raise TypeError(f"migrate_tiers needs a tiered memory, got {type(memory).__name__}")
    report, parts = run_migration(block, memory, partitions, dry_run=dry_run, batch_size=batch_size)
    if dry_run:
        done = f"Dry run: would move {report.total_moved} entries ({report.bytes_moved} bytes)"
    else:
        done = (
            f"Moved {report.total_moved} entries ({report.bytes_moved} bytes) "
            f"in {report.seconds:.2f}s; {skipped_note(report.skipped)}"
        )
    create_table_artifact(
        _rows(report, parts, "(nothing to move)"),
        key=_artifact_key("migration", blk),
        description=f"{done}; {by_rule(report.moved)}; over budget: {report.over_budget or 'none'}",
    )
    logger.info("migration %s: %s", "dry run" if dry_run else "done", report.moved)
    if report.skipped:
        logger.info(skipped_note(report.skipped))
    summary = dataclasses.asdict(report)
    summary["planned"] = summary["planned"][:1000]
    summary["contended"] = report.skipped > 0
    summary["partitions"] = partition_rows(parts)
    return summary


@flow(name="archive_to_parquet")
def archive_to_parquet(
    block: BlockRef, compact: bool = True, batch_size: int = BATCH_SIZE, partitions: int = 1
) -> dict[str, Any]:
    """Migrate due entries into the Parquet archive tier, then compact its small files.

    Safe to overlap with another run or with writers, like ``migrate_tiers``; skipped keys
    are counted in the artifact. ``partitions`` maps one task per key-hash partition;
    compaction runs once, after them.
    """
    logger = get_run_logger()
    blk, memory = load_memory(block)
    tiers = getattr(memory, "tiers", None)
    if not tiers:
        raise TypeError("archive_to_parquet needs a tiered memory with a Parquet archive tier")
    report, parts = run_migration(block, memory, partitions, batch_size=batch_size)
    compacted: dict[str, Any] = compact_archive(block) if compact else {}
    compaction = "; ".join(f"{name}: {_fields(done)}" for name, done in compacted.items())
    create_table_artifact(
        _rows(report, parts, "(nothing to archive)"),
        key=_artifact_key("archive", blk),
        description=f"Moved {report.total_moved} entries ({report.bytes_moved} bytes) "
        f"in {report.seconds:.2f}s; {skipped_note(report.skipped)}; {by_rule(report.moved)}; "
        f"compaction: {compaction or ('none' if compact else 'off')}",
    )
    logger.info("archived %d entries; compaction %s", report.total_moved, compacted)
    if report.skipped:
        logger.info(skipped_note(report.skipped))
    return {
        "moved": report.moved,
        "skipped": report.skipped,
        "contended": report.skipped > 0,
        "compacted": compacted,
        "partitions": partition_rows(parts),
    }


@flow(name="cleanup_expired")
def cleanup_expired(block: BlockRef, partitions: int = 1) -> int:
    """Delete expired entries in stores that do not expire them themselves.

    ``partitions`` maps one task per store (the tiers of a tiered memory), at most.
    """
    logger = get_run_logger()
    blk, memory = load_memory(block)
    parts = run_cleanup(block, memory, partitions)
    removed = sum(p.entries for p in parts)
    create_markdown_artifact(
        f"Removed **{removed}** expired entries from namespace `{memory.namespace}`.\n\n"
        + partition_markdown(parts),
        key=_artifact_key("cleanup", blk),
    )
    logger.info("removed %d expired entries", removed)
    return removed


@flow(name="sync_hybrid")
def sync_hybrid(block: BlockRef) -> dict[str, Any]:
    """Flush a hybrid memory's journal and reconcile its two stores (newer write wins)."""
    logger = get_run_logger()
    blk, memory = load_memory(block)
    sync = getattr(memory, "sync", None)
    if sync is None:
        raise TypeError(f"sync_hybrid needs a hybrid memory, got {type(memory).__name__}")
    report = sync()
    rows = [{"key": k, "difference": d} for k, d in report.differences[:500]] or [
        {"key": "(none)", "difference": "stores agree"}
    ]
    create_table_artifact(
        rows,
        key=_artifact_key("sync", blk),
        description=f"checked {report.checked}; copied to secondary "
        f"{report.copied_to_secondary}, to primary {report.copied_to_primary}; "
        f"conflicts {report.conflicts_resolved}",
    )
    logger.info("hybrid sync: %s differences", len(report.differences))
    summary = dataclasses.asdict(report)
    summary["differences"] = summary["differences"][:500]
    return summary


@flow(name="memory_health_report")
def memory_health_report(block: BlockRef, pressure_threshold: float = 0.8) -> list[dict[str, Any]]:
    """Reachability, latency and pressure of every store behind the memory, as an artifact.

    A store past ``pressure_threshold`` of its memory limit is logged as a warning and
    emitted as the Prefect event ``prefect-memory.memory.pressure``.
    """
    logger = get_run_logger()
    blk, memory = load_memory(block)
    from ..resilience.health import health

    report = health(memory)
    rows = report.rows()
    create_table_artifact(rows, key=_artifact_key("health", blk), description="memory health")
    for row in rows:
        logger.info("health: %s", row)
    for store in report.under_pressure(pressure_threshold):
        logger.warning("memory pressure: %s", store)
        from prefect.events import emit_event

        emit_event(
            event="prefect-memory.memory.pressure",
            resource={"prefect.resource.id": f"prefect-memory.store.{store.path}"},
            payload={"threshold": pressure_threshold},
        )
    return rows


@flow(name="downsample_analytics")
def downsample_analytics(
    block: BlockRef, config: dict[str, Any] | str, namespace: str = "analytics", partitions: int = 1
) -> dict[str, Any]:
    """Downsample every time series of an analytics config, on the block's Redis.

    ``partitions`` maps one task per partition of the series (a stable hash of the series
    name) on the flow's task runner; the artifact then has a row per partition (series,
    chunks, points, buckets, seconds) and the total above the table per series. Safe to
    overlap with another run or to retry: each chunk's buckets are written by one run only,
    and only that run counts them.
    """
    logger = get_run_logger()
    blk, _memory = load_memory(block)
    report, parts = run_downsample(block, config, namespace, partitions)
    body = report.markdown()
    if len(parts) > 1:
        body = f"{markdown_table(downsample_rows(parts))}\n\n{body}"
    create_markdown_artifact(body, key=_artifact_key("downsample", blk))
    logger.info("downsampled %d series (%d points)", len(report.series), report.points)
    if report.failed:
        logger.warning("series that failed: %s", report.failed)
    summary = report.as_dict()
    summary["partitions"] = downsample_rows(parts)
    return summary

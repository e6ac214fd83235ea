"""Migration between tiers: rules, tier TTLs and size budgets, in bounded batches.

Order of work: rules and tier TTLs are applied to the sources coldest first, so an entry
moves at most one step per run and a run never chases its own moves; then size budgets
are enforced hottest first, so an overflow demoted into a tier counts against its budget.
For each source tier the keys are streamed in batches of ``batch_size``; per batch one
read of the records, then per target tier one conditional copy and one conditional delete
(see :meth:`TieredBackend.move`). A run that is killed anywhere leaves every entry
readable, and running it again finishes the job.

Example:
    >>> import prefect_memory as pm
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.tiers import Tier, TieredMemory
    >>> mem = TieredMemory([Tier("hot", InProcessBackend()), Tier("warm", InProcessBackend())],
    ...                    rules=[{"from": "hot", "to": "warm", "condition": "accessCount < 1"}])
    >>> mem.set("k", 1)
    >>> report = mem.migrate()
    >>> report.moved, mem.info("k").tier
    ({'hot -> warm: accessCount < 1': 1}, 'warm')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..plugins.base import Record
from .moves import MoveOutcome
from .pushdown import candidates_query
from .tiered import TieredBackend


@dataclass
class MigrationReport:
    """What a migration run moved (or, for a dry run, would move)."""

    dry_run: bool
    moved: dict[str, int] = field(default_factory=dict)
    bytes_moved: int = 0
    skipped: int = 0  # candidates another actor moved, changed or deleted first
    written: int = 0  # copies this run wrote into target tiers
    over_budget: dict[str, int] = field(default_factory=dict)
    planned: list[tuple[str, str, str]] = field(default_factory=list)
    scanned: int = 0
    pushed_down: int = 0  # tiers whose rules ran as a store query instead of a scan
    seconds: float = 0.0

    @property
    def total_moved(self) -> int:
        """Entries moved over all rules."""
        return sum(self.moved.values())

    def add(self, label: str, count: int, size: int) -> None:
        """Count ``count`` entries of ``size`` bytes moved by ``label``."""
        if count:
            self.moved[label] = self.moved.get(label, 0) + count
            self.bytes_moved += size

    def rows(self) -> list[dict[str, Any]]:
        """One row per rule, for a table artifact."""
        return [{"rule": label, "entries": count} for label, count in self.moved.items()]


def _batches(keys: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _account(
    report: MigrationReport, label: str, group: dict[str, Record], outcome: MoveOutcome
) -> None:
    report.add(label, len(outcome.moved), sum(group[k].size for k in outcome.moved))
    report.skipped += len(outcome.skipped)
    report.written += len(outcome.written)


def _choose(
    backend: TieredBackend, index: int, record: Record, now: float
) -> tuple[int, str] | None:
    """The target tier and the reason for a record in tier ``index`` (``None``: stays)."""
    tier = backend.tiers[index]
    for rule in backend.rules:
        if rule.source == tier.name and rule.condition.matches(record, now):
            label = f"{rule.source} -> {rule.target}: {rule.condition.text}"
            return backend.tier_index(rule.target), label
    last = index + 1 >= len(backend.tiers)
    if tier.ttl is not None and not last and now - record.updated_at > tier.ttl:
        nxt = backend.tiers[index + 1].name
        return index + 1, f"{tier.name} -> {nxt}: tier ttl {tier.ttl:g}s"
    return None


def migrate(
    backend: TieredBackend,
    ns: str,
    *,
    now: float | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    clock: Any = time.time,
    progress: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Apply the rules, tier TTLs and size budgets of ``backend`` to namespace ``ns``.

    ``progress`` is called with the running report after every batch (progress bars,
    Prefect logs).
    """
    started = time.perf_counter()
    report = MigrationReport(dry_run=dry_run)
    for index in reversed(range(len(backend.tiers))):
        tier = backend.tiers[index]
        last = index + 1 >= len(backend.tiers)
        if not any(r.source == tier.name for r in backend.rules) and (tier.ttl is None or last):
            continue  # nothing can move out of this tier: do not read it
        at = clock() if now is None else now
        pushed = candidates_query(backend, index, at)
        keys_iter = (
            tier.backend.scan(ns, None, now=at)
            if pushed is None
            else tier.backend.scan_query(ns, pushed, now=at)
        )
        report.pushed_down += pushed is not None
        for keys in _batches(keys_iter, batch_size):
            at = clock() if now is None else now
            records = tier.backend.get_many(ns, keys, now=at, touch=False)
            report.scanned += len(records)
            groups: dict[tuple[int, str], dict[str, Record]] = {}
            for key, record in records.items():
                choice = _choose(backend, index, record, at)
                if choice is not None:
                    groups.setdefault(choice, {})[key] = record
            for (target, label), group in groups.items():
                if dry_run:
                    report.planned.extend((k, tier.name, backend.tiers[target].name) for k in group)
                    report.add(label, len(group), sum(r.size for r in group.values()))
                    continue
                _account(
                    report, label, group, backend.move_outcome(ns, group, index, target, now=at)
                )
            if progress is not None:
                progress(report)
    for index in range(len(backend.tiers)):  # budgets hottest first: overflow cascades down
        _enforce_budget(backend, ns, index, report, dry_run, batch_size, clock, now)
    report.seconds = time.perf_counter() - started
    return report


def _enforce_budget(
    backend: TieredBackend,
    ns: str,
    index: int,
    report: MigrationReport,
    dry_run: bool,
    batch_size: int,
    clock: Any,
    now: float | None,
) -> None:
    """Demote least recently used entries of a tier over its size or entry budget."""
    tier = backend.tiers[index]
    if tier.max_bytes is None and tier.max_entries is None:
        return
    at = clock() if now is None else now
    usage: list[tuple[float, str, int]] = []
    for keys in _batches(tier.backend.scan(ns, None, now=at), batch_size):
        for key, record in tier.backend.get_many(ns, keys, now=at, touch=False).items():
            usage.append((record.last_access, key, record.size))
    usage.sort()
    count, total = len(usage), sum(size for _, _, size in usage)
    overflow: list[str] = []
    for _, key, size in usage:
        over_entries = tier.max_entries is not None and count > tier.max_entries
        over_bytes = tier.max_bytes is not None and total > tier.max_bytes
        if not (over_entries or over_bytes):
            break
        overflow.append(key)
        count -= 1
        total -= size
    if not overflow:
        return
    if index + 1 >= len(backend.tiers):
        report.over_budget[tier.name] = len(overflow)  # the last tier never drops entries
        return
    label = f"{tier.name} -> {backend.tiers[index + 1].name}: over budget (LRU)"
    for start in range(0, len(overflow), batch_size):
        keys = overflow[start : start + batch_size]
        records = tier.backend.get_many(ns, keys, now=at, touch=False)
        if dry_run:
            report.planned.extend((k, tier.name, backend.tiers[index + 1].name) for k in records)
            report.add(label, len(records), sum(r.size for r in records.values()))
            continue
        _account(
            report, label, records, backend.move_outcome(ns, records, index, index + 1, now=at)
        )

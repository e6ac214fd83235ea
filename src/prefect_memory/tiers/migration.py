"""Migration between tiers: rules, tier TTLs and size budgets, in bounded batches.

Order of work: rules and tier TTLs are applied to the sources coldest first, so an entry
moves at most one step per run and a run never chases its own moves; then size budgets
are enforced hottest first, so an overflow demoted into a tier counts against its budget.
For each source tier the keys are streamed in batches of ``batch_size``; per batch one
read of the records, then per target tier one conditional copy and one conditional delete
(see :meth:`TieredBackend.move`). A run that is killed anywhere leaves every entry
readable, and running it again finishes the job.

Deciding reads metadata only. Rule fields, tier TTLs and budgets are all metadata, so on
a store that declares ``capabilities.metadata_reads`` a batch is read with
:meth:`~prefect_memory.plugins.base.Backend.meta_many` (no value travels); the values
of the entries that move are then loaded with ``get_many`` in loads of at most
``batch_size`` entries and ``batch_bytes`` bytes (by their stored sizes; one entry
larger than that is loaded alone), each entry is checked again on the loaded record (it
may have changed since the decision) and moved. A dry run loads no value at all. Stores
that cannot read metadata alone are read once with ``get_many``, as before.

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

from ..plugins.base import Backend, Record
from .moves import MoveOutcome
from .pushdown import candidates_query
from .rules import FIELDS
from .tiered import Tier, TieredBackend

#: Most bytes of values one load of a migration holds (by the stored sizes read).
BATCH_BYTES = 64 << 20
#: Rule fields answered by metadata alone (today every field: none reads the value).
METADATA_FIELDS = frozenset(FIELDS)


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


def _loads(records: dict[str, Record], count: int, max_bytes: int) -> Iterator[list[str]]:
    """Keys of ``records`` in loads of at most ``count`` keys and ``max_bytes`` bytes.

    Example:
        >>> recs = {k: Record(b"", 0, 0, 0, stored_size=s) for k, s in
        ...         [("a", 4), ("b", 4), ("c", 9), ("d", 1)]}
        >>> list(_loads(recs, 10, 8))
        [['a', 'b'], ['c'], ['d']]
    """
    load: list[str] = []
    size = 0
    for key, record in records.items():
        if load and (len(load) >= count or size + record.size > max_bytes):
            yield load
            load, size = [], 0
        load.append(key)
        size += record.size
    if load:
        yield load


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


def _decides_on_metadata(backend: TieredBackend, tier: Tier) -> bool:
    """Whether the tier's store reads metadata alone and its rules read nothing else."""
    if not tier.backend.capabilities.metadata_reads:
        return False
    fields = {f for r in backend.rules if r.source == tier.name for f in r.condition.fields}
    return fields <= METADATA_FIELDS


def _read(source: Backend, ns: str, keys: list[str], now: float, meta: bool) -> dict[str, Record]:
    """The records of ``keys`` to decide on: metadata only when ``meta``."""
    if meta:
        return source.meta_many(ns, keys, now=now)
    return source.get_many(ns, keys, now=now, touch=False)


def _move_loaded(
    backend: TieredBackend,
    ns: str,
    report: MigrationReport,
    chosen: tuple[int, str],
    decided: dict[str, Record],
    index: int,
    at: float,
    limits: tuple[int, int],
    still: Callable[[Record], bool],
) -> None:
    """Load the values of ``decided`` (metadata records) in bounded loads and move them.

    ``still`` checks a loaded record again: one that no longer qualifies, or is gone,
    counts as skipped (another actor changed it first).
    """
    target, label = chosen
    source = backend.tiers[index].backend
    for keys in _loads(decided, *limits):
        loaded = source.get_many(ns, keys, now=at, touch=False)
        group = {k: r for k, r in loaded.items() if still(r)}
        report.skipped += len(keys) - len(group)
        if group:
            _account(report, label, group, backend.move_outcome(ns, group, index, target, now=at))
        del loaded, group  # the next load must not add to this one


def migrate(
    backend: TieredBackend,
    ns: str,
    *,
    now: float | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    clock: Any = time.time,
    progress: Callable[[MigrationReport], None] | None = None,
    batch_bytes: int = BATCH_BYTES,
    only: Callable[[str], bool] | None = None,
    budgets: bool = True,
) -> MigrationReport:
    """Apply the rules, tier TTLs and size budgets of ``backend`` to namespace ``ns``.

    ``progress`` is called with the running report after every batch (progress bars,
    Prefect logs). ``batch_bytes`` bounds the values one load holds on stores that read
    metadata alone (see the module docstring). ``only`` keeps the keys of one partition
    (a key filter, see :mod:`.partitions`); ``budgets=False`` leaves the size budgets to
    :func:`enforce_budgets` (an LRU order spans every partition).
    """
    started = time.perf_counter()
    report = MigrationReport(dry_run=dry_run)
    limits = (max(1, int(batch_size)), max(1, int(batch_bytes)))
    for index in reversed(range(len(backend.tiers))):
        tier = backend.tiers[index]
        last = index + 1 >= len(backend.tiers)
        if not any(r.source == tier.name for r in backend.rules) and (tier.ttl is None or last):
            continue  # nothing can move out of this tier: do not read it
        meta = _decides_on_metadata(backend, tier)
        at = clock() if now is None else now
        pushed = candidates_query(backend, index, at)  # None unless capabilities.pushdown
        keys_iter = (
            tier.backend.scan(ns, None, now=at)
            if pushed is None
            else tier.backend.scan_query(ns, pushed, now=at)
        )
        report.pushed_down += pushed is not None
        if only is not None:
            keys_iter = filter(only, keys_iter)
        for keys in _batches(keys_iter, batch_size):
            at = clock() if now is None else now
            records = _read(tier.backend, ns, keys, at, meta)
            report.scanned += len(records)
            groups: dict[tuple[int, str], dict[str, Record]] = {}
            for key, record in records.items():
                choice = _choose(backend, index, record, at)
                if choice is not None:
                    groups.setdefault(choice, {})[key] = record
            del records
            for chosen, group in groups.items():
                target, label = chosen
                if dry_run:
                    report.planned.extend((k, tier.name, backend.tiers[target].name) for k in group)
                    report.add(label, len(group), sum(r.size for r in group.values()))
                elif meta:
                    same = _same_choice(backend, index, at, chosen)
                    _move_loaded(backend, ns, report, chosen, group, index, at, limits, same)
                else:
                    outcome = backend.move_outcome(ns, group, index, target, now=at)
                    _account(report, label, group, outcome)
            if progress is not None:
                progress(report)
    if budgets:
        for index in range(len(backend.tiers)):  # budgets hottest first: overflow cascades
            _enforce_budget(backend, ns, index, report, dry_run, limits, clock, now)
    report.seconds = time.perf_counter() - started
    return report


def enforce_budgets(
    backend: TieredBackend,
    ns: str,
    *,
    now: float | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    clock: Any = time.time,
    batch_bytes: int = BATCH_BYTES,
) -> MigrationReport:
    """Only the size budgets of :func:`migrate` (hottest tier first), over every key.

    The last step of a partitioned migration: the partitions apply rules and tier TTLs,
    then one call demotes the least recently used entries of the tiers still over budget.
    """
    started = time.perf_counter()
    report = MigrationReport(dry_run=dry_run)
    limits = (max(1, int(batch_size)), max(1, int(batch_bytes)))
    for index in range(len(backend.tiers)):
        _enforce_budget(backend, ns, index, report, dry_run, limits, clock, now)
    report.seconds = time.perf_counter() - started
    return report


def _same_choice(
    backend: TieredBackend, index: int, at: float, chosen: tuple[int, str]
) -> Callable[[Record], bool]:
    """A check that a loaded record still goes where its metadata said."""
    return lambda record: _choose(backend, index, record, at) == chosen


def _enforce_budget(
    backend: TieredBackend,
    ns: str,
    index: int,
    report: MigrationReport,
    dry_run: bool,
    limits: tuple[int, int],
    clock: Any,
    now: float | None,
) -> None:
    """Demote least recently used entries of a tier over its size or entry budget.

    Only the metadata of the tier is read (on stores that can); the values of the
    entries demoted are loaded in bounded loads, and not at all in a dry run.
    """
    tier = backend.tiers[index]
    if tier.max_bytes is None and tier.max_entries is None:
        return
    at = clock() if now is None else now
    meta = tier.backend.capabilities.metadata_reads
    usage: list[tuple[float, str, int]] = []
    for keys in _batches(tier.backend.scan(ns, None, now=at), limits[0]):
        for key, record in _read(tier.backend, ns, keys, at, meta).items():
            usage.append((record.last_access, key, record.size))
    usage.sort()
    count, total = len(usage), sum(size for _, _, size in usage)
    overflow: dict[str, Record] = {}
    for last_access, key, size in usage:
        over_entries = tier.max_entries is not None and count > tier.max_entries
        over_bytes = tier.max_bytes is not None and total > tier.max_bytes
        if not (over_entries or over_bytes):
            break
        overflow[key] = Record(b"", at, at, last_access, stored_size=size)
        count -= 1
        total -= size
    del usage
    if not overflow:
        return
    if index + 1 >= len(backend.tiers):
        report.over_budget[tier.name] = len(overflow)  # the last tier never drops entries
        return
    target = backend.tiers[index + 1].name
    label = f"{tier.name} -> {target}: over budget (LRU)"
    if dry_run:
        report.planned.extend((k, tier.name, target) for k in overflow)
        report.add(label, len(overflow), sum(r.size for r in overflow.values()))
        return
    chosen = (index + 1, label)
    _move_loaded(backend, ns, report, chosen, overflow, index, at, limits, lambda _r: True)

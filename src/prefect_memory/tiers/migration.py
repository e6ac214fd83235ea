"""Migration between tiers: rules, tier TTLs and size budgets, in bounded batches.

Order of work: rules and tier TTLs are applied to the sources coldest first, so an entry
moves at most one step per run and a run never chases its own moves; then size budgets
are enforced hottest first, so an overflow demoted into a tier counts against its budget.
For each source tier the entries are read in batches of ``batch_size`` as columns
(:meth:`~prefect_memory.plugins.base.Backend.scan_columns`: one query per batch on
stores that declare ``capabilities.column_scans``: SQLite, Redis), the next batch
read in a thread while the current one moves (from stores that fetch from a server: not
``capabilities.local``); the rules are evaluated a column at a
time (:meth:`~prefect_memory.tiers.rules.Rule.select`) and records are made only for
the copies of the entries that move (:func:`.moves.move_columns`); then per target tier
one conditional copy and one conditional delete (see :meth:`TieredBackend.move`). A run
that is killed anywhere leaves every entry readable, and running it again finishes the
job.

Deciding reads metadata only. Rule fields, tier TTLs and budgets are all metadata. A
batch carries the values of at most ``batch_bytes // batch_size`` bytes (those move as
read: decision and value come from one read); larger values, and every value on stores
that read metadata apart (``capabilities.metadata_reads`` without ``column_scans``:
:meth:`~prefect_memory.plugins.base.Backend.meta_many`, no value travels), are loaded
with ``get_many`` in loads of at most ``batch_size`` entries and ``batch_bytes`` bytes
(by their stored sizes; one entry larger than that is loaded alone), each entry checked
again on the loaded record (it may have changed since the decision) and moved. A dry
run loads no value at all.

Memory: a run holds at most two batches (the one moving, the one read ahead), each
with at most ``batch_bytes`` of values, plus one load of at most ``batch_bytes``, plus
what the target's write of one batch needs (an archive builds one file of it), plus
about 1 KB of metadata per entry of a batch.

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

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .._gc import gc_paused
from ..plugins.base import EntryColumns, Record
from .moves import MoveOutcome
from .pushdown import candidates_query
from .rules import FIELDS
from .tiered import TieredBackend

#: Most bytes of values one load of a migration holds (by the stored sizes read).
BATCH_BYTES = 64 << 20
#: Rule fields answered by metadata alone (today every field: none reads the value).
METADATA_FIELDS = frozenset(FIELDS)
#: Read the next batch of a source in a thread while the current one moves: ``None``, from
#: stores that fetch from a server (not ``capabilities.local``); ``True``/``False``: always/never.
READ_AHEAD: bool | None = None
#: Seconds between the young-generation collections of a migration (its batches run with
#: the cyclic collector paused: see prefect_memory._gc).
_GC_BREATH = 1.0
#: Entries per batch by default (every migration entry point and flow): at 500, a
#: migration of 100k small entries SQLite -> Parquet took twice the CPU of 5,000 (per-batch
#: costs: one query, one archive file, one commit); memory stays bounded by
#: ``batch_bytes`` whatever the size (docs/scaling.md gives the RSS per batch size).
BATCH_SIZE = 5_000


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


def _read_ahead(batches: Iterator[EntryColumns], ahead: bool) -> Iterator[EntryColumns]:
    """Yield ``batches``, reading the next one in a thread of this run meanwhile if ``ahead``.

    The read of batch k+1 (a query, a pipeline: mostly waiting on the store) overlaps the
    move of batch k. At most two batches are held at once: the one moving, the one read.
    """
    batches = iter(batches)
    if not ahead:
        while (batch := _read(batches)) is not None:
            yield batch
            del batch
        return
    with ThreadPoolExecutor(1, thread_name_prefix="prefect-memory-migrate") as reader:
        pending = reader.submit(_read, batches)
        try:
            while (batch := pending.result()) is not None:
                pending = reader.submit(_read, batches)
                yield batch
                del batch
        finally:
            with contextlib.suppress(BaseException):
                pending.result()  # a generator cannot be closed while it runs
            close = getattr(batches, "close", None)
            if close is not None:
                close()


def _read(batches: Iterator[EntryColumns]) -> EntryColumns | None:
    return next(batches, None)


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


def _choose_rows(
    backend: TieredBackend, index: int, columns: EntryColumns, now: float
) -> dict[tuple[int, str], list[int]]:
    """:func:`_choose` for every row of ``columns`` at once, a column at a time.

    Returns the rows that move, grouped by target tier and reason (rows that stay are
    left out): row ``i`` lands where ``_choose(columns.record(i))`` sends it.
    """
    tier = backend.tiers[index]
    groups: dict[tuple[int, str], list[int]] = {}
    left = list(range(len(columns)))
    for rule in backend.rules:
        if rule.source != tier.name or not left:
            continue
        hits = rule.condition.select(columns, now)
        moving = [i for i in left if hits[i]]
        if moving:
            label = f"{rule.source} -> {rule.target}: {rule.condition.text}"
            groups.setdefault((backend.tier_index(rule.target), label), []).extend(moving)
            left = [i for i in left if not hits[i]]
    if tier.ttl is not None and index + 1 < len(backend.tiers) and left:
        updated, ttl = columns.updated_at, tier.ttl
        moving = [i for i in left if now - updated[i] > ttl]
        if moving:
            nxt = backend.tiers[index + 1].name
            groups[(index + 1, f"{tier.name} -> {nxt}: tier ttl {tier.ttl:g}s")] = moving
    return groups


def _live(columns: EntryColumns, now: float, only: Callable[[str], bool] | None) -> EntryColumns:
    """The rows of ``columns`` live at ``now`` (a batch read a while ago) and kept by ``only``."""
    expires = columns.expires_at
    rows = [i for i, x in enumerate(expires) if x is None or x > now]
    if only is not None:
        keys = columns.keys
        rows = [i for i in rows if only(keys[i])]
    return columns if len(rows) == len(columns) else columns.take(rows)


def _move_rows(
    backend: TieredBackend,
    ns: str,
    report: MigrationReport,
    chosen: tuple[int, str],
    columns: EntryColumns,
    rows: list[int],
    index: int,
    at: float,
    limits: tuple[int, int],
) -> None:
    """Move the ``rows`` of a batch that go to ``chosen``.

    Rows read with their value move as read (the decision and the value come from one
    read); the others are loaded in bounded loads and checked again (:func:`_move_loaded`).
    """
    target, label = chosen
    values = columns.values
    whole = [i for i in rows if values[i] is not None]
    if whole:  # moved from the columns: no record is made of the source entries
        outcome = backend.move_columns(ns, columns, whole, index, target, now=at)
        keys, sizes = columns.keys, columns.sizes
        moved = outcome.moved
        if len(moved) == len(whole):  # every row (the usual case)
            size = sum(sizes) if len(whole) == len(sizes) else sum(sizes[i] for i in whole)
        else:
            size = sum(sizes[i] for i in whole if keys[i] in moved)
        report.add(label, len(moved), size)
        report.skipped += len(outcome.skipped)
        report.written += len(outcome.written)
        del outcome
    rest = columns.records([i for i in rows if values[i] is None])
    if rest:
        same = _same_choice(backend, index, at, chosen)
        _move_loaded(backend, ns, report, chosen, rest, index, at, limits, same)


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
    batch_size: int = BATCH_SIZE,
    clock: Any = time.time,
    progress: Callable[[MigrationReport], None] | None = None,
    batch_bytes: int = BATCH_BYTES,
    only: Callable[[str], bool] | None = None,
    budgets: bool = True,
) -> MigrationReport:
    """Apply the rules, tier TTLs and size budgets of ``backend`` to namespace ``ns``.

    ``progress`` is called with the running report after every batch (progress bars,
    Prefect logs). ``batch_bytes`` bounds the values one batch or load holds (see the
    module docstring). ``only`` keeps the keys of one partition (a key filter, see
    :mod:`.partitions`); ``budgets=False`` leaves the size budgets to
    :func:`enforce_budgets` (an LRU order spans every partition).
    """
    started = time.perf_counter()
    report = MigrationReport(dry_run=dry_run)
    limits = (max(1, int(batch_size)), max(1, int(batch_bytes)))
    inline = 0 if dry_run else limits[1] // limits[0]  # values read with their batch
    for index in reversed(range(len(backend.tiers))):
        tier = backend.tiers[index]
        last = index + 1 >= len(backend.tiers)
        if not any(r.source == tier.name for r in backend.rules) and (tier.ttl is None or last):
            continue  # nothing can move out of this tier: do not read it
        at = clock() if now is None else now
        pushed = candidates_query(backend, index, at)  # None unless capabilities.pushdown
        report.pushed_down += pushed is not None
        batches = tier.backend.scan_columns(
            ns, now=at, batch_size=limits[0], value_bytes=inline, query=pushed
        )
        ahead = not tier.backend.capabilities.local if READ_AHEAD is None else READ_AHEAD
        with gc_paused():  # batches hold no cycle: see prefect_memory._gc
            breathe = time.monotonic() + _GC_BREATH
            for batch in _read_ahead(batches, ahead):
                at = clock() if now is None else now
                columns = _live(batch, at, only)
                del batch
                report.scanned += len(columns)
                for chosen, rows in _choose_rows(backend, index, columns, at).items():
                    target, label = chosen
                    if dry_run:
                        keys, sizes = columns.keys, columns.sizes
                        report.planned.extend((keys[i], tier.name, backend.tiers[target].name)
                                              for i in rows)  # fmt: skip
                        report.add(label, len(rows), sum(sizes[i] for i in rows))
                    else:
                        _move_rows(backend, ns, report, chosen, columns, rows, index, at, limits)
                del columns
                if progress is not None:
                    progress(report)
                if time.monotonic() > breathe:  # young cycles of other threads
                    gc.collect(0)
                    breathe = time.monotonic() + _GC_BREATH
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
    batch_size: int = BATCH_SIZE,
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
    usage: list[tuple[float, str, int]] = []
    for columns in tier.backend.scan_columns(ns, now=at, batch_size=limits[0]):
        usage.extend(zip(columns.last_access, columns.keys, columns.sizes, strict=True))
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

"""Partitions of a namespace: maintenance split into pieces that run anywhere, at once.

A migration, an archive run or a cleanup of a big namespace is one job in one process
today. :func:`partitions` cuts it into ``n`` pieces that Prefect maps as tasks on any task
runner (a thread pool, Dask worker processes, several workers of a process pool); each
piece is run by :func:`migrate`, :func:`archive` or :func:`cleanup` and returns a
:class:`PartitionReport` (entries, bytes, seconds); the reports of all pieces add up
(:func:`total`).

- **By key** (migrations and archiving): a stable 64-bit hash of the key (BLAKE2b, the
  same in every process and release) cut into ``n`` equal ranges; partition ``i`` holds the
  keys whose hash falls in its range. Stores cannot filter by such a hash, so each
  partition lists its tiers' keys (keys only) and keeps its own: the reads of metadata and
  values and the moves, the costly part, are split ``n`` ways.
- **By store** (cleanup): ``purge_expired`` is one query inside a store, so a partition is
  a set of the memory's stores (the tiers of a tiered memory); there are at most as many
  partitions as stores.

Exactly once needs no lease: a move is a conditional copy and a conditional delete
(:mod:`.moves`), so two runs of the same partition at once, or a partition retried while
(or after) its first attempt was killed, never move an entry twice or lose one: exactly
one actor commits each move and only that actor counts it. Size budgets are enforced once
after the partitions (:func:`enforce_budgets`): a tier's least recently used order spans
every partition.

Example:
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.tiers import Tier, TieredMemory
    >>> mem = TieredMemory([Tier("hot", InProcessBackend()), Tier("warm", InProcessBackend())],
    ...                    rules=[{"from": "hot", "to": "warm", "condition": "accessCount < 1"}])
    >>> mem.set_many({f"k{i}": i for i in range(100)})
    >>> parts = partitions(mem, 4)
    >>> [str(p) for p in parts]
    ['1/4', '2/4', '3/4', '4/4']
    >>> reports = [migrate(mem, p) for p in parts]
    >>> total(reports).entries, sum(r.entries > 0 for r in reports)
    (100, 4)
    >>> {mem.info(f"k{i}").tier for i in range(100)}
    {'warm'}
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from .migration import BATCH_SIZE, MigrationReport
from .migration import enforce_budgets as _enforce_budgets
from .migration import migrate as _migrate

_SPAN = 1 << 64  # the hash space: 64-bit hashes
MAX_PARTITIONS = 4096


def key_hash(key: str) -> int:
    """The stable 64-bit hash of ``key`` that places it in a partition.

    Example:
        >>> key_hash("user:1") == key_hash("user:1"), 0 <= key_hash("a") < 2**64
        (True, True)
    """
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class Partition:
    """One of ``count`` pieces of a namespace (plain data: pickles and crosses processes).

    Attributes:
        index: 0-based position among the partitions.
        count: How many partitions the namespace was cut into.
        by: ``"key"`` (a key-hash range) or ``"store"`` (stores ``index``, ``index +
            count``, ... of the memory).

    Example:
        >>> p = Partition(1, 4)
        >>> str(p), p.low, p.high == 2**63
        ('2/4', 4611686018427387904, True)
        >>> sum(Partition(i, 4).holds("user:7") for i in range(4))
        1
    """

    index: int
    count: int
    by: Literal["key", "store"] = "key"

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or not 1 <= self.count <= MAX_PARTITIONS:
            raise ConfigError(f"partitions: must be 1..{MAX_PARTITIONS}, got {self.count!r}")
        if not isinstance(self.index, int) or not 0 <= self.index < self.count:
            raise ConfigError(f"partition index must be 0..{self.count - 1}, got {self.index!r}")
        if self.by not in ("key", "store"):
            raise ConfigError(f"partition by must be 'key' or 'store', got {self.by!r}")

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"

    @property
    def low(self) -> int:
        """First hash of the range (inclusive)."""
        return self.index * _SPAN // self.count

    @property
    def high(self) -> int:
        """End of the range (exclusive)."""
        return (self.index + 1) * _SPAN // self.count

    def holds(self, key: str) -> bool:
        """Tell whether ``key`` belongs to this partition (always, for one partition)."""
        if self.count == 1:
            return True
        return self.low <= key_hash(key) < self.high

    def stores(self, total: int) -> list[int]:
        """Indexes of the stores (of ``total``) a store partition works on."""
        return list(range(self.index, total, self.count))


@dataclass
class PartitionReport:
    """What one partition did; reports of several partitions add up with :func:`total`.

    Attributes:
        partition: ``"2/4"``, or ``"total"``.
        entries: Entries moved (migrate, archive) or removed (cleanup) by this run.
        bytes: Bytes of the entries moved (0 for a cleanup: stores do not say).
        seconds: Time the partition took.
        skipped: Entries another actor moved, changed or deleted first.
        written: Copies this run wrote into target tiers.
        scanned: Entries of the partition read to decide.
        moved: Entries moved by rule (label -> count).
        migration: The migration report (migrate and archive).
    """

    partition: str
    entries: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: int = 0
    written: int = 0
    scanned: int = 0
    moved: dict[str, int] = field(default_factory=dict)
    migration: MigrationReport | None = None

    @classmethod
    def of_migration(cls, partition: str, report: MigrationReport) -> PartitionReport:
        """The partition row of a migration report."""
        return cls(
            partition,
            entries=report.total_moved,
            bytes=report.bytes_moved,
            seconds=report.seconds,
            skipped=report.skipped,
            written=report.written,
            scanned=report.scanned,
            moved=dict(report.moved),
            migration=report,
        )

    def row(self) -> dict[str, Any]:
        """A table row: partition, entries, bytes, seconds, skipped, written.

        ``written`` lets a reader reconcile runs that overlapped: a run may commit a move
        whose copy another run wrote (and skip one whose copy it wrote), so per run the
        entries and the copies written may differ, while over all runs they are equal.

        Example:
            >>> row = PartitionReport("1/2", entries=3, bytes=30, written=2, skipped=1).row()
            >>> list(row), (row["entries"], row["written"])
            (['partition', 'entries', 'bytes', 'seconds', 'skipped', 'written'], (3, 2))
        """
        return {
            "partition": self.partition,
            "entries": self.entries,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
            "written": self.written,
        }


def _tiered(memory: Any, what: str) -> Any:
    backend = getattr(memory, "backend", None)
    if not hasattr(backend, "tiers") or not hasattr(backend, "rules"):
        raise TypeError(f"{what} needs a tiered memory, got {type(memory).__name__}")
    return backend


def _stores(memory: Any) -> list[Any]:
    tiers = getattr(memory.backend, "tiers", None)
    return [t.backend for t in tiers] if tiers else [memory.backend]


def partitions_count(n: Any) -> int:
    """``n`` checked as a number of partitions (an integer 1..4096).

    Raises:
        ConfigError: Anything else.

    Example:
        >>> partitions_count(4)
        4
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PARTITIONS:
        raise ConfigError(f"partitions: must be an integer 1..{MAX_PARTITIONS}, got {n!r}")
    return n


def partitions(memory: Any, n: int, *, by: Literal["key", "store"] = "key") -> list[Partition]:
    """Cut ``memory``'s namespace into ``n`` partitions (fewer by store: one per store).

    Args:
        memory: Any memory; key partitions are for tiered memories (migrations), store
            partitions for any memory (cleanup).
        n: How many partitions (1 keeps the whole namespace in one).
        by: ``"key"`` (key-hash ranges) or ``"store"``.

    Raises:
        ConfigError: ``n`` is not 1..4096.

    Example:
        >>> from prefect_memory.plugins.inprocess import InProcessBackend
        >>> import prefect_memory as pm
        >>> [str(p) for p in partitions(pm.Memory(InProcessBackend()), 3, by="store")]
        ['1/1']
    """
    n = partitions_count(n)
    if by == "store":
        n = min(n, len(_stores(memory)))
    return [Partition(i, n, by) for i in range(n)]


def migrate(
    memory: Any,
    partition: Partition | None = None,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    budgets: bool | None = None,
    progress: Any = None,
) -> PartitionReport:
    """Apply a tiered memory's rules and tier TTLs to the keys of one partition.

    Args:
        memory: A :class:`~prefect_memory.tiers.TieredMemory`.
        partition: The keys to work on (``None``: all of them).
        dry_run: List the moves only (in ``report.migration.planned``).
        batch_size: Keys per read and move.
        budgets: Enforce size budgets too; by default only when the partition is the whole
            namespace (else run :func:`enforce_budgets` once after the partitions).
        progress: Called with the running migration report after every batch.
    """
    backend = _tiered(memory, "a partitioned migration")
    part = partition or Partition(0, 1)
    report = _migrate(
        backend,
        memory.namespace,
        dry_run=dry_run,
        batch_size=batch_size,
        clock=memory.clock,
        progress=progress,
        only=None if part.count == 1 else part.holds,
        budgets=part.count == 1 if budgets is None else budgets,
    )
    return PartitionReport.of_migration(str(part), report)


def archive(
    memory: Any, partition: Partition | None = None, *, batch_size: int = BATCH_SIZE
) -> PartitionReport:
    """Move the due entries of one partition, into the archive tier among others.

    Archiving is the migration of a tiered memory whose coldest tier is a Parquet archive
    (as ``archive_to_parquet`` runs it); compact the archive once after every partition
    with :func:`compact`.
    """
    return migrate(memory, partition, batch_size=batch_size)


def compact(memory: Any) -> dict[str, Any]:
    """Compact the small files of every tier that can (the Parquet archive); per tier."""
    import dataclasses

    done: dict[str, Any] = {}
    for tier in getattr(memory, "tiers", None) or []:
        compact_fn = getattr(tier.backend, "compact", None)
        if compact_fn is not None:
            result = compact_fn(memory.namespace)
            done[tier.name] = (
                dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
            )
    return done


def enforce_budgets(
    memory: Any, *, dry_run: bool = False, batch_size: int = BATCH_SIZE
) -> PartitionReport:
    """Demote the least recently used entries of tiers over their size budgets, once."""
    backend = _tiered(memory, "enforce_budgets")
    report = _enforce_budgets(
        backend, memory.namespace, dry_run=dry_run, batch_size=batch_size, clock=memory.clock
    )
    return PartitionReport.of_migration("budgets", report)


def has_budgets(memory: Any) -> bool:
    """Tell whether any tier of ``memory`` has a size or entry budget."""
    tiers = getattr(memory, "tiers", None) or []
    return any(t.max_bytes is not None or t.max_entries is not None for t in tiers)


def cleanup(memory: Any, partition: Partition | None = None) -> PartitionReport:
    """Remove the expired entries of the stores of one store partition.

    The first partition also purges a tiered memory's expired tombstones.
    """
    part = partition or Partition(0, 1, "store")
    started = time.perf_counter()
    now = memory.clock()
    ns = memory.namespace
    stores = _stores(memory)
    removed = sum(stores[i].purge_expired(ns, now=now) for i in part.stores(len(stores)))
    tombstones = getattr(memory.backend, "tombstones", None)
    if tombstones is not None and part.index == 0:
        tombstones.purge_expired(ns, now=now)  # not entries: not counted
    return PartitionReport(str(part), entries=removed, seconds=time.perf_counter() - started)


def total(reports: Iterable[PartitionReport]) -> PartitionReport:
    """The sum of partition reports (row ``"total"``; seconds add up, as work done)."""
    out = PartitionReport("total")
    for r in reports:
        out.entries += r.entries
        out.bytes += r.bytes
        out.seconds += r.seconds
        out.skipped += r.skipped
        out.written += r.written
        out.scanned += r.scanned
        for label, count in r.moved.items():
            out.moved[label] = out.moved.get(label, 0) + count
    return out


def merged_migration(reports: Sequence[PartitionReport], *, dry_run: bool) -> MigrationReport:
    """One :class:`MigrationReport` of the migrations of several partitions."""
    out = MigrationReport(dry_run=dry_run)
    for r in reports:
        m = r.migration
        if m is None:
            continue
        for label, count in m.moved.items():
            out.moved[label] = out.moved.get(label, 0) + count
        out.bytes_moved += m.bytes_moved
        out.skipped += m.skipped
        out.written += m.written
        for name, count in m.over_budget.items():
            out.over_budget[name] = out.over_budget.get(name, 0) + count
        out.planned.extend(m.planned)
        out.scanned += m.scanned
        out.pushed_down += m.pushed_down
        out.seconds += m.seconds
    return out

"""Tiered memory: hot/warm/cold tiers with key patterns, budgets, promotion and migration.

Example:
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.tiers import Tier, TieredMemory
    >>> mem = TieredMemory(
    ...     [Tier("hot", InProcessBackend(), patterns=("session:*",)),
    ...      Tier("cold", InProcessBackend(), patterns=("archive:*",))],
    ...     namespace="docs")
    >>> mem.set("archive:2024", [1, 2]); mem.set("session:1", {"u": 1})
    >>> mem.info("archive:2024").tier, mem.info("session:1").tier
    ('cold', 'hot')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..codecs import Codec
from ..errors import ConfigError
from ..memory import TTL, Memory
from .migration import BATCH_SIZE, MigrationReport, migrate
from .moves import TOMBSTONE_TTL
from .rules import Rule, RuleSyntaxError, parse_rule
from .tiered import MigrationRule, Promote, Tier, TieredBackend

if TYPE_CHECKING:
    from .partitions import Partition


def _rule(i: int, spec: MigrationRule | Mapping[str, Any]) -> MigrationRule:
    if isinstance(spec, MigrationRule):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"migration.rules[{i}]: expected an object, got {type(spec).__name__}")
    unknown = set(spec) - {"from", "to", "condition"}
    missing = {"from", "to", "condition"} - set(spec)
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(sorted(missing))}")
        if unknown:
            parts.append(f"unknown {', '.join(sorted(unknown))}")
        raise ConfigError(f"migration.rules[{i}]: {'; '.join(parts)}")
    try:
        return MigrationRule.parse(spec["from"], spec["to"], spec["condition"])
    except RuleSyntaxError as err:
        raise ConfigError(f"migration.rules[{i}].condition: {err}") from err


class TieredMemory(Memory):
    """A :class:`~prefect_memory.Memory` over tiers, with ``migrate()``.

    Args:
        tiers: Hottest first.
        rules: :class:`MigrationRule` objects or the tutorial's ``{"from", "to", "condition"}``.
        promote: Where a read moves an entry found colder than its home tier.
        tombstone_ttl: Seconds a deleted or overwritten write is remembered so that a
            concurrent move cannot bring it back (docs/guarantees.md, "Tiers and migration").
        namespace: As for :class:`~prefect_memory.Memory`.
        ttl: As for :class:`~prefect_memory.Memory`.
        refresh: As for :class:`~prefect_memory.Memory`.
        codec: As for :class:`~prefect_memory.Memory`.
        batch_size: As for :class:`~prefect_memory.Memory`.
        clock: As for :class:`~prefect_memory.Memory`.
    """

    backend: TieredBackend

    def __init__(
        self,
        tiers: Sequence[Tier],
        rules: Sequence[MigrationRule | Mapping[str, Any]] = (),
        *,
        promote: Promote = "home",
        tombstone_ttl: float = TOMBSTONE_TTL,
        namespace: str = "default",
        ttl: TTL = None,
        refresh: bool = False,
        codec: Codec | None = None,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parsed = [_rule(i, r) for i, r in enumerate(rules)]
        backend = TieredBackend(tiers, parsed, promote=promote, tombstone_ttl=tombstone_ttl)
        super().__init__(
            backend,
            namespace,
            ttl=ttl,
            refresh=refresh,
            codec=codec,
            batch_size=batch_size,
            clock=clock,
        )

    @property
    def tiers(self) -> list[Tier]:
        """The tiers, hottest first."""
        return self.backend.tiers

    def migrate(
        self,
        *,
        dry_run: bool = False,
        batch_size: int = BATCH_SIZE,
        progress: Callable[[MigrationReport], None] | None = None,
        partition: Partition | None = None,
    ) -> MigrationReport:
        """Move entries by rules, tier TTLs and budgets; a dry run only lists the moves.

        ``progress`` is called with the running report after every batch. ``partition``
        (from :func:`~prefect_memory.tiers.partitions.partitions`) limits the run to the
        keys of one partition; size budgets are then left to ``enforce_budgets`` (see
        :mod:`prefect_memory.tiers.partitions`).
        """
        if partition is not None:
            from .partitions import migrate as migrate_partition

            done = migrate_partition(
                self, partition, dry_run=dry_run, batch_size=batch_size, progress=progress
            )
            assert done.migration is not None
            return done.migration
        return migrate(
            self.backend,
            self.namespace,
            dry_run=dry_run,
            batch_size=batch_size,
            clock=self.clock,
            progress=progress,
        )


__all__ = [
    "MigrationReport",
    "MigrationRule",
    "Rule",
    "RuleSyntaxError",
    "Tier",
    "TieredBackend",
    "TieredMemory",
    "migrate",
    "parse_rule",
]

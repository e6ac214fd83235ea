"""Tiered storage: hot/warm/cold tiers behind one backend, each entry in exactly one tier.

- A write goes to the key's *home* tier (the first whose ``patterns`` match, else the
  first tier) and removes the key from every other tier.
- A read searches the tiers in order (hot -> warm -> cold). With ``promote="home"`` (the
  default) an entry found colder than its home tier moves there; ``"first"`` moves it to
  the first tier; ``"never"`` leaves it where it is.
- Moves copy first with :meth:`Backend.put_absent_many` (never overwriting a newer write)
  and delete the source with :meth:`Backend.delete_if_unchanged` (never deleting a value
  rewritten meanwhile), so a move interrupted anywhere leaves every entry readable.

Example:
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> hot = Tier("hot", InProcessBackend(), patterns=("session:*",))
    >>> cold = Tier("cold", InProcessBackend(), patterns=("archive:*",))
    >>> backend = TieredBackend([hot, cold])
    >>> backend.home("archive:2024"), backend.home("other")
    (1, 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from ..keys import glob_match
from ..plugins.base import Backend, Capabilities, Record
from .rules import Rule, parse_rule

Promote = Literal["home", "first", "never"]


@dataclass
class Tier:
    """One tier: a name, a backend and its limits.

    Attributes:
        name: Name used in rules and reported by ``info(key).tier``.
        backend: Where the tier's entries live.
        ttl: Most seconds an entry stays in this tier; ``migrate()`` then moves it to the
            next tier (it is not deleted: the entry's own ``ttl`` decides expiry).
        max_bytes: Size budget; ``migrate()`` demotes least recently used entries past it.
        max_entries: Entry budget, enforced the same way.
        patterns: Key globs whose writes land in this tier.
    """

    name: str
    backend: Backend
    ttl: float | None = None
    max_bytes: int | None = None
    max_entries: int | None = None
    patterns: tuple[str, ...] = field(default_factory=tuple)

    def routes(self, key: str) -> bool:
        """Tell whether ``key`` belongs in this tier by its patterns."""
        return any(glob_match(key, pattern) for pattern in self.patterns)


@dataclass(frozen=True)
class MigrationRule:
    """Move entries from tier ``source`` to tier ``target`` when ``condition`` holds."""

    source: str
    target: str
    condition: Rule

    @classmethod
    def parse(cls, source: str, target: str, condition: str) -> MigrationRule:
        """Build a rule from the tutorial's ``{"from", "to", "condition"}`` strings."""
        return cls(source, target, parse_rule(condition))


class TieredBackend(Backend):
    """Several backends as tiers of one store (see the module docstring).

    Args:
        tiers: Hottest first.
        rules: Migration rules between tiers (used by ``migrate``).
        promote: Where a read moves an entry found in a colder tier.
    """

    scheme: ClassVar[str] = "tiered"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(
        self,
        tiers: Sequence[Tier],
        rules: Sequence[MigrationRule] = (),
        *,
        promote: Promote = "home",
    ) -> None:
        super().__init__()
        problems: list[str] = []
        if not tiers:
            problems.append("tiers: at least one tier is needed")
        names = [t.name for t in tiers]
        for i, name in enumerate(names):
            if not name:
                problems.append(f"tiers[{i}].name: must be a non-empty string")
            elif names.index(name) != i:
                problems.append(f"tiers[{i}].name: duplicate tier name {name!r}")
        for i, rule in enumerate(rules):
            for attr, label in (("source", "from"), ("target", "to")):
                if getattr(rule, attr) not in names:
                    problems.append(
                        f"migration.rules[{i}].{label}: unknown tier {getattr(rule, attr)!r} "
                        f"(tiers: {', '.join(names)})"
                    )
            if rule.source == rule.target:
                problems.append(f"migration.rules[{i}]: from and to are the same tier")
        if promote not in ("home", "first", "never"):
            problems.append(f"promote: must be 'home', 'first' or 'never', got {promote!r}")
        if problems:
            raise ConfigError("invalid tiered memory:\n  " + "\n  ".join(problems))
        self.tiers = list(tiers)
        self.rules = list(rules)
        self.promote = promote
        self.url = "tiered://" + "+".join(names)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> TieredBackend:
        """Tiered memories are built from tiers (``TieredMemory`` or ``from_config``)."""
        raise ConfigError("a tiered memory is built from its tiers, not from a URL")

    def tier_index(self, name: str) -> int:
        """Position of the tier called ``name``."""
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        raise ConfigError(f"unknown tier {name!r} (tiers: {', '.join(t.name for t in self.tiers)})")

    def home(self, key: str) -> int:
        """Index of the tier a write of ``key`` lands in."""
        for i, tier in enumerate(self.tiers):
            if tier.routes(key):
                return i
        return 0

    # -- moves --------------------------------------------------------------------------------
    def move(
        self, ns: str, records: Mapping[str, Record], source: int, target: int, *, now: float
    ) -> set[str]:
        """Move records read from tier ``source`` to tier ``target``; return the keys moved.

        A key rewritten in the source meanwhile stays there (its copy in the target is
        removed again); a key that already has a live entry in the target keeps that entry.
        """
        if not records:
            return set()
        src, dst = self.tiers[source].backend, self.tiers[target].backend
        clean = {k: r if r.tier is None else replace(r, tier=None) for k, r in records.items()}
        written = dst.put_absent_many(ns, clean, now=now)
        deleted = src.delete_if_unchanged(ns, {k: r.token for k, r in clean.items()}, now=now)
        stale = {k: clean[k].token for k in written - deleted}
        if stale:  # rewritten in the source during the move: drop our copy
            dst.delete_if_unchanged(ns, stale, now=now)
        # Deleted keys now live in the target: our copy, or a newer write that was there.
        return deleted

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        out: dict[str, Record] = {}
        remaining = list(keys)
        moves: dict[tuple[int, int], dict[str, Record]] = {}
        for i, tier in enumerate(self.tiers):
            if not remaining:
                break
            found = tier.backend.get_many(ns, remaining, now=now, touch=touch)
            for key, record in found.items():
                record.tier = tier.name
                out[key] = record
                if touch and self.promote != "never" and i > 0:
                    target = 0 if self.promote == "first" else self.home(key)
                    if target < i:
                        moves.setdefault((i, target), {})[key] = record
            if found:
                remaining = [k for k in remaining if k not in found]
        for (source, target), records in moves.items():
            moved = self.move(ns, records, source, target, now=now)
            for key in moved:
                out[key].tier = self.tiers[target].name
        return out

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        groups: dict[int, dict[str, Record]] = {}
        for key, record in records.items():
            groups.setdefault(self.home(key), {})[key] = record
        for index, group in groups.items():
            keys = list(group)
            # keep created_at/access history of an entry living in another tier
            for j, tier in enumerate(self.tiers):
                if j == index:
                    continue
                old = tier.backend.get_many(ns, keys, now=now, touch=False)
                if old:
                    group.update({k: group[k].merged_over(o, now) for k, o in old.items()})
            self.tiers[index].backend.put_many(ns, group, now=now)
            for j, tier in enumerate(self.tiers):
                if j != index:
                    tier.backend.delete_many(ns, keys, now=now)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        live = set()
        for tier in self.tiers:
            present = tier.backend.exists_many(ns, keys, now=now)
            live |= present
            tier.backend.delete_many(ns, keys, now=now)
        return len(live)

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        found: set[str] = set()
        remaining = list(keys)
        for tier in self.tiers:
            if not remaining:
                break
            present = tier.backend.exists_many(ns, remaining, now=now)
            found |= present
            remaining = [k for k in remaining if k not in present]
        return found

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        seen: set[str] = set()
        for tier in self.tiers:
            for key in tier.backend.scan(ns, pattern, now=now):
                if key not in seen:
                    seen.add(key)
                    yield key

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        tags = list(tags)
        found: set[str] = set()
        for tier in self.tiers:
            found |= tier.backend.tagged(ns, tags, now=now)
        return found

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        present = self.exists_many(ns, list(records), now=now)
        absent = {k: r for k, r in records.items() if k not in present}
        written: set[str] = set()
        groups: dict[int, dict[str, Record]] = {}
        for key, record in absent.items():
            groups.setdefault(self.home(key), {})[key] = record
        for index, group in groups.items():
            written |= self.tiers[index].backend.put_absent_many(ns, group, now=now)
        return written

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        deleted: set[str] = set()
        for tier in self.tiers:
            left = {k: t for k, t in expected.items() if k not in deleted}
            if not left:
                break
            deleted |= tier.backend.delete_if_unchanged(ns, left, now=now)
        return deleted

    def purge_expired(self, ns: str, *, now: float) -> int:
        return sum(tier.backend.purge_expired(ns, now=now) for tier in self.tiers)

    def ping(self) -> None:
        for tier in self.tiers:
            tier.backend.ping()

    def close(self) -> None:
        for tier in self.tiers:
            tier.backend.close()

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

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from ..keys import glob_match
from ..plugins.base import Backend, Capabilities, Record
from .moves import TOMBSTONE_TTL, MoveOutcome, Token, Tombstones, copy_of, move, token_of
from .rules import Rule, parse_rule

Promote = Literal["home", "first", "never"]
_RETIRE_READS = 4  # reads of the tiers at most while a write or delete retires old writes


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


@dataclass
class Retired:
    """The writes of some keys found in some tiers (by a user write or delete)."""

    records: dict[int, dict[str, Record]] = field(default_factory=dict)
    tokens: dict[str, set[Token]] = field(default_factory=dict)

    def add(self, tier: int, key: str, record: Record) -> bool:
        """Note ``record`` found in ``tier``; tell whether its token is new for ``key``."""
        self.records.setdefault(tier, {}).setdefault(key, record)
        token, known = token_of(record), self.tokens.setdefault(key, set())
        if token in known:
            return False
        known.add(token)
        return True

    def keys(self) -> set[str]:
        """The keys with at least one write found."""
        return {k for k, ts in self.tokens.items() if ts}

    def delete_in(self, backend: Backend, tier: int, ns: str, now: float) -> None:
        """Delete from ``backend`` every write found (wherever it was), if unchanged."""
        pending = {k: sorted(ts) for k, ts in self.tokens.items() if ts}
        while pending:
            backend.delete_if_unchanged(ns, {k: ts.pop() for k, ts in pending.items()}, now=now)
            pending = {k: ts for k, ts in pending.items() if ts}


class TieredBackend(Backend):
    """Several backends as tiers of one store (see the module docstring).

    Args:
        tiers: Hottest first.
        rules: Migration rules between tiers (used by ``migrate``).
        promote: Where a read moves an entry found in a colder tier.
        tombstone_ttl: Seconds the tokens of deleted and overwritten writes are remembered
            (in the first shared tier) so that a concurrent move cannot bring them back.
    """

    scheme: ClassVar[str] = "tiered"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(
        self,
        tiers: Sequence[Tier],
        rules: Sequence[MigrationRule] = (),
        *,
        promote: Promote = "home",
        tombstone_ttl: float = TOMBSTONE_TTL,
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
        if not isinstance(tombstone_ttl, (int, float)) or not 0 < tombstone_ttl < 10**9:
            problems.append(f"tombstone_ttl: must be seconds > 0, got {tombstone_ttl!r}")
        if promote not in ("home", "first", "never"):
            problems.append(f"promote: must be 'home', 'first' or 'never', got {promote!r}")
        if problems:
            raise ConfigError("invalid tiered memory:\n  " + "\n  ".join(problems))
        self.tiers = list(tiers)
        self.rules = list(rules)
        self.promote = promote
        self.url = "tiered://" + "+".join(names)
        shared = [t.backend for t in self.tiers if t.backend.capabilities.shared]
        self.tombstones = Tombstones((shared or [self.tiers[0].backend])[0], tombstone_ttl)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> TieredBackend:
        """Tiered memories are built from tiers (``TieredMemory`` or ``from_config``)."""
        raise ConfigError("a tiered memory is built from its tiers, not from a URL")

    def children(self) -> tuple[tuple[str, Backend], ...]:
        """The store of each tier, hottest first, as ``tier:<name>``."""
        return tuple((f"tier:{tier.name}", tier.backend) for tier in self.tiers)

    def child_facts(self, role: str, above: Mapping[str, Any]) -> dict[str, Any]:
        """The budget of the tier at ``role`` (``tier:<name>``), for its store's health."""
        tier = self.tiers[self.tier_index(role.removeprefix("tier:"))]
        return {**above, "max_bytes": tier.max_bytes, "max_entries": tier.max_entries,
                "tier": True}  # fmt: skip

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

        See :mod:`.moves`: safe against any number of concurrent moves, promotions and user
        writes and deletes of the same keys; :meth:`move_outcome` says what else happened.
        """
        return self.move_outcome(ns, records, source, target, now=now).moved

    def move_outcome(
        self, ns: str, records: Mapping[str, Record], source: int, target: int, *, now: float
    ) -> MoveOutcome:
        """Like :meth:`move`, with the whole :class:`~.moves.MoveOutcome`."""
        return move(
            self.tiers[source].backend,
            self.tiers[target].backend,
            ns,
            records,
            now=now,
            tombstones=self.tombstones,
        )

    # -- protocol -----------------------------------------------------------------------------
    def _search(self, keys: Sequence[str], fetch: Callable[[int, list[str]], Mapping[str, Any]]):
        """Yield ``(tier index, found)``: hot -> cold, then for keys still missing cold -> hot
        and hot -> cold again (never the same tier twice in a row).

        A concurrent move can carry an entry from a tier not read yet into one already read;
        to slip past all three sweeps it must move three times, up, down and up, during the
        read. Without them a read could miss a key that existed all along (issue 14).
        Costs two more sweeps only for keys that are really missing.
        """
        remaining = list(keys)
        sweeps = self._sweeps(3)
        for i in sweeps:
            if not remaining:
                return
            found = fetch(i, remaining)
            if found:
                yield i, found
                remaining = [k for k in remaining if k not in found]

    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        out: dict[str, Record] = {}
        moves: dict[tuple[int, int], dict[str, Record]] = {}
        fetch = lambda i, ks: self.tiers[i].backend.get_many(ns, ks, now=now, touch=touch)  # noqa: E731
        for i, found in self._search(keys, fetch):
            for key, record in found.items():
                record.tier = self.tiers[i].name
                out[key] = record
                if touch and self.promote != "never" and i > 0:
                    target = 0 if self.promote == "first" else self.home(key)
                    if target < i:
                        moves.setdefault((i, target), {})[key] = record
        for (source, target), records in moves.items():
            outcome = self.move_outcome(ns, records, source, target, now=now)
            for key in outcome.moved | (outcome.written - outcome.reverted - outcome.killed):
                out[key].tier = self.tiers[target].name
        return out

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        groups: dict[int, dict[str, Record]] = {}
        for key, record in records.items():
            groups.setdefault(self.home(key), {})[key] = record
        for index, group in groups.items():
            keys = list(group)
            others = [j for j in range(len(self.tiers)) if j != index]
            # what the key holds in other tiers: its history is kept, its old writes retired
            seen = self._retire(ns, keys, others, now, sweeps=1, settle=False)
            olds: dict[str, Record] = {}
            for j in others:
                olds.update(seen.records.get(j, {}))
            if olds:
                group.update({k: group[k].merged_over(o, now) for k, o in olds.items()})
            # a key deleted earlier continues its versions: its new write is never "dead"
            floors = self.tombstones.versions(ns, [k for k in keys if k not in olds], now=now)
            for key, floor in floors.items():
                if group[key].version <= floor:
                    group[key] = replace(group[key], version=floor + 1)
            self.tiers[index].backend.put_many(ns, group, now=now)
            # a move may have carried an old write out of the home tier meanwhile
            self._retire(ns, keys, others[::-1], now, sweeps=1, seen=seen, spare=group)
            for j in others:  # only the writes seen: never a copy of the new one
                seen.delete_in(self.tiers[j].backend, j, ns, now)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        everywhere = list(range(len(self.tiers)))
        seen = self._retire(ns, keys, everywhere, now, sweeps=2, deleted=True)
        for tier in self.tiers:
            tier.backend.delete_many(ns, keys, now=now)
        return len(seen.keys())

    def _retire(
        self,
        ns: str,
        keys: Sequence[str],
        tiers: Sequence[int],
        now: float,
        *,
        sweeps: int,
        seen: Retired | None = None,
        settle: bool = True,
        spare: Mapping[str, Record] | None = None,
        deleted: bool = False,
    ) -> Retired:
        """Find the writes of ``keys`` in ``tiers`` and tombstone them before they go.

        Reads the tiers ``sweeps`` times (alternating direction) and, with ``settle``, goes
        on while a sweep finds a write it had not seen. Each new write is tombstoned BEFORE
        the next sweep: a mover that places a copy of it after the tombstone removes the
        copy itself; one that placed it before shows in the next sweep. Moved copies of
        the writes in ``spare`` (a write just made) are left alone.
        """
        seen = Retired() if seen is None else seen
        for attempt in range(_RETIRE_READS if settle else sweeps):
            order = tiers if attempt % 2 == 0 else list(reversed(tiers))
            new: dict[str, list[Token]] = {}
            for i in order:
                found = self.tiers[i].backend.get_many(ns, keys, now=now, touch=False)
                for key, record in found.items():
                    if spare and key in spare and copy_of(record, spare[key]):
                        continue
                    if seen.add(i, key, record):
                        new.setdefault(key, []).append(token_of(record))
            if new:
                if deleted:  # the delete record holds the newest token seen so far
                    new = {k: seen.tokens[k] for k in new}
                self.tombstones.add(ns, new, now=now, deleted=deleted)
            elif attempt + 1 >= sweeps:
                break
        return seen

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        fetch = lambda i, ks: self.tiers[i].backend.exists_many(ns, ks, now=now)  # noqa: E731
        return {k for _, found in self._search(keys, fetch) for k in found}

    def _sweeps(self, count: int) -> list[int]:
        """Tier indexes for ``count`` sweeps, alternating hot -> cold and cold -> hot."""
        down = list(range(len(self.tiers)))
        order = list(down)
        for n in range(1, count):
            order += down[::-1][1:] if n % 2 else down[1:]
        return order

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        # two sweeps: an entry moved up while the first ran shows in the second
        seen: set[str] = set()
        for i in self._sweeps(2):
            for key in self.tiers[i].backend.scan(ns, pattern, now=now):
                if key not in seen:
                    seen.add(key)
                    yield key

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        # three sweeps (as reads): an entry escapes only by moving up, down and up meanwhile
        tags = list(tags)
        found: set[str] = set()
        for i in self._sweeps(3):
            found |= self.tiers[i].backend.tagged(ns, tags, now=now)
        return found

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        # until a sweep finds nothing: entries moved by others while it ran are cleared too
        removed = 0
        for _ in range(_RETIRE_READS):
            found = 0
            for i in range(len(self.tiers)):
                keys = list(self.tiers[i].backend.scan(ns, None, now=now))
                for start in range(0, len(keys), batch_size):
                    batch = keys[start : start + batch_size]
                    found += len(batch)
                    removed += self.delete_many(ns, batch, now=now)
            if not found:
                break
        return removed

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
        self.tombstones.purge_expired(ns, now=now)
        return sum(tier.backend.purge_expired(ns, now=now) for tier in self.tiers)

    def ping(self) -> None:
        for tier in self.tiers:
            tier.backend.ping()

    def close(self) -> None:
        for tier in self.tiers:
            tier.backend.close()

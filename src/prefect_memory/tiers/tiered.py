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
from ..plugins.base import Backend, Capabilities, EntryColumns, Record, refuse_stale_reads
from .moves import (
    TOMBSTONE_TTL,
    MoveOutcome,
    Token,
    Tombstones,
    copy_of,
    move,
    move_columns,
    newer,
    token_of,
)
from .rules import Rule, parse_rule

Promote = Literal["home", "first", "never"]
_RETIRE_READS = 4  # reads of the tiers at most while a write or delete retires old writes
_TAG_CHECK_BATCH = 1000  # keys whose tags are checked per read of a tier (tagged)


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
        for tier in tiers:
            refuse_stale_reads(f"tier {tier.name!r}", tier.backend)
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

    def move_columns(
        self, ns: str, columns: EntryColumns, rows: Sequence[int], source: int, target: int,
        *, now: float,
    ) -> MoveOutcome:  # fmt: skip
        """:meth:`move_outcome` of the ``rows`` of a batch read as columns with their values
        (a migration's batch: no record is made of its source entries)."""
        return move_columns(
            self.tiers[source].backend,
            self.tiers[target].backend,
            ns,
            columns,
            rows,
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
            home = self.tiers[index].backend
            # What the key holds: the home tier first, then the others (an entry that leaves
            # the home tier meanwhile is seen in one of them, or is back home when the write
            # merges over it). Their versions and the key's delete record bound the new
            # version from below: versions of a key only grow (see .moves).
            here = home.get_many(ns, keys, now=now, touch=False)
            seen = self._retire(ns, keys, others, now, sweeps=1, settle=False)
            olds: dict[str, Record] = {}
            for j in others:
                olds.update(seen.records.get(j, {}))
            if olds:
                group.update({k: group[k].merged_over(o, now) for k, o in olds.items()})
            floors = self.tombstones.versions(ns, keys, now=now)
            stale: dict[str, Record] = {}
            for key in keys:
                known = [floors.get(key, 0), *(v for v, _ in seen.tokens.get(key, ()))]
                mine = here.get(key)
                if mine is not None:
                    known.append(mine.version)
                version = max(group[key].version, max(known) + 1)
                group[key] = replace(group[key], version=version)
                if mine is not None and (
                    mine.version + 1 < version or mine.version <= floors.get(key, 0)
                ):
                    # older than a write seen elsewhere, or deleted (a dead copy a mover
                    # has not removed yet): written over it (or over whatever replaces it
                    # meanwhile), the new write would take a version from the store, too low
                    stale[key] = mine
            if stale:  # removed (tombstoned first, as every write retired) before the write
                self.tombstones.add(ns, {k: [token_of(r)] for k, r in stale.items()}, now=now)
                home.delete_if_unchanged(ns, {k: token_of(r) for k, r in stale.items()}, now=now)
            over = {k: r for k, r in group.items() if k in here and k not in stale}
            if over:  # merged over the entry seen: its version + 1, the version chosen
                home.put_many(ns, over, now=now)
            self._write_absent(ns, index, {k: r for k, r in group.items() if k not in over}, now)
            # a move may have carried an old write out of the home tier meanwhile
            self._retire(ns, keys, others[::-1], now, sweeps=1, seen=seen, spare=group)
            # a write found only now (the look missed it: it moved twice) may be newer
            doubt = [
                k for k in keys if any(v >= group[k].version for v, _ in seen.tokens.get(k, ()))
            ]
            if doubt:
                self._raise_versions(ns, index, {k: group[k] for k in doubt}, seen, floors, now)
            for j in others:  # only the writes seen: never a copy of the new one
                seen.delete_in(self.tiers[j].backend, j, ns, now)

    def _write_absent(self, ns: str, index: int, records: Mapping[str, Record], now: float) -> None:
        """Write records whose key the home tier did not hold, with the versions chosen.

        Written only where still absent: a plain write would merge over an entry moved in
        meanwhile and take that entry's version + 1 (below the delete record, if it was a
        dead copy: the next move would take the new write for a dead one and remove it).
        An entry found there older than the write is removed (tombstoned first, if
        unchanged) and the write tried again; a newer one (a concurrent write of the key)
        is written over as usual, as is anything still in the way after a few rounds.
        """
        home = self.tiers[index].backend
        pending = dict(records)
        for _ in range(_RETIRE_READS):
            if not pending:
                return
            written = home.put_absent_many(ns, pending, now=now)
            pending = {k: r for k, r in pending.items() if k not in written}
            if not pending:
                return
            current = home.get_many(ns, list(pending), now=now, touch=False)
            older = {k: token_of(c) for k, c in current.items() if c.version < pending[k].version}
            newer = {k: pending.pop(k) for k in current if k not in older}
            if newer:
                home.put_many(ns, newer, now=now)
            if older:
                self.tombstones.add(ns, {k: [t] for k, t in older.items()}, now=now)
                home.delete_if_unchanged(ns, older, now=now)
        if pending:
            home.put_many(ns, pending, now=now)

    def _raise_versions(
        self,
        ns: str,
        index: int,
        written: Mapping[str, Record],
        seen: Retired,
        floors: Mapping[str, int],
        now: float,
    ) -> None:
        """Write again, past every version known, the writes stored with too low a version.

        Rare (a write of the key found only after the write): the write is read back; if it is
        still there as written and its version does not exceed every version seen and the
        delete record's, it is deleted if unchanged and written again where absent.
        Meanwhile a read sees the value before the write, which has not returned yet.
        """
        home = self.tiers[index].backend
        stored = home.get_many(ns, list(written), now=now, touch=False)
        redo: dict[str, tuple[Token, Record]] = {}
        for key, record in written.items():
            got = stored.get(key)
            if got is None or got.updated_at != record.updated_at or got.value != record.value:
                continue  # moved or rewritten meanwhile: not ours to touch
            top = max([floors.get(key, 0), *(v for v, _ in seen.tokens.get(key, ()))])
            if got.version <= top:
                redo[key] = (token_of(got), replace(record, version=top + 1))
        if redo:
            gone = home.delete_if_unchanged(ns, {k: t for k, (t, _) in redo.items()}, now=now)
            self._write_absent(ns, index, {k: redo[k][1] for k in gone}, now)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        everywhere = list(range(len(self.tiers)))
        # the delete record never goes below an earlier one (a write missed now stays dead)
        prior = self.tombstones.deleted(ns, keys, now=now)
        seen = self._retire(ns, keys, everywhere, now, sweeps=2, deleted=True, prior=prior)
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
        prior: Mapping[str, Token] | None = None,
    ) -> Retired:
        """Find the writes of ``keys`` in ``tiers`` and tombstone them before they go.

        Reads the tiers ``sweeps`` times (alternating direction) and, with ``settle``, goes
        on while a sweep finds a write it had not seen. Each new write is tombstoned BEFORE
        the next sweep: a mover that places a copy of it after the tombstone removes the
        copy itself; one that placed it before shows in the next sweep. Moved copies of
        the writes in ``spare`` (a write just made) are left alone. With ``deleted``, each
        key's delete record is the newest of the tokens seen and its ``prior`` record.
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
                self.tombstones.add(ns, new, now=now, deleted=deleted, prior=prior)
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
        return self._carrying(ns, sorted(found), set(tags), now)

    def _carrying(self, ns: str, keys: Sequence[str], tags: set[str], now: float) -> set[str]:
        """The ``keys`` whose newest write carries one of ``tags``.

        A tier's tag index may name a key whose newest write does not carry the tag: a dead
        copy of an older write that a stalled mover placed and is about to remove again, or
        an S3 tag marker written just after a move removed its entry. ``invalidate_tags``
        deleted such a key, newest write included (an acknowledged write lost). So the
        metadata of the keys found is read in three sweeps, as a read looks (the newest
        write escapes them only by moving up, down and up meanwhile), and the newest write
        seen decides (versions only grow, see .moves); a key seen nowhere is gone. Bounded
        batches, one metadata read per tier and sweep.
        """
        out: set[str] = set()
        for start in range(0, len(keys), _TAG_CHECK_BATCH):
            batch = list(keys[start : start + _TAG_CHECK_BATCH])
            newest: dict[str, Record] = {}
            for i in self._sweeps(3):
                for key, record in self.tiers[i].backend.meta_many(ns, batch, now=now).items():
                    if key not in newest or newer(token_of(record), token_of(newest[key])):
                        newest[key] = record
            out.update(k for k, r in newest.items() if tags & set(r.tags))
        return out

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
        # a key deleted earlier continues its versions: else its new write looks deleted
        floors = self.tombstones.versions(ns, list(absent), now=now)
        for key, floor in floors.items():
            if absent[key].version <= floor:
                absent[key] = replace(absent[key], version=floor + 1)
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

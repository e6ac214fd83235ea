"""Moving entries between tiers safely, whoever else is moving, reading or writing them.

Several processes may move the same key at once: two migrations (a schedule overlapping a
manual run, a retried partition), readers promoting on read, budget demotions, and user
writes and deletes. The move protocol needs no lock; it relies on two atomic per-key
primitives of the stores (``put_absent_many``, ``delete_if_unchanged``) and on tokens: a
write's ``(version, updated_at)``, which a move keeps unchanged.

A move of record ``r`` (token ``T``) read from tier ``S`` to tier ``D``:

1. **Copy** ``r`` to ``D`` if ``D`` has no live entry. If ``D`` already has one:
   the same token (another mover or a crashed run copied it) is taken as ours; a *newer*
   token means ``r`` is superseded there; an *older* token is a leftover and is replaced
   (deleted if unchanged, then copied again).
2. **Commit** by deleting ``r`` from ``S`` if it still has token ``T``. Exactly one actor
   wins this delete (it is atomic), so exactly one actor reports the key as moved.
3. **Settle** what the commit could not decide. If our copy is in ``D`` but ``S`` no longer
   has ``T``: ``S`` holding a newer write means our copy is stale (removed if unchanged);
   ``S`` holding nothing means another mover committed the move (the copy stays: removing
   it here is how entries were lost before).
4. **Honour deletes.** A user delete (or an overwrite landing in another tier) records the
   tokens it removes as *tombstones* before removing them (:class:`Tombstones`). After
   placing a copy, a mover looks its token up; a tombstoned copy is removed again, so a
   move that read an entry before the user deleted it cannot bring it back.

Nothing in these steps depends on time or on leases: a mover may stall anywhere for any
time (only the tombstone retention bounds how long a stalled mover may still rely on a
tombstone; see docs/guarantees.md). The steps of each actor are few, and the tests
run every interleaving of two actors against a model (tests/tiers/test_move_protocol.py).

Example:
    >>> from prefect_memory.plugins.base import Record
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> hot, warm = InProcessBackend(), InProcessBackend()
    >>> hot.put_many("ns", {"k": Record(b"v", 1.0, 1.0, 1.0)}, now=1.0)
    >>> outcome = move(hot, warm, "ns", hot.get_many("ns", ["k"], now=2.0), now=2.0)
    >>> outcome.moved, list(warm.scan("ns", None, now=2.0)), list(hot.scan("ns", None, now=2.0))
    ({'k'}, ['k'], [])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ..plugins.base import Backend, Record

Token = tuple[int, float]

#: Suffix of the namespace that holds a namespace's tombstones (NUL: no user namespace has it).
TOMBSTONE_NS = "\x00tombstones"
#: How long a tombstone is kept by default (seconds).
TOMBSTONE_TTL = 86_400.0
_REPLACE_ROUNDS = 3


def token_of(record: Record) -> Token:
    """The token of a record as a plain tuple of an int and a float."""
    return (int(record.version), float(record.updated_at))


def newer(a: Token, b: Token) -> bool:
    """Tell whether write ``a`` came after write ``b`` of the same key.

    Versions grow with every overwrite (a write reads the entry it replaces); the update
    time only breaks ties between writes that saw the same version.

    Example:
        >>> newer((3, 10.0), (2, 99.0)), newer((2, 10.0), (2, 9.0)), newer((2, 9.0), (2, 9.0))
        (True, True, False)
    """
    return a > b


class Tombstones:
    """Tokens removed by user deletes and overwrites, kept ``ttl`` seconds in one store.

    A tombstone is an entry of the namespace ``ns + TOMBSTONE_NS`` whose key names the
    key and the token, so adding one never overwrites another and looking one up is one
    batched read.

    Args:
        backend: The store holding the tombstones (a tiered memory uses its first shared
            tier: every process must see the same tombstones).
        ttl: Seconds a tombstone is kept.

    Example:
        >>> from prefect_memory.plugins.inprocess import InProcessBackend
        >>> stones = Tombstones(InProcessBackend())
        >>> stones.add("ns", {"k": [(1, 5.0)]}, now=10.0)
        >>> stones.dead("ns", {"k": (1, 5.0), "j": (1, 5.0)}, now=11.0)
        {'k'}
    """

    def __init__(self, backend: Backend, ttl: float = TOMBSTONE_TTL) -> None:
        self.backend = backend
        self.ttl = float(ttl)

    @staticmethod
    def name(key: str, token: Token) -> str:
        """The tombstone's key: unique per key and token (the last two ``|`` fields)."""
        return f"{key}|{int(token[0])}|{float(token[1])!r}"

    def add(self, ns: str, tokens: Mapping[str, Iterable[Token]], *, now: float) -> None:
        """Record that the writes ``tokens[key]`` were removed by the user."""
        stone = Record(b"", now, now, now, 0, now + self.ttl, self.ttl)
        batch = {self.name(k, t): stone for k, ts in tokens.items() for t in ts}
        if batch:
            self.backend.put_many(ns + TOMBSTONE_NS, batch, now=now)

    def dead(self, ns: str, tokens: Mapping[str, Token], *, now: float) -> set[str]:
        """The keys whose given token has a tombstone."""
        if not tokens:
            return set()
        names = {self.name(k, t): k for k, t in tokens.items()}
        found = self.backend.get_many(ns + TOMBSTONE_NS, list(names), now=now, touch=False)
        return {names[n] for n in found}

    def purge_expired(self, ns: str, *, now: float) -> int:
        """Remove expired tombstones (stores without native TTL)."""
        return self.backend.purge_expired(ns + TOMBSTONE_NS, now=now)


@dataclass
class MoveOutcome:
    """What one move of a batch did.

    Attributes:
        moved: Keys this actor committed (deleted from the source after a copy was in the
            target): they live in the target now.
        written: Keys whose copy this actor wrote into the target.
        skipped: Keys another actor moved, changed or deleted first (left as they are).
        dropped: Stale source copies removed because the target held a newer write.
        reverted: Copies of ours removed again because the source was rewritten.
        killed: Copies removed again because the user deleted that write (tombstone).
    """

    moved: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)
    reverted: set[str] = field(default_factory=set)
    killed: set[str] = field(default_factory=set)


def move(
    src: Backend,
    dst: Backend,
    ns: str,
    records: Mapping[str, Record],
    *,
    now: float,
    tombstones: Tombstones | None = None,
) -> MoveOutcome:
    """Move ``records`` (as read from ``src``) to ``dst`` (see the module docstring)."""
    out = MoveOutcome()
    if not records:
        return out
    clean = {k: r if r.tier is None else replace(r, tier=None) for k, r in records.items()}
    tokens = {k: token_of(r) for k, r in clean.items()}

    # 1. copy where absent; look at what occupies the others
    placed: set[str] = set()  # the target holds our token (our copy or an identical one)
    superseded: set[str] = set()  # the target holds a newer write
    pending = dict(clean)
    for _ in range(_REPLACE_ROUNDS):
        written = dst.put_absent_many(ns, pending, now=now) if pending else set()
        out.written |= written
        placed |= written
        occupied = [k for k in pending if k not in written]
        if not occupied:
            break
        current = dst.get_many(ns, occupied, now=now, touch=False)
        leftovers: dict[str, Token] = {}
        for key in occupied:
            found = current.get(key)
            if found is None:  # gone again meanwhile: try once more
                continue
            theirs = token_of(found)
            if theirs == tokens[key]:
                placed.add(key)
            elif newer(theirs, tokens[key]):
                superseded.add(key)
            else:
                leftovers[key] = theirs
        # replace older leftovers (deleted only if still the same), then copy again
        if leftovers:
            dst.delete_if_unchanged(ns, leftovers, now=now)
        pending = {k: clean[k] for k in occupied if k not in placed and k not in superseded}
        if not pending:
            break

    # 2. commit: delete the source if it still holds the token read
    commit = placed | superseded
    deleted = src.delete_if_unchanged(ns, {k: tokens[k] for k in commit}, now=now)
    out.moved = deleted & placed
    out.dropped = deleted & superseded

    # 3. settle copies whose commit failed
    undecided = sorted(out.written - deleted)
    if undecided:
        current = src.get_many(ns, undecided, now=now, touch=False)
        stale: dict[str, Token] = {}
        older_in_src: dict[str, Token] = {}
        for key in undecided:
            found = current.get(key)
            if found is None:
                continue  # another mover committed it (or the user deleted it: step 4)
            theirs = token_of(found)
            if newer(theirs, tokens[key]):
                stale[key] = tokens[key]
            elif theirs != tokens[key]:
                older_in_src[key] = theirs
        if stale:
            out.reverted = dst.delete_if_unchanged(ns, stale, now=now)
        if older_in_src:  # an older leftover moved into the source: ours is the entry
            src.delete_if_unchanged(ns, older_in_src, now=now)

    # 4. a copy of a write the user deleted meanwhile goes again
    if tombstones is not None:
        live = {k: tokens[k] for k in placed if k not in out.reverted}
        dead = tombstones.dead(ns, live, now=now)
        if dead:
            gone = {k: tokens[k] for k in dead}
            out.killed = dst.delete_if_unchanged(ns, gone, now=now)
            src.delete_if_unchanged(ns, gone, now=now)
            out.moved -= dead
    out.skipped = set(clean) - out.moved
    return out

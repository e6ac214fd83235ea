"""Moving entries between tiers safely, whoever else is moving, reading or writing them.

Several processes may move the same key at once: two migrations (a schedule overlapping a
manual run, a retried partition), readers promoting on read, budget demotions, and user
writes and deletes. The move protocol needs no lock; it relies on two atomic per-key
primitives of the stores (``put_absent_many``, ``delete_if_unchanged``) and on tokens: a
write's ``(version, updated_at)``, which a move keeps unchanged.

A move of record ``r`` (token ``T``) read from tier ``S`` to tier ``D``:

1. **Copy** ``r`` to ``D`` as ``c``: the same entry with its update time one float step
   later (:func:`moved_copy`), so ``c``'s token ``T'`` is newer than ``T`` and a copy is
   never mistaken for its source. Written only if ``D`` has no live entry; if it has one,
   ``T'`` there means another mover of the same source (or a crashed run) copied it; a
   newer token means ``r`` is superseded; an older token is a leftover and is replaced
   (deleted if unchanged, then copied again).
2. **Commit** by deleting ``r`` from ``S`` if it still has token ``T``. Exactly one actor
   wins this delete (it is atomic), so exactly one actor reports the key as moved.
3. **Settle** what the commit could not decide. If our copy is in ``D`` but ``S`` no longer
   has ``T``: ``S`` holding a newer token means our copy is stale (removed if unchanged);
   ``S`` holding nothing means another mover committed the move (the copy stays: removing
   it here is how entries were lost before).

Every delete above removes a token only when a strictly newer token of the key was seen
(our copy, or a newer write); so the newest token of a key, the one readers must get, is
never removed by a move, whatever the interleaving (an inductive argument: the chain of
"a newer one exists" ends at the newest). Without the float step, a promotion
(warm -> hot) and a demotion (hot -> warm) of the same entry in flight at once each saw
"the same token on the other side" and each deleted one of the two copies.
4. **Honour deletes.** A user delete (or an overwrite landing in another tier) records the
   tokens it removes as *tombstones* before removing them (:class:`Tombstones`). After
   placing a copy, a mover looks its token up; a tombstoned copy is removed again, so a
   move that read an entry before the user deleted it cannot bring it back. A delete also
   records the newest token it removed (never below the key's earlier delete record): every
   write up to it is dead, which covers the writes that were overwritten in place in one
   tier and so never tombstoned (a mover may still hold one, read before the overwrite).

All of this rests on **versions that only grow**: a write of a key gets a version above
every version of the key it can know of, so that token order is write order ("newer"
above, and a delete record covering "every write up to it", mean what they say). A write
(:meth:`TieredBackend.put_many`) reads the home tier first, then the other tiers, and the
delete record, and takes the next version past all of them. It then writes over the entry
it saw in the home tier (a store merges a write over what it holds: that entry's version
+ 1, the version chosen), or, where it saw none, only if the home tier still holds none:
a plain write would merge over an entry moved in meanwhile, such as a dead copy placed by
a stalled mover, and take its version + 1 (an older entry found there is removed and the
write tried again). A home tier holding an older write than one seen elsewhere loses it
before the write. An entry that leaves the home tier after the look is seen in another
tier; one the look missed altogether (promoted after the home tier was read, demoted
again before the write) shows in the read of the other tiers after the write, which is
then written again past it. A write where the key is absent (``put_absent_many``,
``Memory.add``) continues past the delete record too. Without all this, a write made
while its key was between tiers started again at version 1: an older write held by a
stalled mover then looked newer than it, came back after the key was deleted (the delete
record said "version 1 and older"), or made the mover remove the new write as "older"
(tests/tiers/test_move_protocol.py, ``test_race_*``).

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

import itertools
import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..plugins.base import Backend, EntryColumns, Record

Token = tuple[int, float]

#: Suffix of the namespace that holds a namespace's tombstones (NUL: no user namespace has it).
TOMBSTONE_NS = "\x00tombstones"
#: How long a tombstone is kept by default (seconds).
TOMBSTONE_TTL = 86_400.0
_REPLACE_ROUNDS = 3
_COPY_SPAN = 1e-3  # seconds: moved copies of a write stay within it (a move adds ~2e-7)
#: From this many keys on, :meth:`Tombstones.dead` lists the batch's range first.
_PROBE_AT = 64


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


def _dead_after(token: Token, deleted: Token) -> bool:
    """Is ``token`` the deleted write, an older one, or a moved copy of the deleted one?"""
    return not newer(token, deleted) or (
        token[0] == deleted[0] and token[1] - deleted[1] < _COPY_SPAN
    )


class Tombstones:
    """Writes removed by user deletes and overwrites, kept ``ttl`` seconds in one store.

    Two kinds of entry live in the namespace ``ns + TOMBSTONE_NS``:

    - ``key|version``: the write of that version (its update time is the value) was
      removed, and so is every moved copy of it (a move adds a float step to the update
      time; copies within ``_COPY_SPAN`` of it count);
    - ``key|deleted``: the user deleted the key; its value is the newest token the delete
      removed (or an earlier delete record, if newer: it never goes back). Every write up
      to that token is dead (a move that read an older value before it was overwritten and
      then deleted must not bring it back), and a later write of the key continues its
      versions past it, so that write is never mistaken for a dead one.

    Args:
        backend: The store holding the tombstones (a tiered memory uses its first shared
            tier: every process must see the same tombstones).
        ttl: Seconds a tombstone is kept.

    Example:
        >>> from prefect_memory.plugins.inprocess import InProcessBackend
        >>> stones = Tombstones(InProcessBackend())
        >>> stones.add("ns", {"k": [(2, 5.0)]}, now=10.0, deleted=True)
        >>> stones.dead("ns", {"k": [(1, 4.0)], "j": [(1, 5.0)]}, now=11.0)
        {'k'}
        >>> stones.versions("ns", ["k", "j"], now=11.0)
        {'k': 2}
    """

    def __init__(self, backend: Backend, ttl: float = TOMBSTONE_TTL) -> None:
        self.backend = backend
        self.ttl = float(ttl)

    @staticmethod
    def name(key: str, version: int) -> str:
        """The tombstone's key for a write: the key and the write's version."""
        return f"{key}|{int(version)}"

    @staticmethod
    def deleted_name(key: str) -> str:
        """The key of a key's delete record (``deleted`` is never a number, so no clash)."""
        return f"{key}|deleted"

    def add(
        self,
        ns: str,
        tokens: Mapping[str, Iterable[Token]],
        *,
        now: float,
        deleted: bool = False,
        prior: Mapping[str, Token] | None = None,
    ) -> None:
        """Record that the writes ``tokens[key]`` were removed (``deleted``: by a delete).

        A delete record holds the newest of the tokens and of the key's ``prior`` record
        (:meth:`deleted`): it never goes back below what an earlier delete recorded.
        """
        batch: dict[str, Record] = {}
        for key, ts in tokens.items():
            newest: dict[int, float] = {}
            for version, updated in ts:
                newest[int(version)] = max(float(updated), newest.get(int(version), -math.inf))
            for version, updated in newest.items():
                batch[self.name(key, version)] = self._stone(repr(updated).encode(), now)
            if deleted and newest:
                version = max(newest)
                record = max((version, newest[version]), (prior or {}).get(key, (-1, 0.0)))
                value = f"{record[0]}|{record[1]!r}".encode()
                batch[self.deleted_name(key)] = self._stone(value, now)
        if batch:
            self.backend.put_many(ns + TOMBSTONE_NS, batch, now=now)

    def _stone(self, value: bytes, now: float) -> Record:
        return Record(value, now, now, now, 0, now + self.ttl, self.ttl)

    @staticmethod
    def _parse(record: Record | None) -> Token | None:
        """A tombstone's token (``version|updated`` or ``updated``; version 0 if absent)."""
        if record is None:
            return None
        try:  # written by us; anything else in our namespace is not a tombstone
            text = record.value.decode("ascii")
            version, _, updated = text.rpartition("|")
            return (int(version or 0), float(updated))
        except (UnicodeDecodeError, ValueError):
            return None

    def _deleted(self, found: Mapping[str, Record], key: str) -> Token | None:
        return self._parse(found.get(self.deleted_name(key)))

    def dead(
        self, ns: str, tokens: Mapping[str, Iterable[Token]], *, now: float, near: bool = True
    ) -> set[str]:
        """The keys whose given tokens include a removed write (one batched read).

        A token is dead when its write (or the write it is a moved copy of) has a
        tombstone, or when the key was deleted at a token at least as new (it was
        overwritten, then deleted). ``near=False``: the caller kept the keys
        :meth:`near` named already.
        """
        if not tokens:
            return set()
        found = self.near(ns, tokens, now=now) if near else None
        if found is not None:  # the keys of the batch that have any tombstone
            tokens = {k: tokens[k] for k in found if k in tokens}
            if not tokens:
                return set()
        wanted = {k: list(ts) for k, ts in tokens.items()}
        names = {f"{k}|{int(v)}": None for k, ts in wanted.items() for v, _ in ts}
        names.update(dict.fromkeys(f"{k}|deleted" for k in wanted))  # as name / deleted_name
        found = self.backend.get_many(ns + TOMBSTONE_NS, list(names), now=now, touch=False)
        if not found:
            return set()  # no tombstone for any of them (the usual case): nothing is dead
        dead: set[str] = set()
        for key, ts in wanted.items():
            last = self._deleted(found, key)
            for token in ts:
                stone = self._parse(found.get(self.name(key, token[0])))
                if stone is not None and token[1] < stone[1] + _COPY_SPAN:
                    dead.add(key)  # that write, an older one of its version, or a copy
                if last is not None and _dead_after(token, last):
                    dead.add(key)
        return dead

    def near(self, ns: str, keys: Collection[str], *, now: float) -> set[str] | None:
        """The keys that tombstones sharing ``keys``' common prefix are of (a superset of
        those of ``keys`` that have any); ``None``: not known, look every key up.

        One prefix scan, for batches of :data:`_PROBE_AT` keys or more on a store that
        declares ``prefix_scans`` (a range read; else ``None``): every tombstone of a key
        starts with the key, so with the keys' common prefix too. A batch of a migration
        is a key range, so the range holds its tombstones and few others (more than two
        per key: ``None``, the lookup by name is cheaper then).

        A tombstone present when this starts is listed (tombstones are only added while
        their retention lasts), so the caller decides no later than a lookup by name
        made at the start would: after the copies were placed, as step 4 needs.
        """
        if len(keys) < _PROBE_AT or not self.backend.capabilities.prefix_scans:
            return None
        low, high = min(keys), max(keys)  # every key lies between: so does their prefix
        prefix = os.path.commonprefix([low, high])  # noqa: RUF071 - of strings, not paths
        for i, ch in enumerate(prefix):
            if ch in "*?[\\":  # glob metacharacters end the literal part
                prefix = prefix[:i]
                break
        limit = 2 * len(keys) + 64
        names = self.backend.scan(ns + TOMBSTONE_NS, prefix + "*", now=now)
        try:
            listed = list(itertools.islice(names, limit + 1))
        finally:
            close = getattr(names, "close", None)
            if close is not None:
                close()
        if len(listed) > limit:
            return None
        return {name.rpartition("|")[0] for name in listed}

    def deleted(self, ns: str, keys: Iterable[str], *, now: float) -> dict[str, Token]:
        """The delete record (newest token deleted) per key (keys never deleted left out)."""
        keys = list(keys)
        if not keys:
            return {}
        names = [self.deleted_name(k) for k in keys]
        found = self.backend.get_many(ns + TOMBSTONE_NS, names, now=now, touch=False)
        out: dict[str, Token] = {}
        for key in keys:
            last = self._deleted(found, key)
            if last is not None:
                out[key] = last
        return out

    def versions(self, ns: str, keys: Iterable[str], *, now: float) -> dict[str, int]:
        """The version of the newest deleted write per key (keys never deleted left out)."""
        return {k: token[0] for k, token in self.deleted(ns, keys, now=now).items()}

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


def moved_copy(record: Record) -> Record:
    """The copy a move writes: the same entry with its update time one float step later.

    The step (about 2e-7 s on today's clock) makes the copy's token newer than its
    source's, so a copy and its source are never mistaken for each other: whoever sees
    both knows which one a move will delete. It is far below any clock's resolution.

    Example:
        >>> r = Record(b"v", 1.0, 5.0, 5.0)
        >>> c = moved_copy(r)
        >>> c.updated_at > r.updated_at and c.updated_at - r.updated_at < 1e-12
        True
    """
    r = record  # the constructor: dataclasses.replace costs 5x as much (a batch makes 1000s)
    return Record(r.value, r.created_at, math.nextafter(r.updated_at, math.inf), r.last_access,
                  r.access_count, r.expires_at, r.ttl, r.sliding, r.tags, r.version, None,
                  r.stored_size)  # fmt: skip


def copy_of(record: Record, write: Record, *, moves: int = 64) -> bool:
    """Tell whether ``record`` is ``write`` itself or a copy of it moved up to ``moves`` times.

    Example:
        >>> w = Record(b"v", 1.0, 5.0, 5.0)
        >>> copy_of(moved_copy(moved_copy(w)), w), copy_of(Record(b"v", 1.0, 6.0, 6.0), w)
        (True, False)
    """
    low = float(write.updated_at)
    return low <= record.updated_at <= low + moves * math.ulp(low)


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
    tokens = {k: token_of(r) for k, r in records.items()}  # what the source holds
    copies = {k: moved_copy(r) for k, r in records.items()}
    placement = place(dst, ns, tokens, copies, now=now)
    return commit(src, dst, ns, placement, now=now, tombstones=tombstones)


def move_columns(
    src: Backend,
    dst: Backend,
    ns: str,
    columns: EntryColumns,
    rows: Sequence[int],
    *,
    now: float,
    tombstones: Tombstones | None = None,
) -> MoveOutcome:
    """:func:`move` of the ``rows`` of a batch read as columns (with their values).

    The same protocol; the copies are made straight from the columns (a migration's
    batch makes no record of its source entries): :func:`place_columns` (step 1, in
    the target), then :func:`commit` (steps 2 to 4).

    Example:
        >>> from prefect_memory.plugins.inprocess import InProcessBackend
        >>> from prefect_memory.plugins.sqlite import SqliteBackend
        >>> hot, warm = SqliteBackend(":memory:"), InProcessBackend()
        >>> hot.put_many("ns", {"k": Record(b"v", 1.0, 1.0, 1.0)}, now=1.0)
        >>> batch = next(hot.scan_columns("ns", now=2.0, value_bytes=64))  # values read
        >>> move_columns(hot, warm, "ns", batch, [0], now=2.0).moved
        {'k'}
        >>> warm.get_many("ns", ["k"], now=2.0)["k"].value, hot.get_many("ns", ["k"], now=2.0)
        (b'v', {})
    """
    placement = place_columns(dst, ns, columns, rows, now=now)
    return commit(src, dst, ns, placement, now=now, tombstones=tombstones)


@dataclass
class Placement:
    """Step 1 of a move done (:func:`place`): what :func:`commit` needs to finish it.

    Attributes:
        tokens: What the source held, per key (the token read).
        ours: The token of our copy, per key.
        placed: Keys whose target holds our copy (written by us or an equal mover).
        superseded: Keys whose target holds a newer write.
        written: Keys whose copy this actor wrote.
    """

    tokens: dict[str, Token]
    ours: dict[str, Token]
    placed: set[str] = field(default_factory=set)
    superseded: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)


def place_columns(
    dst: Backend, ns: str, columns: EntryColumns, rows: Sequence[int], *, now: float
) -> Placement:
    """Step 1 of a move of the ``rows`` of a batch read as columns with their values.

    The copies go to ``dst`` as columns (:meth:`~prefect_memory.plugins.base.Backend.
    put_absent_columns`: no record is made of them); records are made only for the keys
    ``dst`` holds already, which :func:`place` then settles one by one.
    """
    c = columns if len(rows) == len(columns) else columns.take(rows)  # (rows: all, usually)
    if None in c.values:
        raise ValueError(f"place_columns: the value of {c.keys[c.values.index(None)]!r} "
                         "was not read")  # fmt: skip
    keys, updated = c.keys, list(map(float, c.updated_at))
    version = list(map(int, c.version))
    tokens = dict(zip(keys, zip(version, updated, strict=True), strict=True))
    stepped = list(map(math.nextafter, updated, itertools.repeat(math.inf)))
    ours = dict(zip(keys, zip(version, stepped, strict=True), strict=True))
    copies = replace(c, updated_at=stepped, version=version)
    written = dst.put_absent_columns(ns, copies, now=now) if keys else set()
    if len(written) == len(keys):  # every copy written (the usual case): nothing to settle
        return Placement(tokens, ours, placed=set(written), written=set(written))
    occupied = copies.records([i for i, k in enumerate(keys) if k not in written])
    return place(dst, ns, tokens, occupied, now=now, ours=ours, written=written)


def place(
    dst: Backend,
    ns: str,
    tokens: dict[str, Token],
    copies: dict[str, Record],
    *,
    now: float,
    ours: dict[str, Token] | None = None,
    written: set[str] | None = None,
) -> Placement:
    """Step 1: copy where absent; look at what occupies the others (see the module docstring).

    ``tokens`` is what the source holds per key, ``copies`` what goes to ``dst`` (``ours``:
    their tokens, if the caller has them already). ``written``: the keys a first
    put-if-absent of every copy wrote already (:func:`place_columns`); ``copies`` then
    holds the others only.
    """
    if ours is None:
        step, inf = math.nextafter, math.inf
        ours = {k: (v, step(u, inf)) for k, (v, u) in tokens.items()}  # what our copy holds
    p = Placement(tokens, ours)
    if not tokens:
        return p
    placed, superseded = p.placed, p.superseded
    pending = dict(copies)
    tried = written  # the copies in ``pending`` were offered once already
    for _ in range(_REPLACE_ROUNDS):
        if tried is not None:
            written, tried = tried, None
        else:
            written = dst.put_absent_many(ns, pending, now=now) if pending else set()
        p.written |= written
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
            if theirs == ours[key]:
                placed.add(key)
            elif newer(theirs, ours[key]):
                superseded.add(key)
            elif newer(tokens[key], theirs):
                leftovers[key] = theirs  # an older write: ours replaces it
            # else: the very token we read, left by a move of an older release: skipped
        if leftovers:  # deleted only if still the same, then copied again
            dst.delete_if_unchanged(ns, leftovers, now=now)
        pending = {k: copies[k] for k in leftovers}
        pending.update({k: copies[k] for k in occupied if k not in current})
        if not pending:
            break
    return p


def commit(
    src: Backend,
    dst: Backend,
    ns: str,
    placement: Placement,
    *,
    now: float,
    tombstones: Tombstones | None,
) -> MoveOutcome:
    """Steps 2 to 4 of a move whose step 1 is ``placement`` (see the module docstring)."""
    p = placement
    tokens, ours, placed, superseded = p.tokens, p.ours, p.placed, p.superseded
    out = MoveOutcome(written=p.written)
    if not tokens:
        return out

    # 2. commit: delete the source if it still holds the token read
    settled = placed | superseded
    expected = tokens if len(settled) == len(tokens) else {k: tokens[k] for k in settled}
    deleted = src.delete_if_unchanged(ns, expected, now=now)
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
            if newer(theirs, ours[key]):
                stale[key] = ours[key]
            elif newer(ours[key], theirs):
                older_in_src[key] = theirs
        if stale:
            out.reverted = dst.delete_if_unchanged(ns, stale, now=now)
        if older_in_src:  # the source holds an older write than our copy: it goes
            src.delete_if_unchanged(ns, older_in_src, now=now)

    # 4. a copy of a write the user deleted meanwhile goes again
    if tombstones is not None:
        live = placed - out.reverted if out.reverted else placed
        near = tombstones.near(ns, live, now=now)  # None: every key is looked up
        check = live if near is None else near.intersection(live)
        dead = tombstones.dead(ns, {k: (tokens[k], ours[k]) for k in check}, now=now, near=False)
        if dead:
            out.killed = dst.delete_if_unchanged(ns, {k: ours[k] for k in dead}, now=now)
            src.delete_if_unchanged(ns, {k: tokens[k] for k in dead}, now=now)
            out.moved -= dead
    out.skipped = set(tokens) - out.moved
    return out

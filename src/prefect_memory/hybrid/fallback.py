"""Reading around a store that is down, and replaying what a store missed.

:class:`FallbackReads` is the read side of a hybrid memory: reads go to the primary; when
it is unavailable (down, timed out, breaker open) they are answered from the journal and
the secondary; a miss reads through them and refills the primary; while writes are queued
for the primary, they are merged over what it answers. Two small rules keep this correct:

- **Newest wins, by the time of the write.** A key may have a record in a store and a
  pending operation in the journal. :func:`merge` answers with the newer of the two: the
  journal's operation unless the store holds a strictly newer write (``updated_at`` later
  than the operation's time). A pending delete hides an older record. Against the
  secondary, an operation pending for it always wins: it gets a key's writes in the
  journal's order, which is the order they took the key's lock (:mod:`.keylocks`).
- **A refill is taken back when a write overtook it.** A read that misses the primary
  refills it from the journal and the secondary, then reads them again: a key whose write
  changed meanwhile has its copy removed from the primary (compare-and-delete).
- **A replay never overwrites a newer write.** :func:`apply_entries` coalesces a batch of
  journal entries to the last operation per key; with ``guard=True`` it first reads what
  the store holds and skips the keys where the store already has a newer write (written
  directly after the store came back, while older entries were still queued).

Example:
    >>> from prefect_memory.plugins.base import Record
    >>> from prefect_memory.hybrid.journal import Entry
    >>> old = Record(b"old", 1.0, 1.0, 1.0)
    >>> new = Record(b"new", 1.0, 5.0, 5.0)
    >>> queued = {"a": Entry(1, "ns", "a", "put", new, 5.0, "primary"),
    ...           "b": Entry(2, "ns", "b", "del", None, 3.0, "primary")}
    >>> merged = merge({"a": old, "b": old}, queued, now=10.0, touch=False)
    >>> {k: r.value for k, r in merged.items()}
    {'a': b'new'}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable
from ..keys import glob_match
from ..plugins.base import Backend, Record
from .journal import PRIMARY, SECONDARY, Entry, Journal

if TYPE_CHECKING:
    from .pending import Lanes


def newer_in_store(record: Record | None, entry: Entry) -> bool:
    """Tell whether a store's ``record`` is a strictly newer write than ``entry``."""
    return record is not None and record.updated_at > entry.at


def merge(
    found: Mapping[str, Record],
    pending: Mapping[str, Entry],
    *,
    now: float,
    touch: bool,
    ahead: str | None = None,
) -> dict[str, Record]:
    """The records of ``found`` with the newer ``pending`` operations applied over them.

    A pending put answered from the journal counts an access in the returned record only
    (access statistics are best-effort while a store is behind). ``ahead``: the lane of
    the store ``found`` comes from, whose pending operations are newer than anything it
    holds whatever their times say (the store gets its writes of a key in the journal's
    order, and the journal's order of a key's writes is the order they took its key lock,
    not always the order of the times their callers gave them).
    """
    out = dict(found)
    for key, entry in pending.items():
        if entry.lane != ahead and newer_in_store(out.get(key), entry):
            continue
        record = entry.record
        if record is None or record.expired(now):
            out.pop(key, None)
        else:
            out[key] = record.touched(now) if touch else record
    return out


def coalesce(entries: Sequence[Entry]) -> dict[str, dict[str, Entry]]:
    """The last operation per key of ``entries``, grouped by namespace."""
    by_ns: dict[str, dict[str, Entry]] = {}
    for entry in entries:
        by_ns.setdefault(entry.ns, {})[entry.key] = entry
    return by_ns


def apply_entries(
    store: Backend, entries: Sequence[Entry], *, now: float, guard: bool
) -> tuple[int, int]:
    """Apply journal ``entries`` to ``store``; return ``(applied, skipped as older)``.

    With ``guard``, one extra read per namespace skips keys whose stored write is newer.
    Raises whatever the store raises (the caller keeps the entries for a later try).
    """
    applied = skipped = 0
    for ns, last in coalesce(entries).items():
        if guard:
            current = store.get_many(ns, list(last), now=now, touch=False)
            fresh = {k: e for k, e in last.items() if not newer_in_store(current.get(k), e)}
            skipped += len(last) - len(fresh)
            # a delete of a key the store does not hold has nothing to do
            last = {k: e for k, e in fresh.items() if e.op == "put" or k in current}
        puts = {k: e.record for k, e in last.items() if e.op == "put" and e.record is not None}
        deletes = [k for k, e in last.items() if e.op != "put"]
        if puts:
            store.put_many(ns, puts, now=now)
        if deletes:
            store.delete_many(ns, deletes, now=now)
        applied += len(puts) + len(deletes)
    return applied, skipped


class FallbackReads:
    """The read side of a hybrid memory: primary first, around it when it is unavailable.

    Mixed into :class:`~.hybrid.HybridBackend`, which provides the stores, the journal,
    the lanes and the two bookkeeping hooks declared here.
    """

    primary: Backend
    secondary: Backend
    journal: Journal
    lanes: Lanes

    def _primary_failed(self, err: BaseException) -> None:
        raise NotImplementedError

    def _primary_answered(self) -> None:
        raise NotImplementedError

    def _behind(self, ns: str, keys: Sequence[str]) -> dict[str, Any]:
        """Pending journal operations of ``keys`` while the primary has writes queued."""
        if not self.lanes.pending(PRIMARY):
            return {}
        return self.journal.latest(ns, keys)

    def _from_secondary(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool
    ) -> dict[str, Record]:
        """The journal's pending operations merged over the secondary's records.

        With the secondary unavailable, keys the journal answers for are still answered.
        """
        pending = self.journal.latest(ns, keys)
        try:
            found = self.secondary.get_many(ns, keys, now=now, touch=touch)
        except BackendUnavailable:
            if len(pending) < len(set(keys)):
                raise
            found = {}
        if not pending:
            return found
        return merge(found, pending, now=now, touch=touch, ahead=SECONDARY)

    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        behind = self._behind(ns, keys)
        try:
            out = self.primary.get_many(ns, keys, now=now, touch=touch)
        except BackendUnavailable as err:
            self._primary_failed(err)
            return self._from_secondary(ns, keys, now=now, touch=touch)
        self._primary_answered()
        if behind:
            out = merge(out, behind, now=now, touch=touch)
        missing = [k for k in keys if k not in out and k not in behind]
        if not missing:
            return out
        recovered = self._from_secondary(ns, missing, now=now, touch=False)
        if recovered:
            try:
                written = self.primary.put_absent_many(ns, recovered, now=now)
                if written:
                    self._recheck_refill(ns, recovered, written, now=now)
                if touch and written:
                    recovered.update(self.primary.get_many(ns, list(written), now=now, touch=True))
            except BackendUnavailable as err:
                self._primary_failed(err)
            out.update(recovered)
        return out

    def _recheck_refill(
        self, ns: str, recovered: dict[str, Record], written: set[str], *, now: float
    ) -> None:
        """Take back a refill of the primary that a write of the same keys overtook.

        A refill copies what the journal and the secondary held when it read them. A delete
        (or a put) of the key that reaches them after that read and the primary before the
        refill lands would be undone by it: the deleted value back in the primary, where
        reads and :meth:`sync` would take it for the newest. So the journal and the
        secondary are read again once the refill is written: a key they no longer answer
        with the write copied has its copy taken out of the primary again
        (compare-and-delete: only while the primary still holds that very write), and
        ``recovered`` answers what they hold now. Writes reach the secondary (or the journal)
        before the primary's copy goes (deletes of a write-through memory go to the
        secondary first), so a write that overtakes a refill is seen by this second read.
        """
        try:
            again = self._from_secondary(ns, list(written), now=now, touch=False)
        except BackendUnavailable:  # cannot tell: no refill stays (a later read refills)
            self.primary.delete_if_unchanged(
                ns, {key: recovered[key].token for key in written}, now=now
            )
            written.clear()
            return
        overtaken = {
            key: recovered[key].token
            for key in written
            if key not in again or again[key].token != recovered[key].token
        }
        if not overtaken:
            return
        self.primary.delete_if_unchanged(ns, overtaken, now=now)
        for key in overtaken:
            written.discard(key)
            if key in again:
                recovered[key] = again[key]
            else:
                recovered.pop(key, None)

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        behind = self._behind(ns, keys)
        direct = [k for k in keys if k not in behind]
        try:
            found = self.primary.exists_many(ns, direct, now=now) if direct else set()
        except BackendUnavailable as err:
            self._primary_failed(err)
            return set(self._from_secondary(ns, keys, now=now, touch=False))
        if behind:
            found |= set(self.get_many(ns, list(behind), now=now, touch=False))
        missing = [k for k in direct if k not in found]
        if missing:
            pending = self.journal.latest(ns, missing)
            rest = [k for k in missing if k not in pending]
            found |= self.secondary.exists_many(ns, rest, now=now) if rest else set()
            if pending:
                found |= set(self._from_secondary(ns, list(pending), now=now, touch=False))
        return found

    def _stores(self) -> Iterator[tuple[str, Backend]]:
        yield "primary", self.primary
        yield "secondary", self.secondary

    def _each(self, call: Callable[[Backend], Any]) -> list[Any]:
        """``call`` on both stores; an unavailable primary is skipped (the secondary has all)."""
        out = []
        for name, store in self._stores():
            try:
                out.append(call(store))
            except BackendUnavailable as err:
                if name != "primary":
                    raise
                self._primary_failed(err)
        return out

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        pending = self.journal.keys(ns)
        seen: set[str] = set()
        for name, store in self._stores():
            try:
                for key in store.scan(ns, pattern, now=now):
                    if key not in seen and key not in pending:
                        seen.add(key)
                        yield key
            except BackendUnavailable as err:
                if name != "primary":
                    raise
                self._primary_failed(err)
        candidates = [k for k in pending if k not in seen and glob_match(k, pattern)]
        for start in range(0, len(candidates), 500):
            batch = candidates[start : start + 500]
            yield from sorted(self.get_many(ns, batch, now=now, touch=False))

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        tags = list(tags)
        found: set[str] = set().union(*self._each(lambda b: b.tagged(ns, tags, now=now)))
        pending = self.journal.keys(ns)
        if not pending:
            return found
        wanted = set(tags)
        found -= set(pending)
        records = self.get_many(ns, list(pending), now=now, touch=False)
        return found | {k for k, r in records.items() if wanted.intersection(r.tags)}

    def purge_expired(self, ns: str, *, now: float) -> int:
        return sum(self._each(lambda b: b.purge_expired(ns, now=now)))


__all__ = ["FallbackReads", "apply_entries", "coalesce", "merge", "newer_in_store"]

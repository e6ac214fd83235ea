"""The archive's commit log: which data files count, in which order, and what each write did.

Data files are uploaded first and count only once a *claim* names them. A claim is a
small object ``<ns>/_log/<slot>`` created with a conditional write (put-if-absent: S3's
``If-None-Match: *``, ``link()`` on a local folder), so exactly one writer gets each slot,
whatever the number of processes, and a writer always claims the slot right above the
highest it has seen. Slots are therefore dense, and they give every writer and reader
the same total order of writes:

- **order**: the rows of a write file all take the slot of their claim as ``seq`` (the
  latest row of a key is the one with the highest ``(seq, path)``, as before); files
  written before the log existed keep the ``seq`` they hold, all below the first slot;
- **decisions in the log**: before it claims slot ``N`` a writer has read every claim
  below ``N`` (they are dense), so it knows the exact state its write applies to. A
  conditional write (``put_absent_many``, ``delete_if_unchanged``, deletes that count)
  records in its claim the keys whose condition no longer holds there (``void``): those
  rows never apply, for any reader, and the keys it returns are exactly the rows that
  did. If another writer took slot ``N`` first, the writer reads the new claims and tries
  ``N + 1`` with the same data file (nothing is re-uploaded);
- **checkpoints**: a compaction claims a slot whose content lists every data file that
  counts (its outputs in place of its inputs) and the files it replaced; claims below
  the newest checkpoint are then deleted. A writer whose claim landed on a slot number
  freed that way (it listed before the checkpoint) sees a checkpoint above its slot that
  does not name its file, and claims again.

A write's claim also carries the key summary of its file (``"s"``, see :mod:`.summary`):
a cold reader learns what the file holds from the object that commits it.

No lock and no timing assumption is involved: a writer that dies before claiming leaves
an unreferenced data file (ignored), one that dies after claiming has written.

Example:
    >>> claim = Claim(7, "n1", entry=Entry("date=2024-05-06/part-7-ab-w.parquet", 100, 7,
    ...                                     ("k2",)))
    >>> again = Claim.unpack(7, claim.pack())
    >>> again == claim, again.checkpoint, again.entry.void
    (True, False, ('k2',))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ...errors import SerializationError

LOG_DIR = "_log"
#: Largest claim read (a checkpoint lists every file of a namespace: ~100 bytes a file).
MAX_CLAIM_BYTES = 64 << 20


def check_claim_size(slot: int, size: int) -> None:
    """Refuse a log object too large to be a claim before it is read into memory."""
    if size > MAX_CLAIM_BYTES:
        raise SerializationError(
            f"archive log slot {slot}: {size} bytes, more than a claim can hold "
            f"({MAX_CLAIM_BYTES}); not written by prefect-memory"
        )


#: Name suffixes of data files that count only through the log.
WRITE_SUFFIX, COMPACT_SUFFIX = "-w.parquet", "-c.parquet"
_SLOT = re.compile(r"^\d{1,19}$")
_SEQ_IN_NAME = re.compile(r"part-(\d+)-")


def slot_name(slot: int) -> str:
    """The object name of a slot (zero-padded: listings come back in slot order)."""
    return f"{slot:019d}"


def parse_slot(name: str) -> int | None:
    """The slot of a log object name, ``None`` for anything else (temporary files)."""
    return int(name) if _SLOT.match(name) else None


def is_logged(rel: str) -> bool:
    """Whether a data file counts only through the log (written by this version)."""
    return rel.endswith((WRITE_SUFFIX, COMPACT_SUFFIX))


def name_seq(rel: str) -> int:
    """The ``seq`` in a data file's name (0 if none): an upper bound of its rows' ``seq``."""
    found = _SEQ_IN_NAME.search(rel.rsplit("/", 1)[-1])
    return int(found.group(1)) if found else 0


@dataclass(frozen=True)
class Entry:
    """A data file that counts.

    Attributes:
        path: Relative to the namespace folder (``date=.../part-...parquet``).
        size: Its size in bytes (a reader needs no listing to read it).
        slot: The claim slot of a write: the ``seq`` of all its rows; ``0``: the rows
            carry their own ``seq`` (compaction outputs, files from before the log).
        void: Keys of the file whose row does not apply (their condition failed).
    """

    path: str
    size: int
    slot: int = 0
    void: tuple[str, ...] = ()

    def pack(self) -> list[object]:
        return [self.path, self.size, self.slot, list(self.void)]

    @classmethod
    def unpack(cls, item: list[object]) -> Entry:
        path, size, slot, void = item
        return cls(str(path), int(size), int(slot), tuple(map(str, void)))  # type: ignore[arg-type,call-overload]


@dataclass(frozen=True)
class Claim:
    """The content of one log slot: a write (``entry``) or a checkpoint (``files``)."""

    slot: int
    nonce: str
    entry: Entry | None = None
    files: tuple[Entry, ...] | None = None
    drop: tuple[str, ...] = ()
    #: A checkpoint's predecessor: ``(slot, nonce)`` of the checkpoint it was built on.
    prev: tuple[int, str] = (0, "")
    #: A write's key summary of its file (:mod:`.summary`), as read: checked when used.
    summary: Any = field(default=None, compare=False, repr=False)

    @property
    def checkpoint(self) -> bool:
        return self.files is not None

    def names(self, path: str) -> bool:
        """Whether this checkpoint keeps or replaced the data file ``path``."""
        return any(e.path == path for e in self.files or ()) or path in self.drop

    def pack(self) -> bytes:
        body: dict[str, object] = {"v": 1, "n": self.nonce}
        if self.files is not None:
            body["k"] = [e.pack() for e in self.files]
            body["d"] = list(self.drop)
            body["p"] = list(self.prev)
        else:
            assert self.entry is not None
            body["w"] = self.entry.pack()
            if self.summary is not None:
                body["s"] = self.summary
        return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def unpack(cls, slot: int, blob: bytes) -> Claim:
        """Read a claim; anything else in a log slot (another client may write there) is a
        :class:`~prefect_memory.errors.SerializationError` naming the slot, never a crash.

        Example:
            >>> Claim.unpack(3, b"not a claim")
            Traceback (most recent call last):
            ...
            prefect_memory.errors.SerializationError: archive log slot 3: not a claim ...
        """
        check_claim_size(slot, len(blob))
        try:
            body = msgpack.unpackb(blob, raw=False)
            nonce = str(body.get("n", ""))
            if "k" in body:
                files = tuple(Entry.unpack(e) for e in body["k"])
                prev_slot, prev_nonce = body.get("p", (0, ""))
                return cls(slot, nonce, files=files, drop=tuple(map(str, body.get("d", ()))),
                           prev=(int(prev_slot), str(prev_nonce)))  # fmt: skip
            return cls(slot, nonce, entry=Entry.unpack(body["w"]), summary=body.get("s"))
        except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as err:
            raise SerializationError(
                f"archive log slot {slot}: not a claim written by prefect-memory "
                f"({type(err).__name__})"
            ) from None


def overtaken(claim: Claim, later: Mapping[int, Claim]) -> bool | None:
    """Whether ``claim``, just created, landed on a slot a checkpoint had freed (the claim
    then counts for nobody); ``None`` when the checkpoints that would tell are gone.

    ``later`` holds the claims found above ``claim.slot`` right after creating it. A
    checkpoint above the slot built after the claim has seen it (slots are dense): the
    first one above it keeps or replaced the claim's file (or builds on it, for a
    checkpoint). A freed slot is below the checkpoint that freed it, which saw the slot's
    first claim, not this one.

    Example:
        >>> mine = Claim(5, "me", entry=Entry("date=d/part-5-x-w.parquet", 10, 5))
        >>> other = Entry("date=d/part-5-y-w.parquet", 10, 5)
        >>> overtaken(mine, {7: Claim(7, "c", files=(other,), prev=(2, "b"))})
        True
        >>> overtaken(mine, {7: Claim(7, "c", files=(mine.entry,), prev=(2, "b"))})
        False
    """
    checkpoints = {s: c for s, c in later.items() if c.checkpoint and s > claim.slot}
    if not checkpoints:
        return False
    current = checkpoints[max(checkpoints)]
    while current.prev[0] > claim.slot:  # walk down to the first checkpoint above the claim
        below = checkpoints.get(current.prev[0])
        if below is None:
            return None
        current = below
    if current.prev[0] == claim.slot:
        return current.prev[1] != claim.nonce
    if claim.checkpoint:
        return True  # a checkpoint built after this one would build on it
    assert claim.entry is not None
    return not current.names(claim.entry.path)


@dataclass
class LogView:
    """What one process knows of a namespace's log.

    ``base`` is the newest checkpoint seen, ``claims`` the write claims above it;
    ``legacy_top`` the highest ``seq`` named by a file from before the log (the first
    slot is above it). ``seen`` holds every slot read or skipped, so each is read once.
    """

    base: Claim | None = None
    claims: dict[int, Claim] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)
    legacy_top: int = 0

    @property
    def floor(self) -> int:
        """Slots at or below this are settled by the checkpoint (or predate the log)."""
        return self.base.slot if self.base is not None else self.legacy_top

    @property
    def top(self) -> int:
        """The highest slot known: the next claim tries ``top + 1``."""
        return max(self.floor, max(self.claims, default=0))

    def missing(self, listed_top: int) -> list[int]:
        """Slots between the floor and the highest one known or listed that were not read."""
        top = max(self.top, listed_top)
        return [s for s in range(self.floor + 1, top + 1) if s not in self.claims]

    def take(self, claims: Iterable[Claim]) -> None:
        """Apply claims read from the store (the newest checkpoint replaces the base)."""
        claims = list(claims)
        newest = max((c for c in claims if c.checkpoint), key=lambda c: c.slot, default=None)
        if newest is not None and newest.slot > self.floor:
            self.base = newest
            self.claims = {s: c for s, c in self.claims.items() if s > newest.slot}
        for claim in claims:
            self.seen.add(claim.slot)
            if not claim.checkpoint and claim.slot > self.floor:
                self.claims[claim.slot] = claim

    def files(self, legacy: Mapping[str, int]) -> dict[str, Entry]:
        """Every data file that counts, by relative path (``legacy``: listed files from
        before the log, which count until a checkpoint exists)."""
        if self.base is not None:
            out = {e.path: e for e in self.base.files or ()}
        else:
            out = {path: Entry(path, size) for path, size in legacy.items()}
        for slot in sorted(self.claims):
            entry = self.claims[slot].entry
            assert entry is not None
            out[entry.path] = entry
        return out

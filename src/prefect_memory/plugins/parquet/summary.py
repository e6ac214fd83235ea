"""Key summaries of the archive's data files, and the index manifests that bundle them.

A cold lookup (a new process) must not read every data file to find one key. So every
data file gets a small **key summary** (:class:`KeySummary`): its first and last key, a
bloom filter of its keys (no false negatives: a key the file holds always passes; about
1 % of the keys it does not hold pass too) and, per row group, its first key and byte
range. With it a lookup picks the one row group of the one file that can hold the key
and reads it (and the file's footer) with one ranged read, instead of loading the file.

Where summaries live, consistent with the commit log (:mod:`.log`):

- a **write** carries its file's summary in its claim (``"s"`` next to ``"w"``): the
  summary is committed with the file, in the same object; claims written before this
  existed have none (the file is then loaded whole, as before);
- an **index manifest** ``<ns>/_index/<slot>.msgpack`` (:class:`Manifest`) is the log
  compacted up to one slot (the newest checkpoint, the write claims above it, the nonce of
  the claim at that slot) plus the summary of every file that counts there. A writer
  writes one after its claim every few writes (:func:`manifest_due`), a compaction after
  its checkpoint. A reader starting cold reads the newest manifest and only the claims
  listed at or above its slot, in one round; it trusts the manifest only if the claim at
  that slot is the one the manifest names (same nonce), or a checkpoint above it
  supersedes it. Anything else (missing, malformed, too large, naming another history)
  is ignored and the claims are read one by one as before: a manifest can make a lookup
  faster, never change its answer.

Every field read from the store is checked (types, bounds, byte ranges inside the file)
before use: a summary that fails is dropped (the file is loaded whole), a manifest that
fails is ignored.

Example:
    >>> keys = [f"k{i:04d}" for i in range(1000)]
    >>> bloom = Bloom.of(keys)
    >>> all(bloom.may_hold(k) for k in keys)
    True
    >>> sum(bloom.may_hold(f"x{i}") for i in range(1000)) < 40
    True
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from ...errors import SerializationError
from .log import Claim, Entry

INDEX_DIR = "_index"
#: Largest manifest read (its size comes from the listing, checked before the read).
MAX_MANIFEST_BYTES = 256 << 20
#: Bits of a bloom filter per key, hashes per key: about 1 % false positives.
BITS_PER_KEY, HASHES = 10, 7
#: Largest bloom filter of one file (past ~3.3 M keys the false positives grow, never
#: the false negatives).
MAX_BLOOM_BYTES = 4 << 20
#: A summary larger than this (huge keys as first keys of many row groups) is not written.
MAX_SUMMARY_BYTES = 16 << 20
_MANIFEST_NAME = re.compile(r"^(\d{1,19})\.msgpack$")
_MAX_ROW_GROUPS = 1 << 20
_MAX_INT = (1 << 63) - 1

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_PRIME = np.uint64(0x100000001B3)
_LEN_MIX = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


def hash_keys(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """64-bit hashes of UTF-8 keys packed as Arrow packs strings (``data[offsets[i]:
    offsets[i + 1]]`` is key ``i``), vectorised over the keys: the polynomial
    ``sum((byte + 1) * PRIME ** (length - 1 - position))`` modulo 2**64 (Horner's rule,
    one numpy step per byte position), then a finaliser that mixes every bit. The same
    bytes give the same hash on every machine: the summaries on disk depend on it.

    Example:
        >>> raw = np.frombuffer(b"abc", np.uint8)
        >>> one = hash_keys(raw, np.array([0, 3]))
        >>> bool(one[0] == hash_keys(raw, np.array([0, 1, 3]))[0])
        False
        >>> bool(hash_keys(*utf8(["abc"]))[0] == one[0])
        True
    """
    offsets = np.asarray(offsets, np.int64)
    n = max(len(offsets) - 1, 0)
    h = np.zeros(n, np.uint64)
    if n == 0:
        return h
    starts, lengths = offsets[:-1], np.diff(offsets)
    active = np.flatnonzero(lengths > 0)
    one = np.uint64(1)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps: exactly modulo 2**64
        position = 0
        while active.size:
            byte = data[starts[active] + position].astype(np.uint64)
            h[active] = h[active] * _PRIME + (byte + one)
            position += 1
            active = active[lengths[active] > position]
        h ^= lengths.astype(np.uint64) * _LEN_MIX
        h ^= h >> _S33
        h *= _M1
        h ^= h >> _S33
        h *= _M2
        h ^= h >> _S33
    return h


def utf8(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Python keys as ``(data, offsets)`` for :func:`hash_keys` (no Arrow involved)."""
    blobs = [k.encode("utf-8") for k in keys]
    offsets = np.zeros(len(blobs) + 1, np.int64)
    if blobs:
        np.cumsum(np.fromiter(map(len, blobs), np.int64, len(blobs)), out=offsets[1:])
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def arrow_utf8(array: Any) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow string array's bytes and offsets, read from its buffers (no copy, and no
    ``to_numpy``, which imports pandas: a second or more in a new process)."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count:
        raise ValueError("keys are never null")
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    n = len(array)
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], width)[array.offset : array.offset + n + 1]
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return data, offsets.astype(np.int64)


@dataclass(frozen=True)
class Bloom:
    """A bloom filter: ``HASHES`` bit positions per key among ``8 * len(bits)``."""

    bits: bytes = field(repr=False)
    k: int = HASHES

    @classmethod
    def of(cls, keys: Sequence[str]) -> Bloom:
        """The filter of Python keys."""
        return cls.of_hashes(hash_keys(*utf8(keys)))

    @classmethod
    def of_hashes(cls, hashes: np.ndarray) -> Bloom:
        """The filter of keys given by their :func:`hash_keys`."""
        nbytes = min(MAX_BLOOM_BYTES, max(8, -(-len(hashes) * BITS_PER_KEY // 64) * 8))
        marks = np.zeros(nbytes * 8, np.bool_)
        if len(hashes):
            marks[_positions(hashes, nbytes * 8, HASHES).ravel()] = True
        return cls(np.packbits(marks, bitorder="little").tobytes(), HASHES)

    def may_hold(self, key: str) -> bool:
        """False only when the key is certainly not in the set."""
        return bool(self.check(hash_keys(*utf8([key])))[0])

    def check(self, hashes: np.ndarray) -> np.ndarray:
        """Per hash: whether its key may be in the set."""
        table = np.frombuffer(self.bits, np.uint8)
        pos = _positions(hashes, len(self.bits) * 8, self.k)
        hit = (table[pos >> 3] >> (pos & 7).astype(np.uint8)) & 1
        return hit.all(axis=1)  # type: ignore[no-any-return]


def _positions(hashes: np.ndarray, m: int, k: int) -> np.ndarray:
    """Bit positions ``(h1 + i * h2) mod m`` for ``i < k`` (double hashing), shape (n, k)."""
    h1 = (hashes & np.uint64(0xFFFFFFFF)).astype(np.int64)
    h2 = ((hashes >> np.uint64(32)) | np.uint64(1)).astype(np.int64)
    steps = np.arange(k, dtype=np.int64)
    return (h1[:, None] + steps[None, :] * h2[:, None]) % m  # < 2**32 * 17: no overflow


@dataclass(frozen=True)
class KeySummary:
    """What a lookup needs to know of one data file without reading it.

    Attributes:
        size: The data file's size (a summary applies only to a file of this size).
        rows: Its row count.
        lo, hi: Its first and last key (its keys are sorted and unique).
        top: The highest ``seq`` of its rows (a write's rows take its slot instead).
        bloom: The bloom filter of its keys.
        groups: Per row group: ``(first key, start, end)``, the byte range holding every
            column chunk of the group.
    """

    size: int
    rows: int
    lo: str
    hi: str
    top: int
    bloom: Bloom
    groups: tuple[tuple[str, int, int], ...]

    def pack(self) -> dict[str, Any]:
        """As a msgpack-able map."""
        return {"z": self.size, "n": self.rows, "a": self.lo, "b": self.hi, "t": self.top,
                "k": self.bloom.k, "f": self.bloom.bits,
                "g": [list(g) for g in self.groups]}  # fmt: skip

    @classmethod
    def unpack(cls, item: Any) -> KeySummary:
        """Read and check a summary; :class:`SerializationError` if anything is off."""
        try:
            size, rows, lo, hi, top = item["z"], item["n"], item["a"], item["b"], item["t"]
            k, bits, groups = item["k"], item["f"], item["g"]
            ok = (
                _ints(size, rows, top)
                and isinstance(lo, str)
                and isinstance(hi, str)
                and isinstance(k, int)
                and 1 <= k <= 32
                and isinstance(bits, bytes)
                and 8 <= len(bits) <= MAX_BLOOM_BYTES
                and isinstance(groups, list)
                and 1 <= len(groups) <= min(_MAX_ROW_GROUPS, max(1, rows))
                and rows >= 1
                and lo <= hi
            )
            if not ok:
                raise ValueError("field types or bounds")
            checked: list[tuple[str, int, int]] = []
            for group in groups:
                first, start, end = group
                if not (isinstance(first, str) and _ints(start, end) and start < end <= size):
                    raise ValueError("row group")
                if checked and (first <= checked[-1][0] or start < checked[-1][2]):
                    raise ValueError("row groups out of order")
                checked.append((first, start, end))
            if checked[0][0] != lo or checked[-1][0] > hi:
                raise ValueError("key range")
        except (TypeError, ValueError, KeyError) as err:
            raise SerializationError(f"archive key summary: {err}") from None
        return cls(size, rows, lo, hi, top, Bloom(bits, k), tuple(checked))

    def group_of(self, key: str) -> int:
        """The row group that would hold ``key`` (keys are sorted)."""
        firsts = [g[0] for g in self.groups]
        return max(0, bisect.bisect_right(firsts, key) - 1)


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_INT
               for v in values)  # fmt: skip


def summarize(keys: Any, metadata: Any, size: int, top: int) -> KeySummary | None:
    """The summary of a data file from its sorted key column (Arrow) or key list and its
    Parquet footer; ``None`` when its keys are not sorted and unique (written by someone
    else) or the summary would be too large."""
    from .format import chunk_range

    if isinstance(keys, list):
        data, offsets = utf8(keys)
        listed = keys
    else:
        data, offsets = arrow_utf8(keys)
        listed = None
    n = len(offsets) - 1
    if n < 1 or metadata.num_row_groups < 1 or metadata.num_rows != n:
        return None
    first_rows = np.concatenate(
        [[0], np.cumsum([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])]
    )[:-1]

    def key_at(row: int) -> str:
        if listed is not None:
            return listed[row]
        return bytes(data[offsets[row] : offsets[row + 1]]).decode("utf-8")

    groups = []
    ncols = metadata.num_columns
    for rg in range(metadata.num_row_groups):
        if metadata.row_group(rg).num_rows < 1:
            return None
        spans = [chunk_range(metadata, rg, c) for c in range(ncols)]
        groups.append((key_at(int(first_rows[rg])), min(s for s, _ in spans),
                       max(e for _, e in spans)))  # fmt: skip
    if listed is not None:
        ordered = all(a < b for a, b in itertools.pairwise(listed))
    else:
        import pyarrow.compute as pc

        column = keys.combine_chunks() if hasattr(keys, "combine_chunks") else keys
        ordered = n < 2 or bool(pc.all(pc.less(column[:-1], column[1:])).as_py())
    if not ordered:
        return None
    summary = KeySummary(size, n, key_at(0), key_at(n - 1), top,
                         Bloom.of_hashes(hash_keys(data, offsets)), tuple(groups))  # fmt: skip
    if len(summary.bloom.bits) + sum(len(g[0]) + 24 for g in groups) > MAX_SUMMARY_BYTES:
        return None
    return summary


def summary_of(item: Any, size: int) -> KeySummary | None:
    """A summary read from a claim or a manifest, if it is sound and describes a file of
    ``size`` bytes; ``None`` otherwise (the file is then read whole)."""
    if item is None:
        return None
    try:
        summary = KeySummary.unpack(item)
    except SerializationError:
        return None
    return summary if summary.size == size else None


# -- manifests ---------------------------------------------------------------------------
def manifest_name(slot: int) -> str:
    """The object name of the manifest of ``slot`` (zero-padded: listed in slot order)."""
    return f"{slot:019d}.msgpack"


def parse_manifest_name(name: str) -> int | None:
    """The slot of a manifest name, ``None`` for anything else."""
    found = _MANIFEST_NAME.match(name)
    return int(found.group(1)) if found else None


@dataclass
class Manifest:
    """The commit log compacted up to slot ``gen`` plus the summaries of the files.

    Attributes:
        gen: The slot it describes the state at.
        nonce: The nonce of the claim at ``gen`` (ties the manifest to that history).
        floor: The slot its claims start above (the base checkpoint's, or the highest
            ``seq`` of the files from before the log).
        base: The newest checkpoint at or below ``gen`` (``None``: none yet).
        claims: The write claims above ``floor`` up to ``gen``, dense.
        summaries: Key summaries by data file path (relative to the namespace folder).
        legacy: With no checkpoint yet: the files from before the log (``{path: size}``),
            which count by being listed (a reader that lists only the log uses these).
    """

    gen: int
    nonce: str
    floor: int
    base: Claim | None
    claims: list[Claim]
    summaries: dict[str, Any] = field(default_factory=dict)
    legacy: dict[str, int] = field(default_factory=dict)

    def pack(self) -> bytes:
        """The manifest's bytes."""
        base = None
        if self.base is not None:
            b = self.base
            base = [b.slot, b.nonce, [e.pack() for e in b.files or ()], list(b.drop),
                    list(b.prev)]  # fmt: skip
        body = {
            "v": 1,
            "g": self.gen,
            "n": self.nonce,
            "l": self.floor,
            "b": base,
            "c": [[c.slot, c.nonce, c.entry.pack()] for c in self.claims if c.entry],
            "s": self.summaries,
            "lg": [[path, size] for path, size in sorted(self.legacy.items())],
        }
        return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def unpack(cls, gen: int, blob: bytes) -> Manifest:
        """Read and check a manifest (its summaries are checked when used);
        :class:`SerializationError` naming it if it is not one of ours."""
        if len(blob) > MAX_MANIFEST_BYTES:
            raise SerializationError(f"archive index manifest {gen}: {len(blob)} bytes")
        try:
            body = msgpack.unpackb(blob, raw=False, strict_map_key=True)
            if body.get("v") != 1 or body.get("g") != gen:
                raise ValueError("version or slot")
            nonce, floor = body["n"], body["l"]
            if not (isinstance(nonce, str) and _ints(floor) and floor <= gen):
                raise ValueError("nonce or floor")
            base = None
            if body["b"] is not None:
                slot, bnonce, files, drop, prev = body["b"]
                if not (_ints(slot, prev[0]) and slot == floor and isinstance(bnonce, str)):
                    raise ValueError("base")
                base = Claim(slot, bnonce, files=tuple(_entry(e) for e in files),
                             drop=tuple(_path(p) for p in drop),
                             prev=(prev[0], str(prev[1])))  # fmt: skip
            claims = []
            for slot, cnonce, entry in body["c"]:
                if not (_ints(slot) and isinstance(cnonce, str)):
                    raise ValueError("claim")
                claims.append(Claim(slot, cnonce, entry=_entry(entry)))
            if [c.slot for c in claims] != list(range(floor + 1, gen + 1)):
                raise ValueError("claims are not the dense run up to its slot")
            if floor == gen and (base is None or nonce != base.nonce):
                raise ValueError("a manifest at a checkpoint names it")
            summaries = body["s"]
            if not isinstance(summaries, dict):
                raise ValueError("summaries")
            legacy = {}
            for path, size in body.get("lg", ()):
                if not _ints(size):
                    raise ValueError("legacy file")
                legacy[_path(path)] = size
            if legacy and base is not None:
                raise ValueError("files from before the log count only until a checkpoint")
        except SerializationError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError,
                msgpack.UnpackException) as err:  # fmt: skip
            raise SerializationError(
                f"archive index manifest {gen}: not written by prefect-memory ({err})"
            ) from None
        return cls(gen, nonce, floor, base, claims, summaries, legacy)

    def verified(self, found: Mapping[int, Claim]) -> bool:
        """Whether the log agrees: the claim at ``gen`` is the one it names, or a
        checkpoint above ``gen`` supersedes it (``found``: the claims read at and above
        ``gen``)."""
        if any(c.checkpoint and s > self.gen for s, c in found.items()):
            return True
        at = found.get(self.gen)
        return at is not None and at.nonce == self.nonce


def _entry(item: Any) -> Entry:
    path, size, slot, void = item
    if not (_ints(size, slot) and isinstance(void, list) and all(isinstance(v, str) for v in void)):
        raise ValueError("entry")
    return Entry(_path(path), size, slot, tuple(void))


def _path(path: Any) -> str:
    """A data file path relative to the namespace folder, checked (no way out of it)."""
    if not (isinstance(path, str) and path.startswith("date=") and path.endswith(".parquet")):
        raise ValueError("path")
    if ".." in path.split("/") or "\\" in path or len(path) > 1024:
        raise ValueError("path")
    return path


def manifest_due(gen: int, manifest_gen: int, written_since: int, manifest_bytes: int) -> bool:
    """Whether a writer that just claimed slot ``gen`` writes a new manifest: every 4
    writes, slowed down for a large manifest (not before the data written since is half
    its size) but at least every 64 writes.

    Example:
        >>> manifest_due(10, 6, 1 << 20, 100_000), manifest_due(10, 7, 1 << 20, 100_000)
        (True, False)
        >>> manifest_due(100, 90, 1 << 20, 10 << 20), manifest_due(100, 30, 0, 10 << 20)
        (False, True)
    """
    since = gen - manifest_gen
    if since >= 64:
        return True
    return since >= 4 and 2 * written_since >= manifest_bytes

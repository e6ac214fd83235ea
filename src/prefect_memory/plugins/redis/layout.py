"""Key layouts of the Redis backend, the per-namespace layout record, and the upgrade 1 -> 2.

``P`` = ``key_prefix``, ``N`` = :func:`~prefect_memory.keys.ns_token` of the namespace.

- Layout 1 (the default, the only one before): every key of a namespace is ``P:{N}:...``;
  the hash tag ``{N}`` puts the whole namespace in one Cluster slot, so on one node.
- Layout 2: a namespace spread over ``B`` buckets, bucket ``i`` being the keys
  ``P:{N:i}:...`` (or ``P:{N:i:s}:...``); a key's bucket is ``crc32(key) mod B``. The tag of
  bucket ``i`` is chosen (the smallest suffix ``s``) so that its slot lies in stripe
  ``(i + crc32(N)) mod B`` of ``B`` equal stripes of the 16384 slots (the offset keeps one
  key name used in many namespaces off a single node): the buckets spread evenly over the slot
  range, so over the primaries of a Cluster whose slots are spread evenly (what
  ``redis-cli --cluster create`` and ``rebalance`` do), whatever the namespace.
- The layout record ``P:{N}:layout``, a hash ``{v, b}``: absent for layout 1 (a store
  written by an earlier release has none); ``v="2"`` and ``b=B`` for layout 2;
  ``v="1>2"`` while :func:`upgrade` moves the namespace. It lives in the slot of layout 1,
  so the layout-1 scripts check it atomically, and a layout-2 client reads it once per
  namespace.

Example:
    >>> spread = Spread("pm", "sessions", 16)
    >>> len(spread.bases), spread.bases[0].startswith("pm:{sessions:0")
    (16, True)
    >>> from redis.crc import key_slot
    >>> sorted(key_slot(b.encode()) * 16 // 16384 for b in spread.bases) == list(range(16))
    True
    >>> spread.bucket("user:7") == spread.bucket("user:7")
    True
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
from redis.crc import key_slot

from ...errors import ConfigError, SerializationError
from ...keys import ns_token
from .scripts import CLAIM, MOVE_IN

if TYPE_CHECKING:  # pragma: no cover
    from .backend import RedisBackend

#: Layouts this release reads and writes.
LAYOUTS = (1, 2)
#: Buckets of a new layout-2 namespace when none are asked: 16 spread evenly over the slot
#: range give each of 3 primaries 5 or 6 buckets (31-38% of the keys), of 8 primaries 2.
DEFAULT_BUCKETS = 16
#: Most buckets of one namespace (each costs a script call in the scans of ``tagged``).
MAX_BUCKETS = 1024
#: Suffix of the layout record's key (after ``P:{N}:``).
RECORD = "layout"
#: ``v`` of the record while an upgrade 1 -> 2 is under way.
MOVING = "1>2"
_SLOTS = 16384
_SCAN_COUNT = 1000

_packb = msgpack.Packer(use_bin_type=False).pack


def check_layout(layout: Any, buckets: Any) -> tuple[int, int | None]:
    """``(layout, buckets)`` checked: a layout of :data:`LAYOUTS`, buckets for layout 2 only.

    Raises:
        ConfigError: Either is invalid.

    Example:
        >>> check_layout(2, None), check_layout(2, 64), check_layout(1, None)
        ((2, None), (2, 64), (1, None))
    """
    if isinstance(layout, bool) or layout not in LAYOUTS:
        raise ConfigError(f"layout must be 1 or 2, got {layout!r}")
    if buckets is None:
        return int(layout), None
    if layout != 2:
        raise ConfigError("buckets is an option of layout 2 (add layout=2)")
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        raise ConfigError(f"buckets must be an int from 1 to {MAX_BUCKETS}, got {buckets!r}")
    return 2, buckets


def _bucket_tag(token: str, index: int, count: int) -> str:
    """The hash tag of bucket ``index``: its slot in stripe ``index + crc32(token)`` (mod
    ``count``) of the slots (the offset keeps a key name used in many namespaces, whose
    bucket index is the same in each, off one node)."""
    stripe = (index + zlib.crc32(token.encode())) % count
    tag = f"{token}:{index}"
    salt = 0
    while key_slot(tag.encode()) * count // _SLOTS != stripe:
        salt += 1
        tag = f"{token}:{index}:{salt}"
    return tag


@dataclass
class Spread:
    """The keys of one layout-2 namespace: its ``B`` bucket bases and a key's bucket.

    Args:
        prefix: The backend's ``key_prefix``.
        namespace: The namespace.
        buckets: ``B``, as recorded for the namespace.
    """

    prefix: str
    namespace: str
    buckets: int
    bases: list[str] = field(init=False)
    known: frozenset[bytes] = field(init=False)

    def __post_init__(self) -> None:
        token = ns_token(self.namespace)
        tags = [_bucket_tag(token, i, self.buckets) for i in range(self.buckets)]
        self.bases = [f"{self.prefix}:{{{tag}}}:" for tag in tags]
        self.known = frozenset(base.encode() for base in self.bases)

    def bucket(self, key: str) -> int:
        """The bucket of ``key`` (CRC-32 of its UTF-8 bytes, mod ``B``)."""
        return zlib.crc32(key.encode("utf-8", "surrogateescape")) % self.buckets

    def group(self, keys: Iterable[str]) -> dict[int, list[str]]:
        """``keys`` by bucket, each list in the order given."""
        out: dict[int, list[str]] = {}
        crc, count = zlib.crc32, self.buckets
        for key in keys:
            b = crc(key.encode("utf-8", "surrogateescape")) % count
            found = out.get(b)
            if found is None:
                out[b] = [key]
            else:
                found.append(key)
        return out

    def base_of(self, name: bytes) -> bytes | None:
        """The bucket base a Redis key name starts with, if it is one of this namespace."""
        end = name.find(b"}")
        if end < 0:
            return None
        base = name[: end + 2]
        return base if base in self.known else None

    @property
    def match(self) -> str:
        """A SCAN MATCH prefix covering every bucket (filter the names with :meth:`base_of`)."""
        return f"{self.prefix}:{{{ns_token(self.namespace)}:*}}:"


def record_key(prefix: str, namespace: str) -> str:
    """``P:{N}:layout``: the namespace's layout record (in the slot of layout 1)."""
    return f"{prefix}:{{{ns_token(namespace)}}}:{RECORD}"


def parse_record(key: str, v: Any, b: Any) -> tuple[str | None, int | None]:
    """``(v, b)`` of a layout record as stored, checked: anyone may have written it.

    ``v`` is short ASCII text (an unknown one is refused later, by :func:`refusal`); ``b``
    a bucket count from 1 to :data:`MAX_BUCKETS` (a huge one would make a reader build
    that many buckets).

    Raises:
        SerializationError: The record is not one this release (or a later one) writes.

    Example:
        >>> parse_record("pm:{s}:layout", b"2", b"16"), parse_record("k", None, None)
        (('2', 16), (None, None))
        >>> parse_record("pm:{s}:layout", b"2", b"99999999999")
        Traceback (most recent call last):
        ...
        prefect_memory.errors.SerializationError: the layout record pm:{s}:layout holds ...
    """
    try:
        version = None if v is None else bytes(v).decode("ascii")
        count = None if b is None else int(bytes(b).decode("ascii"))
    except (TypeError, ValueError):
        version, count = "", 0
    if (version is not None and not 0 < len(version) <= 16) or (
        count is not None and not 1 <= count <= MAX_BUCKETS
    ):
        raise SerializationError(
            f"the layout record {key} holds v={bytes(v or b'')[:20]!r}, "
            f"b={bytes(b or b'')[:20]!r}: not a layout record (b from 1 to {MAX_BUCKETS}); "
            "it was not written by prefect-memory: delete it if nothing else owns it"
        )
    return version, count


def read_record(backend: RedisBackend, namespace: str) -> tuple[str | None, int | None]:
    """``(v, b)`` of the namespace's layout record (``(None, None)``: none, layout 1)."""
    key = record_key(backend.key_prefix, namespace)
    v, b = backend.connection.request("HMGET", key, "v", "b", route=key)
    return parse_record(key, v, b)


def refusal(namespace: str, found: str | None, wanted: int, buckets: int | None = None) -> str:
    """Why a client configured for layout ``wanted`` may not use the namespace."""
    ns = repr(namespace)
    if found == MOVING:
        return (
            f"namespace {ns} is being moved to layout 2 by `prefect-memory upgrade`: it "
            "cannot be read or written until the move ends (if that command was stopped, "
            "run it again: it resumes)"
        )
    if found == "2":
        spread = f" over {buckets} buckets" if buckets else ""
        return (
            f"namespace {ns} is stored in layout 2 (spread{spread}, moved there by "
            "`prefect-memory upgrade`): open it with layout=2 (URL option ?layout=2)"
        )
    if wanted == 2:
        return (
            f"namespace {ns} holds entries in layout 1: move them with `prefect-memory "
            f"upgrade <url> --namespace {namespace.split(chr(0), 1)[0]} --to 2` (it moves the "
            "namespace's companions, such as a tiered memory's tombstones, too), or open "
            "it without layout=2"
        )
    return f"namespace {ns} has a layout record this release does not know: v={found!r}"


def _has_layout1_keys(backend: RedisBackend, namespace: str) -> bool:
    """Whether any ``P:{N}:e:*`` or ``P:{N}:t:*`` key exists (once per namespace, ever)."""
    base = f"{backend.key_prefix}:{{{ns_token(namespace)}}}:"
    return any(True for kind in ("e", "t") for _name in _scan(backend, f"{base}{kind}:*", base))


def _scan(backend: RedisBackend, match: str, route: str | None) -> Iterator[bytes]:
    """Redis key names matching ``match`` on the node of ``route`` (a name may repeat)."""
    cursor: bytes | int = 0
    while True:
        cursor, found = backend.connection.request(
            "SCAN", cursor, "MATCH", match, "COUNT", _SCAN_COUNT, route=route
        )
        yield from found
        if int(cursor) == 0:
            return


def open_spread(backend: RedisBackend, namespace: str, buckets: int | None) -> Spread:
    """The :class:`Spread` of a namespace for a layout-2 client, claiming a new namespace.

    A namespace without a record and without layout-1 keys is claimed for layout 2 with
    ``buckets`` (:data:`DEFAULT_BUCKETS` when ``None``); with a record, its recorded
    bucket count is used.

    Raises:
        ConfigError: The namespace is in layout 1 or being moved (see :func:`refusal`).
    """
    v, b = read_record(backend, namespace)
    if v is None:
        if _has_layout1_keys(backend, namespace):
            raise ConfigError(refusal(namespace, None, 2))
        key = record_key(backend.key_prefix, namespace)
        count = buckets or DEFAULT_BUCKETS
        raw_v, raw_b = backend.connection.request(1, key, "2", count, script=CLAIM)
        v, b = parse_record(key, raw_v, raw_b)
    if v != "2" or not b:
        raise ConfigError(refusal(namespace, v, 2, b))
    return Spread(backend.key_prefix, namespace, b)


# -- the upgrade 1 -> 2 ------------------------------------------------------------------------
@dataclass
class UpgradeReport:
    """What :func:`upgrade` did.

    Attributes:
        namespace: The namespace.
        buckets: Its bucket count in layout 2.
        moved: Entries copied to layout 2 and removed from layout 1 by this run.
        expired: Layout-1 entries found expired (removed, not copied).
        tag_indexes: Layout-1 tag indexes removed at the end.
        resumed: Whether this run resumed a move that an earlier run started.
        already: Whether the namespace was in layout 2 already (nothing done).
        seconds: Wall time of the run.
    """

    namespace: str
    buckets: int
    moved: int = 0
    expired: int = 0
    tag_indexes: int = 0
    resumed: bool = False
    already: bool = False
    seconds: float = 0.0


#: ``progress(event, done, total)``: ``"count"`` (total known), ``"copied"`` (a batch is in
#: layout 2, not yet removed from layout 1), ``"moved"`` (removed too), ``"tags"``, ``"done"``.
Progress = Callable[[str, int, int], None]


def upgrade(
    backend: RedisBackend,
    namespace: str,
    *,
    to: int = 2,
    buckets: int | None = None,
    batch: int = 500,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
) -> UpgradeReport:
    """Move a layout-1 namespace to layout 2; run again after a stop, it resumes.

    Steps: (1) the record becomes ``v="1>2", b=B`` (from then on clients of this release
    refuse the namespace with a :class:`~prefect_memory.errors.ConfigError` saying it is
    being moved); (2) batches of layout-1 entries are read (``HGETALL``), written whole
    into their buckets (one script call per bucket, same fields, same expiry, tag indexes
    rebuilt), and only then deleted from layout 1, pass after pass until a pass finds
    none; (3) the layout-1 tag indexes are deleted; (4) the record becomes ``v="2"``.
    Stopped anywhere (killed), a run again finds the record at ``"1>2"`` and goes on:
    an entry copied but not yet deleted is copied again over itself (a key has one place
    in layout 2), so nothing is lost and nothing is duplicated.

    Clients of earlier releases do not read the record: stop them before the move.

    Args:
        backend: A Redis backend of the store (its ``layout`` option does not matter).
        namespace: The namespace to move.
        to: The target layout (2).
        buckets: ``B`` (:data:`DEFAULT_BUCKETS` when ``None``; a resumed move keeps the
            recorded one).
        batch: Entries per batch.
        progress: Called as described at :data:`Progress`.
        clock: The time against which expired entries are left out.

    Raises:
        ConfigError: ``to`` is not 2, ``buckets`` differs from a move under way, or the
            namespace has a record this release does not know.
    """
    if to != 2:
        raise ConfigError(f"prefect-memory upgrade moves layout 1 to layout 2: --to 2, got {to}")
    check_layout(2, buckets)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive int, got {batch!r}")
    started = time.perf_counter()
    notify = progress or (lambda event, done, total: None)
    conn = backend.connection
    key = record_key(backend.key_prefix, namespace)
    v, b = read_record(backend, namespace)
    report = UpgradeReport(namespace, b or buckets or DEFAULT_BUCKETS)
    if v == "2":
        report.already = True
        notify("done", 0, 0)
        return report
    if v == MOVING:
        if buckets is not None and buckets != b:
            raise ConfigError(
                f"namespace {namespace!r} is being moved to {b} buckets already: run the "
                f"upgrade again without --buckets or with --buckets {b}"
            )
        report.resumed = True
    elif v is not None:
        raise ConfigError(refusal(namespace, v, 2))
    else:
        raw_v, raw_b = conn.request(1, key, MOVING, report.buckets, script=CLAIM)
        claimed, claimed_b = parse_record(key, raw_v, raw_b)
        if claimed != MOVING:  # another run finished or started with other buckets
            return upgrade(backend, namespace, buckets=None, batch=batch, progress=progress)
        report.buckets = int(claimed_b or report.buckets)
    spread = Spread(backend.key_prefix, namespace, report.buckets)
    base = f"{backend.key_prefix}:{{{ns_token(namespace)}}}:"
    entries = base + "e:"
    start = len(entries.encode())
    total = sum(1 for _ in set(_scan(backend, entries + "*", base)))
    notify("count", 0, total)
    while True:  # passes until one finds nothing (SCAN may miss what moves under it)
        found = 0
        pending: list[bytes] = []
        seen: set[bytes] = set()
        for name in _scan(backend, entries + "*", base):
            if name in seen:
                continue
            seen.add(name)
            pending.append(name)
            if len(pending) >= batch:
                found += len(pending)
                _move(backend, spread, base, pending, start, report, notify, total, clock)
                pending = []
        if pending:
            found += len(pending)
            _move(backend, spread, base, pending, start, report, notify, total, clock)
        if not found:
            break
    tags = sorted(set(_scan(backend, base + "t:*", base)))
    for i in range(0, len(tags), batch):
        conn.request("DEL", *tags[i : i + batch], route=base)
        report.tag_indexes += len(tags[i : i + batch])
        notify("tags", report.tag_indexes, len(tags))
    conn.request("HSET", key, "v", "2", "b", report.buckets, route=key)
    report.seconds = time.perf_counter() - started
    notify("done", report.moved, total)
    return report


def _move(
    backend: RedisBackend,
    spread: Spread,
    base: str,
    names: list[bytes],
    start: int,
    report: UpgradeReport,
    notify: Progress,
    total: int,
    clock: Callable[[], float],
) -> None:
    """Copy ``names`` (layout-1 entry keys) into their buckets, then delete them."""
    conn = backend.connection
    hashes = conn.request(pipeline=[("HGETALL", name) for name in names], route=base)
    now = clock()
    by_bucket: dict[int, list[Any]] = {}
    copied = 0
    for name, flat in zip(names, hashes, strict=True):
        if not flat:  # gone since the scan (expired)
            continue
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        x = fields.get(b"x") or b""
        try:
            expiry = float(x) if x else None
        except ValueError:
            expiry = None
        if expiry is not None and not math.isfinite(expiry):
            expiry = None  # a spoiled expiry: copied without one rather than dropped
        if expiry is None:
            x = b""
        elif expiry <= now:
            report.expired += 1
            continue
        try:
            tags = [str(t) for t in msgpack.unpackb(fields[b"m"])[4]]
        except Exception:  # an entry another writer spoiled: copied as it is, untagged
            tags = []
        raw_key = name[start:]
        key = raw_key.decode("utf-8", "surrogateescape")
        by_bucket.setdefault(spread.bucket(key), []).append([raw_key, flat, x, tags])
        copied += 1
    calls = [
        (spread.bases[i], MOVE_IN, (1, spread.bases[i], now, _packb(items)), None)
        for i, items in by_bucket.items()
    ]
    conn.fan_out(calls, wait=conn.wait)
    notify("copied", report.moved + copied, total)
    for i in range(0, len(names), 1000):
        conn.request("DEL", *names[i : i + 1000], route=base)
    report.moved += copied
    notify("moved", report.moved, total)


__all__ = [
    "DEFAULT_BUCKETS",
    "LAYOUTS",
    "MAX_BUCKETS",
    "MOVING",
    "Spread",
    "UpgradeReport",
    "check_layout",
    "open_spread",
    "read_record",
    "record_key",
    "refusal",
    "upgrade",
]

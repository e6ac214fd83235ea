"""A durable local journal of pending writes (SQLite, one transaction per batch).

A hybrid memory appends a write here *before* answering the caller when a store has not
got it yet, so a crash or restart loses nothing: the next process replays what was not
applied. Each entry belongs to a *lane*, the store it is pending for:

- ``"secondary"``: write-behind writes waiting for the secondary (the durable store);
- ``"primary"``: writes that could not reach the primary (down, timed out, breaker open),
  replayed to it when it returns.

Order per key is the journal order (``seq``, shared by both lanes); a batch is coalesced
to the last operation per key. Every entry carries ``at``, the time of the write (the
record's ``updated_at``, or the time of a delete), so a replay can leave alone a store
that already holds a newer write.

The journal also keeps the *keys in doubt* of each lane (:class:`Doubt`): keys whose write
to the store failed in a way that may still land late, with the last write that reached
the store since, rechecked when due (see :meth:`.pending.Lanes.recheck`).

How durable a commit is, is the journal's ``sync`` (SQLite WAL in both cases):

- ``"full"`` (the default): ``synchronous=FULL``, one fsync per commit. Once
  :meth:`Journal.append` returns, the entry survives a crash of the process (``kill -9``)
  and a crash or power loss of the machine (as far as the disk honours fsync).
- ``"normal"``: ``synchronous=NORMAL``, no fsync per commit (the write-ahead log is
  fsynced at checkpoints, every 1,000 pages of log: a few hundred single writes). Once
  :meth:`Journal.append` returns, the entry is in the operating system's file cache: it
  survives a crash of the process (``kill -9``), but the entries written since the last
  checkpoint may be lost if the machine crashes or loses power. The journal stays
  consistent either way (an entry is there whole or not at all).

The file is created on the first append, not before.

Example:
    >>> import tempfile, os
    >>> from prefect_memory.plugins.base import Record
    >>> journal = Journal(os.path.join(tempfile.mkdtemp(), "j.db"))
    >>> journal.backlog(), journal.exists()
    (0, False)
    >>> _ = journal.append("ns", puts={"k": Record(b"v", 1.0, 1.0, 1.0)})
    >>> _ = journal.append("ns", deletes=["k"], at=2.0, lanes=("primary",))
    >>> journal.backlog(), journal.backlog("primary")
    (2, 1)
    >>> [(e.op, e.key, e.lane) for e in journal.pending(10)]
    [('put', 'k', 'secondary')]
    >>> journal.latest("ns", ["k"])["k"].op
    'del'
    >>> Journal(os.path.join(tempfile.mkdtemp(), "j.db"), sync="normal")
    Journal(..., sync='normal')
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import msgpack

from ..errors import BackendUnavailable, ConfigError
from ..plugins.base import Record
from ..plugins.sqlite_wal import connect_wal

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process locking only
    fcntl = None  # type: ignore[assignment]

PRIMARY = "primary"
SECONDARY = "secondary"
LANES = (PRIMARY, SECONDARY)
#: The values of a journal's ``sync``: its SQLite ``synchronous`` setting (see above).
JOURNAL_SYNCS = ("full", "normal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pm_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ns TEXT NOT NULL, key TEXT NOT NULL, op TEXT NOT NULL, record BLOB
);
"""
_DOUBTS = """
CREATE TABLE IF NOT EXISTS pm_doubt (
    lane TEXT NOT NULL, ns TEXT NOT NULL, key TEXT NOT NULL,
    op TEXT NOT NULL, record BLOB, at REAL NOT NULL, due REAL NOT NULL,
    PRIMARY KEY (lane, ns, key)
);
CREATE INDEX IF NOT EXISTS pm_doubt_due ON pm_doubt (lane, due);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS pm_journal_key ON pm_journal (ns, key, seq);
CREATE INDEX IF NOT EXISTS pm_journal_lane ON pm_journal (lane, seq);
"""
#: Columns added after the first release (journals written by it are upgraded in place).
_ADDED_COLUMNS = {
    "lane": f"TEXT NOT NULL DEFAULT '{SECONDARY}'",
    "at": "REAL",
}


class Entry(NamedTuple):
    """One journaled operation (``record`` is ``None`` for a delete)."""

    seq: int
    ns: str
    key: str
    op: str
    record: Record | None
    at: float
    lane: str


def _setup(conn: sqlite3.Connection) -> None:
    """Create the tables, upgrading a journal written by an earlier release in place."""
    conn.executescript(_SCHEMA)
    have = {row[1] for row in conn.execute("PRAGMA table_info(pm_journal)")}
    for name, decl in _ADDED_COLUMNS.items():
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE pm_journal ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError as err:
                if "duplicate column" not in str(err):  # (else: a racing upgrade did it)
                    raise
    conn.executescript(_INDEXES)
    conn.executescript(_DOUBTS)


class Doubt(NamedTuple):
    """A key whose write to a store failed in a way that may still land (late).

    ``op``/``record``/``at`` are the last write that reached the store after the failure
    (``op == "?"``: none yet); ``due`` is when the store is checked against it.
    """

    lane: str
    ns: str
    key: str
    op: str
    record: Record | None
    at: float
    due: float


def pack_record(record: Record) -> bytes:
    """Serialize a record (without its tier) for the journal."""
    return msgpack.packb(
        [
            record.value,
            record.created_at,
            record.updated_at,
            record.last_access,
            record.access_count,
            record.expires_at,
            record.ttl,
            record.sliding,
            list(record.tags),
            record.version,
        ],
        use_bin_type=True,
    )


def unpack_record(data: bytes) -> Record:
    """Inverse of :func:`pack_record`."""
    v, c, u, a, n, x, ttl, s, g, r = msgpack.unpackb(data, raw=False)
    return Record(v, c, u, a, n, x, ttl, s, tuple(g), r)


def _entry(row: tuple[Any, ...]) -> Entry:
    seq, ns, key, op, blob, at, lane = row
    record = unpack_record(blob) if blob is not None else None
    if at is None:  # written before ``at`` existed
        at = record.updated_at if record is not None else 0.0
    return Entry(seq, ns, key, op, record, at, lane)


_COLUMNS = "seq, ns, key, op, record, at, lane"
_INSERT_HEAD = "INSERT INTO pm_journal (ns, key, op, record, at, lane)"
_INSERT = f"{_INSERT_HEAD} VALUES (?, ?, ?, ?, ?, ?)"
#: Rows per multi-row INSERT ... RETURNING (6 parameters each: within SQLite's oldest
#: default bound of 999 parameters per statement).
_INSERT_CHUNK = 150
#: Multi-row INSERT ... RETURNING needs SQLite 3.35; older libraries insert row by row.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[int]:
    """Insert journal ``rows`` (inside the caller's transaction); their sequence numbers.

    One statement per :data:`_INSERT_CHUNK` rows instead of one per row: the rows of a
    statement are inserted in their order, so their ``seq`` ascend as before.
    """
    if not _RETURNING:
        return [int(conn.execute(_INSERT, row).lastrowid or 0) for row in rows]
    seqs: list[int] = []
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        marks = ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        sql = f"{_INSERT_HEAD} VALUES {marks} RETURNING seq"
        seqs += [row[0] for row in conn.execute(sql, [item for row in chunk for item in row])]
    seqs.sort()
    return seqs


#: Whether a lane (given twice) has queued writes or keys in doubt, as one expression.
_BUSY = (
    "(EXISTS (SELECT 1 FROM pm_journal WHERE lane = ?) "
    "OR EXISTS (SELECT 1 FROM pm_doubt WHERE lane = ?))"
)


def check_sync(sync: object, name: str = "sync") -> str:
    """``sync`` if it is one of :data:`JOURNAL_SYNCS`, else :class:`ConfigError` naming ``name``.

    Example:
        >>> check_sync("normal")
        'normal'
        >>> check_sync("off", "journal_sync")
        Traceback (most recent call last):
        ...
        prefect_memory.errors.ConfigError: journal_sync must be 'full' or 'normal', got 'off'
    """
    if not isinstance(sync, str) or sync not in JOURNAL_SYNCS:
        raise ConfigError(f"{name} must be 'full' or 'normal', got {sync!r}")
    return sync


class Journal:
    """Pending writes in a SQLite file (safe across threads and processes of one machine).

    Args:
        path: The SQLite file (created, with its folder, on the first append).
        sync: ``"full"`` (fsync per commit: an acknowledged entry survives a crash of the
            machine) or ``"normal"`` (no fsync per commit: it survives a crash of the
            process, not of the machine); see the module docstring.

    Raises:
        ConfigError: ``sync`` is not one of :data:`JOURNAL_SYNCS`.
    """

    def __init__(self, path: str, sync: str = "full") -> None:
        self.path = path
        self.sync = check_sync(sync)
        self._local = threading.local()
        self._flush_locks = {lane: threading.Lock() for lane in LANES}
        self._lock_files: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "sync": self.sync}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # pickles made before ``sync`` existed had the fsync of "full"
        self.__init__(state["path"], state.get("sync", "full"))  # type: ignore[misc]

    def __repr__(self) -> str:
        if self.sync == "full":
            return f"Journal({self.path!r})"
        return f"Journal({self.path!r}, sync={self.sync!r})"

    def exists(self) -> bool:
        """Tell whether the journal file exists (it is created on the first append)."""
        return getattr(self._local, "conn", None) is not None or os.path.exists(self.path)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                conn = connect_wal(
                    self.path, timeout=30, synchronous=self.sync.upper(), setup=_setup
                )
            except (sqlite3.Error, OSError) as err:
                raise BackendUnavailable(f"cannot open the journal {self.path!r}: {err}") from err
            self._local.conn = conn
        return conn

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.exists():
            return []
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise BackendUnavailable(f"journal {self.path!r}: {err}") from err

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise BackendUnavailable(f"journal {self.path!r}: {err}") from err
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as err:  # disk full, I/O error: nothing was recorded
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise BackendUnavailable(f"journal {self.path!r}: {err}") from err

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run ``sql`` for each of ``rows`` in one transaction (nothing for no rows)."""
        if not rows:
            return
        try:
            with self._tx() as conn:
                conn.executemany(sql, rows)
        except sqlite3.Error as err:
            raise BackendUnavailable(f"journal {self.path!r}: {err}") from err

    # -- writing --------------------------------------------------------------------------
    @staticmethod
    def _rows(
        ns: str,
        puts: Mapping[str, Record] | None,
        deletes: Iterable[str],
        at: float | None,
        lanes: Iterable[str],
    ) -> list[tuple[Any, ...]]:
        """The journal rows of a write for each of ``lanes``."""
        when = time.time() if at is None else at
        deletes = list(deletes)
        rows: list[tuple[Any, ...]] = []
        for lane in lanes:
            for key, record in (puts or {}).items():
                rows.append((ns, key, "put", pack_record(record), record.updated_at, lane))
            rows += [(ns, k, "del", None, when, lane) for k in deletes]
        return rows

    def append(
        self,
        ns: str,
        *,
        puts: Mapping[str, Record] | None = None,
        deletes: Iterable[str] = (),
        at: float | None = None,
        lanes: Iterable[str] = (SECONDARY,),
    ) -> list[int]:
        """Durably record writes for each of ``lanes``; return their sequence numbers.

        ``at`` is the time of the deletes (puts carry their ``updated_at``). Everything is
        committed in one transaction before this returns, as durably as :attr:`sync` says.

        Raises:
            BackendUnavailable: The journal cannot be written (disk full, I/O error).
        """
        rows = self._rows(ns, puts, deletes, at, lanes)
        if not rows:
            return []
        if _RETURNING and len(rows) <= _INSERT_CHUNK:
            return self._insert_alone(rows, None)[0]
        seqs: list[int] = []
        try:
            with self._tx() as conn:
                seqs = _insert(conn, rows)
        except sqlite3.Error as err:
            raise BackendUnavailable(f"journal {self.path!r}: {err}") from err
        return seqs

    def _insert_alone(
        self, rows: list[tuple[Any, ...]], check: str | None
    ) -> tuple[list[int], bool]:
        """Insert up to :data:`_INSERT_CHUNK` ``rows`` in one statement that is its own
        transaction (autocommit: no BEGIN and COMMIT through the driver, a commit fewer
        per write); with ``check``, tell whether that lane is :meth:`busy`, from a
        subquery of RETURNING (on the same snapshot, in the same transaction). A commit
        that fails raises from ``fetchall``: nothing is recorded."""
        marks = ",".join(["(?, ?, ?, ?, ?, ?)"] * len(rows))
        tail = "" if check is None else f", {_BUSY}"
        sql = f"{_INSERT_HEAD} VALUES {marks} RETURNING seq{tail}"
        args = [item for row in rows for item in row]
        if check is not None:
            args += (check, check)
        try:
            got = self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise BackendUnavailable(f"journal {self.path!r}: {err}") from err
        return sorted(row[0] for row in got), check is not None and bool(got[0][1])

    def append_checked(
        self,
        ns: str,
        *,
        puts: Mapping[str, Record] | None = None,
        deletes: Iterable[str] = (),
        at: float | None = None,
        check: str = PRIMARY,
    ) -> tuple[list[int], bool]:
        """:meth:`append` to the secondary lane, and tell in the same transaction whether
        ``check`` is :meth:`busy` (one transaction instead of a write and a read).

        Raises:
            BackendUnavailable: The journal cannot be written (disk full, I/O error).
        """
        rows = self._rows(ns, puts, deletes, at, (SECONDARY,))
        if _RETURNING and 0 < len(rows) <= _INSERT_CHUNK:
            return self._insert_alone(rows, check)
        try:
            with self._tx() as conn:
                seqs = _insert(conn, rows)
                busy = conn.execute(f"SELECT {_BUSY}", (check, check)).fetchone()
        except sqlite3.Error as err:
            raise BackendUnavailable(f"journal {self.path!r}: {err}") from err
        return seqs, bool(busy and busy[0])

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget entries once they are applied."""
        self._many("DELETE FROM pm_journal WHERE seq = ?", [(seq,) for seq in seqs])

    # -- reading --------------------------------------------------------------------------
    def pending(self, limit: int, lane: str = SECONDARY) -> list[Entry]:
        """The oldest ``limit`` entries of ``lane``, in order."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM pm_journal WHERE lane = ? ORDER BY seq LIMIT ?", (lane, limit)
        )
        return [_entry(row) for row in rows]

    def pending_for(self, ns: str, keys: Iterable[str], lane: str) -> list[Entry]:
        """Every entry of ``lane`` for ``keys``, in order."""
        keys = list(keys)
        out: list[Entry] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT {_COLUMNS} FROM pm_journal WHERE lane = ? AND ns = ? "
                f"AND key IN ({marks}) ORDER BY seq",
                (lane, ns, *chunk),
            )
            out += [_entry(row) for row in rows]
        return sorted(out) if len(keys) > 500 else out

    def latest(self, ns: str, keys: Iterable[str]) -> dict[str, Entry]:
        """The last journaled operation per key, over every lane; absent when none."""
        keys = list(keys)
        out: dict[str, Entry] = {}
        if not keys or not self.exists():
            return out
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT {_COLUMNS} FROM pm_journal WHERE ns = ? AND key IN ({marks}) ORDER BY seq",
                (ns, *chunk),
            )
            for row in rows:
                out[row[2]] = _entry(row)
        return out

    def keys(self, ns: str) -> dict[str, bool]:
        """Keys with a pending operation: ``True`` when the last one is a put."""
        rows = self._read("SELECT key, op FROM pm_journal WHERE ns = ? ORDER BY seq", (ns,))
        return {key: op == "put" for key, op in rows}

    def has_pending(self, lane: str) -> bool:
        """Tell whether ``lane`` has entries (cheap: one indexed lookup)."""
        rows = self._read("SELECT EXISTS (SELECT 1 FROM pm_journal WHERE lane = ?)", (lane,))
        return bool(rows and rows[0][0])

    def backlog(self, lane: str | None = None) -> int:
        """Entries not yet applied (in ``lane``, or in all lanes)."""
        if lane is None:
            rows = self._read("SELECT count(*) FROM pm_journal")
        else:
            rows = self._read("SELECT count(*) FROM pm_journal WHERE lane = ?", (lane,))
        return int(rows[0][0]) if rows else 0

    # -- writes in doubt ------------------------------------------------------------------
    def doubt(self, lane: str, ns: str, keys: Iterable[str], *, due: float) -> None:
        """Record that a write of ``keys`` to ``lane``'s store may land late: check at ``due``.

        The write that failed is not what the store must hold (it was not acknowledged,
        or it is still queued); the writes that reach the store after it are
        (:meth:`written`).
        """
        rows = [(lane, ns, key, due) for key in keys]
        self._many(
            "INSERT INTO pm_doubt (lane, ns, key, op, record, at, due) "
            "VALUES (?, ?, ?, '?', NULL, 0, ?) ON CONFLICT (lane, ns, key) "
            "DO UPDATE SET due = max(due, excluded.due)",
            rows,
        )

    def written(
        self, lane: str, ns: str, writes: Iterable[tuple[str, Record | None, float]]
    ) -> None:
        """``(key, record or None for a delete, at)`` reached ``lane``'s store.

        For keys in doubt they are what the store must hold when checked.
        """
        rows = [
            ("put", pack_record(r), r.updated_at, lane, ns, k)
            if r is not None
            else ("del", None, at, lane, ns, k)
            for k, r, at in writes
        ]
        self._many(
            "UPDATE pm_doubt SET op = ?, record = ?, at = ? WHERE lane = ? AND ns = ? AND key = ?",
            rows,
        )

    def has_doubts(self, lane: str) -> bool:
        """Tell whether ``lane`` has keys in doubt (cheap: one indexed lookup)."""
        rows = self._read("SELECT EXISTS (SELECT 1 FROM pm_doubt WHERE lane = ?)", (lane,))
        return bool(rows and rows[0][0])

    def busy(self, lane: str) -> bool:
        """Tell whether ``lane`` has queued writes or keys in doubt (one query)."""
        rows = self._read(f"SELECT {_BUSY}", (lane, lane))
        return bool(rows and rows[0][0])

    def busy_lanes(self) -> frozenset[str]:
        """The lanes that are :meth:`busy` (one query; none while there is no journal file)."""
        rows = self._read(f"SELECT {_BUSY}, {_BUSY}", tuple(ln for ln in LANES for _ in "ab"))
        if not rows:
            return frozenset()
        return frozenset(lane for lane, busy in zip(LANES, rows[0], strict=True) if busy)

    def in_doubt(self, lane: str | None = None) -> int:
        """Keys in doubt (in ``lane``, or in all lanes)."""
        if lane is None:
            rows = self._read("SELECT count(*) FROM pm_doubt")
        else:
            rows = self._read("SELECT count(*) FROM pm_doubt WHERE lane = ?", (lane,))
        return int(rows[0][0]) if rows else 0

    def next_due(self, lane: str | None = None) -> float | None:
        """When the next key in doubt is checked (``None``: none is)."""
        if lane is None:
            rows = self._read("SELECT min(due) FROM pm_doubt")
        else:
            rows = self._read("SELECT min(due) FROM pm_doubt WHERE lane = ?", (lane,))
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def due_doubts(self, lane: str, now: float, limit: int) -> list[Doubt]:
        """Up to ``limit`` keys of ``lane`` whose check is due at ``now``."""
        rows = self._read(
            "SELECT lane, ns, key, op, record, at, due FROM pm_doubt "
            "WHERE lane = ? AND due <= ? ORDER BY due LIMIT ?",
            (lane, now, limit),
        )
        return [
            Doubt(ln, ns, k, op, unpack_record(blob) if blob is not None else None, at, due)
            for ln, ns, k, op, blob, at, due in rows
        ]

    def resolve(self, doubts: Iterable[Doubt]) -> None:
        """Forget checked doubts (unless a newer write or failure changed them meanwhile)."""
        rows = [(d.lane, d.ns, d.key, d.op, d.at, d.due) for d in doubts]
        self._many(
            "DELETE FROM pm_doubt WHERE lane = ? AND ns = ? AND key = ? "
            "AND op = ? AND at = ? AND due = ?",
            rows,
        )

    # -- one flusher per lane -------------------------------------------------------------
    @contextlib.contextmanager
    def flush_lock(self, lane: str, timeout: float = 0.0) -> Iterator[bool]:
        """Hold the right to apply ``lane`` (one flusher per lane across processes).

        Yields ``False`` when another thread or process holds it for longer than
        ``timeout`` seconds; two flushers applying the same entries in another order
        could leave an older value last.
        """
        deadline = time.monotonic() + timeout
        local = self._flush_locks[lane]
        if not local.acquire(timeout=max(timeout, 0.0)):
            yield False
            return
        try:
            handle = self._lock_file(lane)
            while handle is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.01)
            try:
                yield True
            finally:
                if handle is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            local.release()

    def _lock_file(self, lane: str) -> Any:
        if fcntl is None:
            return None
        handle = self._lock_files.get(lane)
        if handle is None:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                handle = open(f"{self.path}.{lane}.lock", "a+b")  # noqa: SIM115 - kept open
            except OSError as err:
                raise BackendUnavailable(f"journal lock {self.path!r}: {err}") from err
            self._lock_files[lane] = handle
        return handle


__all__ = [
    "JOURNAL_SYNCS",
    "LANES",
    "PRIMARY",
    "SECONDARY",
    "Doubt",
    "Entry",
    "Journal",
    "check_sync",
    "pack_record",
    "unpack_record",
]

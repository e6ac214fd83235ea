"""SQLite backend (``sqlite:///path.db``): the embedded, durable default.

One table of entries keyed by (namespace, key) plus a tag index. WAL journal, one
connection per thread, upserts and ``IN (...)`` batches, so a batch is one transaction.

Example:
    >>> import tempfile, os
    >>> from prefect_memory.plugins.sqlite import SqliteBackend
    >>> path = os.path.join(tempfile.mkdtemp(), "m.db")
    >>> SqliteBackend.from_url("sqlite:///" + path).path == path
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import BackendError, BackendUnavailable, ConfigError, SerializationError
from ..keys import glob_match, literal_prefix
from .base import Backend, Capabilities, EntryColumns, Record, StoreUsage
from .local_paths import local_path_from_url
from .sqlite_wal import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pm_entries (
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, last_access REAL NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0, expires_at REAL, ttl REAL,
    sliding INTEGER NOT NULL DEFAULT 0, tags TEXT NOT NULL DEFAULT '[]',
    version INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pm_tags (
    ns TEXT NOT NULL, tag TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (ns, tag, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pm_entries_expiry ON pm_entries (ns, expires_at);
CREATE INDEX IF NOT EXISTS pm_tags_key ON pm_tags (ns, key);
"""

_COLUMNS = (
    "key, value, created_at, updated_at, last_access, access_count, expires_at, ttl, sliding, "
    "tags, version"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
#: A batch of :meth:`SqliteBackend.scan_columns`: the value only when small enough.
_SCAN_COLUMNS = (
    "key, CASE WHEN length(value) <= ? THEN value END, length(value), created_at, updated_at, "
    "last_access, access_count, expires_at, ttl, sliding, tags, version"
)

_INSERT = f"INSERT INTO pm_entries (ns, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT = f"""
INSERT INTO pm_entries (ns, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (ns, key) DO UPDATE SET
    value = excluded.value, updated_at = excluded.updated_at, expires_at = excluded.expires_at,
    ttl = excluded.ttl, sliding = excluded.sliding, tags = excluded.tags,
    created_at = CASE WHEN {_LIVE.replace("expires_at", "pm_entries.expires_at")}
                 THEN pm_entries.created_at ELSE excluded.created_at END,
    access_count = CASE WHEN {_LIVE.replace("expires_at", "pm_entries.expires_at")}
                   THEN pm_entries.access_count ELSE 0 END,
    last_access = CASE WHEN {_LIVE.replace("expires_at", "pm_entries.expires_at")}
                  THEN max(pm_entries.last_access, excluded.last_access)
                  ELSE excluded.last_access END,
    version = CASE WHEN {_LIVE.replace("expires_at", "pm_entries.expires_at")}
              THEN pm_entries.version + 1 ELSE 1 END
"""


#: Most keys in one ``IN (...)`` list (SQLite builds allow from 999 to 250,000 variables;
#: 32,766 since 3.32): larger batches go as several statements in the same transaction.
_IN_MAX = 16_000
_NO_TAGS = "[]"


def _chunks(keys: Sequence[str]) -> Iterator[Sequence[str]]:
    if len(keys) > _IN_MAX:  # a key repeated in two statements would count twice
        keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), _IN_MAX):
        yield keys[start : start + _IN_MAX]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _unreadable(key: Any, err: Exception) -> SerializationError:
    return SerializationError(
        f"entry {key!r}: unreadable metadata in the SQLite row: {type(err).__name__}: {err}"
    )


def _tags_of(key: Any, text: Any) -> tuple[str, ...]:
    """The tags of a row (a JSON list; ``'[]'``, the usual case, is not parsed)."""
    if text == _NO_TAGS:
        return ()
    try:  # another writer of the file may have left anything in a column
        return tuple(json.loads(text))
    except (TypeError, ValueError) as err:
        raise _unreadable(key, err) from None


def _bytes_of(key: Any, value: Any) -> bytes:
    if type(value) is bytes:
        return value
    try:
        return bytes(value)
    except (TypeError, ValueError) as err:
        raise _unreadable(key, err) from None


def _row_to_record(row: tuple[Any, ...]) -> tuple[str, Record]:
    key, value, created, updated, last, count, expires, ttl, sliding, tags, version = row
    return key, Record(
        _bytes_of(key, value),
        created,
        updated,
        last,
        count,
        expires,
        ttl,
        bool(sliding),
        _tags_of(key, tags),
        version,
    )


def _insert_rows(ns: str, records: Mapping[str, Record]) -> list[tuple[Any, ...]]:
    """The parameters of :data:`_INSERT` for ``records``, as they are."""
    return [
        (ns, key, r.value, r.created_at, r.updated_at, r.last_access, r.access_count,
         r.expires_at, r.ttl, int(r.sliding), json.dumps(list(r.tags)) if r.tags else _NO_TAGS,
         r.version)
        for key, r in records.items()
    ]  # fmt: skip


def _columns(rows: list[tuple[Any, ...]]) -> EntryColumns:
    """The rows of :data:`_SCAN_COLUMNS` as columns (values ``None``: not read).

    A column is converted a value at a time only where it needs it (tags other than
    ``'[]'``, values that are not bytes: written by another client).
    """
    keys, values, sizes, created, updated, last, count, expires, ttl, sliding, tags, version = map(
        list, zip(*rows, strict=True)
    )
    n = len(keys)
    if tags.count(_NO_TAGS) == n:
        tags = [()] * n
    else:
        tags = [() if t == _NO_TAGS else _tags_of(k, t) for k, t in zip(keys, tags, strict=True)]
    if not {*map(type, values)} <= _READ_TYPES:
        values = [v if v is None or type(v) is bytes else _bytes_of(k, v)
                  for k, v in zip(keys, values, strict=True)]  # fmt: skip
    return EntryColumns(keys, created, updated, last, count, expires, ttl,
                        list(map(bool, sliding)), tags, version, sizes, values)  # fmt: skip


#: Types of values a scan passes on as read (bytes, or ``None``: not read).
_READ_TYPES = frozenset({bytes, type(None)})


def _same_write(row: tuple[Any, ...], token: tuple[int, float]) -> bool:
    """Whether a row ``(key, version, updated_at, tags)`` holds the write ``token`` (the
    comparison SQL's ``version = ? AND updated_at = ?`` makes)."""
    version, updated_at = token
    return bool(row[1] == version and row[2] == updated_at)


class SqliteBackend(Backend):
    """Entries in a SQLite database file (shared by the processes of one machine).

    Args:
        path: Database file (created with its folder), or ``":memory:"``.
        timeout: Seconds to wait for a lock held by another connection.
    """

    scheme: ClassVar[str] = "sqlite"
    capabilities: ClassVar[Capabilities] = Capabilities(
        atomic_moves=True, metadata_reads=True, column_scans=True, prefix_scans=True, local=True
    )
    _transient = ("_local",)

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.path = path
        self.timeout = float(timeout)
        self.url = f"sqlite:///{path}"
        self._local: threading.local | None = None
        #: Each thread's connection, with its thread (closed once the thread is gone).
        self._connections: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._shared: sqlite3.Connection | None = None
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as err:
                raise BackendUnavailable(f"cannot create the folder of {path!r}: {err}") from err

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteBackend:
        """Build from ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://``."""
        path, query = local_path_from_url(url, allow_memory=True)
        if "timeout" in query:
            options.setdefault("timeout", float(query.pop("timeout")))
        if query:
            raise ConfigError(f"unknown sqlite:// options in {url!r}: {', '.join(sorted(query))}")
        return cls(path, **options)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_connections"] = []
        state["_shared"] = None
        return state

    # -- connections --------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            conn = connect_wal(
                self.path,
                timeout=self.timeout,
                setup=lambda c: c.executescript(_SCHEMA),
                check_same_thread=False,
            )
        except sqlite3.Error as err:
            raise BackendUnavailable(f"cannot open SQLite database {self.path!r}: {err}") from err
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self.path == ":memory:":  # one shared connection, serialised by the lock
            if self._shared is None:
                self._shared = self._open()
            return self._shared
        if self._local is None:
            with self._lock:
                if self._local is None:
                    self._local = threading.local()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._connections = [
                    *self._living(),
                    (weakref.ref(threading.current_thread()), conn),
                ]
        return conn

    @contextlib.contextmanager
    def _tx(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        lock = self._lock if self.path == ":memory:" else contextlib.nullcontext()
        with lock:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                if write and self._local is not None:  # see _seen_unchanged
                    self._local.writes = getattr(self._local, "writes", 0) + 1
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.OperationalError as err:
                raise BackendUnavailable(f"SQLite {self.path!r}: {err}") from err
            except sqlite3.Error as err:
                raise BackendError(f"SQLite {self.path!r}: {err}") from err

    def _living(self) -> list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]]:
        """The connections of threads still running; those of ended threads are closed (a
        short-lived thread, such as a migration's reader, leaves no open file behind)."""
        living = []
        for owner, conn in self._connections:
            thread = owner()
            if thread is not None and thread.is_alive():
                living.append((owner, conn))
            else:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        return living

    def close(self) -> None:
        with self._lock:
            for _, conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections = []
            self._local = None

    def ping(self) -> None:
        with self._tx() as conn:
            conn.execute("SELECT 1")

    def usage(self) -> StoreUsage | None:
        """Bytes of the database file and its write-ahead log (``None`` for ``:memory:``)."""
        if self.path == ":memory:":
            return None
        files = (self.path, self.path + "-wal")
        return StoreUsage(used_bytes=sum(os.path.getsize(p) for p in files if os.path.exists(p)))

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        if not keys:
            return {}
        rows: list[tuple[Any, ...]] = []
        with self._tx(write=touch) as conn:
            for part in _chunks(keys):
                where = f"ns = ? AND key IN ({_marks(len(part))}) AND {_LIVE}"
                found = conn.execute(
                    f"SELECT {_COLUMNS} FROM pm_entries WHERE {where}", (ns, *part, now)
                ).fetchall()
                if touch and found:
                    conn.execute(
                        "UPDATE pm_entries SET access_count = access_count + 1, last_access = ?, "
                        "expires_at = CASE WHEN sliding = 1 AND ttl IS NOT NULL THEN ? + ttl "
                        f"ELSE expires_at END WHERE {where}",
                        (now, now, ns, *part, now),
                    )
                rows += found
        records = dict(map(_row_to_record, rows))
        if touch:
            records = {k: r.touched(now) for k, r in records.items()}
        return records

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """The live records of ``keys`` without values: ``length(value)`` instead (1 query)."""
        if not keys:
            return {}
        columns = _COLUMNS.replace("value", "length(value)", 1)
        rows: list[tuple[Any, ...]] = []
        with self._tx() as conn:
            for part in _chunks(keys):
                where = f"ns = ? AND key IN ({_marks(len(part))}) AND {_LIVE}"
                rows += conn.execute(
                    f"SELECT {columns} FROM pm_entries WHERE {where}", (ns, *part, now)
                ).fetchall()
        out: dict[str, Record] = {}
        for row in rows:
            key, record = _row_to_record((row[0], b"", *row[2:]))
            record.stored_size = int(row[1])
            out[key] = record
        return out

    def scan_columns(
        self,
        ns: str,
        *,
        now: float,
        batch_size: int = 1000,
        value_bytes: int = 0,
        query: Mapping[str, Any] | None = None,
    ) -> Iterator[EntryColumns]:
        """The live entries of ``ns`` in key order, one query per batch (see the base class).

        A batch is one indexed range read of the primary key (``key > last ORDER BY key
        LIMIT batch_size``): the metadata, ``length(value)``, and the value itself only
        when it has at most ``value_bytes`` bytes. Each batch is its own read transaction.
        """
        if query is not None:  # no pushdown here: the base class says what that does
            yield from super().scan_columns(
                ns, now=now, batch_size=batch_size, value_bytes=value_bytes, query=query
            )
            return
        limit = max(1, int(batch_size))
        small = int(value_bytes) if value_bytes > 0 else -1
        last, op = "", ">="
        while True:
            version = self._data_version()  # before the read: see _seen_unchanged
            with self._tx() as conn:
                rows = conn.execute(
                    f"SELECT {_SCAN_COLUMNS} FROM pm_entries WHERE ns = ? AND key {op} ? "
                    f"AND {_LIVE} ORDER BY key LIMIT ?",
                    (small, ns, last, now, limit),
                ).fetchall()
            if not rows:
                return
            columns = _columns(rows)
            if version is not None and self._local is not None:
                tagged = columns.tags.count(()) != len(columns)
                self._local.scanned = (ns, version, getattr(self._local, "writes", 0), tagged,
                                       list(zip(columns.keys, columns.version,
                                                columns.updated_at, strict=True)))  # fmt: skip
            yield columns
            del columns
            if len(rows) < limit:
                return
            last, op = rows[-1][0], ">"
            del rows

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        if not records:
            return
        with self._tx(write=True) as conn:
            self._write(conn, ns, records, now)

    @staticmethod
    def _write(
        conn: sqlite3.Connection, ns: str, records: Mapping[str, Record], now: float
    ) -> None:
        rows = [
            (
                ns,
                key,
                r.value,
                r.created_at,
                r.updated_at,
                r.last_access,
                r.access_count,
                r.expires_at,
                r.ttl,
                int(r.sliding),
                json.dumps(list(r.tags)),
                r.version,
                now,
                now,
                now,
                now,
            )
            for key, r in sorted(records.items())  # in key order: see put_absent_many
        ]
        conn.executemany(_UPSERT, rows)
        SqliteBackend._untag(conn, ns, list(records))
        SqliteBackend._tag(conn, ns, records)

    @staticmethod
    def _untag(conn: sqlite3.Connection, ns: str, keys: Sequence[str]) -> None:
        for part in _chunks(keys):
            conn.execute(f"DELETE FROM pm_tags WHERE ns = ? AND key IN ({_marks(len(part))})",
                         (ns, *part))  # fmt: skip

    @staticmethod
    def _tag(conn: sqlite3.Connection, ns: str, records: Mapping[str, Record]) -> None:
        tag_rows = [(ns, tag, key) for key, r in records.items() for tag in r.tags]
        if tag_rows:
            conn.executemany("INSERT OR IGNORE INTO pm_tags VALUES (?, ?, ?)", tag_rows)

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        """Insert the records whose key has no live entry, as they are (one transaction).

        An expired row of such a key is removed first, so the record lands with its own
        version and access history (a move keeps its token).
        """
        if not records:
            return set()
        # in key order: neighbouring rows land on the same B-tree pages one after the other
        # (a batch read by a Redis SCAN comes in hash order)
        keys = sorted(records)
        with self._tx(write=True) as conn:
            present: set[str] = set()
            stale: list[str] = []
            for part in _chunks(keys):
                for key, live in conn.execute(
                    f"SELECT key, {_LIVE} FROM pm_entries "
                    f"WHERE ns = ? AND key IN ({_marks(len(part))})",
                    (now, ns, *part),
                ):
                    if live:
                        present.add(key)
                    else:
                        stale.append(key)
            absent = {k: records[k] for k in keys if k not in present}
            for part in _chunks(stale):
                conn.execute(
                    f"DELETE FROM pm_entries WHERE ns = ? AND key IN ({_marks(len(part))})",
                    (ns, *part),
                )
            self._untag(conn, ns, stale)
            conn.executemany(_INSERT, _insert_rows(ns, absent))
            self._tag(conn, ns, absent)
        return set(absent)

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        """Delete the keys still holding ``expected``: one read and one delete per batch,
        in one write transaction (no other writer comes between them).

        A batch whose keys are all the rows of a key range, each the expected write (a
        migration's batch, read in key order), is deleted as that range.
        """
        deleted: list[str] = []
        if not expected:
            return set()
        with self._tx(write=True) as conn:
            if len(expected) > 1 and self._delete_range(conn, ns, expected):
                return set(expected)
            for part in _chunks(list(expected)):
                rows = conn.execute(
                    "SELECT key, version, updated_at, tags FROM pm_entries "
                    f"WHERE ns = ? AND key IN ({_marks(len(part))})",
                    (ns, *part),
                ).fetchall()
                same = [row for row in rows if _same_write(row, expected[row[0]])]
                if not same:
                    continue
                keys = [row[0] for row in same]
                conn.execute(
                    f"DELETE FROM pm_entries WHERE ns = ? AND key IN ({_marks(len(keys))})",
                    (ns, *keys),
                )
                self._untag(conn, ns, [row[0] for row in same if row[3] != _NO_TAGS])
                deleted += keys
        return set(deleted)

    def _delete_range(
        self, conn: sqlite3.Connection, ns: str, expected: Mapping[str, tuple[int, float]]
    ) -> bool:
        """Delete ``expected`` as one key range if it is exactly the rows of that range, each
        still the expected write (else delete nothing); tell whether it did.

        The rows of the range are read in key order and compared with the expected writes
        as two lists sorted by key (a migration's batch comes in key order). (A ``DELETE
        ... RETURNING`` undone by a savepoint when it differs was 1.6x slower: 100k rows.)
        They are not read again when nothing can have changed them since this connection
        read them as its last batch (:meth:`_seen_unchanged`): a migration's usual case.
        """
        want = list(zip(expected, *zip(*expected.values(), strict=True), strict=True))
        want.sort()  # (in key order already, usually: then one pass)
        low, high = want[0][0], want[-1][0]
        seen = self._seen_unchanged(conn, ns, want)
        if seen is not None:  # (no row of the batch has tags: none in the range either)
            return self._drop_range(conn, ns, low, high, tagged=seen)
        rows = conn.execute(
            "SELECT key, version, updated_at FROM pm_entries "
            "WHERE ns = ? AND key >= ? AND key <= ? ORDER BY key LIMIT ?",
            (ns, low, high, len(want) + 1),
        ).fetchall()
        if len(rows) != len(want) or (rows != want and set(rows) != set(want)):
            return False  # (a set: the same writes, keys ordered otherwise than by Python)
        return self._drop_range(conn, ns, low, high)

    def _drop_range(
        self, conn: sqlite3.Connection, ns: str, low: str, high: str, *, tagged: bool = True
    ) -> bool:
        """Delete the key range (and the tags of its rows, unless none is ``tagged``)."""
        keys = []
        if tagged:
            keys = conn.execute(
                "SELECT key FROM pm_entries WHERE ns = ? AND key >= ? AND key <= ? "
                "AND tags IS NOT ?",
                (ns, low, high, _NO_TAGS),
            ).fetchall()
        conn.execute(
            "DELETE FROM pm_entries WHERE ns = ? AND key >= ? AND key <= ?", (ns, low, high)
        )
        self._untag(conn, ns, [key for (key,) in keys])
        return True

    def _data_version(self) -> int | None:
        """``PRAGMA data_version`` of this thread's connection: it changes when another
        connection commits (``None`` for ``:memory:``, whose one connection every thread
        shares)."""
        if self.path == ":memory:":
            return None
        return int(self._conn().execute("PRAGMA data_version").fetchone()[0])

    def _seen_unchanged(self, conn: sqlite3.Connection, ns: str, want: list[Any]) -> bool | None:
        """Whether the rows of ``want``'s key range are exactly ``want``, told without
        reading them again (``None``: not known; else whether any of them has tags).

        Known when ``want`` is the whole batch this connection read last
        (:meth:`scan_columns`), no other connection committed since before that read
        (``PRAGMA data_version``), this connection wrote nothing since but this
        transaction, and the range holds as many rows as ``want`` (none the read left
        out as expired).
        """
        scanned = getattr(self._local, "scanned", None) if self._local is not None else None
        if scanned is None:
            return None
        self._local.scanned = None  # good for one delete
        seen_ns, version, writes, tagged, tokens = scanned
        if seen_ns != ns or writes + 1 != self._local.writes or tokens != want:
            return None
        if int(conn.execute("PRAGMA data_version").fetchone()[0]) != version:
            return None
        (count,) = conn.execute(
            "SELECT count(*) FROM pm_entries WHERE ns = ? AND key >= ? AND key <= ?",
            (ns, want[0][0], want[-1][0]),
        ).fetchone()
        return bool(tagged) if count == len(want) else None

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        if not keys:
            return 0
        marks = ",".join("?" * len(keys))
        with self._tx(write=True) as conn:
            live = conn.execute(
                f"SELECT count(*) FROM pm_entries WHERE ns = ? AND key IN ({marks}) AND {_LIVE}",
                (ns, *keys, now),
            ).fetchone()[0]
            conn.execute(f"DELETE FROM pm_entries WHERE ns = ? AND key IN ({marks})", (ns, *keys))
            conn.execute(f"DELETE FROM pm_tags WHERE ns = ? AND key IN ({marks})", (ns, *keys))
        return int(live)

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        prefix = literal_prefix(pattern)
        last = prefix
        first = True
        while True:
            op = ">=" if first else ">"
            with self._tx() as conn:
                rows = conn.execute(
                    f"SELECT key FROM pm_entries WHERE ns = ? AND key {op} ? AND {_LIVE} "
                    "ORDER BY key LIMIT 1000",
                    (ns, last, now),
                ).fetchall()
            first = False
            if not rows:
                return
            for (key,) in rows:
                if not key.startswith(prefix):
                    return
                if glob_match(key, pattern):
                    yield key
            last = rows[-1][0]

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        tags = list(tags)
        marks = ",".join("?" * len(tags))
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT DISTINCT t.key FROM pm_tags t JOIN pm_entries e "
                f"ON e.ns = t.ns AND e.key = t.key WHERE t.ns = ? AND t.tag IN ({marks}) "
                f"AND {_LIVE.replace('expires_at', 'e.expires_at')}",
                (ns, *tags, now),
            ).fetchall()
        return {key for (key,) in rows}

    def purge_expired(self, ns: str, *, now: float) -> int:
        with self._tx(write=True) as conn:
            dead = [
                key
                for (key,) in conn.execute(
                    "SELECT key FROM pm_entries WHERE ns = ? AND expires_at <= ?", (ns, now)
                )
            ]
            conn.executemany(
                "DELETE FROM pm_entries WHERE ns = ? AND key = ?", [(ns, k) for k in dead]
            )
            conn.executemany(
                "DELETE FROM pm_tags WHERE ns = ? AND key = ?", [(ns, k) for k in dead]
            )
        return len(dead)

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import BackendError, BackendUnavailable, ConfigError, SerializationError
from ..keys import glob_match, literal_prefix
from .base import Backend, Capabilities, Record, StoreUsage
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


def _row_to_record(row: tuple[Any, ...]) -> tuple[str, Record]:
    key, value, created, updated, last, count, expires, ttl, sliding, tags, version = row
    try:  # another writer of the file may have left anything in a column
        return key, Record(
            value=bytes(value),
            created_at=created,
            updated_at=updated,
            last_access=last,
            access_count=count,
            expires_at=expires,
            ttl=ttl,
            sliding=bool(sliding),
            tags=tuple(json.loads(tags)),
            version=version,
        )
    except (TypeError, ValueError) as err:
        raise SerializationError(
            f"entry {key!r}: unreadable metadata in the SQLite row: {type(err).__name__}: {err}"
        ) from None


class SqliteBackend(Backend):
    """Entries in a SQLite database file (shared by the processes of one machine).

    Args:
        path: Database file (created with its folder), or ``":memory:"``.
        timeout: Seconds to wait for a lock held by another connection.
    """

    scheme: ClassVar[str] = "sqlite"
    capabilities: ClassVar[Capabilities] = Capabilities(atomic_moves=True, metadata_reads=True)
    _transient = ("_local",)

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.path = path
        self.timeout = float(timeout)
        self.url = f"sqlite:///{path}"
        self._local: threading.local | None = None
        self._connections: list[sqlite3.Connection] = []
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
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        lock = self._lock if self.path == ":memory:" else contextlib.nullcontext()
        with lock:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
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

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
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
        marks = ",".join("?" * len(keys))
        where = f"ns = ? AND key IN ({marks}) AND {_LIVE}"
        with self._tx(write=touch) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM pm_entries WHERE {where}", (ns, *keys, now)
            ).fetchall()
            if touch and rows:
                conn.execute(
                    "UPDATE pm_entries SET access_count = access_count + 1, last_access = ?, "
                    "expires_at = CASE WHEN sliding = 1 AND ttl IS NOT NULL THEN ? + ttl "
                    f"ELSE expires_at END WHERE {where}",
                    (now, now, ns, *keys, now),
                )
        records = dict(_row_to_record(row) for row in rows)
        if touch:
            records = {k: r.touched(now) for k, r in records.items()}
        return records

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """The live records of ``keys`` without values: ``length(value)`` instead (1 query)."""
        if not keys:
            return {}
        columns = _COLUMNS.replace("value", "length(value)", 1)
        where = f"ns = ? AND key IN ({','.join('?' * len(keys))}) AND {_LIVE}"
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM pm_entries WHERE {where}", (ns, *keys, now)
            ).fetchall()
        out: dict[str, Record] = {}
        for row in rows:
            key, record = _row_to_record((row[0], b"", *row[2:]))
            record.stored_size = int(row[1])
            out[key] = record
        return out

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
            for key, r in records.items()
        ]
        tag_rows = [(ns, tag, key) for key, r in records.items() for tag in r.tags]
        conn.executemany(_UPSERT, rows)
        conn.executemany("DELETE FROM pm_tags WHERE ns = ? AND key = ?", [(ns, k) for k in records])
        if tag_rows:
            conn.executemany("INSERT OR IGNORE INTO pm_tags VALUES (?, ?, ?)", tag_rows)

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        if not records:
            return set()
        keys = list(records)
        marks = ",".join("?" * len(keys))
        with self._tx(write=True) as conn:
            present = {
                key
                for (key,) in conn.execute(
                    f"SELECT key FROM pm_entries WHERE ns = ? AND key IN ({marks}) AND {_LIVE}",
                    (ns, *keys, now),
                )
            }
            absent = {k: r for k, r in records.items() if k not in present}
            self._write(conn, ns, absent, now)
        return set(absent)

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        deleted: set[str] = set()
        with self._tx(write=True) as conn:
            for key, (version, updated_at) in expected.items():
                cur = conn.execute(
                    "DELETE FROM pm_entries WHERE ns = ? AND key = ? AND version = ? "
                    "AND updated_at = ?",
                    (ns, key, version, updated_at),
                )
                if cur.rowcount:
                    conn.execute("DELETE FROM pm_tags WHERE ns = ? AND key = ?", (ns, key))
                    deleted.add(key)
        return deleted

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

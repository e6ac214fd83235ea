"""A durable local journal of pending writes (SQLite, one transaction per batch).

Write-behind appends every accepted write here *before* answering the caller, so a crash
or restart loses nothing: the next process replays what was not yet applied. Order per
key is the journal order (``seq``); a batch is coalesced to the last operation per key.

Example:
    >>> import tempfile, os
    >>> from prefect_memory.plugins.base import Record
    >>> journal = Journal(os.path.join(tempfile.mkdtemp(), "j.db"))
    >>> journal.append("ns", puts={"k": Record(b"v", 1.0, 1.0, 1.0)})
    >>> journal.backlog()
    1
    >>> [(op, key) for _, ns, key, op, _ in journal.pending(10)]
    [('put', 'k')]
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from ..errors import BackendUnavailable
from ..plugins.base import Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pm_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ns TEXT NOT NULL, key TEXT NOT NULL, op TEXT NOT NULL, record BLOB
);
CREATE INDEX IF NOT EXISTS pm_journal_key ON pm_journal (ns, key, seq);
"""

Entry = tuple[int, str, str, str, Record | None]


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


class Journal:
    """Pending writes in a SQLite file (safe across threads and processes of one machine)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except sqlite3.Error as err:
                raise BackendUnavailable(f"cannot open the journal {self.path!r}: {err}") from err
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Any:
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
        conn.execute("COMMIT")

    def append(
        self,
        ns: str,
        *,
        puts: Mapping[str, Record] | None = None,
        deletes: Iterable[str] = (),
    ) -> None:
        """Durably record writes (committed with ``synchronous=FULL`` before returning)."""
        rows = [(ns, k, "put", pack_record(r)) for k, r in (puts or {}).items()]
        rows += [(ns, k, "del", None) for k in deletes]
        if not rows:
            return
        with self._tx() as conn:
            conn.executemany("INSERT INTO pm_journal (ns, key, op, record) VALUES (?,?,?,?)", rows)

    def pending(self, limit: int) -> list[Entry]:
        """The oldest ``limit`` journal entries, in order."""
        rows = self._conn().execute(
            "SELECT seq, ns, key, op, record FROM pm_journal ORDER BY seq LIMIT ?", (limit,)
        )
        return [
            (seq, ns, key, op, unpack_record(blob) if blob is not None else None)
            for seq, ns, key, op, blob in rows
        ]

    def latest(self, ns: str, keys: Iterable[str]) -> dict[str, Record | None]:
        """The last journaled operation per key (``None`` for a delete); absent when none."""
        keys = list(keys)
        out: dict[str, Record | None] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn().execute(
                f"SELECT key, op, record FROM pm_journal WHERE ns = ? AND key IN ({marks}) "
                "ORDER BY seq",
                (ns, *chunk),
            )
            for key, op, blob in rows:
                out[key] = unpack_record(blob) if op == "put" else None
        return out

    def keys(self, ns: str) -> dict[str, bool]:
        """Keys with a pending operation: ``True`` when the last one is a put."""
        rows = self._conn().execute(
            "SELECT key, op FROM pm_journal WHERE ns = ? ORDER BY seq", (ns,)
        )
        return {key: op == "put" for key, op in rows}

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget entries once they are applied."""
        seqs = list(seqs)
        with self._tx() as conn:
            conn.executemany("DELETE FROM pm_journal WHERE seq = ?", [(s,) for s in seqs])

    def backlog(self) -> int:
        """Entries not yet applied."""
        return int(self._conn().execute("SELECT count(*) FROM pm_journal").fetchone()[0])

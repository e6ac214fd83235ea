"""SQLite files opened by many threads and processes at the same moment."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prefect_memory.plugins.base import Record
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.resilience.journal import Journal


def race(n: int, action: Callable[[], object]) -> list[BaseException]:
    """Run ``action()`` in ``n`` threads released together; return what they raised."""
    barrier, errors = threading.Barrier(n), []

    def run() -> None:
        barrier.wait()
        try:
            action()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def test_threads_opening_a_new_store_at_once_all_get_in(tmp_path: Path) -> None:
    """Switching a new file to WAL raced: "database is locked" at once (15 of 200 trials)."""
    for trial in range(60):
        backend = SqliteBackend(str(tmp_path / f"m{trial}.db"))
        now = time.time()
        record = Record(b"v", now, now, now)
        errors = race(6, functools.partial(backend.put_absent_many, "ns", {"k": record}, now=now))
        assert not errors, f"trial {trial}: {errors[0]}"
        assert set(backend.scan("ns", None, now=now)) == {"k"}


def test_threads_opening_a_new_journal_at_once_all_get_in(tmp_path: Path) -> None:
    for trial in range(60):
        journal = Journal(str(tmp_path / f"j{trial}.db"))
        errors = race(6, functools.partial(journal.append, "ns", deletes=["k"], at=1.0))
        assert not errors, f"trial {trial}: {errors[0]}"
        assert journal.backlog() == 6

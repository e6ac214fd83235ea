"""Hybrid storage: a primary and a secondary store kept in step.

Strategies:

- ``write-through``: every write goes to both stores before it returns. A failure of
  either raises :class:`HybridWriteError` naming the store(s) that failed (it is never
  merely logged); the other store keeps the write, so retrying is safe.
- ``write-behind``: the write is appended to a durable local :class:`Journal`, then
  written to the primary, and the call returns; a background flusher applies the journal
  to the secondary in batches (``flush_batch`` entries or every ``flush_interval``
  seconds, and at exit). A crash or restart replays what was not applied.

Reads go to the primary; a miss reads through the journal, then the secondary, and
repopulates the primary (without overwriting a newer write), so a primary that restarts
empty (Redis without persistence) loses nothing.

Example:
    >>> import os, tempfile
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.plugins.sqlite import SqliteBackend
    >>> primary = InProcessBackend()
    >>> secondary = SqliteBackend(os.path.join(tempfile.mkdtemp(), "s.db"))
    >>> hybrid = HybridBackend(primary, secondary, strategy="write-through")
    >>> from prefect_memory import Memory
    >>> mem = Memory(hybrid, "docs")
    >>> mem.set("k", 1)
    >>> import time
    >>> sorted(primary.get_many("docs", ["k"], now=time.time())), mem.get("k")
    (['k'], 1)
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..errors import BackendError, ConfigError
from ..keys import glob_match
from ..plugins.base import Backend, Capabilities, Record
from .journal import Journal

logger = logging.getLogger("prefect_memory.hybrid")

Strategy = Literal["write-through", "write-behind"]
STRATEGIES = ("write-through", "write-behind")


class HybridWriteError(BackendError):
    """A write reached only part of a hybrid memory; ``failed`` names the stores that failed."""

    def __init__(self, message: str, failed: dict[str, BaseException]) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass
class SyncReport:
    """What a reconciliation of both stores found and did."""

    copied_to_secondary: int = 0
    copied_to_primary: int = 0
    conflicts_resolved: int = 0
    checked: int = 0
    seconds: float = 0.0
    differences: list[tuple[str, str]] = field(default_factory=list)


_live_hybrids: weakref.WeakSet[HybridBackend] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for backend in list(_live_hybrids):
        with contextlib.suppress(Exception):
            backend.flush(timeout=10)


class HybridBackend(Backend):
    """Primary + secondary with write-through or durable write-behind (module docstring).

    Args:
        primary: The fast store answering reads.
        secondary: The durable store.
        strategy: ``"write-through"`` or ``"write-behind"``.
        journal: Journal file for write-behind (default ``.prefect-memory/journal-<id>.db``).
        flush_batch: Journal entries applied per batch.
        flush_interval: Seconds between background flushes.
    """

    scheme: ClassVar[str] = "hybrid"
    capabilities: ClassVar[Capabilities] = Capabilities()
    _transient = ("_thread", "_wake", "_stop")

    def __init__(
        self,
        primary: Backend,
        secondary: Backend,
        *,
        strategy: Strategy = "write-through",
        journal: str | None = None,
        flush_batch: int = 500,
        flush_interval: float = 1.0,
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if flush_batch < 1 or flush_interval <= 0:
            raise ConfigError("flush_batch must be >= 1 and flush_interval > 0")
        self.primary = primary
        self.secondary = secondary
        self.strategy = strategy
        self.flush_batch = flush_batch
        self.flush_interval = float(flush_interval)
        self.url = f"hybrid://{getattr(primary, 'url', '?')}+{getattr(secondary, 'url', '?')}"
        self.journal: Journal | None = None
        if strategy == "write-behind":
            default = os.path.join(".prefect-memory", f"journal-{abs(hash(self.url)) % 10**8}.db")
            self.journal = Journal(journal or default)
        self.last_flush_error: str | None = None
        self._thread: threading.Thread | None = None
        self._wake: threading.Event | None = None
        self._stop: threading.Event | None = None
        _live_hybrids.add(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HybridBackend:
        """Hybrid memories are built from two stores (``HybridMemory`` or ``from_config``)."""
        raise ConfigError("a hybrid memory is built from a primary and a secondary store")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        _live_hybrids.add(self)

    # -- write-behind flushing ----------------------------------------------------------------
    def _ensure_flusher(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            assert self._wake is not None
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._wake, self._stop = threading.Event(), threading.Event()
            self._thread = threading.Thread(
                target=self._flush_loop, name="prefect-memory-write-behind", daemon=True
            )
            self._thread.start()

    def _flush_loop(self) -> None:
        assert self._wake is not None and self._stop is not None
        delay = self.flush_interval
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            try:
                while self.flush_once():
                    pass
                delay = self.flush_interval
                self.last_flush_error = None
            except Exception as err:  # keep the journal; try again later with backoff
                self.last_flush_error = f"{type(err).__name__}: {err}"
                logger.warning("write-behind flush failed (will retry): %s", self.last_flush_error)
                delay = min(delay * 2, 30.0)

    def flush_once(self) -> int:
        """Apply one batch of the journal to the secondary; return how many entries."""
        if self.journal is None:
            return 0
        with self._lock:
            entries = self.journal.pending(self.flush_batch)
            if not entries:
                return 0
            now = time.time()
            last: dict[tuple[str, str], tuple[str, Record | None]] = {}
            for _seq, ns, key, op, record in entries:
                last[(ns, key)] = (op, record)
            by_ns: dict[str, tuple[dict[str, Record], list[str]]] = {}
            for (ns, key), (op, record) in last.items():
                puts, deletes = by_ns.setdefault(ns, ({}, []))
                if op == "put" and record is not None:
                    puts[key] = record
                else:
                    deletes.append(key)
            for ns, (puts, deletes) in by_ns.items():
                if puts:
                    self.secondary.put_many(ns, puts, now=now)
                if deletes:
                    self.secondary.delete_many(ns, deletes, now=now)
            self.journal.remove(seq for seq, *_ in entries)
            return len(entries)

    def flush(self, timeout: float | None = None) -> int:
        """Apply the whole journal now; return the number of entries applied."""
        deadline = None if timeout is None else time.monotonic() + timeout
        applied = 0
        while deadline is None or time.monotonic() < deadline:
            n = self.flush_once()
            if not n:
                break
            applied += n
        return applied

    def backlog(self) -> int:
        """Journal entries not yet applied to the secondary."""
        return 0 if self.journal is None else self.journal.backlog()

    # -- protocol -----------------------------------------------------------------------------
    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        if self.journal is not None:
            self.journal.append(ns, puts=records)
            self.primary.put_many(ns, records, now=now)
            self._ensure_flusher()
            if self.journal.backlog() >= self.flush_batch and self._wake is not None:
                self._wake.set()
            return
        self._both("write", lambda b: b.put_many(ns, records, now=now))

    def _both(self, what: str, call: Any) -> list[Any]:
        failed: dict[str, BaseException] = {}
        results: list[Any] = []
        for name, backend in (("primary", self.primary), ("secondary", self.secondary)):
            try:
                results.append(call(backend))
            except Exception as err:
                failed[name] = err
                results.append(None)
        if failed:
            detail = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in failed.items())
            raise HybridWriteError(f"hybrid {what} did not reach every store ({detail})", failed)
        return results

    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        out = self.primary.get_many(ns, keys, now=now, touch=touch)
        missing = [k for k in keys if k not in out]
        if not missing:
            return out
        recovered: dict[str, Record] = {}
        if self.journal is not None:
            latest = self.journal.latest(ns, missing)
            for key, record in latest.items():
                if record is not None and not record.expired(now):
                    recovered[key] = record
            missing = [k for k in missing if k not in latest]
        if missing:
            recovered.update(self.secondary.get_many(ns, missing, now=now, touch=False))
        if recovered:
            written = self.primary.put_absent_many(ns, recovered, now=now)
            if touch and written:
                again = self.primary.get_many(ns, list(written), now=now, touch=True)
                recovered.update(again)
            out.update(recovered)
        return out

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        if self.journal is not None:
            live = self.exists_many(ns, keys, now=now)
            self.journal.append(ns, deletes=keys)
            self.primary.delete_many(ns, keys, now=now)
            self._ensure_flusher()
            return len(live)
        first, second = self._both("delete", lambda b: b.delete_many(ns, keys, now=now))
        return max(first, second)

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        found = self.primary.exists_many(ns, keys, now=now)
        missing = [k for k in keys if k not in found]
        if missing and self.journal is not None:
            latest = self.journal.latest(ns, missing)
            for key, record in latest.items():
                if record is not None and not record.expired(now):
                    found.add(key)
            missing = [k for k in missing if k not in latest]
        if missing:
            found |= self.secondary.exists_many(ns, missing, now=now)
        return found

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        pending = self.journal.keys(ns) if self.journal is not None else {}
        seen: set[str] = set()
        for source in (self.primary, self.secondary):
            for key in source.scan(ns, pattern, now=now):
                if key not in seen and pending.get(key, True):
                    seen.add(key)
                    yield key
        for key, is_put in pending.items():
            if is_put and key not in seen and glob_match(key, pattern):
                yield key

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        tags = list(tags)
        found = self.primary.tagged(ns, tags, now=now) | self.secondary.tagged(ns, tags, now=now)
        if self.journal is not None:
            wanted = set(tags)
            for key, record in self.journal.latest(ns, self.journal.keys(ns)).items():
                if record is not None and wanted.intersection(record.tags):
                    found.add(key)
        return found

    def purge_expired(self, ns: str, *, now: float) -> int:
        return self.primary.purge_expired(ns, now=now) + self.secondary.purge_expired(ns, now=now)

    def ping(self) -> None:
        self._both("ping", lambda b: b.ping())

    def close(self) -> None:
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.flush(timeout=10)
        self.primary.close()
        self.secondary.close()

    # -- reconciliation -----------------------------------------------------------------------
    def sync(self, ns: str, *, now: float, batch_size: int = 500) -> SyncReport:
        """Reconcile both stores for ``ns``: copy what one lacks, newer write wins."""
        started = time.perf_counter()
        self.flush()
        report = SyncReport()
        keys = sorted(
            set(self.primary.scan(ns, None, now=now)) | set(self.secondary.scan(ns, None, now=now))
        )
        for start in range(0, len(keys), batch_size):
            batch = keys[start : start + batch_size]
            first = self.primary.get_many(ns, batch, now=now, touch=False)
            second = self.secondary.get_many(ns, batch, now=now, touch=False)
            to_second: dict[str, Record] = {}
            to_first: dict[str, Record] = {}
            for key in batch:
                a, b = first.get(key), second.get(key)
                report.checked += 1
                if a is not None and b is None:
                    to_second[key] = a
                    report.differences.append((key, "missing in secondary"))
                elif b is not None and a is None:
                    to_first[key] = b
                    report.differences.append((key, "missing in primary"))
                elif a is not None and b is not None and a.value != b.value:
                    report.conflicts_resolved += 1
                    if a.updated_at >= b.updated_at:
                        to_second[key] = a
                        report.differences.append((key, "secondary older"))
                    else:
                        to_first[key] = b
                        report.differences.append((key, "primary older"))
            if to_second:
                self.secondary.put_many(ns, to_second, now=now)
            if to_first:
                self.primary.put_many(ns, to_first, now=now)
            report.copied_to_secondary += len(to_second)
            report.copied_to_primary += len(to_first)
        report.seconds = time.perf_counter() - started
        return report

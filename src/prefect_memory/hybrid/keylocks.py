"""One writer of a key at a time across the threads and processes sharing a journal.

A hybrid write goes to two places in turn: write-behind appends it to the journal (whose
order the secondary follows) and then writes the primary; write-through writes one store
and then the other. Two writes of one key from two processes (or threads) could otherwise
interleave, reaching one place in one order and the other in the other order: the
primary would keep one write and the secondary the other, for good (until ``sync``).

:class:`KeyLocks` serialises them: a write holds the stripes of its keys (a key's stripe is
a hash of its namespace and name, one of :data:`STRIPES`) for both of its steps, so writes
of one key reach every place in the same order. Writes of other stripes run at once. The
lock is a set of held stripes under a condition (threads of a process) plus a POSIX record
lock on one byte per stripe of a lock file beside the journal (processes of the machine;
the kernel releases it when a process dies). A batch touching :data:`WHOLE` stripes or
more takes all of them in one call. Record locks are taken in ascending order: no deadlock.

Writers on other machines share no lock file: there, overlapping writes of one key can
still leave the two stores on different values, until :meth:`~.HybridBackend.sync` (the
newer write wins). See ``docs/guarantees.md``.

Example:
    >>> import os, tempfile
    >>> locks = KeyLocks(os.path.join(tempfile.mkdtemp(), "journal.db"))
    >>> with locks.hold("ns", ["a", "b"]):
    ...     pass
    >>> sorted(locks.stripes("ns", ["a", "a"])) == sorted(set(locks.stripes("ns", ["a"])))
    True
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..errors import BackendTimeout, BackendUnavailable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: threads only
    fcntl = None  # type: ignore[assignment]

#: Stripes of keys (bytes of the lock file).
STRIPES = 256
#: A write touching this many stripes or more takes them all (one call instead of many).
WHOLE = 16
#: Most seconds a write waits for its keys: longer than a store call with its retries, so
#: only a writer stopped or hung mid-write (SIGSTOP, a debugger) makes it give up.
WAIT = 60.0


class _Shared:
    """The thread locks and the lock file of one lock path, shared in a process."""

    def __init__(self, path: str) -> None:
        self.path = path
        #: The stripes threads of this process hold, and who waits for one.
        self.held: set[int] = set()
        self.turns = threading.Condition(threading.Lock())
        self.guard = threading.Lock()
        self.handle: Any = None
        self.pid = 0

    def fileno(self) -> int | None:
        if fcntl is None:
            return None
        with self.guard:
            if self.handle is None or self.pid != os.getpid():  # (record locks are not
                try:  # inherited by a fork: the child opens its own)
                    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                    self.handle = open(self.path, "a+b")  # noqa: SIM115 - kept open
                except OSError as err:
                    raise BackendUnavailable(f"journal key lock {self.path!r}: {err}") from err
                self.pid = os.getpid()
            return int(self.handle.fileno())


_shared: dict[str, _Shared] = {}
_shared_guard = threading.Lock()
#: Bumped in a forked child: a :class:`KeyLocks` looks its shared locks up again.
_generation = 0


def _forget_after_fork() -> None:
    """A forked child starts with no locks: the parent's threads may have held some at the
    fork (their thread locks would stay taken in the child), and record locks are not
    inherited anyway."""
    global _shared_guard, _generation
    _shared.clear()
    _shared_guard = threading.Lock()
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _for(path: str) -> _Shared:
    real = os.path.realpath(path)
    with _shared_guard:
        found = _shared.get(real)
        if found is None:
            found = _shared[real] = _Shared(real)
        return found


class KeyLocks:
    """Per-key write locks of a journal (module docstring); pickles as its path.

    Args:
        journal: The journal's path; the lock file is ``<journal>.keys.lock``.
        timeout: Most seconds a write waits for its keys (then ``BackendTimeout``).
    """

    def __init__(self, journal: str, timeout: float = WAIT) -> None:
        self.path = f"{journal}.keys.lock"
        self.timeout = timeout
        self._shared: tuple[int, _Shared] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.timeout = state.get("timeout", WAIT)
        self._shared = None

    @staticmethod
    def stripes(ns: str, keys: Iterable[str]) -> list[int]:
        """The stripes of ``keys`` in ``ns``, ascending, each once."""
        return sorted({zlib.crc32(f"{ns}\x00{key}".encode()) % STRIPES for key in keys})

    @staticmethod
    def _to_take(ns: str, keys: Iterable[str]) -> Sequence[int]:
        """:meth:`stripes`, or all of them once :data:`WHOLE` are found (a batch stops
        hashing its keys there)."""
        found: set[int] = set()
        for key in keys:
            found.add(zlib.crc32(f"{ns}\x00{key}".encode()) % STRIPES)
            if len(found) >= WHOLE:
                return range(STRIPES)
        return sorted(found)

    def _locks(self) -> _Shared:
        cached = self._shared
        if cached is None or cached[0] != _generation:
            cached = self._shared = (_generation, _for(self.path))
        return cached[1]

    @contextlib.contextmanager
    def hold(self, ns: str, keys: Iterable[str]) -> Iterator[None]:
        """Hold the stripes of ``keys`` (waits while another writer holds one of them).

        Raises:
            BackendTimeout: Another writer held one of them for ``timeout`` seconds (a
                process stopped or hung in the middle of a write); nothing is held then.
            BackendUnavailable: The lock file cannot be opened.
        """
        shared = self._locks()
        stripes = self._to_take(ns, keys)
        whole = len(stripes) == STRIPES
        deadline = time.monotonic() + self.timeout
        with shared.turns:  # threads of this process: one holder per stripe
            while not shared.held.isdisjoint(stripes):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timed_out("another thread")
                shared.turns.wait(left)
            shared.held.update(stripes)
        try:
            fd = shared.fileno()
            if fd is None:
                yield
                return
            ranges = [(STRIPES, 0)] if whole else [(1, stripe) for stripe in stripes]
            locked: list[tuple[int, int]] = []
            try:
                for length, start in ranges:
                    self._lock(fd, length, start, deadline)
                    locked.append((length, start))
                yield
            finally:  # only the stripes held here: other threads of this process hold others
                for length, start in locked:
                    fcntl.lockf(fd, fcntl.LOCK_UN, length, start, os.SEEK_SET)
        finally:
            with shared.turns:
                shared.held.difference_update(stripes)
                shared.turns.notify_all()

    def _lock(self, fd: int, length: int, start: int, deadline: float) -> None:
        """Take a record lock, polling (a record lock has no timeout) until ``deadline``."""
        pause = 0.001
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start, os.SEEK_SET)
                return
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    raise BackendUnavailable(f"journal key lock {self.path!r}: {err}") from err
            if time.monotonic() >= deadline:
                raise self._timed_out("another process")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _timed_out(self, who: str) -> BackendTimeout:
        return BackendTimeout(
            f"a key of this write stayed locked by {who} for {self.timeout:g}s "
            f"({self.path!r}): a writer stopped or hung mid-write? The write was not made"
        )


__all__ = ["STRIPES", "WAIT", "WHOLE", "KeyLocks"]

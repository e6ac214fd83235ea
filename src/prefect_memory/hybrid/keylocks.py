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
import os
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..errors import BackendUnavailable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: threads only
    fcntl = None  # type: ignore[assignment]

#: Stripes of keys (bytes of the lock file).
STRIPES = 256
#: A write touching this many stripes or more takes them all (one call instead of many).
WHOLE = 16


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
    """

    def __init__(self, journal: str) -> None:
        self.path = f"{journal}.keys.lock"
        self._shared: tuple[int, _Shared] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
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
        """Hold the stripes of ``keys`` (blocks while another writer holds one of them).

        Raises:
            BackendUnavailable: The lock file cannot be opened.
        """
        shared = self._locks()
        stripes = self._to_take(ns, keys)
        whole = len(stripes) == STRIPES
        with shared.turns:  # threads of this process: one holder per stripe
            while not shared.held.isdisjoint(stripes):
                shared.turns.wait()
            shared.held.update(stripes)
        try:
            fd = shared.fileno()
            if fd is None:
                yield
                return
            if whole:
                fcntl.lockf(fd, fcntl.LOCK_EX, STRIPES, 0, os.SEEK_SET)
            else:
                locked: list[int] = []
                try:
                    for stripe in stripes:
                        fcntl.lockf(fd, fcntl.LOCK_EX, 1, stripe, os.SEEK_SET)
                        locked.append(stripe)
                except BaseException:
                    for stripe in locked:
                        fcntl.lockf(fd, fcntl.LOCK_UN, 1, stripe, os.SEEK_SET)
                    raise
            try:
                yield
            finally:
                # only the stripes held here: other threads of this process hold others
                if whole:
                    fcntl.lockf(fd, fcntl.LOCK_UN, STRIPES, 0, os.SEEK_SET)
                else:
                    for stripe in stripes:
                        fcntl.lockf(fd, fcntl.LOCK_UN, 1, stripe, os.SEEK_SET)
        finally:
            with shared.turns:
                shared.held.difference_update(stripes)
                shared.turns.notify_all()


__all__ = ["STRIPES", "WHOLE", "KeyLocks"]

"""Stores that fail on demand, for the resilience tests (no server needed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.inprocess import InProcessBackend


def refused(message: str) -> pm.BackendUnavailable:
    """What a driver reports for a refused connection (the write cannot have landed)."""
    err = pm.BackendUnavailable(message)
    err.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return err


class Flaky(InProcessBackend):
    """An in-process store that can be down, fail a number of calls, or stall.

    ``down``: every call raises ``BackendUnavailable``. ``fail(n, error)``: the next ``n``
    calls raise ``error``, *after* doing their work when ``applied=True`` (a write whose
    answer was lost); ``fail_every(n)``: every n-th call does. ``stall()``: calls block
    until ``release()``.
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.down = False
        self.calls: list[str] = []
        self._failures: list[tuple[BaseException, bool]] = []
        self._gate = threading.Event()
        self._gate.set()
        self._every: tuple[int, bool] | None = None

    def fail(self, n: int, error: BaseException | None = None, *, applied: bool = False) -> None:
        error = error or refused("connection refused")
        self._failures += [(error, applied)] * n

    def fail_every(self, n: int, *, applied: bool = True) -> None:
        """From now on every ``n``-th call fails (after doing its work when ``applied``)."""
        self._every = (n, applied)

    def stall(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def _call(self, name: str, work: Callable[[], Any]) -> Any:
        self.calls.append(name)
        if not self._gate.wait(30):
            raise AssertionError("stalled for 30 s")
        if self.down:
            raise refused(f"{name}: store is down")
        if self._every and len(self.calls) % self._every[0] == 0:
            self._failures.append((pm.BackendUnavailable("connection reset"), self._every[1]))
        if self._failures:
            error, applied = self._failures.pop(0)
            if applied:
                work()
            raise error
        return work()

    def get_many(self, ns: str, keys: Any, *, now: float, touch: bool = False) -> Any:
        return self._call(
            "get_many", lambda: super(Flaky, self).get_many(ns, keys, now=now, touch=touch)
        )

    def put_many(self, ns: str, records: Any, *, now: float) -> None:
        self._call("put_many", lambda: super(Flaky, self).put_many(ns, records, now=now))

    def delete_many(self, ns: str, keys: Any, *, now: float) -> int:
        return self._call("delete_many", lambda: super(Flaky, self).delete_many(ns, keys, now=now))

    def exists_many(self, ns: str, keys: Any, *, now: float) -> Any:
        return self._call("exists_many", lambda: super(Flaky, self).exists_many(ns, keys, now=now))

    def put_absent_many(self, ns: str, records: Any, *, now: float) -> Any:
        return self._call(
            "put_absent_many", lambda: super(Flaky, self).put_absent_many(ns, records, now=now)
        )

    def delete_if_unchanged(self, ns: str, expected: Any, *, now: float) -> Any:
        return self._call(
            "delete_if_unchanged",
            lambda: super(Flaky, self).delete_if_unchanged(ns, expected, now=now),
        )

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Any:
        keys = self._call("scan", lambda: list(super(Flaky, self).scan(ns, pattern, now=now)))
        return iter(keys)

    def tagged(self, ns: str, tags: Any, *, now: float) -> Any:
        return self._call("tagged", lambda: super(Flaky, self).tagged(ns, tags, now=now))

    def ping(self) -> None:
        self._call("ping", lambda: None)


@pytest.fixture
def flaky() -> type[Flaky]:
    return Flaky

"""A race of a hybrid memory stated step by step, for any pair of stores (the resilience
suite runs it on in-process stores and Redis + SQLite, the Cluster suite on a Redis Cluster).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prefect_memory.hybrid import HybridMemory
from prefect_memory.plugins.base import Backend

#: Bound on every wait: a broken lock fails the test instead of hanging it.
WAIT = 20.0


def gate_refills(store: Backend, before: Callable[[], None]) -> None:
    """Make ``store`` run ``before`` when the thread named ``R`` refills it."""

    class Gated(type(store)):  # type: ignore[misc]
        def put_absent_many(self, ns: str, records: Any, *, now: float) -> set[str]:
            if threading.current_thread().name == "R":
                before()
            return super().put_absent_many(ns, records, now=now)

    store.__class__ = Gated


def check_refill_overtaken_by_delete(
    primary: Backend, secondary: Backend, strategy: str, journal: str
) -> None:
    """A read misses the primary and reads ``v`` from the secondary; a delete of the key is
    acknowledged before the read's refill of the primary lands: the refill is taken back,
    both stores end without the key, and ``sync`` leaves it deleted."""
    mem = HybridMemory(
        primary, secondary, strategy=strategy, journal=journal, flush_interval=3600.0,
        namespace="ns",
    )  # fmt: skip
    try:
        mem.set("k", "v")
        mem.flush()
        primary.delete_many("ns", ["k"], now=time.time())  # the primary lost it (restart)
        at_refill, deleted = threading.Event(), threading.Event()

        def hold() -> None:
            at_refill.set()  # R read "v" from the secondary; its refill waits for the delete
            assert deleted.wait(WAIT)

        gate_refills(primary, hold)
        answered: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: answered.update(v=mem.get("k")), name="R")
        reader.start()
        assert at_refill.wait(WAIT)
        assert mem.delete("k")  # acknowledged while R's refill is in flight
        deleted.set()
        reader.join(WAIT)
        assert not reader.is_alive()
        assert answered["v"] in ("v", None)  # the read overlapped the delete: either
        mem.flush()
        now = time.time()
        assert primary.get_many("ns", ["k"], now=now) == {}  # the refill was taken back
        assert secondary.get_many("ns", ["k"], now=now) == {}
        assert mem.get("k") is None
        mem.sync()
        assert mem.get("k") is None and secondary.get_many("ns", ["k"], now=now) == {}
    finally:
        mem.clear()
        mem.close()

"""Helpers of the fault tests: a stream of operations, timed faults, reading stores raw."""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from faults.ledger import Ledger
from prefect_memory.codecs import Codec
from prefect_memory.plugins.base import Backend
from prefect_memory.resilience import CircuitBreaker

#: Fast failure detection for tests: a dead server answers "refused" at once; a stalled
#: one is given up on after TIMEOUT seconds; the breaker stops waiting after two failures.
TIMEOUT = 0.5

#: Seconds after a store write that may land late before a hybrid rechecks its keys
#: (``recheck_after``; default 30): longer than the 5-6 s SeaweedFS was seen holding a
#: put after a restart, short enough to keep the suite quick. ``settle`` waits for it.
RECHECK = 8.0


def breaker(threshold: int = 2, reset: float = 0.2) -> CircuitBreaker:
    """A breaker template that opens fast and tries again soon (tests run in seconds)."""
    return CircuitBreaker(failure_threshold=threshold, reset_timeout=reset)


def stream(
    mem: Any,
    ledger: Ledger,
    keys: list[str],
    ops: int,
    *,
    seed: int,
    at: dict[int, Callable[[], None]] | None = None,
    deletes: float = 0.1,
    reads: float = 0.2,
) -> None:
    """``ops`` random puts, deletes and reads of ``keys``; ``at[i]`` runs before op ``i``."""
    rng = random.Random(seed)
    for i in range(ops):
        if at and i in at:
            at[i]()
        key = rng.choice(keys)
        roll = rng.random()
        if roll < deletes:
            ledger.delete(mem, key)
        elif roll < deletes + reads:
            ledger.read(mem, key)
        else:
            ledger.put(mem, key)


class Later:
    """Run ``action`` in a thread after a random short delay (lands mid-operation)."""

    def __init__(self, action: Callable[[], Any], *, max_delay: float = 0.02, seed: int = 0):
        self.delay = random.Random(seed).uniform(0.0, max_delay)
        self.action = action
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Later:
        self.thread.start()
        return self

    def _run(self) -> None:
        time.sleep(self.delay)
        try:
            self.action()
        except BaseException as err:  # reported by join()
            self.error = err

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "fault action did not finish"
        if self.error is not None:
            raise self.error


def when(condition: Callable[[], bool], action: Callable[[], Any], *, limit: float = 30.0) -> Later:
    """Run ``action`` in a thread as soon as ``condition()`` holds (polled every ms)."""

    def wait_then_act() -> None:
        deadline = time.monotonic() + limit
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("fault condition never held")
            time.sleep(0.001)
        action()

    return Later(wait_then_act, max_delay=0.0).start()


def read_raw(backend: Backend, ns: str, keys: Iterable[str]) -> dict[str, Any]:
    """Decoded values of ``keys`` straight from one store (no hybrid, no tiers, no touch)."""
    codec = Codec()
    keys = list(keys)
    out: dict[str, Any] = {}
    for start in range(0, len(keys), 100):  # mongoeco refuses very large $in filters
        found = backend.get_many(ns, keys[start : start + 100], now=time.time(), touch=False)
        out.update((key, codec.decode(record.value)) for key, record in found.items())
    return out


def scanned(backend: Backend, ns: str) -> list[str]:
    return list(backend.scan(ns, None, now=time.time()))


@contextlib.contextmanager
def started(*servers: Any) -> Iterator[None]:
    """Start private servers; stop them (and remove kept data) afterwards."""
    try:
        for server in servers:
            server.start()
        try:
            yield
        except Exception:  # a failure shows what the servers logged
            for server in servers:
                print(f"--- {type(server).__name__} log tail ---\n{server.log_tail(40)}")
            raise
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop(timeout=3)
            if getattr(server, "keep_data", False) and server.data_dir is not None:
                shutil.rmtree(server.data_dir, ignore_errors=True)


def bounded(seconds: float, call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Run ``call``; return how long it took and the error it raised (``None`` if none)."""
    began = time.monotonic()
    try:
        call()
    except Exception as err:
        return time.monotonic() - began, err
    took = time.monotonic() - began
    assert took <= seconds, f"call took {took:.2f}s (bound {seconds}s)"
    return took, None

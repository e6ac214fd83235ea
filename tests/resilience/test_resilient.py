"""ResilientBackend: retries at the backend boundary, breaker, deadline, ambiguous writes."""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.base import Record
from prefect_memory.resilience import (
    CircuitBreaker,
    CircuitOpen,
    ConstantBackoff,
    ResilientBackend,
    Retry,
)
from prefect_memory.tiers import Tier, TieredMemory

FAST = Retry(ConstantBackoff(0.001), attempts=4)


def test_transient_errors_are_retried_bad_input_is_not(flaky: Any) -> None:
    store = flaky()
    mem = pm.Memory(ResilientBackend(store, retry=FAST), "ns")
    store.fail(2)
    mem.set("k", 1)  # two refused attempts, then it works
    assert mem.get("k") == 1 and store.calls.count("put_many") == 3
    store.fail(1, pm.BackendError("WRONGTYPE"))
    with pytest.raises(pm.BackendError):
        mem.get("k")
    with pytest.raises(pm.InvalidKeyError):
        mem.set("", 1)  # refused by the memory before any store call


def test_open_breaker_answers_at_once_and_is_not_retried(flaky: Any) -> None:
    store = flaky()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    backend = ResilientBackend(store, retry=FAST, breaker=breaker)
    mem = pm.Memory(backend, "ns")
    store.down = True
    with pytest.raises(CircuitOpen):  # 2 attempts fail, the 3rd is refused by the breaker
        mem.get("k")
    assert store.calls.count("get_many") == 2 and breaker.name == store.url
    began = time.monotonic()
    with pytest.raises(CircuitOpen):
        mem.get("k")
    assert time.monotonic() - began < 0.05 and store.calls.count("get_many") == 2


def test_deadline_bounds_a_stalled_call_and_fences_late_writes(flaky: Any) -> None:
    store = flaky()
    backend = ResilientBackend(store, deadline=0.2, max_stuck=2)
    mem = pm.Memory(backend, "ns")
    mem.set("k", "old")
    store.stall()
    began = time.monotonic()
    with pytest.raises(pm.BackendTimeout):
        mem.set("k", "abandoned")
    assert time.monotonic() - began < 1.0 and backend.stuck == 1
    with pytest.raises(pm.BackendUnavailable, match="still running"):
        mem.set("k", "newer")  # would race the abandoned write: refused
    with pytest.raises(pm.BackendTimeout):
        mem.get("k")  # reads are allowed, and bounded
    with pytest.raises(pm.BackendUnavailable, match="workers are stuck"):
        mem.get("k")  # every worker is stuck: fail at once
    store.release()
    deadline = time.monotonic() + 5
    while backend.stuck and time.monotonic() < deadline:
        time.sleep(0.01)
    mem.set("k", "newer")
    assert mem.get("k") == "newer"  # the abandoned write landed before, never after


def test_ambiguous_conditional_writes_are_reconciled(flaky: Any) -> None:
    store = flaky()
    backend = ResilientBackend(store, retry=FAST)
    now = time.time()
    record = Record(b"v", now, now, now)
    store.fail(1, applied=True)  # written, but the answer was lost
    assert backend.put_absent_many("ns", {"k": record}, now=now) == {"k"}
    token = backend.get_many("ns", ["k"], now=now)["k"].token
    store.fail(1, applied=True)  # deleted, but the answer was lost
    assert backend.delete_if_unchanged("ns", {"k": token}, now=now) == {"k"}
    assert backend.get_many("ns", ["k"], now=now) == {}


def test_tiered_move_over_a_flaky_store_loses_nothing(flaky: Any) -> None:
    hot, warm = flaky(), flaky()
    rule = {"from": "hot", "to": "warm", "condition": "accessCount < 1"}
    mem = TieredMemory(
        [Tier("hot", ResilientBackend(hot, retry=FAST)),
         Tier("warm", ResilientBackend(warm, retry=FAST))],
        [rule], namespace="ns",
    )  # fmt: skip
    data = {f"k{i}": i for i in range(50)}
    mem.set_many(data)
    hot.fail_every(3)  # the answer of every 3rd call is lost after the call did its work
    warm.fail_every(4)
    mem.migrate(batch_size=7)
    hot.fail_every(10**9)
    warm.fail_every(10**9)
    assert sorted(warm.scan("ns", None, now=time.time())) == sorted(data)
    assert list(hot.scan("ns", None, now=time.time())) == []
    assert mem.get_many(list(data)) == data  # (and promoted back home: the hot tier)


def test_scan_restarts_after_a_failure_without_repeating_keys(flaky: Any) -> None:
    store = flaky()
    backend = ResilientBackend(store, retry=FAST)
    pm.Memory(backend, "ns").set_many({f"k{i}": i for i in range(5)})
    store.fail(1)
    assert sorted(backend.scan("ns", None, now=time.time())) == [f"k{i}" for i in range(5)]


def test_resilient_backend_composes_and_pickles() -> None:
    backend = ResilientBackend.from_url(
        "memory://shared-resilient", retry=FAST, breaker=CircuitBreaker(), deadline=5
    )
    mem = pm.Memory(backend, "ns")
    mem.set("k", 1)
    clone = pickle.loads(pickle.dumps(mem))
    assert clone.get("k") == 1 and clone.backend.breaker.state.value == "closed"
    assert backend.capabilities.persistent is False  # the inner store's
    with pytest.raises(pm.ConfigError):
        ResilientBackend(backend, deadline=0)


def test_concurrent_calls_share_the_deadline_pool(flaky: Any) -> None:
    backend = ResilientBackend(flaky(), deadline=2.0, max_stuck=4)
    mem = pm.Memory(backend, "ns")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(50):
                mem.set(f"k{i}", j)
                assert mem.get(f"k{i}") == j
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors

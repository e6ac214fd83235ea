"""Retry policies and circuit breakers, on their own (fake clocks, no sleeping)."""

from __future__ import annotations

import inspect
import pickle
import random
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.resilience import (
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    ConstantBackoff,
    ExponentialBackoff,
    Retry,
    prefect_events_listener,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(errors: list[BaseException], result: Any = "ok") -> Any:
    calls = []

    def fn() -> Any:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_exponential_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    plain = ExponentialBackoff(0.5, cap=10, jitter=False)
    assert [plain.compute(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert plain.compute(10_000) == 10  # no overflow
    jittered = ExponentialBackoff(0.5, cap=10, rng=random.Random(7))
    delays = [jittered.compute(n) for n in range(1, 200)]
    assert all(0 <= d <= 10 for d in delays) and len(set(delays)) > 100
    with pytest.raises(pm.ConfigError):
        ExponentialBackoff(0)


def test_retry_retries_transient_errors_with_backoff() -> None:
    clock = Clock()
    retry = Retry(ConstantBackoff(0.25), attempts=4, sleep=clock.sleep, clock=clock)
    fn = failing([pm.BackendUnavailable("refused"), pm.BackendTimeout("slow")])
    assert retry.call(fn) == "ok"
    assert len(fn.calls) == 3 and clock.slept == [0.25, 0.25]
    fn = failing([pm.BackendUnavailable("x")] * 4)
    with pytest.raises(pm.BackendUnavailable):
        retry.call(fn)
    assert len(fn.calls) == 4  # attempts counts the first one


@pytest.mark.parametrize(
    "error",
    [
        pm.ConfigError("bad option"),
        pm.InvalidKeyError("empty key"),
        pm.SerializationError("cannot encode"),
        pm.ValidationError([]),
        pm.BackendError("WRONGTYPE"),
        CircuitOpen("open", breaker="b"),
        ValueError("plain bug"),
    ],
)
def test_bad_input_and_open_breakers_are_never_retried(error: BaseException) -> None:
    clock = Clock()
    retry = Retry(ConstantBackoff(1), attempts=5, sleep=clock.sleep, clock=clock)
    fn = failing([error])
    with pytest.raises(type(error)):
        retry.call(fn)
    assert len(fn.calls) == 1 and clock.slept == []


def test_retry_deadline_bounds_the_whole_call() -> None:
    clock = Clock()
    retry = Retry(ConstantBackoff(1.0), attempts=100, deadline=3.5, sleep=clock.sleep, clock=clock)
    fn = failing([pm.BackendUnavailable("x")] * 100)
    with pytest.raises(pm.BackendUnavailable):
        retry.call(fn)
    assert sum(clock.slept) <= 3.5 and len(fn.calls) == 4


def test_retry_pickles_and_validates() -> None:
    retry = pickle.loads(pickle.dumps(Retry(ExponentialBackoff(0.1), attempts=2)))
    assert retry.attempts == 2 and retry.retries(pm.BackendUnavailable("x"))
    with pytest.raises(pm.ConfigError):
        Retry(attempts=0)


def test_breaker_opens_refuses_at_once_then_half_opens_and_closes() -> None:
    clock = Clock()
    events: list[BreakerEvent] = []
    breaker = CircuitBreaker("store", failure_threshold=3, reset_timeout=10, clock=clock,
                             listeners=[events.append])  # fmt: skip
    down = failing([pm.BackendUnavailable("refused")] * 10)
    for _ in range(3):
        with pytest.raises(pm.BackendUnavailable):
            breaker.call(down)
    assert breaker.state is BreakerState.OPEN and len(down.calls) == 3
    with pytest.raises(CircuitOpen) as info:
        breaker.call(down)
    assert len(down.calls) == 3  # the store was not called
    assert isinstance(info.value, pm.BackendUnavailable) and info.value.retry_after == 10
    clock.now = 10.0
    with pytest.raises(pm.BackendUnavailable):  # the trial fails: open again
        breaker.call(down)
    assert breaker.state is BreakerState.OPEN and breaker.retry_after() == 10
    clock.now = 25.0
    assert breaker.call(lambda: 42) == 42
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0
    assert [e.name for e in events] == [
        "prefect-memory.breaker.opened",
        "prefect-memory.breaker.half-opened",
        "prefect-memory.breaker.opened",
        "prefect-memory.breaker.half-opened",
        "prefect-memory.breaker.closed",
    ]
    assert events[0].error and "refused" in events[0].error and events[0].failures == 3


def test_breaker_counts_only_transient_errors_and_successes_reset() -> None:
    breaker = CircuitBreaker("s", failure_threshold=2)
    for error in (pm.BackendUnavailable("x"), pm.BackendError("server said no")):
        with pytest.raises(type(error)):
            breaker.call(failing([error]))
    with pytest.raises(pm.BackendUnavailable):
        breaker.call(failing([pm.BackendUnavailable("y")]))
    assert breaker.state is BreakerState.CLOSED  # the answered error reset the count


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker("s", failure_threshold=1, reset_timeout=1, clock=clock)
    with pytest.raises(pm.BackendUnavailable):
        breaker.call(failing([pm.BackendUnavailable("x")]))
    clock.now = 2.0
    breaker.before_call()  # the trial is in flight
    with pytest.raises(CircuitOpen, match="trial call is in progress"):
        breaker.before_call()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_a_failing_listener_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")

    breaker = CircuitBreaker("s", failure_threshold=1, listeners=[broken])
    with pytest.raises(pm.BackendUnavailable):
        breaker.call(failing([pm.BackendUnavailable("x")]))
    assert breaker.state is BreakerState.OPEN
    assert "listener" in caplog.text


def quiet(event: BreakerEvent) -> None:
    """A picklable listener that does nothing."""


def test_breaker_pickles_closed_with_its_settings() -> None:
    breaker = CircuitBreaker("s", failure_threshold=1, reset_timeout=7, listeners=[quiet])
    with pytest.raises(pm.BackendUnavailable):
        breaker.call(failing([pm.BackendUnavailable("x")]))
    clone = pickle.loads(pickle.dumps(breaker))
    assert clone.state is BreakerState.CLOSED and clone.reset_timeout == 7
    assert clone.listeners == [quiet]
    assert pickle.loads(pickle.dumps(prefect_events_listener("r"))).resource_id == "r"


def test_prefect_events_listener_emits_named_events(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    emitted: list[dict[str, Any]] = []
    real = inspect.signature(prefect.events.emit_event)

    def fake_emit(**kwargs: Any) -> None:
        real.bind(**kwargs)  # the arguments fit Prefect's own emit_event
        emitted.append(kwargs)

    monkeypatch.setattr(prefect.events, "emit_event", fake_emit)
    clock = Clock()
    breaker = CircuitBreaker("redis://cache:6379/0", failure_threshold=1, reset_timeout=1,
                             clock=clock, listeners=[prefect_events_listener()])  # fmt: skip
    with pytest.raises(pm.BackendUnavailable):
        breaker.call(failing([pm.BackendUnavailable("refused")]))
    clock.now = 5
    breaker.call(lambda: None)
    assert [e["event"] for e in emitted] == [
        "prefect-memory.breaker.opened",
        "prefect-memory.breaker.half-opened",
        "prefect-memory.breaker.closed",
    ]
    first = emitted[0]
    assert first["resource"]["prefect.resource.id"] == "prefect-memory.breaker.redis://cache:6379/0"
    assert first["payload"]["new_state"] == "open" and first["payload"]["failures"] == 1

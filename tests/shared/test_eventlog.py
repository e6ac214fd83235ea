"""EventLog on a real redis-server: append, state, snapshots (in another store), rebuild."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.shared import EventLog

pytestmark = pytest.mark.redis


def balance(state: dict[str, int], event: dict[str, Any]) -> dict[str, int]:
    return {**state, event["acct"]: state.get(event["acct"], 0) + event["amount"]}


def test_append_rebuild_snapshot_broadcast(redis_url: str, prefix: str, tmp_path: Any) -> None:
    mem = pm.open_memory(redis_url, namespace="es", key_prefix=prefix)
    snaps = pm.open_memory(f"sqlite:///{tmp_path}/snaps.db", namespace="es")  # any Memory
    log = EventLog(mem, "ledger", balance, snapshot_every=10, initial={}, snapshots=snaps)
    reader = EventLog(mem, "ledger", balance, snapshot_every=0, initial={})
    heard: list[tuple[str, Any]] = []
    done = threading.Event()
    reader.subscribe(lambda i, e: (heard.append((i, e)), len(heard) == 25 and done.set()))
    ids = log.append(*({"acct": "a", "amount": 1} for _ in range(20)))
    assert len(set(ids)) == 20
    log.append({"acct": "b", "amount": 5}, {"acct": "a", "amount": -3})
    log.append(*({"acct": "c", "amount": 2} for _ in range(3)))
    assert log.state == {"a": 17, "b": 5, "c": 6}
    assert done.wait(5) and [e for _, e in heard][:2] == [{"acct": "a", "amount": 1}] * 2
    assert reader.state == log.state  # another process' view: folds the stream

    saved = snaps.get("eventlog:ledger:snapshot")  # taken after the 20th event
    assert saved == {"state": {"a": 20}, "last_id": ids[-1]}
    fresh = EventLog(mem, "ledger", balance, snapshot_every=10, initial={}, snapshots=snaps)
    calls = []
    fresh.reducer = lambda s, e: (calls.append(e), balance(s, e))[1]
    assert fresh.rebuild() == {"a": 17, "b": 5, "c": 6}
    assert len(calls) == 5  # the snapshot plus the 5 later events, not all 25

    assert log.compact() == 20  # the events the snapshot covers
    assert fresh.rebuild() == log.state
    assert len(log.events()) == 5
    reader.close()
    log.clear()
    assert log.rebuild() == {}


def test_bad_arguments(redis_url: str) -> None:
    mem = pm.open_memory(redis_url)
    with pytest.raises(pm.ConfigError):
        EventLog(mem, "x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(pm.ConfigError):
        EventLog(mem, "x", balance, snapshot_every=-1)
    with pytest.raises(pm.ConfigError, match="redis"):
        EventLog(pm.open_memory("memory://"), "x", balance)

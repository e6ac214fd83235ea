"""CRDT types on a real redis-server: processes counting at once, merges of exported states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.shared import GCounter, LWWMap, ORSet, PNCounter, crdt

WORKERS = Path(__file__).with_name("_workers.py")


@pytest.fixture
def mem(redis_url: str, prefix: str) -> pm.Memory:
    return pm.open_memory(redis_url, namespace="crdt", key_prefix=prefix)


@pytest.mark.redis
def test_gcounter_processes_give_the_exact_total(redis_url: str, prefix: str, mem: Any) -> None:
    workers, times = 4, 400
    procs = [
        subprocess.Popen([sys.executable, str(WORKERS), "count", redis_url, prefix, f"p{i % 2}",
                          str(times)])  # two processes share each replica id: still exact
        for i in range(workers)
    ]  # fmt: skip
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    counter = GCounter(mem, "hits")
    assert counter.value() == workers * times
    assert counter.state() == {"p0": 2 * times, "p1": 2 * times}


@pytest.mark.redis
def test_redis_types_merge_like_the_plain_states(mem: Any, redis_url: str, prefix: str) -> None:
    other = pm.open_memory(redis_url, namespace="other", key_prefix=prefix)
    a, b = GCounter(mem, "g", replica="a"), GCounter(other, "g", replica="b")
    a.increment(3), b.increment(4), b.increment(1)
    expected = crdt.merge_gcounter(a.state(), b.state())
    a.merge(b.state()), a.merge(b.state())  # idempotent
    assert a.state() == expected and a.value() == 8
    with pytest.raises(pm.ConfigError):
        a.increment(-1)

    p, q = PNCounter(mem, "pn", replica="p"), PNCounter(other, "pn", replica="q")
    p.increment(5), p.decrement(2), q.decrement(4)
    p.merge(q.state())
    assert p.value() == -1 and p.state() == crdt.merge_pncounter(p.state(), q.state())

    s, t = ORSet(mem, "set", replica="s"), ORSet(other, "set", replica="t")
    s.add("x", "y")
    t.merge(s.state())
    t.remove("x")  # t saw s's add of x and removes it...
    s.add("x")  # ...while s adds x again concurrently: add wins
    expected_set = crdt.merge_orset(s.state(), t.state())
    s.merge(t.state())
    assert s.members() == {"x", "y"} == set(crdt.orset_members(expected_set))
    assert "x" in s and "z" not in s
    t.merge(s.state())
    assert t.members() == s.members()
    assert s.remove("x", "nope") == 1 and s.members() == {"y"}

    m, n = LWWMap(mem, "map", replica="m"), LWWMap(other, "map", replica="n")
    assert m.set("k", {"v": 1}, ts=1.0) and n.set("k", {"v": 2}, ts=2.0)
    assert not m.set("k", "older", ts=0.5) or m.get("k") != "older"
    n.set("gone", 1, ts=1.0), n.delete("gone", ts=3.0)
    m.merge(n.state())
    assert m.value() == {"k": {"v": 2}}
    assert not m.set("gone", "revived?", ts=2.0)  # the tombstone is newer
    assert m.state()["gone"][2] is True
    for item in (a, p, s, m):
        item.clear()

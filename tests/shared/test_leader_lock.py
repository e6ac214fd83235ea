"""Leases with fencing, leader failover after a SIGKILL, and the distributed lock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import prefect_memory as pm
from prefect_memory.errors import FencingError
from prefect_memory.shared import DistributedLock, DistributedLockManager, LeaderFollower, Lease

pytestmark = pytest.mark.redis
WORKERS = Path(__file__).with_name("_workers.py")


def test_failover_after_the_leader_process_is_killed(redis_url: str, prefix: str) -> None:
    lease = 1.0
    leader = subprocess.Popen(
        [sys.executable, str(WORKERS), "lead", redis_url, prefix, str(lease)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = leader.stdout.readline() if leader.stdout else ""
        assert line.startswith("leader "), line
        old_token = int(line.split()[1])
        mem = pm.open_memory(redis_url, namespace="lf", key_prefix=prefix)
        follower = LeaderFollower(mem, "cfg", lease=lease, candidate="follower")
        assert follower.step() == "follower" and follower.state == {"x": 1}
        follower.set("y", 2)  # a local edit...
        assert follower.step() == "follower" and follower.state == {"x": 1}  # ...leader wins
        time.sleep(2 * lease)  # the live leader renews: still a follower
        assert follower.step() == "follower"
        leader.kill()
        leader.wait(10)
        killed = time.monotonic()
        while follower.step() != "leader":
            assert time.monotonic() - killed < lease + 1.0, "no failover within the lease"
            time.sleep(0.05)
        assert follower.token is not None and follower.token > old_token
        follower.set("x", 10)
        with pytest.raises(FencingError) as info:
            follower.publish(token=old_token)  # the stale leader's write
        assert info.value.token == old_token and info.value.current == follower.token
        other = LeaderFollower(mem, "cfg", lease=lease)
        assert other.step() == "follower" and other.state == {"x": 10}
    finally:
        leader.kill()
        leader.wait(10)


def test_lease_terms(redis_url: str, prefix: str) -> None:
    mem = pm.open_memory(redis_url, namespace="lease", key_prefix=prefix)
    a, b = Lease(mem, "job", lease=0.3), Lease(mem, "job", lease=0.3)
    first = a.campaign()
    assert first is not None and b.campaign() is None
    assert a.campaign() == first and a.renew()  # renewal keeps the term
    assert b.leader() == (a.candidate, first)
    time.sleep(0.5)
    assert not a.renew() and not a.is_leader
    second = b.campaign()
    assert second is not None and second > first
    b.resign()
    assert a.campaign() == second + 1


def test_distributed_lock(redis_url: str, prefix: str) -> None:
    mem = pm.open_memory(redis_url, namespace="locks", key_prefix=prefix)
    with DistributedLock(mem, "report", hold=5) as lock:
        assert lock.token is not None and lock.check() == lock.token
        other = DistributedLock(mem, "report", hold=5)
        assert not other.acquire(timeout=0.1)
        with pytest.raises(TimeoutError, match="not acquired"):
            DistributedLock(mem, "report", acquire_timeout=0.1).__enter__()
    assert not lock.locked()
    short = DistributedLock(mem, "crash", hold=0.3)
    assert short.acquire()
    stale = short.token
    started = time.monotonic()
    with DistributedLock(mem, "crash", hold=5, acquire_timeout=3) as after:
        assert 0.1 < time.monotonic() - started < 2  # waited for the hold timeout only
        assert after.token == stale + 1
        with pytest.raises(FencingError):
            short.check()  # the crashed holder's token is stale
        assert not short.release()  # and cannot release its successor's lock
        assert after.extend(10)


def test_lock_manager_protocol_and_prefect(redis_url: str, prefix: str) -> None:
    from prefect.locking.protocol import LockManager

    mem = pm.open_memory(redis_url, namespace="prefect", key_prefix=prefix)
    locks = DistributedLockManager(mem, hold_timeout=30)
    assert isinstance(locks, LockManager)
    assert locks.acquire_lock("k", "a") and locks.acquire_lock("k", "a")  # holder refreshes
    assert not locks.acquire_lock("k", "b", acquire_timeout=0)
    assert locks.is_locked("k") and locks.is_lock_holder("k", "a")
    with pytest.raises(ValueError, match="No lock held by b"):
        locks.release_lock("k", "b")
    released = threading.Timer(0.2, locks.release_lock, ("k", "a"))
    released.start()
    assert locks.wait_for_lock("k", timeout=3)
    assert asyncio.run(locks.aacquire_lock("k", "b", hold_timeout=0.3))
    assert asyncio.run(locks.await_for_lock("k", timeout=3))  # expired by its hold timeout
    assert not locks.is_locked("k")


def test_lease_and_lock_need_redis() -> None:
    with pytest.raises(pm.ConfigError, match="redis"):
        DistributedLock(pm.open_memory("memory://"), "x")
    with pytest.raises(pm.ConfigError, match="lease"):
        Lease("redis://127.0.0.1:1/0", "x", lease=0)

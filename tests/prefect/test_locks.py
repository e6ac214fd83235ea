"""Lock managers with a hold timeout: Redis (SET NX PX) and the generic one on a memory."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.cache_policies import INPUTS
from prefect.locking.protocol import LockManager
from prefect.transactions import IsolationLevel

from prefect_memory.blocks import (
    InProcessMemory,
    MemoryBlock,
    MemoryLockManager,
    RedisLockManager,
    RedisMemory,
    SqliteMemory,
)

MakeBlock = Callable[..., MemoryBlock]
LOCK_BLOCKS = [RedisMemory, SqliteMemory, InProcessMemory]


@pytest.fixture(params=LOCK_BLOCKS, ids=lambda c: c.__name__)
def locks(request: pytest.FixtureRequest, make_block: MakeBlock) -> MemoryLockManager:
    return make_block(request.param).lock_manager(hold_timeout=30)


def test_the_right_manager_for_each_block(make_block: MakeBlock) -> None:
    assert type(make_block(RedisMemory).lock_manager()) is RedisLockManager
    assert type(make_block(SqliteMemory).lock_manager()) is MemoryLockManager
    assert isinstance(make_block(SqliteMemory).lock_manager(), LockManager)


def test_acquire_contend_release(locks: MemoryLockManager) -> None:
    assert locks.acquire_lock("k", "a") is True
    assert locks.acquire_lock("k", "a") is True  # re-entrant for its holder
    assert locks.acquire_lock("k", "b", acquire_timeout=0) is False
    assert locks.is_locked("k") and locks.is_lock_holder("k", "a")
    assert not locks.is_lock_holder("k", "b")
    with pytest.raises(ValueError, match="No lock held by b"):
        locks.release_lock("k", "b")
    locks.release_lock("k", "a")
    assert not locks.is_locked("k")
    assert locks.acquire_lock("k", "b", acquire_timeout=0) is True


_COUNTER = """
import sys, time
from pathlib import Path
from prefect_memory.blocks import MemoryLockManager, SqliteMemory

db, counter, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
block = SqliteMemory(path=db, namespace="procs")
locks = MemoryLockManager(block, hold_timeout=30, poll_interval=0.0005)  # eager contenders
locks.is_locked("counter")  # connected and imported before the start line
(counter.parent / f"ready-{me}").touch()
while len(list(counter.parent.glob("ready-*"))) < 4:  # all start together
    time.sleep(0.01)
for _ in range(50):
    assert locks.acquire_lock("counter", holder=me, acquire_timeout=60)
    value = int(counter.read_text())  # read, think, write: lost updates without the lock
    time.sleep(0.002)
    counter.write_text(str(value + 1))
    locks.release_lock("counter", holder=me)
"""


def test_sqlite_locks_exclude_other_processes(tmp_path: Path) -> None:
    """Four processes increment one file under the lock: no increment is lost."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    script = tmp_path / "count.py"
    script.write_text(_COUNTER)
    args = [sys.executable, str(script), str(tmp_path / "locks.db"), str(counter)]
    procs = [
        subprocess.Popen([*args, f"p{n}"], stderr=subprocess.PIPE, text=True) for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    assert int(counter.read_text()) == 200


def test_a_lock_expires_after_its_hold_timeout(locks: MemoryLockManager) -> None:
    assert locks.acquire_lock("k", "crashed", hold_timeout=0.4)
    started = time.monotonic()
    assert locks.acquire_lock("k", "next", acquire_timeout=5)  # waits for the expiry only
    assert 0.2 < time.monotonic() - started < 3
    assert locks.is_lock_holder("k", "next")


def test_default_hold_timeout_applies_when_prefect_passes_none(make_block: MakeBlock) -> None:
    locks = make_block(RedisMemory).lock_manager(hold_timeout=30)
    assert isinstance(locks, RedisLockManager)
    locks.acquire_lock("k", "a")  # Prefect never passes hold_timeout
    remaining = locks.hold_remaining("k")
    assert remaining is not None and 25 < remaining <= 30
    generic = make_block(SqliteMemory).lock_manager(hold_timeout=30)
    generic.acquire_lock("k", "a")
    info = generic.memory.info("k")
    assert info is not None and info.ttl == 30


def test_wait_for_lock(locks: MemoryLockManager) -> None:
    assert locks.wait_for_lock("free", timeout=0) is True
    locks.acquire_lock("k", "a")
    assert locks.wait_for_lock("k", timeout=0.2) is False
    threading.Timer(0.3, locks.release_lock, args=("k", "a")).start()
    assert locks.wait_for_lock("k", timeout=5) is True


def test_async_twins(locks: MemoryLockManager) -> None:
    async def scenario() -> None:
        assert await locks.aacquire_lock("k", "a")
        assert not await locks.aacquire_lock("k", "b", acquire_timeout=0.1)
        assert not await locks.await_for_lock("k", timeout=0.1)
        locks.release_lock("k", "a")
        assert await locks.await_for_lock("k")

    asyncio.run(scenario())


def test_a_manager_pickles(locks: MemoryLockManager) -> None:
    locks.acquire_lock("k", "a")
    copy = pickle.loads(pickle.dumps(locks))
    assert copy.hold_timeout == 30
    if not isinstance(copy.block, InProcessMemory):  # in-process stores live in one process
        assert copy.is_lock_holder("k", "a")


def test_a_crashed_holder_does_not_block_the_next_run(make_block: MakeBlock, unique: str) -> None:
    block = make_block(RedisMemory, namespace="results")
    block.save(f"locks-{unique}")
    block = RedisMemory.load(f"locks-{unique}")
    locks = block.lock_manager(hold_timeout=30)
    policy = INPUTS.configure(isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=locks)
    calls: list[int] = []

    @task(cache_policy=policy, result_storage=block)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @flow
    def pipeline(x: int) -> int:
        return double(x)

    assert pipeline(8) == 16
    [key] = block.list_keys()
    assert not locks.is_locked(key)  # released after the commit
    assert pipeline(8) == 16 and calls == [8]  # cached

    block.purge_results()
    assert locks.acquire_lock(key, "a-run-that-crashed", hold_timeout=1.5)
    started = time.monotonic()
    assert pipeline(8) == 16
    assert 1.0 < time.monotonic() - started < 15
    assert calls == [8, 8] and not locks.is_locked(key)

"""Releasing a lock nobody holds is a no-op; releasing another holder's still raises.

Prefect releases a transaction's lock a second time at commit when a task retried inside
a SERIALIZABLE ``transaction()`` rolled it back already (PrefectHQ/prefect#17676, fixed in
prefect-redis's lock manager). Every lock manager of ours must take that second release.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL

from prefect_memory.blocks import (
    InProcessMemory,
    JsonMemory,
    MemoryBlock,
    MongoDBMemory,
    RedisMemory,
    SqliteMemory,
)
from prefect_memory.shared import DistributedLockManager
from prefect_memory.shared._leases import Terms
from prefect_memory.shared._redis import object_key, redis_backend

MakeBlock = Callable[..., MemoryBlock]
LockManager = Any  # ours: MemoryLockManager, RedisLockManager, DistributedLockManager

# (id, block class, whether the manager is the shared DistributedLockManager)
MANAGERS = [
    ("inprocess", InProcessMemory, False),
    ("sqlite", SqliteMemory, False),
    ("json", JsonMemory, False),
    ("mongo", MongoDBMemory, False),
    ("redis", RedisMemory, False),
    ("redis-distributed", RedisMemory, True),
]


def _manager(make_block: MakeBlock, cls: type[MemoryBlock], distributed: bool) -> LockManager:
    block = make_block(cls, namespace="results")
    if distributed:
        return DistributedLockManager(block.memory, hold_timeout=30)
    return block.lock_manager(hold_timeout=30)


@pytest.fixture(params=MANAGERS, ids=[m[0] for m in MANAGERS])
def locks(request: pytest.FixtureRequest, make_block: MakeBlock) -> LockManager:
    _id, cls, distributed = request.param
    return _manager(make_block, cls, distributed)


def test_a_second_release_is_a_no_op(locks: LockManager) -> None:
    assert locks.acquire_lock("k", "run-1")
    locks.release_lock("k", "run-1")
    locks.release_lock("k", "run-1")  # rolled back, then committed: must not raise
    locks.release_lock("never-locked", "run-1")
    assert not locks.is_locked("k")
    assert locks.acquire_lock("k", "run-2", acquire_timeout=0)


def test_releasing_another_holders_lock_still_raises(locks: LockManager) -> None:
    assert locks.acquire_lock("k", "run-2")
    with pytest.raises(ValueError, match="No lock held by run-1 for transaction with key k"):
        locks.release_lock("k", "run-1")
    assert locks.is_lock_holder("k", "run-2")  # untouched
    locks.release_lock("k", "run-2")
    locks.release_lock("k", "run-1")  # free now: a no-op for anyone


def test_releasing_an_expired_lock_is_a_no_op(locks: LockManager) -> None:
    assert locks.acquire_lock("k", "run-1", hold_timeout=0.2)
    assert locks.wait_for_lock("k", timeout=10)  # expired
    locks.release_lock("k", "run-1")
    assert not locks.is_locked("k")


def test_redis_terms_tell_free_from_another_term(make_block: MakeBlock) -> None:
    memory = make_block(RedisMemory, namespace="results").memory
    backend = redis_backend(memory)
    terms = Terms(backend, object_key(backend, "results", "lock", "k"))
    assert terms.end("a") == "free"
    token = terms.acquire("a", 30)
    assert token is not None
    assert terms.end("b") == "other"
    assert terms.end("a", token + 1) == "other"  # another term than the one named
    assert terms.end("a", token) == "released"
    assert terms.end("a") == "free"
    assert terms.release("a") is False  # the boolean form keeps its meaning


def test_the_redis_lock_layout_is_unchanged(make_block: MakeBlock) -> None:
    """A lock written by the previous release (a plain string key) is released by this one."""
    import redis

    block: Any = make_block(RedisMemory, namespace="results")
    locks = block.lock_manager(hold_timeout=30)
    client = redis.Redis.from_url(block.url)
    try:
        name = locks._name("k")
        client.set(name, "old-run", px=30_000)  # what the previous release stores
        assert locks.is_lock_holder("k", "old-run")
        with pytest.raises(ValueError):
            locks.release_lock("k", "new-run")
        locks.release_lock("k", "old-run")
        assert client.get(name) is None
    finally:
        client.close()


# -- the defect as users met it ------------------------------------------------------------
# In a fresh process, as it was met: in a process that already ran such a flow, Prefect
# took another path and the old managers passed by chance.
_RETRIED_IN_TRANSACTION = """
import sys
from prefect import flow, task
from prefect.results import ResultStore
from prefect.transactions import IsolationLevel, transaction
from prefect_memory.blocks import InProcessMemory, RedisMemory, SqliteMemory
from prefect_memory.shared import DistributedLockManager

cls = {"SqliteMemory": SqliteMemory, "RedisMemory": RedisMemory,
       "InProcessMemory": InProcessMemory}[sys.argv[1]]
block = cls.load(sys.argv[2])
if sys.argv[3] == "distributed":
    locks = DistributedLockManager(block.memory, hold_timeout=30)
else:
    locks = block.lock_manager(hold_timeout=30)
store = ResultStore(result_storage=block, lock_manager=locks)
calls = []

@task(retries=1, result_storage=block, persist_result=True)
def can_fail(x):
    calls.append(x)
    if len(calls) == 1:
        raise RuntimeError("the first try fails")
    return 2 * x

@flow
def pipeline(x):
    with transaction(key="pipeline", store=store, isolation_level=IsolationLevel.SERIALIZABLE):
        return can_fail(x)

state = pipeline(21, return_state=True)
print("STATE", state.type.value, state.message)
assert state.is_completed(), state.message
assert state.result() == 42 and calls == [21, 21], calls
assert not locks.is_locked("pipeline")
"""
FLOW_CASES = [
    ("sqlite", SqliteMemory, "block-manager"),
    ("redis", RedisMemory, "block-manager"),
    ("inprocess", InProcessMemory, "block-manager"),
    ("redis-distributed", RedisMemory, "distributed"),
]


@pytest.mark.parametrize(
    ("cls", "manager"), [c[1:] for c in FLOW_CASES], ids=[c[0] for c in FLOW_CASES]
)
def test_a_retried_task_inside_a_serializable_transaction_commits(
    make_block: MakeBlock, unique: str, tmp_path: Path, cls: type[MemoryBlock], manager: str
) -> None:
    """PrefectHQ/prefect#17676 with our blocks: the flow used to fail at commit with
    ``ValueError: No lock held by ... for transaction with key pipeline``."""
    make_block(cls, namespace="results").save(f"retry-{unique}")
    script = tmp_path / "retried.py"
    script.write_text(_RETRIED_IN_TRANSACTION)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [sys.executable, str(script), cls.__name__, f"retry-{unique}", manager],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "STATE COMPLETED" in done.stdout

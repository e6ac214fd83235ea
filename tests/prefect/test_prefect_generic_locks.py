"""Prefect's own lock-manager tests, run on our lock managers over every store.

Origins: ``tests/test_locking.py`` (class ``TestFileSystemLockManager``, the protocol part
that is not about lock files) of PrefectHQ/prefect, and prefect-redis's
``src/integrations/prefect-redis/tests/test_locking.py`` (class ``TestRedisLockManager``).
Each test names the one it comes from. Sleeps to let a hold timeout run out are replaced by
``wait_for_lock`` (which returns once the lock expired), so nothing here waits for long.

Left out, as they do not apply to a lock manager on a store: Prefect's ``TestMemoryLockManager``
singleton and pickling tests (our managers are not singletons: ``test_locks.py`` tests
pickling), the filesystem clock tests (they patch the lock files' clock), prefect-redis's
``test_init``/``test_configure_from_block`` (its constructor's connection fields) and its
client re-initialisation checks after unpickling (ours connect lazily; pickling is tested
in ``test_locks.py``).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from prefect.results import ResultStore

from prefect_memory.blocks import (
    InProcessMemory,
    JsonMemory,
    MemoryBlock,
    MongoDBMemory,
    RedisMemory,
    S3Memory,
    SqliteMemory,
)
from prefect_memory.shared import DistributedLockManager

MakeBlock = Callable[..., MemoryBlock]

# (id, block class, whether the manager is the shared DistributedLockManager)
MANAGERS = [
    ("inprocess", InProcessMemory, False),
    ("sqlite", SqliteMemory, False),
    ("json", JsonMemory, False),
    ("mongo", MongoDBMemory, False),
    ("s3", S3Memory, False),
    ("redis", RedisMemory, False),
    ("redis-distributed", RedisMemory, True),
]


@pytest.fixture(params=MANAGERS, ids=[m[0] for m in MANAGERS])
def lock_manager(request: pytest.FixtureRequest, make_block: MakeBlock) -> Any:
    _id, cls, distributed = request.param
    block = make_block(cls, namespace="locks")
    if distributed:
        return DistributedLockManager(block.memory, hold_timeout=30, poll_interval=0.02)
    return block.lock_manager(hold_timeout=30)


@pytest.fixture
def store(lock_manager: Any, make_block: MakeBlock) -> ResultStore:
    """A result store whose results live in-process and whose locks are the manager's."""
    return ResultStore(
        result_storage=make_block(InProcessMemory, namespace="results"),
        lock_manager=lock_manager,
    )


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_read_locked_key
# prefect-redis: tests/test_locking.py::TestRedisLockManager::test_read_locked_key
def test_read_locked_key(store: ResultStore) -> None:
    key = str(uuid4())
    read_queue: queue.Queue[Any] = queue.Queue()
    thread_started = threading.Event()

    def read_locked_key() -> None:
        thread_started.set()
        record = store.read(key)  # blocks until the lock is released
        read_queue.put(record.result)

    thread = threading.Thread(target=read_locked_key)
    assert store.acquire_lock(key, holder="holder1")
    thread.start()
    thread_started.wait()
    asyncio.run(store.awrite(key=key, obj={"test": "value"}, holder="holder1"))
    store.release_lock(key, holder="holder1")
    assert read_queue.get(timeout=10) == {"test": "value"}
    thread.join()


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_write_to_key_with_same_lock_holder
def test_write_to_key_with_same_lock_holder(store: ResultStore) -> None:
    key = str(uuid4())
    assert store.acquire_lock(key)
    store.write(key=key, obj={"test": "value"})
    assert (record := store.read(key)) is not None
    assert record.result == {"test": "value"}


# prefect: tests/test_locking.py::TestFileSystemLockManager::
#   test_write_to_key_with_different_lock_holder
def test_write_to_key_with_different_lock_holder(store: ResultStore) -> None:
    key = str(uuid4())
    assert store.acquire_lock(key, holder="holder1")
    with pytest.raises(
        RuntimeError,
        match=f"Cannot write to result record with key {key} because it is locked by "
        "another holder.",
    ):
        store.write(key=key, obj={"test": "value"}, holder="holder2")


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_acquire_lock
def test_acquire_lock(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key, holder="holder1")
    assert lock_manager.is_locked(key)
    lock_manager.release_lock(key, holder="holder1")
    assert not lock_manager.is_locked(key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_acquire_lock_async
def test_acquire_lock_async(lock_manager: Any) -> None:
    key = str(uuid4())
    assert asyncio.run(lock_manager.aacquire_lock(key, holder="holder1"))
    assert lock_manager.is_locked(key)
    lock_manager.release_lock(key, holder="holder1")
    assert not lock_manager.is_locked(key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_acquire_lock_idempotent
def test_acquire_lock_idempotent(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key, holder="holder1")
    assert lock_manager.acquire_lock(key, holder="holder1")
    assert lock_manager.is_locked(key)
    lock_manager.release_lock(key, holder="holder1")
    assert not lock_manager.is_locked(key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_acquire_lock_with_hold_timeout
# (the clock advance replaced by waiting for the expiry)
def test_acquire_lock_with_hold_timeout(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key=key, holder="holder1", hold_timeout=0.2)
    assert lock_manager.is_locked(key)
    assert lock_manager.wait_for_lock(key, timeout=10)
    assert not lock_manager.is_locked(key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_acquire_lock_with_acquire_timeout
def test_acquire_lock_with_acquire_timeout(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key=key, holder="holder1")
    assert lock_manager.is_locked(key)
    assert not lock_manager.acquire_lock(key=key, holder="holder2", acquire_timeout=0.1)
    lock_manager.release_lock(key=key, holder="holder1")
    assert not lock_manager.is_locked(key=key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::
#   test_acquire_lock_when_previously_holder_timed_out
def test_acquire_lock_when_previously_holder_timed_out(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key=key, holder="holder1", hold_timeout=0.2)
    assert lock_manager.is_locked(key=key)
    assert lock_manager.acquire_lock(key=key, holder="holder2")  # waits for the expiry
    assert lock_manager.is_locked(key=key)
    lock_manager.release_lock(key=key, holder="holder2")
    assert not lock_manager.is_locked(key=key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::
#   test_raises_if_releasing_with_wrong_holder
def test_raises_if_releasing_with_wrong_holder(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key=key, holder="holder1")
    assert lock_manager.is_locked(key=key)
    with pytest.raises(ValueError, match=f"No lock held by holder2 for transaction with key {key}"):
        lock_manager.release_lock(key=key, holder="holder2")


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_is_lock_holder
def test_is_lock_holder(lock_manager: Any) -> None:
    key = str(uuid4())
    assert not lock_manager.is_lock_holder(key, holder="holder1")
    assert lock_manager.acquire_lock(key, holder="holder1")
    assert lock_manager.is_lock_holder(key, holder="holder1")
    assert not lock_manager.is_lock_holder(key, holder="holder2")


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_wait_for_lock
def test_wait_for_lock(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key, holder="holder1", hold_timeout=0.2)
    assert lock_manager.is_locked(key)
    assert lock_manager.wait_for_lock(key)
    assert not lock_manager.is_locked(key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_wait_for_lock_with_timeout
def test_wait_for_lock_with_timeout(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key, holder="holder1")
    assert lock_manager.is_locked(key)
    assert not lock_manager.wait_for_lock(key, timeout=0.1)
    assert lock_manager.is_locked(key)
    lock_manager.release_lock(key, holder="holder1")
    assert not lock_manager.is_locked(key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_wait_for_lock_never_been_locked
# and ::test_wait_for_lock_async_never_been_locked
def test_wait_for_lock_never_been_locked(lock_manager: Any) -> None:
    key = str(uuid4())
    assert not lock_manager.is_locked(key)
    assert lock_manager.wait_for_lock(key)
    assert asyncio.run(lock_manager.await_for_lock(key))


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_wait_for_lock_async
# (and its twin ::test_wait_for_lock_async_with_timeout, the same body)
def test_wait_for_lock_async(lock_manager: Any) -> None:
    key = str(uuid4())
    assert asyncio.run(lock_manager.aacquire_lock(key, holder="holder1"))
    assert lock_manager.is_locked(key)
    assert not asyncio.run(lock_manager.await_for_lock(key, timeout=0.1))
    assert lock_manager.is_locked(key)
    lock_manager.release_lock(key, holder="holder1")
    assert not lock_manager.is_locked(key)


# prefect: tests/test_locking.py::TestFileSystemLockManager::test_locking_works_across_threads
def test_locking_works_across_threads(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key, holder="holder1")
    assert lock_manager.is_locked(key)
    taken: list[bool] = []

    def get_lock() -> None:
        taken.append(lock_manager.acquire_lock(key, holder="holder2"))

    thread = threading.Thread(target=get_lock)
    thread.start()
    lock_manager.release_lock(key, holder="holder1")
    thread.join()
    assert taken == [True] and lock_manager.is_lock_holder(key, "holder2")


# prefect-redis: tests/test_locking.py::TestRedisLockManager::
#   test_release_lock_with_nonexistent_lock
def test_release_lock_with_nonexistent_lock(lock_manager: Any) -> None:
    key = str(uuid4())
    assert lock_manager.acquire_lock(key=key, holder="holder1")
    lock_manager.release_lock(key=key, holder="holder1")
    assert not lock_manager.is_locked(key)
    lock_manager.release_lock(key=key, holder="holder1")  # released already: no error
    assert lock_manager.acquire_lock(key=key, holder="holder2")
    with pytest.raises(ValueError, match=f"No lock held by holder1 for transaction with key {key}"):
        lock_manager.release_lock(key=key, holder="holder1")
    lock_manager.release_lock(key=key, holder="holder2")
    assert not lock_manager.is_locked(key)
    lock_manager.release_lock(key=key, holder="holder1")  # nobody holds it: no error


# prefect-redis: tests/test_locking.py::TestRedisLockManager::test_transaction_retry_lock_behavior
def test_transaction_retry_lock_behavior(store: ResultStore, lock_manager: Any) -> None:
    key = str(uuid4())
    assert store.acquire_lock(key, holder="transaction1")  # the first attempt
    store.release_lock(key, holder="transaction1")  # its rollback
    assert not lock_manager.is_locked(key)
    assert store.acquire_lock(key, holder="transaction2")  # the retry
    with pytest.raises(ValueError):
        store.release_lock(key, holder="transaction1")  # a real conflict
    store.release_lock(key, holder="transaction2")
    store.release_lock(key, holder="transaction1")  # released after the rollback: no error

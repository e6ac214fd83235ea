"""Prefect's own cache-policy tests that involve storage or locks, run with our blocks.

Origins: ``tests/test_cache_policies.py`` (class ``TestPolicyConfiguration``) and
``tests/test_tasks.py`` (``test_cache_policy_storage_storage_block``,
``test_cache_policy_lock_manager``, ``test_cache_policy_lock_manager_async``,
``test_run_task_in_serializable_transaction``) of PrefectHQ/prefect. Each test names its origin.

Left out: the other tests of ``test_cache_policies.py`` compute keys and never touch a storage;
``test_cache_policy_storage_path``/``_str`` take a folder path, not a block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, Inputs, TaskSource
from prefect.results import ResultStore
from prefect.transactions import IsolationLevel, get_transaction, transaction
from pydantic import SecretStr

from prefect_memory.blocks import (
    InProcessMemory,
    JsonMemory,
    MemoryBlock,
    MongoDBMemory,
    RedisMemory,
    S3Memory,
    SqliteMemory,
)

MakeBlock = Callable[..., MemoryBlock]
BLOCKS = [InProcessMemory, SqliteMemory, JsonMemory, RedisMemory, MongoDBMemory, S3Memory]


@pytest.fixture(params=BLOCKS, ids=lambda c: c.__name__)
def saved_block(request: pytest.FixtureRequest, make_block: MakeBlock, unique: str) -> str:
    """The name of a saved block of each kind (load it with ``cls.load(name)``)."""
    make_block(request.param, namespace="results").save(f"policy-{unique}")
    return f"policy-{unique}"


@pytest.fixture
def block_cls(saved_block: str, request: pytest.FixtureRequest) -> type[MemoryBlock]:
    return request.node.callspec.params["saved_block"]


# prefect: tests/test_cache_policies.py::TestPolicyConfiguration::test_add_policy_with_configuration
# with key storage and locks of two loads of one saved block (they used to differ: pydantic
# compared the blocks' private memory caches, and the managers by identity).
def test_add_policy_with_configuration(block_cls: type[MemoryBlock], saved_block: str) -> None:
    first, second = block_cls.load(saved_block), block_cls.load(saved_block)
    assert first == second and hash(first) == hash(second)
    assert first.lock_manager() == second.lock_manager()
    policy = INPUTS.configure(
        key_storage=first, lock_manager=first.lock_manager(), isolation_level="SERIALIZABLE"
    ) + TASK_SOURCE.configure(
        key_storage=second, lock_manager=second.lock_manager(), isolation_level="SERIALIZABLE"
    )
    assert policy.key_storage == first
    assert policy.lock_manager == first.lock_manager()
    assert policy.isolation_level == "SERIALIZABLE"


# prefect: tests/test_cache_policies.py::TestPolicyConfiguration::
#   test_add_policy_with_conflict_raises
def test_add_policy_with_conflict_raises(block_cls: type[MemoryBlock], saved_block: str) -> None:
    block = block_cls.load(saved_block)
    other = block.model_copy(update={"namespace": "elsewhere"})
    policy = Inputs() + TaskSource().configure(
        lock_manager=block.lock_manager(), key_storage=block, isolation_level="SERIALIZABLE"
    )
    with pytest.raises(ValueError, match="Cannot add CachePolicies with different lock"):
        _ = policy + TaskSource().configure(lock_manager=other.lock_manager())
    with pytest.raises(ValueError, match="Cannot add CachePolicies with different storage"):
        _ = policy + TaskSource().configure(key_storage=other)


# prefect: tests/test_cache_policies.py::TestPolicyConfiguration::
#   test_configure_changes_all_attributes
# and ::test_configure_returns_new_policy
def test_configure_changes_all_attributes(block_cls: type[MemoryBlock], saved_block: str) -> None:
    block = block_cls.load(saved_block)
    policy = Inputs()
    configured = policy.configure(
        key_storage=block, lock_manager=block.lock_manager(), isolation_level="SERIALIZABLE"
    )
    assert configured is not policy
    assert configured.key_storage == block
    assert configured.lock_manager == block.lock_manager()
    assert configured.isolation_level == "SERIALIZABLE"


# prefect: tests/test_tasks.py::TestCachePolicies::test_cache_policy_storage_storage_block
# (the key record is looked up in our key storage instead of a folder)
def test_cache_policy_storage_storage_block(block_cls: type[MemoryBlock], saved_block: str) -> None:
    block = block_cls.load(saved_block)
    cache_policy = Inputs().configure(key_storage=block.as_key_storage())
    expected_cache_key = cache_policy.compute_key(
        task_ctx=None, inputs={"x": 1}, flow_parameters=None
    )
    calls: list[int] = []

    @task(cache_policy=cache_policy, result_storage=block)
    def foo(x: int) -> int:
        calls.append(x)
        return x

    assert foo(1) == 1 and foo(1) == 1 and calls == [1]  # the second is a cache hit
    record = block.as_key_storage().read_path(expected_cache_key, _sync=True)
    assert b"prefect_version" in record


# prefect: tests/test_tasks.py::TestCachePolicies::test_cache_policy_lock_manager
# (the lock file's existence replaced by asking the manager)
@pytest.mark.parametrize("isolation_level", [IsolationLevel.SERIALIZABLE, "SERIALIZABLE"])
def test_cache_policy_lock_manager(
    block_cls: type[MemoryBlock], saved_block: str, isolation_level: Any
) -> None:
    block = block_cls.load(saved_block)
    locks = block.lock_manager(hold_timeout=30)
    cache_policy = Inputs().configure(lock_manager=locks, isolation_level=isolation_level)
    expected_cache_key = cache_policy.compute_key(
        task_ctx=None, inputs={"x": 1}, flow_parameters=None
    )

    @task(cache_policy=cache_policy, result_storage=block)
    def foo(x: int) -> int:
        assert locks.is_locked(expected_cache_key)
        return x

    assert foo(1) == 1
    assert not locks.is_locked(expected_cache_key)


# prefect: tests/test_tasks.py::TestCachePolicies::test_cache_policy_lock_manager_async
# (regression test for PrefectHQ/prefect#17785; its 1-3 s sleeps shortened)
def test_cache_policy_lock_manager_async(block_cls: type[MemoryBlock], saved_block: str) -> None:
    block = block_cls.load(saved_block)
    cache_policy = (INPUTS + TASK_SOURCE).configure(
        isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=block.lock_manager()
    )
    runs: list[int] = []

    @task(cache_policy=cache_policy, result_storage=block)
    async def my_task(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.2)
        return x + len(runs)

    async def main() -> list[int]:
        return list(await asyncio.gather(*[my_task(42) for _ in range(3)]))

    results = asyncio.run(main())
    assert len(set(results)) == 1, results  # the second and third calls hit the cache
    assert runs == [42]


# prefect: tests/test_tasks.py::TestTaskTransactions::test_run_task_in_serializable_transaction
# (regression test for PrefectHQ/prefect#15503)
def test_run_task_in_serializable_transaction(
    block_cls: type[MemoryBlock], saved_block: str
) -> None:
    block = block_cls.load(saved_block)

    @task(result_storage=block)
    def my_task() -> Any:
        return get_transaction()

    with transaction(
        isolation_level=IsolationLevel.SERIALIZABLE,
        store=ResultStore(result_storage=block, lock_manager=block.lock_manager()),
    ):
        task_txn = my_task()

    assert task_txn is not None and isinstance(task_txn.store, ResultStore)
    # the task's store gets the lock manager of the parent transaction
    assert task_txn.store.lock_manager == block_cls.load(saved_block).lock_manager()
    assert task_txn.isolation_level == IsolationLevel.SERIALIZABLE


# -- ours: what equality of blocks means --------------------------------------------------
def test_blocks_compare_by_settings_and_secrets() -> None:
    def redis(password: str, **fields: Any) -> RedisMemory:
        return RedisMemory(url="redis://127.0.0.1:1/0", password=SecretStr(password), **fields)

    first, second = redis("s3cret-one"), redis("s3cret-one")
    first.memory  # noqa: B018 - built on one side only: private state does not count
    assert first == second and hash(first) == hash(second)
    assert first != redis("s3cret-two")
    assert first != redis("s3cret-one", namespace="other")
    assert InProcessMemory(name="a") != SqliteMemory(path="a")
    assert len({first, second, redis("s3cret-two")}) == 2
    assert "s3cret" not in repr(first)

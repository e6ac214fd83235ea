"""Prefect's own transaction tests that involve storage or locks, run with our blocks.

Origin: ``tests/test_transactions.py`` of PrefectHQ/prefect (classes ``TestWithResultStore``
and ``TestIsolationLevel``), with our block as the result storage and its lock manager in
place of ``LocalFileSystem`` and Prefect's ``MemoryLockManager``. Each test names its origin.

Left out: the transaction tests that use no storage (context, parents, commit modes,
rollbacks, state, data, hooks); ``test_transaction_with_nullfilesystem_metadata`` (it checks
a file on disk); ``TestDefaultTransactionStorage`` (it needs
``PREFECT_DEFAULT_RESULT_STORAGE_BLOCK``, covered by the result tests).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from prefect.results import ResultStore
from prefect.transactions import IsolationLevel, atransaction, transaction

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
def block(request: pytest.FixtureRequest, make_block: MakeBlock) -> MemoryBlock:
    return make_block(request.param, namespace="results")


@pytest.fixture
def result_store(block: MemoryBlock) -> ResultStore:
    return ResultStore(result_storage=block, lock_manager=block.lock_manager(hold_timeout=30))


# prefect: tests/test_transactions.py::TestWithResultStore::TestTransaction::test_basic_transaction
def test_basic_transaction(result_store: ResultStore) -> None:
    with transaction(key="test_basic_transaction", store=result_store, write_on_commit=True) as txn:
        assert isinstance(txn.store, ResultStore)
        txn.stage({"foo": "bar"})
    record_1 = txn.read()
    assert record_1 and record_1.result == {"foo": "bar"}
    record_2 = result_store.read("test_basic_transaction")
    assert record_2 and record_2 == record_1
    assert record_2.metadata.storage_key == "test_basic_transaction"


# prefect: tests/test_transactions.py::TestWithResultStore::TestAsyncTransaction::
#   test_basic_transaction
def test_basic_transaction_async(result_store: ResultStore) -> None:
    async def scenario() -> None:
        async with atransaction(
            key="test_basic_transaction", store=result_store, write_on_commit=True
        ) as txn:
            txn.stage({"foo": "bar"})
        record_1 = await txn.read()
        assert record_1 and record_1.result == {"foo": "bar"}
        record_2 = await result_store.aread("test_basic_transaction")
        assert record_2 and record_2 == record_1

    asyncio.run(scenario())


# prefect: tests/test_transactions.py::TestWithResultStore::TestTransaction::
#   test_competing_read_transaction
def test_competing_read_transaction(result_store: ResultStore) -> None:
    write_transaction_open = threading.Event()

    def writing_transaction() -> None:
        with transaction(
            key="test_competing_read_transaction",
            store=result_store,
            isolation_level=IsolationLevel.SERIALIZABLE,
            write_on_commit=True,
        ) as txn:
            write_transaction_open.set()
            txn.stage({"foo": "bar"})

    thread = threading.Thread(target=writing_transaction)
    thread.start()
    write_transaction_open.wait()
    with transaction(key="test_competing_read_transaction", store=result_store) as txn:
        read_result = txn.read()
    assert read_result is not None and read_result.result == {"foo": "bar"}
    thread.join()


# prefect: tests/test_transactions.py::TestWithResultStore::TestTransaction::
#   test_competing_write_transaction
def test_competing_write_transaction(result_store: ResultStore) -> None:
    transaction_1_open = threading.Event()

    def winning_transaction() -> None:
        with transaction(
            key="test_competing_write_transaction",
            store=result_store,
            isolation_level=IsolationLevel.SERIALIZABLE,
            write_on_commit=True,
        ) as txn:
            transaction_1_open.set()
            txn.stage({"foo": "bar"})

    thread = threading.Thread(target=winning_transaction)
    thread.start()
    transaction_1_open.wait()
    with transaction(
        key="test_competing_write_transaction",
        store=result_store,
        isolation_level=IsolationLevel.SERIALIZABLE,
        write_on_commit=True,
    ) as txn:
        txn.stage({"fizz": "buzz"})
    thread.join()
    record = result_store.read("test_competing_write_transaction")
    assert record and record.result == {"foo": "bar"}  # the second did not write on exit


# prefect: tests/test_transactions.py::TestIsolationLevel::TestTransaction::
#   test_inherited_isolation_level
def test_inherited_isolation_level(result_store: ResultStore) -> None:
    with (
        transaction(
            key="test", store=result_store, isolation_level=IsolationLevel.SERIALIZABLE
        ) as top,
        transaction(key="nested", store=result_store) as inner,
    ):
        assert inner.isolation_level == top.isolation_level == IsolationLevel.SERIALIZABLE


# prefect: tests/test_transactions.py::TestIsolationLevel::TestAsyncTransaction::
#   test_serializable_isolation_works_with_multiple_asyncio_tasks
# (regression test for PrefectHQ/prefect#18600)
def test_serializable_isolation_works_with_multiple_asyncio_tasks(
    result_store: ResultStore,
) -> None:
    async def child_task() -> None:
        async with atransaction(
            key="child", store=result_store, isolation_level=IsolationLevel.SERIALIZABLE
        ) as txn:
            txn.stage({"foo": "bar"})

    async def parent_task() -> None:
        async with atransaction(
            key="parent", store=result_store, isolation_level=IsolationLevel.SERIALIZABLE
        ):
            await asyncio.create_task(child_task())

    asyncio.run(parent_task())  # must not raise
    record = result_store.read("child")
    assert record is not None and record.result == {"foo": "bar"}

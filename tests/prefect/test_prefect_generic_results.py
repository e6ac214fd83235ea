"""Prefect's own result-storage tests, run with our blocks as the storage.

Origins (PrefectHQ/prefect): ``tests/results/test_result_store.py``,
``tests/results/test_flow_results.py``, ``tests/results/test_task_results.py``,
``tests/results/test_state_result.py``, ``tests/test_transactions.py`` (class
``TestDefaultTransactionStorage``) and three tests of a task's own result storage in
``tests/test_tasks.py``. Each test names the one it comes from. Prefect's tests use
``LocalFileSystem`` in a temporary folder; here the storage is one of our blocks (in-process,
SQLite, JSON, MongoDB wire server, S3 on SeaweedFS, Redis), saved in the session's Prefect API
where Prefect's test saves its block, and referred to the same way (instance, slug
``<block-type>/<name>``, ``PREFECT_DEFAULT_RESULT_STORAGE_BLOCK``, the server's default
storage). Where Prefect reads a file of the folder, we read the block (``read_path``).
Prefect's async tests run here under ``asyncio.run``; a task run's state is read back from
the API once the events worker has delivered it. As in Prefect's own test session, flow
heartbeats and logs to the API are off (a sync flow run would otherwise wait up to a second
for its heartbeat thread); no test here is about them.

Adapted: where Prefect advances its clock (``TestInMemoryCacheExpiration::
test_read_evicts_expired_result_from_cache`` and its async twin), the cached record's
expiration is moved into the past, and the new value is written by a second store (a store's
own write puts the new record in its memory cache: the read would not need the storage).
``test_task_result_serializer`` runs two of its eight serializer and source pairs.
``test_graceful_retries_are_finite_while_retrieving_missing_results`` expects our
``ResultNotFound`` (a ``FileNotFoundError``) instead of ``LocalFileSystem``'s "does not exist".

Left out, as they cannot apply to a storage of ours:

- ``test_result_store.py``: the tests of the *default* storage, serializer, persistence and
  cache settings (``test_root_flow_default_*``, ``test_*_inherits_default_result_settings``,
  ``test_*_serializer*``, ``test_*_persist_*``, ``test_*_custom_cache_setting``,
  ``test_*_opt_out*``, ``test_default_storage_creation_*``, ``test_result_store_from_task_*``):
  they assert that the storage is the default ``LocalFileSystem``, or test settings that never
  reach a storage. ``TestAsyncDispatch`` and ``TestRemoteResultStorageConfiguration`` use no
  storage. Of ``TestDefaultResultStorageResolution``, the tests that replace Prefect's client
  or resolver with mocks (``test_uses_server_default_result_storage_*``,
  ``test_falls_back_to_local_storage_*``) and those that never load the configured block
  (``test_configured_default_result_storage_enables_default_persistence``,
  ``test_should_persist_result_does_not_read_server_default_storage``,
  ``test_local_persist_setting_does_not_need_default_result_storage``,
  ``test_task_default_persistence_does_not_read_default_result_storage``,
  ``test_explicit_task_persistence_setting_overrides_default_persistence``,
  ``test_local_default_result_storage_is_resolved_before_enabling_persistence``).
- ``test_flow_results.py``: the tests without a storage of their own (unpersisted, null,
  literal, empty and result-like results, exceptions, serializers,
  ``test_child_flow_persisted_result_due_to_opt_in``,
  ``test_subflow_in_task_uses_own_result_serializer``) and
  ``test_root_flow_nonexistent_default_storage_block_fails`` (a block type that does not exist).
- ``test_task_results.py``: the tests on the default storage (``test_task_persisted_result_*``,
  in-memory caching, null, literal, empty, result-like and exception results).
- ``test_state_result.py``: ``test_graceful_retries_reraise_last_error_*`` and
  ``test_graceful_retries_eventually_succeed_*`` replace ``LocalFileSystem.aread_path`` with a
  mock, so no storage is read (the end of the second, a result written late is read, is part
  of the graceful-retries test here); ``test_unfinished_states_*`` and
  ``test_finished_states_*`` use no storage. Timing assertions (``elapsed >= expected_sleep``)
  are dropped: no timed tests here.
- ``test_result_record.py`` and ``test_result_fetch.py``: no storage (a ``NullFileSystem`` at most).
- ``tests/test_transactions.py``: the other classes are in ``test_prefect_generic_transactions.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import prefect.results
import prefect.states
import prefect.types._datetime
import pytest
from prefect import flow, task
from prefect.cache_policies import INPUTS, Inputs
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.events.worker import EventsWorker
from prefect.filesystems import LocalFileSystem
from prefect.results import (
    ResultRecord,
    ResultStore,
    _get_default_persist_result,
    aget_default_result_storage,
    get_default_result_storage,
    get_result_store,
    should_persist_result,
)
from prefect.serializers import JSONSerializer, PickleSerializer
from prefect.settings import (
    PREFECT_DEFAULT_RESULT_STORAGE_BLOCK,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_LOGGING_TO_API_ENABLED,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    PREFECT_TASK_SCHEDULING_DEFAULT_STORAGE_BLOCK,
    temporary_settings,
)
from prefect.states import State, StateType, to_state_create
from prefect.testing.utilities import (
    assert_blocks_equal,
    assert_uses_result_serializer,
    assert_uses_result_storage,
)
from prefect.transactions import CommitMode, IsolationLevel, atransaction, transaction

from prefect_memory.blocks import (
    InProcessMemory,
    JsonMemory,
    MemoryBlock,
    MongoDBMemory,
    RedisMemory,
    ResultNotFound,
    S3Memory,
    SqliteMemory,
)

MakeBlock = Callable[..., MemoryBlock]
BLOCKS = [InProcessMemory, SqliteMemory, JsonMemory, RedisMemory, MongoDBMemory, S3Memory]
DEFAULT_SERIALIZER = PickleSerializer
T = TypeVar("T")


def DEFAULT_STORAGE() -> LocalFileSystem:
    return LocalFileSystem(basepath=PREFECT_LOCAL_STORAGE_PATH.value())


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass(frozen=True)
class Saved:
    """A block saved in the Prefect API, as a Prefect test saves its ``LocalFileSystem``."""

    block: MemoryBlock
    name: str
    id: UUID

    @property
    def slug(self) -> str:
        return f"{type(self.block).get_block_type_slug()}/{self.name}"


@pytest.fixture(params=BLOCKS, ids=lambda c: c.__name__)
def block_cls(request: pytest.FixtureRequest) -> type[MemoryBlock]:
    return request.param


@pytest.fixture
def save(block_cls: type[MemoryBlock], make_block: MakeBlock, unique: str) -> Callable[..., Saved]:
    """``save(label)``: a block of the test's class with namespace ``label``, saved in the API."""

    def _save(label: str = "results") -> Saved:
        block = make_block(block_cls, namespace=label)
        name = f"{label}-{unique}"
        return Saved(block=block, name=name, id=block.save(name))

    return _save


@pytest.fixture(scope="module")
def shared_blocks() -> dict[tuple[type[MemoryBlock], str], Saved]:
    return {}


@pytest.fixture
def share(
    block_cls: type[MemoryBlock],
    save: Callable[..., Saved],
    shared_blocks: dict[tuple[type[MemoryBlock], str], Saved],
) -> Callable[..., Saved]:
    """``share(label)``: as ``save``, but one block per class and label for the module.

    Saving a block costs up to a third of a second here, and saving one per test doubled the
    run. Tests share a block when their results get random keys, or fixed keys that no other
    test on that block writes; the few whose fixed keys collide use a label of their own.
    """

    def _share(label: str = "shared") -> Saved:
        if (block_cls, label) not in shared_blocks:
            shared_blocks[block_cls, label] = save(label)
        return shared_blocks[block_cls, label]

    return _share


@pytest.fixture
def shared(share: Callable[..., Saved]) -> Saved:
    return share()


@pytest.fixture
def block(block_cls: type[MemoryBlock], make_block: MakeBlock) -> MemoryBlock:
    """An unsaved block (Prefect's anonymous ``LocalFileSystem(basepath=tmp_path)``)."""
    return make_block(block_cls, namespace="results")


@pytest.fixture(scope="module", autouse=True)
def module_settings() -> Iterator[None]:
    """Two settings of Prefect's own test session (its ``tests/conftest.py``): no flow
    heartbeat thread (a sync flow run would wait up to 1 s for it to stop) and no logs sent
    to the API."""
    with temporary_settings(
        {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOGGING_TO_API_ENABLED: False}
    ):
        yield


@pytest.fixture(autouse=True)
def clear_default_storage_cache() -> Iterator[None]:
    """Prefect caches the default storage by setting: each test resolves its own."""
    prefect.results._default_storages.clear()
    yield
    prefect.results._default_storages.clear()


@pytest.fixture
def default_persistence_off() -> Iterator[None]:
    with temporary_settings({PREFECT_RESULTS_PERSIST_BY_DEFAULT: False}):
        yield


def api_flow_state(state: State) -> State:
    with get_client(sync_client=True) as client:
        api_state = client.read_flow_run(state.state_details.flow_run_id).state
    assert api_state is not None
    return api_state


def api_task_state(state: State) -> State:
    """The task run's state as the API has it (Prefect's tests run ``events_pipeline`` first)."""
    EventsWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        for _ in range(300):  # the server may still be applying the delivered events
            api_state = client.read_task_run(state.state_details.task_run_id).state
            if api_state is not None and api_state.type == state.type:
                return api_state
            EventsWorker.drain_all(timeout=1)
    raise AssertionError(f"the API never reached the task run's state {state.type}")


async def uses_storage(state: State, storage: str | MemoryBlock) -> None:
    async with get_client() as client:
        await assert_uses_result_storage(state, storage, client=client)


async def uses_serializer(state: State, serializer: Any) -> None:
    async with get_client() as client:
        await assert_uses_result_serializer(state, serializer, client=client)


# -- tests/results/test_result_store.py ----------------------------------------------------------
# prefect: tests/results/test_result_store.py::test_create_result_record
# (the store's block id is the saved block's, not None as with the default storage)
def test_create_result_record(shared: Saved) -> None:
    store = ResultStore(result_storage=shared.block)
    record = store.create_result_record({"foo": "bar"})
    assert isinstance(record, ResultRecord)
    assert record.metadata.serializer.type == store.serializer.type
    assert record.metadata.storage_block_id == store.result_storage_block_id == shared.id
    assert record.result == {"foo": "bar"}


# prefect: tests/results/test_result_store.py::test_root_flow_custom_storage_by_slug
def test_root_flow_custom_storage_by_slug(shared: Saved, default_persistence_off: None) -> None:
    @flow(result_storage=shared.slug)
    def foo() -> Any:
        return get_run_context().result_store, should_persist_result()

    result_store, persist_result = foo()
    assert persist_result is True  # inferred from the storage
    assert result_store.serializer == DEFAULT_SERIALIZER()
    assert_blocks_equal(result_store.result_storage, shared.block)
    assert result_store.result_storage_block_id == shared.id


# prefect: tests/results/test_result_store.py::test_root_flow_custom_storage_by_instance_presaved
def test_root_flow_custom_storage_by_instance_presaved(
    shared: Saved, default_persistence_off: None
) -> None:
    storage = shared.block

    @flow(result_storage=storage)
    def foo() -> Any:
        return get_run_context().result_store, should_persist_result()

    result_store, persist_result = foo()
    assert persist_result is True  # inferred from the storage
    assert result_store.serializer == DEFAULT_SERIALIZER()
    assert result_store.result_storage == storage
    assert result_store.result_storage._is_anonymous is False
    assert result_store.result_storage_block_id == shared.id


# prefect: tests/results/test_result_store.py::test_child_flow_inherits_custom_storage
def test_child_flow_inherits_custom_storage(shared: Saved, default_persistence_off: None) -> None:
    @flow(result_storage=shared.slug)
    def foo() -> Any:
        child_store, child_persist_result = bar()
        return get_run_context().result_store, child_persist_result, child_store

    @flow
    def bar() -> Any:
        return get_run_context().result_store, should_persist_result()

    parent_store, child_persist_result, child_store = foo()
    assert child_persist_result is True
    assert child_store.serializer == DEFAULT_SERIALIZER()
    assert child_store.result_storage == parent_store.result_storage
    assert child_store.result_storage_block_id == shared.id


# prefect: tests/results/test_result_store.py::test_child_flow_custom_storage
def test_child_flow_custom_storage(shared: Saved, default_persistence_off: None) -> None:
    @flow()
    def foo() -> Any:
        child_store, child_persist_result = bar()
        return get_run_context().result_store, child_persist_result, child_store

    @flow(result_storage=shared.slug)
    def bar() -> Any:
        return get_run_context().result_store, should_persist_result()

    parent_store, child_persist_result, child_store = foo()
    assert_blocks_equal(parent_store.result_storage, DEFAULT_STORAGE())
    assert child_persist_result is True  # inferred from the storage
    assert child_store.serializer == DEFAULT_SERIALIZER()
    assert_blocks_equal(child_store.result_storage, shared.block)
    assert child_store.result_storage_block_id == shared.id


# prefect: tests/results/test_result_store.py::test_task_inherits_custom_storage
def test_task_inherits_custom_storage(shared: Saved) -> None:
    @flow(result_storage=shared.slug, persist_result=True)
    def foo() -> Any:
        child_store, child_persist_result = bar()
        return get_run_context().result_store, child_persist_result, child_store

    @task(persist_result=True)
    def bar() -> Any:
        return get_run_context().result_store, should_persist_result()

    flow_store, task_persist_result, task_store = foo()
    assert task_persist_result is True
    assert task_store.serializer == DEFAULT_SERIALIZER()
    assert task_store.result_storage == flow_store.result_storage
    assert task_store.result_storage_block_id == shared.id


# prefect: tests/results/test_result_store.py::test_nested_flow_custom_storage
def test_nested_flow_custom_storage(shared: Saved) -> None:
    @flow(persist_result=True)
    def foo() -> Any:
        child_store, child_persist_result = bar()
        return get_run_context().result_store, child_persist_result, child_store

    @flow(result_storage=shared.slug, persist_result=True)
    def bar() -> Any:
        return get_run_context().result_store, should_persist_result()

    parent_store, child_persist_result, child_store = foo()
    assert_blocks_equal(parent_store.result_storage, DEFAULT_STORAGE())
    assert_blocks_equal(child_store.result_storage, shared.block)
    assert child_persist_result is True
    assert child_store.serializer == DEFAULT_SERIALIZER()
    assert child_store.result_storage_block_id == shared.id


# prefect: tests/results/test_result_store.py::
#   test_result_store_read_and_write_with_metadata_storage
# (the metadata storage is the block's key storage, as our docs recommend; files read as paths)
def test_result_store_read_and_write_with_metadata_storage(block: MemoryBlock) -> None:
    metadata_storage = block.as_key_storage()
    result_store = ResultStore(metadata_storage=metadata_storage, result_storage=block)
    key, value = "test", "test"
    run(result_store.awrite(key=key, obj=value))
    read_value = run(result_store.aread(key=key))
    assert read_value.result == value

    # the result is written to the result storage, the metadata to the metadata storage
    assert result_store.serializer.loads(block.read_path(key, _sync=True)) == value
    assert metadata_storage.read_path(key, _sync=True).decode() == (
        read_value.metadata.model_dump_json(serialize_as_any=True)
    )


# prefect: tests/results/test_result_store.py::test_result_store_exists_with_metadata_storage
def test_result_store_exists_with_metadata_storage(block: MemoryBlock) -> None:
    metadata_storage = block.as_key_storage()
    result_store = ResultStore(metadata_storage=metadata_storage, result_storage=block)
    key = "test"
    run(result_store.awrite(key=key, obj="test"))

    assert run(result_store.aexists(key=key))
    assert not run(result_store.aexists(key="nonexistent"))
    assert result_store.exists(key=key)
    assert not result_store.exists(key="nonexistent")

    # remove the metadata: the result is not found
    assert metadata_storage.delete(key)
    assert not run(result_store.aexists(key=key))
    assert not result_store.exists(key=key)


# prefect: tests/results/test_result_store.py::
#   test_default_result_store_exists_resolves_default_storage
# (the default storage named by PREFECT_DEFAULT_RESULT_STORAGE_BLOCK, not by the local path)
def test_default_result_store_exists_resolves_default_storage(
    share: Callable[..., Saved],
) -> None:
    saved = share("exists")  # its key "test" is test_task_result_static_storage_key's too
    with temporary_settings({PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: saved.slug}):
        writer = ResultStore()
        writer.write(obj="test", key="test")

        reader = ResultStore()
        assert reader.exists(key="test")
        assert run(reader.aexists(key="test"))
    assert ResultRecord.deserialize(saved.block.read_path("test", _sync=True)).result == "test"


# prefect: tests/results/test_result_store.py::test_result_store_exists_with_no_metadata_storage
def test_result_store_exists_with_no_metadata_storage(block: MemoryBlock) -> None:
    result_store = ResultStore(result_storage=block)
    key = "test"
    run(result_store.awrite(key=key, obj="test"))
    assert run(result_store.aexists(key=key))
    assert result_store.exists(key=key)

    # remove the result: it is not found
    assert block.delete(key)
    assert not run(result_store.aexists(key=key))
    assert not result_store.exists(key=key)


# prefect: tests/results/test_result_store.py::test_supports_isolation_level
# (our lock manager in place of MemoryLockManager)
def test_supports_isolation_level(block: MemoryBlock) -> None:
    store_with_lock_manager = ResultStore(result_storage=block, lock_manager=block.lock_manager())
    store_without_lock_manager = ResultStore(result_storage=block)
    assert store_with_lock_manager.supports_isolation_level(IsolationLevel.READ_COMMITTED)
    assert store_with_lock_manager.supports_isolation_level(IsolationLevel.SERIALIZABLE)
    assert store_without_lock_manager.supports_isolation_level(IsolationLevel.READ_COMMITTED)
    assert not store_without_lock_manager.supports_isolation_level(IsolationLevel.SERIALIZABLE)


def _in(seconds: float) -> dt.datetime:
    return prefect.types._datetime.now("UTC") + dt.timedelta(seconds=seconds)


# prefect: tests/results/test_result_store.py::TestInMemoryCacheExpiration::
#   test_read_returns_cached_result_before_expiration
# (plus a read through a second store, which has no cache and must reach the storage)
def test_read_returns_cached_result_before_expiration(block: MemoryBlock) -> None:
    store = ResultStore(result_storage=block, cache_result_in_memory=True)
    key = "test-not-expired"
    record = store.create_result_record("cached_value", key=key, expiration=_in(60))
    store.persist_result_record(record)

    assert store.read(key=key).result == "cached_value"  # warms the in-memory cache
    assert store.read(key=key).result == "cached_value"
    assert ResultStore(result_storage=block).read(key=key).result == "cached_value"


# prefect: tests/results/test_result_store.py::TestInMemoryCacheExpiration::
#   test_read_evicts_expired_result_from_cache
# (the clock advance replaced by moving the cached record's expiration into the past; the
# new value written by a second store, as the re-execution elsewhere that it stands for)
def test_read_evicts_expired_result_from_cache(block: MemoryBlock) -> None:
    store = ResultStore(result_storage=block, cache_result_in_memory=True)
    key = "test-expired"
    store.persist_result_record(store.create_result_record("old", key=key, expiration=_in(60)))
    assert store.read(key=key).result == "old"
    resolved_key = store._resolved_key_path(key)
    assert resolved_key in store.cache
    store.cache[resolved_key].metadata.expiration = _in(-1)

    writer = ResultStore(result_storage=block)
    writer.persist_result_record(writer.create_result_record("new_value", key=key))

    assert store.read(key=key).result == "new_value"  # evicted, then read from the storage
    assert store.cache[resolved_key].result == "new_value"


# prefect: tests/results/test_result_store.py::TestInMemoryCacheExpiration::
#   test_aread_evicts_expired_result_from_cache (adapted as the sync one above)
def test_aread_evicts_expired_result_from_cache(block: MemoryBlock) -> None:
    async def scenario() -> None:
        store = ResultStore(result_storage=block, cache_result_in_memory=True)
        key = "test-expired-async"
        record = store.create_result_record("old_value", key=key, expiration=_in(60))
        await store.apersist_result_record(record)
        assert (await store.aread(key=key)).result == "old_value"
        resolved_key = store._resolved_key_path(key)
        assert resolved_key in store.cache
        store.cache[resolved_key].metadata.expiration = _in(-1)

        writer = ResultStore(result_storage=block)
        await writer.apersist_result_record(writer.create_result_record("new_value", key=key))
        assert (await store.aread(key=key)).result == "new_value"

    run(scenario())


# prefect: tests/results/test_result_store.py::TestInMemoryCacheExpiration::
#   test_read_returns_result_with_no_expiration
# (plus a read through a second store, which must reach the storage)
def test_read_returns_result_with_no_expiration(block: MemoryBlock) -> None:
    store = ResultStore(result_storage=block, cache_result_in_memory=True)
    key = "test-no-expiration"
    store.persist_result_record(store.create_result_record("permanent_value", key=key))

    first_read = store.read(key=key)
    assert first_read.result == "permanent_value"
    assert first_read.metadata.expiration is None
    assert store.read(key=key).result == "permanent_value"
    assert ResultStore(result_storage=block).read(key=key).result == "permanent_value"


# prefect: tests/results/test_result_store.py::TestDefaultResultStorageResolution::
#   test_block_backed_storage_does_not_enable_default_persistence_by_itself
# (a saved block of ours, not a LocalFileSystem given a random document id)
def test_block_backed_storage_does_not_enable_default_persistence_by_itself(
    shared: Saved,
) -> None:
    result_store = ResultStore(result_storage=shared.block)
    assert result_store.result_storage_block_id == shared.id
    assert _get_default_persist_result() is False


# prefect: tests/results/test_result_store.py::TestDefaultResultStorageResolution::
#   test_configured_default_result_storage_does_not_override_parent_opt_out
def test_configured_default_result_storage_does_not_override_parent_opt_out(
    share: Callable[..., Saved],
) -> None:
    parent, default = share("parent"), share("default")

    @task
    def my_task() -> bool:
        return should_persist_result()

    @flow(persist_result=False, result_storage=parent.slug)
    def my_flow() -> bool:
        return my_task()

    with temporary_settings({PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: default.slug}):
        assert my_flow() is False


# -- tests/results/test_flow_results.py ----------------------------------------------------------
# prefect: tests/results/test_flow_results.py::test_flow_result_storage_by_instance
def test_flow_result_storage_by_instance(shared: Saved) -> None:
    @flow(result_storage=shared.block, persist_result=True)
    def foo() -> int:
        return 1

    state = foo(return_state=True)
    assert state.result() == 1
    run(uses_storage(state, shared.block))

    api_state = api_flow_state(state)
    assert api_state.result() == 1
    run(uses_storage(api_state, shared.block))


# prefect: tests/results/test_flow_results.py::test_flow_result_storage_by_slug
def test_flow_result_storage_by_slug(shared: Saved) -> None:
    @flow(result_storage=shared.slug, persist_result=True)
    def foo() -> int:
        return 1

    state = foo(return_state=True)
    assert state.result() == 1
    run(uses_storage(state, shared.slug))

    api_state = api_flow_state(state)
    assert api_state.result() == 1
    run(uses_storage(api_state, shared.slug))


# prefect: tests/results/test_flow_results.py::test_child_flow_result_storage
@pytest.mark.parametrize("source", ["child", "parent"])
def test_child_flow_result_storage(shared: Saved, source: str) -> None:
    storage = shared.block

    @flow(result_storage=storage if source == "parent" else None)
    def foo() -> Any:
        return bar(return_state=True)

    @flow(result_storage=storage if source == "child" else None, persist_result=True)
    def bar() -> int:
        return 1

    parent_state = foo(return_state=True)
    child_state = parent_state.result()
    assert child_state.result() == 1
    run(uses_storage(child_state, storage))

    api_state = api_flow_state(child_state)
    assert api_state.result() == 1
    run(uses_storage(api_state, storage))


# prefect: tests/results/test_flow_results.py::test_root_flow_default_remote_storage
def test_root_flow_default_remote_storage(shared: Saved) -> None:
    @flow
    async def foo() -> Any:
        return get_run_context().result_store.result_storage

    with temporary_settings({PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: shared.slug}):
        storage_block = run(foo())

    assert_blocks_equal(storage_block, shared.block)
    assert storage_block._is_anonymous is False


# prefect: tests/results/test_flow_results.py::
#   test_local_default_result_storage_enables_flow_result_persistence
def test_local_default_result_storage_enables_flow_result_persistence(shared: Saved) -> None:
    @flow(cache_result_in_memory=False)
    async def foo() -> dict[str, str]:
        return {"foo": "bar"}

    with temporary_settings({PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: shared.slug}):
        state = run(foo(return_state=True))

    assert state.result() == {"foo": "bar"}
    api_state = api_flow_state(state)
    assert api_state.result() == {"foo": "bar"}
    run(uses_storage(api_state, shared.block))


# prefect: tests/results/test_flow_results.py::
#   test_server_default_result_storage_enables_flow_result_persistence
def test_server_default_result_storage_enables_flow_result_persistence(shared: Saved) -> None:
    @flow(cache_result_in_memory=False)
    async def foo() -> dict[str, str]:
        return {"foo": "bar"}

    with get_client(sync_client=True) as client:
        client.update_server_default_result_storage(shared.id)
        try:
            state = run(foo(return_state=True))
            assert state.result() == {"foo": "bar"}
            api_state = api_flow_state(state)
            assert api_state.result() == {"foo": "bar"}
            run(uses_storage(api_state, shared.block))
        finally:
            client.clear_server_default_result_storage()


# prefect: tests/results/test_flow_results.py::
#   test_root_flow_default_remote_storage_saves_correct_result
# (the key is read from the block: our paths are keys, not files of a folder)
def test_root_flow_default_remote_storage_saves_correct_result(shared: Saved) -> None:
    @task(result_storage_key="my-result.pkl", persist_result=True)
    async def bar() -> dict[str, str]:
        return {"foo": "bar"}

    @flow
    async def foo() -> dict[str, str]:
        return await bar()

    with temporary_settings({PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: shared.slug}):
        result = run(foo())

    assert result == {"foo": "bar"}
    storage = type(shared.block).load(shared.name)
    result_bytes = storage.read_path("my-result.pkl", _sync=True)
    assert ResultRecord.deserialize(result_bytes).result == {"foo": "bar"}


# prefect: tests/results/test_flow_results.py::
#   test_root_flow_explicit_result_storage_settings_overrides_default
def test_root_flow_explicit_result_storage_settings_overrides_default(
    share: Callable[..., Saved],
) -> None:
    explicit, default = share("explicit"), share("default")
    cls = type(explicit.block)

    @flow(result_storage=cls.load(explicit.name))
    async def foo() -> Any:
        return get_run_context().result_store.result_storage

    with temporary_settings({PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: default.slug}):
        result = run(foo())

    assert_blocks_equal(result, cls.load(explicit.name))
    assert result != default.block


# prefect: tests/results/test_flow_results.py::test_flow_version_result_storage_key
# (our block as the flow's storage in place of the default LocalFileSystem)
def test_flow_version_result_storage_key(shared: Saved) -> None:
    @task(result_storage_key="{prefect.runtime.flow_run.flow_version}")
    def some_task() -> str:
        return "hello"

    @flow(version="somespecialflowversion", result_storage=shared.slug)
    def some_flow() -> Any:
        some_task()
        return get_run_context().result_store.result_storage

    storage_block = some_flow()
    assert isinstance(storage_block, type(shared.block))
    result = ResultRecord.deserialize(storage_block.read_path("somespecialflowversion", _sync=True))
    assert result.result == "hello"


# -- tests/results/test_task_results.py ----------------------------------------------------------
# prefect: tests/results/test_task_results.py::test_task_result_serializer
# (two of its eight serializer and source pairs: pickle, the default, runs in every other
# test; JSON set on the parent flow and compressed pickle set on the task reach the storage)
@pytest.mark.parametrize(
    ("source", "serializer"),
    [("parent", JSONSerializer()), ("child", "compressed/pickle")],
    ids=["parent-json", "child-compressed-pickle"],
)
def test_task_result_serializer(shared: Saved, source: str, serializer: Any) -> None:
    storage = shared.block

    @flow(result_serializer=serializer if source == "parent" else None, result_storage=storage)
    def foo() -> Any:
        return bar(return_state=True)

    @task(
        result_serializer=serializer if source == "child" else None,
        result_storage=storage,
        persist_result=True,
    )
    def bar() -> int:
        return 1

    flow_state = foo(return_state=True)
    task_state = flow_state.result()
    assert task_state.result() == 1
    run(uses_serializer(task_state, serializer))

    api_state = api_task_state(task_state)
    assert api_state.result() == 1
    run(uses_serializer(api_state, serializer))


# prefect: tests/results/test_task_results.py::test_task_result_storage
@pytest.mark.parametrize("source", ["child", "parent"])
def test_task_result_storage(shared: Saved, source: str) -> None:
    storage = shared.block

    @flow(result_storage=storage if source == "parent" else None)
    def foo() -> Any:
        return bar(return_state=True)

    @task(result_storage=storage if source == "child" else None, persist_result=True)
    def bar() -> int:
        return 1

    flow_state = foo(return_state=True)
    task_state = flow_state.result()
    assert task_state.result() == 1
    run(uses_storage(task_state, storage))

    api_state = api_task_state(task_state)
    assert api_state.result() == 1
    run(uses_storage(api_state, storage))


# prefect: tests/results/test_task_results.py::test_task_result_static_storage_key
def test_task_result_static_storage_key(shared: Saved) -> None:
    @flow
    def foo() -> Any:
        return bar(return_state=True)

    @task(result_storage=shared.block, persist_result=True, result_storage_key="test")
    def bar() -> int:
        return 1

    flow_state = foo(return_state=True)
    task_state = flow_state.result()
    assert task_state.result() == 1
    assert task_state.data.metadata.storage_key == "test"

    api_state = api_task_state(task_state)
    assert api_state.result() == 1
    assert api_state.data.storage_key == "test"
    assert shared.block.exists("test")


# prefect: tests/results/test_task_results.py::test_task_failure_is_persisted_randomly
def test_task_failure_is_persisted_randomly(shared: Saved) -> None:
    @flow
    def foo() -> Any:
        return bar(return_state=True)

    @task(result_storage=shared.block, persist_result=True, result_storage_key="not-a-uuid")
    def bar() -> None:
        raise ValueError("oops I messed up")

    flow_state = foo(return_state=True)
    task_state = flow_state.result(raise_on_failure=False)
    assert task_state.is_failed()
    with pytest.raises(ValueError, match="oops I messed up"):
        task_state.result()
    assert UUID(task_state.data.metadata.storage_key)

    api_state = api_task_state(task_state)
    with pytest.raises(ValueError, match="oops I messed up"):
        api_state.result()
    assert not shared.block.exists("not-a-uuid")


# prefect: tests/results/test_task_results.py::test_task_result_parameter_formatted_storage_key
def test_task_result_parameter_formatted_storage_key(shared: Saved) -> None:
    @flow
    def foo() -> Any:
        return bar(y="foo", return_state=True)

    @task(
        result_storage=shared.block,
        persist_result=True,
        result_storage_key="{parameters[x]}-{parameters[y]}-bar",
    )
    def bar(x: int = 1, y: str = "test") -> int:
        return 1

    flow_state = foo(return_state=True)
    task_state = flow_state.result()
    assert task_state.result() == 1
    assert task_state.data.metadata.storage_key == "1-foo-bar"

    api_state = api_task_state(task_state)
    assert api_state.result() == 1
    assert api_state.data.storage_key == "1-foo-bar"


# prefect: tests/results/test_task_results.py::test_task_result_flow_run_formatted_storage_key
def test_task_result_flow_run_formatted_storage_key(shared: Saved) -> None:
    @flow
    def foo() -> Any:
        return bar(y="foo", return_state=True)

    @task(
        result_storage=shared.block,
        persist_result=True,
        result_storage_key="{flow_run.flow_name}__bar",
    )
    def bar(x: int = 1, y: str = "test") -> int:
        return 1

    flow_state = foo(return_state=True)
    task_state = flow_state.result()
    assert task_state.result() == 1
    assert task_state.data.metadata.storage_key == "foo__bar"

    api_state = api_task_state(task_state)
    assert api_state.result() == 1
    assert api_state.data.storage_key == "foo__bar"


# prefect: tests/results/test_task_results.py::test_result_store_correctly_receives_metadata_storage
# (key storage: the block's, in place of a folder path; result storage: the saved block)
def test_result_store_correctly_receives_metadata_storage(shared: Saved) -> None:
    block = shared.block
    key_storage = block.as_key_storage()

    @task(
        persist_result=True,
        result_storage=block,
        cache_policy=Inputs().configure(key_storage=key_storage),
    )
    def bar() -> ResultStore:
        return get_result_store()

    result_store = bar()
    assert result_store.metadata_storage == key_storage
    assert result_store.result_storage != result_store.metadata_storage


# -- tests/test_tasks.py: a task's own result storage ----------------------------------------------
# prefect: tests/test_tasks.py::TestResultPersistence::
#   test_setting_result_storage_sets_persist_result_to_true
def test_setting_result_storage_sets_persist_result_to_true(shared: Saved) -> None:
    @task(result_storage=shared.block)
    def my_task() -> None:
        pass

    @task
    def base() -> None:
        pass

    new_task = base.with_options(result_storage=shared.block)
    assert my_task.persist_result is True
    assert new_task.persist_result is True


# prefect: tests/test_tasks.py::TestResultPersistence::
#   test_result_storage_unsaved_block_still_rejected
def test_result_storage_unsaved_block_still_rejected(block: MemoryBlock) -> None:
    with pytest.raises(TypeError, match="Result storage configuration must be persisted"):

        @task(result_storage=block)
        def my_task() -> None:
            pass


# prefect: tests/test_tasks.py::TestTaskCaching::
#   test_cache_key_fn_takes_precedence_over_cache_policy
def test_cache_key_fn_takes_precedence_over_cache_policy(
    shared: Saved, caplog: pytest.LogCaptureFixture
) -> None:
    @task(
        cache_key_fn=lambda *_: "cache-hit-9",
        cache_policy=INPUTS,
        result_storage=shared.block,
        persist_result=True,
    )
    def foo(x: int) -> int:
        return x

    first_state = foo(1, return_state=True)
    second_state = foo(2, return_state=True)
    assert first_state.name == "Completed"
    assert second_state.name == "Cached"
    assert second_state.result() == first_state.result() == 1
    assert "`cache_key_fn` will be used" in caplog.text
    assert shared.block.exists("cache-hit-9")


# -- tests/results/test_state_result.py ----------------------------------------------------------
# prefect: tests/results/test_state_result.py::
#   test_to_state_create_drops_unpersisted_result_record_without_run_context
# (plus: nothing reached the storage)
def test_to_state_create_drops_unpersisted_result_record_without_run_context(
    block: MemoryBlock,
) -> None:
    store = ResultStore(result_storage=block, serializer=JSONSerializer())
    record = store.create_result_record({"answer": 42}, key="flow-result")
    state = State(type=StateType.COMPLETED, data=record)
    assert record.is_persisted is False
    assert to_state_create(state).data is None
    assert not block.exists("flow-result")


# prefect: tests/results/test_state_result.py::
#   test_to_state_create_preserves_persisted_result_record_without_run_context
# (plus: the record is in the storage)
def test_to_state_create_preserves_persisted_result_record_without_run_context(
    block: MemoryBlock,
) -> None:
    store = ResultStore(result_storage=block, serializer=JSONSerializer())
    record = store.create_result_record({"answer": 42}, key="flow-result")
    store.persist_result_record(record)
    state = State(type=StateType.COMPLETED, data=record)
    assert record.is_persisted is True
    assert to_state_create(state).data == record.metadata
    assert ResultRecord.deserialize(block.read_path("flow-result", _sync=True)) == record


# prefect: tests/results/test_state_result.py::
#   test_to_state_create_preserves_async_persisted_result_record_without_run_context
# (plus: the record is in the storage)
def test_to_state_create_preserves_async_persisted_result_record_without_run_context(
    block: MemoryBlock,
) -> None:
    store = ResultStore(result_storage=block, serializer=JSONSerializer())
    record = store.create_result_record({"answer": 42}, key="flow-result")
    run(store.apersist_result_record(record))
    state = State(type=StateType.COMPLETED, data=record)
    assert record.is_persisted is True
    assert to_state_create(state).data == record.metadata
    assert ResultRecord.deserialize(block.read_path("flow-result", _sync=True)) == record


@pytest.fixture
def shorter_result_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect.states, "RESULT_READ_MAXIMUM_ATTEMPTS", 3)
    monkeypatch.setattr(prefect.states, "RESULT_READ_RETRY_DELAY", 0.01)


# prefect: tests/results/test_state_result.py::
#   test_graceful_retries_are_finite_while_retrieving_missing_results
# (our error in place of LocalFileSystem's "does not exist"; a saved block, as state.result()
# loads the storage from the API; the timing assertion dropped) and ::
#   test_graceful_retries_eventually_succeed_while (its end: once written, the result is read)
def test_graceful_retries_are_finite_while_retrieving_missing_results(
    shared: Saved, shorter_result_retries: None
) -> None:
    store = ResultStore(
        result_storage=shared.block,
        serializer=JSONSerializer(),
        storage_key_fn=lambda: "test-graceful-retry-path",
    )
    a_real_result = store.create_result_record("test-graceful-retry")
    completed_state: State[str] = State(type=StateType.COMPLETED, data=a_real_result.metadata)

    with pytest.raises(ResultNotFound, match="test-graceful-retry-path"):
        completed_state.result()

    run(store.apersist_result_record(a_real_result))
    assert completed_state.result() == "test-graceful-retry"


# -- tests/test_transactions.py::TestDefaultTransactionStorage ------------------------------------
class TestDefaultTransactionStorage:
    """With ``PREFECT_DEFAULT_RESULT_STORAGE_BLOCK`` (and the task scheduling one) on our block."""

    @pytest.fixture(autouse=True)
    def default_storage(
        self, request: pytest.FixtureRequest, share: Callable[..., Saved]
    ) -> Iterator[Saved]:
        # one block for the sync tests, one for the async ones: they write the same keys
        storage = share("txn-async" if "Async" in request.cls.__name__ else "txn")
        with temporary_settings(
            {
                PREFECT_DEFAULT_RESULT_STORAGE_BLOCK: storage.slug,
                PREFECT_TASK_SCHEDULING_DEFAULT_STORAGE_BLOCK: storage.slug,
            }
        ):
            yield storage

    class TestTransaction:
        # prefect: tests/test_transactions.py::TestDefaultTransactionStorage::TestTransaction::
        #   test_transaction_outside_of_run
        def test_transaction_outside_of_run(self, default_storage: Saved) -> None:
            with transaction(key="test_transaction_outside_of_run", write_on_commit=True) as txn:
                assert isinstance(txn.store, ResultStore)
                txn.stage({"foo": "bar"})

            record = txn.read()
            assert isinstance(record, ResultRecord)
            assert record.result == {"foo": "bar"}
            assert default_storage.block.exists("test_transaction_outside_of_run")

        # prefect: tests/test_transactions.py::TestDefaultTransactionStorage::TestTransaction::
        #   test_transaction_inside_flow_default_storage
        def test_transaction_inside_flow_default_storage(self, default_storage: Saved) -> None:
            @flow(persist_result=True)
            def test_flow() -> Any:
                with transaction(key="test_transaction_inside_flow_default_storage") as txn:
                    assert isinstance(txn.store, ResultStore)
                    txn.stage({"foo": "bar"})

                record = txn.read()
                assert isinstance(record, ResultRecord)
                # make sure we aren't using an anonymous block
                assert record.metadata.storage_block_id == (
                    get_default_result_storage()._block_document_id
                )
                return record.result

            assert test_flow() == {"foo": "bar"}
            assert default_storage.block.exists("test_transaction_inside_flow_default_storage")

        # prefect: tests/test_transactions.py::TestDefaultTransactionStorage::TestTransaction::
        #   test_transaction_inside_task_default_storage
        def test_transaction_inside_task_default_storage(self, default_storage: Saved) -> None:
            @task(persist_result=True)
            def test_task() -> Any:
                with transaction(
                    key="test_transaction_inside_task_default_storage",
                    commit_mode=CommitMode.EAGER,
                ) as txn:
                    assert isinstance(txn.store, ResultStore)
                    txn.stage({"foo": "bar"})

                record = txn.read()
                assert isinstance(record, ResultRecord)
                # make sure we aren't using an anonymous block
                assert record.metadata.storage_block_id == (
                    get_default_result_storage()._block_document_id
                )
                return record.result

            assert test_task() == {"foo": "bar"}
            assert default_storage.block.exists("test_transaction_inside_task_default_storage")

    class TestAsyncTransaction:
        # prefect: tests/test_transactions.py::TestDefaultTransactionStorage::TestAsyncTransaction::
        #   test_transaction_outside_of_run
        def test_transaction_outside_of_run(self, default_storage: Saved) -> None:
            async def scenario() -> Any:
                async with atransaction(
                    key="test_transaction_outside_of_run", write_on_commit=True
                ) as txn:
                    assert isinstance(txn.store, ResultStore)
                    txn.stage({"foo": "bar"})
                return await txn.read()

            record = run(scenario())
            assert isinstance(record, ResultRecord)
            assert record.result == {"foo": "bar"}
            assert default_storage.block.exists("test_transaction_outside_of_run")

        # prefect: tests/test_transactions.py::TestDefaultTransactionStorage::TestAsyncTransaction::
        #   test_transaction_inside_flow_default_storage
        def test_transaction_inside_flow_default_storage(self, default_storage: Saved) -> None:
            @flow(persist_result=True)
            async def test_flow() -> Any:
                async with atransaction(key="test_transaction_inside_flow_default_storage") as txn:
                    assert isinstance(txn.store, ResultStore)
                    txn.stage({"foo": "bar"})

                record = await txn.read()
                assert isinstance(record, ResultRecord)
                # make sure we aren't using an anonymous block
                assert record.metadata.storage_block_id == (
                    (await aget_default_result_storage())._block_document_id
                )
                return record.result

            assert run(test_flow()) == {"foo": "bar"}
            assert default_storage.block.exists("test_transaction_inside_flow_default_storage")

        # prefect: tests/test_transactions.py::TestDefaultTransactionStorage::TestAsyncTransaction::
        #   test_transaction_inside_task_default_storage
        def test_transaction_inside_task_default_storage(self, default_storage: Saved) -> None:
            @task(persist_result=True)
            async def test_task() -> Any:
                async with atransaction(
                    key="test_transaction_inside_task_default_storage",
                    commit_mode=CommitMode.EAGER,
                ) as txn:
                    assert isinstance(txn.store, ResultStore)
                    txn.stage({"foo": "bar"})

                record = await txn.read()
                assert isinstance(record, ResultRecord)
                # make sure we aren't using an anonymous block
                assert record.metadata.storage_block_id == (
                    (await aget_default_result_storage())._block_document_id
                )
                return record.result

            assert run(test_task()) == {"foo": "bar"}
            assert default_storage.block.exists("test_transaction_inside_task_default_storage")

"""Result storage with hostile writers: what pickle allows, and what a signing key refuses.

A block used as ``result_storage`` hands what it reads to Prefect, which deserializes it with
the serializer named in the stored record: pickle by default, and pickle again if a foreign
record says so, whatever the reader's ``result_serializer``. The first tests show that
(a record written by "another client" runs code in the reader: it creates a marker file);
the others show that a block with a ``result_signing_key`` refuses such records with
``ResultSignatureError`` before Prefect deserializes a byte, on real stores, in real flows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.client.orchestration import get_client
from prefect.results import ResultStore
from prefect.serializers import PickleSerializer
from prefect.states import State

from prefect_memory.blocks import JsonMemory, MemoryBlock, RedisMemory, SqliteMemory
from prefect_memory.blocks.results import SIGNED_HEADER, ResultSignatureError, payload_kind
from prefect_memory.errors import DecryptionError

MakeBlock = Callable[..., MemoryBlock]
STORES = [
    pytest.param(SqliteMemory, id="sqlite"),
    pytest.param(JsonMemory, id="json"),
    pytest.param(RedisMemory, id="redis", marks=pytest.mark.redis),
]


class Payload:
    """Unpickling it creates ``marker``: what any code run by a reader could do."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def hostile_record(key: str, marker: pathlib.Path) -> bytes:
    """A result record as another client would write it: it names the pickle serializer."""
    return json.dumps(
        {
            "metadata": {
                "storage_key": key,
                "expiration": None,
                "serializer": {"type": "pickle"},
                "prefect_version": "3.9.1",
                "storage_block_id": None,
            },
            "result": PickleSerializer().dumps(Payload(marker)).decode(),
        }
    ).encode()


@pytest.fixture
def signing_key() -> str:
    return f"signing-key-{uuid.uuid4().hex}"


@pytest.fixture
def marker(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "code-ran-in-the-reader"


def saved(block: MemoryBlock, name: str) -> MemoryBlock:
    block.save(name, overwrite=True)
    return type(block).load(name)


def other_client(block: MemoryBlock) -> MemoryBlock:
    """The same store and namespace, without the key: writes go in raw, as another client's."""
    return block.model_copy(update={"result_signing_key": None})


def cached_pipeline(block: MemoryBlock, calls: list[int], **options: Any) -> Callable[[int], State]:
    @task(
        cache_policy=options.pop("cache_policy", INPUTS + TASK_SOURCE),
        result_storage=block,
        persist_result=True,
        **options,
    )
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @flow
    def pipeline(x: int) -> State:
        return double(x, return_state=True)

    return pipeline


# -- the threat, without a signing key ---------------------------------------------------------
def test_without_a_key_a_foreign_record_runs_code_in_the_next_run(
    make_block: MakeBlock, unique: str, marker: pathlib.Path
) -> None:
    block = saved(make_block(SqliteMemory, namespace="results"), f"open-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls)
    assert pipeline(21).name == "Completed"
    [stored] = block.list_results()

    other_client(block).memory.set(stored.key, hostile_record(stored.key, marker))
    again = pipeline(21)  # the cache lookup reads the foreign record and unpickles it

    assert marker.exists()
    assert again.name == "Cached" and calls == [21]


def test_a_json_result_serializer_alone_does_not_protect_the_reader(
    make_block: MakeBlock, unique: str, marker: pathlib.Path
) -> None:
    block = saved(make_block(SqliteMemory, namespace="results"), f"json-only-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls, result_serializer="json")
    assert pipeline(21).name == "Completed"
    [stored] = block.list_results()
    assert b'"type":"json"' in block.get(stored.key)  # our own record: JSON, no pickle

    other_client(block).memory.set(stored.key, hostile_record(stored.key, marker))
    again = pipeline(21)  # the task says "json"; the record says "pickle"; the record wins

    assert marker.exists()
    assert again.name == "Cached" and calls == [21]


# -- with a signing key ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", STORES)
def test_signed_results_read_back_and_a_foreign_record_is_refused_unread(
    cls: type[MemoryBlock],
    make_block: MakeBlock,
    unique: str,
    signing_key: str,
    marker: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    block = saved(
        make_block(cls, namespace="results", result_signing_key=signing_key), f"signed-{unique}"
    )
    assert block.result_signing_key is not None  # the key came back from the Prefect API
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls)

    first = pipeline(21)
    second = pipeline(21)
    assert (first.name, first.result(), second.name, second.result()) == (
        "Completed", 42, "Cached", 42,
    )  # fmt: skip
    [stored] = block.list_results()
    raw = other_client(block).memory.get(stored.key)
    assert raw.startswith(SIGNED_HEADER) and payload_kind(raw[len(SIGNED_HEADER) + 32 :]) == (
        "record"
    )

    other_client(block).memory.set(stored.key, hostile_record(stored.key, marker))
    with pytest.raises(ResultSignatureError, match="is not signed") as refused:
        ResultStore(result_storage=block).read(stored.key)
    assert isinstance(refused.value, DecryptionError)
    assert not marker.exists()

    with caplog.at_level(logging.WARNING):
        third = pipeline(21)  # the lookup is refused: a cache miss, the task runs again
    assert (third.name, third.result(), calls) == ("Completed", 42, [21, 21])
    assert not marker.exists()
    assert "Refused a stored task result" in caplog.text and stored.key in caplog.text
    assert signing_key not in caplog.text and signing_key not in str(refused.value)

    fourth = pipeline(21)  # the run above stored a signed record again
    assert (fourth.name, calls) == ("Cached", [21, 21])


def test_a_signed_record_moved_to_another_path_or_key_is_refused(
    make_block: MakeBlock, unique: str, signing_key: str
) -> None:
    block = saved(
        make_block(SqliteMemory, namespace="results", result_signing_key=signing_key),
        f"moved-{unique}",
    )
    assert cached_pipeline(block, [])(3).name == "Completed"
    [stored] = block.list_results()
    raw = other_client(block).memory.get(stored.key)

    other_client(block).memory.set("elsewhere", raw)  # a valid record, at another path
    with pytest.raises(ResultSignatureError, match="wrong signature"):
        block.read_path("elsewhere", _sync=True)
    other_ns = other_client(block).model_copy(update={"namespace": "other"})
    other_ns.memory.set(stored.key, raw)  # the same path in another namespace
    with pytest.raises(ResultSignatureError, match="wrong signature"):
        block.model_copy(update={"namespace": "other"}).read_path(stored.key, _sync=True)

    another_key = block.model_copy(update={"result_signing_key": "another-key-" + "x" * 16})
    with pytest.raises(ResultSignatureError, match="wrong signature"):
        another_key.read_path(stored.key, _sync=True)
    tampered = raw[:-2] + bytes([raw[-2] ^ 1]) + raw[-1:]
    other_client(block).memory.set(stored.key, tampered)
    with pytest.raises(ResultSignatureError, match="wrong signature"):
        block.read_path(stored.key, _sync=True)
    with pytest.raises(ResultSignatureError, match="has no result_signing_key"):
        other_client(block).memory.set("signed", raw)
        other_client(block).read_path("signed", _sync=True)  # signed, read without a key


def test_split_key_storage_refuses_a_foreign_bare_result_and_metadata(
    make_block: MakeBlock, unique: str, signing_key: str, marker: pathlib.Path
) -> None:
    block = saved(
        make_block(SqliteMemory, namespace="results", result_signing_key=signing_key),
        f"split-{unique}",
    )
    keys = block.as_key_storage()
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls, cache_policy=INPUTS.configure(key_storage=keys))
    assert pipeline(7).name == "Completed"
    assert (pipeline(7).name, calls) == ("Cached", [7])
    [stored] = block.list_results()
    assert payload_kind(block.read_path(stored.key, _sync=True)) == "result"
    assert payload_kind(keys.read_path(stored.key, _sync=True)) == "metadata"

    # the bare result, read with the pickle serializer its (signed) metadata names
    other_client(block).memory.set(stored.key, PickleSerializer().dumps(Payload(marker)))
    store = ResultStore(result_storage=block, metadata_storage=keys)
    with pytest.raises(ResultSignatureError):
        store.read(stored.key)
    # the metadata record, pointing at a foreign result elsewhere
    other_client(block).memory.set("foreign", PickleSerializer().dumps(Payload(marker)))
    foreign_metadata = json.dumps(
        {"storage_key": "foreign", "expiration": None, "serializer": {"type": "pickle"}}
    ).encode()
    other_client(keys).memory.set(stored.key, foreign_metadata)
    with pytest.raises(ResultSignatureError):
        store.read(stored.key)
    assert not marker.exists()

    again = pipeline(7)  # refused lookups are misses: the task runs and signs anew
    assert (again.name, again.result(), calls) == ("Completed", 14, [7, 7])
    assert not marker.exists()


def test_async_reads_are_checked_too(
    make_block: MakeBlock, unique: str, signing_key: str, marker: pathlib.Path
) -> None:
    block = make_block(SqliteMemory, namespace="results", result_signing_key=signing_key)
    assert asyncio.run(block.awrite_path("r", b"payload")) == "r"
    assert asyncio.run(block.aread_path("r")) == b"payload"
    other_client(block).memory.set("r", hostile_record("r", marker))
    with pytest.raises(ResultSignatureError):
        asyncio.run(block.aread_path("r"))
    assert not marker.exists()


def test_the_key_stays_secret(make_block: MakeBlock, unique: str, signing_key: str) -> None:
    block = make_block(SqliteMemory, namespace="results", result_signing_key=signing_key)
    block.save(f"secret-{unique}", overwrite=True)
    assert signing_key not in repr(block) and signing_key not in str(block)
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            f"secret-{unique}", block.get_block_type_slug(), include_secrets=False
        )
    assert document.data["result_signing_key"] != signing_key  # obfuscated by Prefect
    assert "result_signing_key" in (document.block_schema.fields.get("secret_fields") or [])

    for bad in (signing_key[:10], 12345):  # refused, and the error never shows the value
        with pytest.raises(ValueError) as err:
            type(block)(path=block.path, result_signing_key=bad)
        assert str(bad) not in str(err.value)
    with pytest.raises(ValueError) as err:
        type(block)(path=block.path, result_signing_key=signing_key, unknown_field=1)
    assert signing_key not in str(err.value)


def test_a_secret_block_can_hold_the_key(
    make_block: MakeBlock, unique: str, signing_key: str
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=signing_key).save(f"results-key-{unique}", overwrite=True)
    block = make_block(
        SqliteMemory, namespace="results", result_signing_key=Secret.load(f"results-key-{unique}")
    )
    assert block.result_signing_key is not None
    assert block.result_signing_key.get_secret_value() == signing_key
    block.write_path("r", b"payload", _sync=True)
    same_key = make_block(SqliteMemory, namespace="results", result_signing_key=signing_key)
    assert same_key.read_path("r", _sync=True) == b"payload"

"""``MongoDBMemory.claim_timeout``: the MongoDB store's ``claim_timeout`` as a block field.

Seconds a tier migration's claim on a document holds before another migration may take it
over (see ``tests/test_mongo_claims.py``). The block hands it to the store it opens; a
block saved before the field existed loads with the store's default, 60.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prefect.blocks.core import Block
from pydantic import ValidationError

from former_blocks import save_as_former
from prefect_memory.blocks import MemoryBlock, MongoDBMemory, blocks_from_config
from prefect_memory.plugins.mongodb import MongoBackend

pytestmark = pytest.mark.mongodb

MakeBlock = Callable[..., MemoryBlock]


def _backend(block: MongoDBMemory) -> MongoBackend:
    backend = block.memory.backend
    assert isinstance(backend, MongoBackend)
    return backend


def test_the_block_opens_its_store_with_its_claim_timeout(make_block: MakeBlock) -> None:
    block = make_block(MongoDBMemory, claim_timeout=30)
    assert isinstance(block, MongoDBMemory) and block.claim_timeout == 30.0
    assert _backend(block).claim_timeout == 30.0
    block.set("k", {"v": 1})  # the store opened on the server
    assert block.get("k") == {"v": 1}
    block.claim_timeout = 4.5  # a changed field rebuilds the memory with it
    assert _backend(block).claim_timeout == 4.5 and block.get("k") == {"v": 1}
    block.clear()
    block.close()


def test_the_default_is_the_stores_60_seconds(make_block: MakeBlock) -> None:
    block = make_block(MongoDBMemory)
    assert block.claim_timeout == 60.0 == MongoDBMemory.model_fields["claim_timeout"].default
    assert _backend(block).claim_timeout == 60.0
    block.close()


@pytest.mark.parametrize("bad", [0, -1, -0.5, float("inf"), float("nan"), True, "30"], ids=repr)
def test_a_bad_claim_timeout_is_refused_by_name(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        MongoDBMemory(url="mongodb://127.0.0.1:1/db", claim_timeout=bad)
    assert [e["loc"] for e in info.value.errors()] == [("claim_timeout",)], info.value
    block = MongoDBMemory(url="mongodb://127.0.0.1:1/db")
    with pytest.raises(ValidationError, match="claim_timeout"):
        block.claim_timeout = bad  # assignments are checked too
    assert block.claim_timeout == 60.0


def test_save_and_load_keep_it(make_block: MakeBlock, unique: str) -> None:
    make_block(MongoDBMemory, claim_timeout=12.5).save(f"claims-{unique}")
    for loaded in (
        MongoDBMemory.load(f"claims-{unique}"),
        Block.load(f"mongodb-memory/claims-{unique}"),
    ):
        assert isinstance(loaded, MongoDBMemory) and loaded.claim_timeout == 12.5
        assert _backend(loaded).claim_timeout == 12.5
        loaded.close()


def test_a_block_saved_before_the_field_existed_loads_with_60(
    make_block: MakeBlock, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = make_block(MongoDBMemory, namespace="older")
    block.save(f"now-{unique}")  # registers the block type
    name = f"older-{unique}"
    # What the previous release saved: its schema and its data had no claim_timeout.
    saved = save_as_former(
        block, name, monkeypatch,
        fields=lambda fields: fields["properties"].pop("claim_timeout"),
        data=lambda data: {k: v for k, v in data.items() if k != "claim_timeout"},
    )  # fmt: skip
    assert "claim_timeout" not in saved.data
    assert saved.block_schema is not None
    assert "claim_timeout" not in saved.block_schema.fields["properties"]

    for loaded in (MongoDBMemory.load(name), Block.load(f"mongodb-memory/{name}")):
        assert isinstance(loaded, MongoDBMemory)
        assert (loaded.namespace, loaded.claim_timeout) == ("older", 60.0)
        assert _backend(loaded).claim_timeout == 60.0
        loaded.set("k", 1)  # the same store as the block saved
        assert block.get("k") == 1
        loaded.close()
    block.clear()
    block.close()


def test_blocks_from_config_keep_a_stores_claim_timeout(mongo_server: Any) -> None:
    connection = f"{mongo_server.url}&collection=cfg_{uuid.uuid4().hex[:10]}"
    planned = blocks_from_config(
        {"backend": "mongodb", "connection": connection, "options": {"claim_timeout": 30}}
    )
    [(_, block)] = planned.blocks
    assert isinstance(block, MongoDBMemory) and block.claim_timeout == 30.0
    assert _backend(block).claim_timeout == 30.0
    block.close()

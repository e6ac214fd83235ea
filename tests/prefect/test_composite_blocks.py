"""HybridMemoryBlock, TieredMemoryBlock: nested blocks in the Prefect API, result storage, errors.

The block standards (descriptions, code examples, save/load, pickle) run on these blocks too,
in test_blocks.py (they are in ``BLOCKS``); here: what nesting adds, on real servers.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.blocks.core import Block
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.client.orchestration import get_client
from prefect.states import State
from pydantic import SecretStr, ValidationError

from prefect_memory.blocks import (
    BLOCKS,
    HybridMemoryBlock,
    InProcessMemory,
    JsonMemory,
    MemoryBlock,
    MemoryLockManager,
    MemoryTier,
    RedisLockManager,
    RedisMemory,
    SqliteMemory,
    TieredMemoryBlock,
)
from prefect_memory.tasks import memory_get, memory_set


@pytest.fixture
def redis_part(redis_server: Any, unique: str) -> RedisMemory:
    return RedisMemory(url=redis_server.url, key_prefix=f"c{unique}")


@pytest.fixture
def sqlite_part(tmp_path: Path) -> SqliteMemory:
    return SqliteMemory(path=str(tmp_path / "durable.db"))


def document(slug: str, name: str, include_secrets: bool = False) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_block_document_by_name(name, slug, include_secrets=include_secrets)


def tiered(hot: MemoryBlock, cold: MemoryBlock, **fields: Any) -> TieredMemoryBlock:
    return TieredMemoryBlock(
        tiers=[
            MemoryTier(name="hot", block=hot, ttl="1h", max_size="100MB"),
            MemoryTier(name="cold", block=cold, patterns=["archive:*"]),
        ],
        rules=[{"from": "hot", "to": "cold", "condition": "age >= 0"}],
        **fields,
    )


# -- nested blocks in the Prefect API ----------------------------------------------------------
def test_hybrid_parts_saved_first_are_references_and_load_with_their_own_class(
    redis_part: RedisMemory, sqlite_part: SqliteMemory, unique: str
) -> None:
    redis_part.save(f"hot-{unique}")
    sqlite_part.save(f"durable-{unique}")
    block = HybridMemoryBlock(primary=redis_part, secondary=sqlite_part, namespace="carts", ttl=60)
    block.save(f"hybrid-{unique}")

    saved = document("hybrid-memory", f"hybrid-{unique}")
    assert {k: v["block_document"]["name"] for k, v in saved.block_document_references.items()} == {
        "primary": f"hot-{unique}",
        "secondary": f"durable-{unique}",
    }
    for loaded in (
        HybridMemoryBlock.load(f"hybrid-{unique}"),
        Block.load(f"hybrid-memory/hybrid-{unique}"),
    ):
        # Prefect alone would load the SQLite part as a JsonMemory (same fields, no type).
        assert (type(loaded.primary), type(loaded.secondary)) == (RedisMemory, SqliteMemory)
        assert loaded.secondary._block_document_name == f"durable-{unique}"
        assert loaded.model_dump() == block.model_dump()

    loaded = HybridMemoryBlock.load(f"hybrid-{unique}")
    loaded.set("cart:1", {"items": 2})
    assert redis_part.memory.with_namespace("carts").get("cart:1") == {"items": 2}
    assert sqlite_part.memory.with_namespace("carts").get("cart:1") == {"items": 2}

    # A reference follows its block: a change to the part reaches the hybrid.
    sqlite_part.path = sqlite_part.path + ".moved"
    sqlite_part.save(f"durable-{unique}", overwrite=True)
    assert HybridMemoryBlock.load(f"hybrid-{unique}").secondary.path.endswith(".moved")


def test_save_with_parts_saves_unsaved_parts_under_derived_names(
    sqlite_part: SqliteMemory, unique: str, tmp_path: Path
) -> None:
    json_part = JsonMemory(path=str(tmp_path / "backup.json"))
    json_part.save(f"backup-{unique}")
    block = HybridMemoryBlock(primary=InProcessMemory(name=f"p-{unique}"), secondary=json_part)
    saved = block.save_with_parts(f"shop-{unique}")
    assert saved == [
        ("in-process-memory", f"shop-{unique}-primary"),
        ("hybrid-memory", f"shop-{unique}"),
    ]
    references = document("hybrid-memory", f"shop-{unique}").block_document_references
    assert references["primary"]["block_document"]["name"] == f"shop-{unique}-primary"
    assert references["secondary"]["block_document"]["name"] == f"backup-{unique}"
    assert type(HybridMemoryBlock.load(f"shop-{unique}").secondary) is JsonMemory


def test_unsaved_parts_are_saved_inline_and_still_load_as_blocks(
    sqlite_part: SqliteMemory, unique: str
) -> None:
    block = HybridMemoryBlock(primary=InProcessMemory(name=f"i-{unique}"), secondary=sqlite_part)
    block.save(f"inline-{unique}")
    assert document("hybrid-memory", f"inline-{unique}").block_document_references == {}
    loaded = HybridMemoryBlock.load(f"inline-{unique}")
    assert (type(loaded.primary), type(loaded.secondary)) == (InProcessMemory, SqliteMemory)


def test_tier_blocks_are_references_in_the_list_and_load_as_blocks(
    redis_part: RedisMemory, sqlite_part: SqliteMemory, unique: str
) -> None:
    redis_part.save(f"tier-hot-{unique}")  # saved: referenced; sqlite_part: inline
    block = tiered(redis_part, sqlite_part, namespace="features", promote="never")
    block.save(f"tiered-{unique}")

    data = document("tiered-memory", f"tiered-{unique}").data
    assert data["tiers"][0]["block"] == {
        "$ref": {"block_document_id": str(redis_part._block_document_id)}
    }
    assert data["tiers"][1]["block"]["block_type_slug"] == "sqlite-memory"
    assert data["rules"] == [{"from": "hot", "to": "cold", "condition": "age >= 0"}]

    name = f"tiered-{unique}"
    for loaded in (TieredMemoryBlock.load(name), Block.load(f"tiered-memory/{name}")):
        assert [type(t.block) for t in loaded.tiers] == [RedisMemory, SqliteMemory]
        assert loaded.tiers[0].block._block_document_name == f"tier-hot-{unique}"
        assert loaded.model_dump() == block.model_dump()
    loaded = TieredMemoryBlock.load(f"tiered-{unique}")
    loaded.save(f"tiered-{unique}", overwrite=True)  # a loaded block keeps its references
    assert "$ref" in document("tiered-memory", f"tiered-{unique}").data["tiers"][0]["block"]


def test_a_ui_written_reference_in_the_tiers_is_resolved(
    sqlite_part: SqliteMemory, unique: str
) -> None:
    sqlite_part.save(f"ui-cold-{unique}")
    reference = {"$ref": {"block_document_id": str(sqlite_part._block_document_id)}}
    data = {"tiers": [{"name": "hot", "block": {"block_type_slug": "in-process-memory"}},
                      {"name": "cold", "block": reference}]}  # fmt: skip
    block = TieredMemoryBlock.model_validate(data)
    assert type(block.tiers[1].block) is SqliteMemory
    assert block.tiers[1].block.path == sqlite_part.path

    missing = {"$ref": {"block_document_id": "00000000-0000-4000-8000-000000000000"}}
    with pytest.raises(ValidationError) as info:
        TieredMemoryBlock.model_validate({"tiers": [{"name": "hot", "block": missing}]})
    assert info.value.errors()[0]["loc"][:3] == ("tiers", 0, "block")
    assert "does not exist" in str(info.value)
    with pytest.raises(ValidationError, match="block_document_id"):
        TieredMemoryBlock.model_validate({"tiers": [{"name": "hot", "block": {"$ref": "x"}}]})


def test_secrets_of_tier_blocks_never_reach_the_parent_document(
    redis_server: Any, sqlite_part: SqliteMemory, unique: str
) -> None:
    secret_part = RedisMemory(url=redis_server.url, password=SecretStr("s3cr3t"))
    block = tiered(secret_part, sqlite_part)
    with pytest.raises(ValueError, match=r"tiers\[0\]\.block\.password.*saved first"):
        block.save(f"secret-{unique}")
    block.save_with_parts(f"secret-{unique}")
    assert "s3cr3t" not in str(document("tiered-memory", f"secret-{unique}").data)
    part = document("redis-memory", f"secret-{unique}-hot")
    assert part.data["password"] != "s3cr3t"  # Prefect hides it in its own document
    loaded = TieredMemoryBlock.load(f"secret-{unique}")
    assert loaded.tiers[0].block.password.get_secret_value() == "s3cr3t"


def test_pickle_keeps_parts_and_rebuilds_the_memory(
    redis_part: RedisMemory, sqlite_part: SqliteMemory, unique: str
) -> None:
    redis_part.save(f"pk-{unique}")
    HybridMemoryBlock(primary=redis_part, secondary=sqlite_part).save(f"pk-{unique}")
    for block in (HybridMemoryBlock.load(f"pk-{unique}"), tiered(redis_part, sqlite_part)):
        block.set("k", [1, 2])
        copy = pickle.loads(pickle.dumps(block))
        assert copy._lazy.memory is None and copy.model_dump() == block.model_dump()
        assert copy.get("k") == [1, 2] and copy.memory is not block.memory


# -- result storage with real servers -------------------------------------------------------
def cached_pipeline(block: MemoryBlock, calls: list[int]) -> Callable[[int], State]:
    @task(cache_policy=INPUTS + TASK_SOURCE, result_storage=block)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @flow
    def pipeline(x: int) -> State:
        return double(x, return_state=True)

    return pipeline


@pytest.mark.parametrize("hot_kind", ["inprocess", "redis"])
def test_tiered_block_as_result_storage_hits_before_and_after_migration(
    hot_kind: str, redis_part: RedisMemory, sqlite_part: SqliteMemory, unique: str
) -> None:
    hot = redis_part if hot_kind == "redis" else InProcessMemory(name=f"hot-{unique}")
    tiered(hot, sqlite_part, namespace="results", ttl=600).save_with_parts(f"res-{unique}")
    block = TieredMemoryBlock.load(f"res-{unique}")  # the recipe: pass the loaded instance
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls)
    assert pipeline(21).name == "Completed"
    [key] = block.list_keys()
    assert block.info(key).tier == "hot" and block.info(key).expires_at is not None

    assert sum(block.migrate().moved.values()) == 1  # rule: age >= 0
    assert sqlite_part.memory.with_namespace("results").exists(key)
    hit = pipeline(21)  # read from the cold tier (and promoted home)
    assert (hit.name, hit.result(), calls) == ("Cached", 42, [21])
    assert block.info(key).tier == "hot"


def test_hybrid_block_as_result_storage_survives_a_lost_primary(
    redis_part: RedisMemory, sqlite_part: SqliteMemory, unique: str
) -> None:
    HybridMemoryBlock(
        primary=redis_part, secondary=sqlite_part, namespace="results"
    ).save_with_parts(f"hres-{unique}")
    block = HybridMemoryBlock.load(f"hres-{unique}")
    calls: list[int] = []
    pipeline = cached_pipeline(block, calls)
    assert pipeline(5).name == "Completed"
    [key] = block.list_keys()
    in_redis = redis_part.memory.with_namespace("results")
    assert in_redis.exists(key) and sqlite_part.memory.with_namespace("results").exists(key)
    in_redis.clear()  # Redis restarted empty: the secondary still has the result
    hit = pipeline(5)
    assert (hit.name, hit.result(), calls) == ("Cached", 10, [5])


def test_memory_tasks_take_composed_blocks_and_their_slugs(
    redis_part: RedisMemory, sqlite_part: SqliteMemory, unique: str
) -> None:
    tiered(redis_part, sqlite_part, namespace="tasks").save_with_parts(f"tasks-{unique}")
    block = TieredMemoryBlock.load(f"tasks-{unique}")

    @flow
    def remember() -> tuple[Any, Any]:
        memory_set(block, "archive:7", {"seen": True})  # the instance...
        by_slug = memory_get(f"tiered-memory/tasks-{unique}", "archive:7")  # ...or its slug
        return by_slug, memory_get(block, "missing", default=0)

    assert remember() == ({"seen": True}, 0)
    assert sqlite_part.memory.with_namespace("tasks").get("archive:7") == {"seen": True}


# -- passthroughs, locks ----------------------------------------------------------------------
def test_write_behind_flush_sync_and_async_twins(
    sqlite_part: SqliteMemory, unique: str, tmp_path: Path
) -> None:
    block = HybridMemoryBlock(
        primary=InProcessMemory(name=f"wb-{unique}"), secondary=sqlite_part,
        strategy="write-behind", journal=str(tmp_path / "journal.db"), flush_interval=60,
    )  # fmt: skip
    block.set_many({"a": 1, "b": 2})
    assert block.backlog() == 2
    assert block.flush() == 2 and block.backlog() == 0
    assert sqlite_part.memory.get_many(["a", "b"]) == {"a": 1, "b": 2}
    sqlite_part.memory.set("c", 3)  # written behind the hybrid's back
    report = block.sync()
    assert report.copied_to_primary == 1 and block.primary.memory.get("c") == 3

    async def scenario() -> None:
        await block.aset("d", 4)
        assert await block.abacklog() == 1
        assert await block.aflush() == 1
        await block.asettle(timeout=5)  # nothing in doubt: returns at once

    asyncio.run(scenario())
    block.settle(timeout=5)
    assert block.memory.in_doubt() == 0


def test_migrate_dry_run_lists_the_moves(sqlite_part: SqliteMemory, unique: str) -> None:
    block = tiered(InProcessMemory(name=f"mg-{unique}"), sqlite_part)
    block.set_many({"user:1": 1, "archive:1": 2})
    assert {k: block.info(k).tier for k in ("user:1", "archive:1")} == {
        "user:1": "hot",
        "archive:1": "cold",
    }
    report = block.migrate(dry_run=True)
    assert report.planned == [("user:1", "hot", "cold")] and block.info("user:1").tier == "hot"
    assert sum(asyncio.run(block.amigrate()).moved.values()) == 1


def test_lock_manager_uses_a_redis_part(redis_part: RedisMemory, sqlite_part: SqliteMemory) -> None:
    hybrid = HybridMemoryBlock(primary=redis_part, secondary=sqlite_part, namespace="locks")
    locks = hybrid.lock_manager(hold_timeout=5)
    assert type(locks) is RedisLockManager
    assert locks.acquire_lock("k", holder="a") and not locks.acquire_lock("k", "b", 0)
    assert 0 < locks.hold_remaining("k") <= 5
    locks.release_lock("k", holder="a")
    other = tiered(InProcessMemory(name="locks"), sqlite_part).lock_manager(hold_timeout=5)
    assert type(other) is MemoryLockManager and other.acquire_lock("k", holder="a")


# -- catalog text and validation ---------------------------------------------------------------
@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_catalog_text_has_no_characters_the_ui_would_show_escaped(cls: type[MemoryBlock]) -> None:
    # The Prefect server HTML-escapes block type descriptions and code examples, and the UI
    # then shows "-&gt; dict" in the code (seen in headless Chromium, tests/prefect/test_ui.py).
    for text in (cls.get_description(), cls.get_code_example()):
        assert not set("<>&") & set(text or ""), text


BAD_TIERED = [
    ({"rules": [{"from": "hot", "to": "cold", "condition": "age >> 1"}]},
     ("rules", 0, "condition"), "at position 5"),
    ({"rules": [{"from": "hot", "to": "cld", "condition": "age > 1"}]},
     ("rules",), "rules[0].to: unknown tier 'cld' (tiers: hot, cold)"),
    ({"rules": [{"from": "cold", "to": "cold", "condition": "age > 1"}]},
     ("rules",), "same tier"),
    ({"rules": [{"from": "hot", "condition": "age > 1"}]}, ("rules", 0, "to"), "Field required"),
    ({"tiers": []}, ("tiers",), "at least 1"),
    ({"tiers": [{"name": "a"}, {"name": "a"}]}, ("tiers",), "tiers[1].name: duplicate"),
    ({"tiers": [{"name": "a", "max_size": "100 parsecs"}]}, ("tiers", 0, "max_size"), "100MB"),
    ({"tiers": [{"name": "a", "ttl": "soon"}]}, ("tiers", 0, "ttl"), "duration like '1h'"),
    ({"tiers": [{"name": "a", "colour": "red"}]}, ("tiers", 0, "colour"), "Extra inputs"),
    ({"promote": "sometimes"}, ("promote",), "'home', 'first' or 'never'"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "loc", "message"), BAD_TIERED)
def test_tiered_errors_name_the_field(
    change: dict[str, Any], loc: tuple[Any, ...], message: str, tmp_path: Path
) -> None:
    block = {"block_type_slug": "in-process-memory"}
    fields: dict[str, Any] = {
        "tiers": [{"name": "hot", "block": block}, {"name": "cold", "block": block}],
        **change,
    }
    for tier in fields["tiers"]:
        tier.setdefault("block", block)
    with pytest.raises(ValidationError) as info:
        TieredMemoryBlock(**fields)
    [error] = info.value.errors()
    assert error["loc"] == loc and message in str(info.value), info.value


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"strategy": "later"}, "strategy"),
        ({"sync_interval": 0}, "sync_interval"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"journal": ""}, "journal"),
        ({"secondary": None}, "secondary"),
        ({"primary": "redis://localhost:6379/0"}, "primary"),
        ({"ttl": -1}, "ttl"),
    ],
)
def test_hybrid_errors_name_the_field(fields: dict[str, Any], loc: str) -> None:
    parts = {"primary": InProcessMemory(), "secondary": InProcessMemory(name="other")}
    with pytest.raises(ValidationError) as info:
        HybridMemoryBlock(**{**parts, **fields})
    assert loc in {error["loc"][0] for error in info.value.errors()}, info.value


def test_composed_blocks_have_no_connection_string() -> None:
    with pytest.raises(ValueError, match="built from its parts"):
        HybridMemoryBlock.from_connection_string("redis://localhost")
    with pytest.raises(ValidationError, match="unknown field"):
        HybridMemoryBlock(primary=InProcessMemory(), secondary=InProcessMemory(), tiers=[])

"""Block class names that no longer clash, and the former names as deprecated aliases.

The composed blocks were ``HybridMemory`` and ``TieredMemory``, the names of the engine
classes (:class:`prefect_memory.HybridMemory`, :class:`prefect_memory.tiers.TieredMemory`)
whose constructors differ; they are ``HybridMemoryBlock`` and ``TieredMemoryBlock`` now.
``MongoMemory`` is ``MongoDBMemory``, as its slug ``mongodb-memory`` says. The slugs did not
change: saved blocks and deployments name ``tiered-memory/shop``. The former names work for
one release: the same class objects, with a ``DeprecationWarning``, and pickles made under
them load.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pickletools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block

import prefect_memory
import prefect_memory.blocks as blocks
from former_blocks import save_as_former
from prefect_memory.blocks import (
    BLOCKS,
    HybridMemoryBlock,
    InProcessMemory,
    MemoryTier,
    MongoDBMemory,
    SqliteMemory,
    TieredMemoryBlock,
)

#: (module, former name, class now): every place a former name was importable from.
FORMER_NAMES = [
    ("prefect_memory.blocks", "HybridMemory", HybridMemoryBlock),
    ("prefect_memory.blocks", "TieredMemory", TieredMemoryBlock),
    ("prefect_memory.blocks", "MongoMemory", MongoDBMemory),
    ("prefect_memory.blocks.composite", "HybridMemory", HybridMemoryBlock),
    ("prefect_memory.blocks.composite", "TieredMemory", TieredMemoryBlock),
    ("prefect_memory.blocks.remote", "MongoMemory", MongoDBMemory),
    ("prefect_memory", "MongoMemory", MongoDBMemory),
]

#: The slugs saved block documents and deployments reference, and the names the UI shows.
SLUGS = {
    "RedisMemory": ("redis-memory", "Redis Memory"),
    "MongoDBMemory": ("mongodb-memory", "MongoDB Memory"),
    "S3Memory": ("s3-memory", "S3 Memory"),
    "JsonMemory": ("json-memory", "JSON Memory"),
    "SqliteMemory": ("sqlite-memory", "SQLite Memory"),
    "InProcessMemory": ("in-process-memory", "In-Process Memory"),
    "ParquetArchiveMemory": ("parquet-archive-memory", "Parquet Archive Memory"),
    "HybridMemoryBlock": ("hybrid-memory", "Hybrid Memory"),
    "TieredMemoryBlock": ("tiered-memory", "Tiered Memory"),
}

WALKED_MODULES = (
    "prefect_memory",
    "prefect_memory.blocks",
    "prefect_memory.blocks.composite",
    "prefect_memory.blocks.remote",
)


@pytest.mark.parametrize(
    ("module", "old", "new"), FORMER_NAMES, ids=[f"{m}.{o}" for m, o, _ in FORMER_NAMES]
)
def test_a_former_name_warns_and_is_the_same_class(module: str, old: str, new: type) -> None:
    with pytest.deprecated_call(match=rf"{old} is deprecated, use {new.__name__}\b"):
        found = getattr(importlib.import_module(module), old)
    assert found is new


def test_from_import_of_a_former_name_warns() -> None:
    namespace: dict[str, Any] = {}
    with pytest.deprecated_call(match="use TieredMemoryBlock"):
        exec("from prefect_memory.blocks import TieredMemory", namespace)
    assert namespace["TieredMemory"] is TieredMemoryBlock
    block = namespace["TieredMemory"](tiers=[MemoryTier(name="hot", block=InProcessMemory())])
    assert isinstance(block, TieredMemoryBlock)


def test_an_unknown_name_still_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="HybridMemoryBlok"):
        blocks.HybridMemoryBlok  # noqa: B018


@pytest.mark.parametrize("module", WALKED_MODULES)
def test_walking_a_module_warns_nothing_and_lists_no_former_name(module: str) -> None:
    found = importlib.import_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        members = dict(inspect.getmembers(found))  # what `prefect block register -m` does
    former = {"HybridMemory", "TieredMemory", "MongoMemory"}
    if module == "prefect_memory":  # there, HybridMemory is the engine and keeps its name
        assert members["HybridMemory"] is prefect_memory.hybrid.HybridMemory
        former.discard("HybridMemory")
    assert former.isdisjoint(members)
    assert former.isdisjoint(getattr(found, "__all__", ()))


def test_walking_the_package_finds_each_block_once() -> None:
    found = [
        cls
        for _, cls in inspect.getmembers(prefect_memory)
        if inspect.isclass(cls) and Block.is_block_class(cls) and cls in BLOCKS
    ]
    assert sorted(c.__name__ for c in found) == sorted(c.__name__ for c in BLOCKS)
    assert len(BLOCKS) == 9


def test_block_type_slugs_and_names_are_unchanged() -> None:
    seen = {cls.__name__: (cls.get_block_type_slug(), cls.get_block_type_name()) for cls in BLOCKS}
    assert seen == SLUGS
    for cls in (HybridMemoryBlock, TieredMemoryBlock, MongoDBMemory):  # set, not derived
        assert cls.__dict__["_block_type_slug"] == SLUGS[cls.__name__][0]


def test_no_block_name_is_an_engine_name_with_another_class() -> None:
    engines = (
        prefect_memory,
        prefect_memory.hybrid,
        importlib.import_module("prefect_memory.tiers"),
    )
    for name in blocks.__all__:
        for module in engines:
            if name in dir(module):
                assert getattr(module, name) is getattr(blocks, name), f"{module.__name__}.{name}"
    assert not Block.is_block_class(prefect_memory.HybridMemory)
    assert not Block.is_block_class(importlib.import_module("prefect_memory.tiers").TieredMemory)


@contextmanager
def _named(cls: type, old: str) -> Iterator[None]:
    """Give ``cls`` its former name while pickling: the pickle then holds the old path."""
    name, qualname = cls.__name__, cls.__qualname__
    cls.__name__ = cls.__qualname__ = old
    try:
        with warnings.catch_warnings():  # pickle looks the former name up in the module
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        cls.__name__, cls.__qualname__ = name, qualname


def _globals_in(blob: bytes) -> set[str]:
    """The ``module name`` pairs a pickle refers to (GLOBAL and STACK_GLOBAL)."""
    found: set[str] = set()
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(blob):
        if opcode.name == "GLOBAL":
            found.add(str(arg))
        elif opcode.name == "STACK_GLOBAL":
            found.add(" ".join(strings[-2:]))
        if isinstance(arg, str):
            strings.append(arg)
    return found


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_hybrid_block_pickled_under_its_former_path_loads(
    protocol: int, tmp_path: Path, unique: str
) -> None:
    block = HybridMemoryBlock(
        primary=InProcessMemory(name=f"p-{unique}"),
        secondary=SqliteMemory(path=str(tmp_path / "s.db")),
        namespace="pickled",
    )
    block.set("cart:1", {"items": 2})
    with _named(HybridMemoryBlock, "HybridMemory"):
        blob = pickle.dumps(block, protocol=protocol)
    assert "prefect_memory.blocks.composite HybridMemory" in _globals_in(blob)
    with pytest.deprecated_call(match="use HybridMemoryBlock"):
        clone = pickle.loads(blob)
    assert type(clone) is HybridMemoryBlock
    assert clone.get("cart:1") == {"items": 2}  # the same stores, read back


@pytest.mark.parametrize(
    ("cls", "old", "fields"),
    [
        (MongoDBMemory, "MongoMemory", {"url": "mongodb://db.local:27017/app", "collection": "c"}),
        (
            TieredMemoryBlock,
            "TieredMemory",
            {"tiers": [MemoryTier(name="hot", block=InProcessMemory())]},
        ),
    ],
    ids=["MongoMemory", "TieredMemory"],
)
def test_a_block_pickled_under_its_former_path_loads(
    cls: type[Any], old: str, fields: dict[str, Any]
) -> None:
    block = cls(**fields, namespace="pickled")
    with _named(cls, old):
        blob = pickle.dumps(block)
    assert f"{cls.__module__} {old}" in _globals_in(blob)
    with pytest.deprecated_call(match=f"use {cls.__name__}"):
        clone = pickle.loads(blob)
    assert type(clone) is cls
    assert clone.namespace == "pickled"
    assert clone.model_dump(exclude={"tiers"}) == block.model_dump(exclude={"tiers"})


def test_a_block_saved_by_the_former_class_loads_with_the_new_one(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"shop-{unique}"
    block = TieredMemoryBlock(
        tiers=[MemoryTier(name="hot", block=InProcessMemory(name=f"hot-{unique}"))],
        namespace="shop",
    )
    # What the previous release saved: the same slug, a schema titled by the former name.
    saved = save_as_former(
        block, name, monkeypatch, fields=lambda fields: fields.update(title="TieredMemory")
    )
    assert saved.block_schema is not None and saved.block_schema.fields["title"] == "TieredMemory"

    for loaded in (TieredMemoryBlock.load(name), Block.load(f"tiered-memory/{name}")):
        assert type(loaded) is TieredMemoryBlock
        assert loaded.namespace == "shop" and [t.name for t in loaded.tiers] == ["hot"]
        loaded.set("order:1", {"total": 3})
        assert loaded.get("order:1") == {"total": 3}
        assert loaded.info("order:1").tier == "hot"

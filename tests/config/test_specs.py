"""The spec layer: a config read once into typed specs, then built into a Memory or blocks.

``read_config`` opens nothing (a store that could not be reached is no problem of the
reading), tells the shapes apart by ``type``, keeps every spec's path in the config and
lists every problem once; ``from_config`` and ``blocks_from_config`` build from the spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import prefect_memory as pm
from prefect_memory.config import (
    CONFIG_SPEC,
    HybridSpec,
    MemoryBuilder,
    NamespacesSpec,
    SingleSpec,
    StoreSpec,
    SyncSpec,
    TieredSpec,
    parse_config,
    read_config,
)
from prefect_memory.config.reader import SyncSpec as ReaderSyncSpec

UNREACHABLE = {"redis": "redis://127.0.0.1:1/0", "mongodb": "mongodb://127.0.0.1:1/db"}


def test_each_shape_has_its_type_and_paths(tmp_path: Path) -> None:
    tiers = parse_config({"backend": "hybrid", "namespace": "n", "tiers": [
        {"name": "hot", "backend": "redis", "maxSize": "1MB", "maxEntries": 3},
        {"name": "cold", "backend": "parquet", "location": str(tmp_path / "a")},
    ], "migration": {"rules": [{"from": "hot", "to": "cold", "condition": "age > 1"}]},
        "promote": "first"}, UNREACHABLE)  # fmt: skip
    assert isinstance(tiers, TieredSpec) and tiers.type == "tiered"
    hot, cold = tiers.tiers
    assert (hot.path, hot.store.path, hot.max_bytes, hot.max_size, hot.max_entries) == (
        "memory.tiers[0]", "memory.tiers[0]", 1024**2, "1MB", 3,
    )  # fmt: skip
    assert (cold.store.kind, cold.store.store, cold.store.url) == (
        "parquet", "parquet", f"parquet:///{tmp_path}/a",
    )  # fmt: skip
    assert tiers.rules[0].as_config() == {"from": "hot", "to": "cold", "condition": "age > 1"}
    assert (tiers.promote, tiers.settings.namespace) == ("first", "n")

    hybrid = parse_config(
        {
            "backend": "hybrid",
            "primary": "redis",
            "secondary": {"backend": "hybrid", "primary": "memory", "secondary": "memory"},
        },
        UNREACHABLE,
    )
    assert isinstance(hybrid, HybridSpec) and isinstance(hybrid.secondary, HybridSpec)
    assert hybrid.primary.url == "redis://127.0.0.1:1/0"  # connections= applied, not opened
    assert hybrid.secondary.primary.path == "memory.secondary.primary"


def test_a_namespaces_config_keeps_applied_settings_and_sections(tmp_path: Path) -> None:
    spec = parse_config({"backend": "memory", "ttl": 60, "datasets": {
        "t": {"backend": "file", "location": str(tmp_path), "format": "parquet",
              "partitioning": "date"}},
        "compute": {"cache": {"p": {"ttl": 5}}},
        "streams": {"e": {"type": "redis-stream"}}})  # fmt: skip
    assert isinstance(spec, NamespacesSpec)
    by_name = {part.name: part for part in spec.parts}
    assert by_name["t"].applied == {"format": "parquet", "partitioning": "date"}
    assert by_name["t"].memory.store.store == "parquet"
    cache = by_name["p"]
    assert (cache.path, cache.memory.store.kind) == ("memory.compute.cache.p", "sqlite")
    assert by_name["p"].memory.settings.ttl == 5 and by_name["t"].memory.settings.ttl == 60
    assert spec.extras() == {"streams": {"e": {"type": "redis-stream"}}}


def test_the_discriminator_round_trips_and_refuses_unknown_types() -> None:
    spec = parse_config({"backend": "hybrid", "primary": "memory", "secondary": "memory",
                         "sync": {"strategy": "write-behind", "interval": 500}})  # fmt: skip
    data = json.loads(json.dumps(spec.model_dump()))
    assert data["type"] == "hybrid" and data["primary"]["type"] == "store"
    assert CONFIG_SPEC.validate_python(data) == spec
    with pytest.raises(ValidationError, match=r"union_tag_invalid|does not match any"):
        CONFIG_SPEC.validate_python({**data, "type": "sharded"})
    with pytest.raises(ValidationError):
        StoreSpec(path="memory", kind="redis", store="redis", url="redis://", colour=1)


def test_problems_are_listed_once_each_with_its_path_and_nothing_opens() -> None:
    config = {
        "namespaces": {
            "a": {"backend": "redis", "ttl": "soon", "pickle": "yes"},
            "b": {"backend": "hybrid", "primary": {"type": "redis", "ttl": 1}},
        },
        "schemas": {"definitions": {"x": {"type": "strin"}}},
    }
    spec, problems = read_config(config, UNREACHABLE)
    assert spec is None
    assert [p.split(":")[0] for p in problems] == [
        "memory.namespaces.a.ttl", "memory.namespaces.a.pickle",
        "memory.schemas.definitions.x.type",  # inherited by both parts, listed once
        "memory.namespaces.b.primary.ttl", "memory.namespaces.b",
    ]  # fmt: skip
    assert "not a setting of a part: set it on the memory (memory.namespaces.b)" in problems[3]
    with pytest.raises(pm.ConfigError) as info:
        parse_config(config, UNREACHABLE)
    assert str(info.value).splitlines()[1:] == ["  " + p for p in problems]


def test_from_config_builds_from_the_spec_and_reports_opening_at_its_path() -> None:
    spec = parse_config({"backend": "hybrid", "primary": "memory", "secondary": "memory",
                         "ttl": 30, "compression": True, "sync": {"enabled": False}})  # fmt: skip
    mem = MemoryBuilder().build(spec)
    assert isinstance(mem, pm.HybridMemory) and mem.sync_interval is None
    assert mem.ttl == 30 and mem.codec.compression
    bad = {"tiers": [{"name": "a", "backend": "memory"},
                     {"name": "b", "backend": "memory", "options": {"colour": 1}}],
           "backend": "hybrid"}  # fmt: skip
    assert read_config(bad)[1] == []  # options are the store's to refuse, when opened
    with pytest.raises(pm.ConfigError, match=r"memory\.tiers\[1\]\.options: the memory store"):
        pm.from_config(bad)


def test_single_spec_settings_become_memory_options() -> None:
    spec = parse_config({"backend": "memory", "namespace": "s", "refresh": True, "ttl": "1m"})
    assert isinstance(spec, SingleSpec)
    assert spec.settings.memory_options() == {"ttl": 60.0, "refresh": True}
    mem = pm.from_config({"backend": "memory", "namespace": "s", "refresh": True, "ttl": "1m"})
    assert (mem.namespace, mem.ttl, mem.refresh) == ("s", 60.0, True)


def test_sync_spec_is_one_class_with_its_former_call_forms() -> None:
    assert ReaderSyncSpec is SyncSpec
    assert SyncSpec("write-behind", 60000.0, False) == SyncSpec(
        strategy="write-behind", interval=60000, enabled=False
    )
    assert SyncSpec(interval=2000).flush_interval == 2.0
    with pytest.raises(ValidationError):
        SyncSpec("sometimes")


def test_blocks_are_planned_from_the_same_spec(tmp_path: Path) -> None:
    from prefect_memory.blocks import blocks_from_config

    config: dict[str, Any] = {"backend": "hybrid", "primary": "memory",
                              "secondary": {"type": "sqlite", "location": str(tmp_path / "m.db")},
                              "ttl": "1h", "refresh": True}  # fmt: skip
    planned = blocks_from_config(config, name_prefix="c")
    hybrid = planned.blocks[-1][1]
    assert [name for name, _ in planned.blocks] == ["c-primary", "c-secondary", "c"]
    assert (hybrid.ttl, hybrid.refresh) == (3600.0, True)
    nested = {**config, "secondary": {"backend": "hybrid", "primary": "memory",
                                      "secondary": "memory"}}  # fmt: skip
    with pytest.raises(pm.ConfigError, match=r"memory\.secondary: a hybrid part inside"):
        blocks_from_config(nested)
    assert isinstance(pm.from_config(nested), pm.HybridMemory)  # a Memory can nest them


def test_memory_settings_of_a_hybrid_inside_a_hybrid_are_refused() -> None:
    """Only the stores of an inner hybrid are used: its ttl/namespace would do nothing."""
    import pytest

    import prefect_memory as pm
    from prefect_memory.errors import ConfigError

    inner = {"backend": "hybrid", "primary": "memory", "secondary": "memory", "ttl": 60,
             "namespace": "x"}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        pm.from_config({"memory": {"backend": "hybrid", "primary": inner, "secondary": "memory"}})
    text = str(caught.value)
    assert "memory.primary.namespace: not a setting of a part: set it on the memory" in text
    assert "memory.primary.ttl: not a setting of a part" in text
    inner.pop("ttl"), inner.pop("namespace")
    mem = pm.from_config({"memory": {"backend": "hybrid", "primary": inner, "secondary": "memory"}})
    assert mem.get("k") is None

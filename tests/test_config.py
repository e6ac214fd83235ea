"""from_config: the tutorial's JSON shapes, on real servers, and errors with paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.resilience import HybridMemory
from prefect_memory.tiers import TieredMemory

BASIC_HYBRID = {
    "memory": {
        "backend": "hybrid",
        "primary": {"type": "redis", "connection": "redis://localhost:6379"},
        "secondary": {"type": "json", "location": "./memory/backup.json"},
        "sync": {"enabled": True, "interval": 30000, "strategy": "write-through"},
    }
}

TIERS = {
    "memory": {
        "backend": "hybrid",
        "tiers": [
            {"name": "hot", "backend": "redis", "ttl": 3600, "maxSize": "100MB",
             "patterns": ["session:*", "cache:*"]},
            {"name": "warm", "backend": "mongodb", "ttl": 86400, "maxSize": "1GB",
             "patterns": ["user:*", "project:*"]},
            {"name": "cold", "backend": "s3", "ttl": None, "maxSize": "unlimited",
             "patterns": ["archive:*", "backup:*"]},
        ],
        "migration": {
            "rules": [
                {"from": "hot", "to": "warm", "condition": "accessCount < 5 AND age > 3600"},
                {"from": "warm", "to": "cold", "condition": "lastAccess > 86400"},
            ]
        },
    }
}  # fmt: skip

ECOMMERCE = {
    "memory": {
        "backend": "hybrid",
        "namespaces": {
            "sessions": {"backend": "redis", "ttl": 1800, "refresh": True},
            "carts": {"backend": "redis", "ttl": 86400, "persist": True},
            "products": {
                "backend": "hybrid",
                "primary": "redis",
                "secondary": "mongodb",
                "cache": {"ttl": 300, "tags": True},
            },
            "orders": {"backend": "mongodb", "indexes": ["userId", "status", "createdAt"]},
        },
    }
}


@pytest.fixture
def servers(redis_server: Any, mongo_server: Any, s3_server: Any) -> dict[str, Any]:
    s3_server.make_bucket("pm-config")
    return {
        "connections": {
            "redis": redis_server.url,
            "mongodb": mongo_server.url.replace("?", "?collection=cfg&", 1),
        },
        "s3": {"connection": "s3://pm-config/cold", "storage_options": s3_server.storage_options},
    }


def test_basic_hybrid_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    config = json.loads(json.dumps(BASIC_HYBRID))
    config["memory"]["primary"]["connection"] = redis_server.url
    mem = pm.from_config(config)
    assert isinstance(mem, HybridMemory)
    assert mem.backend.strategy == "write-through" and mem.sync_interval == 30.0
    mem.set("k", {"v": 1})
    backup = json.loads((tmp_path / "memory" / "backup.json").read_text())
    assert "k" in backup["namespaces"]["default"]
    assert mem.get("k") == {"v": 1}


def test_config_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = {
        "memory": {
            "backend": "hybrid",
            "primary": {"type": "memory"},
            "secondary": {"type": "json", "location": "./memory/backup.json"},
            "sync": {"strategy": "write-behind", "interval": 100},
            "journal": str(tmp_path / "journal.db"),
        }
    }
    path = tmp_path / "conf" / "memory.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    mem = pm.from_config(str(path))
    assert isinstance(mem, HybridMemory) and mem.backend.strategy == "write-behind"
    mem.set("k", 1)
    mem.flush()
    assert (tmp_path / "conf" / "memory" / "backup.json").exists()


def test_tiers_shape_on_three_real_stores(servers: dict[str, Any]) -> None:
    config = json.loads(json.dumps(TIERS))
    config["memory"]["tiers"][2].update(servers["s3"])
    mem = pm.from_config(config, connections=servers["connections"])
    assert isinstance(mem, TieredMemory)
    assert [t.name for t in mem.tiers] == ["hot", "warm", "cold"]
    assert [t.backend.scheme for t in mem.tiers] == ["redis", "mongodb", "file"]
    assert mem.tiers[0].max_bytes == 100 * 1024**2 and mem.tiers[2].max_bytes is None
    assert [r.condition.text for r in mem.backend.rules] == [
        "accessCount < 5 AND age > 3600",
        "lastAccess > 86400",
    ]
    mem.set_many({"session:1": 1, "user:1": 2, "archive:1": 3})
    assert {k: mem.info(k).tier for k in ["session:1", "user:1", "archive:1"]} == {
        "session:1": "hot",
        "user:1": "warm",
        "archive:1": "cold",
    }
    mem.clear()


def test_a_parquet_tier_is_the_archive_wherever_its_location_is(
    servers: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``backend: parquet`` with an s3:// or a local location opens the Parquet archive."""
    s3 = servers["s3"]
    config = {"memory": {"backend": "hybrid", "tiers": [
        {"name": "warm", "backend": "sqlite", "location": "warm.db"},
        {"name": "cold", "backend": "parquet", "location": s3["connection"] + "-archive",
         "storage_options": s3["storage_options"], "options": {"compression": "zstd"}},
        {"name": "frozen", "backend": "parquet", "location": "frozen", "patterns": ["f:*"]},
    ]}}  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a dict config's paths are relative to the working folder
    mem = pm.from_config(config)
    cold, frozen = mem.tiers[1].backend, mem.tiers[2].backend
    assert (cold.scheme, cold.location, cold.compression) == (
        "parquet",
        "s3://pm-config/cold-archive",
        "zstd",
    )
    assert (frozen.scheme, frozen.location) == ("parquet", f"file://{tmp_path}/frozen")
    mem.set("f:1", {"v": 1})
    assert mem.info("f:1").tier == "frozen" and list((tmp_path / "frozen").rglob("*.parquet"))


def test_tutorial_keys_that_cannot_be_applied_are_refused_by_name() -> None:
    """``persist``, ``cache`` and ``indexes`` were kept and never applied: now refused."""
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(ECOMMERCE)
    message = str(info.value)
    for fragment in [
        "memory.namespaces.carts.persist: whether Redis keeps data",
        "memory.namespaces.products.cache: a hybrid memory keeps the same entries",
        "memory.namespaces.orders.indexes: entries are stored encoded",
    ]:
        assert fragment in message, fragment


def without(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of ``config`` without ``keys`` anywhere."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in keys}
        return node

    return strip(config)  # type: ignore[no-any-return]


def test_namespaces_shape(servers: dict[str, Any]) -> None:
    config = without(ECOMMERCE, "persist", "cache", "indexes")
    spaces = pm.from_config(config, connections=servers["connections"])
    assert isinstance(spaces, pm.Namespaces)
    assert sorted(spaces) == ["carts", "orders", "products", "sessions"]
    assert spaces["sessions"].ttl == 1800 and spaces["sessions"].refresh
    assert isinstance(spaces["products"], HybridMemory)
    assert spaces["orders"].backend.scheme == "mongodb"
    spaces["carts"].set("cart:7", {"items": []})
    assert spaces["carts"].get("cart:7") == {"items": []}
    assert spaces["sessions"].get("cart:7") is None  # namespaces are separate
    with pytest.raises(KeyError, match="no namespace 'users'"):
        spaces["users"]


def test_every_problem_is_listed_with_its_path() -> None:
    bad = {
        "memory": {
            "backend": "hybrid",
            "tiers": [
                {"name": "hot", "backend": "redis", "maxSize": "100 parsecs", "colour": "red"},
                {"backend": "nosuchdb"},
                {"name": "cold", "backend": "s3", "ttl": -5},
            ],
            "migration": {"rules": [{"from": "hot", "to": "lukewarm", "condition": "age >"}]},
        },
        "extra": 1,
    }
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(bad)
    assert "extra: unknown top-level key" in str(info.value)
    del bad["extra"]
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(bad)
    message = str(info.value)
    for fragment in [
        "memory.tiers[0].maxSize",
        "memory.tiers[0].colour: unknown key",
        "memory.tiers[1].backend: unknown backend 'nosuchdb'",
        "memory.tiers[2].ttl",
        "memory.tiers[2]: a s3 store needs 'connection'",
    ]:
        assert fragment in message, fragment


def test_rule_problems_name_rule_and_position(redis_server: Any) -> None:
    config = {
        "backend": "hybrid",
        "tiers": [
            {"name": "hot", "backend": "memory"},
            {"name": "warm", "backend": "memory"},
        ],
        "migration": {"rules": [{"from": "hot", "to": "lukewarm", "condition": "age > 1"},
                                {"from": "hot", "to": "warm", "condition": "age >"}]},
    }  # fmt: skip
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(config)
    message = str(info.value)
    assert "migration.rules[1].condition" in message and "position 5" in message


def test_hybrid_problems() -> None:
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(
            {"backend": "hybrid", "primary": {"type": "memory"},
             "sync": {"strategy": "sometimes", "interval": -1}}
        )  # fmt: skip
    message = str(info.value)
    assert "needs 'secondary'" in message
    assert "memory.sync.strategy" in message and "memory.sync.interval" in message


ML = {
    "memory": {
        "backend": "hybrid",
        "datasets": {
            "training": {"backend": "s3", "format": "parquet", "partitioning": "date"},
            "features": {"backend": "redis", "serialization": "msgpack", "compression": True},
            "models": {"backend": "hybrid", "primary": "redis", "secondary": "s3",
                       "versioning": True},
        },
        "compute": {
            "cache": {
                "predictions": {"ttl": 3600},
                "embeddings": {"ttl": 86400},
                "preprocessed": {"ttl": 604800},
            }
        },
    }
}  # fmt: skip

ANALYTICS = {
    "memory": {
        "backend": "hybrid",
        "streams": {
            "events": {"type": "redis-stream", "maxLength": 100000, "trimStrategy": "MAXLEN"},
            "aggregations": {
                "type": "time-series",
                "retention": 86400,
                "downsampling": [
                    {"interval": 60, "aggregation": "avg"},
                    {"interval": 3600, "aggregation": "sum"},
                ],
            },
        },
        "processing": {
            "windows": {
                "realtime": {"size": 60, "slide": 10},
                "hourly": {"size": 3600, "slide": 3600},
                "daily": {"size": 86400, "slide": 86400},
            }
        },
    }
}


def test_ml_pipeline_shape(
    servers: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    connections = {**servers["connections"], "s3": servers["s3"]["connection"]}
    with pytest.raises(pm.ConfigError, match=r"models\.versioning: old versions are not kept"):
        pm.from_config(ML, connections=connections)
    config = without(ML, "versioning")
    for name in ("training",):
        config["memory"]["datasets"][name]["storage_options"] = servers["s3"]["storage_options"]
    config["memory"]["datasets"]["models"]["secondary"] = {
        "backend": "s3", **servers["s3"],
    }  # fmt: skip
    spaces = pm.from_config(config, connections=connections)
    assert sorted(spaces) == [
        "embeddings", "features", "models", "predictions", "preprocessed", "training",
    ]  # fmt: skip
    assert spaces["features"].codec.compression
    assert isinstance(spaces["models"], HybridMemory)
    assert spaces["predictions"].ttl == 3600 and spaces["preprocessed"].ttl == 604800
    assert spaces["predictions"].backend.scheme == "sqlite"
    assert spaces.settings["training"] == {"format": "parquet", "partitioning": "date"}
    training = spaces["training"].backend  # the Parquet archive, not objects per key
    assert (training.scheme, training.location) == ("parquet", "s3://pm-config/cold")
    spaces["training"].set("rows:1", {"x": 1})
    assert spaces["training"].get("rows:1") == {"x": 1}
    assert training.fs.glob(training.ns_root("training") + "/date=*/*.parquet")
    spaces["models"].set("model:v1", {"weights": [0.1, 0.2]})
    assert spaces["models"].get("model:v1") == {"weights": [0.1, 0.2]}
    spaces["predictions"].set("prediction:abc", 0.93)
    assert spaces["predictions"].get("prediction:abc") == 0.93


def test_analytics_shape_keeps_streams_for_the_analytics_module() -> None:
    spaces = pm.from_config(ANALYTICS)
    assert isinstance(spaces, pm.Namespaces) and len(spaces) == 0
    assert spaces.extras["streams"]["aggregations"]["downsampling"][1] == {
        "interval": 3600,
        "aggregation": "sum",
    }
    assert spaces.extras["processing"]["windows"]["realtime"] == {"size": 60, "slide": 10}


def test_duplicate_part_names_are_reported() -> None:
    config = {"namespaces": {"x": {"backend": "memory"}}, "compute": {"cache": {"x": {"ttl": 1}}}}
    with pytest.raises(pm.ConfigError, match="'x' is used by more than one part"):
        pm.from_config(config)

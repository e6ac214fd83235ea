"""The ``prefect-memory`` command, run with typer's CliRunner against the Prefect test API.

``blocks create`` takes the tutorial's config shapes (the dicts of tests/test_config.py,
written to JSON files) and the blocks it saves are loaded back and used on real servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from typer.testing import CliRunner, Result

import prefect_memory as pm
from prefect_memory.blocks import (
    BLOCKS,
    HybridMemoryBlock,
    ParquetArchiveMemory,
    RedisMemory,
    TieredMemoryBlock,
)
from prefect_memory.cli import app
from prefect_memory.flows import migrate_tiers
from test_config import BASIC_HYBRID, ECOMMERCE, ML, TIERS, without

WIDE = {"COLUMNS": "250"}  # rich tables on one line per row


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=WIDE)


def write(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def connections(redis_server: Any, mongo_server: Any, unique: str) -> list[str]:
    mongo = mongo_server.url.replace("?", f"?collection=cli{unique}&", 1)
    return ["-c", f"redis={redis_server.url}", "-c", f"mongodb={mongo}"]


def test_help_is_fast_because_prefect_is_not_imported() -> None:
    probe = "import sys, prefect_memory.cli; print('prefect' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
    script = Path(sys.executable).with_name("prefect-memory")
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "blocks" in helped.stdout and "info" in helped.stdout


def test_create_basic_hybrid(tmp_path: Path, redis_server: Any, unique: str) -> None:
    config = json.loads(json.dumps(BASIC_HYBRID))
    config["memory"]["primary"]["connection"] = redis_server.url
    result = run("blocks", "create", str(write(tmp_path, "basic", config)), "-p", f"b-{unique}")
    assert result.exit_code == 0, result.output
    for name in (f"redis-memory/b-{unique}-primary", f"json-memory/b-{unique}-secondary",
                 f"hybrid-memory/b-{unique}"):  # fmt: skip
        assert name in result.stdout
    block = HybridMemoryBlock.load(f"b-{unique}")
    assert block.strategy == "write-through" and block.sync_interval == 30.0
    block.set("k", {"v": 1})
    # "./memory/backup.json" is relative to the config file, as with pm.from_config
    backup = json.loads((tmp_path / "memory" / "backup.json").read_text())
    assert "k" in backup["namespaces"]["default"]


def test_create_tiers_on_three_real_stores(
    tmp_path: Path, connections: list[str], s3_server: Any, unique: str
) -> None:
    s3_server.make_bucket("pm-cli")
    config = json.loads(json.dumps(TIERS))
    config["memory"]["tiers"][2].update(
        connection=f"s3://pm-cli/{unique}", storage_options=s3_server.storage_options
    )
    path = write(tmp_path, "tiers", config)
    result = run("blocks", "create", str(path), "--name-prefix", f"t-{unique}", *connections)
    assert result.exit_code == 0, result.output
    assert f"hot=t-{unique}-hot, warm=t-{unique}-warm, cold=t-{unique}-cold" in result.stdout
    block = TieredMemoryBlock.load(f"t-{unique}")
    assert [(t.name, t.max_bytes) for t in block.tiers] == [
        ("hot", 100 * 1024**2), ("warm", 1024**3), ("cold", None),
    ]  # fmt: skip
    assert [r.condition for r in block.rules] == [
        "accessCount < 5 AND age > 3600",
        "lastAccess > 86400",
    ]
    block.set_many({"session:1": 1, "user:1": 2, "archive:1": 3})
    assert {k: block.info(k).tier for k in ("session:1", "user:1", "archive:1")} == {
        "session:1": "hot",
        "user:1": "warm",
        "archive:1": "cold",
    }
    info = run("info", f"tiered-memory/t-{unique}")
    assert info.exit_code == 0, info.output
    for tier in ("hot", "warm", "cold"):
        assert f"tier {tier}" in info.stdout
    block.clear()


def test_create_tiers_with_a_parquet_archive_then_migrate_by_name(
    tmp_path: Path, s3_server: Any, unique: str
) -> None:
    s3_server.make_bucket("pm-cli")
    options = {**s3_server.storage_options, "region_name": "us-east-1"}
    config = {"memory": {"backend": "hybrid", "namespace": "events", "tiers": [
        {"name": "warm", "backend": "sqlite", "location": "warm.db"},
        {"name": "cold", "backend": "parquet", "location": f"s3://pm-cli/{unique}",
         "storage_options": options, "options": {"compression": "zstd"}},
    ], "migration": {"rules": [{"from": "warm", "to": "cold", "condition": "age >= 0"}]},
    }}  # fmt: skip
    result = run("blocks", "create", str(write(tmp_path, "lake", config)), "-p", f"l-{unique}")
    assert result.exit_code == 0, result.output
    assert f"parquet-archive-memory/l-{unique}-cold" in result.stdout
    assert "storage_options.region_name: not a block field, not kept" in result.stderr
    cold = ParquetArchiveMemory.load(f"l-{unique}-cold")
    assert (cold.url, cold.compression) == (f"s3://pm-cli/{unique}", "zstd")
    assert cold.aws_secret_access_key.get_secret_value() == s3_server.secret
    block = TieredMemoryBlock.load(f"l-{unique}")
    block.set_many({"e:1": 1, "e:2": 2})
    assert migrate_tiers(f"tiered-memory/l-{unique}")["moved"] == {"warm -> cold: age >= 0": 2}
    assert block.info("e:1").tier == "cold"
    assert block.get_many(["e:1", "e:2"]) == {"e:1": 1, "e:2": 2}


def test_create_namespaces_one_block_per_namespace(
    tmp_path: Path, connections: list[str], unique: str
) -> None:
    refused = run("blocks", "create", str(write(tmp_path, "shop0", ECOMMERCE)), "-p",
                  f"s0-{unique}", *connections)  # fmt: skip
    assert refused.exit_code == 2, refused.output  # the tutorial's keys no store applies
    for key in ("carts.persist", "products.cache", "orders.indexes"):
        assert f"memory.namespaces.{key}" in refused.stderr
    shop = without(ECOMMERCE, "persist", "cache", "indexes")
    result = run("blocks", "create", str(write(tmp_path, "shop", shop)), "-p", f"s-{unique}",
                 *connections)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sessions.refresh" not in result.stderr  # a block field now, not a note
    sessions = RedisMemory.load(f"s-{unique}-sessions")
    assert (sessions.namespace, sessions.ttl, sessions.refresh) == ("sessions", 1800, True)
    assert sessions.memory.refresh is True  # applied: reads push the expiry
    products = HybridMemoryBlock.load(f"s-{unique}-products")
    assert products.namespace == "products"
    assert products.secondary.get_block_type_slug() == "mongodb-memory"
    assert Block.load(f"mongodb-memory/s-{unique}-orders").namespace == "orders"
    products.set("sku:1", {"price": 3})
    assert products.get("sku:1") == {"price": 3}


def test_ml_shape_dry_run_saves_nothing(tmp_path: Path, unique: str) -> None:
    result = run("blocks", "create", str(write(tmp_path, "ml", without(ML, "versioning"))),
                 "-p", f"ml-{unique}",
                 "-c", "s3=s3://bucket/ml", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout and f"sqlite-memory/ml-{unique}-predictions" in result.stdout
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_block_document_by_name(f"ml-{unique}-predictions", "sqlite-memory")


def test_existing_names_need_overwrite(tmp_path: Path, unique: str) -> None:
    config = {"memory": {"backend": "hybrid", "primary": {"type": "memory"},
                         "secondary": {"type": "sqlite", "location": "a.db"}}}  # fmt: skip
    path = write(tmp_path, f"o-{unique}", config)
    assert run("blocks", "create", str(path)).exit_code == 0  # prefix: the file name
    config["memory"]["secondary"]["location"] = "b.db"
    path.write_text(json.dumps(config))
    again = run("blocks", "create", str(path))
    assert again.exit_code == 1
    assert f"sqlite-memory/o-{unique}-secondary" in again.stderr and "--overwrite" in again.stderr
    assert HybridMemoryBlock.load(f"o-{unique}").secondary.path.endswith("a.db")  # untouched
    replaced = run("blocks", "create", str(path), "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert HybridMemoryBlock.load(f"o-{unique}").secondary.path.endswith("b.db")


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        ((), {"memory": {"backend": "hybird"}}, "memory.backend: unknown backend 'hybird'"),
        ((), {"memory": {"backend": "file", "location": "/tmp/x"}}, "no memory block for file"),
        ((), {"memory": {"backend": "hybrid", "tiers": [{"name": "hot", "backend": "memory"}],
                         "migration": {"rules": [{"from": "hot", "to": "hot",
                                                  "condition": "age >"}]}}},
         "memory.migration.rules[0].condition"),
        (("-p", "Bad Name"), {"memory": {"backend": "memory"}}, "lowercase letters"),
        (("-c", "redis"), {"memory": {"backend": "memory"}}, "KIND=URL"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_the_problem(
    tmp_path: Path, args: tuple[str, ...], config: dict[str, Any], message: str
) -> None:
    result = run("blocks", "create", str(write(tmp_path, "bad", config)), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_missing_config_file() -> None:
    result = run("blocks", "create", "/nonexistent/memory.json")
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_register_lists_every_block_type() -> None:
    result = run("blocks", "register")
    assert result.exit_code == 0, result.output
    assert f"Registered {len(BLOCKS)} block types" in result.stdout
    with get_client(sync_client=True) as client:
        for cls in BLOCKS:
            assert cls.get_block_type_name() in result.stdout
            block_type = client.read_block_type_by_slug(cls.get_block_type_slug())
            assert block_type.code_example == cls.get_code_example()


def test_info_pings_and_counts_a_url_and_a_saved_block(
    redis_server: Any, unique: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/info.db"
    pm.open_memory(url, namespace="a").set_many({f"k{i}": i for i in range(5)})
    pm.open_memory(url, namespace="b").set("x", 1)
    result = run("info", url, "-n", "a", "-n", "b")
    assert result.exit_code == 0, result.output
    assert counts(result) == [("a", "5"), ("b", "1")]

    block = RedisMemory(url=redis_server.url, key_prefix=f"i{unique}", namespace="a")
    block.set_many({"k1": 1, "k2": 2})
    block.save(f"info-{unique}")
    result = run("info", f"redis-memory/info-{unique}")
    assert result.exit_code == 0, result.output
    assert counts(result) == [("a", "2")]


def counts(result: Result) -> list[tuple[str, str]]:
    """(namespace, entries) of each row of the info table."""
    rows = [line.split("│") for line in result.stdout.splitlines() if " ms " in line]
    return [(row[1].strip(), row[-2].strip()) for row in rows]


def test_info_on_a_config_file_and_an_unreachable_store(tmp_path: Path) -> None:
    config = write(tmp_path, "local", {"memory": {"namespaces": {
        "one": {"backend": "sqlite", "location": "m.db"},
        "two": {"backend": "json", "location": "m.json"},
    }}})  # fmt: skip
    result = run("info", str(config))
    assert result.exit_code == 0, result.output
    assert "one" in result.stdout and "two" in result.stdout
    down = run("info", "redis://:s3cretpw@127.0.0.1:1/0")
    assert down.exit_code == 1 and "unreachable" in down.stdout
    assert "s3cretpw" not in down.output and "redis://:***@127.0.0.1:1/0" in down.stdout
    assert run("info", "not-a-target").exit_code == 2
    missing = run("info", "redis-memory/no-such-block")
    assert missing.exit_code == 1 and "no-such-block" in missing.stderr

"""Prefect fixtures: one ephemeral Prefect API for the session, memory blocks on real servers.

``prefect_test_harness`` starts a temporary Prefect server (10-20 s here), so it is
session-scoped and shared by every test of this folder.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="pm-prefect-home-"))

import pytest
from prefect.testing.utilities import prefect_test_harness

from conftest import load_ui_helper
from prefect_memory.blocks import (
    HybridMemoryBlock,
    InProcessMemory,
    JsonMemory,
    MemoryBlock,
    MemoryTier,
    MongoDBMemory,
    ParquetArchiveMemory,
    RedisMemory,
    S3Memory,
    SqliteMemory,
    TieredMemoryBlock,
    TierRule,
)

S3_BUCKET = "pm-prefect"


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (SQLite) for the whole session."""
    from prefect.events.worker import EventsWorker

    with prefect_test_harness(server_startup_timeout=90):
        # An events worker started earlier in the session (e.g. by the demo's own temporary
        # API in tests/examples) keeps its old API: drain and drop it, so events emitted from
        # here on reach this harness.
        EventsWorker.drain_all(timeout=10)
        yield


@pytest.fixture
def unique() -> str:
    """A short random token, to keep each test's data apart."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def redis_block(redis_server: Any, unique: str) -> RedisMemory:
    """A RedisMemory on the session's redis-server, with a key prefix of its own."""
    return RedisMemory(url=redis_server.url, key_prefix=f"t{unique}", namespace="results")


@pytest.fixture
def make_block(
    request: pytest.FixtureRequest, tmp_path: Any, unique: str
) -> Callable[..., MemoryBlock]:
    """``make_block(cls, **fields)``: a block of ``cls`` on a fresh store of a real server."""

    def _make(cls: type[MemoryBlock], **fields: Any) -> MemoryBlock:
        if cls is RedisMemory:
            server = request.getfixturevalue("redis_server")
            base: dict[str, Any] = {"url": server.url, "key_prefix": f"t{unique}"}
        elif cls is MongoDBMemory:
            server = request.getfixturevalue("mongo_server")
            base = {"url": server.url, "collection": f"c{unique}"}
        elif cls in (S3Memory, ParquetArchiveMemory):  # the archive on S3, as in production
            server = request.getfixturevalue("s3_server")
            server.make_bucket(S3_BUCKET)
            folder = unique if cls is S3Memory else f"archive-{unique}"
            base = {
                "url": f"s3://{S3_BUCKET}/{folder}",
                "endpoint_url": server.endpoint_url,
                "aws_access_key_id": server.key,
                "aws_secret_access_key": server.secret,
            }
        elif cls is JsonMemory:
            base = {"path": str(tmp_path / "memory" / "backup.json")}
        elif cls is SqliteMemory:
            base = {"path": str(tmp_path / "memory.db")}
        elif cls is InProcessMemory:
            base = {"name": f"test-{unique}"}
        elif cls is HybridMemoryBlock:  # composed blocks: parts on local stores here
            base = {
                "primary": InProcessMemory(name=f"hot-{unique}"),
                "secondary": SqliteMemory(path=str(tmp_path / "hybrid.db")),
            }
        elif cls is TieredMemoryBlock:
            base = {
                "tiers": [
                    MemoryTier(
                        name="hot",
                        block=InProcessMemory(name=f"hot-{unique}"),
                        patterns=["session:*"],
                    ),
                    MemoryTier(name="cold", block=SqliteMemory(path=str(tmp_path / "cold.db"))),
                ],
                "rules": [TierRule(**{"from": "hot", "to": "cold", "condition": "idle > 1h"})],
            }
        else:  # pragma: no cover - a new block class needs a line here
            raise AssertionError(cls)
        return cls(**{**base, **fields})

    return _make


# -- a real Prefect server and Chromium, for the UI tests (marker "ui") ----------------
@pytest.fixture(scope="session")
def server(prefect_server: Any) -> Any:
    """The session's real Prefect server (see ``tests/conftest.py``)."""
    return prefect_server


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        return load_ui_helper().ensure_chromium()
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"chromium is missing and could not be installed: {err}", pytrace=False)

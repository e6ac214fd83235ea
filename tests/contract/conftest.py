"""Backends under contract: every test of this folder runs on every store (nine parameters).

``open_mem(namespace=None, **options)`` opens a Memory on the backend of the current
parameter, with a namespace unique to the test unless one is given. Every Memory opened
through it in one test shares the same store.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

BACKENDS = ["memory", "sqlite", "json", "file", "s3", "redis", "mongodb", "parquet", "parquet-s3"]
NETWORK = {"s3", "redis", "mongodb", "parquet-s3"}


@pytest.fixture(scope="session")
def s3_bucket(s3_server: Any) -> str:
    name = "pm-contract"
    s3_server.make_bucket(name)
    return name


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(backend_name: str, request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    """URL and backend options of a fresh store for this test."""
    unique = uuid.uuid4().hex[:10]
    if backend_name == "memory":
        return {"url": f"memory://contract-{unique}", "options": {}}
    if backend_name == "sqlite":
        return {"url": f"sqlite:///{tmp_path}/memory.db", "options": {}}
    if backend_name == "json":
        return {"url": f"json:///{tmp_path}/memory/backup.json", "options": {}}
    if backend_name == "file":
        return {"url": f"file://{tmp_path}/store", "options": {}}
    if backend_name == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        return {
            "url": f"s3://{bucket}/{unique}",
            "options": {"storage_options": server.storage_options},
        }
    if backend_name in ("parquet", "parquet-s3"):  # the cold tier's Parquet archive
        if backend_name == "parquet":
            return {"url": f"parquet:///{tmp_path}/archive", "options": {}}
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        return {
            "url": f"parquet::s3://{bucket}/archive-{unique}",
            "options": {"storage_options": server.storage_options},
        }
    if backend_name == "redis":
        server = request.getfixturevalue("redis_server")
        return {"url": server.url, "options": {"key_prefix": f"pmt{unique}"}}
    if backend_name == "mongodb":
        server = request.getfixturevalue("mongo_server")
        sep = "&" if "?" in server.url else "?"
        return {"url": f"{server.url}{sep}collection=c{unique}", "options": {}}
    raise AssertionError(backend_name)

"""Stores for the tabular tests: ``open_mem(backend, namespace=..., **options)`` on real stores.

``backend`` is one of memory, sqlite, json, file, s3, redis; every memory opened for the
same backend in one test shares that test's store (so a "raw" memory and a validated one
see the same data).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

import prefect_memory as pm


@pytest.fixture(scope="session")
def tabular_bucket(s3_server: Any) -> str:
    s3_server.make_bucket("pm-tabular")
    return "pm-tabular"


@pytest.fixture
def open_mem(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[..., pm.Memory]:
    unique = uuid.uuid4().hex[:10]

    def _open(backend: str, namespace: str = "frames", **options: Any) -> pm.Memory:
        if backend == "memory":
            return pm.open_memory(f"memory://tab-{unique}", namespace=namespace, **options)
        if backend == "sqlite":
            return pm.open_memory(f"sqlite:///{tmp_path}/m.db", namespace=namespace, **options)
        if backend == "json":
            return pm.open_memory(f"json:///{tmp_path}/m.json", namespace=namespace, **options)
        if backend == "file":
            return pm.open_memory(f"file://{tmp_path}/files", namespace=namespace, **options)
        if backend == "s3":
            server = request.getfixturevalue("s3_server")
            bucket = request.getfixturevalue("tabular_bucket")
            return pm.open_memory(
                f"s3://{bucket}/{unique}",
                namespace=namespace,
                storage_options=server.storage_options,
                **options,
            )
        if backend == "redis":
            server = request.getfixturevalue("redis_server")
            return pm.open_memory(
                server.url, namespace=namespace, key_prefix=f"tab{unique}", **options
            )
        raise AssertionError(backend)

    return _open

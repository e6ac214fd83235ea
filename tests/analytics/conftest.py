"""Fixtures of the analytics tests: a link to the session's redis-server, each test apart."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from prefect_memory.analytics import RedisLink


@pytest.fixture
def link(redis_server: Any) -> RedisLink:
    """A link to the session's redis-server with a key prefix of this test's own."""
    return RedisLink.open(
        redis_server.url, namespace="analytics", key_prefix=f"t{uuid.uuid4().hex[:10]}"
    )

"""The native async path on a Redis Cluster that speaks TLS only (client certificates).

Every node's async connections take the ``rediss://`` URL and the ``ssl_*`` files, the
replicas' ``READONLY`` ones too; nothing hops to a worker thread once the Cluster is known.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import prefect_memory as pm
from shared.conftest_replicas import (  # noqa: F401 - the fixture, used by name
    ReplicatedCluster,
    redis_cluster_tls,
)
from test_async_redis import no_threads

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


@pytest.mark.parametrize("layout", [1, 2])
def test_tls_cluster_serves_async_calls_natively(
    redis_cluster_tls: ReplicatedCluster,  # noqa: F811
    layout: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = redis_cluster_tls
    cluster.repair()
    mem = pm.open_memory(
        cluster.url, namespace="tls", key_prefix="pmt" + uuid.uuid4().hex[:8], layout=layout,
        read_from_replicas=True, consistency="strong", quorum=1, **cluster.ssl_options(),
    )  # fmt: skip
    assert mem.backend.connection.scheme == "rediss"  # writes wait for their replica (WAIT)

    async def first() -> None:
        await mem.aexists("warm")  # learns the Cluster (once, on the blocking path)

    asyncio.run(first())
    items = {f"k{i:02d}": {"i": i} for i in range(40)}

    async def calls() -> tuple[Any, ...]:
        await mem.aset_many(items)
        await mem.aset("one", 1)
        got = await mem.aget_many(list(items))
        one = await mem.aget("one")
        found = [await mem.aexists("one") for _ in range(4)]
        nodes = set(mem.backend._aio._here().nodes)
        await mem.adelete("one")
        return got, one, found, nodes

    try:
        with no_threads(monkeypatch):
            got, one, found, nodes = asyncio.run(calls())
        assert got == items and one == 1 and found == [True] * 4
        assert any(reader for _, reader in nodes)  # a replica read over TLS too
        assert mem.get("one") is None and mem.get("k07") == {"i": 7}
    finally:
        mem.clear()
        mem.close()

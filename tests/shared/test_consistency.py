"""Strong consistency on real servers: WAIT on Redis (with and without a replica)."""

from __future__ import annotations

import time
import uuid

import pytest

import prefect_memory as pm
from prefect_memory.errors import ConsensusError

pytestmark = pytest.mark.redis


def test_strong_write_without_a_replica_raises(redis_url: str, prefix: str) -> None:
    mem = pm.open_memory(
        redis_url, namespace="c", key_prefix=prefix, consistency="strong", quorum=1, timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(ConsensusError) as info:
        mem.set("k", 1)
    assert 0.4 < time.monotonic() - started < 2.0  # bounded by the timeout
    assert (info.value.acknowledged, info.value.quorum) == (0, 1)
    assert "0 of 1 replica" in str(info.value)
    assert mem.get("k") == 1  # applied on the primary, not undone
    with pytest.raises(ConsensusError):
        mem.delete("k")
    eventual = pm.open_memory(redis_url, namespace="c", key_prefix=prefix, timeout=0.5)
    eventual.set("k2", 2)  # the default: no wait
    assert eventual.backend.consistency == "eventual"


def test_strong_write_with_a_real_replica_succeeds(replicated, prefix: str) -> None:
    mem = pm.open_memory(
        replicated.url, namespace="c", key_prefix=prefix, consistency="strong", quorum=1,
        timeout=0.5,
    )  # fmt: skip
    data = {f"k{i}": i for i in range(500)}
    mem.set_many(data)
    replica = pm.open_memory(replicated.replica.url, namespace="c", key_prefix=prefix)
    assert replica.backend.exists_many("c", list(data), now=time.time()) == set(data)
    assert mem.delete_many(list(data)) == 500
    assert not replica.exists("k1")  # the delete was acknowledged too
    with pytest.raises(ConsensusError, match="1 of 2"):
        pm.open_memory(
            replicated.url, namespace="c", key_prefix=prefix, consistency="strong", quorum=2,
            timeout=0.3,
        ).set("k", 1)  # fmt: skip


def test_options_in_the_url_and_validation(redis_url: str) -> None:
    mem = pm.open_memory(f"{redis_url}?consistency=strong&quorum=2&cluster=false")
    assert (mem.backend.consistency, mem.backend.quorum, mem.backend.cluster) == (
        "strong",
        2,
        False,
    )
    with pytest.raises(pm.ConfigError, match="consistency"):
        pm.open_memory(redis_url, consistency="linearizable")
    with pytest.raises(pm.ConfigError, match="quorum"):
        pm.open_memory(redis_url, consistency="strong", quorum=0)


@pytest.mark.mongodb
def test_mongodb_write_concern_from_consistency(mongo_server) -> None:
    from pymongo import monitoring

    class Concerns(monitoring.CommandListener):
        def __init__(self) -> None:
            self.seen: list[dict] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name in ("update", "insert", "delete"):
                self.seen.append(dict(event.command.get("writeConcern") or {}))

        def succeeded(self, event: object) -> None: ...

        def failed(self, event: object) -> None: ...

    sep = "&" if "?" in mongo_server.url else "?"
    url = f"{mongo_server.url}{sep}collection=c{uuid.uuid4().hex[:8]}"
    listener = Concerns()
    mem = pm.open_memory(
        url, consistency="strong", quorum="majority", timeout=0.5,
        client_kwargs={"event_listeners": [listener]},
    )  # fmt: skip
    mem.set("k", 1)
    assert mem.get("k") == 1
    assert {"w": "majority", "wtimeout": 500} in listener.seen
    # A standalone server (the wire server, like a lone mongod) cannot have 1 replica confirm.
    lone = pm.open_memory(url, consistency="strong", quorum=1, timeout=0.5)
    with pytest.raises(ConsensusError, match="replicated"):
        lone.set("k", 2)
    with pytest.raises(pm.ConfigError, match="not both"):
        pm.open_memory(url, consistency="strong", write_concern="majority")

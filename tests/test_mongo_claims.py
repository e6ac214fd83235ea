"""MongoDB conditional deletes: a claim left by a call that died holds for ``claim_timeout``.

``MongoBackend.delete_if_unchanged`` claims the documents it will delete (an update per
document), reads back the ids it claimed and deletes those. A call killed between the
claim and the delete leaves the claim on the documents: other calls leave them alone until
the claim is ``claim_timeout`` seconds old, then take them over. The time is the ``now``
the caller passes (the clock of a tiered memory), so no test here waits.
"""

from __future__ import annotations

import pickle
import time
import uuid
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.errors import ConfigError
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.mongodb import MongoBackend

pytestmark = pytest.mark.mongodb


def _backend(mongo_server: Any, **options: Any) -> MongoBackend:
    url = f"{mongo_server.url}&collection=claims_{uuid.uuid4().hex[:8]}"
    return MongoBackend(url, **options)


def _left_claimed(backend: MongoBackend, keys: list[str], at: float) -> dict[str, Any]:
    """Write ``keys`` and leave them claimed at ``at`` by a call that died; their tokens."""
    backend.put_many("n", {k: Record(b"v", at, at, at) for k in keys}, now=at)
    ids = MongoBackend._ids("n", keys)
    backend._coll().update_many({"_id": {"$in": ids}}, {"$set": {"w": "dead-call", "wt": at}})
    found = backend.get_many("n", keys, now=at, touch=False)
    return {k: (r.version, r.updated_at) for k, r in found.items()}


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["default-60s", "5s"])
def test_a_dead_calls_claim_holds_until_claim_timeout(
    mongo_server: Any, timeout: float | None
) -> None:
    options = {} if timeout is None else {"claim_timeout": timeout}
    backend = _backend(mongo_server, **options)
    hold = 60.0 if timeout is None else timeout
    assert backend.claim_timeout == hold
    t0 = time.time()
    tokens = _left_claimed(backend, ["a", "b"], t0)
    free = {"c": _left_claimed(backend, ["c"], t0)["c"]}
    backend._coll().update_one({"_id": MongoBackend._ids("n", ["c"])[0]}, {"$unset": {"w": ""}})
    # within the claim: the claimed entries stay, readable; an unclaimed one goes
    assert backend.delete_if_unchanged("n", {**tokens, **free}, now=t0 + hold - 1) == {"c"}
    assert sorted(backend.get_many("n", ["a", "b"], now=t0 + hold - 1, touch=False)) == ["a", "b"]
    # once it has expired: taken over, and this call says it deleted them
    assert backend.delete_if_unchanged("n", tokens, now=t0 + hold + 1) == {"a", "b"}
    assert backend.get_many("n", ["a", "b", "c"], now=t0 + hold + 1, touch=False) == {}
    backend.close()


def test_an_expired_claim_on_another_write_is_not_taken_over(mongo_server: Any) -> None:
    backend = _backend(mongo_server, claim_timeout=1.0)
    t0 = time.time()
    version, updated = _left_claimed(backend, ["a"], t0)["a"]
    # the token of another write of the key: the claim expires, the condition still fails
    assert backend.delete_if_unchanged("n", {"a": (version, updated + 1)}, now=t0 + 5) == set()
    assert list(backend.get_many("n", ["a"], now=t0 + 5, touch=False)) == ["a"]
    backend.close()


def test_claim_timeout_survives_pickling_and_comes_from_the_options(mongo_server: Any) -> None:
    backend = pm.open_backend(
        f"{mongo_server.url}&collection=claims_{uuid.uuid4().hex[:8]}", claim_timeout=7.5
    )
    assert isinstance(backend, MongoBackend)
    assert pickle.loads(pickle.dumps(backend)).claim_timeout == 7.5
    backend.close()


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "10", True, None])
def test_a_bad_claim_timeout_is_refused_by_name(bad: Any) -> None:
    with pytest.raises(ConfigError, match="claim_timeout must be a positive number"):
        MongoBackend("mongodb://127.0.0.1:1/db", claim_timeout=bad)

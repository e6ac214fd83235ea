"""A store's ``options`` in a JSON config reach the store: MongoDB's ``claim_timeout``.

``claim_timeout`` (seconds a conditional delete's claim on a document holds, see
``tests/test_mongo_claims.py``) is an option of the MongoDB store: a config part gives it in
``"options"``, as ``pm.open_backend(url, claim_timeout=30)`` does. A bad value is refused
with the path of the option in the config. Every store here is a collection of its own on
the MongoDB wire server.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.mongodb import MongoBackend
from prefect_memory.tiers import TieredMemory

pytestmark = pytest.mark.mongodb


def _connection(mongo_server: Any) -> str:
    """The URL of a collection no other test uses."""
    return f"{mongo_server.url}&collection=opts_{uuid.uuid4().hex[:10]}"


def _mongo(mongo_server: Any, **part: Any) -> dict[str, Any]:
    return {"backend": "mongodb", "connection": _connection(mongo_server), **part}


def _tiered(mongo_server: Any, **warm: Any) -> dict[str, Any]:
    """Tiers with the MongoDB store second (``memory.tiers[1]``)."""
    return {"memory": {"backend": "hybrid", "tiers": [
        {"name": "hot", "backend": "memory", "connection": f"memory://{uuid.uuid4().hex}",
         "patterns": ["session:*"]},
        {"name": "warm", **_mongo(mongo_server, **warm)},
    ]}}  # fmt: skip


def _backends(mem: pm.Memory | pm.Namespaces) -> list[Any]:
    """The stores a built config opened, through the memories' public attributes."""
    if isinstance(mem, pm.Namespaces):
        return [b for m in mem.values() for b in _backends(m)]
    tiers = getattr(mem, "tiers", None)
    return [t.backend for t in tiers] if tiers is not None else [mem.backend]


def test_a_mongodb_store_takes_claim_timeout_from_its_options(mongo_server: Any) -> None:
    mem = pm.from_config({"memory": _mongo(mongo_server, options={"claim_timeout": 30})})
    backend = mem.backend
    assert isinstance(backend, MongoBackend) and backend.claim_timeout == 30.0
    mem.set("k", {"v": 1})  # the store opened on the server, with that option
    assert mem.get("k") == {"v": 1}
    default = pm.from_config({"memory": _mongo(mongo_server)})
    assert isinstance(default.backend, MongoBackend) and default.backend.claim_timeout == 60.0
    mem.clear()
    mem.close()
    default.close()


def test_a_mongodb_tier_takes_claim_timeout_from_its_options(mongo_server: Any) -> None:
    mem = pm.from_config(
        _tiered(mongo_server, options={"claim_timeout": 2.5}, patterns=["order:*"])
    )
    assert isinstance(mem, TieredMemory)
    hot, warm = _backends(mem)
    assert isinstance(warm, MongoBackend) and warm.claim_timeout == 2.5
    assert not isinstance(hot, MongoBackend)
    mem.set("order:1", 1)  # the warm tier opened on the server, with that option
    assert mem.info("order:1").tier == "warm" and mem.get("order:1") == 1
    mem.clear()
    mem.close()


def test_a_config_file_and_a_namespace_part_take_it_too(mongo_server: Any, tmp_path: Path) -> None:
    config = {"memory": {"namespaces": {
        "orders": _mongo(mongo_server, options={"claim_timeout": 45}),
        "carts": _mongo(mongo_server),
    }}}  # fmt: skip
    path = tmp_path / "memory.json"
    path.write_text(json.dumps(config))
    spaces = pm.from_config(str(path))
    assert isinstance(spaces, pm.Namespaces)
    assert spaces["orders"].backend.claim_timeout == 45.0
    assert spaces["carts"].backend.claim_timeout == 60.0  # an option of one part only
    for mem in spaces.values():
        mem.close()


@pytest.mark.parametrize("bad", [0, -1, "x", True], ids=repr)
def test_a_bad_claim_timeout_is_refused_at_its_path(mongo_server: Any, bad: Any) -> None:
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(_tiered(mongo_server, options={"claim_timeout": bad}))
    message = str(info.value)
    assert (
        f"memory.tiers[1].options.claim_timeout: claim_timeout must be a positive number "
        f"of seconds, got {bad!r}"
    ) in message, message


def test_a_bad_claim_timeout_of_a_single_store_and_a_namespace(mongo_server: Any) -> None:
    with pytest.raises(pm.ConfigError, match=r"memory\.options\.claim_timeout: claim_timeout"):
        pm.from_config(_mongo(mongo_server, options={"claim_timeout": -5}))
    config = {
        "namespaces": {
            "orders": _mongo(mongo_server, options={"claim_timeout": "1m"}),
            "carts": _mongo(mongo_server, options={"claim_timeout": 0}),
        }
    }
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(config)
    message = str(info.value)
    for where in ("memory.namespaces.orders.options", "memory.namespaces.carts.options"):
        assert f"{where}.claim_timeout: claim_timeout must be a positive number" in message


def test_an_option_the_store_does_not_take_is_refused_not_ignored(mongo_server: Any) -> None:
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(_tiered(mongo_server, options={"claim_timeout": 30, "claim_tmeout": 5}))
    message = str(info.value)
    assert "memory.tiers[1]: unknown mongodb:// options: claim_tmeout (known:" in message, message

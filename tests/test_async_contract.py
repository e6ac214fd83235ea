"""The backend contract again, every memory call made through its async twin (the stores
with a native async path: Redis, MongoDB).

Each test of ``tests/contract/test_contract.py`` runs here on a memory whose ``get``,
``set``, ``get_many``... each await ``aget``, ``aset``, ``aget_many``... in a new event loop
(``asyncio.run`` per call: the native async path of the store, one loop after the other).
The tests themselves are unchanged: the async path must pass what the blocking one passes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import prefect_memory as pm
from contract import test_contract as _contract

#: The methods of Memory with an async twin that the native path serves.
DRIVEN = (
    "set", "get", "exists", "delete", "info", "set_many", "get_many", "delete_many", "add",
    "tagged", "invalidate_tags",
)  # fmt: skip


class AsyncDriven(pm.Memory):
    """A memory whose calls each run their async twin on a new event loop."""


def _through_twin(name: str) -> Callable[..., Any]:
    twin = getattr(pm.Memory, "a" + name)

    def method(self: pm.Memory, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(twin(self, *args, **kwargs))

    method.__name__ = name
    return method


for _name in DRIVEN:
    setattr(AsyncDriven, _name, _through_twin(_name))


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("mongodb", marks=pytest.mark.mongodb),
    ]
)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend_name: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:10]
    if backend_name == "redis":
        server = request.getfixturevalue("redis_server")
        return {"url": server.url, "options": {"key_prefix": f"pma{unique}"}}
    server = request.getfixturevalue("mongo_server")
    url = server.url + ("&" if "?" in server.url else "?") + f"collection=a{unique}"
    return {"url": url, "options": {}}


@pytest.fixture
def open_mem(store: dict[str, Any]) -> Iterator[Callable[..., pm.Memory]]:
    opened: list[pm.Memory] = []
    default_ns = "ns-" + uuid.uuid4().hex[:8]

    def _open(namespace: str | None = None, **options: Any) -> pm.Memory:
        merged = {**store["options"], **options}
        mem = pm.open_memory(store["url"], namespace=namespace or default_ns, **merged)
        assert mem.backend.capabilities.native_async
        mem.__class__ = AsyncDriven
        opened.append(mem)
        return mem

    yield _open
    for mem in opened:
        mem.close()


@pytest.fixture
def mem(open_mem: Callable[..., pm.Memory]) -> pm.Memory:
    return open_mem()


for _name in dir(_contract):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_contract, _name)


def test_the_calls_went_the_async_way(
    mem: pm.Memory, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem.set("warm", 0)  # the first call learns (on the blocking path) it is not a Cluster

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a blocking request")

    if backend_name == "redis":
        for name in ("request", "fan_out"):
            monkeypatch.setattr(mem.backend.connection, name, refuse)
    else:  # every blocking MongoDB operation goes through _perform
        monkeypatch.setattr(mem.backend, "_perform", refuse)
    monkeypatch.setattr(asyncio, "to_thread", refuse)
    mem.set_many({"k": 1, "j": 2}, tags=["t"])
    assert mem.get_many(["k", "j"]) == {"k": 1, "j": 2}
    assert mem.add("k", 3) is False and mem.tagged("t") == ["j", "k"]
    assert mem.invalidate_tags("t") == 2 and not mem.exists("k")

"""The Redis store: the backend, its connection (pools, Cluster routing, errors) and its scripts.

- :mod:`.backend`: :class:`RedisBackend`, the ``redis://`` / ``rediss://`` store.
- :mod:`.connection`: pooled connections, Cluster slots, the one translation of redis-py
  errors into ours.
- :mod:`.routing`: how a request finds its node on a Cluster, one body run by both paths.
- :mod:`.aio`: the async path (redis.asyncio connections per event loop).
- :mod:`.scripts`: the Lua scripts of the backend and :class:`LuaScript`.
- :mod:`.layout`: key layouts 1 and 2, the per-namespace layout record, the upgrade 1 -> 2.

Names are imported on first use, so ``import prefect_memory.plugins.redis.scripts`` does
not need redis-py.

Example:
    >>> from prefect_memory.plugins.redis import LuaScript
    >>> LuaScript("return 1").sha[:10]
    'e0e1f9fabf'
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_NAMES = {
    "RedisBackend": "backend",
    "Notify": "backend",
    "Connections": "connection",
    "RedisConnector": "connection",
    "Secret": "connection",
    "SlotMap": "connection",
    "FORKS": "connection",
    "exchange": "connection",
    "redirect": "connection",
    "plain_options": "connection",
    "refusal": "connection",
    "LuaScript": "scripts",
    "Spread": "layout",
    "UpgradeReport": "layout",
    "upgrade": "layout",
    "MAX_EXPIRY_MS": "scripts",
    "PUT": "scripts",
    "GET": "scripts",
    "DELETE": "scripts",
    "TAGGED": "scripts",
}


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})


__all__ = [
    "DELETE",
    "FORKS",
    "GET",
    "MAX_EXPIRY_MS",
    "PUT",
    "TAGGED",
    "Connections",
    "LuaScript",
    "Notify",
    "RedisBackend",
    "RedisConnector",
    "Secret",
    "SlotMap",
    "Spread",
    "UpgradeReport",
    "exchange",
    "plain_options",
    "redirect",
    "refusal",
    "upgrade",
]

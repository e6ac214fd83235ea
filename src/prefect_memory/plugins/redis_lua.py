"""Old home of the Redis Lua scripts: they live in :mod:`prefect_memory.plugins.redis.scripts`.

Kept so that imports naming ``prefect_memory.plugins.redis_lua`` keep working.
"""

from __future__ import annotations

from .redis.scripts import (  # noqa: F401 - re-exported
    _LUA_DELETE,
    _LUA_FIX_TAG,
    _LUA_GET,
    _LUA_LIMITS,
    _LUA_NOTIFY,
    _LUA_PUT,
    _LUA_TAGGED,
    DELETE,
    GET,
    MAX_EXPIRY_MS,
    PUT,
    TAGGED,
    LuaScript,
)

__all__ = ["DELETE", "GET", "MAX_EXPIRY_MS", "PUT", "TAGGED", "LuaScript"]

"""Old home of the Redis backend: it lives in :mod:`prefect_memory.plugins.redis.backend`.

Kept so that imports (and pickles) naming ``prefect_memory.plugins.redisdb`` keep working.
"""

from __future__ import annotations

from .redis.backend import (  # noqa: F401 - re-exported
    _META,
    _OPTIONS,
    _PREFIX_FORBIDDEN,
    _QUERY_OPTIONS,
    _REDIRECTS,
    _SCAN_COUNT,
    _URL_PASSTHROUGH,
    DELETE,
    GET,
    MAX_EXPIRY_MS,
    PUT,
    TAGGED,
    Connections,
    Notify,
    RedisBackend,
    RedisConnector,
    Secret,
    SlotMap,
    _check_consistency,
    _check_expiry,
    _check_prefix,
    _from_query,
    _live_x,
    _packb,
    _positive,
    _put_meta,
    _redis_glob,
    _unpackb,
)

__all__ = ["Notify", "RedisBackend"]

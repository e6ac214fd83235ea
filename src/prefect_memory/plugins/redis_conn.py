"""Old home of the Redis connections: they live in :mod:`prefect_memory.plugins.redis.connection`.

Kept so that imports (and pickles) naming ``prefect_memory.plugins.redis_conn`` keep working.
"""

from __future__ import annotations

from .redis.connection import (  # noqa: F401 - re-exported
    _NOPERM,
    _REDIRECTS,
    _TLS_FILES,
    _TRANSIENT_SSL,
    _WAIT_MARGIN,
    FORKS,
    Connections,
    RedisConnector,
    Secret,
    SlotMap,
    _cause,
    exchange,
    plain_options,
    redirect,
    refusal,
)

__all__ = ["FORKS", "Connections", "RedisConnector", "Secret", "SlotMap", "exchange", "redirect"]

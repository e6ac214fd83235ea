"""Where the shared structures live in Redis: the backend to use and their key names.

Every structure (a counter, a log, a lease, a lock) gets its own Cluster hash tag
``{<namespace token>/<kind>/<name token>}``, so the keys of one structure share a slot
(its scripts run on one node) while different structures spread over the nodes. The
tokens never contain ``/``, so no name can collide with another's, nor with an entry
(``P:{N}:e:<key>``, whose tag holds no ``/``).

Example:
    >>> from prefect_memory.plugins.redis import RedisBackend
    >>> backend = RedisBackend("redis://h:6379/0", key_prefix="app")
    >>> object_key(backend, "team:a", "gcounter", "visits/total")
    'app:{team%3Aa/gcounter/visits%2Ftotal}:'
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..keys import ns_token
from ..memory import Memory
from ..plugins.base import Backend
from ..plugins.redis.backend import RedisBackend


def redis_backend(target: Any, **options: Any) -> RedisBackend:
    """The Redis backend behind ``target``: a Memory, a backend or a ``redis://`` URL.

    A :class:`~prefect_memory.shared.SharedMemory` (or any backend wrapping another in an
    ``inner`` attribute) is unwrapped.

    Raises:
        ConfigError: ``target`` is not backed by Redis.
    """
    if isinstance(target, str):
        from ..registry import open_backend

        target = open_backend(target, **options)
    backend: Any = target.backend if isinstance(target, Memory) else target
    while not isinstance(backend, RedisBackend) and isinstance(backend, Backend):
        wrapped = [child for role, child in backend.children() if not role]  # wrappers only
        if len(wrapped) != 1:
            break
        backend = wrapped[0]
    if not isinstance(backend, RedisBackend):
        shown = backend.shown_url if isinstance(backend, Backend) else repr(backend)
        raise ConfigError(
            "this shared structure needs a redis:// memory (atomic server-side updates), "
            f"got {shown!r}"
        )
    return backend


def object_key(backend: RedisBackend, namespace: str, kind: str, name: str) -> str:
    """The base of the Redis keys of one structure (its parts are appended to it)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a shared structure needs a non-empty str name, got {name!r}")
    return f"{backend.key_prefix}:{{{ns_token(namespace)}/{kind}/{ns_token(name)}}}:"


def namespace_of(target: Any) -> str:
    """The namespace of a Memory (``"default"`` for a backend or a URL)."""
    return target.namespace if isinstance(target, Memory) else "default"

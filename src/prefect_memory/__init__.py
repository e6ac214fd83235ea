"""prefect-memory: a multi-tier memory for Prefect 3 flows.

Example:
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("memory://", namespace="sessions")
    >>> mem.set_many({"k:1": 1, "k:2": 2}, ttl=60)
    >>> mem.get_many(["k:1", "k:2", "missing"])
    {'k:1': 1, 'k:2': 2}
    >>> sorted(mem.keys("k:*"))
    ['k:1', 'k:2']
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from . import tabular as _tabular  # noqa: F401  (registers mem.frames; loads no pandas)
from .codecs import Codec
from .config import Namespaces, from_config
from .errors import (
    BackendError,
    BackendNotFound,
    BackendPermissionError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ConsensusError,
    DecryptionError,
    EntryNotFound,
    FencingError,
    InvalidKeyError,
    InvalidTTLError,
    KeyTypeError,
    MissingDependencyError,
    PermanentBackendError,
    PrefectMemoryError,
    SerializationError,
    UnknownBackendError,
    ValidationError,
    ValidationFailure,
)
from .hybrid import HybridMemory
from .lazy_exports import lazy_exports as _lazy_exports
from .memory import TTL, EntryInfo, Hook, Memory
from .plugins.base import Backend, Capabilities, Record
from .registry import available_backends, open_backend, register_backend
from .resilience import (
    CircuitBreaker,
    CircuitOpen,
    ExponentialBackoff,
    HealthReport,
    ResilientBackend,
    Retry,
    health,
)

__version__ = "0.1.0"

#: The Prefect blocks (:mod:`prefect_memory.blocks`), loaded on first access: importing the
#: package does not import Prefect. ``dir()`` lists them, so ``prefect block register -m
#: prefect_memory`` (which walks the module with ``inspect.getmembers``) registers them all.
#: The composed blocks are ``...Block``: ``HybridMemory`` is the engine class above.
_BLOCK_EXPORTS = {
    "RedisMemory": "blocks",
    "MongoDBMemory": "blocks",
    "S3Memory": "blocks",
    "JsonMemory": "blocks",
    "SqliteMemory": "blocks",
    "InProcessMemory": "blocks",
    "ParquetArchiveMemory": "blocks",
    "HybridMemoryBlock": "blocks",
    "TieredMemoryBlock": "blocks",
}

#: Former block names here (deprecated, out of ``dir()``): ``MongoMemory`` is ``MongoDBMemory``.
_RENAMED_BLOCK_EXPORTS = {"MongoMemory": "MongoDBMemory"}

_lazy_getattr, __dir__ = _lazy_exports(__name__, _BLOCK_EXPORTS, globals())


def __getattr__(name: str) -> Any:
    new = _RENAMED_BLOCK_EXPORTS.get(name)
    if new is None:
        return _lazy_getattr(name)
    warnings.warn(
        f"{__name__}.{name} is deprecated, use {new} (same class, same block type slug)",
        DeprecationWarning,
        stacklevel=2,
    )
    return _lazy_getattr(new)


#: The embedded default when no URL is given (override with PREFECT_MEMORY_URL).
DEFAULT_URL = "sqlite:///.prefect-memory/memory.db"


def open_memory(
    url: str | None = None,
    *,
    namespace: str = "default",
    ttl: TTL = None,
    refresh: bool = False,
    compression: bool = False,
    compress_threshold: int = 4096,
    pickle: bool = False,
    batch_size: int = 1000,
    hooks: Sequence[Hook] = (),
    retry: Retry | None = None,
    breaker: CircuitBreaker | None = None,
    deadline: float | None = None,
    **options: Any,
) -> Memory:
    """Open a memory on the store a URL names.

    Args:
        url: ``memory://``, ``sqlite:///path.db``, ``json:///path.json``, ``file:///dir``,
            ``s3://bucket/prefix``, ``redis://host:port/db``, ``mongodb://host/db?collection=c``,
            or a registered scheme. Default: ``$PREFECT_MEMORY_URL`` or a local SQLite file.
        namespace: Namespace of the keys.
        ttl: Default time to live (seconds or ``timedelta``; ``None``: no expiry).
        refresh: Sliding expiry by default (an access pushes the expiry).
        compression: zstd-compress values from ``compress_threshold`` bytes.
        compress_threshold: Size from which values are compressed.
        pickle: Allow pickling of values msgpack cannot carry (only for stores you trust).
        batch_size: Largest batch per round trip.
        hooks: Save/load hooks (see :class:`Hook`).
        retry: Retry transient store errors (see :class:`Retry`); bad input is never retried.
        breaker: A circuit breaker for the store: while open, calls fail at once with
            :class:`CircuitOpen` instead of waiting on a dead server.
        deadline: Hard bound in seconds on each store call, even where the driver's own
            timeouts do not bound it.
        **options: Backend options (``timeout``, ``storage_options``, ``max_entries``...).

    Returns:
        A :class:`Memory`.

    Example:
        >>> import prefect_memory as pm
        >>> mem = pm.open_memory("memory://", retry=pm.Retry(pm.ExponentialBackoff(0.1), 3),
        ...                      breaker=pm.CircuitBreaker(failure_threshold=5), deadline=5.0)
        >>> mem.set("k", 1); mem.get("k"), mem.backend.breaker.state.value
        (1, 'closed')
    """
    if not isinstance(compression, bool):
        raise ConfigError(
            f"compression switches zstd compression of values on or off (True/False), got "
            f"{compression!r}; a Parquet archive's codec is the option parquet_compression"
        )
    url = url or os.environ.get("PREFECT_MEMORY_URL") or DEFAULT_URL
    backend = open_backend(url, **options)
    if retry is not None or breaker is not None or deadline is not None:
        backend = ResilientBackend(backend, retry=retry, breaker=breaker, deadline=deadline)
    codec = Codec(compression=compression, compress_threshold=compress_threshold, pickle=pickle)
    return Memory(
        backend,
        namespace,
        ttl=ttl,
        refresh=refresh,
        codec=codec,
        batch_size=batch_size,
        hooks=hooks,
    )


__all__ = [
    "DEFAULT_URL",
    "Backend",
    "BackendError",
    "BackendNotFound",
    "BackendPermissionError",
    "BackendTimeout",
    "BackendUnavailable",
    "Capabilities",
    "CircuitBreaker",
    "CircuitOpen",
    "Codec",
    "ConfigError",
    "ConsensusError",
    "DecryptionError",
    "EntryInfo",
    "EntryNotFound",
    "ExponentialBackoff",
    "FencingError",
    "HealthReport",
    "Hook",
    "HybridMemory",
    "InvalidKeyError",
    "InvalidTTLError",
    "KeyTypeError",
    "Memory",
    "MissingDependencyError",
    "Namespaces",
    "PermanentBackendError",
    "PrefectMemoryError",
    "Record",
    "ResilientBackend",
    "Retry",
    "SerializationError",
    "UnknownBackendError",
    "ValidationError",
    "ValidationFailure",
    "available_backends",
    "from_config",
    "health",
    "open_backend",
    "open_memory",
    "register_backend",
]

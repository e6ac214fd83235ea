"""URL scheme -> backend: built-ins, install hints, entry points, ``register_backend``.

Built-in backends are imported on first use only. Third parties add backends either
with :func:`register_backend` or through the ``prefect_memory.backends`` entry-point
group (name = scheme, value = ``module:Class`` or ``module:factory``).

Example:
    >>> from prefect_memory.registry import available_backends
    >>> {"memory", "sqlite", "redis", "s3"} <= set(available_backends())
    True
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Union
from urllib.parse import urlsplit

from .errors import ConfigError, MissingDependencyError, UnknownBackendError
from .plugins.base import Backend

ENTRY_POINT_GROUP = "prefect_memory.backends"

BackendFactory = Union[type[Backend], Callable[..., Backend], str]  # noqa: UP007

#: scheme -> (dotted path, install hint or None)
KNOWN_BACKENDS: dict[str, tuple[str, str | None]] = {
    "memory": ("prefect_memory.plugins.inprocess:InProcessBackend", None),
    "sqlite": ("prefect_memory.plugins.sqlite:SqliteBackend", None),
    "json": ("prefect_memory.plugins.jsonfile:JsonFileBackend", None),
    "file": ("prefect_memory.plugins.fs:FsspecBackend", None),
    "s3": ("prefect_memory.plugins.fs:FsspecBackend", "pip install 'prefect-memory[s3]'"),
    "parquet": (
        "prefect_memory.plugins.parquet.backend:ParquetArchiveBackend",
        "pip install pyarrow s3fs",
    ),
    "redis": (
        "prefect_memory.plugins.redis.backend:RedisBackend",
        "pip install 'prefect-memory[redis]'",
    ),
    "rediss": (
        "prefect_memory.plugins.redis.backend:RedisBackend",
        "pip install 'prefect-memory[redis]'",
    ),
    "mongodb": (
        "prefect_memory.plugins.mongodb:MongoBackend",
        "pip install 'prefect-memory[mongodb]'",
    ),
    "mongodb+srv": (
        "prefect_memory.plugins.mongodb:MongoBackend",
        "pip install 'prefect-memory[mongodb]'",
    ),
}

_registry: dict[str, BackendFactory] = {}
_entry_points_loaded = False
_lock = threading.Lock()


def register_backend(scheme: str, factory: BackendFactory, *, clobber: bool = False) -> None:
    """Make ``scheme://...`` URLs open a backend built by ``factory``.

    Args:
        scheme: URL scheme, e.g. ``"custom"`` (lower case letters, digits, ``+ - .``).
        factory: A :class:`Backend` subclass (its ``from_url`` is called), a callable
            ``factory(url, **options) -> Backend``, or a ``"module:attribute"`` string.
        clobber: Replace an existing registration instead of raising.

    Raises:
        ConfigError: The scheme is malformed or already registered (and ``clobber`` is false).

    Example:
        >>> from prefect_memory.plugins.inprocess import InProcessBackend
        >>> register_backend("scratch", InProcessBackend, clobber=True)
        >>> import prefect_memory as pm
        >>> pm.open_memory("scratch://").backend.scheme
        'memory'
    """
    scheme = _normalize_scheme(scheme)
    with _lock:
        if not clobber and (scheme in _registry or scheme in KNOWN_BACKENDS):
            raise ConfigError(
                f"a backend is already registered for {scheme!r}; pass clobber=True to replace it"
            )
        _registry[scheme] = factory


def available_backends() -> list[str]:
    """Every scheme that can be opened (built-in, registered, entry points)."""
    _load_entry_points()
    return sorted(set(KNOWN_BACKENDS) | set(_registry))


def _normalize_scheme(scheme: str) -> str:
    if not isinstance(scheme, str) or not scheme:
        raise ConfigError(f"a backend scheme must be a non-empty str, got {scheme!r}")
    scheme = scheme.lower()
    if not scheme[0].isalpha() or not all(c.isalnum() or c in "+-." for c in scheme):
        raise ConfigError(f"invalid URL scheme {scheme!r}")
    return scheme


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _registry.setdefault(ep.name.lower(), ep.value)
        _entry_points_loaded = True


def _import(path: str, scheme: str, hint: str | None) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None) or str(err)
        advice = f"; install it with: {hint}" if hint else ""
        raise MissingDependencyError(
            f"the {scheme!r} backend needs the package {missing!r}{advice}"
        ) from err
    return getattr(module, attr)


def resolve_factory(scheme: str) -> Callable[..., Backend]:
    """Return the callable ``(url, **options) -> Backend`` for ``scheme``."""
    scheme = _normalize_scheme(scheme)
    _load_entry_points()
    factory = _registry.get(scheme)
    hint: str | None = None
    if factory is None and scheme in KNOWN_BACKENDS:
        factory, hint = KNOWN_BACKENDS[scheme]
    if factory is None:
        raise UnknownBackendError(
            f"no memory backend for the URL scheme {scheme!r}; installed: "
            f"{', '.join(available_backends())}. Add one with prefect_memory.register_backend() "
            f"or the {ENTRY_POINT_GROUP!r} entry-point group"
        )
    if isinstance(factory, str):
        factory = _import(factory, scheme, hint)
    if isinstance(factory, type) and issubclass(factory, Backend):
        return factory.from_url
    if not callable(factory):
        raise ConfigError(f"the backend registered for {scheme!r} is not callable: {factory!r}")
    return factory


def open_backend(url: str, **options: Any) -> Backend:
    """Open the backend a URL names (``scheme://...``)."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"a memory URL looks like 'scheme://...' (e.g. 'redis://127.0.0.1:6379/0'), got {url!r}"
        )
    try:
        scheme = urlsplit(url).scheme or url.split("://", 1)[0]
    except ValueError as err:  # e.g. "Invalid IPv6 URL"
        shown = url.split("://", 1)[0][:20]  # the rest may hold a password: not shown
        raise ConfigError(f"the {shown}:// URL is not a valid URL: {err}") from None
    backend = resolve_factory(scheme)(url, **options)
    if not isinstance(backend, Backend):
        raise ConfigError(
            f"the factory for {scheme!r} returned {type(backend).__name__}, not a Backend"
        )
    return backend

"""The exception tree of prefect-memory.

Every error the library raises derives from :class:`PrefectMemoryError`, and each
subclass also derives from the builtin a Python user would reach for, so that
``except KeyError`` or ``except ConnectionError`` keep working.

Example:
    >>> from prefect_memory.errors import BackendUnavailable, PrefectMemoryError
    >>> issubclass(BackendUnavailable, ConnectionError)
    True
    >>> issubclass(BackendUnavailable, PrefectMemoryError)
    True
"""

from __future__ import annotations


class PrefectMemoryError(Exception):
    """Root of every error raised by prefect-memory."""


class InvalidKeyError(PrefectMemoryError, ValueError):
    """A key or namespace is not acceptable (for example empty)."""


class KeyTypeError(InvalidKeyError, TypeError):
    """A key is not a ``str``."""


class EntryNotFound(PrefectMemoryError, KeyError):
    """The key has no live entry (missing or expired)."""


class SerializationError(PrefectMemoryError, TypeError):
    """A value cannot be encoded, or stored bytes cannot be decoded."""


class ConfigError(PrefectMemoryError, ValueError):
    """A URL, option or configuration is invalid; the message names every problem."""


class UnknownBackendError(ConfigError):
    """No backend is registered for a URL scheme."""


class MissingDependencyError(PrefectMemoryError, ImportError):
    """A backend needs an optional package that is not installed."""


class BackendError(PrefectMemoryError):
    """A storage backend failed in a way that is not a connectivity problem."""


class BackendUnavailable(BackendError, ConnectionError):
    """The backend cannot be reached (refused, reset, DNS, or timed out)."""


class BackendTimeout(BackendUnavailable, TimeoutError):
    """The backend did not answer within the configured timeout."""


__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "EntryNotFound",
    "InvalidKeyError",
    "KeyTypeError",
    "MissingDependencyError",
    "PrefectMemoryError",
    "SerializationError",
    "UnknownBackendError",
]

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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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


class InvalidTTLError(ConfigError):
    """A time to live is not a positive, finite number of seconds of at most 100 years.

    Raised before anything is written, so a refused write leaves nothing behind. A
    :class:`ConfigError` (and so a ``ValueError``), as TTLs were before it existed.

    Example:
        >>> import prefect_memory as pm
        >>> mem = pm.open_memory("memory://")
        >>> try:
        ...     mem.set("k", 1, ttl=float("inf"))
        ... except pm.InvalidTTLError:
        ...     print("refused;", mem.exists("k"))
        refused; False
    """


class MissingDependencyError(PrefectMemoryError, ImportError):
    """A backend needs an optional package that is not installed."""


class DecryptionError(PrefectMemoryError, ValueError):
    """Stored bytes cannot be decrypted: another key, tampered data, or not encrypted."""


@dataclass(frozen=True)
class ValidationFailure:
    """One failed check of a :class:`ValidationError`.

    Attributes:
        path: Where it failed: a column (``"amount"``), a record path (``"profile.avatar"``),
            or ``""`` for the whole value.
        check: What failed: a pandera check (``"greater_than_or_equal_to(0)"``) or a JSON
            Schema keyword (``"format"``, ``"required"``).
        message: A sentence a person can act on.
        examples: Up to a few ``(row index or path, failing value)`` pairs.
        count: How many rows or values failed this check in total.
    """

    path: str
    check: str
    message: str
    examples: tuple[tuple[Any, Any], ...] = ()
    count: int = 1

    def __str__(self) -> str:
        where = self.path or "<value>"
        text = f"{where}: {self.check}: {self.message}"
        if self.examples:
            shown = ", ".join(f"{at!r}: {value!r}" for at, value in self.examples)
            extra = self.count - len(self.examples)
            text += f" [e.g. {shown}{f' (+{extra} more)' if extra > 0 else ''}]"
        return text


class ValidationError(PrefectMemoryError, ValueError):
    """A value or a frame does not match its schema; lists every failure at once.

    Attributes:
        key: The memory key being saved or loaded (``None`` outside a memory).
        schema: Name of the schema that failed.
        failures: Every failed check (see :class:`ValidationFailure`).

    Example:
        >>> err = ValidationError(
        ...     [ValidationFailure("email", "format", "'x' is not an email")],
        ...     key="user:1", schema="user")
        >>> print(err)
        user:1 does not match schema 'user' (1 failure):
          email: format: 'x' is not an email
        >>> isinstance(err, ValueError), err.paths
        (True, ['email'])
    """

    def __init__(
        self,
        failures: Iterable[ValidationFailure],
        *,
        key: str | None = None,
        schema: str | None = None,
        details: Any = None,
    ) -> None:
        self.failures: tuple[ValidationFailure, ...] = tuple(failures)
        self.key = key
        self.schema = schema
        #: The validator's own report (pandera's ``failure_cases`` frame, jsonschema errors).
        self.details = details
        what = "value" if key is None else key
        against = f" schema {schema!r}" if schema else " its schema"
        n = len(self.failures)
        head = f"{what} does not match{against} ({n} failure{'s' if n != 1 else ''}):"
        super().__init__("\n  ".join([head, *map(str, self.failures)]))

    @property
    def paths(self) -> list[str]:
        """The failing paths or columns, in order, without repeats."""
        return list(dict.fromkeys(f.path for f in self.failures))


class BackendError(PrefectMemoryError):
    """A storage backend failed in a way that is not a connectivity problem."""


class BackendUnavailable(BackendError, ConnectionError):
    """The backend cannot be reached (refused, reset, DNS, or timed out).

    Attributes:
        sent: ``False`` when the request never left the client (a breaker or a full pool
            refused it), so a failed write cannot have been applied; ``None``: unknown.
    """

    sent: bool | None = None


def maybe_applied(err: BaseException) -> bool:
    """Tell whether a write that failed with ``err`` may still have been applied.

    A timed-out or reset write may have reached the store, and a server may even apply it
    after answering later writes. Only a request that was never sent (``sent=False``) or a
    refused connection is known not to have landed.

    Example:
        >>> maybe_applied(BackendTimeout("no answer within 5s"))
        True
        >>> refused = BackendUnavailable("down")
        >>> refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
        >>> maybe_applied(refused)
        False
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sent", None) is False or isinstance(current, ConnectionRefusedError):
            return False
        current = current.__cause__ or current.__context__
    return True


class BackendTimeout(BackendUnavailable, TimeoutError):
    """The backend did not answer within the configured timeout."""


class PermanentBackendError(BackendError):
    """The store refused in a way that retrying cannot fix; the message says what to change.

    Retries, circuit breakers and the hybrid journal never retry it: unlike
    :class:`BackendUnavailable`, waiting does not help. Its subclasses say why.

    Example:
        >>> err = BackendNotFound("S3 bucket 'cold' does not exist: create it or fix the URL")
        >>> isinstance(err, PermanentBackendError), isinstance(err, FileNotFoundError)
        (True, True)
        >>> isinstance(err, BackendUnavailable)
        False
    """


class BackendNotFound(PermanentBackendError, FileNotFoundError):
    """What the URL points at does not exist (an S3 bucket, a database, a folder's parent)."""


class BackendPermissionError(PermanentBackendError, PermissionError):
    """The store refused the credentials or the operation (wrong password, a missing ACL
    permission, an access key without rights on the bucket)."""


class ConsensusError(PrefectMemoryError):
    """Fewer replicas than the quorum confirmed a write, or a stale writer was fenced off.

    The write itself is not undone: it is on the primary (and may still reach the
    replicas); what failed is the promise that ``quorum`` of them had it in time.

    Attributes:
        acknowledged: Replicas that confirmed (``None`` when the store does not say).
        quorum: Replicas that had to confirm.
        timeout: Seconds waited.

    Example:
        >>> err = ConsensusError("1 of 2 replicas", acknowledged=1, quorum=2, timeout=0.5)
        >>> err.acknowledged, err.quorum, isinstance(err, PrefectMemoryError)
        (1, 2, True)
    """

    def __init__(
        self,
        message: str,
        *,
        acknowledged: int | None = None,
        quorum: int | str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged
        self.quorum = quorum
        self.timeout = timeout


class FencingError(ConsensusError):
    """A write carried a fencing token older than the current one (a stale leader or lock
    holder): it was rejected and nothing was written.

    Attributes:
        token: The token the write carried.
        current: The newest token issued (``None`` when unknown).
    """

    def __init__(self, message: str, *, token: int | None = None, current: int | None = None):
        super().__init__(message)
        self.token = token
        self.current = current


__all__ = [
    "BackendError",
    "BackendNotFound",
    "BackendPermissionError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "ConsensusError",
    "DecryptionError",
    "EntryNotFound",
    "FencingError",
    "InvalidKeyError",
    "InvalidTTLError",
    "KeyTypeError",
    "MissingDependencyError",
    "PermanentBackendError",
    "PrefectMemoryError",
    "SerializationError",
    "UnknownBackendError",
    "ValidationError",
    "ValidationFailure",
    "maybe_applied",
]

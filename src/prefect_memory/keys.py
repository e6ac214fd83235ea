"""Key, tag, namespace and TTL validation, and namespace-safe encoding.

A namespace and a key can never collide with another namespace: wherever a backend
joins them into one string, the namespace is percent-encoded so that it contains
no separator, no glob metacharacter and no Redis hash-tag brace.

Example:
    >>> ns_token("a:b") + ":" + "c" != ns_token("a") + ":" + "b:c"
    True
    >>> ns_token("a:b")
    'a%3Ab'
    >>> file_name("reports/2024 Q1")
    'reports%2F2024%20Q1'

Every store encodes keys, tags and namespaces as UTF-8, so a lone surrogate (``"\\ud800"``,
which has no UTF-8 form) is refused here, before any write, as
:class:`~prefect_memory.errors.InvalidKeyError`. TTLs are bounded by :data:`MAX_TTL`, a
span every store can hold (Redis ``PEXPIRE`` milliseconds, ``datetime``, BSON dates).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Iterable

from .errors import InvalidKeyError, InvalidTTLError, KeyTypeError

#: Longest key accepted, in characters.
MAX_KEY_LENGTH = 4096
#: Longest time to live accepted, in seconds (100 years). Redis holds it in milliseconds
#: (``PEXPIRE``), ``datetime`` and BSON dates hold ``now + MAX_TTL``; beyond it use ``None``.
MAX_TTL = 100 * 365.25 * 86400.0

_SAFE_NS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@+=,")
_SAFE_FILE = _SAFE_NS | frozenset(":!$&'()")
_MAX_FILE_NAME = 200


def validate_key(key: object) -> str:
    """Return ``key`` if it is an acceptable key, else raise.

    Args:
        key: The candidate key.

    Returns:
        The key, unchanged.

    Raises:
        KeyTypeError: ``key`` is not a ``str`` (also a ``TypeError``).
        InvalidKeyError: ``key`` is empty or too long (also a ``ValueError``).

    Example:
        >>> validate_key("user:7")
        'user:7'
        >>> validate_key("")
        Traceback (most recent call last):
        ...
        prefect_memory.errors.InvalidKeyError: keys must be non-empty strings, got ''
    """
    if not isinstance(key, str):
        raise KeyTypeError(f"keys must be str, got {type(key).__name__}: {key!r}")
    if not key:
        raise InvalidKeyError("keys must be non-empty strings, got ''")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"keys may have at most {MAX_KEY_LENGTH} characters, got {len(key)}")
    if "\x00" in key:
        raise InvalidKeyError(f"keys may not contain NUL characters: {key!r}")
    if not key.isascii():
        _check_utf8(key, "keys")
    return key


def _check_utf8(text: str, what: str) -> None:
    """Raise :class:`InvalidKeyError` if ``text`` has no UTF-8 form (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidKeyError(
            f"{what} may not contain lone surrogates: {text[err.start]!r} at position "
            f"{err.start} of {text!r} has no UTF-8 form"
        ) from None


def validate_keys(keys: Iterable[object]) -> list[str]:
    """Validate every key of ``keys`` (see :func:`validate_key`); a lone ``str`` is refused."""
    if isinstance(keys, (str, bytes)):
        raise KeyTypeError(f"expected an iterable of keys, got a single {type(keys).__name__}")
    return [validate_key(k) for k in keys]


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if acceptable: a non-empty ``str`` without NUL characters."""
    if not isinstance(namespace, str):
        raise KeyTypeError(f"namespace must be str, got {type(namespace).__name__}")
    if not namespace or "\x00" in namespace:
        raise InvalidKeyError(
            f"namespace must be a non-empty string without NUL, got {namespace!r}"
        )
    if not namespace.isascii():
        _check_utf8(namespace, "a namespace")
    return namespace


def validate_tags(tags: object) -> tuple[str, ...]:
    """Return ``tags`` as a tuple without duplicates; a lone ``str`` is one tag.

    Raises:
        KeyTypeError: ``tags`` is not a ``str`` or an iterable of ``str``.
        InvalidKeyError: A tag is empty, holds NUL or a lone surrogate.

    Example:
        >>> validate_tags(["a", "b", "a"]), validate_tags("user:7")
        (('a', 'b'), ('user:7',))
        >>> validate_tags(5)
        Traceback (most recent call last):
        ...
        prefect_memory.errors.KeyTypeError: tags must be a str or an iterable of str, got int: 5
    """
    if isinstance(tags, str):
        tags = (tags,)
    elif not isinstance(tags, (tuple, list)) and (
        isinstance(tags, (bytes, bytearray)) or not isinstance(tags, Iterable)
    ):
        raise KeyTypeError(
            f"tags must be a str or an iterable of str, got {type(tags).__name__}: {tags!r}"
        )
    out: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str):
            raise KeyTypeError(f"tags must be str, got {type(tag).__name__}: {tag!r}")
        if not tag or "\x00" in tag:
            raise InvalidKeyError(f"tags must be non-empty strings without NUL, got {tag!r}")
        if not tag.isascii():
            _check_utf8(tag, "tags")
        out[tag] = None
    return tuple(out)


def validate_pattern(pattern: object) -> str:
    """Return the glob ``pattern`` of a key listing if it is a ``str`` with a UTF-8 form."""
    if not isinstance(pattern, str):
        raise KeyTypeError(f"pattern must be a str glob, got {type(pattern).__name__}")
    if not pattern.isascii():
        _check_utf8(pattern, "a pattern")
    return pattern


def validate_ttl(seconds: object, *, name: str = "ttl") -> float:
    """Return ``seconds`` as a ``float`` if it is a TTL every store can hold, else raise.

    Args:
        seconds: Seconds to live (``int`` or ``float``; not ``bool``).
        name: What to call it in the message.

    Raises:
        InvalidTTLError: ``seconds`` is not a number, not positive, not finite, or above
            :data:`MAX_TTL` (also a ``ValueError``).

    Example:
        >>> validate_ttl(60)
        60.0
        >>> try:
        ...     validate_ttl(float("inf"))
        ... except ValueError as err:
        ...     print(type(err).__name__, "at most" in str(err))
        InvalidTTLError True
    """
    kind = type(seconds)
    if (
        kind is not float
        and kind is not int
        and (kind is bool or not isinstance(seconds, (int, float)))
    ):
        raise InvalidTTLError(
            f"{name} must be seconds or a timedelta, got {kind.__name__}: {seconds!r}"
        )
    try:
        value = float(seconds)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond any float
        value = math.inf
    if 0 < value <= MAX_TTL:
        return value
    if not value > 0:
        raise InvalidTTLError(f"{name} must be positive, got {seconds!r} (use None for no expiry)")
    raise InvalidTTLError(
        f"{name} must be at most {MAX_TTL:.0f} seconds (100 years), got {seconds!r} "
        "(use None for no expiry)"
    )


def _quote(text: str, safe: frozenset[str]) -> str:
    out: list[str] = []
    for ch in text:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def unquote(text: str) -> str:
    """Invert the percent-encoding used by :func:`ns_token` and :func:`file_name`."""
    if "%" not in text:
        return text
    raw = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and i + 2 < len(text):
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(ch.encode("utf-8"))
            i += 1
    return raw.decode("utf-8")


def ns_token(namespace: str) -> str:
    """Encode a namespace into a token free of ``:``, ``/``, braces and glob characters."""
    token = _quote(namespace, _SAFE_NS)
    if token.startswith("."):
        token = "%2E" + token[1:]
    return token


def file_name(key: str) -> str:
    """Encode a key as one path segment for file and object stores.

    Short keys keep a readable, reversible name; a key whose encoded name would exceed
    200 characters becomes ``~`` plus its SHA-256, and its real key is stored in the object.
    """
    name = _quote(key, _SAFE_FILE)
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > _MAX_FILE_NAME:
        return "~" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return name


def key_from_file_name(name: str) -> str | None:
    """Return the key a :func:`file_name` encodes, or ``None`` for a hashed name."""
    if name.startswith("~"):
        return None
    return unquote(name)


def glob_match(key: str, pattern: str | None) -> bool:
    """Tell whether ``key`` matches the glob ``pattern`` (``*``, ``?``, ``[seq]``)."""
    return pattern is None or pattern == "*" or fnmatch.fnmatchcase(key, pattern)


def literal_prefix(pattern: str | None) -> str:
    """The part of a glob before its first metacharacter (for prefix scans).

    Example:
        >>> literal_prefix("k:*")
        'k:'
    """
    if not pattern:
        return ""
    for i, ch in enumerate(pattern):
        if ch in "*?[\\":
            return pattern[:i]
    return pattern

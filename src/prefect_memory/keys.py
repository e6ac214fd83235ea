"""Key validation and namespace-safe encoding.

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
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable

from .errors import InvalidKeyError, KeyTypeError

#: Longest key accepted, in characters.
MAX_KEY_LENGTH = 4096

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
    return key


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
    return namespace


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

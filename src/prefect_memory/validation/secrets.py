"""Encryption keys: raw bytes, text encodings, pydantic secrets and (lazily) Prefect Secret blocks.

A key is 16, 24 or 32 bytes (AES-128/192/256), given as bytes, as text in urlsafe base64
(what :func:`generate_key` and ``Fernet.generate_key()`` print) or hex, wrapped or not in a
pydantic ``SecretStr``/``SecretBytes``, or fetched from a Prefect ``Secret`` block by
:class:`PrefectSecretKey`. Key material never appears in a ``repr``, a message or a log.

Example:
    >>> key = generate_key()
    >>> len(key_bytes(key)), len(key)
    (32, 44)
    >>> PrefectSecretKey("memory-encryption-key")
    PrefectSecretKey('memory-encryption-key')
    >>> key_bytes("too short")
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ConfigError: an encryption key must be 16, 24 or 32 bytes ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any

from ..errors import ConfigError

_SIZES = (16, 24, 32)


def generate_key() -> str:
    """A new random AES-256 key as urlsafe base64 text (store it in a secret, not in code)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def key_id(key: bytes) -> bytes:
    """Four bytes naming a key in stored values (a hash: it reveals nothing of the key)."""
    return hashlib.sha256(b"prefect-memory/key-id\x00" + key).digest()[:4]


def key_bytes(source: Any) -> bytes:
    """The raw key of ``source`` (bytes, text, a pydantic secret or a :class:`PrefectSecretKey`).

    Raises:
        ConfigError: Not 16, 24 or 32 bytes once decoded (the message never shows the key).
    """
    if isinstance(source, PrefectSecretKey):
        source = source.load()
    getter = getattr(source, "get_secret_value", None)
    if callable(getter):  # pydantic SecretStr / SecretBytes, prefect Secret values
        source = getter()
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        if len(raw) in _SIZES:
            return raw
        source = raw.decode("ascii", errors="replace")
    if not isinstance(source, str):
        raise ConfigError(f"an encryption key must be bytes or text, got {type(source).__name__}")
    text = source.strip()
    for decode in (_hex, _urlsafe_b64):  # hex first: 32 hex digits are also valid base64
        raw = decode(text)
        if raw is not None and len(raw) in _SIZES:
            return raw
    raise ConfigError(
        "an encryption key must be 16, 24 or 32 bytes (raw, urlsafe base64 or hex); "
        "got text that decodes to none of these"
    )


def _urlsafe_b64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


class PrefectSecretKey:
    """A key kept in a Prefect ``Secret`` block, loaded on first use.

    Only the block's name is pickled: each worker loads the key from Prefect itself, so
    the key never travels inside a pickled memory. Prefect is imported on first use only.

    Args:
        block_name: Name of the ``Secret`` block (``prefect block create secret``).
    """

    def __init__(self, block_name: str) -> None:
        if not isinstance(block_name, str) or not block_name:
            raise ConfigError("a Prefect Secret block name must be a non-empty string")
        self.block_name = block_name

    def __repr__(self) -> str:
        return f"PrefectSecretKey({self.block_name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrefectSecretKey) and other.block_name == self.block_name

    def __hash__(self) -> int:
        return hash(("PrefectSecretKey", self.block_name))

    def load(self) -> Any:
        """Fetch the secret's value from Prefect (a sync call, usable inside flows).

        Fetched by :func:`prefect_memory.prefect_bridge.load_secret`, imported here (Prefect
        with it) at the first use.

        Raises:
            MissingDependencyError: Prefect is not installed.
            ConfigError: No ``Secret`` block has that name.
        """
        from ..prefect_bridge import load_secret

        return load_secret(self.block_name)

"""Save/load hooks: validate records, encrypt bytes, migrate old formats (and frames).

- :class:`SchemaHook` checks records against :class:`~.records.RecordSchemas` on save (and
  on load with ``on_load=True``).
- :class:`EncryptionHook` encrypts the encoded bytes with AES-GCM (``cryptography``); a
  wrong key, tampered bytes or a value copied under another key raise
  :class:`~prefect_memory.errors.DecryptionError`.
- :class:`MigrationHook` upgrades records written in older formats when they are loaded,
  by a version field and user functions (``{1: v1_to_v2, 2: v2_to_v3}``).
- ``FrameSchemaHook`` (pandas frames validated by pandera) lives in
  :mod:`prefect_memory.tabular.hook` and is importable from here too.

On save a memory runs value hooks in order, then byte hooks; on load byte hooks first,
then value hooks in reverse order. So ``hooks=[SchemaHook(...), MigrationHook(...),
EncryptionHook(...)]`` validates, stamps and encrypts on save, and decrypts, upgrades (and
validates, with ``on_load``) on load.

Example:
    >>> import prefect_memory as pm
    >>> def v1_to_v2(record):
    ...     record["name"] = record.pop("fullname")
    ...     return record
    >>> hooks = [MigrationHook({1: v1_to_v2}, missing_version=1), EncryptionHook(generate_key())]
    >>> mem = pm.open_memory("memory://", hooks=hooks)
    >>> raw = pm.Memory(mem.backend, mem.namespace)
    >>> raw.set("user:1", {"fullname": "Ada"})        # an old record, written in the clear
    >>> mem.hooks[1].allow_plaintext = True            # read what predates encryption
    >>> mem.get("user:1")
    {'name': 'Ada', 'schema_version': 2}
    >>> mem.set("user:2", {"name": "Alan"})
    >>> b"Alan" in mem.backend.get_many(mem.namespace, ["user:2"], now=0)["user:2"].value
    False
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError, DecryptionError, ValidationError, ValidationFailure
from ..keys import glob_match
from ..memory import Hook
from .records import RecordSchemas
from .secrets import PrefectSecretKey, generate_key, key_bytes, key_id

__all__ = ["EncryptionHook", "MigrationHook", "SchemaHook", "generate_key"]  # + FrameSchemaHook

_MAGIC = b"PMENC"
_VERSION_KEY = 1  # the memory key (with bind_key) is authenticated with the value
_VERSION_NAMESPACE = 2  # the namespace too: a value copied to another namespace fails
_BOUND = 0x01  # flag: the memory key is authenticated with the value
_HEADER = len(_MAGIC) + 2 + 4  # magic, version, flags, key id
_NONCE = 12


def __getattr__(name: str) -> Any:
    if name == "FrameSchemaHook":  # needs pandas: imported only when asked for
        from ..tabular.hook import FrameSchemaHook

        return FrameSchemaHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SchemaHook(Hook):
    """Check records against JSON Schemas by key pattern.

    Args:
        schemas: :class:`~.records.RecordSchemas`, or the tutorial's ``schemas`` section.
        on_load: Check loaded records too (catches data written without the hook).

    Raises (from ``set``/``get``):
        ValidationError: naming every failing path of the record.
    """

    def __init__(
        self, schemas: RecordSchemas | Mapping[str, Any], *, on_load: bool = False
    ) -> None:
        self.schemas = (
            schemas if isinstance(schemas, RecordSchemas) else RecordSchemas.from_config(schemas)
        )
        self.on_load = on_load

    def __repr__(self) -> str:
        return f"SchemaHook({self.schemas!r}, on_load={self.on_load})"

    def before_save(self, key: str, value: Any) -> Any:
        """Raise :class:`ValidationError` unless ``value`` fits the schema of ``key``."""
        if self.schemas.validation:
            self.schemas.validate(key, value)
        return value

    def after_load(self, key: str, value: Any) -> Any:
        """With ``on_load``, check the loaded value too."""
        if self.on_load and self.schemas.validation:
            self.schemas.validate(key, value)
        return value


class EncryptionHook(Hook):
    """Encrypt stored bytes with AES-GCM (authenticated: tampering is detected).

    Stored value: ``b"PMENC"``, version, flags, 4-byte key id, 12-byte random nonce,
    ciphertext and tag. With ``bind_key`` the memory key is authenticated too, so a value
    copied under another key fails to decrypt instead of being served as that key's.
    Version 2 (written whenever the memory hands the hook its namespace) authenticates the
    namespace as well, so a value copied from namespace ``alice`` to ``bob`` fails too;
    version 1 values (older releases) still decrypt. Not detected: an older ciphertext of
    the same key in the same namespace put back (rollback), see ``docs/validation.md``.

    Args:
        key: The key (bytes, urlsafe base64 or hex text, ``SecretStr``/``SecretBytes``, or a
            :class:`~.secrets.PrefectSecretKey`), or several: the first encrypts, any of them
            decrypts (key rotation). Default: ``secret_block``.
        secret_block: Name of a Prefect ``Secret`` block holding the key (loaded lazily; only
            the name is pickled).
        bind_key: Authenticate the memory key with the value (see above).
        allow_plaintext: Pass through values that are not encrypted (stored before the hook
            was added) instead of raising.
    """

    def __init__(
        self,
        key: Any = None,
        *,
        secret_block: str | None = None,
        bind_key: bool = True,
        allow_plaintext: bool = False,
    ) -> None:
        sources: list[Any] = list(key) if isinstance(key, (list, tuple)) else [key]
        sources = [s for s in sources if s is not None]
        if secret_block is not None:
            sources.append(PrefectSecretKey(secret_block))
        if not sources:
            raise ConfigError("EncryptionHook needs a key (key=... or secret_block=...)")
        self._sources = sources
        self._ciphers: list[tuple[bytes, AESGCM]] | None = None
        if not any(isinstance(s, PrefectSecretKey) for s in sources):
            self._load()  # check raw keys now, not at the first set
        self.bind_key = bind_key
        self.allow_plaintext = allow_plaintext

    def _load(self) -> list[tuple[bytes, AESGCM]]:
        if self._ciphers is None:
            keys = [key_bytes(source) for source in self._sources]
            self._ciphers = [(key_id(raw), AESGCM(raw)) for raw in keys]
        return self._ciphers

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ciphers"] = None  # rebuilt from the sources (a Prefect block is reloaded)
        return state

    def __repr__(self) -> str:
        if self._ciphers is not None:  # key ids only: never key material
            return f"EncryptionHook(key_ids={[kid.hex() for kid, _ in self._ciphers]})"
        blocks = [s.block_name for s in self._sources if isinstance(s, PrefectSecretKey)]
        return f"EncryptionHook(keys={len(self._sources)}, secret_blocks={blocks}, not loaded)"

    def encode_bytes(self, key: str, data: bytes, *, namespace: str | None = None) -> bytes:
        """Encrypt ``data`` with the first key, bound to ``namespace`` when it is given."""
        kid, cipher = self._load()[0]
        version = _VERSION_KEY if namespace is None else _VERSION_NAMESPACE
        header = _MAGIC + bytes((version, _BOUND if self.bind_key else 0)) + kid
        nonce = os.urandom(_NONCE)
        return header + nonce + cipher.encrypt(nonce, data, self._aad(header, key, namespace))

    def decode_bytes(self, key: str, data: bytes, *, namespace: str | None = None) -> bytes:
        """Decrypt ``data`` with the key it names, or raise :class:`DecryptionError`."""
        data = bytes(data)
        if not data.startswith(_MAGIC):
            if self.allow_plaintext:
                return data
            raise DecryptionError(
                f"entry {key!r} is not encrypted (stored without EncryptionHook); pass "
                "allow_plaintext=True to read entries written before encryption was enabled"
            )
        header, nonce, body = (
            data[:_HEADER],
            data[_HEADER : _HEADER + _NONCE],
            data[_HEADER + _NONCE :],
        )
        version = header[len(_MAGIC)] if len(header) == _HEADER else None
        if len(data) < _HEADER + _NONCE + 16 or version not in (_VERSION_KEY, _VERSION_NAMESPACE):
            raise DecryptionError(f"entry {key!r} has a corrupt or unknown encryption header")
        if version == _VERSION_NAMESPACE and namespace is None:
            raise DecryptionError(
                f"entry {key!r} is bound to its namespace, but this memory does not tell "
                "hooks its namespace (prefect-memory too old to read it?)"
            )
        kid = header[-4:]
        ciphers = self._load()
        cipher = next((c for known, c in ciphers if known == kid), None)
        if cipher is None:
            raise DecryptionError(
                f"entry {key!r} was encrypted with another key (key id {kid.hex()}); this "
                f"memory's key ids: {', '.join(k.hex() for k, _ in ciphers)}: wrong key?"
            )
        try:
            return cipher.decrypt(nonce, body, self._aad(header, key, namespace))
        except InvalidTag:
            raise DecryptionError(
                f"entry {key!r} failed authentication: its bytes were altered, or it was "
                "copied from another key or namespace"
            ) from None

    # The namespace-aware entry points a Memory calls when it passes its namespace.
    def encode_bytes_in(self, namespace: str, key: str, data: bytes) -> bytes:
        """:meth:`encode_bytes` bound to ``namespace`` (a version 2 header)."""
        return self.encode_bytes(key, data, namespace=namespace)

    def decode_bytes_in(self, namespace: str, key: str, data: bytes) -> bytes:
        """:meth:`decode_bytes` of a value stored in ``namespace``."""
        return self.decode_bytes(key, data, namespace=namespace)

    @staticmethod
    def _aad(header: bytes, key: str, namespace: str | None = None) -> bytes:
        """Associated data: the header, then (v2) the namespace, then (bound) the key."""
        bound = header[len(_MAGIC) + 1] & _BOUND
        aad = header
        if header[len(_MAGIC)] == _VERSION_NAMESPACE:
            space = (namespace or "").encode("utf-8", "surrogatepass")
            aad += len(space).to_bytes(4, "big") + space  # length first: no ambiguity with key
        return aad + (key.encode("utf-8", "surrogatepass") if bound else b"")


Upgrade = Callable[[dict[str, Any]], Mapping[str, Any]]


class MigrationHook(Hook):
    """Upgrade old records on load, step by step, by a version field.

    Args:
        upgrades: ``{n: f}`` where ``f`` turns a version-``n`` record into version ``n + 1``;
            the steps must be consecutive.
        version: The current version (default: the last step + 1).
        field: The record field holding the version.
        patterns: Key globs this hook applies to (default: every key).
        missing_version: Version of records without the field (``None``: leave them alone).
        stamp: Add ``field: version`` to records saved without it.

    Raises (from ``get``):
        ValidationError: A record newer than ``version``, with no path to it, or an upgrade
            that failed or did not return a mapping.
    """

    def __init__(
        self,
        upgrades: Mapping[int, Upgrade],
        *,
        version: int | None = None,
        field: str = "schema_version",
        patterns: str | Sequence[str] = "*",
        missing_version: int | None = None,
        stamp: bool = True,
    ) -> None:
        steps = sorted(upgrades)
        current = version if version is not None else (steps[-1] + 1 if steps else 1)
        problems = [f"upgrades[{n}] must be callable" for n in steps if not callable(upgrades[n])]
        gaps = [n for n in range(steps[0], current) if n not in upgrades] if steps else []
        if gaps:
            problems.append(f"no upgrade from version(s) {gaps} (steps must be consecutive)")
        if steps and steps[-1] >= current:
            problems.append(f"upgrade from version {steps[-1]} is not below version {current}")
        if problems:
            raise ConfigError("invalid MigrationHook:\n  " + "\n  ".join(problems))
        self.upgrades = dict(upgrades)
        self.version = current
        self.field = field
        self.patterns: tuple[str, ...] = (
            (patterns,) if isinstance(patterns, str) else tuple(patterns)
        )
        self.missing_version = missing_version
        self.stamp = stamp

    def __repr__(self) -> str:
        steps = sorted(self.upgrades)
        return f"MigrationHook(version={self.version}, steps={steps}, field={self.field!r})"

    def _applies(self, key: str, value: Any) -> bool:
        if not isinstance(value, Mapping) or "__frame__" in value:  # frames are not records
            return False
        return any(glob_match(key, p) for p in self.patterns)

    def before_save(self, key: str, value: Any) -> Any:
        """Stamp the current version on records saved without one."""
        if self.stamp and self._applies(key, value) and self.field not in value:
            return {**value, self.field: self.version}
        return value

    def after_load(self, key: str, value: Any) -> Any:
        """Upgrade a record of an older version to the current one."""
        if not self._applies(key, value):
            return value
        found = value.get(self.field, self.missing_version)
        if found is None or found == self.version:
            return value
        if not isinstance(found, int) or found > self.version or found not in self.upgrades:
            raise self._error(key, f"no upgrade path from version {found!r} to {self.version}")
        record = dict(value)
        for step in range(found, self.version):
            try:
                upgraded = self.upgrades[step](record)
            except Exception as err:
                raise self._error(key, f"upgrade from version {step} failed: {err!r}") from err
            if not isinstance(upgraded, Mapping):
                raise self._error(
                    key,
                    f"upgrade from version {step} returned a {type(upgraded).__name__}",
                )
            record = {**upgraded, self.field: step + 1}
        return record

    def _error(self, key: str, message: str) -> ValidationError:
        return ValidationError(
            [ValidationFailure(self.field, "migration", message)],
            key=key,
            schema=f"version {self.version}",
        )


def find_hook(hooks: Iterable[Hook], kind: type[Hook]) -> Hook | None:
    """The first hook of type ``kind`` in ``hooks`` (``None`` if there is none)."""
    return next((h for h in hooks if isinstance(h, kind)), None)

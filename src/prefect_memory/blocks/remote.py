"""The memory blocks on a server: Redis, MongoDB and S3 (shared by every worker).

Each block validates its fields at construction (a bad value raises a ``ValidationError``
naming the field), keeps secrets in ``SecretStr`` fields (never in the URL, never in
``repr``), and hands them to the backend as options when the memory is first used.

Example:
    >>> from prefect_memory.blocks import RedisMemory
    >>> block = RedisMemory.from_connection_string("redis://:s3cret@cache.local:6380/2")
    >>> block.url, block.password.get_secret_value()
    ('redis://cache.local:6380/2', 's3cret')
    >>> "s3cret" in repr(block)
    False
"""

from __future__ import annotations

import re
from abc import ABC
from typing import Any, ClassVar
from urllib.parse import unquote_plus, urlsplit

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..urls import _secret_name, redact_url, split_credentials
from .base import MemoryBlock

_PREFIX_FORBIDDEN = frozenset("{}*?[]\\ \t\r\n")


class _RefusedUrl(str):
    """A url, its secrets removed, that the ``url`` field refuses with ``reason``.

    A before-validator that raised would attach its raw input (the secret) to the
    ``ValidationError``; the url field raises instead, its input already clean.
    """

    reason = ""


def _refused(url: str, reason: str) -> _RefusedUrl:
    refused = _RefusedUrl(url)
    refused.reason = reason
    return refused


def _check_refused(value: Any) -> Any:
    """The ``url`` field's before-validator: raise what :func:`_move_secrets` found."""
    if isinstance(value, _RefusedUrl):
        raise ValueError(value.reason)
    return value


def _move_secrets(values: Any, query_fields: dict[str, str], secret_fields: tuple[str, ...]) -> Any:
    """Before validation: a password in ``url`` moves to the ``password`` field, and each
    secret query option to its field (``query_fields``: lower-case option name -> field).

    Secret fields given as ``str`` are wrapped first, so that no later error shows them. A
    secret query option with no field is refused (it would stay in plain text), and so is
    a secret given both in the url and in its field.
    """
    if not isinstance(values, dict):
        return values
    values = {
        k: SecretStr(v) if k in secret_fields and isinstance(v, str) else v
        for k, v in values.items()
    }
    if not isinstance(values.get("url"), str):
        return values
    url, password = split_credentials(values["url"])
    moved: dict[str, SecretStr] = {}
    if password is not None:
        moved["password"] = SecretStr(password)
    refused: list[str] = []
    head, question, query = url.partition("?")
    if question:
        kept = []
        for item in re.split("[&;]", query):
            name, eq, value = item.partition("=")
            if not (eq and _secret_name(name)):
                kept.append(item)
                continue
            field = query_fields.get(unquote_plus(name).lower())
            if field is None:
                refused.append(
                    f"the query option {unquote_plus(name)!r} holds a secret, which a block "
                    "must not keep in its plain url field: remove it"
                )
            else:
                moved[field] = SecretStr(unquote_plus(value))
        url = head + ("?" + "&".join(kept) if kept else "")
    refused += [
        f"{field} given twice, in the url and in the {field} field"
        for field in moved
        if values.get(field) is not None
    ]
    if refused:
        return {**values, "url": _refused(url, "; ".join(refused))}
    if not moved and url == values["url"]:
        return values
    return {**values, "url": url, **moved}


def _no_secret(url: str) -> str:
    # Only on assignment (construction moved them): the url field never keeps a secret.
    if split_credentials(url)[1] is not None:
        raise ValueError("holds a password: set the password field instead")
    if redact_url(url).partition("?")[2] != url.partition("?")[2]:
        raise ValueError("holds a secret query option: set its block field instead")
    return url


def check_scheme(url: str, schemes: tuple[str, ...], example: str) -> str:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in schemes:
        prefixes = " or ".join(s + "://" for s in schemes)
        raise ValueError(f"must start with {prefixes}, e.g. {example}")
    return url


_REDIS_SECRETS = ("password", "ssl_password")
_TLS_FIELDS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_password")
_MONGO_SECRETS = ("password", "tls_key_password")
#: A ValidationError of a block with secrets never echoes the input (it may hold one).
_NO_INPUT_IN_ERRORS = ConfigDict(validate_assignment=True, hide_input_in_errors=True)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


class RedisMemory(MemoryBlock):
    """A memory in Redis: shared by every worker, native TTL, one round trip per batch."""

    model_config = _NO_INPUT_IN_ERRORS
    _block_type_name: ClassVar[str] = "Redis Memory"
    _description: ClassVar[str] = (
        "A prefect-memory store in Redis: namespaced entries with tags, TTLs the server "
        "enforces and access metadata. Also a result storage whose ttl expires cached results."
    )
    _code_example: ClassVar[str] = """
```python
from prefect import flow, task
from prefect.cache_policies import INPUTS
from prefect_memory.blocks import RedisMemory

memory = RedisMemory.load("BLOCK_NAME")
memory.set("session:42", {"user": 7}, ttl=1800, tags=["user:7"])
memory.get("session:42")
memory.invalidate_tags("user:7")

@task(cache_policy=INPUTS, result_storage=memory)  # the loaded block, not a slug string
def features(day: str):
    return {"day": day}
```
"""

    url: str = Field(
        default="redis://localhost:6379/0",
        description=(
            "Redis URL: redis://host:port/db, or rediss:// for TLS; a password in it moves "
            "to the password field."
        ),
    )
    password: SecretStr | None = Field(default=None, description="Password of the Redis server.")
    timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to wait for a connection or a reply before Redis counts as down.",
    )
    key_prefix: str = Field(
        default="pm",
        description="First part of every Redis key, to share one database between applications.",
    )

    ssl_ca_certs: str | None = Field(
        default=None,
        description=(
            "Path of the CA certificate(s) that signed the server's certificate (rediss:// "
            "only; empty: the system's CAs)."
        ),
    )
    ssl_certfile: str | None = Field(
        default=None,
        description="Path of the client certificate, for a server that checks clients.",
    )
    ssl_keyfile: str | None = Field(
        default=None, description="Path of the private key of the client certificate."
    )
    ssl_password: SecretStr | None = Field(
        default=None, description="Password of the client's private key, if it is encrypted."
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_out_of_url(cls, values: Any) -> Any:
        return _move_secrets(values, {"ssl_password": "ssl_password"}, _REDIS_SECRETS)

    @field_validator("url", mode="before")
    @classmethod
    def _refuse_url(cls, value: Any) -> Any:
        return _check_refused(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        value = _no_secret(check_scheme(value, ("redis", "rediss"), "redis://localhost:6379/0"))
        tls = [name for name in _TLS_FIELDS if info.data.get(name) is not None]  # assignment
        if tls and not value.lower().startswith("rediss://"):
            raise ValueError(f"{', '.join(tls)} need a rediss:// url")
        return value

    @field_validator(*_TLS_FIELDS)
    @classmethod
    def _tls_needs_rediss(cls, value: Any, info: ValidationInfo) -> Any:
        # A field check, not a model one: a model validator's error shows the raw input.
        url = info.data.get("url")
        if value is not None and isinstance(url, str) and not url.lower().startswith("rediss:"):
            raise ValueError("TLS options need a rediss:// url")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        bad = sorted(set(value) & _PREFIX_FORBIDDEN)
        if not value or bad:
            raise ValueError(
                f"must be non-empty, without braces, glob characters or spaces, got {value!r}"
            )
        return value

    def _memory_url(self) -> str:
        return self.url

    def _memory_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self.timeout, "key_prefix": self.key_prefix}
        if self.password is not None:
            options["password"] = self.password
        for name in _TLS_FIELDS:  # the key's password stays a SecretStr down to the socket
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options


class MongoMemory(MemoryBlock):
    """A memory in a MongoDB collection: one document per entry, TTL index, bulk writes."""

    model_config = _NO_INPUT_IN_ERRORS
    _block_type_name: ClassVar[str] = "MongoDB Memory"
    _description: ClassVar[str] = (
        "A prefect-memory store in a MongoDB collection: namespaced entries with tags, a TTL "
        "index that removes expired entries, and access metadata. Also a result storage."
    )
    _code_example: ClassVar[str] = """
```python
from prefect_memory.blocks import MongoMemory

memory = MongoMemory.load("BLOCK_NAME")
memory.set_many({"doc:1": {"score": 0.9}, "doc:2": {"score": 0.4}}, ttl=86400)
memory.get_many(["doc:1", "doc:2"])
memory.list_keys("doc:*")
```
"""

    url: str = Field(
        default="mongodb://localhost:27017/prefect_memory",
        description=(
            "MongoDB URL: mongodb://host:port/database or mongodb+srv://...; a password in "
            "it moves to the password field."
        ),
    )
    collection: str | None = Field(
        default=None,
        description="Collection of the entries (empty: the URL's collection, else prefect_memory).",
    )
    database: str | None = Field(
        default=None,
        description="Database of the collection (empty: the URL's, else prefect_memory).",
    )
    password: SecretStr | None = Field(default=None, description="Password of the MongoDB user.")
    tls_key_password: SecretStr | None = Field(
        default=None,
        description=(
            "Password of the encrypted client key of tlsCertificateKeyFile (given in the url "
            "as tlsCertificateKeyFilePassword, it moves here)."
        ),
    )
    timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to wait for the server or a reply before MongoDB counts as down.",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_out_of_url(cls, values: Any) -> Any:
        return _move_secrets(
            values, {"tlscertificatekeyfilepassword": "tls_key_password"}, _MONGO_SECRETS
        )

    @field_validator("url", mode="before")
    @classmethod
    def _refuse_url(cls, value: Any) -> Any:
        return _check_refused(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        example = "mongodb://localhost:27017/db"
        return _no_secret(check_scheme(value, ("mongodb", "mongodb+srv"), example))

    @field_validator("collection", "database")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "$" in value or "\x00" in value):
            raise ValueError(f"must be non-empty, without '$' or NUL, got {value!r}")
        return value

    def _memory_url(self) -> str:
        return self.url

    def _memory_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self.timeout}
        if self.collection is not None:
            options["collection"] = self.collection
        if self.database is not None:
            options["database"] = self.database
        if self.password is not None:
            options["password"] = self.password
        if self.tls_key_password is not None:
            key_password = _secret(self.tls_key_password)
            options["client_kwargs"] = {"tlsCertificateKeyFilePassword": key_password}
        return options


class S3Access(MemoryBlock, ABC):
    """The S3 fields of a block: ``url``, endpoint, credentials (``SecretStr``), timeout.

    ``ABC`` among the direct bases keeps Prefect from registering this class as a block type.
    Subclasses redeclare ``url`` with their own description and check.
    """

    model_config = _NO_INPUT_IN_ERRORS

    url: str = Field(default=..., description="Bucket and prefix: s3://bucket/prefix.")
    endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible server, e.g. http://minio:9000 (empty: AWS).",
    )
    aws_access_key_id: str | None = Field(
        default=None,
        description="Access key id (empty: the usual AWS credential chain).",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, description="Secret access key that goes with the access key id."
    )
    timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for a connection or a reply before S3 counts as down.",
    )

    @model_validator(mode="before")
    @classmethod
    def _wrap_secret(cls, values: Any) -> Any:
        # Wrapped first: a later error of another field never shows the secret.
        secret = values.get("aws_secret_access_key") if isinstance(values, dict) else None
        if isinstance(secret, str):
            return {**values, "aws_secret_access_key": SecretStr(secret)}
        return values

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            check_scheme(value, ("http", "https"), "http://127.0.0.1:9000")
        return value

    def _storage_options(self) -> dict[str, Any]:
        """The fsspec/s3fs options of these fields (the secret only leaves here)."""
        storage: dict[str, Any] = {}
        if self.aws_access_key_id is not None:
            storage["key"] = self.aws_access_key_id
        if self.aws_secret_access_key is not None:
            storage["secret"] = _secret(self.aws_secret_access_key)
        if self.endpoint_url is not None:
            storage["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return storage


def check_bucket_url(value: str) -> str:
    """Check an ``s3://bucket/prefix`` URL (a bucket name of at least 3 characters)."""
    check_scheme(value, ("s3",), "s3://my-bucket/memory")
    bucket = urlsplit(value).netloc
    if len(bucket) < 3:
        raise ValueError(f"names no bucket of at least 3 characters: {value!r}")
    return value


class S3Memory(S3Access):
    """A memory in an S3 bucket (or any S3-compatible server): one object per entry."""

    _block_type_name: ClassVar[str] = "S3 Memory"
    _description: ClassVar[str] = (
        "A prefect-memory store in an S3 bucket (AWS or any S3-compatible server): one object "
        "per entry with tags, TTLs and access metadata. Also a result storage for large results."
    )
    _code_example: ClassVar[str] = """
```python
from prefect_memory.blocks import S3Memory

memory = S3Memory.load("BLOCK_NAME")
memory.set("report:2024-06", {"rows": 1200, "status": "final"})
memory.info("report:2024-06").size
```
"""

    url: str = Field(
        default=...,
        description="Bucket and prefix of the entries: s3://bucket/prefix.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_bucket_url(value)

    def _memory_url(self) -> str:
        return self.url

    def _memory_options(self) -> dict[str, Any]:
        return {"storage_options": self._storage_options(), "timeout": self.timeout}

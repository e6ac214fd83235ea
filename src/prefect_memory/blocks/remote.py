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

from abc import ABC
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import MemoryBlock

_PREFIX_FORBIDDEN = frozenset("{}*?[]\\ \t\r\n")


def _split_password(url: str) -> tuple[str, str | None]:
    """Remove the password from a URL's user info; return the URL and the password."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, colon, password = userinfo.partition(":")
    if not colon:
        return url, None
    netloc = f"{user}@{hostport}" if user else hostport
    return urlunsplit(parts._replace(netloc=netloc)), unquote(password)


def _move_password(values: Any, schemes: tuple[str, ...]) -> Any:
    """Before validation: a password in ``url`` moves to the ``password`` field."""
    if not isinstance(values, dict) or not isinstance(values.get("url"), str):
        return values
    url, password = _split_password(values["url"])
    if password is None:
        return values
    if values.get("password") is not None:
        raise ValueError("password: given twice, in the url and in the password field")
    return {**values, "url": url, "password": SecretStr(password)}


def _no_password(url: str) -> str:
    if _split_password(url)[1] is not None:  # only on assignment: construction moved it
        raise ValueError("holds a password: set the password field instead")
    return url


def check_scheme(url: str, schemes: tuple[str, ...], example: str) -> str:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in schemes:
        prefixes = " or ".join(s + "://" for s in schemes)
        raise ValueError(f"must start with {prefixes}, e.g. {example}")
    return url


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


class RedisMemory(MemoryBlock):
    """A memory in Redis: shared by every worker, native TTL, one round trip per batch."""

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

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, values: Any) -> Any:
        return _move_password(values, ("redis", "rediss"))

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _no_password(check_scheme(value, ("redis", "rediss"), "redis://localhost:6379/0"))

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
        return options


class MongoMemory(MemoryBlock):
    """A memory in a MongoDB collection: one document per entry, TTL index, bulk writes."""

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
    timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to wait for the server or a reply before MongoDB counts as down.",
    )

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, values: Any) -> Any:
        return _move_password(values, ("mongodb", "mongodb+srv"))

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        example = "mongodb://localhost:27017/db"
        return _no_password(check_scheme(value, ("mongodb", "mongodb+srv"), example))

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
        return options


class S3Access(MemoryBlock, ABC):
    """The S3 fields of a block: ``url``, endpoint, credentials (``SecretStr``), timeout.

    ``ABC`` among the direct bases keeps Prefect from registering this class as a block type.
    Subclasses redeclare ``url`` with their own description and check.
    """

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

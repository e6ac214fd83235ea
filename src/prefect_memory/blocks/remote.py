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
from urllib.parse import urlsplit

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import ConfigError
from ..urls import redact_url, split_credentials  # noqa: F401 - importable from here too
from .base import MemoryBlock
from .clients import ClientCache, MongoClients, RedisClients, S3Clients
from .credentials import (
    _MONGO_SECRETS,
    _REDIS_SECRETS,
    _TLS_FIELDS,
    AwsCredentialsField,
    _check_refused,
    _move_secrets,
    _no_secret,
    _RefusedUrl,  # noqa: F401 - the old import path
    _secret,
    aws_storage_options,
    check_scheme,
    check_typed_field,
    compose_url,
    minio_as_aws,
    url_when_host,
)

_PREFIX_FORBIDDEN = frozenset("{}*?[]\\ \t\r\n")
#: A ValidationError of a block with secrets never echoes the input (it may hold one).
_NO_INPUT_IN_ERRORS = ConfigDict(validate_assignment=True, hide_input_in_errors=True)


class RedisMemory(MemoryBlock, RedisClients):
    """A memory in Redis: shared by every worker, native TTL, one round trip per batch.

    The server is given by ``url``, or by typed fields as prefect-redis's ``RedisDatabase``
    has them (``host``, ``port``, ``db``, ``username``, ``password``, ``ssl``): exactly one
    of ``url`` and ``host``. :meth:`get_client` and :meth:`get_async_client` hand out pooled
    redis-py clients of the same server.

    Example:
        >>> from prefect_memory.blocks import RedisMemory
        >>> block = RedisMemory(host="cache.local", port=6380, db=2, password="s3cret")
        >>> block.as_connection_params()["host"], block.as_connection_params()["db"]
        ('cache.local', 2)
        >>> RedisMemory(url="redis://cache.local:6380/2").as_connection_params()["port"]
        6380
    """

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
client = memory.get_client()  # a pooled redis-py client of the same server

@task(cache_policy=INPUTS, result_storage=memory)  # the loaded block, not a slug string
def features(day: str):
    return {"day": day}
```
"""

    url: str | None = Field(
        default="redis://localhost:6379/0",
        description=(
            "Redis URL: redis://host:port/db, or rediss:// for TLS; a password in it moves "
            "to the password field (empty: give host instead)."
        ),
    )
    host: str | None = Field(
        default=None,
        validate_default=True,
        description="Host of the Redis server, instead of a url (then give url empty).",
    )
    port: int | None = Field(
        default=None, gt=0, lt=65536, description="Port of the server, with host (empty: 6379)."
    )
    db: int | None = Field(default=None, ge=0, description="Database number, with host (empty: 0).")
    username: str | None = Field(
        default=None, description="ACL user name, with host (a url has it in the url)."
    )
    password: SecretStr | None = Field(default=None, description="Password of the Redis server.")
    ssl: bool = Field(
        default=False, description="Connect with TLS, with host (a url uses rediss:// instead)."
    )
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
            "or ssl only; empty: the system's CAs)."
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

    _clients: ClientCache = PrivateAttr(default_factory=ClientCache)

    @model_validator(mode="before")
    @classmethod
    def _secrets_out_of_url(cls, values: Any) -> Any:
        values = url_when_host(values)
        if isinstance(values, dict) and hasattr(values.get("username"), "get_secret_value"):
            values = {**values, "username": values["username"].get_secret_value()}
        return _move_secrets(values, {"ssl_password": "ssl_password"}, _REDIS_SECRETS)

    @field_validator("url", mode="before")
    @classmethod
    def _refuse_url(cls, value: Any) -> Any:
        return _check_refused(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if "host" in info.data and info.data["host"] is None:  # assignment
                raise ValueError("give the server's url or its host")
            return None
        value = _no_secret(check_scheme(value, ("redis", "rediss"), "redis://localhost:6379/0"))
        if info.data.get("host") is not None:  # assignment
            raise ValueError("give either url or host, not both (set host=None to use url)")
        tls = [name for name in _TLS_FIELDS if info.data.get(name) is not None]  # assignment
        if tls and not value.lower().startswith("rediss://"):
            raise ValueError(f"{', '.join(tls)} need a rediss:// url")
        return value

    @field_validator("host", "port", "db", "username", "ssl")
    @classmethod
    def _typed_or_url(cls, value: Any, info: ValidationInfo) -> Any:
        return check_typed_field(value, info, "ssl")

    @field_validator(*_TLS_FIELDS)
    @classmethod
    def _tls_needs_rediss(cls, value: Any, info: ValidationInfo) -> Any:
        # A field check, not a model one: a model validator's error shows the raw input.
        url = info.data.get("url")
        if value is None or "url" not in info.data:
            return value
        if url is None and not info.data.get("ssl"):
            raise ValueError("TLS options need ssl=True (or a rediss:// url)")
        if isinstance(url, str) and not url.lower().startswith("rediss:"):
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
        if self.url is not None:
            return self.url
        assert self.host is not None  # validated: one of url and host
        scheme = "rediss" if self.ssl else "redis"
        return compose_url(scheme, self.host, self.port or 6379, f"/{self.db or 0}")

    def _memory_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self.timeout, "key_prefix": self.key_prefix}
        if self.password is not None:
            options["password"] = self.password
        if self.username is not None:
            options["username"] = self.username
        for name in _TLS_FIELDS:  # the key's password stays a SecretStr down to the socket
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options

    def close(self) -> None:
        """Release the connections of the memory and of the clients it handed out."""
        super().close()
        self._clients.close()


class MongoMemory(MemoryBlock, MongoClients):
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

    url: str | None = Field(
        default="mongodb://localhost:27017/prefect_memory",
        description=(
            "MongoDB URL: mongodb://host:port/database or mongodb+srv://...; a password in "
            "it moves to the password field (empty: give host instead)."
        ),
    )
    host: str | None = Field(
        default=None,
        validate_default=True,
        description="Host of the MongoDB server, instead of a url (then give url empty).",
    )
    port: int | None = Field(
        default=None, gt=0, lt=65536, description="Port of the server, with host (empty: 27017)."
    )
    username: str | None = Field(
        default=None, description="User name, with host (a url has it in the url)."
    )
    tls: bool = Field(
        default=False, description="Connect with TLS, with host (a url says tls=true instead)."
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

    _clients: ClientCache = PrivateAttr(default_factory=ClientCache)

    @model_validator(mode="before")
    @classmethod
    def _secrets_out_of_url(cls, values: Any) -> Any:
        values = url_when_host(values)
        if isinstance(values, dict) and hasattr(values.get("username"), "get_secret_value"):
            values = {**values, "username": values["username"].get_secret_value()}
        return _move_secrets(
            values, {"tlscertificatekeyfilepassword": "tls_key_password"}, _MONGO_SECRETS
        )

    @field_validator("url", mode="before")
    @classmethod
    def _refuse_url(cls, value: Any) -> Any:
        return _check_refused(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if "host" in info.data and info.data["host"] is None:  # assignment
                raise ValueError("give the server's url or its host")
            return None
        if info.data.get("host") is not None:  # assignment
            raise ValueError("give either url or host, not both (set host=None to use url)")
        example = "mongodb://localhost:27017/db"
        return _no_secret(check_scheme(value, ("mongodb", "mongodb+srv"), example))

    @field_validator("host", "port", "username", "tls")
    @classmethod
    def _typed_or_url(cls, value: Any, info: ValidationInfo) -> Any:
        return check_typed_field(value, info, "tls")

    @field_validator("collection", "database")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "$" in value or "\x00" in value):
            raise ValueError(f"must be non-empty, without '$' or NUL, got {value!r}")
        return value

    def _memory_url(self) -> str:
        if self.url is not None:
            return self.url
        assert self.host is not None  # validated: one of url and host
        query = "tls=true" if self.tls else ""
        return compose_url("mongodb", self.host, self.port or 27017, "/", query)

    def _memory_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self.timeout}
        if self.username is not None:
            options["username"] = self.username
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

    def close(self) -> None:
        """Release the connections of the memory and of the clients it handed out."""
        super().close()
        self._clients.close()


class S3Access(MemoryBlock, S3Clients, ABC):
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
    credentials: AwsCredentialsField = Field(
        default=None,
        repr=False,  # prefect-aws keeps the session token as plain text
        description=(
            "A prefect-aws AwsCredentials block (key, secret, session token, profile, region, "
            "endpoint), instead of the access key fields; a MinIOCredentials block is taken "
            "as the AwsCredentials it stands for."
        ),
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
        if not isinstance(values, dict):
            return values
        secret = values.get("aws_secret_access_key")
        if isinstance(secret, str):
            values = {**values, "aws_secret_access_key": SecretStr(secret)}
        if "credentials" in values:  # a MinIOCredentials block: as the AwsCredentials it is
            values = {**values, "credentials": minio_as_aws(values["credentials"])}
        return values

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            check_scheme(value, ("http", "https"), "http://127.0.0.1:9000")
        return value

    @field_validator("aws_access_key_id", "aws_secret_access_key", "credentials")
    @classmethod
    def _keys_or_credentials(cls, value: Any, info: ValidationInfo) -> Any:
        keys = [k for k in ("aws_access_key_id", "aws_secret_access_key") if info.data.get(k)]
        if value is not None and (info.data.get("credentials") is not None or (
            info.field_name == "credentials" and keys
        )):  # fmt: skip
            raise ValueError(
                "give either a credentials block or aws_access_key_id/aws_secret_access_key, "
                "not both"
            )
        return value

    def _storage_options(self) -> dict[str, Any]:
        """The fsspec/s3fs options of these fields (the secret only leaves here).

        Raises:
            ConfigError: The credentials block cannot be used (see
                :func:`~prefect_memory.blocks.credentials.aws_storage_options`), or its
                endpoint differs from ``endpoint_url``.
        """
        if self.credentials is not None:
            storage = aws_storage_options(self.credentials)
            client = storage.setdefault("client_kwargs", {})
            endpoint = client.get("endpoint_url")
            if self.endpoint_url is not None and endpoint not in (None, self.endpoint_url):
                raise ConfigError(
                    f"endpoint_url {self.endpoint_url!r} differs from the credentials "
                    f"block's endpoint {endpoint!r}: give one of them"
                )
            if self.endpoint_url is not None:
                client["endpoint_url"] = self.endpoint_url
            return storage
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

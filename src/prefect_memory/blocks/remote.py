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

from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..urls import redact_url, split_credentials  # noqa: F401 - importable from here too
from .base import MemoryBlock
from .clients import ClientCache, MongoClients, RedisClients
from .credentials import (
    _MONGO_SECRETS,
    _REDIS_SECRETS,
    _TLS_FIELDS,
    _check_refused,
    _move_secrets,
    _no_secret,
    _RefusedUrl,  # noqa: F401 - the old import path
    _secret,
    check_scheme,
    check_typed_field,
    compose_url,
    url_when_host,
)
from .renamed import renamed_getattr

_PREFIX_FORBIDDEN = frozenset("{}*?[]\\ \t\r\n")
#: A ValidationError of a block with secrets never echoes the input (it may hold one).
_NO_INPUT_IN_ERRORS = ConfigDict(validate_assignment=True, hide_input_in_errors=True)


def _prefix_out_of_url(values: Any) -> Any:
    """Move ``?key_prefix=`` of a Redis URL into the ``key_prefix`` field (else the field's
    default would silently win over what the URL says); a different field value is refused."""
    if not isinstance(values, dict) or not isinstance(values.get("url"), str):
        return values
    head, question, query = values["url"].partition("?")
    if not question:
        return values
    pairs = parse_qsl(query, keep_blank_values=True)
    found = [v for k, v in pairs if k == "key_prefix"]
    if not found:
        return values
    given = values.get("key_prefix")
    if given is not None and given != found[-1]:
        raise ValueError(
            f"the url sets key_prefix={found[-1]!r} and the field key_prefix={given!r}: "
            "give one of them"
        )
    rest = urlencode([(k, v) for k, v in pairs if k != "key_prefix"])
    return {**values, "url": head + (f"?{rest}" if rest else ""), "key_prefix": found[-1]}


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
        values = _prefix_out_of_url(values)
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


class MongoDBMemory(MemoryBlock, MongoClients):
    """A memory in a MongoDB collection: one document per entry, TTL index, bulk writes."""

    model_config = _NO_INPUT_IN_ERRORS
    # Set, not derived from the class name: saved blocks and deployments name the slug.
    _block_type_name: ClassVar[str] = "MongoDB Memory"
    _block_type_slug: ClassVar[str] = "mongodb-memory"
    _description: ClassVar[str] = (
        "A prefect-memory store in a MongoDB collection: namespaced entries with tags, a TTL "
        "index that removes expired entries, and access metadata. Also a result storage."
    )
    _code_example: ClassVar[str] = """
```python
from prefect_memory.blocks import MongoDBMemory

memory = MongoDBMemory.load("BLOCK_NAME")
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
    claim_timeout: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        strict=True,  # a number: true or "30" is refused, as the store and a config refuse it
        description=(
            "Seconds a tier migration's claim on a document holds before another migration "
            "may take it over (the entries of a migration killed mid-batch move again after "
            "it); keep it above the longest stall of a live migration."
        ),
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
        options: dict[str, Any] = {"timeout": self.timeout, "claim_timeout": self.claim_timeout}
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


# S3 blocks live in blocks/s3.py; importable from here too (old import path, pickles).
from .s3 import S3Access, S3Memory, check_bucket_url  # noqa: E402,F401

#: Former name (deprecated), kept for imports and pickles made under it.
__getattr__ = renamed_getattr(__name__, {"MongoMemory": "MongoDBMemory"}, globals())

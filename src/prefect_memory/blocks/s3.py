"""The S3 memory block and the S3 fields it shares with the Parquet archive block.

:class:`S3Access` holds the fields every S3 block has (the bucket URL, an endpoint for
S3-compatible servers, an access key with its ``SecretStr`` secret or a prefect-aws
credentials block, a timeout); :class:`S3Memory` is the memory of one object per entry.

Example:
    >>> from prefect_memory.blocks import S3Memory
    >>> block = S3Memory(url="s3://lake/memory", aws_access_key_id="AK",
    ...                  aws_secret_access_key="s3cret", endpoint_url="http://minio:9000")
    >>> sorted(block._storage_options())
    ['client_kwargs', 'key', 'secret']
    >>> "s3cret" in repr(block)
    False
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from ..errors import ConfigError
from .base import MemoryBlock
from .clients import S3Clients
from .credentials import (
    AwsCredentialsField,
    _secret,
    aws_storage_options,
    check_scheme,
    minio_as_aws,
)

#: A ValidationError of a block with secrets never echoes the input (it may hold one).
_NO_INPUT_IN_ERRORS = ConfigDict(validate_assignment=True, hide_input_in_errors=True)


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

"""Credentials and connections of the server blocks (Redis, MongoDB, S3).

Three jobs, shared by :mod:`~prefect_memory.blocks.remote` and the archive block:

- secrets out of URLs: a password (or a secret query option) given in a URL moves to its
  ``SecretStr`` field before validation, so no field, ``repr`` or error ever shows it;
- typed fields into URLs: ``host``/``port``/``db``/``username``/TLS flag, exclusive with
  ``url`` (prefect-redis's ``RedisDatabase`` shape), checked field by field;
- prefect-aws ``AwsCredentials``/``MinIOCredentials`` blocks turned into s3fs options.

The driver clients a block hands out are in :mod:`~prefect_memory.blocks.clients`.

Example:
    >>> moved = _move_secrets({"url": "redis://:s3cret@cache.local:6380/2"}, {}, ("password",))
    >>> moved["url"], moved["password"]
    ('redis://cache.local:6380/2', SecretStr('**********'))
    >>> compose_url("redis", "::1", 6379, "/0")
    'redis://[::1]:6379/0'
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus, urlunsplit

from pydantic import SecretStr, ValidationInfo

from ..errors import ConfigError
from ..urls import _secret_name, redact_url, split_credentials

try:  # prefect-aws is optional: without it, S3 blocks take their own key fields only
    from prefect_aws import AwsCredentials, MinIOCredentials

    #: The type of the ``credentials`` field of the S3 blocks.
    # One block type, not a union: Prefect's server fails to read the schema of a block
    # whose union of parts (HybridMemoryBlock's) holds a block with a union field (500 error).
    AwsCredentialsField: Any = AwsCredentials | None
    HAVE_PREFECT_AWS = True
except ImportError:  # pragma: no cover - prefect-aws is in the test requirements
    AwsCredentials = MinIOCredentials = None  # type: ignore[assignment,misc]
    AwsCredentialsField = dict[str, Any] | None  # a saved reference: refused on use
    HAVE_PREFECT_AWS = False

_REDIS_SECRETS = ("password", "ssl_password")
_TLS_FIELDS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_password")
_MONGO_SECRETS = ("password", "tls_key_password")
_HOST_FORBIDDEN = re.compile(r"[\s/@?#,]")


# -- secrets out of URLs -------------------------------------------------------------------------
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
    """Raise ``ValueError`` unless ``url`` starts with one of ``schemes``."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in schemes:
        prefixes = " or ".join(s + "://" for s in schemes)
        raise ValueError(f"must start with {prefixes}, e.g. {example}")
    return url


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


# -- typed fields or a URL -----------------------------------------------------------------------
def url_when_host(values: Any) -> Any:
    """Before validation: a block given ``host`` and no ``url`` has no url (not the default)."""
    if isinstance(values, dict) and values.get("host") is not None and "url" not in values:
        return {**values, "url": None}
    return values


def check_typed_field(value: Any, info: ValidationInfo, tls_flag: str) -> Any:
    """Check one typed connection field against ``url``: exactly one of url and host.

    ``port``, ``db``, ``username`` and a true TLS flag go with ``host``; a block with a url
    has them in the url. Run on construction (``url`` is declared first) and on assignment.
    """
    if "url" not in info.data:  # the url itself was refused: that error is enough
        return value
    url, name = info.data["url"], info.field_name
    if name == "host":
        if value is None and url is None:
            raise ValueError("give the server's url or its host")
        if value is not None and url is not None:
            raise ValueError("give either url or host, not both (set url=None to use host)")
        if value is not None and (not value or _HOST_FORBIDDEN.search(value)):
            raise ValueError("must be a host name or an IP address, without scheme or port")
    elif url is not None and value not in (None, False):
        raise ValueError(f"goes with host; with a url, put {name} in the url instead")
    if name == tls_flag and value is False and url is None:
        tls = [f for f in _TLS_FIELDS if info.data.get(f) is not None]  # on assignment
        if tls:
            raise ValueError(f"{', '.join(tls)} need {tls_flag}=True")
    return value


def compose_url(scheme: str, host: str, port: int, path: str = "", query: str = "") -> str:
    """The URL of typed fields (an IPv6 host in brackets)."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit((scheme, netloc, path, query, ""))


# -- prefect-aws credentials blocks --------------------------------------------------------------
def minio_as_aws(value: Any) -> Any:
    """A ``MinIOCredentials`` block as the ``AwsCredentials`` it stands for (as prefect-aws's
    ``get_s3_client`` aliases them); anything else unchanged."""
    if not HAVE_PREFECT_AWS or not isinstance(value, MinIOCredentials):
        return value
    return AwsCredentials(
        aws_access_key_id=value.minio_root_user,
        aws_secret_access_key=value.minio_root_password,
        region_name=value.region_name,
        aws_client_parameters=value.aws_client_parameters,
    )


def aws_storage_options(credentials: Any) -> dict[str, Any]:
    """The s3fs options of a prefect-aws ``AwsCredentials`` or ``MinIOCredentials`` block.

    Key, secret, session token, profile, region and the client parameters (endpoint,
    ``verify``, ``use_ssl``, botocore ``config``) are carried over.

    Raises:
        ConfigError: prefect-aws is missing, or the block asks for a role to assume (s3fs
            cannot renew such credentials: give the role's profile instead).
    """
    if not HAVE_PREFECT_AWS or not isinstance(credentials, (AwsCredentials, MinIOCredentials)):
        raise ConfigError(
            "credentials holds a prefect-aws credentials block: install prefect-aws "
            "(pip install prefect-aws) to use it"
        )
    storage: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if isinstance(credentials, MinIOCredentials):
        storage["key"] = credentials.minio_root_user
        storage["secret"] = _secret(credentials.minio_root_password)
    else:
        if credentials.assume_role_arn:
            raise ConfigError(
                "S3 memory blocks cannot assume a role (s3fs would not renew its credentials): "
                "use an AWS profile that assumes it (profile_name) instead"
            )
        if credentials.aws_access_key_id:
            storage["key"] = credentials.aws_access_key_id
        if credentials.aws_secret_access_key is not None:
            storage["secret"] = _secret(credentials.aws_secret_access_key)
        token = credentials.aws_session_token
        if token:
            plain = token.get_secret_value() if hasattr(token, "get_secret_value") else token
            storage["token"] = plain
        if credentials.profile_name:
            storage["profile"] = credentials.profile_name
    if credentials.region_name:
        client["region_name"] = credentials.region_name
    params = credentials.aws_client_parameters
    if params.endpoint_url:
        client["endpoint_url"] = params.endpoint_url
    if params.verify_cert_path:
        client["verify"] = str(params.verify_cert_path)
    elif params.verify is not None:
        client["verify"] = params.verify if isinstance(params.verify, bool) else str(params.verify)
    if params.use_ssl is False:
        storage["use_ssl"] = False
    if params.config:
        storage["config_kwargs"] = dict(params.config)
    if client:
        storage["client_kwargs"] = client
    return storage


__all__ = [
    "AwsCredentialsField",
    "aws_storage_options",
    "check_scheme",
    "check_typed_field",
    "compose_url",
    "minio_as_aws",
    "url_when_host",
]

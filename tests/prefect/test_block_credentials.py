"""Typed connection fields and prefect-aws credentials blocks, against real servers.

Redis and MongoDB blocks take a url or typed fields (prefect-redis's ``RedisDatabase``
shape: host, port, db, username, password as ``SecretStr``, a TLS flag), exactly one of
url and host. S3 blocks take a prefect-aws ``AwsCredentials`` or ``MinIOCredentials``
block. Secrets never show in ``repr``, dumps or errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect_aws import AwsCredentials, MinIOCredentials
from prefect_aws.client_parameters import AwsClientParameters
from pydantic import SecretStr, ValidationError

import prefect_memory as pm
from prefect_memory.blocks import MongoDBMemory, RedisMemory, S3Memory
from servers import MongoWireServer, RedisServer, TlsRedisServer

ADMIN_PASSWORD = "adm1n-Pw/x"
APP_PASSWORD = "app-S3cret?#"
KEY_PASSWORD = "k3y-pass"
S3_BUCKET = "pm-creds"


def _start(server: Any) -> Any:
    try:
        return server.start()
    except Exception as exc:  # pragma: no cover - the environment lacks the server
        pytest.fail(f"{server.name} could not start: {exc}", pytrace=False)


def round_trip(block: Any) -> None:
    key = f"k:{uuid.uuid4().hex[:6]}"
    block.set(key, {"n": 1}, tags=["t"])
    assert block.get(key) == {"n": 1}
    assert block.invalidate_tags("t") == 1
    assert block.get(key) is None


def no_secret(block: Any, *secrets: str) -> None:
    for text in (repr(block), str(block), block.model_dump_json()):
        for secret in secrets:
            assert secret not in text


# -- Redis ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    server = _start(RedisServer(password=ADMIN_PASSWORD))
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "app", "reset", "on", ">" + APP_PASSWORD, "~*", "+@all")
    admin.close()
    yield server
    server.stop()


def test_redis_typed_fields_with_an_acl_user(acl_server: RedisServer) -> None:
    block = RedisMemory(
        host="127.0.0.1",
        port=acl_server.port,
        db=3,
        username=SecretStr("app"),  # prefect-redis keeps the user name a SecretStr: accepted
        password=APP_PASSWORD,
        key_prefix="typed",
    )
    assert (block.url, block.username, block.db) == (None, "app", 3)
    no_secret(block, APP_PASSWORD)
    round_trip(block)
    assert block.get_client().execute_command("ACL", "WHOAMI") == b"app"
    restored = RedisMemory.model_validate(block.model_dump(context={"include_secrets": True}))
    assert restored == block and restored.host == "127.0.0.1"


def test_redis_wrong_password_is_refused_without_showing_it(acl_server: RedisServer) -> None:
    wrong = "not-" + APP_PASSWORD
    block = RedisMemory(host="127.0.0.1", port=acl_server.port, username="app", password=wrong)
    with pytest.raises(pm.BackendPermissionError) as caught:
        block.get("k")
    assert wrong not in str(caught.value) and APP_PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": "redis://h:1/0", "host": "h"}, "host", "either url or host"),
        ({"url": None}, "host", "url or its host"),
        ({"url": "redis://h:1/0", "port": 2}, "port", "goes with host"),
        ({"url": "redis://h:1/0", "ssl": True}, "ssl", "goes with host"),
        ({"host": "h/0"}, "host", "host name"),
        ({"host": "h", "ssl_ca_certs": "ca.pem"}, "ssl_ca_certs", "ssl=True"),
        ({"host": "h", "port": 70000}, "port", "less than"),
    ],
)
def test_redis_url_or_host_exactly(fields: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        RedisMemory(password="pw-never-shown", **fields)
    assert field in str(caught.value) and "pw-never-shown" not in str(caught.value)


def test_redis_assignment_keeps_url_and_host_exclusive() -> None:
    block = RedisMemory(host="h")
    with pytest.raises(ValidationError, match="either url or host"):
        block.url = "redis://h:1/0"
    block.host = "other"
    assert block._memory_url() == "redis://other:6379/0"
    by_url = RedisMemory()  # the default url: localhost
    with pytest.raises(ValidationError, match="either url or host"):
        by_url.host = "h"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsRedisServer]:
    server = _start(TlsRedisServer(key_password=KEY_PASSWORD))
    yield server
    server.stop()


def test_redis_typed_fields_with_tls(tls_server: TlsRedisServer) -> None:
    options = tls_server.ssl_options()
    block = RedisMemory(
        host="127.0.0.1", port=tls_server.port, ssl=True, key_prefix="tls", **options
    )
    no_secret(block, KEY_PASSWORD)
    round_trip(block)
    assert block.as_connection_params()["ssl"] is True
    assert block.get_client().ping() is True
    plain = RedisMemory(host="127.0.0.1", port=tls_server.port, timeout=2)  # TLS off: refused
    with pytest.raises(pm.BackendError):
        plain.get("k")


# -- MongoDB -------------------------------------------------------------------------------
def test_mongo_typed_fields(mongo_server: MongoWireServer) -> None:
    # The test wire server does not advertise its SCRAM mechanisms (a real mongod does), so
    # a user of a host-mode block cannot log in to it: users are tested with urls elsewhere.
    block = MongoDBMemory(
        host="127.0.0.1",
        port=mongo_server.port,
        password="pw-never-shown",
        database=mongo_server.database,
        collection=f"c{uuid.uuid4().hex[:6]}",
    )
    assert block.url is None
    no_secret(block, "pw-never-shown")
    block.password = None
    round_trip(block)
    assert block.get_client()[mongo_server.database].command("ping")["ok"] == 1


def test_mongo_url_or_host_exactly() -> None:
    with pytest.raises(ValidationError, match="either url or host"):
        MongoDBMemory(url="mongodb://h:1/db", host="h")
    with pytest.raises(ValidationError, match="goes with host"):
        MongoDBMemory(url="mongodb://h:1/db", tls=True)
    block = MongoDBMemory(host="db.local", port=27018, tls=True)
    assert block._memory_url() == "mongodb://db.local:27018/?tls=true"


# -- S3 ------------------------------------------------------------------------------------
@pytest.fixture
def bucket(s3_server: Any) -> str:
    return s3_server.make_bucket(S3_BUCKET)


def test_s3_with_a_minio_credentials_block(s3_server: Any, bucket: str) -> None:
    creds = MinIOCredentials(
        minio_root_user=s3_server.key,
        minio_root_password=s3_server.secret,
        aws_client_parameters=AwsClientParameters(endpoint_url=s3_server.endpoint_url),
    )
    block = S3Memory(url=f"s3://{bucket}/minio-{uuid.uuid4().hex[:6]}", credentials=creds)
    no_secret(block, s3_server.secret)
    round_trip(block)


def test_s3_with_aws_credentials_saved_and_loaded(s3_server: Any, bucket: str, unique: str) -> None:
    creds = AwsCredentials(
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=s3_server.endpoint_url),
    )
    creds.save(f"creds-{unique}")
    block = S3Memory(
        url=f"s3://{bucket}/aws-{unique}", credentials=AwsCredentials.load(f"creds-{unique}")
    )
    block.save(f"s3-{unique}")
    loaded = S3Memory.load(f"s3-{unique}")
    assert isinstance(loaded.credentials, AwsCredentials)
    assert loaded.credentials.region_name == "us-east-1"
    round_trip(loaded)
    params = loaded.as_connection_params()
    assert params["client_kwargs"] == {
        "region_name": "us-east-1",
        "endpoint_url": s3_server.endpoint_url,
    }


def test_s3_with_a_profile(s3_server: Any, bucket: str, tmp_path: Any, monkeypatch: Any) -> None:
    shared = tmp_path / "credentials"
    shared.write_text(
        f"[pm-test]\naws_access_key_id = {s3_server.key}\n"
        f"aws_secret_access_key = {s3_server.secret}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    creds = AwsCredentials(profile_name="pm-test")
    block = S3Memory(
        url=f"s3://{bucket}/profile-{uuid.uuid4().hex[:6]}",
        endpoint_url=s3_server.endpoint_url,
        credentials=creds,
    )
    assert block.as_connection_params()["profile"] == "pm-test"
    round_trip(block)


def test_s3_wrong_secret_in_a_credentials_block(s3_server: Any, bucket: str) -> None:
    creds = MinIOCredentials(
        minio_root_user=s3_server.key,
        minio_root_password="wrong-" + s3_server.secret,
        aws_client_parameters=AwsClientParameters(endpoint_url=s3_server.endpoint_url),
    )
    block = S3Memory(url=f"s3://{bucket}/wrong", credentials=creds, timeout=5)
    with pytest.raises(pm.BackendPermissionError) as caught:
        block.set("k", 1)
    assert s3_server.secret not in str(caught.value)


def test_s3_session_token_region_and_refusals() -> None:
    creds = AwsCredentials(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret-example",
        aws_session_token="token-example",
        region_name="eu-west-3",
    )
    block = S3Memory(url="s3://bucket/p", credentials=creds)
    params = block.as_connection_params()
    assert (params["token"], params["client_kwargs"]["region_name"]) == (
        "token-example",
        "eu-west-3",
    )
    no_secret_repr = repr(block)
    assert "token-example" not in no_secret_repr and "secret-example" not in no_secret_repr
    with pytest.raises(ValidationError, match="either a credentials block"):
        S3Memory(url="s3://bucket/p", aws_access_key_id="AK", credentials=creds)
    role = S3Memory(url="s3://bucket/p", credentials=AwsCredentials(assume_role_arn="arn:x"))
    with pytest.raises(pm.ConfigError, match="assume a role"):
        role.as_connection_params()
    mismatch = S3Memory(
        url="s3://bucket/p",
        endpoint_url="http://a:1",
        credentials=AwsCredentials(
            aws_client_parameters=AwsClientParameters(endpoint_url="http://b:2")
        ),
    )
    with pytest.raises(pm.ConfigError, match="differs"):
        mismatch.as_connection_params()


def test_a_key_prefix_in_the_redis_url_is_the_blocks_key_prefix(redis_server: Any) -> None:
    """``?key_prefix=`` in a URL (a config's ``connection``) is applied, not overridden by
    the field's default: blocks and ``pm.from_config`` read the same keys."""
    import pydantic

    import prefect_memory as pm
    from prefect_memory.blocks import RedisMemory, blocks_from_config

    url = f"{redis_server.url}?key_prefix=shopkp&timeout=5"
    config = {"memory": {"backend": "redis", "connection": url, "namespace": "carts"}}
    (_name, block), = blocks_from_config(config, name_prefix="kp").blocks  # fmt: skip
    assert block.key_prefix == "shopkp" and "key_prefix" not in block.url
    block.set("cart:1", {"items": 2})
    assert pm.from_config(config).get("cart:1") == {"items": 2}  # same keys both ways
    assert RedisMemory(url=url, key_prefix="shopkp").key_prefix == "shopkp"
    with pytest.raises(pydantic.ValidationError, match="give one of them"):
        RedisMemory(url=url, key_prefix="other")

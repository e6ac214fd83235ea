"""Secrets live only in secret fields (issue 15, item 5).

Generated passwords hold ``/``, ``?``, ``#``, ``@``, ``:`` and ``%``. For each of them, and
for one password holding all of them, no part of the secret reaches: a block's ``url``
field, its saved block document (read back raw from a Prefect API), a validation or
connection error, or the output of ``prefect-memory info``; and the blocks still connect
with it to a real ``redis-server`` started with ``requirepass`` (plus ACL users) and to
the MongoDB wire server with SCRAM users.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

import prefect_memory as pm
from prefect_memory.blocks import MongoDBMemory, RedisMemory, S3Memory
from prefect_memory.blocks.remote import redact_url, split_credentials
from prefect_memory.cli import _safe_url, _split_credentials, app
from prefect_memory.errors import BackendUnavailable, PrefectMemoryError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import MongoWireServer, RedisServer, ServerError

SPECIALS = "/?#@:%"
#: One password per special character, then one with all of them.
SECRETS = [f"Qz7{ch}Xk9{ch}Wv3" for ch in SPECIALS] + ["Qz7/Xk9?Wv3#Jp5@Mn2:Rt8%Ly4"]
IDS = ["slash", "question", "hash", "at", "colon", "percent", "all"]
ADMIN = "Adm1n/?#@:%pw"


def fragments(secret: str) -> list[str]:
    """The parts of ``secret`` between its special characters (each 3 characters)."""
    return [part for part in re.split("[/?#@:%]", secret) if part]


def assert_no_part(text: str, secret: str) -> None:
    leaked = [part for part in fragments(secret) if part in text]
    assert not leaked, f"parts {leaked} of the secret in: {text[:500]}"


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


# -- servers (one per module) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_auth() -> Iterator[RedisServer]:
    """requirepass ADMIN, and an ACL user ``u<i>`` per secret with that secret."""
    server = RedisServer(password=ADMIN)
    try:
        server.start()
    except ServerError as exc:
        pytest.fail(f"redis-server could not start: {exc}", pytrace=False)
    admin = server.client()
    for i, secret in enumerate(SECRETS):
        admin.execute_command("ACL", "SETUSER", f"u{i}", "on", f">{secret}", "~*", "+@all")
    admin.close()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mongo_auth() -> Iterator[MongoWireServer]:
    server = MongoWireServer(auth_users={f"u{i}": s for i, s in enumerate(SECRETS)})
    try:
        server.start()
    except ServerError as exc:
        pytest.fail(f"MongoDB wire server could not start: {exc}", pytrace=False)
    yield server
    server.stop()


def mongo_url(server: MongoWireServer, user: str, secret: str) -> str:
    base = server.url.replace("mongodb://", f"mongodb://{user}:{secret}@", 1)
    return base + "&authSource=admin&authMechanism=SCRAM-SHA-256"


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API of this module (its own PREFECT_HOME)."""
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="pm-secrets-home-"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


# -- the URL reading ------------------------------------------------------------------------
@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
@pytest.mark.parametrize("user", ["", "app.user"])
def test_a_raw_password_is_split_out_whole(secret: str, user: str) -> None:
    for url in (
        f"redis://{user}:{secret}@cache.internal:6380/2",
        f"mongodb://{user}:{secret}@db-1:27017,db-2:27017/app?replicaSet=rs0&w=1",
    ):
        clean, password = split_credentials(url)
        assert password == secret
        assert_no_part(clean, secret)
        assert clean.endswith(url.rpartition("@")[2]) and (user + "@" in clean) == bool(user)
        assert _split_credentials(url) == (clean, password)  # the CLI reads URLs the same
        shown = redact_url(url)
        assert_no_part(shown, secret)
        assert ":***@" in shown and _safe_url(url) == shown


def test_url_reading_edge_cases() -> None:
    cases = {
        "redis://cache:6379/0": ("redis://cache:6379/0", None),
        "redis://alice@cache:6379/0": ("redis://alice@cache:6379/0", None),
        "redis://:p%40ss%2Fw@cache:6379/0": ("redis://cache:6379/0", "p@ss/w"),
        "mongodb://u:p@[::1]:27017/db": ("mongodb://u@[::1]:27017/db", "p"),
        "mongodb://h/db?appName=a%40b": ("mongodb://h/db?appName=a%40b", None),
        "redis://h/0?key_prefix=a@b/c": ("redis://h/0?key_prefix=a@b/c", None),
        "s3://bucket/prefix": ("s3://bucket/prefix", None),
        "not a url": ("not a url", None),
    }
    for url, expected in cases.items():
        assert split_credentials(url) == expected, url
        assert _split_credentials(url) == expected, url
    query = "mongodb://h/db?tlsCertificateKeyFilePassword=Qz7Xk9&w=1&authToken=Wv3Jp5;x=1"
    assert redact_url(query) == _safe_url(query)
    assert redact_url(query).count("***") == 2 and "w=1" in redact_url(query)


# -- blocks: the fields and the document ----------------------------------------------------
def redis_block(secret: str, **fields: Any) -> RedisMemory:
    return RedisMemory(url=f"redis://app:{secret}@127.0.0.1:1/0", **fields)


def mongo_block(secret: str, **fields: Any) -> MongoDBMemory:
    return MongoDBMemory(url=f"mongodb://app:{secret}@127.0.0.1:1/db?w=1", **fields)


def document_text(block: Any) -> str:
    doc = block._to_block_document(
        name="doc", block_schema_id=uuid.uuid4(), block_type_id=uuid.uuid4()
    )
    return json.dumps(doc.model_dump(mode="json"), default=str)


@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
def test_blocks_keep_the_password_only_in_the_secret_field(secret: str) -> None:
    for block in (redis_block(secret), mongo_block(secret)):
        assert block.password is not None and block.password.get_secret_value() == secret
        assert block.url.startswith(("redis://app@127.0.0.1:1/0", "mongodb://app@127.0.0.1:1/db"))
        for text in (block.url, repr(block), block.model_dump_json(), document_text(block)):
            assert_no_part(text, secret)


def test_secret_query_options_move_to_their_fields() -> None:
    redis = RedisMemory(url="rediss://h:6380/0?ssl_password=Qz7%2FXk9&ssl_ca_certs=/ca.pem")
    assert redis.ssl_password == SecretStr("Qz7/Xk9") and "ssl_ca_certs=/ca.pem" in redis.url
    mongo = MongoDBMemory(url="mongodb://h/db?tls=true&tlsCertificateKeyFilePassword=Qz7Xk9")
    assert mongo.tls_key_password.get_secret_value() == "Qz7Xk9"
    assert mongo.url == "mongodb://h/db?tls=true"
    assert mongo._memory_options()["client_kwargs"] == {"tlsCertificateKeyFilePassword": "Qz7Xk9"}
    with pytest.raises(ValidationError, match="authToken") as caught:
        MongoDBMemory(url="mongodb://h/db?authToken=Qz7Xk9")
    assert_no_part(str(caught.value), "Qz7Xk9")


@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
def test_validation_errors_never_echo_the_secret(secret: str) -> None:
    attempts = [
        lambda: redis_block(secret, timeout=-1),  # another field is wrong
        lambda: redis_block(secret, password="other"),  # given twice
        lambda: redis_block(secret, colour="blue"),  # unknown field
        lambda: RedisMemory(url=f"rediz://:{secret}@h:1/0"),  # wrong scheme
        lambda: redis_block(secret, ssl_ca_certs="/ca.pem"),  # TLS field on redis://
        lambda: mongo_block(secret, collection="a$b"),
        lambda: S3Memory(url="s3://b", aws_secret_access_key=secret),  # bucket too short
        lambda: S3Memory(url="s3://bucket/x", aws_secret_access_key=secret, colour="blue"),
    ]
    for attempt in attempts:
        with pytest.raises(ValidationError) as caught:
            attempt()
        assert_no_part(str(caught.value), secret)
        assert_no_part(repr(caught.value.errors()), secret)
    block = redis_block(SECRETS[0])
    with pytest.raises(ValidationError, match="password field") as caught:
        block.url = f"redis://:{secret}@h:1/0"
    assert_no_part(str(caught.value), secret)


@pytest.mark.parametrize("secret", SECRETS, ids=IDS)
def test_connection_errors_never_echo_the_secret(secret: str) -> None:
    for block in (redis_block(secret, timeout=0.5), mongo_block(secret, timeout=0.5)):
        with pytest.raises(BackendUnavailable) as caught:
            block.get("k")
        assert_no_part(str(caught.value), secret)
        assert_no_part(repr(block.memory.backend), secret)


@pytest.mark.parametrize("secret", ["Qz7/Xk9?Wv3"])
def test_open_memory_with_a_raw_password_never_echoes_it(secret: str) -> None:
    for url in (f"redis://:{secret}@127.0.0.1:1/0", f"mongodb://u:{secret}@127.0.0.1:1/db"):
        try:
            pm.open_memory(url, timeout=0.5).get("k")
        except PrefectMemoryError as err:
            assert isinstance(err, BackendUnavailable), err  # the URL was read right
            assert_no_part(str(err), secret)


# -- real servers with passwords ------------------------------------------------------------
@pytest.mark.parametrize("index", range(len(SECRETS)), ids=IDS)
def test_blocks_connect_with_each_special_password(
    index: int, redis_auth: RedisServer, mongo_auth: MongoWireServer
) -> None:
    secret = SECRETS[index]
    redis = RedisMemory(url=f"redis://u{index}:{secret}@127.0.0.1:{redis_auth.port}/0")
    redis.set("k", {"i": index})
    assert redis.get("k") == {"i": index}
    mongo = MongoDBMemory(url=mongo_url(mongo_auth, f"u{index}", secret), collection=f"c{index}")
    mongo.set("k", [index])
    assert mongo.get("k") == [index]
    for block in (redis, mongo):
        assert_no_part(block.url + repr(block.memory.backend), secret)


def test_default_user_with_requirepass(redis_auth: RedisServer) -> None:
    block = RedisMemory(url=f"redis://:{ADMIN}@127.0.0.1:{redis_auth.port}/0")
    block.set("admin", 1)
    assert block.get("admin") == 1 and block.url == f"redis://127.0.0.1:{redis_auth.port}/0"


def test_saved_block_documents_hold_no_secret(
    prefect_api: None, redis_auth: RedisServer, mongo_auth: MongoWireServer
) -> None:
    from prefect.client.orchestration import get_client

    saved = []
    for index, secret in enumerate(SECRETS):
        name = f"secret-{index}-{uuid.uuid4().hex[:6]}"
        redis = RedisMemory(url=f"redis://u{index}:{secret}@127.0.0.1:{redis_auth.port}/0")
        redis.save(name)
        mongo = MongoDBMemory(url=mongo_url(mongo_auth, f"u{index}", secret), collection="saved")
        mongo.save(name)
        saved += [(RedisMemory, name, secret), (MongoDBMemory, name, secret)]
    with get_client(sync_client=True) as client:
        for cls, name, secret in saved:
            slug = cls.get_block_type_slug()
            raw = client.read_block_document_by_name(name, slug, include_secrets=False)
            assert_no_part(json.dumps(raw.model_dump(mode="json"), default=str), secret)
            full = client.read_block_document_by_name(name, slug, include_secrets=True)
            assert full.data["password"] == secret  # the secret field, and nothing else
            assert_no_part(
                json.dumps({k: v for k, v in full.data.items() if k != "password"}), secret
            )
    # Loaded back, the block still gets in.
    cls, name, secret = saved[-2]
    loaded = cls.load(name)
    loaded.set("loaded", 1)
    assert loaded.get("loaded") == 1


# -- the command line -----------------------------------------------------------------------
@pytest.mark.parametrize("index", range(len(SECRETS)), ids=IDS)
def test_info_shows_no_part_of_a_password(index: int, redis_auth: RedisServer) -> None:
    secret = SECRETS[index]
    url = f"redis://u{index}:{secret}@127.0.0.1:{redis_auth.port}/0"
    result = run("info", url, "-n", "cli")
    assert result.exit_code == 0, result.output
    assert f"redis://u{index}:***@127.0.0.1:{redis_auth.port}/0" in result.stdout
    assert_no_part(result.output, secret)
    down = run("info", f"redis://:{secret}@127.0.0.1:1/0")  # unreachable
    assert down.exit_code == 1 and "unreachable" in down.stdout
    assert_no_part(down.output, secret)
    wrong = run("info", f"redis://u{index}:x{secret}@127.0.0.1:{redis_auth.port}/0")
    assert wrong.exit_code == 1 and "BackendPermissionError" in wrong.stdout
    assert_no_part(wrong.output, secret)


def test_info_masks_secret_query_options(mongo_auth: MongoWireServer) -> None:
    secret = "Qz7Xk9Wv3"
    url = mongo_url(mongo_auth, "u0", SECRETS[0]) + f"&tlsCertificateKeyFilePassword={secret}"
    result = run("info", url)
    assert "tlsCertificateKeyFilePassword=***" in result.output
    assert secret not in result.output
    assert_no_part(result.output, SECRETS[0])


def test_a_wrong_mongodb_password_is_a_permission_error(mongo_auth: MongoWireServer) -> None:
    """A refused login is permanent (never retried) and does not echo the password."""
    wrong = "Zq8/Xv7?Kw5#Jm3"
    mem = pm.open_memory(mongo_url(mongo_auth, "u0", wrong), timeout=5)
    with pytest.raises(pm.BackendPermissionError) as caught:
        mem.set("k", 1)
    assert_no_part(str(caught.value), wrong)

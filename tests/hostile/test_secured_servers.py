"""Who gets in: secured deployments on real servers (issue 15, item 13).

- a ``redis-server`` that speaks only TLS and checks client certificates (a CA, server and
  client certificates made by the fixture): the ``RedisMemory`` block's TLS fields get in,
  a client without a certificate or trusting another CA is refused with
  :class:`BackendPermissionError` after ONE connection attempt, even under a retry policy;
- a ``redis-server`` with an ACL user holding exactly the minimal ACL documented in
  ``docs/security.md``: the store, its memory features and tier moves work with it, a
  wrong password or a missing command or key pattern is a :class:`BackendPermissionError`
  (one attempt, never retried), and each command of that ACL is needed;
- SeaweedFS S3 with a least-privilege identity scoped to one bucket: it works on that
  bucket and gets :class:`BackendPermissionError` on another.

One server per module (``scope="module"``).
"""

from __future__ import annotations

import re
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.blocks import RedisMemory, S3Memory
from prefect_memory.errors import BackendPermissionError, ConfigError
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.tiers import Tier, TieredMemory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import RedisServer, S3Server, ServerError, TlsRedisServer

ROOT = Path(__file__).resolve().parents[2]
KEY_PASSWORD = "k3y/pa?ss#word"  # the client key is encrypted: ssl_password is exercised
T0 = 1_700_000_000.0


def _start(server: Any) -> Any:
    try:
        return server.start()
    except ServerError as exc:
        pytest.fail(f"{server.name} could not start: {exc}", pytrace=False)


def connections(admin: Any) -> int:
    """Connections the server accepted so far (each attempt of a client is one)."""
    return int(admin.info("stats")["total_connections_received"])


def never_retried(call: Any, admin: Any, error: type[Exception]) -> Exception:
    """Run ``call``; it must raise ``error`` after exactly one connection attempt."""
    before = connections(admin)
    with pytest.raises(error) as caught:
        call()
    assert connections(admin) - before == 1, "a permanent refusal was retried"
    return caught.value


def tiered_round_trip(hot: Any, tmp_path: Path) -> None:
    """set/get/tags/delete on the hot tier, then a migration to a SQLite cold tier and back."""
    now = [T0]
    cold = SqliteBackend(str(tmp_path / f"cold-{uuid.uuid4().hex[:6]}.db"))
    mem = TieredMemory(
        [Tier("hot", hot), Tier("cold", cold)],
        [{"from": "hot", "to": "cold", "condition": "age > 60"}],
        namespace="secured",
        clock=lambda: now[0],
    )
    mem.set_many({"s:1": {"n": 1}, "s:2": [2], "s:3": "three"}, tags=["batch"])
    mem.set("s:4", 4, tags=["other"], ttl=3600)
    assert mem.get_many(["s:1", "s:2", "missing"]) == {"s:1": {"n": 1}, "s:2": [2]}
    assert mem.tagged("batch") == ["s:1", "s:2", "s:3"]
    assert mem.delete("s:3") is True
    now[0] += 120
    report = mem.migrate()
    assert sum(report.moved.values()) == 3
    assert sorted(cold.scan("secured", None, now=now[0])) == ["s:1", "s:2", "s:4"]
    assert mem.get("s:1") == {"n": 1}  # promoted back home on read
    assert mem.info("s:1").tier == "hot"
    assert mem.invalidate_tags("batch") == 2
    assert list(mem.keys()) == ["s:4"]
    mem.clear()


# -- TLS ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsRedisServer]:
    # verbose: the server logs each refused handshake (counted by the tests)
    server = _start(TlsRedisServer(key_password=KEY_PASSWORD, extra_args=["--loglevel", "verbose"]))
    yield server
    server.stop()


def tls_block(server: TlsRedisServer, **fields: Any) -> RedisMemory:
    certs = server.certs
    base: dict[str, Any] = {
        "url": server.url,
        "key_prefix": f"tls{uuid.uuid4().hex[:6]}",
        "ssl_ca_certs": str(certs["ca"]),
        "ssl_certfile": str(certs["client_cert"]),
        "ssl_keyfile": str(certs["client_key"]),
        "ssl_password": KEY_PASSWORD,
        "timeout": 5.0,
    }
    return RedisMemory(**{**base, **fields})


def test_tls_block_with_client_certificate_round_trip(
    tls_server: TlsRedisServer, tmp_path: Path
) -> None:
    block = tls_block(tls_server)
    assert KEY_PASSWORD not in repr(block) and KEY_PASSWORD not in block.model_dump_json()
    block.set("user:1", {"name": "Ada"}, tags=["users"])
    assert block.get("user:1") == {"name": "Ada"}
    assert block.memory.tagged("users") == ["user:1"]
    assert block.delete("user:1") is True
    assert block.get("user:1") is None
    tiered_round_trip(block.memory.backend, tmp_path)


def refused_handshakes(server: TlsRedisServer, at_least: int) -> int:
    """TLS handshakes the server refused so far (its verbose log names each one)."""
    for _ in range(100):  # the server logs the refusal as it closes: bounded wait for it
        text = server.log_path.read_text(errors="replace") if server.log_path else ""
        count = text.count("Error accepting a client connection")
        if count >= at_least:
            return count
        threading.Event().wait(0.05)
    return count


def test_tls_client_without_certificate_is_refused_not_retried(
    tls_server: TlsRedisServer,
) -> None:
    retry = pm.Retry(pm.ExponentialBackoff(0.001, cap=0.001), attempts=5)
    for fields in (
        {"ssl_certfile": None, "ssl_keyfile": None, "ssl_password": None},  # no certificate
        {"ssl_ca_certs": str(tls_server.certs["other_ca"])},  # the server is not trusted
    ):
        block = tls_block(tls_server, **fields)
        mem = pm.open_memory(block._memory_url(), retry=retry, **block._memory_options())
        before = refused_handshakes(tls_server, 0)
        with pytest.raises(BackendPermissionError, match="TLS") as caught:
            mem.get("k")
        assert isinstance(caught.value, PermissionError)
        # TLS 1.3 reports a refused client certificate after the client's handshake ended,
        # often as a bare EOF: the connector tries one more fresh connection to tell it from
        # a server going away; the retry policy (5 attempts) never runs again.
        refused = refused_handshakes(tls_server, before + 1) - before
        assert 1 <= refused <= 2, f"{refused} handshakes for one call"


def test_tls_fields_need_rediss_and_existing_files(tls_server: TlsRedisServer) -> None:
    with pytest.raises(ValueError, match="rediss://"):
        RedisMemory(url="redis://127.0.0.1:6379/0", ssl_ca_certs="/ca.pem")
    missing = tls_block(tls_server, ssl_ca_certs=str(tls_server.certs["ca"]) + ".missing")
    with pytest.raises(ConfigError, match="ssl_ca_certs"):
        missing.get("k")


# -- ACL -----------------------------------------------------------------------------------
ADMIN_PASSWORD = "admin/pw#1"
APP_PASSWORD = "app?pw@2:%"


def documented_acl() -> list[str]:
    """The rules of the minimal ACL in docs/security.md (after ``ACL SETUSER <user>``)."""
    text = (ROOT / "docs" / "security.md").read_text()
    found = re.search(r"^ACL SETUSER prefect-memory (.+)$", text, re.M)
    assert found, "docs/security.md lost its minimal ACL"
    return found.group(1).split()


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    server = _start(RedisServer(password=ADMIN_PASSWORD))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acl_admin(acl_server: RedisServer) -> Iterator[Any]:
    client = acl_server.client()
    yield client
    client.close()


def app_user(admin: Any, name: str, rules: list[str]) -> str:
    """(Re)create ACL user ``name`` with ``rules`` and APP_PASSWORD; returns the name."""
    concrete = [">" + APP_PASSWORD if r.startswith(">") else r for r in rules]
    admin.execute_command("ACL", "SETUSER", name, "reset", *concrete)
    return name


def app_url(server: RedisServer, user: str) -> str:
    return f"redis://{user}:{APP_PASSWORD}@127.0.0.1:{server.port}/0"


def app_memory(server: RedisServer, user: str, password: str = APP_PASSWORD, **options: Any):
    """A memory of ACL user ``user`` (the password as the option: the block's way)."""
    url = f"redis://{user}@127.0.0.1:{server.port}/0"
    return pm.open_memory(url, password=password, namespace="acl", **options)


def memory_features(url: str, tmp_path: Path) -> None:
    """What the library does with Redis: the Memory API, TTLs, tags, health, tier moves."""
    block = RedisMemory(url=url, key_prefix="pm", namespace="acl")
    mem = block.memory
    mem.ping()
    mem.set("a", 1, tags=["t1"], ttl=100)
    assert mem.get("a") == 1 and mem.exists("a") and mem.info("a").tags == ("t1",)
    mem.set_many({"b": 2, "c": 3}, tags=["t2"])
    assert mem.get_many(["a", "b", "zz"]) == {"a": 1, "b": 2}
    assert mem.add("d", 4) is True
    assert mem.tagged("t1") == ["a"]
    assert mem.invalidate_tags("t1") == 1
    assert list(mem.keys("b*")) == ["b"]
    assert mem.delete("b") and mem.delete_many(["c"]) == 1
    mem.purge_expired()
    mem.set("sliding", 1, ttl=50, refresh=True)
    assert mem.get("sliding") == 1
    pm.health(mem)
    mem.clear()
    tiered_round_trip(mem.backend, tmp_path)


def test_library_works_with_exactly_the_documented_acl(
    acl_server: RedisServer, acl_admin: Any, tmp_path: Path
) -> None:
    acl_admin.flushall()
    user = app_user(acl_admin, "prefect-memory", documented_acl())
    memory_features(app_url(acl_server, user), tmp_path)


def test_each_command_of_the_acl_is_needed(
    acl_server: RedisServer, acl_admin: Any, tmp_path: Path
) -> None:
    rules = documented_acl()
    commands = [r for r in rules if r.startswith("+")]
    assert len(commands) >= 10
    unneeded = []
    for command in commands:
        acl_admin.flushall()  # what the previous, failed round left
        acl_admin.script_flush()  # a fresh server: the scripts are not loaded yet
        user = app_user(acl_admin, "pm-lacking", [r for r in rules if r != command])
        try:
            memory_features(app_url(acl_server, user), tmp_path)
        except BackendPermissionError as err:
            assert command[1:].partition("|")[0] in str(err).lower() or "script" in str(err)
        else:
            unneeded.append(command)
        acl_admin.execute_command("ACL", "DELUSER", user)
    assert unneeded == [], "the documented ACL grants commands the library does not use"


def test_wrong_password_and_missing_permissions_are_named_and_never_retried(
    acl_server: RedisServer, acl_admin: Any
) -> None:
    rules = documented_acl()
    user = app_user(acl_admin, "prefect-memory", rules)
    retry = pm.Retry(pm.ExponentialBackoff(0.001, cap=0.001), attempts=5)
    mem = app_memory(acl_server, user, password="not-" + APP_PASSWORD, retry=retry)
    err = never_retried(lambda: mem.get("k"), acl_admin, BackendPermissionError)
    assert "password" in str(err) and APP_PASSWORD not in str(err)
    # No user: the default user needs the admin password.
    anonymous = pm.open_memory(f"redis://127.0.0.1:{acl_server.port}/0", retry=retry)
    never_retried(lambda: anonymous.get("k"), acl_admin, BackendPermissionError)
    # A missing command at top level (SCAN) and inside a script (HSET): one connection.
    for lacking, call in (("+scan", "keys"), ("+hset", "set")):
        app_user(acl_admin, "pm-lacking", [r for r in rules if r != lacking])
        mem = app_memory(acl_server, "pm-lacking", retry=retry, cluster=False)
        action = (
            (lambda mem=mem: list(mem.keys()))
            if call == "keys"
            else (lambda mem=mem: mem.set("k", 1))
        )
        err = never_retried(action, acl_admin, BackendPermissionError)
        assert lacking[1:] in str(err).lower() or "can't run" in str(err)
    # A key outside the user's key patterns.
    mem = app_memory(acl_server, "prefect-memory", key_prefix="other", retry=retry, cluster=False)
    never_retried(lambda: mem.set("k", 1), acl_admin, BackendPermissionError)
    acl_admin.execute_command("ACL", "DELUSER", "pm-lacking")


def test_redis_backend_maps_a_refused_auth_on_a_live_connection(
    acl_server: RedisServer, acl_admin: Any
) -> None:
    """A user disabled while connected: the next request is refused, not retried forever."""
    user = app_user(acl_admin, "pm-disabled", documented_acl())
    backend = app_memory(acl_server, user, cluster=False).backend
    backend.ping()
    acl_admin.execute_command("ACL", "SETUSER", user, "-@all")
    with pytest.raises(BackendPermissionError):
        backend.ping()
    backend.close()
    acl_admin.execute_command("ACL", "DELUSER", user)


# -- S3 least privilege --------------------------------------------------------------------
ALICE_KEY, ALICE_SECRET = "alice-access-key", "alice/secret?key#0123456789"
OWN_BUCKET, OTHER_BUCKET = "pm-alice", "pm-other"


@pytest.fixture(scope="module")
def s3_identities() -> Iterator[S3Server]:
    alice = {
        "name": "alice",
        "credentials": [{"accessKey": ALICE_KEY, "secretKey": ALICE_SECRET}],
        "actions": [f"{action}:{OWN_BUCKET}" for action in ("Read", "Write", "List", "Tagging")],
    }
    server = _start(S3Server(identities=[alice]))
    server.make_bucket(OWN_BUCKET)
    server.make_bucket(OTHER_BUCKET)
    yield server
    server.stop()


def alice_block(server: S3Server, bucket: str) -> S3Memory:
    return S3Memory(
        url=f"s3://{bucket}/memory",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=ALICE_KEY,
        aws_secret_access_key=ALICE_SECRET,
        namespace="least-privilege",
    )


def test_s3_key_scoped_to_one_bucket_works_there(s3_identities: S3Server) -> None:
    block = alice_block(s3_identities, OWN_BUCKET)
    block.set("report:1", {"rows": 3}, tags=["reports"])
    assert block.get("report:1") == {"rows": 3}
    assert list(block.memory.keys()) == ["report:1"]
    assert block.memory.tagged("reports") == ["report:1"]
    assert block.delete("report:1") is True
    assert list(block.memory.keys()) == []


def test_s3_key_scoped_to_one_bucket_is_refused_on_another(s3_identities: S3Server) -> None:
    block = alice_block(s3_identities, OTHER_BUCKET)
    for action in (
        lambda: block.set("k", 1),
        lambda: block.get("k"),
        lambda: list(block.memory.keys()),
    ):
        with pytest.raises(BackendPermissionError) as caught:
            action()
        assert ALICE_SECRET not in str(caught.value)
    # Nothing was written there by the refused key.
    admin = s3_identities.filesystem()
    assert admin.find(f"{OTHER_BUCKET}/memory") == []

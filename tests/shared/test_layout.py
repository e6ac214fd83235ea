"""Key layout 2 of the Redis backend (a namespace spread over hash-tag buckets), the layout
record that keeps a client off a namespace of the other layout, and ``prefect-memory
upgrade``: a namespace written by the backend as the previous release writes it (layout 1,
no record) moved to layout 2, also when the move is killed half-way and run again."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import prefect_memory as pm
from prefect_memory.cli import app
from prefect_memory.errors import ConfigError
from prefect_memory.keys import ns_token
from prefect_memory.plugins.redis import RedisBackend
from prefect_memory.plugins.redis.layout import MOVING, Spread, read_record

pytestmark = pytest.mark.redis

N = 600


def test_layout_options_are_applied_or_refused() -> None:
    assert RedisBackend.from_url("redis://h/0?layout=2&buckets=32").buckets == 32
    assert RedisBackend.from_url("redis://h/0", layout=2).layout == 2
    assert RedisBackend.from_url("redis://h/0").layout == 1
    for url, options, words in [
        ("redis://h/0?layout=3", {}, "layout must be 1 or 2"),
        ("redis://h/0?layout=two", {}, "layout in the Redis URL must be a number"),
        ("redis://h/0?layout=2&buckets=0", {}, "buckets must be an int from 1 to 1024"),
        ("redis://h/0", {"layout": 2, "buckets": 5000}, "buckets must be an int"),
        ("redis://h/0?buckets=8", {}, "buckets is an option of layout 2"),
        ("redis://h/0", {"layout": True}, "layout must be 1 or 2"),
    ]:
        with pytest.raises(ConfigError, match=words):
            RedisBackend.from_url(url, **options)


def _fill(url: str, prefix: str, ns: str) -> dict[str, Any]:
    """The namespace as the previous release writes it: the default layout, no record."""
    mem = pm.open_memory(url, namespace=ns, key_prefix=prefix)
    mem.set_many({f"k{i}": {"i": i} for i in range(N // 2)}, tags=["even", "all"])
    mem.set_many({f"t{i}": [i] * 3 for i in range(N // 2)}, ttl=3600, tags=["all"])
    mem.set("sliding", "s", ttl=3600, refresh=True)
    mem.set("k0", {"i": 0, "again": True}, tags=["even", "all"])  # version 2
    mem.get("k1")  # an access counted
    assert read_record(mem.backend, ns) == (None, None)
    expected = {
        "values": mem.get_many(sorted(mem.keys())),
        "meta": mem.backend.meta_many(ns, sorted(mem.keys()), now=time.time()),
    }
    mem.close()
    return expected


def _same(mem: pm.Memory, expected: dict[str, Any]) -> None:
    keys = sorted(expected["values"])
    meta = mem.backend.meta_many(mem.namespace, keys, now=time.time())  # before any touch
    for key, before in expected["meta"].items():
        after = meta[key]
        assert (after.created_at, after.updated_at, after.version, after.tags, after.ttl) == (
            before.created_at, before.updated_at, before.version, before.tags, before.ttl
        ), key  # fmt: skip
        assert after.expires_at == before.expires_at and after.sliding == before.sliding
        assert after.access_count == before.access_count
    assert sorted(mem.keys()) == keys
    assert mem.get_many(keys) == expected["values"]
    assert set(mem.backend.tagged(mem.namespace, ["all"], now=time.time())) == set(keys) - {
        "sliding"
    }
    assert len(mem.backend.tagged(mem.namespace, ["even"], now=time.time())) == N // 2


def _layout1_names(url: str, prefix: str, ns: str, nodes: list[Any]) -> list[bytes]:
    names = []
    for node in nodes:
        client = node.client()
        try:
            names += [
                n
                for n in client.scan_iter(match=f"{prefix}:{{{ns_token(ns)}}}:*")
                if not n.endswith(b":layout")
            ]
        finally:
            client.close()
    return names


@pytest.fixture(params=["server", "cluster"])
def where(request: pytest.FixtureRequest) -> tuple[str, list[Any]]:
    if request.param == "server":
        server = request.getfixturevalue("redis_server")
        return server.url, [server]
    cluster = request.getfixturevalue("redis_cluster")
    return cluster.url, list(cluster.nodes)


def test_upgrade_moves_a_namespace_of_the_previous_release(
    where: tuple[str, list[Any]], prefix: str
) -> None:
    url, nodes = where
    expected = _fill(url, prefix, "sessions")
    with pytest.raises(ConfigError, match="prefect-memory upgrade") as refused:
        pm.open_memory(url, namespace="sessions", key_prefix=prefix, layout=2).get("k1")
    assert "layout 1" in str(refused.value)
    result = CliRunner().invoke(
        app, ["upgrade", f"{url}?key_prefix={prefix}", "-n", "sessions", "--buckets", "8"]
    )
    assert result.exit_code == 0, result.output
    assert f"{N + 1} entries moved" in result.stdout and "8 buckets" in result.stdout
    assert not _layout1_names(url, prefix, "sessions", nodes)  # nothing left behind
    old = pm.open_memory(url, namespace="sessions", key_prefix=prefix)
    for call in (lambda: old.get("k1"), lambda: old.exists("k1"), lambda: list(old.keys())):
        with pytest.raises(ConfigError, match="layout=2") as refused:
            call()
        assert "prefect-memory upgrade" in str(refused.value) and "8 buckets" in str(refused.value)
    new = pm.open_memory(url, namespace="sessions", key_prefix=prefix, layout=2, buckets=32)
    assert new.backend._spread("sessions").buckets == 8  # the recorded count wins
    _same(new, expected)
    assert new.invalidate_tags("even") == N // 2
    again = CliRunner().invoke(app, ["upgrade", f"{url}?key_prefix={prefix}", "-n", "sessions"])
    assert again.exit_code == 0 and "already in layout 2" in again.stdout
    new.clear()
    assert list(new.keys()) == []


def test_a_layout2_client_claims_a_new_namespace_and_refuses_bad_upgrades(
    redis_server: Any, prefix: str
) -> None:
    mem = pm.open_memory(redis_server.url, namespace="fresh", key_prefix=prefix, layout=2)
    mem.set("a", 1)
    assert read_record(mem.backend, "fresh") == ("2", 16)
    with pytest.raises(ConfigError, match="stored in layout 2"):
        pm.open_memory(redis_server.url, namespace="fresh", key_prefix=prefix).get("a")
    bad = CliRunner().invoke(app, ["upgrade", redis_server.url, "-n", "x", "--to", "3"])
    assert bad.exit_code == 2 and "--to 2" in bad.stderr
    not_redis = CliRunner().invoke(app, ["upgrade", "memory://x", "-n", "x"])
    assert not_redis.exit_code == 2 and "not a redis:// store" in not_redis.stderr


_KILLED = textwrap.dedent(
    """
    import sys, time
    from prefect_memory.plugins.redis import RedisBackend
    from prefect_memory.plugins.redis.layout import upgrade

    def hook(event, done, total):
        if event == "copied" and done >= 200:  # copied, not yet deleted from layout 1
            print("paused", flush=True)
            time.sleep(600)

    backend = RedisBackend.from_url(sys.argv[1], key_prefix=sys.argv[2])
    upgrade(backend, "sessions", buckets=4, batch=100, progress=hook)
    """
)


def test_an_upgrade_killed_half_way_resumes(
    where: tuple[str, list[Any]], prefix: str, tmp_path: Path
) -> None:
    url, nodes = where
    expected = _fill(url, prefix, "sessions")
    script = tmp_path / "killed.py"
    script.write_text(_KILLED)
    proc = subprocess.Popen(
        [sys.executable, str(script), url, prefix], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "paused"
    finally:
        proc.kill()  # -9, between a copy and the delete of its layout-1 entries
        proc.wait()
    backend = RedisBackend.from_url(url, key_prefix=prefix)
    assert read_record(backend, "sessions") == (MOVING, 4)
    assert _layout1_names(url, prefix, "sessions", nodes)  # half-way indeed
    # Readers meanwhile, of either layout: refused, told why, nothing wrong returned.
    for layout in (1, 2):
        reader = pm.open_memory(url, namespace="sessions", key_prefix=prefix, layout=layout)
        with pytest.raises(ConfigError, match="being moved to layout 2"):
            reader.get_many(["k1", "t1"])
    result = CliRunner().invoke(app, ["upgrade", f"{url}?key_prefix={prefix}", "-n", "sessions"])
    assert result.exit_code == 0, result.output
    assert "(resumed)" in result.stdout and "4 buckets" in result.stdout
    assert not _layout1_names(url, prefix, "sessions", nodes)
    new = pm.open_memory(url, namespace="sessions", key_prefix=prefix, layout=2)
    _same(new, expected)  # nothing lost
    entries = []
    for node in nodes:  # nothing duplicated: one entry key per key
        client = node.client()
        try:
            entries += list(client.scan_iter(match=f"{prefix}:{{sessions:*}}:e:*"))
        finally:
            client.close()
    assert len(entries) == len(set(entries)) == N + 1
    new.clear()


def test_a_big_layout2_namespace_is_shared_fairly_by_the_primaries(
    redis_cluster: Any, prefix: str
) -> None:
    mem = pm.open_memory(redis_cluster.url, namespace="features", key_prefix=prefix, layout=2)
    mem.set_many({f"f:{i}": i for i in range(3000)}, tags=["t"])
    counts = []
    for node in redis_cluster.nodes:
        client = node.client()
        try:
            counts.append(sum(1 for _ in client.scan_iter(match=f"{prefix}:{{features:*}}:e:*")))
        finally:
            client.close()
    assert sum(counts) == 3000
    shares = [c / 3000 for c in counts]
    assert all(0.20 <= s <= 0.47 for s in shares), shares
    assert len(mem.backend.tagged("features", ["t"], now=time.time())) == 3000
    assert mem.invalidate_tags("t") == 3000
    assert list(mem.keys()) == []


def test_upgrade_moves_a_tiered_memorys_tombstones_with_it(redis_server: Any, prefix: str) -> None:
    """A tiered memory keeps tombstones in a companion namespace (``ns`` + a NUL suffix):
    ``upgrade -n ns`` moves it too, so a layout-2 tiered memory can move entries at once."""
    from prefect_memory.tiers import Tier, TieredMemory

    def tiered(layout: int) -> TieredMemory:
        hot = RedisBackend(redis_server.url, key_prefix=prefix, layout=layout)
        cold = RedisBackend(redis_server.url, key_prefix=prefix + "c")
        rules = [{"from": "hot", "to": "cold", "condition": "age >= 0"}]
        return TieredMemory([Tier("hot", hot), Tier("cold", cold)], rules, namespace="shop")

    old = tiered(1)
    old.set_many({f"k{i}": i for i in range(20)})
    old.delete("k0")  # a tombstone in the companion namespace, written in layout 1
    result = CliRunner().invoke(app, ["upgrade", f"{redis_server.url}?key_prefix={prefix}",
                                      "-n", "shop"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "shop (tombstones): layout 2" in result.stdout
    new = tiered(2)
    report = new.migrate()
    assert report.written == 19  # was a ConfigError: the tombstones were still in layout 1
    assert new.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(1, 20)}


@pytest.mark.parametrize(
    "fields",
    [
        {"v": "2", "b": "99999999999"},  # would make a reader build 1e11 buckets
        {"v": "2", "b": "sixteen"},
        {"v": "2", "b": "-3"},
        {"v": b"\xff\xfe", "b": "16"},
        {"v": "x" * 5000, "b": "16"},
    ],
)
def test_a_layout_record_written_by_someone_else_is_refused_at_once(
    redis_server: Any, prefix: str, fields: dict[str, Any]
) -> None:
    """The record is read from the store: a hostile one raises our error, it never hangs a
    reader, exhausts its memory or escapes as a ValueError/UnicodeDecodeError."""
    from prefect_memory.errors import SerializationError
    from prefect_memory.plugins.redis.layout import record_key, upgrade

    raw = RedisBackend(redis_server.url, key_prefix=prefix)
    raw.connection.request("HSET", record_key(prefix, "evil"), *sum(fields.items(), ()))
    new = pm.open_memory(redis_server.url, namespace="evil", key_prefix=prefix, layout=2)
    old = pm.open_memory(redis_server.url, namespace="evil", key_prefix=prefix)
    for call in (lambda: new.set("k", 1), lambda: new.get("k"), lambda: old.exists("k")):
        with pytest.raises((SerializationError, ConfigError)) as caught:
            call()
        assert "layout" in str(caught.value) and len(str(caught.value)) < 600
    with pytest.raises((SerializationError, ConfigError)):
        upgrade(raw, "evil")


def test_upgrade_carries_an_entry_with_a_spoiled_expiry_over(
    redis_server: Any, prefix: str
) -> None:
    """Another client wrote ``x=nan`` into a layout-1 entry: the upgrade copies the entry
    without an expiry instead of dropping it (nothing lost), and the rest moves as usual."""
    from prefect_memory.plugins.redis.layout import upgrade

    mem = pm.open_memory(redis_server.url, namespace="spoiled", key_prefix=prefix)
    mem.set_many({"a": 1, "b": 2}, ttl=3600)
    raw = RedisBackend(redis_server.url, key_prefix=prefix)
    name = f"{prefix}:{{{ns_token('spoiled')}}}:e:a"
    assert raw.connection.request("HEXISTS", name, "x", route=name) == 1
    raw.connection.request("HSET", name, "x", "nan", route=name)
    assert mem.get_many(["a", "b"]) == {"b": 2}  # a spoiled expiry reads as expired
    report = upgrade(raw, "spoiled")
    assert report.moved == 2 and report.expired == 0
    new = pm.open_memory(redis_server.url, namespace="spoiled", key_prefix=prefix, layout=2)
    assert new.get_many(["a", "b"]) == {"b": 2}  # read as before the upgrade
    spread = Spread(prefix, "spoiled", report.buckets)
    moved = spread.bases[spread.bucket("a")] + "e:a"  # the entry is there, bytes and all:
    raw.connection.request("HSET", moved, "x", str(time.time() + 600), route=moved)
    assert new.get("a") == 1  # mended, it reads again (it was dropped before: lost)


def test_a_redis_block_opens_layout_2_from_its_url(redis_server: Any, prefix: str) -> None:
    """Blocks reach layout 2 the way a config does: ``?layout=2&buckets=`` in the URL."""
    from prefect_memory.blocks import RedisMemory

    block = RedisMemory(url=f"{redis_server.url}?layout=2&buckets=8", key_prefix=prefix,
                        namespace="blk")  # fmt: skip
    block.set_many({f"k{i}": i for i in range(40)})
    assert read_record(block.memory.backend, "blk") == ("2", 8)
    assert block.get_many([f"k{i}" for i in range(40)]) == {f"k{i}": i for i in range(40)}
    with pytest.raises(ConfigError, match="layout=2"):
        pm.open_memory(redis_server.url, namespace="blk", key_prefix=prefix).get("k1")

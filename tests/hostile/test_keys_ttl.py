"""Hostile input at the door: TTLs, keys, tags and namespaces (issue 15, items 3, 4 and 11).

Every refused input is a named error raised before anything is written, on every store
(real Redis, SQLite, JSON file, file folder, in-process, the MongoDB wire server and
SeaweedFS S3); metadata another writer left in a store never makes ``info()`` raise a raw
error; the Redis put script itself refuses an expiry ``PEXPIRE`` cannot take before its
first write; and a namespace, key or tag spelled like a path never leaves a ``file://``
store's root.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis

import prefect_memory as pm
from prefect_memory.errors import InvalidKeyError, InvalidTTLError, KeyTypeError
from prefect_memory.keys import MAX_TTL, ns_token
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.jsonfile import JsonFileBackend
from prefect_memory.plugins.redis_lua import PUT

STORES = ["memory", "sqlite", "json", "file", "s3", "redis", "mongodb"]
UTC = dt.timezone.utc
LATEST = dt.datetime.max.replace(tzinfo=UTC)
EARLIEST = dt.datetime.min.replace(tzinfo=UTC)

BAD_TTLS: list[Any] = [
    math.inf,
    -math.inf,
    math.nan,
    1e300,
    1e16,
    MAX_TTL * 1.001,
    10**400,  # an int no float holds
    dt.timedelta(days=365.25 * 101),
    dt.timedelta(days=999_999_999),
    dt.timedelta(seconds=-1),
    -1,
    0,
    True,
    "60",
    [60],
]


@pytest.fixture(params=STORES)
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(backend_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """URL and options of a fresh store of ``backend_name`` (used by ``open_mem``)."""
    unique = uuid.uuid4().hex[:10]
    if backend_name == "memory":
        return {"url": f"memory://hostile-{unique}", "options": {}}
    if backend_name == "sqlite":
        return {"url": f"sqlite:///{tmp_path}/memory.db", "options": {}}
    if backend_name == "json":
        return {"url": f"json:///{tmp_path}/json/backup.json", "options": {}}
    if backend_name == "file":
        return {"url": f"file://{tmp_path}/store", "options": {}}
    if backend_name == "s3":
        server = request.getfixturevalue("s3_server")
        server.make_bucket("pm-hostile")
        return {
            "url": f"s3://pm-hostile/{unique}",
            "options": {"storage_options": server.storage_options},
        }
    if backend_name == "redis":
        server = request.getfixturevalue("redis_server")
        return {"url": server.url, "options": {"key_prefix": f"pmh{unique}"}}
    if backend_name == "mongodb":
        server = request.getfixturevalue("mongo_server")
        sep = "&" if "?" in server.url else "?"
        return {"url": f"{server.url}{sep}collection=h{unique}", "options": {}}
    raise AssertionError(backend_name)


def _redis_client(mem: pm.Memory) -> redis.Redis:
    backend = mem.backend
    return redis.Redis(host=backend.host, port=backend.port, db=backend.db)


def _redis_base(mem: pm.Memory) -> str:
    return f"{mem.backend.key_prefix}:{{{ns_token(mem.namespace)}}}:"


def _assert_empty(mem: pm.Memory, backend_name: str) -> None:
    assert list(mem.keys()) == []
    assert mem.tagged("t") == []
    assert not mem.exists("k") and mem.info("k") is None
    if backend_name == "redis":  # not even a hash or a tag index outside the API's view
        assert _redis_client(mem).keys(_redis_base(mem) + "*") == []


# -- TTLs -------------------------------------------------------------------------------------
def test_a_refused_ttl_is_a_named_error_and_leaves_nothing(
    open_mem: Any, backend_name: str
) -> None:
    mem = open_mem()
    for ttl in BAD_TTLS:
        with pytest.raises(InvalidTTLError, match="ttl"):
            mem.set("k", 1, ttl=ttl, tags=["t"])
        with pytest.raises(InvalidTTLError):
            mem.set_many({"a": 1, "b": 2}, ttl=ttl, tags=["t"])
        with pytest.raises(InvalidTTLError):
            mem.add("k", 1, ttl=ttl, tags=["t"])
        with pytest.raises(InvalidTTLError):
            asyncio.run(mem.aset("k", 1, ttl=ttl, tags=["t"]))
        with pytest.raises(InvalidTTLError):
            asyncio.run(mem.aset_many({"a": 1}, ttl=ttl))
        with pytest.raises(InvalidTTLError):  # a memory's default TTL is checked too
            pm.Memory(mem.backend, mem.namespace, ttl=ttl)
    _assert_empty(mem, backend_name)
    # Still a ConfigError and a ValueError, as bad TTLs were before.
    assert issubclass(InvalidTTLError, pm.ConfigError) and issubclass(InvalidTTLError, ValueError)


def test_the_longest_ttl_is_held_by_every_store(open_mem: Any) -> None:
    mem = open_mem()
    mem.set("far", 1, ttl=MAX_TTL, tags=["t"])
    mem.set("td", 2, ttl=dt.timedelta(days=365 * 99), tags=["t"])
    info = mem.info("far")
    assert info is not None and info.expires_at is not None
    assert info.expires_at.year >= dt.datetime.now(UTC).year + 99
    assert mem.get_many(["far", "td"]) == {"far": 1, "td": 2}
    assert mem.invalidate_tags("t") == 2
    assert list(mem.keys()) == []


def _hostile_expiry(mem: pm.Memory, backend_name: str, key: str) -> None:
    """Make the stored metadata of ``key`` say it expires in 1e300 seconds, created at
    -1e300, by the rawest means the store has (another client, SQL, editing the file)."""
    ns = mem.namespace
    if backend_name == "redis":
        client = _redis_client(mem)
        client.hset(_redis_base(mem) + "e:" + key, mapping={"x": "1e300", "a": "-1e300"})
    elif backend_name == "sqlite":
        with sqlite3.connect(mem.backend.path) as conn:
            conn.execute(
                "UPDATE pm_entries SET expires_at = 1e300, last_access = -1e300 "
                "WHERE ns = ? AND key = ?",
                (ns, key),
            )
    elif backend_name == "json":
        mem.backend.flush()
        path = mem.backend.path
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        doc["namespaces"][ns][key].update(x=1e300, a=-1e300)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
    else:  # a buggy or hostile writer through the backend interface
        record = mem.backend.get_many(ns, [key], now=time.time())[key]
        hostile = Record(
            record.value,
            record.created_at,
            record.updated_at,
            -1e300,
            0,
            1e300,
            None,
            False,
            record.tags,
        )
        mem.backend.delete_many(ns, [key], now=time.time())  # (a put keeps the old history)
        mem.backend.put_many(ns, {key: hostile}, now=time.time())


def test_info_reads_a_hostile_stored_expiry(open_mem: Any, backend_name: str) -> None:
    mem = open_mem()
    mem.set("k", {"v": 1}, ttl=60, tags=["t"])
    _hostile_expiry(mem, backend_name, "k")
    info = mem.info("k")  # before: OverflowError / ValueError from datetime
    assert info is not None
    # Clamped to what datetime holds (MongoDB's BSON dates clamp to 9999 on write).
    assert info.expires_at is not None and info.expires_at.year >= 9999
    if backend_name != "mongodb":
        assert info.expires_at == LATEST
        assert info.last_access == EARLIEST
    assert mem.get("k") == {"v": 1}
    assert mem.info("k") is not None
    assert list(mem.keys()) == ["k"]


def test_info_names_the_key_of_unreadable_stored_metadata() -> None:
    mem = pm.open_memory("memory://")
    mem.set("k", 1)
    record = mem.backend.get_many(mem.namespace, ["k"], now=time.time())["k"]
    hostile = Record(record.value, math.nan, record.updated_at, record.last_access, 0)
    mem.backend.delete_many(mem.namespace, ["k"], now=time.time())
    mem.backend.put_many(mem.namespace, {"k": hostile}, now=time.time())
    with pytest.raises(pm.SerializationError, match=r"'k'.*created_at"):
        mem.info("k")


def test_sqlite_unreadable_metadata_is_a_named_error(tmp_path: Path) -> None:
    mem = pm.open_memory(f"sqlite:///{tmp_path}/m.db", namespace="ns")
    mem.set("k", 1, tags=["t"])
    mem.set("fine", 2)
    with sqlite3.connect(tmp_path / "m.db") as conn:
        conn.execute("UPDATE pm_entries SET tags = 'not json' WHERE key = 'k'")
    with pytest.raises(pm.SerializationError, match="'k'"):  # before: a raw JSONDecodeError
        mem.info("k")
    assert mem.get("fine") == 2


# -- Redis: the put script refuses an expiry PEXPIRE cannot take, before any write -----------
def _put_script_args(base: str, now: float, x: Any, *, shared: bool) -> list[Any]:
    m = msgpack.packb([now, now, 60.0, False, ["t"], 1], use_bin_type=False)
    if shared:
        flat = [1, m, 0, now, x, "", "k", b"v"]
    else:  # two records, the first one fine: the whole batch must be refused
        flat = [0, "ok", b"v", m, 0, now, now + 60, "", "k", b"v", m, 0, now, x, ""]
    return [1, base, now, msgpack.packb(flat, use_bin_type=False)]


@pytest.mark.parametrize("x", [1e300, 1e16, math.inf, math.nan, "soon", ["x"]])
@pytest.mark.parametrize("shared", [True, False])
def test_redis_put_script_refuses_a_bad_expiry_before_writing(
    redis_server: Any, x: Any, shared: bool
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    base = f"pmh{uuid.uuid4().hex[:10]}:{{ns}}:"
    with pytest.raises(redis.ResponseError, match="expiry out of range"):
        client.eval(PUT.source, *_put_script_args(base, time.time(), x, shared=shared))
    # Before: the hash was written, then PEXPIRE failed: an immortal, untagged entry.
    assert client.keys(base + "*") == []


@pytest.mark.parametrize("backend_name", ["redis"])
def test_redis_a_hostile_record_is_refused_whole(open_mem: Any, backend_name: str) -> None:
    mem = open_mem()
    now = time.time()
    good = Record(b"v", now, now, now, 0, now + 60, 60.0, False, ("t",))
    bad = Record(b"v", now, now, now, 0, 1e300, 60.0, False, ("t",))
    with pytest.raises(InvalidTTLError, match="'bad'"):
        mem.backend.put_many(mem.namespace, {"good": good, "bad": bad}, now=now)
    sliding = Record(b"v", now, now, now, 0, now + 60, 1e300, True, ("t",))
    with pytest.raises(InvalidTTLError, match="ttl"):
        mem.backend.put_many(mem.namespace, {"s": sliding}, now=now)
    _assert_empty(mem, backend_name)


@pytest.mark.parametrize("backend_name", ["redis"])
def test_redis_hostile_tag_scores_and_sliding_ttls_break_nothing(
    open_mem: Any, backend_name: str
) -> None:
    mem = open_mem()
    client = _redis_client(mem)
    base = _redis_base(mem)
    # Another client left a member scored far beyond PEXPIRE's range in a tag index.
    client.zadd(base + "t:t", {"ghost": 1e300})
    mem.set("k", 1, ttl=60, tags=["t"])  # before: PEXPIRE of the tag index failed
    assert mem.tagged("t") == ["k"]
    # ...and a sliding ttl far beyond it in an entry: a read does not slide it, nor fail.
    mem.set("s", 2, ttl=60, refresh=True)
    client.hset(base + "e:s", "s", "1e300")
    assert mem.get("s") == 2
    assert 0 < client.pttl(base + "e:s") <= 60_000
    assert mem.invalidate_tags("t") == 1
    # An expiry field that is not a number reads as none, on every path (before: exists()
    # raised a raw ValueError while get() found the entry).
    mem.set("junk", 3)
    client.hset(base + "e:junk", "x", "soon")
    assert mem.exists("junk") and mem.get("junk") == 3
    assert mem.info("junk").expires_at is None


# -- keys, tags and namespaces ------------------------------------------------------------------
SURROGATES = ["\ud800", "ok\udfff", "a\ud83d", "\udc80tail"]


def test_lone_surrogates_are_refused_before_any_write(
    open_mem: Any, backend_name: str, tmp_path: Path
) -> None:
    mem = open_mem()
    for text in SURROGATES:
        position = next(i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF)
        with pytest.raises(InvalidKeyError, match=f"position {position}"):
            mem.set(text, 1)
        with pytest.raises(InvalidKeyError):
            mem.set_many({"fine": 1, text: 2})
        with pytest.raises(InvalidKeyError):
            mem.get(text)
        with pytest.raises(InvalidKeyError):
            mem.delete_many(["fine", text])
        with pytest.raises(InvalidKeyError, match="tags"):
            mem.set("k", 1, tags=["fine", text])
        with pytest.raises(InvalidKeyError):
            mem.tagged(text)
        with pytest.raises(InvalidKeyError, match="namespace"):
            mem.with_namespace(text)
        with pytest.raises(InvalidKeyError, match="namespace"):
            pm.Memory(mem.backend, text)
        with pytest.raises(InvalidKeyError, match="pattern"):
            list(mem.keys(text + "*"))
    _assert_empty(mem, backend_name)
    # The store is fine afterwards (before: json:// kept the bad key and failed every write),
    # and real non-ASCII text still round-trips.
    mem.set("ключ🔑", "значение", tags=["тег"])
    mem.set("plain", 1)
    assert mem.get_many(["ключ🔑", "plain"]) == {"ключ🔑": "значение", "plain": 1}
    assert mem.tagged("тег") == ["ключ🔑"]
    assert sorted(mem.keys()) == ["plain", "ключ🔑"]
    assert mem.with_namespace("имя").namespace == "имя"
    leftovers = [p.name for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []


def test_json_failed_write_leaves_the_cached_document_and_no_temp_file(tmp_path: Path) -> None:
    """Below the key check: a write the JSON encoder refuses must not poison later ones."""
    path = tmp_path / "backup.json"
    backend = JsonFileBackend(str(path))
    now = time.time()
    record = Record(b"v", now, now, now, 0)
    backend.put_many("ns", {"good": record}, now=now)
    with pytest.raises(pm.SerializationError, match=r"backup\.json"):
        backend.put_many("ns", {"\ud800": record}, now=now)
    with pytest.raises(pm.SerializationError):
        backend.put_many("\udfff", {"k": record}, now=now)
    backend.put_many("ns", {"later": record}, now=now)  # before: UnicodeEncodeError again
    assert sorted(backend.scan("ns", None, now=now)) == ["good", "later"]
    assert sorted(json.loads(path.read_text())["namespaces"]) == ["ns"]
    assert sorted(os.listdir(tmp_path)) == ["backup.json", "backup.json.lock"]
    fresh = JsonFileBackend(str(path))
    assert sorted(fresh.scan("ns", None, now=now)) == ["good", "later"]


@pytest.mark.parametrize("backend_name", ["memory", "sqlite", "redis"])  # checked above them
@pytest.mark.parametrize("tags", [5, 2.5, None, b"ab", [1], ["ok", None], [b"x"], object()])
def test_tags_of_the_wrong_type_are_a_named_error_before_any_write(
    open_mem: Any, backend_name: str, tags: Any
) -> None:
    mem = open_mem()
    with pytest.raises(KeyTypeError, match="tags"):  # before: a raw TypeError for tags=5
        mem.set("k", 1, tags=tags)
    with pytest.raises(KeyTypeError, match="tags"):
        mem.set_many({"k": 1}, tags=tags)
    with pytest.raises(KeyTypeError, match="tags"):
        mem.tagged(tags)
    _assert_empty(mem, backend_name)
    with pytest.raises(InvalidKeyError, match="tags"):
        mem.set("k", 1, tags=["", "x"])
    mem.set("k", 1, tags="one tag")  # a lone str is one tag, as documented
    assert mem.tagged("one tag") == ["k"]


# -- file://: names spelled like paths stay under the root ---------------------------------
PATHLIKE = [".", "..", "../x", "../../etc", ".hidden", "..%2F", "a/../../b", "~", "./."]


def test_file_store_names_never_leave_the_root(tmp_path: Path) -> None:
    """Fails if ``keys.ns_token``/``file_name`` stop escaping a leading ``.``."""
    outer = tmp_path / "outer"
    root = outer / "inner" / "store"
    root.mkdir(parents=True)
    base = pm.open_memory(f"file://{root}")
    written: dict[str, dict[str, str]] = {}
    for ns in ["plain", *PATHLIKE]:
        mem = base.with_namespace(ns)
        values = {key: f"{ns}|{key}" for key in ["plain", *PATHLIKE]}
        for key, value in values.items():
            mem.set(key, value, tags=[key, "all"])
        written[ns] = values
    # Nothing outside the root, and nothing directly in it except namespace folders.
    outside = [p for p in outer.rglob("*") if root not in p.parents and p != root]
    assert outside == [root.parent]
    for child in root.iterdir():
        assert child.is_dir() and not child.name.startswith("."), child
    assert len(list(root.iterdir())) == len(written)
    # Every value reads back from its own namespace, and listings and tags see them all.
    reopened = pm.open_memory(f"file://{root}")
    for ns, values in written.items():
        mem = reopened.with_namespace(ns)
        assert mem.get_many(list(values)) == values
        assert sorted(mem.keys()) == sorted(values)
        assert mem.tagged("all") == sorted(values)
        assert mem.tagged("..") == [".."]
    for ns in written:
        assert reopened.with_namespace(ns).clear() == len(written[ns])

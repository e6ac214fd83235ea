"""Hybrid single writes near raw latency: one command per store, the same semantics.

A single write to MongoDB merges the old entry's metadata on the server (one guarded
upsert) instead of reading it first; these tests pin that it answers exactly what the
read-then-replace path of larger batches answers (versions, creation time, access
history, tags, TTL, expired and foreign documents, claims), and count the commands a
hybrid write-through ``set`` sends to each store (pymongo's command listener, Redis's
``INFO commandstats``: nothing is patched).
"""

from __future__ import annotations

import functools
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pymongo import monitoring

from prefect_memory.hybrid import HybridMemory
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.mongodb import _MERGE_ON_SERVER, MongoBackend

# the same namespace-token helper the backend uses for ids
_ids = MongoBackend._ids


class Commands(monitoring.CommandListener):
    """Names of the commands a client sends (no handshakes or heartbeats)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in ("hello", "isMaster", "ismaster", "endSessions", "ping"):
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _backend(mongo_server: Any, listener: Commands | None = None) -> MongoBackend:
    url = f"{mongo_server.url}&collection=single_{uuid.uuid4().hex[:8]}"
    kwargs = {"event_listeners": [listener]} if listener is not None else {}
    return MongoBackend(url, client_kwargs=kwargs)


def _record(value: bytes, at: float, **fields: Any) -> Record:
    return Record(value, at, at, at, **fields)


def _put(
    backend: MongoBackend, ns: str, key: str, record: Record, now: float, single: bool
) -> None:
    """Write ``record`` alone (merged on the server) or in a batch (read, then replaced)."""
    if single:
        backend.put_many(ns, {key: record}, now=now)
        return
    filler = {f"filler-{i}": _record(b"f", now) for i in range(_MERGE_ON_SERVER)}
    backend.put_many(ns, {key: record, **filler}, now=now)


def _stored(backend: MongoBackend, ns: str, key: str, now: float) -> Record | None:
    return backend.get_many(ns, [key], now=now, touch=False).get(key)


@pytest.mark.parametrize("single", [True, False], ids=["single", "batch"])
def test_an_overwrite_keeps_history_and_bumps_the_version(mongo_server: Any, single: bool) -> None:
    backend = _backend(mongo_server)
    t0 = time.time()
    _put(
        backend,
        "n",
        "k",
        _record(b"1", t0, ttl=600.0, expires_at=t0 + 600, tags=("a",)),
        t0,
        single,
    )
    backend.get_many("n", ["k"], now=t0 + 1, touch=True)
    backend.get_many("n", ["k"], now=t0 + 2, touch=True)
    # a write whose own last access is older than the entry's keeps the later one
    new = Record(b"2", t0 + 3, t0 + 3, t0 + 1.5, tags=("b", "c"))
    _put(backend, "n", "k", new, t0 + 3, single)
    got = _stored(backend, "n", "k", t0 + 3)
    assert got is not None
    assert (got.value, got.version, got.created_at, got.updated_at) == (b"2", 2, t0, t0 + 3)
    assert (got.access_count, got.last_access) == (2, t0 + 2)
    assert (got.tags, got.ttl, got.expires_at, got.sliding) == (("b", "c"), None, None, False)
    _put(backend, "n", "k", _record(b"3", t0 + 4, ttl=60.0, expires_at=t0 + 64), t0 + 4, single)
    got = _stored(backend, "n", "k", t0 + 4)
    assert got is not None and (got.version, got.ttl, got.created_at) == (3, 60.0, t0)
    assert got.expires_at == pytest.approx(t0 + 64, abs=1e-3)  # (BSON dates keep ms)
    backend.close()


@pytest.mark.parametrize("single", [True, False], ids=["single", "batch"])
def test_an_expired_entry_is_replaced_as_new(mongo_server: Any, single: bool) -> None:
    backend = _backend(mongo_server)
    now = time.time()
    old = _record(b"old", now - 100, ttl=1.0, expires_at=now - 99, access_count=5, version=4)
    _put(backend, "n", "k", old, now - 100, single)
    _put(backend, "n", "k", _record(b"new", now), now, single)
    got = _stored(backend, "n", "k", now)
    assert got is not None
    assert (got.value, got.version, got.created_at, got.access_count) == (b"new", 1, now, 0)
    backend.close()


@pytest.mark.parametrize("single", [True, False], ids=["single", "batch"])
def test_a_foreign_or_claimed_document_is_replaced(mongo_server: Any, single: bool) -> None:
    backend = _backend(mongo_server)
    now = time.time()
    backend.put_many("n", {"claimed": _record(b"c", now - 10)}, now=now - 10)
    coll = backend._coll()
    foreign, claimed = _ids("n", ["foreign", "claimed"])
    coll.insert_one({"_id": foreign, "ns": "n", "k": "foreign", "c": "yesterday", "z": 1})
    coll.update_one({"_id": claimed}, {"$set": {"w": "someone", "wt": now}})
    for key in ("foreign", "claimed"):
        _put(backend, "n", key, _record(key.encode(), now), now, single)
    got = backend.get_many("n", ["foreign", "claimed"], now=now, touch=False)
    assert (got["foreign"].value, got["foreign"].version, got["foreign"].created_at) == (
        b"foreign",
        1,
        now,
    )
    assert (got["claimed"].version, got["claimed"].created_at) == (2, now - 10)
    for doc in coll.find({"_id": {"$in": [foreign, claimed]}}):
        assert not {"w", "wt", "z"} & set(doc), doc  # a write replaces the whole document
    backend.close()


@pytest.mark.parametrize("single", [True, False], ids=["single", "batch"])
def test_a_record_of_another_version_is_merged_the_same(mongo_server: Any, single: bool) -> None:
    backend = _backend(mongo_server)
    now = time.time()
    _put(backend, "n", "moved", _record(b"m", now - 5, version=7), now - 5, single)
    assert _stored(backend, "n", "moved", now).version == 7  # absent: kept as written
    _put(backend, "n", "moved", _record(b"n", now, version=3), now, single)
    got = _stored(backend, "n", "moved", now)
    assert (got.value, got.version, got.created_at) == (b"n", 8, now - 5)
    backend.close()


def test_a_single_write_is_one_command_and_a_batch_two(mongo_server: Any) -> None:
    listener = Commands()
    backend = _backend(mongo_server, listener)
    now = time.time()
    backend.put_many("n", {"warm": _record(b"w", now)}, now=now)  # (indexes: once)
    for label, records in (
        ("one new", {"a": _record(b"1", now)}),
        ("one over", {"a": _record(b"2", now + 1)}),
        ("few", {f"f{i}": _record(b"3", now) for i in range(_MERGE_ON_SERVER)}),
        ("many", {f"m{i}": _record(b"4", now) for i in range(_MERGE_ON_SERVER + 1)}),
    ):
        listener.names.clear()
        backend.put_many("n", records, now=now + 1)
        expected = ["find", "update"] if label == "many" else ["update"]
        assert listener.names == expected, label
    backend.close()


def _redis_commands(client: Any, marker: Any, call: Any) -> list[str]:
    """The commands clients send to Redis during ``call`` (not those its scripts run).

    ``marker`` is another client, already connected, that marks the end.
    """
    with client.monitor() as monitor:  # (MONITOR is on once this returns)
        call()
        marker.echo("pm-test-end")
        seen: list[str] = []
        while True:
            command = monitor.next_command()
            if command["command"] == "ECHO pm-test-end":
                return seen
            if command.get("client_type") != "lua":
                seen.append(command["command"].split()[0].upper())


def test_a_write_through_set_is_one_command_per_store(
    redis_server: Any, mongo_server: Any, tmp_path: Path
) -> None:
    import redis

    listener = Commands()
    mem = HybridMemory(
        redis_server.url,
        f"{mongo_server.url}&collection=single_{uuid.uuid4().hex[:8]}",
        journal=str(tmp_path / "j.db"),
        namespace=f"single-{uuid.uuid4().hex[:6]}",
        secondary_options={"client_kwargs": {"event_listeners": [listener]}},
    )
    mem.set("warm", 0)
    client, marker = redis.Redis.from_url(redis_server.url), redis.Redis.from_url(redis_server.url)
    marker.ping()
    for value in (1, 2):
        listener.names.clear()
        write = functools.partial(mem.set, "k", value, ttl=600, tags=["t"])
        assert _redis_commands(client, marker, write) == ["EVALSHA"]
        assert listener.names == ["update"]
    now = time.time()
    first = mem.primary.get_many(mem.namespace, ["k"], now=now)["k"]
    second = mem.secondary.get_many(mem.namespace, ["k"], now=now)["k"]
    assert (first.version, second.version) == (2, 2)
    assert first.created_at == second.created_at and first.tags == second.tags == ("t",)
    assert mem.get("k") == 2
    client.close()
    marker.close()
    mem.close()

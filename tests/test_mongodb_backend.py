"""MongoDB backend specifics against the real wire-protocol server (no mocks).

The wire server is slow per insert (each one scans the collection), so every test uses
its own small collection. Costs are measured in commands (pymongo's CommandListener).
"""

from __future__ import annotations

import pickle
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from pymongo import monitoring
from pymongo.errors import AutoReconnect, ExecutionTimeout, NetworkTimeout, OperationFailure

import prefect_memory as pm
from prefect_memory.memory import Memory
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.mongodb import MongoBackend

pytestmark = pytest.mark.mongodb

#: Commands a driver sends on its own (handshakes, sessions), not part of a batch.
_HOUSEKEEPING = {"hello", "ismaster", "isMaster", "endSessions", "saslStart", "saslContinue"}


class Commands(monitoring.CommandListener):
    """Records the name (and document) of every command this client sends."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in _HOUSEKEEPING:
            with self._lock:
                self.events.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def reset(self) -> None:
        with self._lock:
            self.events.clear()

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        """The commands recorded so far (and forget them)."""
        with self._lock:
            events, self.events = self.events, []
        return events

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def during(self, action: Callable[[], Any]) -> list[str]:
        """The commands ``action`` sends."""
        self.reset()
        action()
        return self.names


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_param(url: str, param: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{param}"


@pytest.fixture
def mongo_url(mongo_server: Any) -> str:
    """URL of a fresh collection on the test server."""
    return _with_param(mongo_server.url, f"collection=t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def opened() -> Iterator[list[Memory]]:
    mems: list[Memory] = []
    yield mems
    for mem in mems:
        mem.close()


@pytest.fixture
def open_mongo(mongo_url: str, opened: list[Memory]) -> Callable[..., Memory]:
    def _open(**options: Any) -> Memory:
        options.setdefault("namespace", "ns-" + uuid.uuid4().hex[:6])
        mem = pm.open_memory(mongo_url, **options)
        opened.append(mem)
        return mem

    return _open


# -- configuration (no server needed) ----------------------------------------------------------


def test_url_parsing_and_defaults() -> None:
    backend = MongoBackend.from_url("mongodb://db.example/?collection=c1&replicaSet=rs0")
    assert (backend.database, backend.collection, backend.hosts) == (
        "prefect_memory",
        "c1",
        "db.example:27017",
    )
    assert backend._client_url.value == "mongodb://db.example/?replicaSet=rs0"
    backend = MongoBackend.from_url("mongodb://h1:1,h2:2/app")
    assert (backend.database, backend.collection, backend.hosts) == (
        "app",
        "prefect_memory",
        "h1:1,h2:2",
    )
    backend = MongoBackend.from_url(
        "mongodb://h/app?collection=fromurl", collection="opt", database="db2", timeout=2
    )
    assert (backend.database, backend.collection, backend.timeout) == ("db2", "opt", 2.0)
    assert pm.open_backend("mongodb+srv://cluster.example/app").hosts == "cluster.example"


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(pm.ConfigError, match="bogus") as info:
        MongoBackend.from_url("mongodb://h/db", bogus=1, timeout=1)
    assert "timeout" not in str(info.value).split("(known")[0]
    with pytest.raises(pm.ConfigError, match="timeout"):
        MongoBackend.from_url("mongodb://h/db", timeout=0)
    with pytest.raises(pm.ConfigError, match="write_concern"):
        MongoBackend.from_url("mongodb://h/db", write_concern=0)
    with pytest.raises(pm.ConfigError, match="database"):
        MongoBackend.from_url("mongodb://h/bad.name")
    with pytest.raises(pm.ConfigError, match="collection"):
        MongoBackend.from_url("mongodb://h/db?collection=a$b")
    with pytest.raises(pm.ConfigError):
        MongoBackend.from_url("mongodb:///db")
    backend = MongoBackend.from_url("mongodb://h/db", client_kwargs={"notAnOption": 1})
    with pytest.raises(pm.ConfigError, match="notAnOption"):
        backend.ping()
    assert MongoBackend.from_url("mongodb://h/db", write_concern="majority").write_concern


def test_password_is_never_shown() -> None:
    port = _dead_port()
    url = f"mongodb://alice:hunter2pw@127.0.0.1:{port}/db?authSource=admin&collection=c"
    mem = pm.open_memory(url, timeout=0.5)
    assert "hunter2pw" not in repr(mem) and "hunter2pw" not in repr(mem.backend)
    assert "alice:***@" in repr(mem.backend)
    assert "hunter2pw" not in repr(vars(mem.backend))
    with pytest.raises(pm.BackendUnavailable) as info:
        mem.get("k")
    assert "hunter2pw" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)

    secret = MongoBackend.from_url(
        f"mongodb://127.0.0.1:{port}/db?tlsCertificateKeyFilePassword=filepw",
        username="bob",
        password=SecretStr("s3cr3t-value"),
    )
    shown = repr(secret) + repr(vars(secret))
    assert "s3cr3t-value" not in shown and "filepw" not in shown
    clone = pickle.loads(pickle.dumps(secret))  # the password travels (it must reconnect)
    assert clone._password.value == "s3cr3t-value"


def test_error_translation() -> None:
    backend = MongoBackend.from_url("mongodb://u:pw-in-msg@127.0.0.1:1/db")
    cases = [
        (AutoReconnect("connection reset"), pm.BackendUnavailable),
        (NetworkTimeout("timed out"), pm.BackendTimeout),
        (ExecutionTimeout("operation exceeded time limit", 50), pm.BackendTimeout),
        (OperationFailure("boom pw-in-msg", 2), pm.BackendError),
    ]
    for raised, expected in cases:
        with pytest.raises(expected) as info, backend._errors("test"):
            raise raised
        assert info.value.__cause__ is raised
        assert "pw-in-msg" not in str(info.value)
        assert "127.0.0.1:1" in str(info.value)
    with pytest.raises(pm.BackendError) as info, backend._errors("test"):
        raise OperationFailure("plain failure", 2)
    assert not isinstance(info.value, pm.BackendUnavailable)


# -- a server that is not there ----------------------------------------------------------------


def test_dead_server_is_unavailable_quickly() -> None:
    mem = pm.open_memory(f"mongodb://127.0.0.1:{_dead_port()}/db?directConnection=true", timeout=1)
    for action in (
        lambda: mem.set("k", 1),
        lambda: mem.get("k"),
        mem.ping,
        lambda: list(mem.keys()),
    ):
        started = time.monotonic()
        with pytest.raises(pm.BackendUnavailable) as info:
            action()
        assert time.monotonic() - started < 4
        assert isinstance(info.value, ConnectionError)
    mem.close()


def test_silent_server_does_not_hang() -> None:
    """Something accepts TCP connections but never answers: unavailable, not a hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        mem = pm.open_memory(f"mongodb://127.0.0.1:{port}/db?directConnection=true", timeout=1)
        started = time.monotonic()
        with pytest.raises(pm.BackendUnavailable):
            mem.get("k")
        assert time.monotonic() - started < 5
        mem.close()


# -- on the wire server ------------------------------------------------------------------------


def test_commands_per_batch_are_constant(open_mongo: Callable[..., Memory]) -> None:
    listener = Commands()
    mem = open_mongo(client_kwargs={"event_listeners": [listener]})
    assert "createIndexes" in listener.during(lambda: mem.exists("warm-up"))
    assert listener.during(lambda: mem.exists("warm-up")) == ["find"]  # indexes: once

    small = {f"s:{i:03d}": i for i in range(20)}
    large = {f"l:{i:03d}": i for i in range(200)}
    sliding = {f"w:{i:03d}": i for i in range(20)}
    cost: dict[str, list[str]] = {}
    for name, data in (("small", small), ("large", large)):
        cost[f"set {name}"] = listener.during(lambda d=data: mem.set_many(d, tags=["t"]))
        cost[f"overwrite {name}"] = listener.during(
            lambda d=data: mem.set_many(d, ttl=600, tags=["t"])
        )
        cost[f"get {name}"] = listener.during(lambda d=data: mem.get_many(list(d)))
        assert mem.get_many(list(data)) == data
    cost["set one"] = listener.during(lambda: mem.set("one", 1, tags=["t"]))
    cost["overwrite one"] = listener.during(lambda: mem.set("one", 2, ttl=600))
    mem.set_many(sliding, ttl=60, refresh=True)
    mixed = [*sliding, *list(small)[:5], "missing"]
    cost["get sliding"] = listener.during(lambda: mem.get_many(mixed))
    cost["info"] = listener.during(lambda: mem.info("l:000"))
    cost["exists"] = listener.during(lambda: mem.exists("l:000"))
    cost["keys"] = listener.during(lambda: list(mem.keys("l:*")))
    cost["missing"] = listener.during(lambda: mem.get_many(["nope", "nada"]))
    cost["delete large"] = listener.during(lambda: mem.delete_many(list(large)))
    cost["purge"] = listener.during(mem.purge_expired)
    cost["invalidate"] = listener.during(lambda: mem.invalidate_tags("t", "u"))
    cost["clear"] = listener.during(mem.clear)

    assert cost["set small"] == cost["set large"] == ["find", "update"], cost
    assert cost["overwrite large"] == ["find", "update"], cost
    # a single write: one command, the old metadata is merged on the server
    assert cost["set one"] == cost["overwrite one"] == ["update"], cost
    assert cost["get small"] == cost["get large"] == ["find", "update"], cost
    assert cost["get sliding"] == ["find", "update"], cost
    assert cost["info"] == cost["exists"] == cost["keys"] == cost["missing"] == ["find"], cost
    assert cost["delete large"] == ["delete", "delete"], cost
    assert cost["purge"] == ["delete"], cost
    assert cost["invalidate"] == ["find", "delete", "delete"], cost
    assert cost["clear"] == ["delete", "delete"], cost
    print("commands per operation:", cost)


def test_query_shapes(open_mongo: Callable[..., Memory]) -> None:
    listener = Commands()
    mem = open_mongo(client_kwargs={"event_listeners": [listener]})
    mem.set_many({"item:1": 1, "item:2": 2, "it.em": 3, "a[1]": 4, "a1": 5}, tags=["x"])
    listener.reset()
    assert sorted(mem.keys("item:*")) == ["item:1", "item:2"]
    assert sorted(mem.keys("it.*")) == ["it.em"]
    assert list(mem.keys("a[[]1]")) == ["a[1]"]
    assert list(mem.keys("a1")) == ["a1"]
    finds = [cmd for name, cmd in listener.events if name == "find"]
    first = finds[0]
    assert first["filter"]["k"] == {"$regex": "^item:"}
    assert first["filter"]["ns"] == mem.namespace
    assert dict(first["sort"]) == {"k": 1} and first["batchSize"] == 1000
    assert dict(first["projection"]) == {"k": 1, "_id": 0}
    assert finds[1]["filter"]["k"] == {"$regex": "^it\\."}
    assert finds[3]["filter"]["k"] == "a1"  # a literal pattern is an equality
    listener.reset()
    mem.set("item:1", 10)
    assert listener.names == ["update"]  # the old metadata is merged on the server
    (upsert,) = listener.events[0][1]["updates"]
    assert upsert["upsert"] and upsert["q"]["_id"].endswith(":item:1")
    listener.reset()  # a record of another version takes the general path: find, replace
    record = Record(b"\x0a", 1.0, 1.0, 1.0, version=3)
    mem.backend.put_many(mem.namespace, {"item:2": record}, now=time.time())
    old_meta = next(cmd for name, cmd in listener.events if name == "find")
    assert "v" not in dict(old_meta["projection"])


def _index_names(mongo_server: Any, mem: Memory) -> set[str]:
    client = mongo_server.client()
    try:
        coll = client[mem.backend.database][mem.backend.collection]
        return {ix["name"] for ix in coll.list_indexes()}
    finally:
        client.close()


def test_indexes(open_mongo: Callable[..., Memory], mongo_server: Any) -> None:
    mem = open_mongo()
    mem.set("k", 1, ttl=60)
    backend = mem.backend
    client = mongo_server.client()
    try:
        indexes = {
            ix["name"]: ix for ix in client[backend.database][backend.collection].list_indexes()
        }
    finally:
        client.close()
    ttl = indexes["pm_expiry_ttl"]
    assert dict(ttl["key"]) == {"x": 1} and ttl["expireAfterSeconds"] == 0
    assert dict(indexes["pm_ns_k"]["key"]) == {"ns": 1, "k": 1}
    assert dict(indexes["pm_ns_g"]["key"]) == {"ns": 1, "g": 1}


def test_document_layout(open_mongo: Callable[..., Memory], mongo_server: Any) -> None:
    mem = open_mongo(namespace="a:b")
    mem.set("c", "v", ttl=60, tags=["t1", "t2"])
    backend = mem.backend
    client = mongo_server.client(tz_aware=True)
    try:
        doc = client[backend.database][backend.collection].find_one({"_id": "a%3Ab:c"})
    finally:
        client.close()
    assert doc is not None
    assert set(doc) == {"_id", "ns", "k", "v", "c", "u", "a", "n", "x", "l", "s", "g", "r"}
    assert (doc["ns"], doc["k"], doc["g"], doc["r"], doc["n"]) == ("a:b", "c", ["t1", "t2"], 1, 0)
    assert doc["l"] == 60 and doc["s"] is False
    assert abs(doc["x"].timestamp() - (doc["c"] + 60)) < 0.01


def test_expired_documents_are_filtered_before_the_ttl_monitor(
    open_mongo: Callable[..., Memory],
) -> None:
    """The server has not expired them yet (its clock is behind ours): reads still must."""
    clock = [time.time()]
    mem = open_mongo()
    mem.clock = lambda: clock[0]
    mem.set("gone", 1, ttl=10, tags=["t"])
    mem.set("kept", 2, tags=["t"])
    mem.get("gone")
    clock[0] += 20
    assert mem.get("gone") is None and not mem.exists("gone") and mem.info("gone") is None
    assert list(mem.keys()) == ["kept"]
    assert mem.backend.tagged(mem.namespace, ["t"], now=clock[0]) == {"kept"}
    assert mem.delete("gone") is False  # not live: not counted
    mem.set("gone2", 3, ttl=10)
    clock[0] += 20
    mem.set("gone2", 4)  # written over an expired entry: a new entry
    info = mem.info("gone2")
    assert (info.version, info.access_count) == (1, 0)
    mem.set("gone3", 5, ttl=10)
    clock[0] += 20
    assert mem.purge_expired() == 1
    assert mem.clear() == 2


def test_restart_reconnects(open_mongo: Callable[..., Memory], mongo_server: Any) -> None:
    if mongo_server.external:
        pytest.skip("cannot restart an external MongoDB server")
    mem = open_mongo(timeout=2)
    mem.set("k", 1)
    mongo_server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(pm.BackendUnavailable):
            mem.get("k")
        assert time.monotonic() - started < 6
    finally:
        mongo_server.restart()
    # The in-memory engine lost the data: only reconnection is checked.
    mem.set("k", 2)
    assert mem.get("k") == 2
    assert "pm_expiry_ttl" in _index_names(mongo_server, mem)  # ensured again after the outage
    mem.ping()
    mongo_server.restart()  # graceful this time, with the client connected
    mem.set("k", 3)
    assert mem.get("k") == 3


def test_pickled_memory_reconnects(open_mongo: Callable[..., Memory], opened: list[Memory]) -> None:
    mem = open_mongo()
    mem.set("k", {"v": 1})
    data = pickle.dumps(mem)
    clone = pickle.loads(data)
    opened.append(clone)
    assert clone.backend._client is None
    assert clone.get("k") == {"v": 1}
    clone.set("k2", 2)
    assert mem.get("k2") == 2
    assert clone.backend._client is not mem.backend._client


def test_close_then_reuse_and_threads(open_mongo: Callable[..., Memory]) -> None:
    mem = open_mongo()
    mem.set("k", 0)
    mem.close()
    assert mem.backend._client is None
    assert mem.get("k") == 0  # a new client on next use
    clients: set[int] = set()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            mem.set(f"t:{i}", i)
            assert mem.get(f"t:{i}") == i
            clients.add(id(mem.backend._client))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(clients) == 1
    assert sorted(mem.keys("t:*")) == [f"t:{i}" for i in range(8)]

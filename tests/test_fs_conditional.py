"""Atomic moves of the fsspec backend: S3 conditional requests and locked local folders.

``put_absent_many`` and ``delete_if_unchanged`` must be atomic per key against OTHER
PROCESSES (``capabilities.atomic_moves``). The races here run real processes (``spawn``)
against the real S3 server (SeaweedFS) and a temporary folder; the first test records what
SeaweedFS itself enforces, on which the S3 half rests.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins import fs_atomic as atomic
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.fs import FsspecBackend

KEYS = [f"k{i:03d}" for i in range(100)]


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """URL and options of a fresh store (a folder, or a prefix of an S3 bucket)."""
    if request.param == "file":
        return f"file://{tmp_path}/store", {}
    server = request.getfixturevalue("s3_server")
    server.make_bucket("pm-fs-cond")
    return f"s3://pm-fs-cond/{uuid.uuid4().hex[:10]}", {"storage_options": server.storage_options}


def _record(value: bytes, now: float, **fields: Any) -> Record:
    return Record(value, now, now, now, **fields)


def _race(
    roles: list[str],
    store: tuple[str, dict[str, Any]],
    ns: str,
    tokens: dict[str, tuple[int, float]] | None = None,
) -> list[set[str]]:
    """Run one process per role on the same keys, all released at once; their reports."""
    from _fs_racer import race

    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    url, options = store
    procs = [
        ctx.Process(target=race, args=(role, n, url, options, ns, KEYS, tokens, ready, go))
        for n, role in enumerate(roles)
    ]
    for proc in procs:
        proc.start()
    try:
        reports: dict[int, Any] = {}
        started, deadline = 0, time.monotonic() + 180
        suspects: set[int] = set()
        while len(reports) < len(procs):
            try:
                kind, n, payload = ready.get(timeout=1)
            except queue.Empty:
                # A process that reported and ended (exit 0) is done, not dead; one that
                # ended without a report is dead once a second wait brought nothing from it
                # (its last message may have been in the pipe as it ended).
                gone = {i for i, p in enumerate(procs) if p.exitcode is not None} - set(reports)
                dead = [procs[i].exitcode for i in gone & suspects]
                assert not dead, f"a racing process died (exit codes {dead})"
                suspects = gone
                assert time.monotonic() < deadline, "the race did not finish in 180 s"
                continue
            if kind == "ready":
                started += 1
                if started == len(procs):
                    go.set()
            else:
                assert kind == "done", f"process {n} ({roles[n]}) failed:\n{payload}"
                reports[n] = set(payload)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    return [reports[n] for n in range(len(procs))]


def _markers(backend: FsspecBackend, ns: str, tag: str, keys: list[str]) -> dict[str, bytes]:
    """The tag markers of ``keys`` that exist (``tagged`` would also list the empty
    folder SeaweedFS keeps once its last marker is gone)."""
    return backend._cat([backend._marker(ns, tag, key) for key in keys])


# -- what SeaweedFS enforces ----------------------------------------------------------------


def test_seaweedfs_enforces_the_conditional_requests_used(s3_server: Any) -> None:
    """Measured on the test server: every condition the backend relies on is checked."""
    bucket = s3_server.make_bucket("pm-fs-cond")
    client = s3_server.boto_client(retries={"max_attempts": 1})
    key = f"probe/{uuid.uuid4().hex}"

    def code(call: Callable[[], Any]) -> str:
        try:
            call()
        except Exception as err:  # botocore ClientError
            return str(err.response["Error"]["Code"])  # type: ignore[attr-defined]
        return "ok"

    put = client.put_object
    assert code(lambda: put(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")) == "ok"
    assert code(lambda: put(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")) == (
        "PreconditionFailed"
    )
    etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
    ranged = client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")
    assert ranged["ETag"] == etag  # a ranged read names the whole object's ETag
    assert code(lambda: put(Bucket=bucket, Key=key, Body=b"3", IfMatch='"0"')) == (
        "PreconditionFailed"
    )
    assert code(lambda: put(Bucket=bucket, Key=key, Body=b"4", IfMatch=etag)) == "ok"
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"4"
    delete = client.delete_object
    assert code(lambda: delete(Bucket=bucket, Key=key, IfMatch=etag)) == "PreconditionFailed"
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"4"  # still there
    etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
    assert code(lambda: delete(Bucket=bucket, Key=key, IfMatch=etag)) == "ok"
    assert code(lambda: client.head_object(Bucket=bucket, Key=key)) == "404"
    # on a key that is gone, If-Match is refused (AWS says 404 NoSuchKey): never "deleted"
    assert code(lambda: delete(Bucket=bucket, Key=key, IfMatch=etag)) in (
        "PreconditionFailed",
        "NoSuchKey",
    )

    # Racing creates: exactly one of 8 concurrent If-None-Match PUTs wins, every round.
    clients = [s3_server.boto_client(retries={"max_attempts": 1}) for _ in range(8)]
    for round_ in range(5):
        race_key = f"{key}-race{round_}"
        wins = _racing_creates(clients, bucket, race_key, code)
        assert len(wins) == 1, wins
        body = client.get_object(Bucket=bucket, Key=race_key)["Body"].read()
        assert body == b"%d" % wins[0]


def _racing_creates(clients: list[Any], bucket: str, key: str, code: Any) -> list[int]:
    """Every client PUTs ``key`` with ``If-None-Match: *`` at once; those that succeeded."""
    barrier, wins = threading.Barrier(len(clients)), []

    def create(n: int) -> None:
        body = b"%d" % n
        barrier.wait()
        put = clients[n].put_object
        if code(lambda: put(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")) == "ok":
            wins.append(n)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return wins


def test_conditional_headers_reach_the_server(s3_server: Any) -> None:
    """botocore sends the headers (s3fs filters unknown parameters out silently)."""
    s3_server.make_bucket("pm-fs-cond")
    options = {**s3_server.storage_options, "skip_instance_cache": True}  # (a client of its own)
    backend = FsspecBackend(f"s3://pm-fs-cond/{uuid.uuid4().hex[:10]}", storage_options=options)
    sent: list[tuple[str, str | None, str | None]] = []

    def capture(request: Any, **_: Any) -> None:
        headers = request.headers
        sent.append((request.method, headers.get("If-None-Match"), headers.get("If-Match")))

    assert backend.capabilities.atomic_moves  # (the one-time check runs before the capture)
    backend.fs._s3.meta.events.register("before-send.s3", capture)
    now = time.time()
    assert backend.put_absent_many("n", {"k": _record(b"v", now)}, now=now) == {"k"}
    token = backend.get_many("n", ["k"], now=now)["k"].token
    assert backend.delete_if_unchanged("n", {"k": token}, now=now) == {"k"}
    puts = [s for s in sent if s[0] == "PUT"]
    deletes = [s for s in sent if s[0] == "DELETE"]
    assert puts and puts[0][1] in ("*", b"*")
    assert deletes and deletes[0][2]


# -- capabilities -----------------------------------------------------------------------------


def test_atomic_moves_per_url(tmp_path: Path, s3_server: Any) -> None:
    local = pm.open_memory(f"file://{tmp_path}")
    assert local.backend.capabilities.atomic_moves
    s3_server.make_bucket("pm-fs-cond")
    s3 = pm.open_memory("s3://pm-fs-cond/p", storage_options=s3_server.storage_options)
    assert s3.backend.capabilities.atomic_moves  # SeaweedFS passed the check
    assert [p for p in s3.backend.fs.find("pm-fs-cond/p") if "probe" in p] == []  # removed
    plain = pm.open_memory("s3://pm-fs-cond/p", conditional_writes=False)
    assert not plain.backend.capabilities.atomic_moves
    assert not FsspecBackend("memory://x").capabilities.atomic_moves
    assert local.backend.capabilities.persistent  # the rest as before
    unreachable = pm.open_memory("s3://nope/p", storage_options={"key": "k", "secret": "s",
                                 "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}},
                                 timeout=1, retries=1)  # fmt: skip
    assert not unreachable.backend.capabilities.atomic_moves  # unknown: not promised


def test_a_server_ignoring_conditions_is_not_trusted(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that ignores If-None-Match / If-Match (as MinIO ignores If-Match on
    DeleteObject) is found out by the one-time check: check then act, no atomic_moves."""
    from prefect_memory.plugins import fs as fs_module

    monkeypatch.setattr(fs_module, "_ENFORCED", {})
    s3_server.make_bucket("pm-fs-cond")
    options = {**s3_server.storage_options, "skip_instance_cache": True}
    backend = FsspecBackend(f"s3://pm-fs-cond/{uuid.uuid4().hex[:10]}", storage_options=options)

    def ignore_conditions(params: dict[str, Any], **_: Any) -> None:
        params.pop("IfMatch", None)
        params.pop("IfNoneMatch", None)

    backend.fs.connect()
    for op in ("PutObject", "DeleteObject"):
        backend.fs._s3.meta.events.register(f"before-parameter-build.s3.{op}", ignore_conditions)
    with caplog.at_level("WARNING", logger="prefect_memory.plugins.fs"):
        assert not backend.capabilities.atomic_moves
    assert "does not enforce conditional requests" in caplog.text
    assert [p for p in backend.fs.find(backend.root) if "probe" in p] == []  # removed
    now = time.time()
    assert backend.put_absent_many("n", {"a": _record(b"1", now)}, now=now) == {"a"}
    assert backend.put_absent_many("n", {"a": _record(b"2", now)}, now=now) == set()
    token = backend.get_many("n", ["a"], now=now)["a"].token
    assert backend.delete_if_unchanged("n", {"a": (token[0], 0.0)}, now=now) == set()
    assert backend.delete_if_unchanged("n", {"a": token}, now=now) == {"a"}


# -- processes racing -------------------------------------------------------------------------


def test_processes_racing_put_absent_have_one_winner_per_key(store: tuple[str, Any]) -> None:
    """4 processes put_absent the same 100 keys: 60 absent, 30 expired, 10 live. Each
    absent or expired key is won by exactly one, and holds the winner's value; live keys
    are won by none and keep their value."""
    url, options = store
    backend = FsspecBackend.from_url(url, **options)
    ns, now = "race-put", time.time()
    expired, live = KEYS[60:90], KEYS[90:]
    old = _record(b"old", now - 20, expires_at=now - 10, ttl=10.0, tags=("gone",))
    backend.put_many(ns, dict.fromkeys(expired, old), now=now)
    backend.put_many(ns, dict.fromkeys(live, _record(b"live", now)), now=now)

    won = _race(["put_absent"] * 4, store, ns)

    for a in range(4):
        for b in range(a + 1, 4):
            assert not won[a] & won[b], f"keys won twice: {sorted(won[a] & won[b])[:5]}"
    assert set().union(*won) == set(KEYS[:90])
    stored = backend.get_many(ns, KEYS, now=time.time())
    assert stored.keys() == set(KEYS)
    for n, keys in enumerate(won):
        for key in keys:
            assert stored[key].value == f"w{n}".encode(), key
    assert all(stored[key].value == b"live" for key in live)
    assert _markers(backend, ns, "gone", expired) == {}  # those of the expired entries


def test_processes_racing_deletes_never_delete_an_overwrite(store: tuple[str, Any]) -> None:
    """4 processes delete_if_unchanged 100 keys while a 5th overwrites them all: every key
    ends up holding the overwrite (a delete either came first or was refused), and no key
    is deleted twice."""
    url, options = store
    backend = FsspecBackend.from_url(url, **options)
    ns, now = "race-delete", time.time()
    backend.put_many(ns, dict.fromkeys(KEYS, _record(b"old", now, tags=("t",))), now=now)
    tokens = {k: r.token for k, r in backend.get_many(ns, KEYS, now=now).items()}

    *deleted, written = _race(["delete"] * 4 + ["overwrite"], store, ns, tokens)

    assert written == set(KEYS)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not deleted[a] & deleted[b], f"deleted twice: {sorted(deleted[a] & deleted[b])}"
    stored = backend.get_many(ns, KEYS, now=time.time())
    lost = sorted(set(KEYS) - stored.keys())
    assert not lost, f"overwritten values deleted: {lost[:10]} ({len(lost)})"
    assert {k for k, r in stored.items() if r.value != b"new"} == set()
    assert _markers(backend, ns, "t", KEYS) == {}  # the overwrite has no tags


# -- the exact windows, made to happen ------------------------------------------------------


def test_s3_overwrite_between_read_and_delete_is_kept(s3_server: Any) -> None:
    s3_server.make_bucket("pm-fs-cond")
    url = f"s3://pm-fs-cond/{uuid.uuid4().hex[:10]}"
    backend = FsspecBackend(url, storage_options=s3_server.storage_options)
    other = FsspecBackend(url, storage_options=s3_server.storage_options)
    now = time.time()
    backend.put_many("n", {"k": _record(b"old", now, tags=("t",))}, now=now)
    token = backend.get_many("n", ["k"], now=now)["k"].token
    read = backend._s3_read

    def read_then_overwrite(ns: str, keys: Any) -> Any:
        out = read(ns, keys)  # the token matches here ...
        other.put_many("n", {"k": _record(b"new", now + 1, tags=("t",))}, now=now + 1)
        return out

    backend._s3_read = read_then_overwrite  # type: ignore[method-assign]
    assert backend.delete_if_unchanged("n", {"k": token}, now=now) == set()  # ... refused
    assert other.get_many("n", ["k"], now=now)["k"].value == b"new"
    assert other.tagged("n", ["t"], now=now) == {"k"}


def test_s3_expired_entry_rewritten_meanwhile_is_not_replaced(s3_server: Any) -> None:
    s3_server.make_bucket("pm-fs-cond")
    url = f"s3://pm-fs-cond/{uuid.uuid4().hex[:10]}"
    backend = FsspecBackend(url, storage_options=s3_server.storage_options)
    other = FsspecBackend(url, storage_options=s3_server.storage_options)
    now = time.time()
    backend.put_many("n", {"k": _record(b"old", now - 9, expires_at=now - 1)}, now=now - 9)
    read = backend._s3_read
    calls = []

    def read_then_overwrite(ns: str, keys: Any) -> Any:
        out = read(ns, keys)  # expired here ...
        if not calls:
            other.put_many("n", {"k": _record(b"live", now)}, now=now)
        calls.append(keys)
        return out

    backend._s3_read = read_then_overwrite  # type: ignore[method-assign]
    assert backend.put_absent_many("n", {"k": _record(b"mine", now)}, now=now) == set()
    assert other.get_many("n", ["k"], now=now)["k"].value == b"live"
    assert len(calls) == 2  # refused (If-Match), read again: live


def test_local_overwrite_waits_for_a_conditional_delete(tmp_path: Path) -> None:
    """In a folder the check and the delete hold the namespace lock: an overwrite started
    in between waits for it, then lands (it is never deleted)."""
    url = f"file://{tmp_path}"
    backend, other = FsspecBackend(url), FsspecBackend(url)
    now = time.time()
    backend.put_many("n", {"k": _record(b"old", now)}, now=now)
    token = backend.get_many("n", ["k"], now=now)["k"].token
    load = backend._load
    writer = threading.Thread(
        target=other.put_many, args=("n", {"k": _record(b"new", now + 1)}), kwargs={"now": now}
    )

    def load_then_overwrite(ns: str, keys: Any, *, values: bool) -> Any:
        out = load(ns, keys, values=values)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive(), "a put_many got in between the check and the delete"
        return out

    backend._load = load_then_overwrite  # type: ignore[method-assign]
    assert backend.delete_if_unchanged("n", {"k": token}, now=now) == {"k"}
    writer.join(10)
    assert other.get_many("n", ["k"], now=now)["k"].value == b"new"


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_touch_statistics_left_by_a_delete_do_not_apply_to_a_new_entry(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A touch racing a delete may leave statistics behind; they name their write, so a
    later entry of the key keeps its own expiry and count."""
    if kind == "file":
        url, options = f"file://{tmp_path}", {}
    else:
        server = request.getfixturevalue("s3_server")
        server.make_bucket("pm-fs-cond")
        url = f"s3://pm-fs-cond/{uuid.uuid4().hex[:10]}"
        options = {"storage_options": server.storage_options}
    backend = FsspecBackend.from_url(url, **options)
    now = time.time()
    sliding = _record(b"old", now, ttl=5.0, sliding=True, expires_at=now + 5)
    backend.put_many("n", {"k": sliding}, now=now)
    backend.get_many("n", ["k"], now=now, touch=True)
    stats = backend._cat([backend._stats("n", "k")])
    backend.delete_many("n", ["k"], now=now)
    backend._write(stats)  # the touch that lost the race writes after the delete
    assert backend.put_absent_many("n", {"k": _record(b"new", now + 1)}, now=now + 1) == {"k"}
    record = backend.get_many("n", ["k"], now=now + 100)["k"]
    assert (record.value, record.expires_at, record.access_count) == (b"new", None, 0)


def test_local_put_absent_leaves_no_temporary_files(tmp_path: Path) -> None:
    backend = FsspecBackend(f"file://{tmp_path}")
    now = time.time()
    assert backend.put_absent_many("n", {"a": _record(b"1", now)}, now=now) == {"a"}
    assert backend.put_absent_many("n", {"a": _record(b"2", now)}, now=now) == set()
    assert [p.name for p in tmp_path.rglob(".tmp-*")] == []
    assert atomic.link_new(str(tmp_path / "n" / "e" / "a"), b"x") is False

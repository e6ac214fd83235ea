"""fsspec backend specifics on the real S3 server (SeaweedFS) and local folders."""

from __future__ import annotations

import os
import pickle
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.fs import MAGIC, delete_errors


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_url(s3_server: Any) -> str:
    s3_server.make_bucket("pm-fs-tests")
    return f"s3://pm-fs-tests/{uuid.uuid4().hex[:8]}"


def test_dead_s3_endpoint_is_unavailable_quickly() -> None:
    options = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{_dead_port()}"},
    }
    mem = pm.open_memory("s3://bucket/x", storage_options=options, timeout=1)
    started = time.monotonic()
    with pytest.raises(pm.BackendUnavailable) as info:
        mem.set("k", 1)
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 15
    with pytest.raises(pm.BackendUnavailable):
        mem.get("k")


def test_wrong_credentials_are_an_error_not_a_miss(s3_server: Any, s3_url: str) -> None:
    good = pm.open_memory(s3_url, storage_options=s3_server.storage_options, namespace="n")
    good.set("k", 1)
    bad_options = {**s3_server.storage_options, "secret": "wrong-secret"}
    bad = pm.open_memory(s3_url, storage_options=bad_options, namespace="n", timeout=2)
    with pytest.raises(pm.PrefectMemoryError):
        bad.get("k")


def test_a_missing_bucket_is_an_error_not_an_empty_store(s3_server: Any, s3_url: str) -> None:
    """s3fs reports NoSuchBucket as FileNotFoundError; read as "no entries", a replayed
    delete would look done. Every operation must fail instead."""
    options = s3_server.storage_options
    mem = pm.open_memory(s3_url.replace("pm-fs-tests", "pm-no-such-bucket"),
                         storage_options=options, namespace="n")  # fmt: skip
    for call in (
        lambda: mem.get("k"),
        lambda: mem.exists("k"),
        lambda: mem.delete("k"),
        lambda: list(mem.keys()),
        lambda: mem.set("k", 1),
    ):
        with pytest.raises(pm.BackendError, match="bucket"):
            call()


def test_s3_batch_delete_removes_every_object_it_names(s3_server: Any, s3_url: str) -> None:
    mem = pm.open_memory(s3_url, storage_options=s3_server.storage_options, namespace="del")
    keys = [f"k{i:04d}" for i in range(1100)]  # two DeleteObjects calls (1000 per call)
    mem.set_many(dict.fromkeys(keys, 1), tags=["t"])
    assert mem.delete_many([*keys, "never-written"]) == 1100
    fs = mem.backend.fs
    left = fs.find(mem.backend.root + "/del")  # SeaweedFS may keep the empty folder
    assert [p for p in left if {"e", "a", "t"} & set(p.split("/"))] == []  # entries, stats, tags
    assert mem.get_many(keys) == {}


def test_retries_is_this_backends_own(s3_server: Any, s3_url: str) -> None:
    from prefect_memory.plugins.fs import FsspecBackend

    options = s3_server.storage_options
    fast = FsspecBackend(s3_url, storage_options=options, retries=1)
    usual = FsspecBackend(s3_url, storage_options=options)
    assert fast.fs.retries == 1 and usual.fs.retries == 5 and fast.fs is not usual.fs
    copy = pickle.loads(pickle.dumps(fast))
    assert copy.fs.retries == 1
    for bad in (0, -1, True):
        with pytest.raises(pm.ConfigError, match="retries"):
            FsspecBackend(s3_url, retries=bad)


def test_delete_errors_are_not_swallowed() -> None:
    replies = [{"Deleted": [{"Key": "a"}]}, {"Errors": [{"Key": "c", "Code": "NoSuchKey"}]}]
    assert delete_errors(replies) == []
    denied = {"Key": "b", "Code": "AccessDenied", "Message": "no"}
    assert delete_errors([*replies, {"Errors": [denied]}]) == [denied]


def test_objects_layout_and_atomic_local_writes(tmp_path: Path) -> None:
    mem = pm.open_memory(f"file://{tmp_path}", namespace="a:b")
    mem.set("dir/key", {"v": 1}, tags=["t"])
    entry = tmp_path / "a%3Ab" / "e" / "dir%2Fkey"
    assert entry.read_bytes().startswith(MAGIC)
    assert (tmp_path / "a%3Ab" / "t" / "t" / "dir%2Fkey").exists()
    mem.get("dir/key")
    assert (tmp_path / "a%3Ab" / "a" / "dir%2Fkey").exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    assert mem.delete("dir/key")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_foreign_object_is_reported(tmp_path: Path) -> None:
    mem = pm.open_memory(f"file://{tmp_path}", namespace="n")
    folder = tmp_path / "n" / "e"
    folder.mkdir(parents=True)
    (folder / "k").write_bytes(b"not ours")
    with pytest.raises(pm.BackendError, match="bad magic"):
        mem.get("k")


def test_s3_server_restart_keeps_data(s3_server: Any, s3_url: str) -> None:
    mem = pm.open_memory(s3_url, storage_options=s3_server.storage_options, namespace="n")
    mem.set_many({f"k{i}": i for i in range(20)}, tags=["batch"])
    s3_server.kill()
    try:
        with pytest.raises(pm.BackendUnavailable):
            pm.open_memory(
                s3_url, storage_options=s3_server.storage_options, namespace="n", timeout=1
            ).get("k1")
    finally:
        s3_server.restart()
    # SeaweedFS answers on its S3 port a moment before its volumes serve reads again.
    deadline = time.monotonic() + 30
    while True:
        try:
            mem.get("k0")
            break
        except pm.BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert mem.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(20)}
    clone = pickle.loads(pickle.dumps(mem))
    assert clone.invalidate_tags("batch") == 20


def test_purge_expired_removes_objects(tmp_path: Path) -> None:
    mem = pm.open_memory(f"file://{tmp_path}", namespace="n")
    mem.set("old", 1, ttl=0.2)
    mem.set("new", 2)
    time.sleep(0.4)
    assert mem.purge_expired() == 1
    assert sorted(os.listdir(tmp_path / "n" / "e")) == ["new"]

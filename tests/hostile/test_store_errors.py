"""Issue 15: permanent store errors, foreign objects, bounded listings, corrupt documents
and the S3 secret, on the real stores (SeaweedFS, a local folder, the MongoDB wire server).

- A missing bucket, refused credentials and a namespace too long for a file name are
  permanent errors (``BackendNotFound``, ``BackendPermissionError``, ``InvalidKeyError``):
  never retried, never journaled, and they do not open a circuit breaker.
- Foreign objects in a namespace folder or S3 prefix are skipped (one warning each).
- ``keys()`` yields its first key after one page of listing, not the whole folder.
- A foreign or corrupt MongoDB document is a ``SerializationError`` naming it.
- The S3 secret is never in a repr, an error, ``vars()`` or a pickle.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.fs import FsspecBackend
from prefect_memory.resilience import (
    CircuitBreaker,
    ConstantBackoff,
    HybridMemory,
    HybridWriteError,
    ResilientBackend,
    Retry,
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def s3_url(s3_server: Any) -> str:
    s3_server.make_bucket("pm-hostile")
    return f"s3://pm-hostile/{uuid.uuid4().hex[:8]}"


# -- 1. permanent errors ------------------------------------------------------------------------
def test_a_missing_bucket_is_backend_not_found_naming_the_bucket(s3_server: Any) -> None:
    bucket = _unique("pm-missing")
    mem = pm.open_memory(
        f"s3://{bucket}/p", storage_options=s3_server.storage_options, namespace="n"
    )
    for call in (
        lambda: mem.get("k"),
        lambda: mem.set("k", 1),
        lambda: list(mem.keys()),
        mem.backend.ping,
    ):
        with pytest.raises(pm.BackendNotFound) as info:
            call()
        assert isinstance(info.value, pm.PermanentBackendError)
        assert isinstance(info.value, FileNotFoundError)
        assert not isinstance(info.value, pm.BackendUnavailable)  # not transient
        assert bucket in str(info.value) and "create it or fix the URL" in str(info.value)


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_refused_credentials_are_a_permission_error_without_the_secret(
    s3_server: Any, s3_url: str, wrong: str
) -> None:
    bad_value = "wrong-" + uuid.uuid4().hex
    options = {**s3_server.storage_options, wrong: bad_value}
    mem = pm.open_memory(s3_url, storage_options=options, namespace="n", timeout=2)
    for call in (lambda: mem.get("k"), lambda: mem.set("k", 1), lambda: list(mem.keys())):
        with pytest.raises(pm.BackendPermissionError) as info:
            call()
        assert isinstance(info.value, PermissionError)
        assert not isinstance(info.value, pm.BackendUnavailable)
        text = str(info.value)
        assert "pm-hostile" in text and "check the access key" in text
        assert bad_value not in text and s3_server.secret not in text


def test_a_namespace_too_long_for_a_file_name_is_an_invalid_key(tmp_path: Path) -> None:
    root = tmp_path / "store"
    mem = pm.open_memory(f"file://{root}", namespace="n" * 300)
    for call in (lambda: mem.set("k", 1), lambda: mem.get("k"), lambda: list(mem.keys())):
        with pytest.raises(pm.InvalidKeyError, match="at most 255 bytes"):
            call()
    assert list(root.iterdir()) == []  # refused before anything was written
    ok = pm.open_memory(f"file://{root}", namespace="n" * 200)
    ok.set("k", 1)
    assert ok.get("k") == 1


def test_a_namespace_too_long_for_an_s3_key_is_refused_before_the_request(
    s3_server: Any, s3_url: str
) -> None:
    mem = pm.open_memory(s3_url, storage_options=s3_server.storage_options, namespace="n" * 900)
    for call in (lambda: mem.set("k", 1), lambda: mem.get("k"), lambda: list(mem.keys())):
        with pytest.raises(pm.InvalidKeyError, match="at most 1024 bytes"):
            call()
    # a long tag on a long key: the marker's object key is checked too
    near = pm.open_memory(s3_url, storage_options=s3_server.storage_options, namespace="m" * 700)
    with pytest.raises(pm.InvalidKeyError, match="1024"):
        near.set("k" * 200, 1, tags=["t" * 200])  # names of 200: not hashed
    near.set("k", 1, tags=["t"])
    assert near.get("k") == 1 and list(near.keys()) == ["k"]


def _hybrid_on_missing_bucket(
    tmp_path: Path, s3_server: Any, bucket: str, **options: Any
) -> HybridMemory:
    return HybridMemory(
        "memory://" + _unique("p"),
        f"s3://{bucket}/p",
        secondary_options={"storage_options": s3_server.storage_options},
        journal=str(tmp_path / "journal.db"),
        namespace="n",
        flush_interval=3600,  # replays only when the test asks
        **options,
    )


def test_write_through_does_not_retry_journal_or_trip_the_breaker_on_a_permanent_error(
    tmp_path: Path, s3_server: Any
) -> None:
    """Before: BackendUnavailable -> retried until the breaker opened, then queued in the
    journal, to be replayed forever."""
    mem = _hybrid_on_missing_bucket(
        tmp_path,
        s3_server,
        _unique("pm-missing"),
        retry=Retry(ConstantBackoff(0), attempts=5),
        breaker=CircuitBreaker("s3", failure_threshold=2, reset_timeout=3600),
    )
    with pytest.raises(HybridWriteError) as info:
        mem.set("k", 1)
    assert isinstance(info.value.failed["secondary"], pm.BackendNotFound)
    assert info.value.queued == ()
    assert mem.backlog() == 0  # nothing journaled
    secondary = mem.secondary
    assert isinstance(secondary, ResilientBackend)
    assert secondary.breaker is not None
    assert secondary.breaker.state.value == "closed" and secondary.breaker.failures == 0
    primary = mem.backend.primary  # its copy was dropped: no value only one store has
    assert primary.exists_many("n", ["k"], now=time.time()) == set()


def test_write_behind_stops_replaying_a_store_that_refuses_for_good(
    tmp_path: Path, s3_server: Any
) -> None:
    bucket = _unique("pm-missing")
    mem = _hybrid_on_missing_bucket(tmp_path, s3_server, bucket, strategy="write-behind")
    lanes = mem.backend.lanes
    mem.set("k", 1)  # acknowledged: journaled, in the primary
    assert mem.backlog("secondary") == 1
    lanes.flush_pass()
    assert "BackendNotFound" in (mem.backend.last_flush_error or "")
    assert lanes.refused["secondary"] is not None
    with pytest.raises(pm.BackendNotFound):  # at once, not retried until the timeout
        mem.flush(timeout=600)
    s3_server.make_bucket(bucket)
    lanes.flush_pass()  # the background flusher leaves a refused lane alone...
    assert mem.backlog("secondary") == 1  # ...so nothing was replayed, nothing was lost
    assert mem.flush() == 1  # an explicit flush, once the store is fixed, replays it
    assert mem.backlog() == 0 and lanes.refused["secondary"] is None
    direct = pm.open_memory(
        f"s3://{bucket}/p", storage_options=s3_server.storage_options, namespace="n"
    )
    assert direct.get("k") == 1


def test_retry_and_breaker_let_permanent_errors_through_at_once() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise pm.BackendPermissionError("refused")

    retry = Retry(ConstantBackoff(0), attempts=5, on=(pm.BackendError,))
    breaker = CircuitBreaker("b", failure_threshold=1, counts=(pm.BackendError,))
    for _ in range(3):
        with pytest.raises(pm.BackendPermissionError):
            retry.call(lambda: breaker.call(refused))
    assert len(calls) == 3  # one attempt per call, even under on=(BackendError,)
    assert breaker.state.value == "closed"


def test_mongodb_refused_credentials_are_a_permission_error() -> None:
    from pymongo.errors import OperationFailure

    from prefect_memory.plugins.mongodb import MongoBackend

    backend = MongoBackend.from_url("mongodb://bob:hunter2-secret@127.0.0.1:1/app")
    for code in (18, 13):
        err = backend._translate(OperationFailure("Authentication failed.", code=code), "get")
        assert isinstance(err, pm.BackendPermissionError), code
        assert "hunter2-secret" not in str(err)
    other = backend._translate(OperationFailure("bad query", code=2), "get")
    assert not isinstance(other, pm.PermanentBackendError)


# -- 2. foreign objects -------------------------------------------------------------------------
_FOREIGN_NAMES = ["%ZZ", "%FF", "50%", "junk", "~deadbeef", "empty", "%6B1"]


def test_foreign_files_in_a_folder_are_skipped_by_keys_and_clear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mem = pm.open_memory(f"file://{tmp_path}", namespace="n")
    mem.set_many({"k1": 1, "k2": 2}, tags=["t"])
    entries = tmp_path / "n" / "e"
    for name in _FOREIGN_NAMES:
        (entries / name).write_bytes(b"" if name == "empty" else b"\xffnot an entry")
    (entries / "sub").mkdir()
    (tmp_path / "n" / "t" / "t" / "%ZZ").write_bytes(b"")
    (tmp_path / "n" / "t" / "t" / "~cafe").write_bytes(b"\xff\xfe")
    caplog.set_level(logging.WARNING, logger="prefect_memory.plugins.fs")
    assert sorted(mem.keys()) == ["k1", "k2"]
    assert sorted(mem.keys()) == ["k1", "k2"]
    warned = [r.getMessage() for r in caplog.records if "%ZZ" in r.getMessage()]
    assert len(warned) == 1  # once per object, not once per listing
    assert mem.exists("junk") is False
    assert mem.invalidate_tags("t") == 2
    mem.set("k3", 3)
    assert mem.clear() == 1
    assert sorted(p.name for p in entries.iterdir()) == sorted([*_FOREIGN_NAMES, "sub"])
    assert mem.purge_expired() == 0
    mem.set("junk", "mine")  # a write replaces a foreign object of its key
    assert mem.get("junk") == "mine"


def test_foreign_objects_in_an_s3_prefix_are_skipped(s3_server: Any, s3_url: str) -> None:
    mem = pm.open_memory(s3_url, storage_options=s3_server.storage_options, namespace="n")
    mem.set_many({"k1": 1, "k2": 2}, tags=["t"])
    client = s3_server.boto_client()
    prefix = s3_url.split("/", 3)[3]
    for name in _FOREIGN_NAMES:
        client.put_object(Bucket="pm-hostile", Key=f"{prefix}/n/e/{name}", Body=b"\xffjunk")
    client.put_object(Bucket="pm-hostile", Key=f"{prefix}/n/e/sub/x", Body=b"")
    client.put_object(Bucket="pm-hostile", Key=f"{prefix}/n/t/t/~cafe", Body=b"\xff")
    assert sorted(mem.keys()) == ["k1", "k2"]
    assert mem.invalidate_tags("t") == 2
    mem.set("k3", 3)
    assert mem.clear() == 1
    assert mem.purge_expired() == 0


# -- 3. bounded listings ------------------------------------------------------------------------
def test_a_folder_listing_yields_the_first_key_after_one_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = pm.open_memory(f"file://{tmp_path}", namespace="big")
    total = 4500
    mem.set_many({f"k{i:05d}": i for i in range(total)})
    pulled = [0]
    real_scandir = os.scandir

    class Counting:
        def __init__(self, path: Any) -> None:
            self.inner = real_scandir(path)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def close(self) -> None:
            self.inner.close()

        def __iter__(self) -> Counting:
            return self

        def __next__(self) -> Any:
            item = next(self.inner)
            pulled[0] += 1
            return item

    monkeypatch.setattr(os, "scandir", Counting)
    keys = mem.keys()
    first = next(keys)
    assert first.startswith("k")
    assert pulled[0] <= 1001, pulled  # one page (1000 names) listed, not all 4500
    rest = list(keys)
    assert len(rest) + 1 == total and pulled[0] >= total


def test_an_s3_listing_yields_the_first_key_after_one_request(s3_server: Any, s3_url: str) -> None:
    backend = FsspecBackend(s3_url, storage_options=s3_server.storage_options)
    mem = pm.Memory(backend, "big")
    total = 2100  # three ListObjectsV2 pages of at most 1000
    mem.set_many({f"k{i:05d}": i for i in range(total)})
    backend.fs.connect()
    requests: list[str] = []

    def count(**_: Any) -> None:
        requests.append("list")

    backend.fs._s3.meta.events.register("before-call.s3.ListObjectsV2", count)
    keys = mem.keys()
    next(keys)
    assert len(requests) == 1, requests
    assert len(list(keys)) == total - 1
    assert len(requests) == 3


# -- 4. foreign or corrupt MongoDB documents ----------------------------------------------------
def test_corrupt_mongodb_documents_are_named_serialization_errors(
    mongo_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    collection = _unique("hostile")
    url = f"{mongo_server.url}&collection={collection}"
    mem = pm.open_memory(url, namespace="n")
    mem.set("good", {"v": 1})
    coll = mongo_server.client()[mongo_server.database][collection]
    base = {"ns": "n", "c": 1.0, "u": 1.0, "a": 1.0, "n": 0, "x": None}
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(90):
        cursor["a"] = {}
        cursor = cursor["a"]
    coll.insert_many([
        {"_id": "n:nofields", "ns": "n", "k": "nofields"},
        {**base, "_id": "n:text", "k": "text", "v": "not bytes"},
        {**base, "_id": "n:when", "k": "when", "v": b"x", "c": "yesterday"},
        {**base, "_id": "n:nested", "k": "nested", "v": nested},
        {**base, "_id": "n:tags", "k": "tags", "v": b"x", "g": [1, {"a": 2}]},
        {**base, "_id": "n:other", "k": "someone-else", "v": b"x"},
        {**base, "_id": "n:nok", "v": b"x"},
        {"_id": 5, "ns": "n", "k": 7},
    ])  # fmt: skip
    for key in ("nofields", "text", "when", "nested", "tags", "other"):
        for call in (lambda k=key: mem.get(k), lambda k=key: mem.info(k)):
            with pytest.raises(pm.SerializationError) as info:
                call()
            assert f"n:{key}" in str(info.value) and "'n'" in str(info.value)
    caplog.set_level(logging.WARNING, logger="prefect_memory.plugins.mongodb")
    listed = sorted(mem.keys())
    assert "good" in listed and "7" not in listed
    assert "not a prefect-memory entry" in caplog.text
    mem.set("when", "repaired")  # a write replaces a corrupt document
    assert mem.get("when") == "repaired"
    assert mem.get("good") == {"v": 1}

    from prefect_memory.tiers import Tier, TieredMemory

    mongo = mem.backend
    tiered = TieredMemory(
        [Tier("hot", mongo), Tier("cold", pm.open_memory("memory://" + _unique("c")).backend)],
        rules=[{"from": "hot", "to": "cold", "condition": "accessCount >= 0"}],
        namespace="n",
    )
    with pytest.raises(pm.SerializationError, match="n:"):
        tiered.migrate()


# -- 5. the S3 secret ---------------------------------------------------------------------------
def test_the_s3_secret_is_in_no_repr_error_or_pickle(s3_server: Any, s3_url: str) -> None:
    secret = s3_server.secret
    backend = FsspecBackend(s3_url, storage_options=s3_server.storage_options)
    mem = pm.Memory(backend, "n")
    mem.set("k", 1)
    for text in (repr(backend), str(backend), repr(vars(backend)), repr(backend.storage_options)):
        assert secret not in text
    for blob in (pickle.dumps(backend), pickle.dumps(mem)):
        assert secret.encode() not in blob
    clone = pickle.loads(pickle.dumps(mem))
    assert clone.get("k") == 1  # the store still works after pickling
    clone.set("k2", 2)
    assert mem.get("k2") == 2
    missing = pm.open_memory(
        f"s3://{_unique('pm-missing')}/p", storage_options=s3_server.storage_options
    )
    with pytest.raises(pm.BackendNotFound) as info:
        missing.get("k")
    assert secret not in str(info.value) and secret not in repr(info.value)

"""Cold lookups in the Parquet archive: key summaries, index manifests, hostile ones.

A reader that starts cold (a new process) answers a lookup from the newest index
manifest, the claims above it and one ranged read of the row group that can hold the key;
what it answers must be exactly what the key index built from every file answers, and a
manifest or summary that is missing, stale or not ours must cost speed, never a key.
Every test runs on a local folder and on the real S3 server (SeaweedFS).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from prefect_memory.plugins.base import Record
from prefect_memory.plugins.parquet import ParquetArchiveBackend
from prefect_memory.plugins.parquet.summary import (
    INDEX_DIR,
    Bloom,
    KeySummary,
    hash_keys,
    manifest_name,
    utf8,
)

T0 = dt.datetime(2024, 5, 6, 12, tzinfo=dt.timezone.utc).timestamp()
NS = "cold"
Open = Callable[..., ParquetArchiveBackend]


@pytest.fixture(params=["local", "s3"])
def open_archive(request: pytest.FixtureRequest, tmp_path: Path) -> Open:
    """``open_archive(**options)``: a new backend (a new process's view) on one store."""
    if request.param == "local":
        url, options = f"parquet:///{tmp_path}/archive", {}
    else:
        server = request.getfixturevalue("s3_server")
        server.make_bucket("pm-archive-index")
        url = f"parquet::s3://pm-archive-index/{uuid.uuid4().hex[:10]}"
        options = {"storage_options": server.storage_options}
    return lambda **kw: ParquetArchiveBackend(url, **{**options, **kw})


def rec(value: bytes, at: float = T0, **kw: Any) -> Record:
    return Record(value, at, at, at, **kw)


class Calls:
    """Counts the store requests of one backend: LISTs, reads of small objects, ranged reads."""

    def __init__(self, archive: ParquetArchiveBackend) -> None:
        self.lists = 0  # LISTs of the whole namespace
        self.narrow: list[list[str]] = []  # rounds of LISTs of some folders (S3)
        self.small: list[list[str]] = []
        self.ranges: list[int] = []
        inner_list, inner_fresh, inner_fetch = archive._list, archive.read_fresh, archive.fetch
        inner_prefixes = archive._list_prefixes

        def listing(ns: str) -> dict[str, int]:
            self.lists += 1
            return inner_list(ns)

        def prefixes(ns: str, folders: list[tuple[str, str | None]]) -> dict[str, int]:
            self.narrow.append([f for f, _ in folders])
            return inner_prefixes(ns, folders)

        archive._list_prefixes = prefixes  # type: ignore[method-assign]

        def fresh(paths: list[str]) -> dict[str, bytes]:
            if paths:
                self.small.append(list(paths))
            return inner_fresh(paths)

        def fetch(paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
            if paths:
                self.ranges.append(len(paths))
            return inner_fetch(paths, starts, ends)

        archive._list = listing  # type: ignore[method-assign]
        archive.read_fresh = fresh  # type: ignore[method-assign]
        archive.fetch = fetch  # type: ignore[method-assign]


def manifests(archive: ParquetArchiveBackend, ns: str = NS) -> list[str]:
    found = archive.fs.find(f"{archive.ns_root(ns)}/{INDEX_DIR}")
    return sorted(p for p in found if p.endswith(".msgpack"))


def top_slot(archive: ParquetArchiveBackend, ns: str = NS) -> int:
    return max(int(p.rsplit("/", 1)[-1]) for p in archive.fs.find(f"{archive.ns_root(ns)}/_log"))


def fill(archive: ParquetArchiveBackend, files: int = 12, per_file: int = 40) -> dict[str, bytes]:
    """``files`` writes of new keys, then overwrites, a delete and an entry that expires;
    returns what each live key holds at ``T0 + 100``."""
    live: dict[str, bytes] = {}
    for f in range(files):
        batch = {f"k{f:02d}:{i:03d}": f"{f}/{i}".encode() for i in range(per_file)}
        archive.put_many(NS, {k: rec(v) for k, v in batch.items()}, now=T0 + f)
        live.update(batch)
    newer = {f"k00:{i:03d}": b"newer" for i in range(0, per_file, 3)}
    archive.put_many(NS, {k: rec(v, T0 + 50) for k, v in newer.items()}, now=T0 + 50)
    live.update(newer)
    gone = [f"k01:{i:03d}" for i in range(5)]
    archive.delete_many(NS, gone, now=T0 + 60)
    for key in gone:
        del live[key]
    archive.put_many(NS, {"short": rec(b"s", ttl=10.0, expires_at=T0 + 10)}, now=T0 + 61)
    return live


def as_dict(records: dict[str, Record]) -> dict[str, tuple[Any, ...]]:
    return {k: (r.value, r.version, r.created_at, r.updated_at, r.access_count, r.expires_at,
                r.tags) for k, r in records.items()}  # fmt: skip


# -- cold lookups ----------------------------------------------------------------------------
def test_cold_lookup_reads_a_manifest_and_one_row_group(open_archive: Open) -> None:
    live = fill(open_archive())
    assert manifests(open_archive())  # written along the way, every few writes
    full = open_archive()
    full.refresh(NS)  # the key index built from every file: the reference answer
    now = T0 + 100
    probes = [*random.Random(5).sample(sorted(live), 30), "k01:000", "short", "nope", ""]
    for key in probes:
        cold = open_archive()
        calls = Calls(cold)
        got = cold.get_many(NS, [key], now=now)
        assert as_dict(got) == as_dict(full.get_many(NS, [key], now=now)), key
        assert {k: r.value for k, r in got.items()} == ({key: live[key]} if key in live else {})
        if cold.conn.protocol == "s3":  # the log and statistics folders, never the data
            assert calls.lists == 0
            assert calls.narrow == [["_index", "_stats"], ["_log"]]
        else:
            assert calls.lists == 1  # one LIST
        assert len(calls.small) == 1  # the manifest and the few claims above it, one round
        assert len(calls.small[0]) <= 1 + 4 and any("/_index/" in p for p in calls.small[0])
        assert len(calls.ranges) <= 1  # one batched ranged read (footer + row group)
        index = cold.refresh(NS, lazy=True)
        assert not index.files and len(index.stubs) == 15  # nothing loaded whole
    batch = open_archive().get_many(NS, probes, now=now)
    assert as_dict(batch) == as_dict(full.get_many(NS, probes, now=now))


def test_the_light_index_agrees_with_the_full_one_after_any_history(open_archive: Open) -> None:
    """Random overwrites, deletes, expiries, conditional writes and touches; then every
    key asked cold, one at a time and in a batch, against the full index."""
    archive = open_archive(row_group_bytes=2048)  # several row groups a file
    rng = random.Random(11)
    keys = [f"key:{i:03d}" for i in range(120)]
    now = T0
    for step in range(18):
        now += 5
        pick = rng.sample(keys, 25)
        if step % 5 == 4:
            archive.delete_many(NS, pick[:8], now=now)
        elif step % 5 == 3:
            archive.put_absent_many(NS, {k: rec(b"absent", now) for k in pick}, now=now)
        else:
            ttl = 30.0 if step % 2 else None
            batch = {k: rec(f"{step}:{k}".encode() * rng.randrange(1, 40), now, ttl=ttl,
                            expires_at=None if ttl is None else now + ttl, tags=(f"t{step}",))
                     for k in pick}  # fmt: skip
            archive.put_many(NS, batch, now=now)
        if step % 6 == 5:
            archive.get_many(NS, pick[:5], now=now, touch=True)
    full = open_archive()
    expected = as_dict(full.get_many(NS, keys, now=now))
    assert 20 < len(expected) < len(keys)
    cold = open_archive()
    for key in keys:
        assert as_dict(cold.get_many(NS, [key], now=now)) == {
            k: v for k, v in expected.items() if k == key
        }, key
    assert cold.refresh(NS, lazy=True).stubs  # it stayed light all along
    assert as_dict(open_archive().get_many(NS, keys[:200], now=now)) == expected


def test_touch_from_a_cold_process_counts(open_archive: Open) -> None:
    archive = open_archive()
    archive.put_many(NS, {"s": rec(b"v", ttl=10.0, sliding=True, expires_at=T0 + 10)}, now=T0)
    for i in range(5):
        archive.put_many(NS, {f"other{i}": rec(b"o")}, now=T0)
    for i in range(1, 4):
        got = open_archive().get_many(NS, ["s"], now=T0 + 8 * i, touch=True)
        assert got["s"].access_count == i and got["s"].expires_at == T0 + 8 * i + 10
    full = open_archive().get_many(NS, ["s", "other0"], now=T0 + 30)
    assert full["s"].access_count == 3 and full["s"].expires_at == T0 + 34


def test_a_void_row_is_never_a_candidate(open_archive: Open) -> None:
    """A conditional write whose condition failed (it listed before another writer took
    the key) has a newer file holding the key: its summary admits the key, its claim says
    the row never applied, and the cold lookup answers the other writer's value."""
    slow, other = open_archive(), open_archive()
    for i in range(4):
        slow.put_many(NS, {f"pad{i}": rec(b"p")}, now=T0)
    stale = slow._list(NS)
    other.put_many(NS, {"k": rec(b"other")}, now=T0 + 1)
    listings = iter([stale])
    real = slow._list
    slow._list = lambda ns: next(listings, None) or real(ns)  # type: ignore[method-assign]
    assert slow.put_absent_many(NS, {"k": rec(b"slow"), "n": rec(b"n")}, now=T0 + 2) == {"n"}
    got = open_archive().get_many(NS, ["k"], now=T0 + 3)
    assert got["k"].value == b"other"
    cold = open_archive()
    assert cold.get_many(NS, ["k", "n"], now=T0 + 3)["n"].value == b"n"
    assert cold.refresh(NS, lazy=True).stubs


# -- stale, missing and old ------------------------------------------------------------------
def test_a_manifest_older_than_the_files_is_completed_by_the_claims(open_archive: Open) -> None:
    archive = open_archive()
    fill(archive, files=8)
    archive._summaries = False  # the next writes leave the manifest behind (and no summary)
    for i in range(6):
        archive.put_many(NS, {f"late{i}": rec(b"late%d" % i), "k00:001": rec(b"%d" % i)},
                         now=T0 + 200 + i)  # fmt: skip
    cold = open_archive()
    got = cold.get_many(NS, ["late5", "late0", "k00:001", "k03:007"], now=T0 + 300)
    assert {k: r.value for k, r in got.items()} == {"late5": b"late5", "late0": b"late0",
                                                    "k00:001": b"5", "k03:007": b"3/7"}  # fmt: skip
    index = cold.refresh(NS, lazy=True)
    assert len(index.files) == 6 and index.stubs  # the six unsummarized files loaded whole


def test_an_archive_without_summaries_reads_then_gets_them(open_archive: Open) -> None:
    old = open_archive()
    old._summaries = False  # the layout of earlier versions
    live = fill(old, files=6)
    assert manifests(old) == []
    cold = open_archive()
    assert cold.get_many(NS, ["k02:002"], now=T0 + 100)["k02:002"].value == live["k02:002"]
    assert not cold.refresh(NS, lazy=True).stubs  # loaded whole, as before
    open_archive().put_many(NS, {"new": rec(b"n")}, now=T0 + 100)  # written next: summarized
    assert len(manifests(old)) == 1
    cold = open_archive()
    calls = Calls(cold)
    assert cold.get_many(NS, ["k05:039"], now=T0 + 100)["k05:039"].value == live["k05:039"]
    assert len(calls.small) == 1 and len(calls.ranges) == 1
    assert not cold.refresh(NS, lazy=True).files


def test_compaction_writes_the_manifest_of_its_checkpoint(open_archive: Open) -> None:
    archive = open_archive()
    live = fill(archive, files=10)
    report = archive.compact(NS, now=T0 + 100)
    assert report.files_after == 1
    newest = manifests(archive)[-1]
    assert newest.endswith(manifest_name(top_slot(archive)))  # at the checkpoint's slot
    assert len(manifests(archive)) <= 2  # older ones deleted
    cold = open_archive()
    calls = Calls(cold)
    got = cold.get_many(NS, ["k00:003", "k01:001", "k09:000", "short"], now=T0 + 100)
    assert {k: r.value for k, r in got.items()} == {k: live[k] for k in ("k00:003", "k09:000")}
    assert len(calls.small) == 1 and len(calls.ranges) == 1
    assert len(cold.refresh(NS, lazy=True).stubs) == 1


def test_a_compaction_stopped_before_its_manifest_loses_nothing(
    open_archive: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = open_archive()
    live = fill(archive, files=9)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("injected: the manifest write failed")

    monkeypatch.setattr(archive, "write_manifest", fail)
    assert archive.compact(NS, now=T0 + 100).files_after == 1  # the compaction counts
    cold = open_archive()  # the newest manifest is below the checkpoint: superseded
    keys = sorted(live)
    assert {k: r.value for k, r in cold.get_many(NS, keys[:50], now=T0 + 100).items()} == {
        k: live[k] for k in keys[:50]
    }
    assert cold.get_many(NS, ["k01:002"], now=T0 + 100) == {}


# -- hostile manifests and summaries ---------------------------------------------------------
def _good_manifest(archive: ParquetArchiveBackend) -> tuple[str, dict[str, Any]]:
    path = manifests(archive)[-1]
    return path, msgpack.unpackb(archive.fs.cat_file(path), raw=False)


def _summary(body: dict[str, Any]) -> dict[str, Any]:
    return next(iter(body["s"].values()))  # type: ignore[no-any-return]


BROKEN: dict[str, Callable[[dict[str, Any]], Any]] = {
    "garbage": lambda body: b"\xc1 not msgpack",
    "deep": lambda body: b"\x91" * 100_000 + b"\x01",
    "a-list": lambda body: msgpack.packb([1, 2, 3]),
    "other-version": lambda body: {**body, "v": 2},
    "other-nonce": lambda body: {**body, "n": "not-the-claim"},
    "claims-not-dense": lambda body: {**body, "c": body["c"][1:]},
    "path-escapes": lambda body: {
        **body,
        "c": [[s, n, ["../../x.parquet", *e[1:]]] for s, n, e in body["c"]],
    },
    "huge-size": lambda body: {
        **body,
        "c": [[s, n, [e[0], 1 << 62, *e[2:]]] for s, n, e in body["c"]],
    },
    "summaries-a-list": lambda body: {**body, "s": [1]},
    "bloom-too-short": lambda body: _summary(body).update(f=b"\x00") or body,
    "bloom-not-bytes": lambda body: _summary(body).update(f="x" * 64) or body,
    "range-past-the-file": lambda body: (
        _summary(body).update(g=[[_summary(body)["a"], 0, 1 << 40]]) or body
    ),
    "ranges-overlap": lambda body: (
        _summary(body).update(
            g=[[_summary(body)["a"], 4, 100], [_summary(body)["a"] + "~", 50, 200]]
        )
        or body
    ),
    "wrong-row-group-bytes": lambda body: (
        _summary(body).update(g=[[_summary(body)["a"], 4, 40]]) or body
    ),
    "key-not-str": lambda body: _summary(body).update(a=5) or body,
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_manifest_not_ours_is_ignored_never_trusted(open_archive: Open, how: str) -> None:
    """The newest manifest is replaced by one another client wrote (malformed, naming
    another history, or with summaries that do not fit their files): readers answer
    exactly what the files say, without an error."""
    archive = open_archive()
    live = fill(archive, files=8)
    path, body = _good_manifest(archive)
    made = BROKEN[how](body)
    archive.fs.pipe_file(path, made if isinstance(made, bytes) else msgpack.packb(made))
    keys = [*sorted(live)[::7], "k01:000", "nope"]
    for key in keys:
        got = open_archive().get_many(NS, [key], now=T0 + 100)
        assert {k: r.value for k, r in got.items()} == ({key: live[key]} if key in live else {})
    got = open_archive().get_many(NS, keys, now=T0 + 100)
    assert {k: r.value for k, r in got.items()} == {k: live[k] for k in keys if k in live}
    open_archive().put_many(NS, {"after": rec(b"a")}, now=T0 + 100)  # writers carry on
    assert open_archive().get_many(NS, ["after"], now=T0 + 100)["after"].value == b"a"


def test_a_manifest_too_large_is_not_read(
    open_archive: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_memory.plugins.parquet import store

    archive = open_archive()
    live = fill(archive, files=8)
    size = min(archive.fs.size(p) for p in manifests(archive))
    monkeypatch.setattr(store, "MAX_MANIFEST_BYTES", size - 1)
    cold = open_archive()
    calls = Calls(cold)
    assert cold.get_many(NS, ["k04:004"], now=T0 + 100)["k04:004"].value == live["k04:004"]
    assert not any("/_index/" in p for batch in calls.small for p in batch)


def test_a_foreign_summary_in_a_claim_costs_a_load_not_a_key(open_archive: Open) -> None:
    """Summaries in claims are checked like those of manifests: one that does not fit
    its file (here: row groups elsewhere) makes the reader load the index whole."""
    from prefect_memory.plugins.parquet.log import Claim

    archive = open_archive()
    archive.put_many(NS, {"a": rec(b"1")}, now=T0)
    slot = top_slot(archive)
    claim_path = f"{archive.ns_root(NS)}/_log/{slot:019d}"
    claim = Claim.unpack(slot, archive.fs.cat_file(claim_path))
    summary = dict(claim.summary)
    summary["g"] = [[summary["a"], 0, 8]]  # the magic bytes, not the row group
    bad = Claim(slot, claim.nonce, entry=claim.entry, summary=summary)
    archive.fs.pipe_file(claim_path, bad.pack())
    cold = open_archive()
    assert cold.get_many(NS, ["a"], now=T0)["a"].value == b"1"
    assert not cold.refresh(NS, lazy=True).stubs  # fell back: loaded whole


def test_more_row_groups_than_a_lookup_reads_load_the_index(open_archive: Open) -> None:
    archive = open_archive(row_group_bytes=512)
    data = {f"k{i:04d}": bytes(300) + b"%d" % i for i in range(400)}
    for start in range(0, 400, 100):
        batch = dict(list(data.items())[start : start + 100])
        archive.put_many(NS, {k: rec(v) for k, v in batch.items()}, now=T0)
    one = open_archive()  # one key: its footer is larger than the tail read first
    assert one.get_many(NS, ["k0123"], now=T0)["k0123"].value == data["k0123"]
    stubs = one.refresh(NS, lazy=True).stubs.values()
    assert [s.footer.serialized_size > 64 * 1024 for s in stubs if s.footer] == [True]
    keys = list(data)[::5]  # 80 keys in 80 row groups: more than a light lookup reads
    cold = open_archive()
    got = cold.get_many(NS, keys, now=T0)
    assert {k: r.value for k, r in got.items()} == {k: data[k] for k in keys}
    index = cold.refresh(NS)
    assert not index.stubs and len(index.files) == 4


# -- the bloom filter and its hash -------------------------------------------------------------
def test_the_bloom_filter_never_misses_a_key() -> None:
    rng = random.Random(3)
    alphabet = "abcXYZ019:/_-é€😀\x00"
    keys = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
                   for _ in range(20_000)} | {"", "x" * 5000, "é" * 700})  # fmt: skip
    bloom = Bloom.of(keys)
    assert bloom.check(hash_keys(*utf8(keys))).all()  # no false negative, ever
    assert all(bloom.may_hold(k) for k in keys[::97])
    others = [f"other:{i}" for i in range(20_000)]
    rate = float(np.mean(bloom.check(hash_keys(*utf8(others)))))
    assert rate < 0.03  # ~1 % by design


def test_the_hash_is_pinned() -> None:
    """Summaries on disk were built with this exact function: changing it would make
    every existing bloom filter answer "absent" for keys it holds."""
    got = hash_keys(*utf8(["", "a", "order:0000001", "é😀"])).tolist()
    assert got == PINNED


PINNED = [0, 12447961245826247199, 5765752585533708075, 6572736675943907949]


def test_a_summary_is_checked_before_use() -> None:
    good = {"z": 100, "n": 2, "a": "a", "b": "b", "t": 5, "k": 7, "f": bytes(8),
            "g": [["a", 4, 50]]}  # fmt: skip
    assert KeySummary.unpack(good).groups == (("a", 4, 50),)
    from prefect_memory.errors import SerializationError

    for change in ({"z": -1}, {"n": 0}, {"a": "c"}, {"k": 0}, {"k": 99}, {"f": b""},
                   {"g": []}, {"g": [["a", 50, 4]]}, {"g": [["a", 4, 101]]},
                   {"g": [["b", 4, 50]]}, {"t": True}, {"g": "x"}):  # fmt: skip
        with pytest.raises(SerializationError):
            KeySummary.unpack({**good, **change})
    with pytest.raises(SerializationError):
        KeySummary.unpack([1, 2])


def test_a_foreign_statistics_object_is_a_named_error(open_archive: Open) -> None:
    from prefect_memory.errors import SerializationError

    archive = open_archive()
    fill(archive, files=5)
    path = f"{archive.ns_root(NS)}/_stats/stats-{1:019d}-foreign.msgpack"
    archive.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    archive.fs.pipe_file(path, msgpack.packb({"v": 1, "e": [["k", "x"]]}))
    with pytest.raises(SerializationError, match="stats-0000000000000000001-foreign"):
        open_archive().get_many(NS, ["k00:001"], now=T0 + 100)
    archive.fs.rm_file(path)
    assert open_archive().get_many(NS, ["k00:001"], now=T0 + 100)["k00:001"].value == b"0/1"

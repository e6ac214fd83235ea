"""The Parquet archive written by several PROCESSES at once (``spawn``), on a local folder
and on the real S3 server (SeaweedFS).

Each actor opens its own :class:`ParquetArchiveBackend` on the same store, says ``ready``,
waits for the common ``go`` and reports what the archive acknowledged: the keys a
``put_absent_many`` says it wrote, the keys a ``delete_if_unchanged`` says it deleted,
the values an upserter last wrote. The checks compare these answers with what a fresh
process reads afterwards, and with the rows that apply (``query(latest_only=False)``).
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prefect_memory.plugins.base import Record
from prefect_memory.plugins.parquet import ParquetArchiveBackend

NS = "race"
DEADLINE = 240.0


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """``{"url", "options"}`` of a fresh archive that every actor opens."""
    if request.param == "local":
        return {"url": f"parquet:///{tmp_path}/archive", "options": {}}
    server = request.getfixturevalue("s3_server")
    server.make_bucket("pm-archive-race")
    return {
        "url": f"parquet::s3://pm-archive-race/{uuid.uuid4().hex[:10]}",
        "options": {"storage_options": server.storage_options},
    }


def open_archive(store: dict[str, Any]) -> ParquetArchiveBackend:
    return ParquetArchiveBackend(store["url"], **store["options"])


def rec(value: bytes, at: float | None = None) -> Record:
    at = time.time() if at is None else at
    return Record(value, at, at, at)


# -- the actors (run in spawned processes) ---------------------------------------------------
def _absent(archive: ParquetArchiveBackend, name: str, p: dict[str, Any], stop: Any) -> Any:
    keys = list(p["keys"])
    random.Random(p["seed"]).shuffle(keys)
    won: list[str] = []
    for i in range(0, len(keys), p["batch"]):
        batch = {k: rec(name.encode()) for k in keys[i : i + p["batch"]]}
        won.extend(archive.put_absent_many(NS, batch, now=time.time()))
    return won


def _upsert(archive: ParquetArchiveBackend, name: str, p: dict[str, Any], stop: Any) -> Any:
    rng = random.Random(p["seed"])
    last: dict[str, str] = {}
    for round_ in range(p["rounds"]):
        batch = rng.sample(p["keys"], p["batch"])
        values = {k: f"{name}:{round_}" for k in batch}
        archive.put_many(NS, {k: rec(v.encode()) for k, v in values.items()}, now=time.time())
        last.update(values)  # acknowledged
    return last


def _delete(archive: ParquetArchiveBackend, name: str, p: dict[str, Any], stop: Any) -> Any:
    tokens = {k: tuple(t) for k, t in p["tokens"].items()}
    keys = list(tokens)
    random.Random(p["seed"]).shuffle(keys)
    deleted: list[str] = []
    for i in range(0, len(keys), p["batch"]):
        batch = {k: tokens[k] for k in keys[i : i + p["batch"]]}
        deleted.extend(archive.delete_if_unchanged(NS, batch, now=time.time()))  # type: ignore[arg-type]
        time.sleep(0.01)
    return deleted


def _compact(archive: ParquetArchiveBackend, name: str, p: dict[str, Any], stop: Any) -> Any:
    runs = 0
    while not stop.is_set() or runs < 2:
        archive.compact(NS, now=time.time(), small_bytes=1 << 30)
        runs += 1
    return runs


def _writer(archive: ParquetArchiveBackend, name: str, p: dict[str, Any], stop: Any) -> Any:
    """Own keys (``name:i``): written, overwritten, some deleted; plus shared keys moved in
    with ``put_absent_many``. Returns the final state it was acknowledged and its wins."""
    state: dict[str, str | None] = {}
    keys = [f"{name}:{i:03d}" for i in range(p["n"])]
    for i in range(0, len(keys), 25):
        values = {k: f"{k}=1" for k in keys[i : i + 25]}
        archive.put_many(NS, {k: rec(v.encode()) for k, v in values.items()}, now=time.time())
        state.update(values)
    for i in range(0, len(keys), 40):
        values = {k: f"{k}=2" for k in keys[i : i + 40 : 2]}
        archive.put_many(NS, {k: rec(v.encode()) for k, v in values.items()}, now=time.time())
        state.update(values)
    gone = keys[1::3]
    for i in range(0, len(gone), 20):
        archive.delete_many(NS, gone[i : i + 20], now=time.time())
        state.update(dict.fromkeys(gone[i : i + 20]))
    won: list[str] = []
    shared = list(p["shared"])
    random.Random(p["seed"]).shuffle(shared)
    for i in range(0, len(shared), 15):
        batch = {k: rec(name.encode()) for k in shared[i : i + 15]}
        won.extend(archive.put_absent_many(NS, batch, now=time.time()))
    return {"state": state, "won": won}


ROLES = {"absent": _absent, "upsert": _upsert, "delete": _delete, "compact": _compact,
         "writer": _writer}  # fmt: skip


def actor(name: str, role: str, store: dict[str, Any], params: dict[str, Any],
          out: Any, go: Any, stop: Any) -> None:  # fmt: skip
    """One process: open the archive, say ready, wait for ``go``, play ``role``."""
    try:
        archive = open_archive(store)
        archive.refresh(NS)  # connected, index built
        out.put(("ready", name, None))
        go.wait(60)
        out.put(("done", name, ROLES[role](archive, name, params, stop)))
    except BaseException:
        out.put(("error", name, traceback.format_exc()))


def run(store: dict[str, Any], actors: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Run every actor in its own spawned process, all starting together; their results."""
    ctx = multiprocessing.get_context("spawn")
    out, go, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(target=actor, args=(name, role, store, params, out, go, stop), daemon=True)
        for name, (role, params) in actors.items()
    ]
    for proc in procs:
        proc.start()
    results: dict[str, Any] = {}
    ready: set[str] = set()
    foreground = {name for name, (role, _) in actors.items() if role != "compact"}
    deadline = time.monotonic() + DEADLINE
    try:
        while len(results) < len(actors):
            try:
                kind, name, payload = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                missing = set(actors) - set(results)
                raise AssertionError(f"actors did not finish: {missing}") from None
            if kind == "error":
                raise AssertionError(f"actor {name} failed:\n{payload}")
            if kind == "ready":
                ready.add(name)
                if ready == set(actors):
                    go.set()
            else:
                results[name] = payload
                if set(results) >= foreground:  # the background actors may stop now
                    stop.set()
    finally:
        stop.set()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return results


def applied_rows(archive: ParquetArchiveBackend) -> Counter[str]:
    """How many rows of each key apply (history of every live or superseded version)."""
    frame = archive.query(NS, latest_only=False, columns=["key"])
    return Counter(frame["key"].tolist())


def raw_rows(archive: ParquetArchiveBackend) -> Counter[str]:
    return Counter(archive.dataset(NS).to_table(columns=["key"]).column("key").to_pylist())


# -- the tests ---------------------------------------------------------------------------------
def test_put_absent_race_one_winner_per_key(store: dict[str, Any]) -> None:
    keys = [f"k{i:03d}" for i in range(200)]
    actors = {f"p{n}": ("absent", {"keys": keys, "seed": n, "batch": 20}) for n in range(4)}
    won = {name: set(keys_) for name, keys_ in run(store, actors).items()}

    claimed = [k for keys_ in won.values() for k in keys_]
    assert len(claimed) == len(set(claimed)), "a key was reported written twice"
    assert set(claimed) == set(keys)
    fresh = open_archive(store)
    got = fresh.get_many(NS, keys, now=time.time())
    assert got.keys() == set(keys)
    for key, record in got.items():
        assert key in won[record.value.decode()]  # the stored value is its reporter's
    assert applied_rows(fresh) == Counter(dict.fromkeys(keys, 1))  # exactly one applied row
    assert raw_rows(fresh) == Counter(dict.fromkeys(keys, 1))  # the raw dataset agrees
    # a compaction keeps exactly the applied rows
    fresh.compact(NS, now=time.time())
    again = open_archive(store)
    assert {k: r.value for k, r in again.get_many(NS, keys, now=time.time()).items()} == {
        k: r.value for k, r in got.items()
    }
    assert raw_rows(again) == Counter(dict.fromkeys(keys, 1))


def test_delete_if_unchanged_never_hides_an_upsert(store: dict[str, Any]) -> None:
    keys = [f"k{i:03d}" for i in range(200)]
    archive = open_archive(store)
    archive.put_many(NS, {k: rec(b"v0") for k in keys}, now=time.time())
    tokens = {k: list(r.token) for k, r in archive.get_many(NS, keys, now=time.time()).items()}
    actors = {
        "u": ("upsert", {"keys": keys, "rounds": 30, "batch": 10, "seed": 1}),
        "d1": ("delete", {"tokens": tokens, "batch": 20, "seed": 2}),
        "d2": ("delete", {"tokens": tokens, "batch": 20, "seed": 3}),
    }
    results = run(store, actors)
    upserted: dict[str, str] = results["u"]
    d1, d2 = set(results["d1"]), set(results["d2"])
    assert not d1 & d2, "a key was reported deleted twice"

    got = open_archive(store).get_many(NS, keys, now=time.time())
    for key in keys:
        if key in upserted:  # never hidden by a tombstone, whatever the interleaving
            assert key in got and got[key].value == upserted[key].encode(), key
        elif key in d1 | d2:
            assert key not in got, key
        else:  # neither upserted nor deleted: both deleters lost it? impossible
            assert key in got and got[key].value == b"v0", key
    assert (d1 | d2) >= set(keys) - set(upserted)  # a v0 key always had a deleter win it
    history = applied_rows(open_archive(store))
    assert all(history[k] >= 1 for k in keys)


def test_compaction_while_writers_write_loses_nothing(store: dict[str, Any]) -> None:
    shared = [f"s{i:03d}" for i in range(60)]
    actors: dict[str, tuple[str, dict[str, Any]]] = {
        f"w{n}": ("writer", {"n": 120, "shared": shared, "seed": n}) for n in range(2)
    }
    actors["c"] = ("compact", {})
    results = run(store, actors)
    assert results["c"] >= 2

    expected: dict[str, bytes] = {}
    deleted: set[str] = set()
    for name in ("w0", "w1"):
        for key, value in results[name]["state"].items():
            if value is None:
                deleted.add(key)
            else:
                expected[key] = value.encode()
    wins = [set(results[name]["won"]) for name in ("w0", "w1")]
    assert not wins[0] & wins[1] and wins[0] | wins[1] == set(shared)
    expected.update({k: b"w0" if k in wins[0] else b"w1" for k in shared})

    archive = open_archive(store)
    archive.compact(NS, now=time.time())
    for fresh in (archive, open_archive(store)):
        got = fresh.get_many(NS, [*expected, *deleted], now=time.time())
        assert {k: r.value for k, r in got.items()} == expected  # nothing lost or revived
    assert raw_rows(open_archive(store)) == Counter(dict.fromkeys(expected, 1))
    log = [p for p in archive.fs.find(archive.ns_root(NS)) if "/_log/" in p]
    assert len(log) <= 2  # the claims below the last checkpoint are gone


def test_claim_on_a_slot_freed_by_a_checkpoint_is_made_again(store: dict[str, Any]) -> None:
    """A writer that listed before another process wrote, compacted and pruned the log
    claims a slot number the pruning freed: it must notice and claim again (else its
    write would count for nobody)."""
    slow, other = open_archive(store), open_archive(store)
    slow.put_many(NS, {"a": rec(b"1")}, now=time.time())
    stale = slow._list(NS)  # what the slow writer will see
    for i in range(3):
        other.put_many(NS, {f"o{i}": rec(b"o")}, now=time.time())
    other.compact(NS, now=time.time())  # checkpoint, claims below it deleted
    listings = iter([stale])
    real = slow._list
    slow._list = lambda ns: next(listings, None) or real(ns)  # type: ignore[method-assign]
    assert slow.put_absent_many(NS, {"b": rec(b"2"), "o0": rec(b"x")}, now=time.time()) == {"b"}
    slow.put_many(NS, {"c": rec(b"3")}, now=time.time())
    got = open_archive(store).get_many(NS, ["a", "b", "c", "o0", "o1", "o2"], now=time.time())
    assert {k: r.value for k, r in got.items()} == {
        "a": b"1",
        "b": b"2",
        "c": b"3",
        "o0": b"o",
        "o1": b"o",
        "o2": b"o",
    }


def test_archive_written_before_the_log_reads_the_same(store: dict[str, Any]) -> None:
    """Files as the previous version wrote them (``part-<seq>-<uuid>.parquet``, rows
    carrying their own ``seq``, no log) count as before, then mix with logged writes."""
    from prefect_memory.plugins.parquet.format import day_of, write_rows

    archive = open_archive(store)
    t0 = time.time() - 3600
    old = [
        ({"a": b"a1", "b": b"b1", "c": b"c1"}, False, 1_700_000_000_000_000_000),
        ({"a": b"a2"}, False, 1_700_000_000_000_000_005),
        ({"b": b""}, True, 1_700_000_000_000_000_009),  # a tombstone
    ]
    for rows, deleted, seq in old:
        keys = sorted(rows)
        data, _ = write_rows(NS, keys, [rec(rows[k], t0) for k in keys], seq=seq,
                             archived_at=t0, deleted=deleted, row_group_bytes=1 << 20,
                             compression="snappy")  # fmt: skip
        name = f"part-{seq:019d}-{uuid.uuid4().hex[:12]}.parquet"  # the old writer's name
        archive.conn._write({f"{archive.ns_root(NS)}/date={day_of(t0)}/{name}": data})
    now = time.time()
    assert {k: r.value for k, r in archive.get_many(NS, ["a", "b", "c"], now=now).items()} == {
        "a": b"a2",
        "c": b"c1",
    }
    assert archive.put_absent_many(NS, {"a": rec(b"x"), "b": rec(b"b3")}, now=now) == {"b"}
    assert archive.delete_if_unchanged(NS, {"c": archive.get_many(NS, ["c"], now=now)["c"].token},
                                       now=now) == {"c"}  # fmt: skip
    expected = {"a": b"a2", "b": b"b3"}
    for reader in (archive, open_archive(store)):
        got = reader.get_many(NS, ["a", "b", "c"], now=now)
        assert {k: r.value for k, r in got.items()} == expected
    archive.compact(NS, now=now)
    fresh = open_archive(store)
    assert {k: r.value for k, r in fresh.get_many(NS, ["a", "b", "c"], now=now).items()} == expected
    assert raw_rows(fresh) == Counter({"a": 1, "b": 1})


def test_two_compactions_and_writers_race(store: dict[str, Any]) -> None:
    shared = [f"s{i:03d}" for i in range(90)]
    actors: dict[str, tuple[str, dict[str, Any]]] = {
        f"w{n}": ("writer", {"n": 150, "shared": shared, "seed": n}) for n in range(3)
    }
    actors["c1"] = ("compact", {})
    actors["c2"] = ("compact", {})
    results = run(store, actors)
    expected: dict[str, bytes] = {}
    wins = {name: set(results[name]["won"]) for name in ("w0", "w1", "w2")}
    for name in wins:
        expected.update({k: v.encode() for k, v in results[name]["state"].items() if v})
        expected.update(dict.fromkeys(wins[name], name.encode()))
    assert sum(map(len, wins.values())) == len(set().union(*wins.values())) == len(shared)
    got = open_archive(store).get_many(NS, [f"w{n}:{i:03d}" for n in range(3) for i in range(150)]
                                       + shared, now=time.time())  # fmt: skip
    assert {k: r.value for k, r in got.items()} == expected
    assert applied_rows(open_archive(store)).keys() >= expected.keys()


@pytest.mark.parametrize(
    "blob",
    [b"not msgpack \xc1", b"\x93\x01\x02\x03", b"\x81\xa1w\x91\x01", b"\x91" * 5000 + b"\x01"],
    ids=["garbage", "a-list", "bad-entry", "deep"],
)
def test_a_foreign_object_in_the_log_is_a_named_error(store: dict[str, Any], blob: bytes) -> None:
    """Another client writes junk into the next log slot: readers raise SerializationError
    naming the slot (no crash, no hang), and the entries written before stay on disk."""
    from prefect_memory.errors import SerializationError

    archive = open_archive(store)
    archive.put_many("ns", {"k": rec(b"v")}, now=time.time())
    log = archive.fs.find(f"{archive.ns_root('ns')}/_log")
    assert log, "the write claimed a log slot"
    top = max(int(p.rsplit("/", 1)[-1]) for p in log)
    archive.fs.pipe_file(f"{archive.ns_root('ns')}/_log/{top + 1:019d}", blob)
    reader = open_archive(store)
    with pytest.raises(SerializationError, match=f"log slot {top + 1}"):
        reader.get_many("ns", ["k"], now=time.time())
    archive.fs.rm_file(f"{archive.ns_root('ns')}/_log/{top + 1:019d}")
    assert open_archive(store).get_many("ns", ["k"], now=time.time())["k"].value == b"v"

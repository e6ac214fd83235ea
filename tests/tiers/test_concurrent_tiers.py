"""Tiered memory under concurrent processes (issue 14: concurrent reads and migrations lose
entries).

Each actor is its own process (``forkserver``, else ``spawn``: a clean interpreter, nothing
inherited from the test) building its own :class:`TieredMemory` from the
same spec (``_concurrent_actor.py``), as two Prefect workers would; all actors start on one
``multiprocessing.Event`` so that they overlap. What every actor was acknowledged comes back
on its own ``multiprocessing.Queue`` (drained before ``join()``). Afterwards each tier's
backend is scanned directly and compared with the model:

- ``lost``: a key that should hold a value is in no tier;
- ``stale``: a key holds another value than its last acknowledged one;
- ``resurrected``: a key whose last acknowledged operation was a delete is back;
- ``duplicated``: a key lives in more than one tier;
- ``false_misses`` / ``wrong_reads``: a read during the run missed a key that always
  existed, or returned a value never written;
- ``reconcile`` (migrations only): per tier, entries at the end == at the start -/+ the
  moves the migrations' reports claim (``sum(report.total_moved)``).

One summary line per test is printed (``pytest -s``). Stores: hot -> warm pairs among
Redis, SQLite, the MongoDB wire server, S3 (SeaweedFS) and the Parquet archive (colder
tier only, local and on S3). Larger variants run with ``PREFECT_MEMORY_SLOW=1``.

Run: ``.venv/bin/python -m pytest tests/tiers/test_concurrent_tiers.py -s``
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.tiers.moves import TOMBSTONE_NS

sys.path.insert(0, str(Path(__file__).parent))
import _concurrent_actor as actor
from _concurrent_actor import initial_value

pytestmark = pytest.mark.timeout(300)


def slow(test: Any) -> Any:
    """A large variant: marked ``slow``, run by ``make test-slow`` (PREFECT_MEMORY_SLOW=1)."""
    skip = pytest.mark.skipif(
        not os.environ.get("PREFECT_MEMORY_SLOW"), reason="large variant: make test-slow"
    )
    return pytest.mark.slow(skip(test))


MISSING = object()
HOT_PATTERN = "k:*"  # every key of these tests: its home is the hot tier
MOVE_ALL = "accessCount < 1"  # nobody reads: every entry moves
PING_PONG = "accessCount >= 0"  # always true: migrations demote what reads promote
ACTOR_DEADLINE = 240.0  # a hung actor fails the test instead of hanging the run
#: claim_timeout of the MongoDB tiers of a killed migration (the rerun waits it out): far
#: above a live call's claim-to-delete time, which a shorter one would let others take over
CLAIM_TIMEOUT = 3.0

_MARKS = {"redis": pytest.mark.redis, "mongodb": pytest.mark.mongodb, "s3": pytest.mark.s3}


def _pair(hot: str, warm: str) -> Any:
    kinds = {hot.removeprefix("parquet-"), warm.removeprefix("parquet-")}
    return pytest.param(
        hot, warm, id=f"{hot}_to_{warm}", marks=[_MARKS[k] for k in sorted(kinds) if k in _MARKS]
    )


#: hot -> warm: every pair of stores once (hotter store first), the archive only as the
#: colder tier (on local disk and on S3).
PAIRS = [
    _pair("redis", "sqlite"),
    _pair("redis", "mongodb"),
    _pair("redis", "s3"),
    _pair("redis", "parquet"),
    _pair("sqlite", "mongodb"),
    _pair("sqlite", "s3"),
    _pair("sqlite", "parquet-s3"),
    _pair("mongodb", "s3"),
    _pair("mongodb", "parquet"),
    _pair("s3", "parquet-s3"),
]
#: the same stores the other way round (slow variants)
REVERSED = [
    _pair("sqlite", "redis"),
    _pair("mongodb", "redis"),
    _pair("s3", "redis"),
    _pair("mongodb", "sqlite"),
    _pair("s3", "sqlite"),
    _pair("s3", "mongodb"),
]


def sized(n: int, hot: str, warm: str) -> int:
    """``n`` scaled to the stores' speed (an S3 object per entry: ~5 ms per operation, and
    SeaweedFS shares the 2 cores with the actors), so that every test takes a few seconds."""
    kinds = {hot, warm}
    on_s3 = len(kinds & {"s3", "parquet-s3"})
    if on_s3:
        return n // (6 if on_s3 == 1 else 12)
    return n // 2 if "mongodb" in kinds else n


def batch_for(n: int, hot: str, warm: str, batches: int) -> int:
    """The batch size that splits ``n`` keys into about ``batches`` batches (at most 10 on S3,
    where every batch also costs a LIST, and an archive file per write)."""
    if {"s3", "parquet-s3"} & {hot, warm}:
        batches = min(batches, 10)
    return max(2, n // batches)


def keys_of(n: int) -> list[str]:
    return [f"k:{i:05d}" for i in range(n)]


# ---------------------------------------------------------------------------------------------
# stores and specs
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def make_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``make_spec(hot, warm, condition)``: the spec of a hot -> warm memory private to the test."""
    unique = uuid.uuid4().hex[:10]

    def store(kind: str, name: str) -> dict[str, Any]:
        if kind == "redis":
            server = request.getfixturevalue("redis_server")
            return {"url": server.url, "options": {"key_prefix": f"c{unique}{name}"}}
        if kind == "sqlite":
            return {"url": f"sqlite:///{tmp_path}/{name}.db", "options": {}}
        if kind == "mongodb":
            server = request.getfixturevalue("mongo_server")
            sep = "&" if "?" in server.url else "?"
            return {"url": f"{server.url}{sep}collection=c{unique}{name}", "options": {}}
        if kind in ("s3", "parquet-s3"):
            server = request.getfixturevalue("s3_server")
            server.make_bucket("pm-concurrent")
            scheme = "s3://" if kind == "s3" else "parquet::s3://"
            return {
                "url": f"{scheme}pm-concurrent/{unique}-{name}",
                "options": {"storage_options": server.storage_options},
            }
        if kind == "parquet":
            return {"url": f"parquet:///{tmp_path}/{name}-archive", "options": {}}
        raise AssertionError(f"unknown store {kind!r}")

    def _spec(hot: str, warm: str, condition: str | None = MOVE_ALL) -> dict[str, Any]:
        rules = [] if condition is None else [{"from": "hot", "to": "warm", "condition": condition}]
        return {
            "namespace": f"conc{unique}",
            "promote": "home",
            "rules": rules,
            "tiers": [
                {"name": "hot", "patterns": [HOT_PATTERN], **store(hot, "hot")},
                {"name": "warm", "patterns": ["cold:*"], **store(warm, "warm")},
            ],
        }

    return _spec


def seed(
    spec: dict[str, Any], placement: dict[str, Iterable[str]], tags: Callable[[str], str]
) -> None:
    """Write ``initial_value(k)`` with tag ``tags(k)`` straight into the tier named for each key."""
    mem = actor.build(spec)
    try:
        for tier in mem.tiers:
            direct = pm.Memory(tier.backend, mem.namespace)
            by_tag: dict[str, dict[str, Any]] = {}
            for key in placement.get(tier.name, ()):
                by_tag.setdefault(tags(key), {})[key] = initial_value(key)
            for tag, entries in by_tag.items():
                direct.set_many(entries, tags=[tag])
    finally:
        mem.close()


@dataclass
class Census:
    """Where every key lives (each tier's backend scanned directly) and what a read returns."""

    where: dict[str, set[str]]
    values: dict[str, Any]
    spec: dict[str, Any] | None = None

    def explain(self, keys: Iterable[str]) -> dict[str, Any]:
        """For a failure message: each key's records per tier (token, tags) and tombstones."""
        if self.spec is None:
            return {}
        mem = actor.build(self.spec, promote="never")
        try:
            now, ns, out = mem.clock(), mem.namespace, {}
            stones = mem.backend.tombstones
            for key in keys:
                rows = []
                for tier in mem.tiers:
                    for r in tier.backend.get_many(ns, [key], now=now, touch=False).values():
                        rows.append(f"{tier.name}:v{r.version}@{r.updated_at!r}{list(r.tags)}")
                names = [stones.deleted_name(key)] + [stones.name(key, v) for v in range(1, 40)]
                found = stones.backend.get_many(ns + TOMBSTONE_NS, names, now=now, touch=False)
                rows += [f"{n.rsplit('|', 1)[1]}={r.value.decode()}" for n, r in found.items()]
                out[key] = rows
            return out
        finally:
            mem.close()

    def count(self, tier: str) -> int:
        return len(self.where[tier])


def census(spec: dict[str, Any], keys: list[str]) -> Census:
    mem = actor.build(spec, promote="never")  # reading must not move anything
    try:
        now = mem.clock()
        where = {t.name: set(t.backend.scan(mem.namespace, None, now=now)) for t in mem.tiers}
        found = mem.backend.get_many(mem.namespace, keys, now=now, touch=False)  # no count
        values = {k: mem.codec.decode(r.value) for k, r in found.items()}
    finally:
        mem.close()
    return Census(where, values, spec)


# ---------------------------------------------------------------------------------------------
# the actors
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    killed: list[str] = field(default_factory=list)
    batches_before_kill: int = 0
    ready_seconds: float = 0.0  # from the first start() to every actor ready


def run_actors(
    spec: dict[str, Any],
    actors: dict[str, dict[str, Any]],
    *,
    kill: tuple[str, int] | None = None,
) -> Run:
    """Start every actor in its own process, start them together, collect what they report.

    ``kill=(name, n)``: SIGKILL actor ``name`` as soon as it reports its ``n``-th batch. An
    actor with ``"after": m`` starts only once that actor reported its ``m``-th batch (or
    ended): the victim is then certain to be mid-run when the overlap begins.
    """
    ctx = _context()
    go, stop, late = ctx.Event(), ctx.Event(), ctx.Event()
    procs: dict[str, Any] = {}
    queues: dict[str, Any] = {}
    run = Run()
    started = time.monotonic()
    deadline = started + ACTOR_DEADLINE
    try:
        for name, params in actors.items():
            queues[name] = ctx.Queue()  # one queue each: a killed actor cannot jam the others
            procs[name] = ctx.Process(
                target=actor.run,
                args=(name, spec, params, queues[name], late if "after" in params else go, stop),
                name=f"pm-{name}",
                daemon=True,
            )
            procs[name].start()
        # 1. every actor has built its memory and reached the store; 2. all go at once
        for phase in ("ready", "done"):
            waiting = set(actors) - set(run.errors) - set(run.killed)
            if phase == "done":
                run.ready_seconds = round(time.monotonic() - started, 1)
                go.set()
            while waiting and time.monotonic() < deadline:
                idle = True
                for name in sorted(waiting):
                    msg = _receive(queues[name], procs[name])
                    if msg is None:
                        continue
                    idle = False
                    if msg[0] == phase == "ready":
                        waiting.discard(name)
                    elif msg[0] == "batch" and kill is not None and name == kill[0]:
                        if any(msg[1] >= p.get("after", msg[1] + 1) for p in actors.values()):
                            late.set()
                        if msg[1] >= kill[1]:
                            os.kill(procs[name].pid, signal.SIGKILL)
                            run.batches_before_kill = msg[1]
                            run.killed.append(name)
                            waiting.discard(name)
                    elif msg[0] == "done":
                        late.set()  # the kill target ended: nothing left to wait for
                        run.results[name] = msg[1]
                        waiting.discard(name)
                    elif msg[0] == "error":
                        run.errors[name] = msg[1]
                        waiting.discard(name)
                    elif msg[0] == "gone":
                        run.errors[name] = f"exited with {procs[name].exitcode} without a word"
                        waiting.discard(name)
                if idle:
                    time.sleep(0.002)  # polling interval of the queues (not a synchronisation)
            if waiting:
                run.errors.update({n: f"hung (not {phase} before the deadline)" for n in waiting})
            if run.errors:
                break
    finally:
        stop.set()
        go.set()
        late.set()
        for proc in procs.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        for q in queues.values():
            q.close()
            q.cancel_join_thread()
    return run


def _context() -> Any:
    """``forkserver`` (a clean spawned server that forks each actor: ~0.05 s instead of ~0.7 s
    per actor), else ``spawn``. Either way no actor inherits the test's clients or threads."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


PRELOAD = [
    "_concurrent_actor",
    "prefect_memory.plugins.fs",
    "prefect_memory.plugins.mongodb",
    "prefect_memory.plugins.redis.backend",
    "prefect_memory.plugins.sqlite",
    "prefect_memory.plugins.parquet.backend",
    "pymongo",
    "redis",
    "s3fs",
]


def _receive(q: Any, proc: Any) -> Any:
    """The actor's next message, ``("gone",)`` when it died silently, or ``None`` (not yet)."""
    try:
        return q.get_nowait()
    except queue_mod.Empty:
        if proc.is_alive():
            return None
        try:  # it may have put its last message just before exiting
            return q.get(timeout=1.0)
        except queue_mod.Empty:
            return ("gone",)


# ---------------------------------------------------------------------------------------------
# the books
# ---------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Counts of one test, as the fault suite keeps them (all bad counts must be 0)."""

    name: str
    entries: int = 0
    acked: int = 0
    reads: int = 0
    moved: int = 0
    lost: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    false_misses: int = 0
    wrong_reads: int = 0
    bad_reads: list[str] = field(default_factory=list)
    reconcile: list[str] | None = None  # None: no reports to reconcile in this scenario
    errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    laps: dict[str, float] = field(default_factory=dict)

    def lap(self, phase: str) -> None:
        """Note the seconds since the test started at the end of ``phase``."""
        self.laps[phase] = round(time.monotonic() - self.started, 1)

    def take(self, run: Run) -> None:
        """Fold in what the actors reported."""
        self.errors.update(run.errors)
        self.notes["spawned_in"] = f"{run.ready_seconds}s"
        for result in run.results.values():
            self.moved += result.get("moved", 0)
            self.reads += result.get("reads", 0)
            self.false_misses += result.get("false_misses", 0)
            self.wrong_reads += result.get("wrong", 0)
            self.bad_reads += result.get("bad", [])

    def check(self, seen: Census, expected: dict[str, list[Any]], *, unique: bool = True) -> None:
        """Compare the stores with the model: ``expected[key]`` lists the acceptable finals."""
        self.entries = len(expected)
        for key, acceptable in expected.items():
            value = seen.values.get(key, MISSING)
            if any(_same(value, ok) for ok in acceptable):
                continue
            if value is MISSING:
                self.lost.append(key)
            elif all(ok is MISSING for ok in acceptable):
                self.resurrected.append(f"{key}={value!r}")
            else:
                self.stale.append(f"{key}={value!r} (want {acceptable[-1]!r})")
        if unique:
            self.duplicated = sorted(set.intersection(*seen.where.values()))
        strays = set.union(*seen.where.values()) - set(expected)
        if strays:
            self.notes["strays"] = sorted(strays)[:5]

    def balance(self, before: dict[str, int], seen: Census, demoted: int) -> None:
        """Entries per tier at the end == at the start -/+ the moves the reports claim."""
        want = {"hot": before["hot"] - demoted, "warm": before["warm"] + demoted}
        self.reconcile = []
        for tier, n in want.items():
            if seen.count(tier) != n:
                self.reconcile.append(f"{tier}: {seen.count(tier)} entries, reports say {n}")

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"[tiers] {self.name}: keys={self.entries} acked={self.acked} moved={self.moved} "
            f"reads={self.reads} LOST={len(self.lost)} "
            f"stale={len(self.stale)} resurrected={len(self.resurrected)} "
            f"duplicated={len(self.duplicated)} false_misses={self.false_misses} "
            f"wrong_reads={self.wrong_reads} reconcile={_verdict(self.reconcile)} "
            f"errors={len(self.errors)} {extra} in {time.monotonic() - self.started:.1f}s "
            f"(at {', '.join(f'{k} {v}s' for k, v in self.laps.items())})"
        )

    def assert_clean(self) -> None:
        print("\n" + self.line())
        problems = []
        if self.errors:
            problems.append(f"actor errors: {_first_lines(self.errors)}")
        for label in ("lost", "stale", "resurrected", "duplicated"):
            items = getattr(self, label)
            if items:
                problems.append(f"{len(items)} {label}: {items[:5]}")
        if self.false_misses or self.wrong_reads:
            problems.append(
                f"reads: {self.false_misses} false misses, {self.wrong_reads} wrong: "
                f"{self.bad_reads[:5]}"
            )
        if self.reconcile:
            problems.append(f"reports do not reconcile: {self.reconcile}")
        assert not problems, f"{self.line()}\n  " + "\n  ".join(problems)


def _verdict(mismatches: list[str] | None) -> str:
    return "-" if mismatches is None else "NO" if mismatches else "ok"


def _same(value: Any, expected: Any) -> bool:
    if value is MISSING or expected is MISSING:
        return value is expected
    return bool(value == expected)


def _first_lines(errors: dict[str, str]) -> dict[str, str]:
    return {name: text.strip().splitlines()[-1] for name, text in errors.items()}


def _name(request: pytest.FixtureRequest) -> str:
    return request.node.name.removeprefix("test_")


# ---------------------------------------------------------------------------------------------
# 1. overlapping migrations of the same keys
# ---------------------------------------------------------------------------------------------
def overlapping_migrations(
    request: pytest.FixtureRequest, spec: dict[str, Any], n: int, migrators: int, batch: int
) -> None:
    keys = keys_of(n)
    book = Tally(_name(request))
    seed(spec, {"hot": keys}, lambda k: "t")
    book.lap("seed")
    run = run_actors(
        spec, {f"migrate-{i}": {"role": "migrate", "batch_size": batch} for i in range(migrators)}
    )
    book.take(run)
    book.lap("run")
    seen = census(spec, keys)
    book.check(seen, {k: [initial_value(k)] for k in keys})
    book.lap("check")
    book.balance({"hot": n, "warm": 0}, seen, demoted=book.moved)
    book.notes["in_warm"] = seen.count("warm")
    book.assert_clean()


@pytest.mark.parametrize("hot,warm", PAIRS)
def test_overlapping_migrations(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    n = sized(600, hot, warm)
    batch = batch_for(n, hot, warm, 25)
    overlapping_migrations(request, make_spec(hot, warm), n=n, migrators=3, batch=batch)


@slow
@pytest.mark.redis
def test_overlapping_migrations_large(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any]
) -> None:
    overlapping_migrations(request, make_spec("redis", "sqlite"), n=20_000, migrators=4, batch=50)


@slow
@pytest.mark.parametrize("hot,warm", REVERSED)
def test_overlapping_migrations_reversed(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    n = sized(2000, hot, warm)
    overlapping_migrations(request, make_spec(hot, warm), n=n, migrators=4, batch=n // 50)


# ---------------------------------------------------------------------------------------------
# 2. readers promoting the same keys on read
# ---------------------------------------------------------------------------------------------
def promoting_readers(
    request: pytest.FixtureRequest, spec: dict[str, Any], n: int, readers: int, chunk: int
) -> None:
    keys = keys_of(n)
    book = Tally(_name(request))
    seed(spec, {"warm": keys}, lambda k: "t")  # colder than their home (hot)
    book.lap("seed")
    # chunks of different sizes: the readers' batches overlap at shifting boundaries
    chunks = [chunk + i * (chunk // 2 + 1) for i in range(readers)]
    actors = {
        f"read-{i}": {"role": "read", "keys": keys, "chunk": c, "passes": 2}
        for i, c in enumerate(chunks)
    }
    run = run_actors(spec, actors)
    book.take(run)
    book.lap("run")
    seen = census(spec, keys)
    book.check(seen, {k: [initial_value(k)] for k in keys})
    book.lap("check")
    book.assert_clean()


@pytest.mark.parametrize("hot,warm", PAIRS)
def test_promoting_readers(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    n = sized(400, hot, warm)
    chunk = batch_for(n, hot, warm, 20)
    promoting_readers(request, make_spec(hot, warm, None), n=n, readers=3, chunk=chunk)


@slow
@pytest.mark.parametrize("hot,warm", REVERSED)
def test_promoting_readers_reversed(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    n = sized(1200, hot, warm)
    promoting_readers(request, make_spec(hot, warm, None), n=n, readers=4, chunk=n // 50)


# ---------------------------------------------------------------------------------------------
# 3. migrations demoting while readers promote the same keys
# ---------------------------------------------------------------------------------------------
def demote_while_promote(
    request: pytest.FixtureRequest, spec: dict[str, Any], n: int, batch: int, rounds: int
) -> None:
    keys = keys_of(n)
    book = Tally(_name(request))
    seed(spec, {"hot": keys[0::2], "warm": keys[1::2]}, lambda k: "t")
    book.lap("seed")
    actors: dict[str, dict[str, Any]] = {
        f"migrate-{i}": {"role": "migrate", "batch_size": batch, "rounds": rounds} for i in range(2)
    }
    actors.update(
        {
            f"read-{i}": {"role": "read", "keys": keys, "chunk": batch, "passes": rounds}
            for i in range(2)
        }
    )
    run = run_actors(spec, actors)
    book.take(run)
    book.lap("run")
    seen = census(spec, keys)
    book.check(seen, {k: [initial_value(k)] for k in keys})
    book.lap("check")
    book.notes["in_hot"] = seen.count("hot")
    book.assert_clean()


@pytest.mark.parametrize("hot,warm", PAIRS)
def test_demote_while_promote(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    n = sized(300, hot, warm)
    spec = make_spec(hot, warm, PING_PONG)
    demote_while_promote(request, spec, n=n, batch=batch_for(n, hot, warm, 15), rounds=3)


# ---------------------------------------------------------------------------------------------
# 4. a writer (set / delete / invalidate_tags) during migrations and promoting reads
# ---------------------------------------------------------------------------------------------
WRITER_TAGS = ["w0", "w1", "w2", "w3"]


def writer_during_moves(
    request: pytest.FixtureRequest, spec: dict[str, Any], n: int, batch: int, ops: int
) -> None:
    keys = keys_of(n)
    written = keys[0::3]  # the writer's keys; the others keep their initial value
    first_tag = {k: WRITER_TAGS[i % len(WRITER_TAGS)] for i, k in enumerate(written)}
    book = Tally(_name(request))
    seed(spec, {"hot": keys[0::2], "warm": keys[1::2]}, lambda k: first_tag.get(k, "r"))
    book.lap("seed")
    actors: dict[str, dict[str, Any]] = {
        f"migrate-{i}": {"role": "migrate", "batch_size": batch, "until_stop": True}
        for i in range(2)
    }
    actors["read-0"] = {
        "role": "read", "keys": keys, "chunk": batch, "volatile": written, "until_stop": True
    }  # fmt: skip
    actors["write"] = {
        "role": "write", "keys": written, "tags": WRITER_TAGS, "initial_tags": first_tag,
        "ops": ops, "seed": 14,
    }  # fmt: skip
    run = run_actors(spec, actors)
    book.take(run)
    book.lap("run")
    # the model: per key, its operations in order; acceptable finals are the last
    # acknowledged one and any attempted after it (as tests/faults/ledger.py)
    history: dict[str, list[tuple[Any, bool]]] = {k: [(initial_value(k), True)] for k in keys}
    log = run.results.get("write", {}).get("log", [])
    for _n, kind, key, value, acked in log:
        history[key].append((MISSING if kind == "delete" else value, acked))
        book.acked += acked
    expected = {}
    for key, ops_ in history.items():
        last = max(i for i, (_, acked) in enumerate(ops_) if acked)
        expected[key] = [value for value, _ in ops_[last:]]
    book.notes["writes"] = len(log)
    book.notes["deleted_at_end"] = sum(1 for v in expected.values() if v[0] is MISSING)
    seen = census(spec, keys)
    book.check(seen, expected)
    bad = [item.split("=", 1)[0] for item in book.lost + book.stale + book.resurrected]
    if bad:  # what the stores and the writer say about them, for the failure message
        try:
            book.notes["explain"] = seen.explain(bad[:3])
        except Exception as err:  # a diagnosis only: the failure is reported anyway
            book.notes["explain"] = repr(err)
        book.notes["history"] = {k: [row[:2] for row in log if row[2] == k] for k in bad[:3]}
        invalidated = run.results.get("write", {}).get("invalidated", [])
        # and those that removed more keys than the writer knew to carry the tag
        book.notes["invalidated"] = [
            i for i in invalidated if set(i[2]) & set(bad) or (i[3] or 0) > len(i[2])
        ]
    book.lap("check")
    book.assert_clean()


@pytest.mark.parametrize("hot,warm", PAIRS)
def test_writer_during_moves(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    n = sized(300, hot, warm)
    spec = make_spec(hot, warm, PING_PONG)
    writer_during_moves(request, spec, n=n, batch=batch_for(n, hot, warm, 15), ops=max(40, n // 2))


@slow
@pytest.mark.parametrize("hot,warm", [_pair("redis", "s3"), _pair("redis", "sqlite")])
def test_writer_on_few_keys_during_moves(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    """The same on 4 written keys, ~30 operations each: every key is rewritten and deleted
    while it moves (the version regression that resurrected a deleted key showed here)."""
    spec = make_spec(hot, warm, PING_PONG)
    writer_during_moves(request, spec, n=12, batch=4, ops=120)


# ---------------------------------------------------------------------------------------------
# 5. one of two concurrent migrations SIGKILLed mid-run
# ---------------------------------------------------------------------------------------------
def killed_migration(
    request: pytest.FixtureRequest, spec: dict[str, Any], n: int, batch: int, kill_after: int
) -> None:
    keys = keys_of(n)
    book = Tally(_name(request))
    # A MongoDB delete claims its documents before deleting them: a victim killed between
    # the two leaves claimed entries (still in the source, copied in the target) that
    # another migration takes over only once the claim has expired (claim_timeout).
    claims = [t for t in spec["tiers"] if t["url"].startswith("mongodb")]
    for tier in claims:
        tier["options"] = {**tier.get("options", {}), "claim_timeout": CLAIM_TIMEOUT}
    seed(spec, {"hot": keys}, lambda k: "t")
    book.lap("seed")
    actors = {
        # smaller batches: the victim reports batches often enough to be killed mid-run; the
        # other migration joins once the victim has moved kill_after - 1 batches (started
        # together, on S3 it once moved everything before the victim's third batch)
        "victim": {"role": "migrate", "batch_size": max(2, batch // 4), "progress": True},
        "migrate-1": {"role": "migrate", "batch_size": batch, "after": kill_after - 1},
    }
    run = run_actors(spec, actors, kill=("victim", kill_after))
    killed_at = time.monotonic()
    assert run.killed == ["victim"], f"the victim finished before the kill: {run.errors}"
    book.take(run)
    book.lap("run")
    want = {k: [initial_value(k)] for k in keys}
    right_after = census(spec, keys)
    after_kill = Tally("after the kill")
    after_kill.check(right_after, want, unique=False)  # copies in both tiers allowed here
    book.notes["lost_after_kill"] = len(after_kill.lost)
    book.notes["dup_after_kill"] = len(set.intersection(*right_after.where.values()))
    if claims:  # the victim's claims expire before the rerun (not a timing assertion)
        time.sleep(max(0.0, CLAIM_TIMEOUT - (time.monotonic() - killed_at)))
    mem = actor.build(spec)
    try:
        book.notes["rerun_moved"] = mem.migrate(batch_size=batch).total_moved
    finally:
        mem.close()
    final = census(spec, keys)
    book.check(final, want)
    book.lap("rerun and check")
    book.lost = sorted(set(book.lost) | set(after_kill.lost))
    book.stale = sorted(set(book.stale) | set(after_kill.stale))
    book.assert_clean()


@pytest.mark.parametrize("hot,warm", PAIRS)
def test_killed_migration(
    request: pytest.FixtureRequest, make_spec: Callable[..., Any], hot: str, warm: str
) -> None:
    n = sized(400, hot, warm)
    batch = batch_for(n, hot, warm, 20)
    killed_migration(request, make_spec(hot, warm), n=n, batch=batch, kill_after=3)

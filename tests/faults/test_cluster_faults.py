"""Faults of a real Redis Cluster (3 primaries + 3 replicas) under a writer in another process.

A writer process (this file run as a script: ``python test_cluster_faults.py writer ...``)
puts, batch-puts, deletes and reads the keys of one namespace with
``consistency="strong"`` (``quorum=1``: a write is acknowledged once the primary's replica
has it), retrying a failed write as a user would (the same value, for a few seconds), and
logs every operation with its outcome, one JSON line each. Meanwhile the test kills a
primary (SIGKILL: its replica is promoted) or reshards slots of the namespace with
``redis-cli --cluster reshard``. Afterwards the log is replayed into a
:class:`~faults.ledger.Ledger`, the model of what the client was told: every
acknowledged write must be read back (or a later attempted one), every read made during
the fault must have returned an acceptable value. Counts are printed (``[faults]`` line,
and the table at the end of the run).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

if __name__ != "__main__":  # under pytest (tests/ is on sys.path: see tests/conftest.py)
    from faults.ledger import MISSING, Ledger, _Op
    from shared.conftest_replicas import (  # noqa: F401 - the fixture, used by name
        ReplicatedCluster,
        redis_cluster_replicas,
    )

    pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.timeout(150)]

#: Seconds of each reply (and of each WAIT for the replica) in the writer.
TIMEOUT = 0.5
#: Seconds the writer keeps retrying one write before giving up on it (not acknowledged).
RETRY_FOR = 3.0
KEYS = 300
#: Entries written before a reshard (1000 in the moved slot in layout 1, ~250 in layout 2).
FILLER = {1: 1000, 2: 4000}


# -- the writer process ------------------------------------------------------------------------
def writer(url: str, prefix: str, ns: str, layout: int, log_path: str, stop_path: str,
           seed: int, keys: list[str]) -> None:  # fmt: skip
    """Write ``keys`` until ``stop_path`` exists; log each operation (module docstring)."""
    import prefect_memory as pm

    transient = (pm.BackendUnavailable, pm.ConsensusError)
    mem = pm.open_memory(
        url, namespace=ns, key_prefix=prefix, layout=layout, consistency="strong", quorum=1,
        timeout=TIMEOUT,
    )  # fmt: skip
    rng = random.Random(seed)
    n = 0
    with open(log_path, "a", buffering=1) as log:
        while not os.path.exists(stop_path):
            n += 1
            roll = rng.random()
            began = time.time()
            errors: dict[str, int] = {}
            if roll < 0.15:  # a read: one attempt, its answer checked against the model
                key = rng.choice(keys)
                rec: dict[str, Any] = {"n": n, "kind": "read", "key": key}
                try:
                    rec["value"] = mem.get(key, None)
                except pm.PrefectMemoryError as err:
                    rec["error"] = type(err).__name__
                log.write(json.dumps({**rec, "t": [began, time.time()]}) + "\n")
                continue
            if roll < 0.25:
                kind, items = "del", {rng.choice(keys): None}
            elif roll < 0.40:
                batch = rng.sample(keys, rng.randint(2, 12))
                kind, items = "many", {k: {"key": k, "op": n, "i": i} for i, k in enumerate(batch)}
            else:
                key = rng.choice(keys)
                kind, items = "put", {key: {"key": key, "op": n}}
            attempts, acked = 0, False
            while True:
                attempts += 1
                try:
                    apply(mem, kind, items)
                    acked = True
                    break
                except pm.PrefectMemoryError as err:
                    name = type(err).__name__
                    errors[name] = errors.get(name, 0) + 1
                    if not isinstance(err, transient) or time.time() - began > RETRY_FOR:
                        errors[f"last: {name}: {str(err)[:160]}"] = 1
                        break
                    time.sleep(0.05)
            rec = {"n": n, "kind": kind, "items": items, "acked": acked, "attempts": attempts,
                   "errors": errors, "t": [began, time.time()]}  # fmt: skip
            log.write(json.dumps(rec) + "\n")


def apply(mem: Any, kind: str, items: dict[str, Any]) -> None:
    """One write of the writer: ``del`` (one key), ``put`` (one key) or ``many``."""
    if kind == "del":
        mem.delete(next(iter(items)))
    elif kind == "put":
        mem.set(*next(iter(items.items())))
    else:
        mem.set_many(items)


# -- the test side -----------------------------------------------------------------------------
@dataclass
class Writer:
    """A writer process and its log."""

    prefix: str
    log: Path
    stop_file: Path
    process: subprocess.Popen[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    _read: int = 0

    @classmethod
    def start(
        cls, tmp: Path, url: str, prefix: str, ns: str, layout: int, seed: int, keys: list[str]
    ) -> Writer:
        log, stop = tmp / f"writer-{seed}.jsonl", tmp / f"stop-{seed}"
        args = [sys.executable, str(Path(__file__).resolve()), "writer", url, prefix, ns,
                str(layout), str(log), str(stop), str(seed), ",".join(keys)]  # fmt: skip
        return cls(prefix, log, stop, subprocess.Popen(args, stderr=subprocess.PIPE, text=True))

    def poll(self) -> list[dict[str, Any]]:
        """Records written since the last poll are added to :attr:`records` (whole lines)."""
        if self.log.exists():
            with self.log.open() as f:
                f.seek(self._read)
                while (line := f.readline()).endswith("\n"):
                    self.records.append(json.loads(line))
                    self._read = f.tell()
        return self.records

    def acked_since(self, when: float) -> int:
        self.poll()
        return sum(1 for r in self.records if r.get("acked") and r["t"][0] >= when)

    def wait(self, condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"the writer died: {self.process.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"the writer never {what} within {limit}s")
            time.sleep(0.02)

    def stop(self) -> list[dict[str, Any]]:
        self.stop_file.touch()
        try:
            _, err = self.process.communicate(timeout=RETRY_FOR + 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        assert self.process.returncode == 0, f"the writer failed:\n{err}"
        return self.poll()


@contextlib.contextmanager
def writing(
    tmp: Path, cluster: ReplicatedCluster, ns: str, layout: int, keys: list[str] | None = None
) -> Iterator[Writer]:
    """A writer process on a fresh key prefix; stopped (and its log read) on the way out."""
    keys = keys or [f"k{i:03d}" for i in range(KEYS)]
    prefix = "pmf" + uuid.uuid4().hex[:8]
    run = Writer.start(tmp, cluster.url, prefix, ns, layout, seed=layout, keys=keys)
    try:
        yield run
    finally:
        if run.process.poll() is None:
            run.stop_file.touch()
            try:
                run.process.wait(timeout=RETRY_FOR + 30)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()


def replay(records: list[dict[str, Any]], ledger: Ledger) -> dict[str, int]:
    """Feed the writer's log to ``ledger`` in order; reads are checked as they were made."""
    retried = gave_up = 0
    for rec in records:
        if rec["kind"] == "read":
            ledger.reads += 1
            if "error" in rec:
                name = f"read {rec['error']}"
                ledger.errors[name] = ledger.errors.get(name, 0) + 1
                continue
            value = MISSING if rec["value"] is None else rec["value"]
            if not any(_same(value, ok) for ok in ledger.acceptable(rec["key"])):
                ledger.stale_reads += 1
                ledger.found[f"read#{rec['n']}:{rec['key']}"] = rec["value"]
            continue
        acked = bool(rec["acked"])
        for key, value in rec["items"].items():
            ledger.tried += 1
            ledger.ops.setdefault(key, []).append(_Op(MISSING if value is None else value, acked))
            ledger.acknowledged += acked
            ledger.failed += not acked
        for name, count in rec["errors"].items():
            ledger.errors[name] = ledger.errors.get(name, 0) + count
        retried += rec["attempts"] > 1
        gave_up += not acked
        ledger.max_latency = max(ledger.max_latency, rec["t"][1] - rec["t"][0])
    ledger.notes.update(writes_retried=retried, writes_given_up=gave_up)
    return {"retried": retried, "gave_up": gave_up}


def _same(value: Any, expected: Any) -> bool:
    if expected is MISSING or value is MISSING:
        return value is expected
    return bool(value == expected)


def check(cluster: ReplicatedCluster, run: Writer, ledger: Ledger, ns: str, layout: int) -> None:
    """Read every key the writer touched back through a fresh client; compare with the model."""
    import prefect_memory as pm

    mem = pm.open_memory(cluster.url, namespace=ns, key_prefix=run.prefix, layout=layout)
    keys = sorted(ledger.ops)
    found: dict[str, Any] = {}
    for start in range(0, len(keys), 100):
        found.update(mem.get_many(keys[start : start + 100]))
    ledger.verify(found, "cluster")
    listed = list(mem.keys())
    ledger.verify_unique("keys()", listed)
    ledger.notes["keys_listed"] = len(listed)
    ledger.notes["keys_expected"] = sum(1 for k in keys if k in found)
    print(f"[faults] {ledger.line()}  notes={ledger.notes}")
    ledger.assert_clean()
    assert sorted(listed) == sorted(found), "keys() differs from the entries read back"


def slots_of(prefix: str, ns: str, layout: int) -> list[int]:
    """The slots holding the namespace's entries (layout 1: one; layout 2: its buckets)."""
    from redis.crc import key_slot

    from prefect_memory.keys import ns_token
    from prefect_memory.plugins.redis.layout import DEFAULT_BUCKETS, Spread

    if layout == 1:
        return [key_slot(f"{prefix}:{{{ns_token(ns)}}}:".encode())]
    return sorted(key_slot(b.encode()) for b in Spread(prefix, ns, DEFAULT_BUCKETS).bases)


# -- 1. a primary killed mid-write, its replica promoted ----------------------------------------
@pytest.mark.parametrize("layout", [1, 2], ids=["layout1", "layout2"])
def test_primary_killed_replica_promoted_mid_write(
    layout: int, redis_cluster_replicas: ReplicatedCluster, tmp_path: Path, ledger: Ledger
) -> None:
    """kill -9 of a primary serving the namespace while a writer process writes.

    Layout 1 loses its one slot's primary (every write waits for the promotion); layout 2
    loses the seed node of the client's URL (one bucket in three), and the writes of the
    other buckets keep being acknowledged meanwhile. While the killed node is still down the
    client must find the promoted primary (its slot map reloaded from the nodes still up);
    but a strong write cannot be acknowledged by a primary left without a replica (WAIT
    counts 0: ``ConsensusError``), so the killed node is then restarted (it rejoins as the
    new primary's replica) and every write is acknowledged again.
    """
    cluster = redis_cluster_replicas
    cluster.repair()
    ns = f"kill{layout}"
    with writing(tmp_path, cluster, ns, layout) as run:
        run.wait(lambda: run.acked_since(0) >= 200, "acknowledged 200 writes")
        seed = cluster.nodes[0]
        primaries = cluster.primaries()
        slots = slots_of(run.prefix, ns, layout)
        # Layout 2: the client's seed node goes (its slot map must come from the others).
        victim = seed if layout == 2 and seed in primaries else cluster.owner(slots[0])
        lost_slots = [s for s in slots if cluster.owner(s) is victim]
        assert lost_slots, "the victim serves none of the namespace's slots"
        ledger.notes.update(victim_is_seed=victim is seed, victim_slots=len(lost_slots))
        ledger.fault("kill -9 primary")
        killed_at = time.time()
        victim.kill()
        live = [node for node in cluster.nodes if node is not victim]

        def promoted() -> bool:
            try:
                return all(cluster.owner(s) is not victim for s in lost_slots)
            except Exception:
                return False

        run.wait(promoted, "saw the replica promoted (cluster_state stays ok meanwhile)")
        cluster.wait_state_ok(live)
        promoted_at = time.time()
        ledger.notes["promotion_seconds"] = round(promoted_at - killed_at, 2)

        def reached_promoted() -> bool:
            # A strong write refused for want of a replica (ConsensusError) was run by the
            # promoted primary: the client found it while the killed node is still down.
            run.poll()
            return any(
                "ConsensusError" in r.get("errors", {})
                for r in run.records
                if r["t"][0] >= killed_at
            )

        run.wait(reached_promoted, "reached the promoted primary", 20)
        ledger.notes["client_found_promoted_after"] = round(time.time() - killed_at, 2)
        if layout == 2:  # the other primaries' buckets keep working, the replica-less one not
            run.wait(lambda: run.acked_since(promoted_at) >= 3, "acknowledged 3 writes", 60)
            ledger.notes["acked_before_the_replica_returned"] = run.acked_since(promoted_at)
        victim.restart()  # back as the promoted primary's replica
        cluster.wait_healthy()
        healthy_at = time.time()
        ledger.notes["healthy_again_seconds"] = round(healthy_at - killed_at, 2)
        assert cluster.replica_of(cluster.owner(lost_slots[0])) is victim
        run.wait(lambda: run.acked_since(healthy_at) >= 200, "acknowledged 200 writes after")
        records = run.stop()
    replay(records, ledger)
    after = [r for r in records if r["kind"] != "read" and r["t"][0] >= healthy_at]
    failed_after = [r for r in after if not r["acked"]]
    during = [r for r in records if r["kind"] != "read" and killed_at <= r["t"][0] < healthy_at]
    ledger.notes.update(writes_during_fault=len(during), writes_after=len(after))
    check(cluster, run, ledger, ns, layout)
    assert any(r["attempts"] > 1 or not r["acked"] for r in during), "the kill was not felt"
    assert not failed_after, f"writes failed once the cluster was healthy: {failed_after[:3]}"


# -- 2. slots resharded mid-write ---------------------------------------------------------------
def early_namespace(
    cluster: ReplicatedCluster, stem: str, layout: int, within: int
) -> tuple[str, int, int, int]:
    """A namespace (``stem`` + a number) with a slot among the ``within`` lowest slots of its
    primary (``redis-cli --cluster reshard`` moves a node's lowest slots first): the
    namespace, the primary's port, how many of its lowest slots to move so that this slot
    goes, and the slot. (A namespace's slots depend on its name only, not the key prefix.)"""
    ranges: dict[int, list[tuple[int, int]]] = {}
    for start, end, primary, *_ in cluster.command(cluster.live()[0], "CLUSTER", "SLOTS"):
        ranges.setdefault(int(primary[1]), []).append((int(start), int(end)))
    for i in range(5000):
        ns = f"{stem}{i}"
        for slot in slots_of("p", ns, layout):
            port, mine = next(
                (p, r) for p, r in ranges.items() if any(a <= slot <= b for a, b in r)
            )
            rank = sum(min(b, slot - 1) - a + 1 for a, b in sorted(mine) if a < slot)
            if rank < within:
                return ns, port, rank + 1, slot
    raise AssertionError("no namespace found")  # pragma: no cover - 5000 tries


@pytest.mark.parametrize("replace", [False, True], ids=["reshard", "reshard-replace"])
@pytest.mark.parametrize("layout", [1, 2], ids=["layout1", "layout2"])
def test_slots_resharded_mid_write(
    layout: int,
    replace: bool,
    redis_cluster_replicas: ReplicatedCluster,
    tmp_path: Path,
    ledger: Ledger,
) -> None:
    """``redis-cli --cluster reshard`` moves a slot of the namespace (its keys migrated one
    by one: ``--cluster-pipeline 1``, a long ASK window) while a writer process writes.

    A client that wrote a key on the importing node before the migration moved it there
    makes the plain reshard abort (MIGRATE: "Target key exists") and, with
    ``--cluster-replace``, lets the source's older copy overwrite the acknowledged newer
    value: both variants must finish with nothing lost and no stale read.
    """
    cluster = redis_cluster_replicas
    cluster.repair()
    ns, port, count, slot = early_namespace(cluster, f"reshard{layout}-", layout, within=200)
    # Half of the writer's keys in the slot that moves (all of them in layout 1).
    candidates = (f"k{i:04d}" for i in range(100_000))
    keys = list(
        itertools.islice((k for k in candidates if slot_of("p", ns, layout, k) == slot), KEYS // 2)
    )
    keys += [f"k{i:03d}" for i in range(KEYS - len(keys))]
    with writing(tmp_path, cluster, ns, layout, sorted(set(keys))) as run:
        # Filler entries (checked too) make the slot's migration last long enough for
        # many writes to land in it: one MIGRATE per key (--cluster-pipeline 1).
        import prefect_memory as pm

        filler = pm.open_memory(cluster.url, namespace=ns, key_prefix=run.prefix, layout=layout,
                                consistency="strong", quorum=1)  # fmt: skip
        names = [f"f{i:05d}" for i in range(FILLER[layout])]
        for start in range(0, len(names), 500):
            assert ledger.put_many(filler, names[start : start + 500])
        run.wait(lambda: run.acked_since(0) >= 300, "acknowledged 300 writes")
        moving = slots_of(run.prefix, ns, layout)
        source = cluster.node(port)
        target = next(p for p in cluster.primaries() if p is not source)
        ids = {n.port: _text(cluster.command(n, "CLUSTER", "MYID")) for n in (source, target)}
        before = {s: cluster.owner(s).port for s in moving}
        ledger.fault("redis-cli --cluster reshard")
        began = time.time()
        watch = Migrating(cluster, source, moving).start()
        done = cluster.cli(
            "reshard", f"127.0.0.1:{source.port}", "--cluster-from", ids[source.port],
            "--cluster-to", ids[target.port], "--cluster-slots", str(count + 10),
            "--cluster-yes", "--cluster-pipeline", "1", *(["--cluster-replace"] * replace),
            timeout=90,
        )  # fmt: skip
        ended = time.time()
        window = watch.stop()
        after = {s: cluster.owner(s).port for s in moving}
        moved = [s for s in moving if before[s] != after[s]]
        ledger.notes.update(slots_moved=count + 10, namespace_slots_moved=len(moved),
                            reshard_seconds=round(ended - began, 2))  # fmt: skip
        assert moved, f"no slot of the namespace moved:\n{done.stdout[-2000:]}"
        run.wait(lambda: run.acked_since(ended) >= 200, "acknowledged 200 writes after")
        records = run.stop()
    replay(records, ledger)
    during = [r for r in records if r["kind"] != "read" and began <= r["t"][0] < ended]
    after_ops = [r for r in records if r["kind"] != "read" and r["t"][0] >= ended]
    # Operations on a slot of the namespace while it was migrating (seen from the source).
    hit = [
        r for r in records
        if window and r["t"][0] <= window[1] and r["t"][1] >= window[0]
        and any(slot_of(run.prefix, ns, layout, k) in window[2] for k in _keys(r))
    ]  # fmt: skip
    ledger.notes.update(
        writes_during_fault=len(during), writes_after=len(after_ops),
        migrating_seconds=round(window[1] - window[0], 3) if window else None,
        ops_on_migrating_slots=len(hit),
        slowest_of_those=round(max((r["t"][1] - r["t"][0] for r in hit), default=0), 3),
    )  # fmt: skip
    check(cluster, run, ledger, ns, layout)
    assert hit, "no operation touched a slot of the namespace while it was migrating"
    assert not [r for r in during + after_ops if not r["acked"]], "a write was not acknowledged"


class Migrating:
    """Polls the source's ``CLUSTER NODES`` in a thread: when the slots of ``slots`` were
    seen migrating (``[slot->-target]``), first and last time, and which ones."""

    def __init__(self, cluster: ReplicatedCluster, source: Any, slots: list[int]) -> None:
        self.client = source.client(socket_timeout=5)
        self.marks = {f"[{s}->-".encode(): s for s in slots}
        self.seen: list[float] = []
        self.slots: set[int] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Migrating:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.done.is_set():
            mine = next(
                line for line in self.client.execute_command("CLUSTER", "NODES").splitlines()
                if b"myself" in line
            )  # fmt: skip
            found = {slot for mark, slot in self.marks.items() if mark in mine}
            if found:
                self.seen.append(time.time())
                self.slots |= found
            time.sleep(0.001)

    def stop(self) -> tuple[float, float, set[int]] | None:
        self.done.set()
        self.thread.join(10)
        self.client.close()
        return (self.seen[0], self.seen[-1], self.slots) if self.seen else None


def slot_of(prefix: str, ns: str, layout: int, key: str) -> int:
    """The slot of ``key``'s entry."""
    if layout == 1:
        return slots_of(prefix, ns, 1)[0]
    spread, slots = _spread(prefix, ns)
    return slots[spread.bucket(key)]


@functools.lru_cache(maxsize=8)
def _spread(prefix: str, ns: str) -> tuple[Any, list[int]]:
    from redis.crc import key_slot

    from prefect_memory.plugins.redis.layout import DEFAULT_BUCKETS, Spread

    spread = Spread(prefix, ns, DEFAULT_BUCKETS)
    return spread, [key_slot(base.encode()) for base in spread.bases]


def _keys(record: dict[str, Any]) -> list[str]:
    return [record["key"]] if record["kind"] == "read" else list(record["items"])


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    assert role == "writer", role
    url, prefix, ns, layout, log_path, stop_path, seed, keys = rest
    writer(url, prefix, ns, int(layout), log_path, stop_path, int(seed), keys.split(","))

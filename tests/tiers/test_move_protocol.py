"""The tier move protocol under every interleaving of two or three actors, against a model.

Each actor (a migration, a reader promoting on read, a user writing and deleting) runs in
its own thread, but only one runs at a time: every store call waits at a gate, and a
schedule (drawn by hypothesis, or enumerated) decides which actor takes the next step.
So each example is one exact interleaving of the protocol's steps (read, copy if absent,
verify, delete if unchanged, tombstone, settle), replayable from its schedule. Afterwards
the invariants of docs/guarantees.md are checked: every key lives in at most one tier,
holds the last acknowledged write, a key deleted by the user stays deleted, and the
migrations' reports reconcile.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_memory.plugins.base import Backend, Record
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.tiers import Tier, TieredMemory

NS = "model"
KEYS = ("session:a", "session:b")


class Scheduler:
    """Runs actors one step at a time; ``choose(n)`` picks which of n waiting actors goes."""

    def __init__(self, choose: Callable[[int], int]) -> None:
        self.choose = choose
        self.cond = threading.Condition()
        self.waiting: dict[str, threading.Event] = {}
        self.running: str | None = None
        self.local = threading.local()
        self.steps = 0

    def gate(self) -> None:
        name = getattr(self.local, "name", None)
        if name is None:  # set-up and checks run outside any actor
            return
        event = threading.Event()
        with self.cond:
            self.waiting[name] = event
            self.running = None
            self.cond.notify_all()
        event.wait()

    def run(self, actors: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        alive = set(actors)

        def body(name: str, fn: Callable[[], Any]) -> None:
            self.local.name = name
            try:
                self.gate()
                results[name] = fn()
            except BaseException as exc:  # reported by the controller
                results[name] = exc
            finally:
                with self.cond:
                    alive.discard(name)
                    self.running = None
                    self.cond.notify_all()

        threads = [threading.Thread(target=body, args=item, daemon=True) for item in actors.items()]
        for thread in threads:
            thread.start()
        while True:
            with self.cond:
                ok = self.cond.wait_for(
                    lambda: self.running is None and alive <= set(self.waiting), timeout=30
                )
                assert ok, "an actor is stuck outside the gates"
                if not alive:
                    break
                names = sorted(self.waiting)
                pick = names[self.choose(len(names)) % len(names)]
                self.running = pick
                self.steps += 1
                self.waiting.pop(pick).set()
        for thread in threads:
            thread.join(timeout=30)
        for name, result in results.items():
            if isinstance(result, BaseException):
                raise AssertionError(f"actor {name} failed") from result
        return results


class Gated(Backend):
    """A backend whose every call is one step of the scheduler."""

    def __init__(self, inner: Backend, sched: Scheduler) -> None:
        super().__init__()
        self.inner, self.sched = inner, sched
        self.capabilities = inner.capabilities

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Backend:  # pragma: no cover
        raise NotImplementedError

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.sched.gate()
        return getattr(self.inner, name)(*args, **kwargs)

    def get_many(self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False):
        return self._call("get_many", ns, keys, now=now, touch=touch)

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        return self._call("put_many", ns, records, now=now)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        return self._call("delete_many", ns, keys, now=now)

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        return self._call("exists_many", ns, keys, now=now)

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        return self._call("put_absent_many", ns, records, now=now)

    def delete_if_unchanged(self, ns: str, expected: Mapping[str, Any], *, now: float):
        return self._call("delete_if_unchanged", ns, expected, now=now)

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        self.sched.gate()
        return iter(list(self.inner.scan(ns, pattern, now=now)))

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        return self._call("tagged", ns, list(tags), now=now)


class World:
    """Two or three in-process tiers behind gates, and the memories the actors build."""

    def __init__(self, sched: Scheduler, tiers: int = 2, home: int = 0) -> None:
        self.sched, self.home = sched, home
        self.stores = [InProcessBackend() for _ in range(tiers)]
        self.clock = itertools.count(1_000)  # every call sees a later time

    def memory(self, *, promote: bool = True) -> TieredMemory:
        names = ["hot", "warm", "cold"][: len(self.stores)]
        tiers = [
            Tier(name, Gated(store, self.sched), patterns=("session:*",) if i == self.home else ())
            for i, (name, store) in enumerate(zip(names, self.stores, strict=True))
        ]
        rules = [
            {"from": a, "to": b, "condition": "accessCount < 1000"}
            for a, b in itertools.pairwise(names)
        ]
        return TieredMemory(
            tiers,
            rules,
            namespace=NS,
            promote="home" if promote else "never",
            clock=lambda: float(next(self.clock)),
        )

    def where(self) -> dict[str, list[int]]:
        """For each key: the tiers holding it (read without gates)."""
        out: dict[str, list[int]] = {}
        for i, store in enumerate(self.stores):
            for key in store.scan(NS, None, now=float(next(self.clock))):
                out.setdefault(key, []).append(i)
        return out

    def values(self) -> dict[str, Any]:
        """Each key's value as the hottest tier holding it has it (read without gates)."""
        from prefect_memory.codecs import Codec

        codec, out = Codec(), {}
        for store in self.stores:
            found = store.get_many(NS, list(KEYS), now=float(next(self.clock)))
            for key, record in found.items():
                out.setdefault(key, codec.decode(record.value))
        return out


def seed(world: World, tier: int) -> None:
    """Put every key in ``tier`` (as a user write that landed there earlier)."""
    mem = world.memory(promote=False)
    mem.set_many({k: f"v0:{k}" for k in KEYS})
    if tier:
        for _ in range(tier):
            mem.migrate(batch_size=10)


def check(world: World, expected: Mapping[str, Any]) -> None:
    where = world.where()
    duplicated = {k: t for k, t in where.items() if len(t) > 1}
    assert not duplicated, f"keys in more than one tier: {duplicated}"
    values = world.values()
    for key in KEYS:
        want = expected.get(key)
        if want is None:
            assert key not in values, f"{key} was deleted but holds {values.get(key)!r}"
        else:
            assert values.get(key) == want, f"{key}: want {want!r}, got {values.get(key)!r}"


def _migrate(world: World) -> Callable[[], Any]:
    return lambda: world.memory(promote=False).migrate(batch_size=1)


def _read(world: World) -> Callable[[], Any]:
    return lambda: world.memory().get_many(list(KEYS))


Schedules = st.lists(st.integers(0, 2), min_size=1, max_size=400)


def _chooser(schedule: list[int]) -> Callable[[int], int]:
    it = iter(schedule)
    return lambda n: next(it, 0) % n


SETTINGS = settings(  # PM_MODEL_EXAMPLES=5000 for a long search
    max_examples=int(os.environ.get("PM_MODEL_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(Schedules)
def test_two_migrations_lose_nothing_and_reconcile(schedule: list[int]) -> None:
    world = World(Scheduler(_chooser(schedule)))
    seed(world, 0)
    results = world.sched.run({"m1": _migrate(world), "m2": _migrate(world)})
    check(world, {k: f"v0:{k}" for k in KEYS})
    assert all(t == [1] for t in world.where().values())
    moved = sum(r.total_moved for r in results.values())
    written = sum(r.written for r in results.values())
    assert moved == written == len(KEYS)  # each key moved once, by exactly one run


@SETTINGS
@given(Schedules)
def test_readers_promoting_at_once_lose_nothing(schedule: list[int]) -> None:
    world = World(Scheduler(_chooser(schedule)))
    seed(world, 1)  # in warm; home is hot
    results = world.sched.run({"r1": _read(world), "r2": _read(world), "r3": _read(world)})
    for got in results.values():
        assert got == {k: f"v0:{k}" for k in KEYS}  # no false misses
    check(world, {k: f"v0:{k}" for k in KEYS})


@SETTINGS
@given(Schedules)
def test_migration_against_promotion_loses_nothing(schedule: list[int]) -> None:
    world = World(Scheduler(_chooser(schedule)))
    seed(world, 1)
    results = world.sched.run({"m": _migrate(world), "r1": _read(world), "r2": _read(world)})
    assert results["r1"] == results["r2"] == {k: f"v0:{k}" for k in KEYS}
    check(world, {k: f"v0:{k}" for k in KEYS})


WRITER_SCRIPTS = {
    "set": [("set", "session:a", "v1")],
    "delete": [("delete", "session:a", None)],
    "set-then-delete": [("set", "session:a", "v1"), ("delete", "session:a", None)],
    "delete-then-set": [("delete", "session:a", None), ("set", "session:a", "v2")],
    "invalidate": [("tag", "session:b", None)],
}


def _writer(world: World, script: list[tuple[str, str, Any]]) -> Callable[[], Any]:
    def run() -> None:
        mem = world.memory()
        for op, key, value in script:
            if op == "set":
                mem.set(key, value, tags=["t"])
            elif op == "delete":
                mem.delete(key)
            else:
                mem.invalidate_tags("t:" + key)

    return run


def _expected(script: list[tuple[str, str, Any]]) -> dict[str, Any]:
    expected: dict[str, Any] = {k: f"v0:{k}" for k in KEYS}
    for op, key, value in script:
        expected[key] = value if op == "set" else None
    return expected


def seed_tagged(world: World, tier: int) -> None:
    mem = world.memory(promote=False)
    for key in KEYS:
        mem.set(key, f"v0:{key}", tags=["t:" + key])
    for _ in range(tier):
        mem.migrate(batch_size=10)


@pytest.mark.parametrize("script", sorted(WRITER_SCRIPTS))
@pytest.mark.parametrize("start", [0, 1], ids=["hot", "warm"])
@SETTINGS
@given(schedule=Schedules)
def test_user_writes_and_deletes_win_over_moves(
    script: str, start: int, schedule: list[int]
) -> None:
    world = World(Scheduler(_chooser(schedule)))
    seed_tagged(world, start)
    steps = WRITER_SCRIPTS[script]
    world.sched.run({"m": _migrate(world), "r": _read(world), "w": _writer(world, steps)})
    check(world, _expected(steps))


@pytest.mark.parametrize("start", [0, 1, 2], ids=["hot", "warm", "cold"])
@SETTINGS
@given(schedule=Schedules)
def test_three_tiers_two_migrations_readers_and_a_delete(start: int, schedule: list[int]) -> None:
    world = World(Scheduler(_chooser(schedule)), tiers=3)
    seed_tagged(world, start)
    steps = [("delete", "session:a", None), ("set", "session:b", "v3")]
    world.sched.run(
        {
            "m1": _migrate(world),
            "m2": _migrate(world),
            "r": _read(world),
            "w": _writer(world, steps),
        }
    )
    check(world, _expected(steps))


def test_every_interleaving_of_two_single_key_moves() -> None:
    """Exhaustive: every schedule of two migrations of one key (no sampling)."""
    seen: set[tuple[int, ...]] = set()
    pending: list[tuple[int, ...]] = [()]
    runs = 0
    while pending:
        prefix = pending.pop()
        choices: list[int] = []
        fanout: list[int] = []

        def choose(
            n: int,
            prefix: tuple[int, ...] = prefix,
            choices: list[int] = choices,
            fanout: list[int] = fanout,
        ) -> int:
            i = len(choices)
            pick = prefix[i] if i < len(prefix) else 0
            choices.append(pick)
            fanout.append(n)
            return pick

        world = World(Scheduler(choose))
        mem = world.memory(promote=False)
        mem.set("session:a", "v")
        results = world.sched.run({"m1": _migrate(world), "m2": _migrate(world)})
        runs += 1
        assert world.where() == {"session:a": [1]}
        assert sum(r.total_moved for r in results.values()) == 1
        seen.add(tuple(choices))
        for i in range(len(prefix), len(choices)):
            for alt in range(1, fanout[i]):
                pending.append((*choices[:i], alt))
    print(f"{runs} schedules of two migrations of one key")
    assert runs == len(seen) and runs > 50  # every branch of the schedule tree was run


@pytest.mark.parametrize("start", [0, 1, 2], ids=["hot", "warm", "cold"])
@SETTINGS
@given(schedule=Schedules)
def test_home_in_the_middle_tier(start: int, schedule: list[int]) -> None:
    """Keys whose home is warm: writes land there, reads promote there, rules move on."""
    world = World(Scheduler(_chooser(schedule)), tiers=3, home=1)
    seed_tagged(world, start)
    steps = [("set", "session:a", "v5"), ("delete", "session:b", None)]
    world.sched.run({"m": _migrate(world), "r": _read(world), "w": _writer(world, steps)})
    check(world, _expected(steps))

"""Two races of a hybrid memory, stated step by step (found by ``test_hybrid_processes``).

1. **A refill overtaken by a delete.** A read that misses the primary reads the journal and
   the secondary and writes what it found back into the primary. A delete of the key that
   reaches the secondary after that read, and the primary before the refill lands, used to
   be undone by the refill: the deleted value came back in the primary (``get`` answered
   it, and ``sync`` copied it back into the secondary). Now the refill reads the journal
   and the secondary again once written and takes back (compare-and-delete) what they no
   longer hold.
2. **Two writers of one key.** Writes of one key by two threads or processes could reach
   the journal (the secondary's order) in one order and the primary in the other, leaving
   the stores on different values for good. :class:`~prefect_memory.hybrid.keylocks.KeyLocks`
   makes each write reach both places before another writer of its key starts: tested here
   on the lock itself, across processes (a holder killed with SIGKILL releases it).

The stores are real where it matters: the refill race runs on Redis + SQLite as well as
in-process stores (the compare-and-delete compares the very write the refill copied).
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from hybrid_races import WAIT, check_refill_overtaken_by_delete
from prefect_memory.hybrid import HybridMemory
from prefect_memory.hybrid.keylocks import STRIPES, WHOLE, KeyLocks
from prefect_memory.plugins.base import Backend


@pytest.fixture(params=["in-process", pytest.param("redis+sqlite", marks=pytest.mark.redis)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Backend]]:
    if request.param == "in-process":
        from prefect_memory.plugins.inprocess import InProcessBackend

        yield InProcessBackend(), InProcessBackend()
        return
    server = request.getfixturevalue("redis_server")
    primary = pm.open_backend(server.url, key_prefix=f"race{uuid.uuid4().hex[:8]}")
    secondary = pm.open_backend(f"sqlite:///{tmp_path}/secondary.db")
    yield primary, secondary
    primary.close()
    secondary.close()


@pytest.mark.parametrize("strategy", ["write-through", "write-behind"])
def test_a_refill_overtaken_by_a_delete_is_taken_back(
    stores: tuple[Backend, Backend], strategy: str, tmp_path: Path
) -> None:
    check_refill_overtaken_by_delete(*stores, strategy, str(tmp_path / "journal.db"))


def test_a_refill_still_answers_when_nothing_overtook_it(
    stores: tuple[Backend, Backend], tmp_path: Path
) -> None:
    primary, secondary = stores
    mem = HybridMemory(primary, secondary, journal=str(tmp_path / "j.db"), namespace="ns")
    try:
        mem.set_many({"a": 1, "b": 2})
        primary.delete_many("ns", ["a", "b"], now=time.time())
        assert mem.get_many(["a", "b"]) == {"a": 1, "b": 2}
        assert set(primary.get_many("ns", ["a", "b"], now=time.time())) == {"a", "b"}
    finally:
        mem.clear()
        mem.close()


# -- the key locks -----------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys
    from prefect_memory.hybrid.keylocks import KeyLocks

    journal, ns, *keys = sys.argv[1:]
    with KeyLocks(journal).hold(ns, keys):
        print("held", flush=True)
        sys.stdin.readline()  # until told (or killed)
    print("released", flush=True)
    """
)


class Holder:
    """A process holding the locks of ``keys`` until :meth:`release` (or a kill)."""

    def __init__(self, journal: str, ns: str, keys: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, journal, ns, *keys],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "held\n"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(WAIT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)


def _try_hold(locks: KeyLocks, ns: str, keys: list[str]) -> threading.Event:
    """Start a thread that takes the locks of ``keys``; its event is set once it has them."""
    got = threading.Event()

    def take() -> None:
        with locks.hold(ns, keys):
            got.set()

    threading.Thread(target=take, daemon=True).start()
    return got


def _other_stripe(ns: str, key: str) -> str:
    mine = KeyLocks.stripes(ns, [key])
    return next(k for k in (f"o{i}" for i in range(1000)) if KeyLocks.stripes(ns, [k]) != mine)


def test_a_key_held_by_another_process_waits_for_it(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.db")
    holder = Holder(journal, "ns", ["k"])
    locks = KeyLocks(journal)
    other = _other_stripe("ns", "k")
    assert _try_hold(locks, "ns", [other]).wait(WAIT)  # another stripe: at once
    same = _try_hold(locks, "ns", ["k"])
    batch = _try_hold(locks, "ns2", [f"b{i}" for i in range(200)])  # takes every stripe
    assert len(KeyLocks.stripes("ns2", [f"b{i}" for i in range(200)])) >= WHOLE
    assert not same.wait(0.5) and not batch.is_set()  # both wait for the holder
    holder.release()
    assert same.wait(WAIT) and batch.wait(WAIT)


def test_a_holder_killed_with_sigkill_releases_its_keys(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.db")
    holder = Holder(journal, "ns", ["k", "j"])
    got = _try_hold(KeyLocks(journal), "ns", ["j"])
    assert not got.wait(0.5)
    holder.kill()
    assert got.wait(WAIT)


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    locks, again = KeyLocks(str(tmp_path / "j.db")), KeyLocks(str(tmp_path / "j.db"))
    inside: list[int] = []
    overlaps: list[int] = []

    def write(n: int) -> None:
        for _ in range(200):
            with (locks if n % 2 else again).hold("ns", ["k"]):  # two objects, one lock
                inside.append(n)
                if len(inside) > 1:
                    overlaps.append(n)
                inside.remove(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert overlaps == []


def test_key_locks_pickle_as_their_path_and_spread_keys(tmp_path: Path) -> None:
    locks = KeyLocks(str(tmp_path / "j.db"))
    clone = pickle.loads(pickle.dumps(locks))
    assert clone.path == locks.path == f"{tmp_path / 'j.db'}.keys.lock"
    with clone.hold("ns", ["k"]):
        pass
    stripes = KeyLocks.stripes("ns", [f"k{i}" for i in range(5000)])
    assert stripes == sorted(set(stripes)) and len(stripes) == STRIPES
    assert KeyLocks.stripes("a", ["k"]) != KeyLocks.stripes("b", ["k"]) or KeyLocks.stripes(
        "a", ["j"]
    ) != KeyLocks.stripes("b", ["j"])  # the namespace is part of the stripe


def _take_and_report(journal: str, done: Any) -> None:
    with KeyLocks(journal).hold("ns", ["k"]):
        done.set()


def test_a_child_forked_while_a_thread_holds_a_key_takes_it_once_released(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "journal.db")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with KeyLocks(journal).hold("ns", ["k"]):
            held.set()
            release.wait(WAIT)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(WAIT)
    context = multiprocessing.get_context("fork")
    done = context.Event()
    child = context.Process(target=_take_and_report, args=(journal, done))
    child.start()  # forked while this process's thread holds the key
    assert not done.wait(0.5)  # the parent's record lock: the child waits...
    release.set()
    thread.join(WAIT)
    assert done.wait(WAIT)  # ...and gets it (an inherited thread lock would hang it)
    child.join(WAIT)
    assert child.exitcode == 0


def test_a_refill_that_cannot_be_checked_again_is_taken_back(tmp_path: Path) -> None:
    """The secondary stops answering between the refill and its second read: the read
    still answers what it read, and the primary keeps no copy nobody could check."""
    from prefect_memory.errors import BackendUnavailable
    from prefect_memory.plugins.inprocess import InProcessBackend

    class Fading(InProcessBackend):
        reads = 0

        def get_many(self, ns: str, keys: Any, *, now: float, touch: bool = False) -> Any:
            self.reads += 1
            if self.reads > 1:
                raise BackendUnavailable("the secondary stopped answering")
            return super().get_many(ns, keys, now=now, touch=touch)

    primary, secondary = InProcessBackend(), Fading()
    mem = HybridMemory(primary, secondary, journal=str(tmp_path / "j.db"), namespace="ns")
    mem.set("k", "v")
    primary.delete_many("ns", ["k"], now=time.time())
    secondary.reads = 0
    assert mem.get("k") == "v"
    assert secondary.reads == 2  # the refill's second read failed...
    assert primary.get_many("ns", ["k"], now=time.time()) == {}  # ...so it was taken back
    mem.close()


def test_a_key_held_too_long_gives_a_timeout_not_a_hang(tmp_path: Path) -> None:
    """A writer stopped mid-write (SIGSTOP, a debugger) must not freeze the others."""
    from prefect_memory.errors import BackendTimeout

    journal = str(tmp_path / "journal.db")
    holder = Holder(journal, "ns", ["k"])
    locks = KeyLocks(journal, timeout=0.3)
    both = ["k", _other_stripe("ns", "k")]
    with (
        pytest.raises(BackendTimeout, match=r"another process .*keys\.lock"),
        locks.hold("ns", both),
    ):
        pass
    with locks.hold("ns", [_other_stripe("ns", "k")]):  # nothing was left held here
        pass
    holder.release()
    with locks.hold("ns", ["k"]):
        pass

    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with KeyLocks(journal).hold("ns", ["k"]):
            inside.set()
            leave.wait(WAIT)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(WAIT)
    with pytest.raises(BackendTimeout, match="another thread"), locks.hold("ns", ["k"]):
        pass
    leave.set()
    thread.join(WAIT)
    with locks.hold("ns", ["k"]):
        pass
    assert pickle.loads(pickle.dumps(locks)).timeout == 0.3


@pytest.mark.parametrize("strategy", ["write-through", "write-behind"])
def test_a_write_whose_key_stays_locked_is_refused_and_written_nowhere(
    stores: tuple[Backend, Backend], strategy: str, tmp_path: Path
) -> None:
    from prefect_memory.errors import BackendTimeout

    primary, secondary = stores
    journal = str(tmp_path / "journal.db")
    mem = HybridMemory(
        primary, secondary, strategy=strategy, journal=journal, flush_interval=3600.0,
        namespace="ns",
    )  # fmt: skip
    mem.backend.keylocks = KeyLocks(journal, timeout=0.3)
    holder = Holder(journal, "ns", ["k"])
    try:
        with pytest.raises(BackendTimeout):
            mem.set("k", "v")
        mem.set("other", 1)  # other keys are not held up
    finally:
        holder.release()
    now = time.time()
    assert primary.get_many("ns", ["k"], now=now) == {}
    mem.flush()
    assert secondary.get_many("ns", ["k"], now=now) == {}
    assert mem.get("k") is None and mem.get("other") == 1
    mem.clear()
    mem.close()

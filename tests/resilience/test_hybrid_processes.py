"""A hybrid memory used by several real processes at once, one of them SIGKILLed.

Three writer processes (``_hybrid_actor.py``, run with ``sys.executable``) open the SAME
hybrid memory, as Prefect workers would: the same Redis primary, the same secondary
(SQLite, or the MongoDB wire server), the same journal file. With ``write-behind`` their
background flushers race for the journal's lane (a short ``flush_interval``, a small
``flush_batch``). Each writes its own keys (their order is that process's order) and keys
all of them share (a few long-lived ones, and the key of the current 30 ms slot of time,
which all actors write in the same moment: its last writes are contested): sets,
overwrites, deletes, ``set_many`` and ``delete_many`` batches, some with a TTL far in the
future. One actor is SIGKILLed at a seeded moment:

- ``mid-write``: as soon as it announces a write (after its k-th acknowledged one): killed
  inside the call, between the journal and the primary, or just before or after;
- ``holding-lock``: once it holds the journal's flush lock (seen in ``/proc/locks``): killed
  while its flusher applies a batch to the secondary or is about to remove it.

The others finish and close normally. ``test_contested_keys`` kills no one: every operation
of the three actors is on the key of the moment (and, ``readers-too``, a third of them
reads it: a miss reads through the journal and the secondary and writes back to the
primary). Then a fresh :class:`HybridMemory` in the test
process opens the same journal and flushes until its backlog is 0, and both stores are
read directly and compared with a model of what the actors were told.

**The model.** Each actor prints ``try`` (with ``time.monotonic()``, one clock for the
machine) before a call and ``ack`` once it returned. The final value a store may hold for a
key is that of a write no other write of the key *started after it was acknowledged* (of
two writes overlapping in time, either may be last); no write at all, or such a delete:
absent. The killed actor's write in flight (announced, never acknowledged) may or may not
have happened: it counts as a write ending at the kill, in one world, and as nothing in the
other; both worlds' finals are allowed, nothing else. For an actor's own keys this is
exactly "the last acknowledged value (or the in-flight one)".

Counted per store and key: ``lost`` (absent where a value is due), ``stale`` (a value
that was superseded), ``resurrected`` (a value where only a delete is due), ``foreign``
(a value nobody wrote); ``diverged``: the primary and the secondary hold different finals
for a key the killed actor's write in flight does not touch (that write may be in one place
and not the other: a documented window, healed by ``sync()``). Two writes of one key
overlapping in time may end in either order, but in the same order in both stores: the
journal's key locks (:mod:`prefect_memory.hybrid.keylocks`) make each write reach both of
its places before another writer of the key starts. Before them, the overlapping writes of
``test_contested_keys`` left the stores on different values in every run, and a read's
refill of the primary could put back a value deleted meanwhile.

No timing is asserted: deadlines only turn a hang into a failure.

Run: ``.venv/bin/python -m pytest tests/resilience/test_hybrid_processes.py -s``
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.hybrid.journal import LANES, SECONDARY, Journal


def _load_actor() -> Any:
    """The actor script as a module (by path: this folder goes on no one's ``sys.path``,
    where its ``conftest`` would shadow the others')."""
    spec = importlib.util.spec_from_file_location(
        "pm_hybrid_actor", Path(__file__).with_name("_hybrid_actor.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


actor = _load_actor()

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300)]

ACTOR = Path(__file__).with_name("_hybrid_actor.py")
ABSENT = "-"  # the "value" of a key no store should hold
ACTORS = ("a", "b", "c")
VICTIM = "b"
OPS = 400  # operations per actor
OWN_KEYS = 14  # keys of each actor alone
SHARED_KEYS = 4  # long-lived keys every actor writes
SLOT_SECONDS = 0.03  # and the key of each such slot of time (see _hybrid_actor.py)
DEADLINE = 120.0  # a phase that takes longer failed (it would otherwise hang)


# ---------------------------------------------------------------------------------------------
# stores and specs
# ---------------------------------------------------------------------------------------------
def make_spec(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    secondary: str,
    *,
    strategy: str,
    flush_interval: float,
    flush_batch: int,
) -> dict[str, Any]:
    """The spec every actor (and the checker) builds its hybrid memory from: unique stores."""
    unique = uuid.uuid4().hex[:10]
    redis = request.getfixturevalue("redis_server")
    if secondary == "sqlite":
        secondary_url = f"sqlite:///{tmp_path}/secondary.db"
    elif secondary == "mongodb":
        server = request.getfixturevalue("mongo_server")
        sep = "&" if "?" in server.url else "?"
        secondary_url = f"{server.url}{sep}collection=hp_{unique}"
    else:  # pragma: no cover - the parameters below name only these two
        raise AssertionError(f"unknown secondary {secondary!r}")
    return {
        "primary": redis.url,
        "primary_options": {"key_prefix": f"hp{unique}"},
        "secondary": secondary_url,
        "strategy": strategy,
        "journal": str(tmp_path / "journal.db"),
        "journal_sync": "normal",
        "flush_interval": flush_interval,
        "flush_batch": flush_batch,
        "namespace": f"hp-{unique}",
        "ops": OPS,
        "own": OWN_KEYS,
        "shared": SHARED_KEYS,
        "slot": SLOT_SECONDS,
    }


def known_keys() -> list[str]:
    """The keys known before the run (the time slots' keys are added as they are written)."""
    keys = [k for name in ACTORS for k in actor.own_keys(name, OWN_KEYS)]
    return keys + actor.shared_keys(SHARED_KEYS)


# ---------------------------------------------------------------------------------------------
# the actor processes
# ---------------------------------------------------------------------------------------------
class Proc:
    """One actor process; its stdout and stderr are read by threads as they come."""

    def __init__(self, name: str, spec: dict[str, Any], cwd: Path, seed: int) -> None:
        self.name = name
        args = [sys.executable, str(ACTOR), json.dumps({**spec, "name": name, "seed": seed})]
        self.popen = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=cwd,
        )  # fmt: skip
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self.acks = 0
        self.ready = threading.Event()
        self.on_line: Any = None  # called with each line, in the reader thread
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in iter(self.popen.stdout.readline, ""):
            self.lines.append(line)
            if line == "ready\n":
                self.ready.set()
            elif line.startswith("ack "):
                self.acks += 1
            if self.on_line is not None:
                self.on_line(self, line)

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in iter(self.popen.stderr.readline, ""):
            self.stderr.append(line)

    def alive(self) -> bool:
        """Tell whether the process still runs."""
        return self.popen.poll() is None

    def said(self, word: str) -> bool:
        """Tell whether the process printed the line ``word``."""
        return f"{word}\n" in self.lines

    def go(self, word: str) -> None:
        """Send the start line (``go <t>``; anything else makes a waiting actor leave)."""
        assert self.popen.stdin is not None
        if self.popen.stdin.closed:
            return
        with contextlib.suppress(OSError):
            self.popen.stdin.write(f"{word}\n")
            self.popen.stdin.close()

    def kill(self) -> None:
        """SIGKILL the process (this test's own child, by its pid) unless it ended."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)

    def finish(self, timeout: float) -> None:
        """Wait for the process and its readers (the pipes are read to their end)."""
        self.popen.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=timeout)

    def tail(self) -> str:
        """The end of its stderr, for a failure message."""
        return "".join(self.stderr[-15:]).strip() or "(no stderr)"


def flush_lock_holder(journal: str, lane: str = SECONDARY) -> set[int]:
    """The pids holding the journal's flush lock of ``lane`` (``/proc/locks``)."""
    try:
        st = os.stat(f"{journal}.{lane}.lock")
        with open("/proc/locks") as f:
            rows = f.read().splitlines()
    except OSError:
        return set()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for row in rows:
        parts = row.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == inode:
            pids.add(int(parts[4]))
    return pids


@dataclass
class Run:
    """What the actor processes said, and how the kill went."""

    procs: dict[str, Proc]
    t_go: float = 0.0
    victim: str | None = None
    t_kill: float | None = None
    kill_mode: str = ""
    acks_before_kill: int = 0
    errors: list[str] = field(default_factory=list)
    #: holding-lock: how many polls of ``/proc/locks`` saw each actor hold the flush lock
    lock_seen: dict[str, int] = field(default_factory=dict)


def run_actors(
    spec: dict[str, Any], cwd: Path, *, seed: int, kill: str | None, kill_after: int
) -> Run:
    """Start the actors, start them together, SIGKILL one as ``kill`` says.

    ``mid-write``: actor :data:`VICTIM`, as soon as it announces a write after its
    ``kill_after``-th acknowledged one. ``holding-lock``: the first actor seen holding the
    journal's flush lock once it has ``kill_after`` acknowledged writes and is still
    writing (whichever it is: one flusher tends to keep the lock, as it takes it again
    at once for its next batch while the others try every ``flush_interval``).
    """
    procs: dict[str, Proc] = {}
    run = Run(procs, kill_mode=kill or "none")
    killed = threading.Event()

    def kill_mid_write(proc: Proc, line: str) -> None:  # the victim's stdout thread
        if not killed.is_set() and proc.acks >= kill_after and line.startswith("try "):
            proc.kill()
            killed.set()
            run.acks_before_kill = proc.acks

    try:
        for name in ACTORS:
            procs[name] = Proc(name, spec, cwd, seed)
        if kill == "mid-write":
            run.victim = VICTIM
            procs[VICTIM].on_line = kill_mid_write
        deadline = time.monotonic() + DEADLINE
        for proc in procs.values():
            while not proc.ready.wait(0.1):
                if not proc.alive() or time.monotonic() > deadline:
                    proc.finish(10)
                    raise AssertionError(f"actor {proc.name} never got ready: {proc.tail()}")
        run.t_go = time.monotonic()
        for proc in procs.values():
            proc.go(f"go {run.t_go:.6f}")
        if kill == "holding-lock":
            by_pid = {proc.popen.pid: proc for proc in procs.values()}
            while not killed.is_set() and time.monotonic() < deadline:
                writing = [p for p in procs.values() if p.alive() and not p.said("done")]
                if not writing:
                    break
                for pid in flush_lock_holder(spec["journal"]):
                    proc = by_pid.get(pid)
                    if proc is None:
                        continue
                    run.lock_seen[proc.name] = run.lock_seen.get(proc.name, 0) + 1
                    if proc in writing and proc.acks >= kill_after:
                        proc.kill()
                        killed.set()
                        run.victim, run.acks_before_kill = proc.name, proc.acks
                        break
                time.sleep(0.0005)  # polling the lock's holder, not a synchronisation
        if kill is not None:
            victim = procs[run.victim or VICTIM]
            while not killed.is_set() and victim.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            victim.kill()  # (when it was never killed mid-run: reported below)
            victim.finish(DEADLINE)
            run.t_kill = time.monotonic()  # the victim is dead: its writes ended before
            if victim.said("done") or not killed.is_set():
                run.errors.append(f"no actor was killed mid-run ({victim.acks} acks)")
                run.victim = None
        for proc in procs.values():
            left = max(1.0, deadline + DEADLINE - time.monotonic())
            try:
                proc.finish(left)
            except subprocess.TimeoutExpired:
                run.errors.append(f"actor {proc.name} hung: {proc.tail()}")
                continue
            if proc.name == run.victim:
                continue
            if proc.popen.returncode != 0 or not proc.said("closed"):
                run.errors.append(
                    f"actor {proc.name} exited {proc.popen.returncode}: {proc.tail()}"
                )
    finally:
        for proc in procs.values():
            proc.go("stop")  # (one still waiting to start leaves)
            if proc.alive():
                proc.kill()
                with contextlib.suppress(Exception):
                    proc.finish(10)
    return run


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
@dataclass
class Op:
    """One operation an actor announced; ``status``: ack, inflight (killed in it) or err."""

    actor: str
    n: int
    kind: str
    writes: dict[str, Any]
    t0: float
    t1: float
    status: str
    reads: list[str] = field(default_factory=list)
    got: str = ""  # what a read returned (``key=by#n`` or ``key=-``, comma separated)

    def value_id(self, key: str) -> str:
        """``by#n`` of the value this operation wrote to ``key``; ABSENT for a delete."""
        value = self.writes[key]
        return ABSENT if value is None else f"{value['by']}#{value['n']}"

    def show(self, key: str, t_go: float) -> str:
        """One line of evidence: who, what, when (ms since the start)."""
        mark = "" if self.status == "ack" else f" [{self.status.upper()}]"
        what = f"got {self.got}" if key not in self.writes else f"{key}={self.value_id(key)}"
        return (
            f"{self.actor}#{self.n} {self.kind} {what} "
            f"@{(self.t0 - t_go) * 1e3:.1f}..{(self.t1 - t_go) * 1e3:.1f}ms{mark}"
        )


def parse(run: Run) -> tuple[list[Op], list[str]]:
    """Every operation announced by an actor; and the errors its output shows."""
    ops: list[Op] = []
    problems: list[str] = []
    for name, proc in run.procs.items():
        started: dict[int, tuple[float, dict[str, Any]]] = {}
        ended: dict[int, tuple[str, float, str]] = {}
        for line in proc.lines:
            if not line.endswith("\n"):  # cut by the kill: not acknowledged
                continue
            word, *rest = line.split(" ", 3)
            if word == "try":
                started[int(rest[0])] = (float(rest[1]), json.loads(rest[2]))
            elif word in ("ack", "err"):
                ended[int(rest[0])] = (word, float(rest[1]), " ".join(rest[2:]).strip())
                if word == "err":
                    problems.append(f"{name}#{rest[0]} raised {rest[2].strip()}")
        for n, (t0, op) in sorted(started.items()):
            got = ""
            if n in ended:
                word, t1, got = ended[n]
                status = "ack" if word == "ack" else "err"
            elif name == run.victim and run.t_kill is not None:
                status, t1 = "inflight", run.t_kill
            else:
                problems.append(f"{name}#{n} never ended")
                status, t1 = "err", run.t_kill or time.monotonic()
            ops.append(
                Op(name, n, op["op"], op["writes"], t0, t1, status, op.get("reads", []), got)
            )
    return ops, problems


def finals(ops: list[Op], key: str) -> set[str]:
    """The value ids a store may hold for ``key`` at the end (module docstring)."""
    sure = [op for op in ops if op.status == "ack"]
    maybe = [op for op in ops if op.status != "ack"][:8]  # (err is a failure anyway)
    out: set[str] = set()
    for size in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, size):
            world = sure + list(extra)
            if not world:
                out.add(ABSENT)
            for op in world:
                if not any(other.t0 > op.t1 for other in world):
                    out.add(op.value_id(key))
    return out


def overlaps(by_key: dict[str, list[Op]]) -> int:
    """Pairs of writes of one key by two actors at overlapping times (the contention seen)."""
    count = 0
    for key_ops in by_key.values():
        for x, y in itertools.combinations(key_ops, 2):
            count += x.actor != y.actor and x.t0 < y.t1 and y.t0 < x.t1
    return count


@dataclass
class Book:
    """Counts of one test (every bad count must be 0) and the evidence for each bad key."""

    name: str
    acked: int = 0
    keys: int = 0
    lost: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    evidence: dict[str, list[str]] = field(default_factory=dict)
    serious: list[str] = field(default_factory=list)  # keys a store got wrong (not diverged)
    notes: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def judge(self, store: str, key: str, held: str, allowed: set[str], written: set[str]) -> bool:
        """Count ``held`` (a value id, or ABSENT) of ``key`` in ``store``; ``True`` if fine."""
        if held in allowed:
            return True
        what = f"{store}:{key}={held} (allowed {sorted(allowed)})"
        if held == ABSENT:
            self.lost.append(what)
        elif held not in written:
            self.foreign.append(what)
        elif allowed == {ABSENT}:
            self.resurrected.append(what)
        else:
            self.stale.append(what)
        return False

    def line(self) -> str:
        """The summary line of the test."""
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"[hybrid-processes] {self.name}: keys={self.keys} acked={self.acked} "
            f"LOST={len(self.lost)} stale={len(self.stale)} "
            f"resurrected={len(self.resurrected)} foreign={len(self.foreign)} "
            f"diverged={len(self.diverged)} errors={len(self.errors)} {extra} "
            f"in {time.monotonic() - self.started:.1f}s"
        )

    def assert_clean(self) -> None:
        """Print the summary; fail with the counts and the evidence if anything is bad."""
        print("\n" + self.line())
        problems = [f"errors: {self.errors[:8]}"] if self.errors else []
        for label in ("lost", "stale", "resurrected", "foreign", "diverged"):
            items = getattr(self, label)
            if items:
                problems.append(f"{len(items)} {label}: {items[:6]}")
        if problems and self.evidence:
            problems.append("evidence (each key's writes in order of start; stores; journal):")
            order = self.serious + [k for k in self.evidence if k not in self.serious]
            for key in order[:6]:
                rows = self.evidence[key]
                problems.append(f"  {key}:\n      " + "\n      ".join(rows))
        assert not problems, f"{self.line()}\n  " + "\n  ".join(problems)


def records(mem: pm.Memory, backend: Any, keys: list[str]) -> dict[str, tuple[str, str]]:
    """``{key: (value id, detail)}`` of what ``backend`` holds (read directly, no count)."""
    found = backend.get_many(mem.namespace, keys, now=time.time(), touch=False)
    out = {}
    for key, record in found.items():
        value = mem.codec.decode(record.value)
        vid = f"{value['by']}#{value['n']}" if isinstance(value, dict) else f"?{value!r}"
        detail = f"{vid} v{record.version} updated_at={record.updated_at:.6f}"
        out[key] = (vid, detail)
    return out


def journal_rows(journal: Journal, ns: str, keys: Iterable[str]) -> dict[str, list[str]]:
    """The entries still pending per key (both lanes), for the evidence."""
    out: dict[str, list[str]] = {}
    for lane in LANES:
        for e in journal.pending_for(ns, list(keys), lane):
            out.setdefault(e.key, []).append(f"{lane} seq={e.seq} {e.op} at={e.at:.6f}")
    return out


# ---------------------------------------------------------------------------------------------
# the scenario
# ---------------------------------------------------------------------------------------------
def hybrid_processes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    secondary: str,
    *,
    strategy: str,
    kill: str | None,
    seed: int,
    flush_interval: float = 0.1,
    flush_batch: int = 8,
    contested: bool = False,
    reads: bool = False,
) -> None:
    """Run the actors on one hybrid memory, flush what is left, compare both stores with the
    model (module docstring)."""
    book = Book(request.node.name.removeprefix("test_"))
    spec = make_spec(
        request, tmp_path, secondary, strategy=strategy, flush_interval=flush_interval,
        flush_batch=flush_batch,
    )  # fmt: skip
    spec["contested"], spec["reads"] = contested, reads
    if contested:  # quick operations on one key at a time: more of them, more keys
        spec["ops"] = 2 * OPS
    ns = spec["namespace"]
    kill_after = random.Random(seed).randint(OPS // 4, OPS * 2 // 3)
    run = run_actors(spec, tmp_path, seed=seed, kill=kill, kill_after=kill_after)
    book.errors += run.errors
    ops, problems = parse(run)
    book.errors += problems
    book.acked = sum(op.status == "ack" for op in ops)
    keys = known_keys()
    keys += sorted({k for op in ops for k in op.writes} - set(keys))  # the time slots' keys
    book.keys = len(keys)
    inflight = [op for op in ops if op.status == "inflight"]
    book.notes["kill"] = f"{run.victim}:{run.kill_mode}@{run.acks_before_kill}"
    if kill == "holding-lock":
        book.notes["lock_seen"] = run.lock_seen
    book.notes["inflight"] = [f"{op.actor}#{op.n}:{op.kind}" for op in inflight]

    # after the dust settles: what the journal still holds, then a fresh memory flushes it
    journal = Journal(spec["journal"])
    book.notes["left_in_journal"] = journal.backlog()
    pending_before = journal_rows(journal, ns, keys)
    mem = actor.build(spec)
    try:
        deadline = time.monotonic() + DEADLINE
        while mem.backlog() and time.monotonic() < deadline:
            try:
                mem.flush(timeout=30)
            except pm.BackendUnavailable as err:  # retried until the deadline
                book.notes["flush_error"] = repr(err)
        if mem.backlog() or mem.in_doubt():
            book.errors.append(
                f"after the flush: backlog {mem.backlog()} "
                f"({ {ln: mem.backlog(ln) for ln in LANES} }), in_doubt {mem.in_doubt()}"
            )
        primary = records(mem, mem.backend.primary, keys)
        second = records(mem, mem.backend.secondary, keys)
        strays = sorted(
            f"{name}:{k}"
            for name, store in (
                ("primary", mem.backend.primary),
                ("secondary", mem.backend.secondary),
            )
            for k in store.scan(ns, None, now=time.time())
            if k not in set(keys)
        )
        if strays:
            book.errors.append(f"keys nobody wrote: {strays[:5]}")

        # the check, key by key
        by_key: dict[str, list[Op]] = {}
        for op in ops:
            for key in op.writes:
                by_key.setdefault(key, []).append(op)
        written = {op.value_id(k) for op in ops for k in op.writes}
        book.notes["overlaps"] = overlaps(by_key)
        reads_by_key: dict[str, list[Op]] = {}
        for op in ops:
            for key in op.reads:
                reads_by_key.setdefault(key, []).append(op)
        for key in keys:
            key_ops = sorted(by_key.get(key, []), key=lambda op: op.t0)
            allowed = finals(key_ops, key)
            p = primary.get(key, (ABSENT, "absent"))
            s = second.get(key, (ABSENT, "absent"))
            store_ok = book.judge("primary", key, p[0], allowed, written)
            store_ok &= book.judge("secondary", key, s[0], allowed, written)
            ok = store_ok
            in_window = any(op.status != "ack" for op in key_ops)
            if p[0] != s[0]:
                label = f"{key}: primary={p[0]} secondary={s[0]}"
                if in_window:
                    book.notes.setdefault("split_by_inflight", []).append(label)
                else:
                    book.diverged.append(label)
                    ok = False
            if not ok:
                held = {p[0], s[0]}
                events = sorted(key_ops + reads_by_key.get(key, []), key=lambda op: op.t0)
                first = min(
                    (
                        i
                        for i, op in enumerate(events)
                        if key in op.writes and op.value_id(key) in held
                    ),
                    default=len(events) - 8,
                )
                shown = events[max(0, first - 2) :][-16:]
                book.evidence[key] = [
                    *(op.show(key, run.t_go) for op in shown),
                    f"allowed finals: {sorted(allowed)}",
                    f"primary: {p[1]}",
                    f"secondary: {s[1]}",
                    f"journal before the test's flush: {pending_before.get(key, [])}",
                ]
                if not store_ok:
                    book.serious.append(key)
        book.assert_clean()
    finally:
        with contextlib.suppress(Exception):
            pm.Memory(mem.backend.primary, ns).clear()
            pm.Memory(mem.backend.secondary, ns).clear()
        mem.close()


_MONGO = pytest.mark.mongodb


@pytest.mark.parametrize(
    "secondary,kill,seed,flush_interval,flush_batch",
    [
        pytest.param("sqlite", "mid-write", 11, 0.05, 4, id="sqlite-mid-write"),
        pytest.param("sqlite", "holding-lock", 23, 0.1, 8, id="sqlite-holding-lock"),
        pytest.param("mongodb", "mid-write", 37, 0.2, 8, marks=_MONGO, id="mongodb-mid-write"),
        pytest.param(
            "mongodb", "holding-lock", 41, 0.05, 4, marks=_MONGO, id="mongodb-holding-lock"
        ),
    ],
)
def test_write_behind_processes_one_killed(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    secondary: str,
    kill: str,
    seed: int,
    flush_interval: float,
    flush_batch: int,
) -> None:
    """Three processes write through one journal, their flushers racing; one is SIGKILLed."""
    hybrid_processes(
        request, tmp_path, secondary, strategy="write-behind", kill=kill, seed=seed,
        flush_interval=flush_interval, flush_batch=flush_batch,
    )  # fmt: skip


@pytest.mark.parametrize(
    "secondary,seed",
    [
        pytest.param("sqlite", 53, id="sqlite"),
        pytest.param("mongodb", 67, marks=_MONGO, id="mongodb"),
    ],
)
def test_write_through_processes_one_killed(
    request: pytest.FixtureRequest, tmp_path: Path, secondary: str, seed: int
) -> None:
    """Three write-through processes on the same stores; one is SIGKILLed mid-write."""
    hybrid_processes(
        request, tmp_path, secondary, strategy="write-through", kill="mid-write", seed=seed
    )


@pytest.mark.parametrize("reads", [False, True], ids=["writers", "readers-too"])
@pytest.mark.parametrize("strategy", ["write-behind", "write-through"])
def test_contested_keys(
    request: pytest.FixtureRequest, tmp_path: Path, strategy: str, reads: bool
) -> None:
    """Three processes, none killed, write nothing but the key of the moment: the last
    writes of each key overlap, and with write-behind both stores must end on the same.
    ``readers-too``: a third of the operations read it (a miss reads through the journal
    and the secondary and writes what it found back to the primary)."""
    hybrid_processes(
        request, tmp_path, "sqlite", strategy=strategy, kill=None, seed=71, contested=True,
        reads=reads,
    )  # fmt: skip

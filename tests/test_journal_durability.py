"""The write-behind journal's ``journal_sync``: applied everywhere it can be set, and what it keeps.

``"full"`` (default) commits with ``synchronous=FULL`` (an fsync per write), ``"normal"``
with ``synchronous=NORMAL`` (WAL: no fsync per write). Each way of setting it (the
``Journal``, ``HybridMemory``, the JSON config, the hybrid block, blocks planned from a
config) is checked on the journal's own SQLite connection (``PRAGMA synchronous``); a bad
value is refused naming the key and the values it takes. The promise of ``"normal"``,
that a write acknowledged survives ``kill -9`` of the process, is checked with a real
process killed in the middle of its writes (Redis primary, MongoDB secondary: real
servers), whose journal a new process then flushes.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import ValidationError

import prefect_memory as pm
from prefect_memory.blocks import HybridMemoryBlock, InProcessMemory, blocks_from_config
from prefect_memory.config import parse_config
from prefect_memory.config.specs import JournalSync
from prefect_memory.hybrid import HybridBackend, HybridMemory
from prefect_memory.hybrid.journal import JOURNAL_SYNCS, SECONDARY, Journal
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.inprocess import InProcessBackend

#: ``PRAGMA synchronous`` answers a number: NORMAL is 1, FULL is 2.
PRAGMA = {"normal": 1, "full": 2}


def synchronous(journal: Journal) -> int:
    """The ``synchronous`` setting of the journal's own connection (this thread's)."""
    return int(journal._conn().execute("PRAGMA synchronous").fetchone()[0])


def written(mem: HybridMemory) -> Journal:
    """Write once (so the journal file and its connection exist); return the journal."""
    mem.set("k", 1)
    return mem.backend.journal


def test_the_config_spec_and_the_journal_take_the_same_values() -> None:
    assert get_args(JournalSync) == JOURNAL_SYNCS == ("full", "normal")


@pytest.mark.parametrize("sync", JOURNAL_SYNCS)
def test_the_journal_commits_as_its_sync_says(tmp_path: Path, sync: str) -> None:
    journal = Journal(str(tmp_path / "j.db"), sync=sync)
    journal.append("ns", puts={"k": Record(b"v", 1.0, 1.0, 1.0)})
    conn = journal._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert synchronous(journal) == PRAGMA[sync]
    # a pickled journal (a flow's result storage, a worker) keeps its setting
    copy = pickle.loads(pickle.dumps(journal))
    assert copy.sync == sync and synchronous(copy) == PRAGMA[sync]


def test_the_default_is_full_and_old_pickles_load_as_full(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.db"))
    assert journal.sync == "full"
    old = Journal.__new__(Journal)
    old.__setstate__({"path": str(tmp_path / "j.db")})  # pickled before ``sync`` existed
    assert old.sync == "full" and synchronous(old) == PRAGMA["full"]


@pytest.mark.parametrize("sync", JOURNAL_SYNCS)
def test_hybrid_memory_applies_journal_sync(tmp_path: Path, sync: str) -> None:
    mem = HybridMemory(
        "memory://", "memory://", strategy="write-behind", journal=str(tmp_path / "j.db"),
        journal_sync=sync, flush_interval=60,
    )  # fmt: skip
    assert mem.backend.journal_sync == sync
    assert synchronous(written(mem)) == PRAGMA[sync]
    assert mem.health().store("journal").details["journal_sync"] == sync
    mem.close()


@pytest.mark.parametrize("sync", [None, *JOURNAL_SYNCS])
def test_the_config_key_is_applied(tmp_path: Path, sync: str | None) -> None:
    config: dict[str, Any] = {
        "backend": "hybrid", "primary": "memory", "secondary": "memory",
        "journal": str(tmp_path / "j.db"), "sync": {"strategy": "write-behind"},
    }  # fmt: skip
    if sync is not None:
        config["journal_sync"] = sync
    expected = sync or "full"
    assert parse_config({"memory": config}).journal_sync == expected
    mem = pm.from_config({"memory": config})
    assert synchronous(written(mem)) == PRAGMA[expected]
    mem.close()
    # a hybrid inside a namespaces config too
    named = pm.from_config({"memory": {"namespaces": {"carts": {
        **config, "journal": str(tmp_path / "carts.db")}}}})  # fmt: skip
    assert synchronous(written(named["carts"])) == PRAGMA[expected]
    named["carts"].close()


@pytest.mark.parametrize("sync", JOURNAL_SYNCS)
def test_blocks_apply_journal_sync(tmp_path: Path, sync: str) -> None:
    block = HybridMemoryBlock(
        primary=InProcessMemory(name="journal-sync-a"),
        secondary=InProcessMemory(name="journal-sync-b"),
        strategy="write-behind", journal=str(tmp_path / "j.db"), journal_sync=sync,
    )  # fmt: skip
    assert synchronous(written(block.memory)) == PRAGMA[sync]
    # planned from a config: the block carries the key
    planned = blocks_from_config({"memory": {
        "backend": "hybrid", "primary": "memory", "secondary": "memory",
        "journal": str(tmp_path / "planned.db"), "journal_sync": sync}})  # fmt: skip
    hybrid = planned.blocks[-1][1]
    assert isinstance(hybrid, HybridMemoryBlock) and hybrid.journal_sync == sync


@pytest.mark.parametrize("bad", ["off", "FULL", "", 1, None, ["normal"]])
def test_a_bad_value_is_refused_naming_the_key_and_the_values(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(pm.ConfigError, match=r"^sync must be 'full' or 'normal', got "):
        Journal(str(tmp_path / "j.db"), sync=bad)
    with pytest.raises(pm.ConfigError, match=r"^journal_sync must be 'full' or 'normal', got "):
        HybridBackend(InProcessBackend(), InProcessBackend(), journal_sync=bad)
    with pytest.raises(pm.ConfigError, match=r"journal_sync must be 'full' or 'normal'"):
        HybridMemory("memory://", "memory://", journal_sync=bad)
    config = {"backend": "hybrid", "primary": "memory", "secondary": "memory",
              "journal_sync": bad}  # fmt: skip
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config({"memory": config})
    assert "memory.journal_sync: must be 'full' or 'normal', got" in str(info.value)
    with pytest.raises(ValidationError) as err:
        HybridMemoryBlock(
            primary=InProcessMemory(), secondary=InProcessMemory(name="o"), journal_sync=bad
        )
    assert {e["loc"][0] for e in err.value.errors()} == {"journal_sync"}
    assert "'full' or 'normal'" in str(err.value)
    assert not (tmp_path / "j.db").exists()  # refused before anything was opened


# -- kill -9: what "normal" (and "full") promise ----------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    import prefect_memory as pm

    redis_url, mongo_url, journal, sync, ns, n = sys.argv[1:7]
    mem = pm.HybridMemory(
        redis_url, mongo_url, strategy="write-behind", journal=journal, journal_sync=sync,
        flush_batch=10**9, flush_interval=3600.0, namespace=ns,  # never flushed here
    )

    def acked(*line):
        print(*line, flush=True)  # printed once the call returned: acknowledged

    for i in range(int(n)):
        mem.set(f"k{i}", {"i": i})
        acked("set", f"k{i}", i)
        if i % 7 == 0:  # overwrites: the last acknowledged value must win
            mem.set("last", {"i": i})
            acked("set", "last", i)
        if i % 11 == 10:  # deletes of keys written before
            mem.delete(f"k{i - 5}")
            acked("del", f"k{i - 5}")
        if i % 13 == 0:  # a batch of three
            mem.set_many({f"b{i}.{j}": {"i": i} for j in range(3)})
            for j in range(3):
                acked("set", f"b{i}.{j}", i)
    acked("ready")
    j = 0
    while True:  # fresh keys only: the write in flight when killed touches no key above
        mem.set(f"x{j}", {"i": j})
        acked("set", f"x{j}", j)
        j += 1
    """
)


@pytest.mark.redis
@pytest.mark.mongodb
@pytest.mark.parametrize("sync", JOURNAL_SYNCS)
def test_acknowledged_writes_survive_kill_9(
    tmp_path: Path, redis_server: Any, mongo_server: Any, sync: str
) -> None:
    """SIGKILL a writer mid-write (nothing flushed); a new process flushes every acked write."""
    sep = "&" if "?" in mongo_server.url else "?"
    mongo_url = f"{mongo_server.url}{sep}collection=journal_{uuid.uuid4().hex[:8]}"
    journal, ns, n = str(tmp_path / "journal.db"), f"kill-{uuid.uuid4().hex[:8]}", 60
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    args = [sys.executable, str(script), redis_server.url, mongo_url, journal, sync, ns, str(n)]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert child.stdout is not None
        while True:
            line = child.stdout.readline()
            assert line, f"the writer ended early: {child.stderr.read() if child.stderr else ''}"
            lines.append(line)
            if line.strip() == "ready":
                break
        # let it write a little more: the kill lands between or inside writes
        for _ in range(5):
            lines.append(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    lines += rest.splitlines(keepends=True)
    expected: dict[str, int | None] = {}  # key -> last acknowledged value (None: deleted)
    for line in lines:
        if not line.endswith("\n"):  # a line cut by the kill: its write was not acked yet
            continue
        op, *rest_of_line = line.split()
        if op == "set":
            expected[rest_of_line[0]] = int(rest_of_line[1])
        elif op == "del":
            expected[rest_of_line[0]] = None
    live = {k: v for k, v in expected.items() if v is not None}
    assert sum(k.startswith("x") for k in expected) >= 5 and len(live) > n

    secondary = pm.open_memory(mongo_url, namespace=ns)
    assert secondary.get_many(list(expected)) == {}  # nothing reached the secondary
    assert Journal(journal).backlog(SECONDARY) >= len(expected)

    # a new process (this one) opens the same journal and flushes it
    restarted = HybridMemory(
        redis_server.url, mongo_url, strategy="write-behind", journal=journal,
        journal_sync=sync, flush_interval=3600.0, namespace=ns,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while restarted.backlog() and time.monotonic() < deadline:
        restarted.flush(timeout=60)
    assert restarted.backlog() == 0
    got = secondary.get_many(list(expected))
    assert got == {k: {"i": v} for k, v in live.items()}  # every ack, deletes included
    restarted.clear()
    restarted.close()
    os.remove(journal)

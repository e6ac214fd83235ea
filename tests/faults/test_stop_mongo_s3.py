"""The MongoDB wire server and the S3 server stopped mid-operation, then started again.

Both keep their data across the stop (Mongo's sqlite engine, SeaweedFS's data folder), as
a durable secondary must. Private servers only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from faults.drive import RECHECK, TIMEOUT, Later, breaker, read_raw, scanned, started, stream, when
from faults.ledger import Ledger
from prefect_memory.registry import open_backend
from prefect_memory.resilience import HybridMemory
from servers import MongoWireServer, S3Server

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


#: The secondaries: MongoDB, S3 with s3fs's own retries (5 attempts with backoff), and S3
#: failing fast (1 attempt: a dead server is seen at once, the writes race the restart).
KINDS = ["mongodb", "s3", "s3-fail-fast"]


def urls(kind: str, server: Any) -> tuple[str, dict[str, Any]]:
    """The secondary's URL and options on a started server."""
    if kind == "mongodb":
        return f"{server.url}&collection=f{uuid.uuid4().hex[:8]}", {"timeout": TIMEOUT}
    server.make_bucket("pm-faults")
    retries = {"retries": 1} if kind == "s3-fail-fast" else {}
    return f"s3://pm-faults/{uuid.uuid4().hex[:8]}", {
        "storage_options": server.storage_options,
        "timeout": TIMEOUT,
        **retries,
    }


SERVERS: dict[str, Callable[[], Any]] = {
    "mongodb": lambda: MongoWireServer(engine="sqlite", keep_data=True),
    "s3": lambda: S3Server(keep_data=True),
    "s3-fail-fast": lambda: S3Server(keep_data=True),
}


def stop(server: Any) -> None:
    """SIGTERM, then SIGKILL after 3 s: SeaweedFS waits long for open client connections."""
    server.stop(timeout=3)


#: Entries per test: S3 round trips cost milliseconds, so it gets fewer.
SIZE = {"mongodb": 600, "s3": 300, "s3-fail-fast": 300}


def new_server(kind: str) -> Any:
    server = SERVERS[kind]()
    if getattr(server, "external", False):
        pytest.skip("an external MongoDB cannot be stopped by the tests")
    return server


@pytest.mark.parametrize("kind", KINDS)
def test_write_behind_flush_with_secondary_stopped(
    kind: str, tmp_path: Path, ledger: Ledger
) -> None:
    server = new_server(kind)
    with started(server):
        url, options = urls(kind, server)

        def open_hybrid(batch: int) -> HybridMemory:
            return HybridMemory(
                f"sqlite:///{tmp_path}/primary.db", url, strategy="write-behind",
                journal=str(tmp_path / "journal.db"), flush_interval=60, flush_batch=batch,
                breaker=breaker(), deadline=5.0, namespace="stop", secondary_options=options,
                recheck_after=RECHECK,
            )  # fmt: skip

        mem = open_hybrid(batch=100_000)  # nothing flushes while we write
        keys = [f"s{i:04d}" for i in range(SIZE[kind])]
        for key in keys:
            ledger.put(mem, key)
        ledger.lap("written")
        mem.backend.flush_batch = 20
        start = mem.backlog("secondary")

        def stop_now() -> None:
            ledger.fault(f"stop {kind} (secondary) mid-flush")
            stop(server)

        stopped = when(lambda: mem.backlog("secondary") < start - SIZE[kind] // 6, stop_now)
        with pytest.raises(pm.BackendUnavailable):
            mem.flush()  # one pass: fails when the store goes
        stopped.join()
        ledger.lap("flush interrupted")
        assert 0 < mem.backlog("secondary") < start
        ledger.notes["left_in_journal_at_stop"] = mem.backlog("secondary")
        stream(mem, ledger, keys, SIZE[kind] // 3, seed=3)  # reads and writes carry on meanwhile
        ledger.lap("stream while down")
        server.start()
        ledger.lap("restarted")
        mem.settle(timeout=60 + RECHECK)  # replayed, and no write can land late any more
        ledger.lap("flushed and settled")
        ledger.notes["repaired_late_writes"] = mem.backend.repaired["secondary"]
        assert mem.backlog() == 0 and mem.in_doubt() == 0
        fresh = open_backend(url, **{**options, "timeout": 10.0})  # a patient reader
        ledger.verify(read_raw(fresh, "stop", keys), "secondary")
        ledger.verify(open_hybrid(500).get_many(keys), "new process")
        ledger.verify_unique("secondary scan", scanned(fresh, "stop"))
        ledger.assert_clean()


@pytest.mark.parametrize("kind", KINDS)
def test_write_through_with_secondary_stopped_mid_stream(
    kind: str, tmp_path: Path, ledger: Ledger
) -> None:
    """Write-through accepting degraded writes: queued for the secondary while it is down."""
    server = new_server(kind)
    with started(server):
        url, options = urls(kind, server)

        def open_hybrid() -> HybridMemory:
            return HybridMemory(
                f"sqlite:///{tmp_path}/primary.db", url, strategy="write-through",
                journal=str(tmp_path / "journal.db"), flush_interval=0.05, accept_degraded=True,
                breaker=breaker(), deadline=5.0, namespace="wt", secondary_options=options,
                recheck_after=RECHECK,
            )  # fmt: skip

        mem = open_hybrid()
        keys = [f"w{i:03d}" for i in range(100)]
        stopping: list[Later] = []

        def stop_soon() -> None:
            ledger.fault(f"stop {kind} (secondary) mid-stream")
            stopping.append(Later(lambda: stop(server), seed=7).start())

        def restart() -> None:
            stopping.pop().join()
            ledger.notes["queued_for_secondary_at_restart"] = mem.backlog("secondary")
            server.start()

        n = SIZE[kind] // 2
        stream(mem, ledger, keys, 3 * n, seed=4, at={n: stop_soon, 2 * n: restart})
        assert ledger.failed == 0
        assert mem.backend.degraded_writes > 0
        mem.settle(timeout=60 + RECHECK)
        ledger.notes["repaired_late_writes"] = mem.backend.repaired["secondary"]
        assert mem.backlog() == 0 and mem.in_doubt() == 0
        fresh = open_backend(url, **{**options, "timeout": 10.0})  # a patient reader
        ledger.verify(read_raw(fresh, "wt", keys), "secondary")
        ledger.verify(mem.get_many(keys), "hybrid")
        ledger.verify(open_hybrid().get_many(keys), "new process")
        ledger.assert_clean()

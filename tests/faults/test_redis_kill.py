"""kill -9 of Redis in the middle of writes, of a write-behind flush, and of a migration.

Every test uses private servers (never the session ones) and checks, after restart and
replay, that every acknowledged write is present with its latest value, none duplicated.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from faults.drive import RECHECK, TIMEOUT, Later, breaker, read_raw, scanned, started, stream, when
from faults.ledger import Ledger
from prefect_memory.plugins.redisdb import RedisBackend
from prefect_memory.plugins.sqlite import SqliteBackend
from prefect_memory.resilience import (
    ExponentialBackoff,
    HybridMemory,
    ResilientBackend,
    Retry,
)
from prefect_memory.tiers import Tier, TieredMemory
from servers import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.timeout(120)]

KEYS = [f"k{i:03d}" for i in range(150)]


def check_hybrid(mem: HybridMemory, ledger: Ledger, reopen: Any) -> None:
    """Replay everything, then compare the hybrid, both stores and a fresh process."""
    mem.settle(timeout=30 + RECHECK)  # replayed, and no write can land late any more
    assert mem.backlog() == 0 and mem.in_doubt() == 0
    ns, keys = mem.namespace, list(ledger.ops)
    ledger.verify(mem.get_many(keys), "hybrid")
    ledger.verify(read_raw(mem.secondary, ns, keys), "secondary")
    ledger.verify(read_raw(mem.primary, ns, keys), "primary (refilled)")
    ledger.verify(reopen().get_many(keys), "new process")
    ledger.verify_unique("keys()", mem.keys())
    ledger.assert_clean()


@pytest.mark.parametrize(
    "strategy,accept",
    [("write-behind", False), ("write-through", False), ("write-through", True)],
    ids=["write-behind", "write-through-raise", "write-through-accept"],
)
def test_primary_redis_killed_mid_stream(
    strategy: str, accept: bool, tmp_path: Path, mongo_server: Any, ledger: Ledger
) -> None:
    """Primary Redis without persistence: it restarts EMPTY and must be refilled."""
    redis = RedisServer()
    collection = f"faults{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in mongo_server.url else "?"
    secondary = (
        f"sqlite:///{tmp_path}/secondary.db"
        if strategy == "write-behind"
        else f"{mongo_server.url}{sep}collection={collection}"
    )

    def open_hybrid() -> HybridMemory:
        return HybridMemory(
            redis.url, secondary, strategy=strategy,  # type: ignore[arg-type]
            journal=str(tmp_path / "journal.db"), flush_interval=0.05, flush_batch=100,
            accept_degraded=accept, breaker=breaker(), namespace="stream", recheck_after=RECHECK,
            primary_options={"timeout": TIMEOUT}, secondary_options={"timeout": 5.0},
        )  # fmt: skip

    with started(redis):
        mem = open_hybrid()
        killer: list[Later] = []

        def kill() -> None:
            ledger.fault("kill -9 redis (primary)")
            killer.append(Later(redis.kill, seed=len(ledger.faults)).start())

        def restart() -> None:
            killer.pop().join()
            ledger.notes["queued_for_primary_at_restart"] = mem.backlog("primary")
            redis.restart()

        stream(mem, ledger, KEYS, 1200, seed=1, at={400: kill, 800: restart})
        assert ledger.failed == 0 or (strategy == "write-through" and not accept)
        check_hybrid(mem, ledger, open_hybrid)


def test_write_behind_flush_with_secondary_redis_killed(tmp_path: Path, ledger: Ledger) -> None:
    """The secondary (Redis with an fsync'ed AOF) dies while the journal is being applied."""
    redis = RedisServer(appendonly=True, appendfsync="always")

    def open_hybrid(batch: int) -> HybridMemory:
        return HybridMemory(
            f"sqlite:///{tmp_path}/primary.db", redis.url, strategy="write-behind",
            journal=str(tmp_path / "journal.db"), flush_interval=60, flush_batch=batch,
            namespace="flush", secondary_options={"timeout": TIMEOUT}, recheck_after=RECHECK,
        )  # fmt: skip

    with started(redis):
        mem = open_hybrid(batch=100_000)  # nothing flushes while we write
        keys = [f"f{i:04d}" for i in range(1500)]
        for key in keys:
            ledger.put(mem, key)
        mem.backend.flush_batch = 50
        start = mem.backlog("secondary")

        def kill_now() -> None:
            ledger.fault("kill -9 redis (secondary) mid-flush")
            redis.kill()

        killed = when(lambda: mem.backlog("secondary") < start - 300, kill_now)
        with pytest.raises(pm.BackendUnavailable):
            mem.flush()  # one pass: fails when the store goes
        killed.join()
        assert 0 < mem.backlog("secondary") < start  # really killed mid-flush
        ledger.notes["left_in_journal_at_kill"] = mem.backlog("secondary")
        stream(mem, ledger, keys, 300, seed=2)  # the memory keeps answering meanwhile
        redis.restart()
        mem.settle(timeout=30 + RECHECK)
        assert mem.backlog() == 0 and mem.in_doubt() == 0
        fresh = RedisBackend.from_url(redis.url)
        ledger.verify(read_raw(fresh, "flush", keys), "secondary")
        ledger.verify(open_hybrid(500).get_many(keys), "new process")
        ledger.verify_unique("secondary scan", scanned(fresh, "flush"))
        ledger.assert_clean()


T0 = 1_700_000_000.0


@pytest.mark.parametrize("retry", [False, True], ids=["rerun", "retry"])
@pytest.mark.parametrize("victim", ["source", "target"])
def test_migration_with_redis_tier_killed(
    victim: str, retry: bool, tmp_path: Path, ledger: Ledger
) -> None:
    """hot -> warm where one tier is Redis (AOF, fsync always) killed mid-migration.

    Without retries the migration fails and a re-run finishes it; with a retry policy on
    the Redis tier it rides over the restart. Either way every entry stays readable and,
    after a re-run, lives exactly once in the target tier.
    """
    redis = RedisServer(appendonly=True, appendfsync="always")
    policy = Retry(ExponentialBackoff(0.05, cap=0.5), attempts=30, deadline=20) if retry else None

    def build(now: float) -> TieredMemory:
        store = RedisBackend.from_url(redis.url, timeout=TIMEOUT, key_prefix="mig")
        redis_tier = ResilientBackend(store, retry=policy) if policy else store
        sqlite_tier = SqliteBackend(str(tmp_path / "tier.db"))
        hot, warm = (redis_tier, sqlite_tier) if victim == "source" else (sqlite_tier, redis_tier)
        rule = {"from": "hot", "to": "warm", "condition": "age > 3600"}
        return TieredMemory(
            [Tier("hot", hot), Tier("warm", warm)], [rule], namespace="mig", clock=lambda: now
        )

    with started(redis):
        keys = [f"m{i:04d}" for i in range(1200)]
        loader = build(T0)
        for start in range(0, len(keys), 100):
            ledger.put_many(loader, keys[start : start + 100])
        mem = build(T0 + 7200)
        fault: list[Later] = []

        def kill_soon(report: Any) -> None:
            if fault:
                return
            ledger.fault(f"kill -9 redis ({victim} tier) mid-migration")

            def kill_then_restart() -> None:
                redis.kill()
                if retry:
                    redis.restart()

            fault.append(Later(kill_then_restart, max_delay=0.01).start())

        try:
            mem.migrate(batch_size=20, progress=kill_soon)
            migrated_in_one_run = True
        except pm.BackendUnavailable:
            migrated_in_one_run = False
        fault[0].join()
        assert migrated_in_one_run == retry
        if not retry:
            redis.restart()
        # A re-run finishes the job. (Even a run that rode over the restart may leave a few
        # entries behind: a Redis SCAN cursor means nothing to the restarted server, so the
        # scan can end early. They stay readable where they are until the next run.)
        rerun = build(T0 + 7200).migrate(batch_size=20)
        ledger.notes["moved_by_rerun"] = rerun.total_moved
        after = build(T0 + 7200)
        tiers = {t.name: scanned(t.backend, "mig") for t in after.tiers}
        ledger.notes["tiers_after"] = {name: len(found) for name, found in tiers.items()}
        assert tiers["hot"] == []
        ledger.verify_unique("tiers", tiers["hot"] + tiers["warm"])
        ledger.verify(after.get_many(keys), "tiered")
        ledger.assert_clean()

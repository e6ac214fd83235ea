"""Writes a store applies late: after the client gave up on them, after newer writes.

A server can hold a request and apply it seconds later (SeaweedFS did, after a restart),
and a driver can retry an attempt that is in fact still on its way. Plain stores have no
compare-and-set for this, so a hybrid memory rechecks the keys of every write that may
land late, ``recheck_after`` seconds after it, and puts back the last write that reached
the store. Here the late landing is made exact by a store that holds writes until told
to apply them; tests/faults/test_late_writes.py does the same through real servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.resilience import ExponentialBackoff, HybridMemory, HybridWriteError, Retry


class Holding(InProcessBackend):
    """A store whose next writes are held and applied only by :meth:`land`.

    ``hold()``: the write raises ``BackendTimeout`` (the client gave up) and is applied
    later. ``hold(retried=True)``: the write succeeds, as a driver's retry of it would,
    and its first attempt is held and applied later (``retried_writes`` counts it).
    """

    def __init__(self) -> None:
        super().__init__()
        self._holds: list[bool] = []
        self.held: list[Callable[[], Any]] = []
        self.retries = 0

    @property
    def retried_writes(self) -> int:
        return self.retries

    def hold(self, *, retried: bool = False) -> None:
        self._holds.append(retried)

    def land(self) -> int:
        held, self.held = self.held, []
        for write in held:
            write()
        return len(held)

    def _write(self, apply: Callable[[], Any]) -> Any:
        if not self._holds:
            return apply()
        retried = self._holds.pop(0)
        self.held.append(apply)
        if not retried:
            raise pm.BackendTimeout("no answer within 0.5s")
        self.retries += 1
        return apply()

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        records = dict(records)
        self._write(lambda: super(Holding, self).put_many(ns, records, now=now))

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        keys = list(keys)
        return self._write(lambda: super(Holding, self).delete_many(ns, keys, now=now))


def hybrid(tmp_path: Path, primary: Any, secondary: Any, **options: Any) -> HybridMemory:
    options.setdefault("flush_interval", 60)  # explicit flushes only
    options.setdefault("recheck_after", 0.2)
    return HybridMemory(primary, secondary, journal=str(tmp_path / "j.db"), namespace="ns",
                        **options)  # fmt: skip


def raw(store: Any, key: str) -> Any:
    record = store.get_many("ns", [key], now=time.time()).get(key)
    return None if record is None else pm.Codec().decode(record.value)


STRATEGIES = [
    pytest.param({"strategy": "write-through", "accept_degraded": True}, id="write-through"),
    pytest.param({"strategy": "write-behind"}, id="write-behind"),
]


def write(mem: HybridMemory, key: str, value: Any) -> None:
    """One acknowledged write that has reached the secondary when this returns."""
    mem.set(key, value)
    mem.flush()


def degraded(tmp_path: Path, **options: Any) -> tuple[HybridMemory, Holding]:
    """Write-through acknowledging degraded writes, over a secondary that can hold writes."""
    secondary = Holding()
    mem = hybrid(tmp_path, InProcessBackend(), secondary, strategy="write-through",
                 accept_degraded=True, **options)  # fmt: skip
    return mem, secondary


def held_then_newer(mem: HybridMemory, secondary: Holding) -> None:
    """v1; then v2, whose write is held (and replayed, answered); then v3 acknowledged."""
    write(mem, "k", "v1")
    secondary.hold()
    mem.set("k", "v2")
    mem.flush()
    write(mem, "k", "v3")


@pytest.mark.parametrize("options", STRATEGIES)
def test_an_older_write_landing_late_is_put_right(tmp_path: Path, options: Any) -> None:
    secondary = Holding()
    mem = hybrid(tmp_path, InProcessBackend(), secondary, **options)
    write(mem, "k", "v1")
    secondary.hold()
    mem.set("k", "v2")  # write-through: the secondary's answer never comes: queued
    if options["strategy"] == "write-behind":
        with pytest.raises(pm.BackendTimeout):
            mem.flush()  # the flush is the write that times out
    mem.flush()  # v2 replayed, answered this time
    write(mem, "k", "v3")
    assert mem.in_doubt("secondary") == 1 and mem.backlog() == 0
    assert secondary.land() == 1
    assert raw(secondary, "k") == "v2"  # the held write landed over the newer one
    mem.settle(timeout=5)
    assert raw(secondary, "k") == "v3" and mem.get("k") == "v3"
    assert mem.backend.repaired["secondary"] == 1 and mem.in_doubt() == 0


def test_a_late_put_after_a_delete_is_removed(tmp_path: Path) -> None:
    mem, secondary = degraded(tmp_path)
    write(mem, "k", "v1")
    secondary.hold()
    mem.set("k", "v2")
    mem.flush()
    mem.delete("k")
    secondary.land()
    assert raw(secondary, "k") == "v2"  # brought back by the late write
    mem.settle(timeout=5)
    assert raw(secondary, "k") is None and mem.get("k") is None
    assert mem.backend.repaired["secondary"] == 1


def test_a_late_delete_after_a_newer_put_is_undone(tmp_path: Path) -> None:
    mem, secondary = degraded(tmp_path)
    write(mem, "k", "v1")
    secondary.hold()
    mem.delete("k")
    mem.flush()
    write(mem, "k", "v2")
    secondary.land()
    assert raw(secondary, "k") is None
    mem.settle(timeout=5)
    assert raw(secondary, "k") == "v2"


@pytest.mark.parametrize("by", ["driver", "retry-policy"])
def test_a_write_retried_after_a_timeout_is_rechecked(tmp_path: Path, by: str) -> None:
    """The first attempt timed out and may land late, though the write was answered:
    retried inside the driver (``retried_writes``) or by our own ``Retry``."""
    secondary = Holding()
    policy = Retry(ExponentialBackoff(0.01, cap=0.05), attempts=3) if by != "driver" else None
    mem = hybrid(tmp_path, InProcessBackend(), secondary, strategy="write-through", retry=policy)
    write(mem, "k", "v1")
    secondary.hold(retried=by == "driver")
    mem.set("k", "v2")  # answered: no error reaches us, but an attempt is still out
    assert mem.in_doubt("secondary") == 1
    mem.set("k", "v3")
    secondary.land()
    assert raw(secondary, "k") == "v2"
    mem.settle(timeout=5)
    assert raw(secondary, "k") == "v3"


def test_a_write_that_reached_no_store_is_not_replayed_by_the_recheck(tmp_path: Path) -> None:
    primary, secondary = Holding(), Holding()
    mem = hybrid(tmp_path, primary, secondary, strategy="write-through")
    primary.hold()
    secondary.hold()
    with pytest.raises(HybridWriteError):
        mem.set("k", "never acknowledged")
    assert mem.in_doubt() == 2 and mem.backlog() == 0
    mem.settle(timeout=5)  # nothing reached either store since: nothing to hold them to
    assert raw(primary, "k") is None and raw(secondary, "k") is None
    assert mem.in_doubt() == 0 and mem.backend.repaired == {"primary": 0, "secondary": 0}


def test_a_refused_write_is_not_in_doubt(tmp_path: Path, flaky: Any) -> None:
    secondary = flaky()
    mem = hybrid(tmp_path, InProcessBackend(), secondary, strategy="write-through",
                 accept_degraded=True)  # fmt: skip
    secondary.down = True  # connection refused: the request never left
    mem.set("k", 1)
    assert mem.backlog("secondary") == 1 and mem.in_doubt() == 0


def test_keys_in_doubt_outlive_the_process(tmp_path: Path) -> None:
    mem, secondary = degraded(tmp_path, recheck_after=0.5)
    held_then_newer(mem, secondary)
    mem.close()  # before the recheck is due: the journal keeps the doubt
    secondary.land()
    again = hybrid(tmp_path, mem.backend.primary, secondary, strategy="write-through")
    assert again.in_doubt("secondary") == 1
    again.settle(timeout=5)
    assert raw(secondary, "k") == "v3" and again.in_doubt() == 0


def test_settle_says_when_the_keys_are_rechecked(tmp_path: Path) -> None:
    mem, secondary = degraded(tmp_path, recheck_after=30)
    secondary.hold()
    mem.set("k", "v")
    began = time.monotonic()
    with pytest.raises(pm.BackendTimeout, match=r"1 key\(s\).*checked 30s after the failure"):
        mem.settle(timeout=2)
    assert time.monotonic() - began < 2  # it says so at once rather than waiting in vain
    assert mem.in_doubt("secondary") == 1


def test_recheck_after_must_be_seconds(tmp_path: Path) -> None:
    with pytest.raises(pm.ConfigError, match="recheck_after"):
        hybrid(tmp_path, InProcessBackend(), InProcessBackend(), recheck_after=-1)


def test_health_shows_keys_in_doubt_and_repairs(tmp_path: Path) -> None:
    mem, secondary = degraded(tmp_path)
    held_then_newer(mem, secondary)
    journal = mem.health().store("journal")
    assert journal.details["in_doubt"] == {"primary": 0, "secondary": 1}
    secondary.land()
    mem.settle(timeout=5)
    journal = mem.health().store("journal")
    assert journal.details["in_doubt"] == {"primary": 0, "secondary": 0}
    assert journal.details["repaired_late_writes"] == {"primary": 0, "secondary": 1}


def test_a_repair_that_times_out_stays_in_doubt(tmp_path: Path) -> None:
    mem, secondary = degraded(tmp_path)
    held_then_newer(mem, secondary)
    secondary.land()
    secondary.hold()  # the repair itself gets no answer (and lands later, harmlessly)
    mem.settle(timeout=10)  # tried again once due again
    assert raw(secondary, "k") == "v3" and mem.in_doubt() == 0
    assert secondary.land() == 1 and raw(secondary, "k") == "v3"

"""Versions of a key only grow on a tiered memory, whatever the path of the write.

The move protocol orders the writes of a key by version (the interleavings are in
tests/tiers/test_move_protocol.py, ``test_race_*``); these are the plain sequences that
must keep it so.
"""

from __future__ import annotations

import pytest

from prefect_memory.plugins.base import Record
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.tiers import Tier, TieredMemory


def two_tiers() -> TieredMemory:
    tiers = [Tier("hot", InProcessBackend()), Tier("warm", InProcessBackend())]
    rules = [{"from": "hot", "to": "warm", "condition": "accessCount < 1000"}]
    return TieredMemory(tiers, rules, namespace="v")


def version(mem: TieredMemory, key: str) -> int:
    return mem.backend.get_many(mem.namespace, [key], now=mem.clock())[key].version


@pytest.mark.parametrize("how", ["set", "add"])
def test_a_write_after_a_delete_survives_the_next_move(how: str) -> None:
    """``add`` wrote version 1 after a delete of version 2: the next move took it for the
    deleted write (the delete record says "version 2 and older are dead") and removed it."""
    mem = two_tiers()
    mem.set("k", 1)
    mem.set("k", 2)  # version 2
    mem.delete("k")
    if how == "add":
        assert mem.add("k", 3)
    else:
        mem.set("k", 3)
    assert version(mem, "k") == 3
    assert mem.migrate().total_moved == 1
    assert mem.get("k") == 3


def test_a_write_over_an_entry_in_another_tier_continues_its_versions() -> None:
    mem = two_tiers()
    for n in range(3):
        mem.set("k", n)  # version 3
    mem.migrate()  # now in warm
    mem.set("k", "new")
    assert version(mem, "k") == 4
    assert mem.get("k") == "new"


def test_a_delete_record_never_goes_back() -> None:
    """A second delete that finds only a dead copy of an older write (a stalled mover may
    leave one for a moment) keeps the first delete's record."""
    mem = two_tiers()
    stones = mem.backend.tombstones
    for n in range(3):
        mem.set("k", n)  # version 3
    mem.delete("k")
    first = stones.deleted(mem.namespace, ["k"], now=mem.clock())["k"]
    assert first[0] == 3
    now = mem.clock()
    mem.tiers[1].backend.put_many(mem.namespace, {"k": Record(b"x", now, now, now)}, now=now)
    mem.delete("k")
    assert stones.deleted(mem.namespace, ["k"], now=mem.clock())["k"] == first

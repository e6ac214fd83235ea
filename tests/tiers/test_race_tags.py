"""``tagged`` and ``invalidate_tags`` on a tiered memory name only keys whose write carries the tag.

A tier's tag index may hold a key whose newest write no longer carries the tag: a dead copy
of an older write placed by a stalled mover (removed again by that mover a moment later), or
an S3 tag marker written just after a move removed its entry. ``invalidate_tags`` then
deleted the key, newest write included: an acknowledged write was lost
(tests/tiers/test_concurrent_tiers.py, ``test_writer_on_few_keys_during_moves``).
"""

from __future__ import annotations

from collections.abc import Iterable

from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.tiers import Tier, TieredMemory
from prefect_memory.tiers.moves import moved_copy


def two_tiers() -> TieredMemory:
    tiers = [Tier("hot", InProcessBackend()), Tier("warm", InProcessBackend())]
    rules = [{"from": "hot", "to": "warm", "condition": "accessCount < 1000"}]
    return TieredMemory(tiers, rules, namespace="t")


def test_a_dead_copy_with_an_old_tag_does_not_invalidate_the_new_write() -> None:
    mem = two_tiers()
    hot, warm = (t.backend for t in mem.tiers)
    mem.set("k", "old", tags=["a"])
    stalled = hot.get_many(mem.namespace, ["k"], now=mem.clock())["k"]  # a mover's read
    mem.set("k", "new", tags=["b"])  # acknowledged: "k" carries only "b" now
    now = mem.clock()
    assert warm.put_absent_many(mem.namespace, {"k": moved_copy(stalled)}, now=now) == {"k"}
    assert mem.tagged("a") == []
    assert mem.invalidate_tags("a") == 0
    assert mem.get("k") == "new"
    assert mem.tagged("b") == ["k"]


class StaleTagIndex(InProcessBackend):
    """A store whose tag index also names keys it does not hold with the tag (stale markers)."""

    stale: set[str] = set()

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        return super().tagged(ns, tags, now=now) | self.stale


def test_a_stale_tag_entry_is_not_listed() -> None:
    """A tag index naming a key whose write does not carry the tag (an S3 marker left by a
    move racing the marker write), or no longer holding the key at all."""
    warm = StaleTagIndex()
    warm.stale = {"k", "gone"}
    tiers = [Tier("hot", InProcessBackend()), Tier("warm", warm)]
    rules = [{"from": "hot", "to": "warm", "condition": "accessCount < 1000"}]
    mem = TieredMemory(tiers, rules, namespace="t")
    mem.set("k", "v", tags=["b"])
    mem.migrate()  # "k" now in warm, with tag "b" only
    mem.set("j", "w", tags=["a"])
    assert mem.tagged("a") == ["j"]
    assert mem.invalidate_tags("a") == 1
    assert mem.get("k") == "v" and mem.get("j") is None


def test_a_key_carrying_the_tag_in_any_tier_is_invalidated() -> None:
    mem = two_tiers()
    mem.set("k", "v", tags=["a"])
    mem.set("h", "w", tags=["a", "b"])
    mem.migrate()
    mem.set("h", "x", tags=["a"])  # back in hot, a newer write still tagged
    assert mem.tagged("a") == ["h", "k"]
    assert mem.invalidate_tags("a") == 2
    assert mem.get("k") is None and mem.get("h") is None

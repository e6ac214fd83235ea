"""Property tests of the CRDT merges: commutative, associative, idempotent (hypothesis).

hypothesis is a dev dependency (pyproject's ``dev`` extra should list it); without it this
module is skipped, the Redis tests of the types (``test_crdt.py``) still run.
"""

from __future__ import annotations

from typing import Any

import pytest

from prefect_memory.shared import crdt

hypothesis = pytest.importorskip("hypothesis")
given, settings, st = hypothesis.given, hypothesis.settings, hypothesis.strategies

replicas = st.sampled_from(["r1", "r2", "r3"])
gcounters = st.dictionaries(replicas, st.integers(0, 10**6), max_size=3)
pncounters = st.fixed_dictionaries({"p": gcounters, "n": gcounters})
tags = st.builds(lambda r, n: f"{r}:{n}", replicas, st.integers(1, 6))
orsets = st.fixed_dictionaries({
    "adds": st.dictionaries(st.sampled_from("abcd"), st.lists(tags, min_size=1, max_size=3)),
    "removed": st.lists(tags, max_size=4),
}).map(lambda s: crdt.merge_orset(s, {}))  # fmt: skip
lww_entries = st.tuples(
    st.integers(0, 5).map(float), replicas, st.booleans(), st.integers(0, 3)
).map(lambda e: [e[0], e[1], e[2], None if e[2] else e[3]])
lwws = st.dictionaries(st.sampled_from("xyz"), lww_entries, max_size=3)

LAWS = [
    (crdt.merge_gcounter, gcounters),
    (crdt.merge_pncounter, pncounters),
    (crdt.merge_orset, orsets),
    (crdt.merge_lww, lwws),
]


@pytest.mark.parametrize(("merge", "states"), LAWS, ids=["gcounter", "pncounter", "orset", "lww"])
def test_merges_are_commutative_associative_idempotent(merge: Any, states: Any) -> None:
    @settings(max_examples=300, deadline=None)
    @given(states, states, states)
    def laws(a: Any, b: Any, c: Any) -> None:
        assert merge(a, b) == merge(b, a)
        assert merge(merge(a, b), c) == merge(a, merge(b, c))
        assert merge(a, a) == merge(a, {})
        assert merge(merge(a, b), b) == merge(a, b)

    laws()

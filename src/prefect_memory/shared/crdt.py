"""CRDT states as plain dicts, and their merges (commutative, associative, idempotent).

These functions are the meaning of the Redis-backed types of
:mod:`prefect_memory.shared.crdt_types` (whose ``state()`` returns these dicts and whose
``merge()`` applies these rules atomically on the server):

- G-Counter: ``{replica: count}``; merge takes the per-replica maximum.
- PN-Counter: ``{"p": gcounter, "n": gcounter}``; value ``sum(p) - sum(n)``.
- OR-Set (add wins): ``{"adds": {element: [tag, ...]}, "removed": [tag, ...]}``; each add
  makes a unique tag ``"<replica>:<n>"``, a remove tombstones the tags it has seen, so an
  add concurrent with a remove survives.
- LWW-Map: ``{key: [timestamp, replica, deleted, value]}``; the greatest
  ``(timestamp, replica, packed value)`` wins, a delete is a tombstone.

Example:
    >>> a = {"adds": {"x": ["r1:1"]}, "removed": []}
    >>> b = {"adds": {"x": ["r2:1"]}, "removed": ["r1:1"]}   # r2 removed r1's add, re-added
    >>> orset_members(merge_orset(a, b))
    ['x']
    >>> merge_pncounter({"p": {"a": 3}, "n": {}}, {"p": {"a": 1}, "n": {"b": 2}})
    {'p': {'a': 3}, 'n': {'b': 2}}
    >>> lww_value(merge_lww({"k": [1.0, "a", False, 1]}, {"k": [2.0, "b", False, 2]}))
    {'k': 2}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

GCounterState = dict[str, int]
PNCounterState = dict[str, GCounterState]
ORSetState = dict[str, Any]
LWWState = dict[str, list[Any]]


def merge_gcounter(a: Mapping[str, int], b: Mapping[str, int]) -> GCounterState:
    """The per-replica maximum of two G-Counter states."""
    return {r: max(a.get(r, 0), b.get(r, 0)) for r in sorted(set(a) | set(b))}


def gcounter_value(state: Mapping[str, int]) -> int:
    """The value of a G-Counter state."""
    return sum(state.values())


def merge_pncounter(a: Mapping[str, Any], b: Mapping[str, Any]) -> PNCounterState:
    """Merge the increments and the decrements of two PN-Counter states."""
    return {
        "p": merge_gcounter(a.get("p", {}), b.get("p", {})),
        "n": merge_gcounter(a.get("n", {}), b.get("n", {})),
    }


def pncounter_value(state: Mapping[str, Any]) -> int:
    """The value of a PN-Counter state."""
    return gcounter_value(state.get("p", {})) - gcounter_value(state.get("n", {}))


def merge_orset(a: Mapping[str, Any], b: Mapping[str, Any]) -> ORSetState:
    """Union of the adds and of the tombstones; a tombstoned tag is gone (add wins)."""
    removed = set(a.get("removed", ())) | set(b.get("removed", ()))
    adds: dict[str, set[str]] = {}
    for state in (a, b):
        for element, tags in state.get("adds", {}).items():
            live = set(tags) - removed
            if live:
                adds.setdefault(element, set()).update(live)
    return {
        "adds": {e: sorted(adds[e]) for e in sorted(adds)},
        "removed": sorted(removed),
    }


def orset_members(state: Mapping[str, Any]) -> list[str]:
    """The elements of an OR-Set state (sorted)."""
    removed = set(state.get("removed", ()))
    return sorted(e for e, tags in state.get("adds", {}).items() if set(tags) - removed)


def lww_order(entry: list[Any] | tuple[Any, ...]) -> tuple[float, bytes, bytes]:
    """What decides between two writes of a key: time, then replica, then packed value."""
    ts, replica, deleted, value = entry
    packed = b"" if deleted else msgpack.packb(value)
    return (float(ts), str(replica).encode(), packed)


def merge_lww(a: Mapping[str, Any], b: Mapping[str, Any]) -> LWWState:
    """Per key, the write with the greatest :func:`lww_order` (tombstones included)."""
    out: dict[str, list[Any]] = {k: list(v) for k, v in a.items()}
    for key, entry in b.items():
        mine = out.get(key)
        if mine is None or lww_order(entry) > lww_order(mine):
            out[key] = list(entry)
    return {k: out[k] for k in sorted(out)}


def lww_value(state: Mapping[str, Any]) -> dict[str, Any]:
    """The live keys of an LWW-Map state and their values."""
    return {k: entry[3] for k, entry in sorted(state.items()) if not entry[2]}


__all__ = [
    "gcounter_value",
    "lww_order",
    "lww_value",
    "merge_gcounter",
    "merge_lww",
    "merge_orset",
    "merge_pncounter",
    "orset_members",
    "pncounter_value",
]

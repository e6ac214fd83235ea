"""Push migration rules down into the store: a rule becomes a MongoDB query.

A migration then reads only the entries a rule can match instead of every entry of the
tier, on a store that declares ``capabilities.pushdown`` (it implements
:meth:`~prefect_memory.plugins.base.Backend.scan_query`; MongoDB today). Fields map to
the MongoDB backend's document layout (``n`` access count, ``c`` created, ``a`` last
access, ``u`` updated, ``x`` expiry as a date, ``g`` tags); ``size`` has no stored field,
so a rule using it is not pushed down (the tier is scanned). The query only narrows the
candidates: every candidate is checked again with the rule itself.

Example:
    >>> from prefect_memory.tiers.rules import parse_rule
    >>> mongo_filter(parse_rule("accessCount < 5 AND age > 3600"), now=10_000.0)
    {'$and': [{'n': {'$lt': 5.0}}, {'c': {'$lt': 6400.0}}]}
    >>> mongo_filter(parse_rule("size > 1MB"), now=0.0) is None
    True
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..plugins.base import F_ACCESS_COUNT, F_ACCESSED, F_CREATED, F_EXPIRES, F_TAGS, F_UPDATED
from .rules import Compare, Node, Not, Rule

if TYPE_CHECKING:
    from .tiered import TieredBackend

_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "==": "$eq", "=": "$eq", "!=": "$ne"}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "=": "==", "!=": "!="}
_SINCE = {"age": F_CREATED, "lastAccess": F_ACCESSED, "idle": F_ACCESSED}


def _date(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).replace(tzinfo=None)


def _compare(node: Compare, now: float) -> dict[str, Any] | None:
    op, value = node.op, node.value
    if node.field == "tag":
        return {F_TAGS: value} if op in ("==", "=") else {F_TAGS: {"$ne": value}}
    if node.field == "accessCount":
        return {F_ACCESS_COUNT: {_OPS[op]: value}}
    if node.field in _SINCE:  # seconds since a time: compare the time, the other way round
        return {_SINCE[node.field]: {_OPS[_FLIP[op]]: now - float(value)}}
    if node.field == "ttlLeft":  # entries without expiry have an infinite ttlLeft
        bound = {F_EXPIRES: {"$type": "date", _OPS[op]: _date(now + float(value))}}
        if op in (">", ">=", "!="):
            return {"$or": [{F_EXPIRES: None}, bound]}
        return bound
    return None  # size: not stored as a field


def _node(node: Node, now: float) -> dict[str, Any] | None:
    if isinstance(node, Compare):
        return _compare(node, now)
    if isinstance(node, Not):
        inner = _node(node.operand, now)
        return None if inner is None else {"$nor": [inner]}
    parts = [_node(operand, now) for operand in node.operands]
    if any(p is None for p in parts):
        return None
    return {"$and" if node.op == "AND" else "$or": parts}


def mongo_filter(rule: Rule, now: float) -> dict[str, Any] | None:
    """The MongoDB query selecting the entries ``rule`` can match at ``now`` (``None``: can't)."""
    return _node(rule.root, now)


def candidates_query(backend: TieredBackend, index: int, now: float) -> dict[str, Any] | None:
    """One query for every way an entry can leave tier ``index`` (rules, tier TTL).

    ``None`` when the tier's store does not declare ``capabilities.pushdown`` or a rule
    cannot be written as a query: the tier is then scanned.
    """
    tier = backend.tiers[index]
    if not tier.backend.capabilities.pushdown:
        return None
    queries: list[dict[str, Any]] = []
    for rule in backend.rules:
        if rule.source == tier.name:
            query = mongo_filter(rule.condition, now)
            if query is None:
                return None
            queries.append(query)
    if tier.ttl is not None and index + 1 < len(backend.tiers):
        queries.append({F_UPDATED: {"$lt": now - tier.ttl}})
    if not queries:
        return None
    return queries[0] if len(queries) == 1 else {"$or": queries}

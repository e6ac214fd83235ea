"""Reconciliation of the two stores of a hybrid memory (the ``sync_hybrid`` flow's engine).

Both stores are scanned for a namespace; a key one store lacks is copied from the other,
and when both hold different values the newer write (``updated_at``) wins. The journal is
applied first, so what is queued is not mistaken for a difference.

Example:
    >>> from prefect_memory.plugins.inprocess import InProcessBackend
    >>> from prefect_memory.plugins.base import Record
    >>> a, b = InProcessBackend(), InProcessBackend()
    >>> a.put_many("ns", {"k": Record(b"1", 1.0, 1.0, 1.0)}, now=2.0)
    >>> report = reconcile(a, b, "ns", now=2.0)
    >>> report.copied_to_secondary, sorted(b.scan("ns", None, now=2.0))
    (1, ['k'])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..plugins.base import Backend, Record


@dataclass
class SyncReport:
    """What a reconciliation of both stores found and did."""

    copied_to_secondary: int = 0
    copied_to_primary: int = 0
    conflicts_resolved: int = 0
    checked: int = 0
    seconds: float = 0.0
    differences: list[tuple[str, str]] = field(default_factory=list)


def reconcile(
    primary: Backend, secondary: Backend, ns: str, *, now: float, batch_size: int = 500
) -> SyncReport:
    """Copy what one store lacks to the other and resolve conflicts (newer write wins)."""
    started = time.perf_counter()
    report = SyncReport()
    keys = sorted(set(primary.scan(ns, None, now=now)) | set(secondary.scan(ns, None, now=now)))
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        first = primary.get_many(ns, batch, now=now, touch=False)
        second = secondary.get_many(ns, batch, now=now, touch=False)
        to_second: dict[str, Record] = {}
        to_first: dict[str, Record] = {}
        for key in batch:
            a, b = first.get(key), second.get(key)
            report.checked += 1
            if a is not None and b is None:
                to_second[key] = a
                report.differences.append((key, "missing in secondary"))
            elif b is not None and a is None:
                to_first[key] = b
                report.differences.append((key, "missing in primary"))
            elif a is not None and b is not None and a.value != b.value:
                report.conflicts_resolved += 1
                if a.updated_at >= b.updated_at:
                    to_second[key] = a
                    report.differences.append((key, "secondary older"))
                else:
                    to_first[key] = b
                    report.differences.append((key, "primary older"))
        if to_second:
            secondary.put_many(ns, to_second, now=now)
        if to_first:
            primary.put_many(ns, to_first, now=now)
        report.copied_to_secondary += len(to_second)
        report.copied_to_primary += len(to_first)
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["SyncReport", "reconcile"]

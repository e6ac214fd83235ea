"""Shared memory across flow runs and workers: broadcast, CRDTs, event log, leases, locks.

- :class:`SharedMemory`: a Memory with an in-process L1 that change broadcasts keep fresh.
- Consistency per memory: ``pm.open_memory(url, consistency="strong", quorum=1, timeout=0.5)``
  (see :class:`~prefect_memory.plugins.redis.backend.RedisBackend`).
- CRDTs: :class:`GCounter`, :class:`PNCounter`, :class:`ORSet`, :class:`LWWMap`.
- :class:`EventLog`: append, rebuild from a snapshot, broadcast of appended events.
- :class:`Lease` / :class:`LeaderFollower`: leader election with fencing tokens.
- :class:`DistributedLock` and :class:`DistributedLockManager` (Prefect's lock protocol).

Example:
    >>> from prefect_memory.shared import crdt
    >>> crdt.merge_gcounter({"a": 2, "b": 1}, {"a": 1, "c": 4})
    {'a': 2, 'b': 1, 'c': 4}
"""

from __future__ import annotations

from . import crdt
from .broadcast import Change
from .cached import SharedMemory
from .crdt_types import GCounter, LWWMap, ORSet, PNCounter
from .eventlog import EventLog
from .leader import LeaderFollower, Lease
from .lock import DistributedLock, DistributedLockManager

__all__ = [
    "Change",
    "DistributedLock",
    "DistributedLockManager",
    "EventLog",
    "GCounter",
    "LWWMap",
    "LeaderFollower",
    "Lease",
    "ORSet",
    "PNCounter",
    "SharedMemory",
    "crdt",
]

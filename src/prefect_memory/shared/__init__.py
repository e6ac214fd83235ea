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

from ..lazy_exports import lazy_exports
from . import crdt  # noqa: F401 - merge functions only, no driver: imported at once

#: Public name -> the submodule that defines it (imported on first use: the Redis driver
#: is only needed by what runs on Redis).
_EXPORTS = {
    "Change": "broadcast",
    "SharedMemory": "cached",
    "GCounter": "crdt_types",
    "LWWMap": "crdt_types",
    "ORSet": "crdt_types",
    "PNCounter": "crdt_types",
    "EventLog": "eventlog",
    "LeaderFollower": "leader",
    "Lease": "leader",
    "DistributedLock": "lock",
    "DistributedLockManager": "lock",
    "LockManagerProtocol": "lock_protocol",
}

__all__ = sorted([*_EXPORTS, "crdt"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

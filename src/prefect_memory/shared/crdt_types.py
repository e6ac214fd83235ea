"""CRDTs in Redis: every update is one atomic server-side step (HINCRBY or a Lua script).

Each structure has a name, lives in the namespace of the memory it is opened on, and
belongs to a replica (default: a fresh id per object). ``state()`` exports the plain dict
of :mod:`prefect_memory.shared.crdt`; ``merge(state)`` folds in the state of the same
structure kept elsewhere (another Redis, a file, a message), atomically.

Example:
    >>> GCounter.kind, PNCounter.kind, ORSet.kind, LWWMap.kind
    ('gcounter', 'pncounter', 'orset', 'lwwmap')
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import msgpack

from ..codecs import Codec
from ..errors import ConfigError
from ..memory import Memory
from ..plugins.redis.scripts import LuaScript
from . import crdt
from ._redis import namespace_of, object_key, redis_backend

_packb = msgpack.Packer(use_bin_type=False).pack  # Redis's cmsgpack knows no bin type

_READ = LuaScript("""
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
""")
# KEYS: G-Counter hashes; ARGV[i]: msgpack {replica: count} for KEYS[i]. Keeps the maximum.
_MERGE_MAX = LuaScript("""
for i = 1, #KEYS do
  for replica, n in pairs(cmsgpack.unpack(ARGV[i])) do
    if n > tonumber(redis.call('HGET', KEYS[i], replica) or '0') then
      redis.call('HSET', KEYS[i], replica, n)
    end
  end
end
return 1
""")
# KEYS: adds (element -> msgpack tags), removed tags (set), counters (replica -> n).
_OR_ADD = LuaScript("""
for i = 2, #ARGV do
  local tag = ARGV[1] .. ':' .. redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local tags = cur and cmsgpack.unpack(cur) or {}
  tags[#tags + 1] = tag
  redis.call('HSET', KEYS[1], ARGV[i], cmsgpack.pack(tags))
end
return 1
""")
_OR_REMOVE = LuaScript("""
local removed = 0
for i = 1, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    for _, tag in ipairs(cmsgpack.unpack(cur)) do redis.call('SADD', KEYS[2], tag) end
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
""")
_OR_MERGE = LuaScript("""
local s = cmsgpack.unpack(ARGV[1])
local gone = {}
local function seen(tag)  -- keep this store's counters ahead of every tag it holds
  local replica, n = string.match(tag, '^(.*):(%d+)$')
  if replica and tonumber(n) > tonumber(redis.call('HGET', KEYS[3], replica) or '0') then
    redis.call('HSET', KEYS[3], replica, n)
  end
end
for _, tag in ipairs(s.removed or {}) do
  gone[tag] = true
  redis.call('SADD', KEYS[2], tag)
  seen(tag)
end
if next(gone) then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local tags, keep = cmsgpack.unpack(all[i + 1]), {}
    for _, tag in ipairs(tags) do if not gone[tag] then keep[#keep + 1] = tag end end
    if #keep == 0 then
      redis.call('HDEL', KEYS[1], all[i])
    elseif #keep < #tags then
      redis.call('HSET', KEYS[1], all[i], cmsgpack.pack(keep))
    end
  end
end
for element, tags in pairs(s.adds or {}) do
  local cur = redis.call('HGET', KEYS[1], element)
  local list, have, changed = cur and cmsgpack.unpack(cur) or {}, {}, false
  for _, tag in ipairs(list) do have[tag] = true end
  for _, tag in ipairs(tags) do
    if not have[tag] and redis.call('SISMEMBER', KEYS[2], tag) == 0 then
      list[#list + 1] = tag
      have[tag] = true
      changed = true
    end
    seen(tag)
  end
  if changed then redis.call('HSET', KEYS[1], element, cmsgpack.pack(list)) end
end
return 1
""")
# KEYS[1]: key -> msgpack {ts, replica, deleted, value bytes}; ARGV[1]: msgpack {key: entry}.
# Returns how many entries won.
_LWW_PUT = LuaScript("""
local function lt(a, b)  -- bytewise a < b (no locale)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function newer(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  if a[2] ~= b[2] then return lt(b[2], a[2]) end
  return lt(b[4] or '', a[4] or '')
end
local won = 0
for key, packed in pairs(cmsgpack.unpack(ARGV[1])) do
  local cur = redis.call('HGET', KEYS[1], key)
  if not cur or newer(cmsgpack.unpack(packed), cmsgpack.unpack(cur)) then
    redis.call('HSET', KEYS[1], key, packed)
    won = won + 1
  end
end
return won
""")


class _Crdt:
    """What every CRDT shares: where it lives, its replica id, reading its hashes."""

    kind: ClassVar[str] = ""
    parts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, memory: Memory | str, name: str, *, replica: str | None = None) -> None:
        self.backend = redis_backend(memory)
        self.namespace = namespace_of(memory)
        self.name = name
        self.codec: Codec = memory.codec if isinstance(memory, Memory) else Codec()
        if replica is not None and (not isinstance(replica, str) or not replica):
            raise ConfigError(f"replica must be a non-empty str, got {replica!r}")
        self.replica = replica or uuid.uuid4().hex[:12]
        base = object_key(self.backend, self.namespace, self.kind, name)
        self.keys = [base + part for part in self.parts]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, replica={self.replica!r})"

    def _hashes(self, count: int | None = None) -> list[dict[str, bytes]]:
        keys = self.keys[: count or len(self.keys)]
        out = []
        for flat in self.backend.run_script(_READ, keys):
            out.append({k.decode(): v for k, v in zip(flat[::2], flat[1::2], strict=True)})
        return out

    def clear(self) -> None:
        """Delete the structure (every replica's part) from the store."""
        self.backend.execute("DEL", *self.keys, route=self.keys[0])


class GCounter(_Crdt):
    """A grow-only counter: each replica adds to its own slot; the value is their sum.

    Args:
        memory: A Memory on Redis (or a ``redis://`` URL); its namespace holds the counter.
        name: The counter's name in that namespace.
        replica: This writer's id (default: unique per object).
    """

    kind = "gcounter"
    parts = ("p",)

    def increment(self, amount: int = 1) -> int:
        """Add ``amount`` (>= 0) to this replica's slot; return the slot's new count."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ConfigError(f"a G-Counter only grows: amount must be an int >= 0, got {amount!r}")
        return int(self.backend.execute("HINCRBY", self.keys[0], self.replica, amount,
                                        route=self.keys[0]))  # fmt: skip

    def state(self) -> crdt.GCounterState:
        """``{replica: count}``."""
        return {r: int(v) for r, v in sorted(self._hashes()[0].items())}

    def value(self) -> int:
        """The sum over the replicas."""
        return crdt.gcounter_value(self.state())

    def merge(self, state: Mapping[str, int]) -> None:
        """Fold in a G-Counter state from elsewhere (per-replica maximum, atomically)."""
        self.backend.run_script(_MERGE_MAX, self.keys, [_packb(dict(state))])


class PNCounter(_Crdt):
    """A counter that goes both ways: two G-Counters, increments minus decrements."""

    kind = "pncounter"
    parts = ("p", "n")

    def increment(self, amount: int = 1) -> None:
        """Add ``amount`` (negative: subtract)."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ConfigError(f"amount must be an int, got {amount!r}")
        key = self.keys[0] if amount >= 0 else self.keys[1]
        self.backend.execute("HINCRBY", key, self.replica, abs(amount), route=key)

    def decrement(self, amount: int = 1) -> None:
        """Subtract ``amount``."""
        self.increment(-amount)

    def state(self) -> crdt.PNCounterState:
        """``{"p": {replica: n}, "n": {replica: n}}``."""
        p, n = self._hashes()
        return {"p": {r: int(v) for r, v in sorted(p.items())},
                "n": {r: int(v) for r, v in sorted(n.items())}}  # fmt: skip

    def value(self) -> int:
        """Increments minus decrements over every replica."""
        return crdt.pncounter_value(self.state())

    def merge(self, state: Mapping[str, Any]) -> None:
        """Fold in a PN-Counter state from elsewhere (atomically)."""
        args = [_packb(dict(state.get("p", {}))), _packb(dict(state.get("n", {})))]
        self.backend.run_script(_MERGE_MAX, self.keys, args)


class ORSet(_Crdt):
    """An observed-remove set of strings where a concurrent add wins over a remove."""

    kind = "orset"
    parts = ("a", "r", "c")

    def add(self, *elements: str) -> None:
        """Add ``elements`` (each add gets a fresh tag of this replica)."""
        if elements:
            self.backend.run_script(_OR_ADD, self.keys, [self.replica, *_strings(elements)])

    def remove(self, *elements: str) -> int:
        """Remove ``elements`` as observed now; return how many were present."""
        if not elements:
            return 0
        return int(self.backend.run_script(_OR_REMOVE, self.keys, _strings(elements)))

    def members(self) -> set[str]:
        """The elements in the set."""
        adds = self._hashes(1)[0]
        return set(adds)

    def __contains__(self, element: object) -> bool:
        return isinstance(element, str) and bool(
            self.backend.execute("HEXISTS", self.keys[0], element, route=self.keys[0])
        )

    def state(self) -> crdt.ORSetState:
        """``{"adds": {element: [tags]}, "removed": [tags]}``."""
        adds = self._hashes(1)[0]
        removed = self.backend.execute("SMEMBERS", self.keys[1], route=self.keys[0])
        return {
            "adds": {e: sorted(t.decode() for t in msgpack.unpackb(v, raw=True))
                     for e, v in sorted(adds.items())},
            "removed": sorted(t.decode() for t in removed),
        }  # fmt: skip

    def merge(self, state: Mapping[str, Any]) -> None:
        """Fold in an OR-Set state from elsewhere (atomically)."""
        payload = {"adds": dict(state.get("adds", {})), "removed": list(state.get("removed", ()))}
        self.backend.run_script(_OR_MERGE, self.keys, [_packb(payload)])


class LWWMap(_Crdt):
    """A map where the last write of a key wins (time, then replica id, breaks ties).

    Times are this machine's clock (``time.time()``) unless ``ts=`` is given: keep the
    clocks of the writers in sync, or pass a logical clock.
    """

    kind = "lwwmap"
    parts = ("m",)

    def _put(self, entries: Mapping[str, list[Any]]) -> int:
        packed = {
            key: _packb([float(ts), replica, bool(deleted), b"" if deleted else value])
            for key, (ts, replica, deleted, value) in entries.items()
        }
        return int(self.backend.run_script(_LWW_PUT, self.keys, [_packb(packed)]))

    def set(self, key: str, value: Any, *, ts: float | None = None) -> bool:
        """Write ``key``; return whether this write won (a later one may already be there)."""
        stamp = time.time() if ts is None else ts
        return self._put({key: [stamp, self.replica, False, self.codec.encode(value)]}) == 1

    def delete(self, key: str, *, ts: float | None = None) -> bool:
        """Delete ``key`` (a tombstone, so an older write cannot bring it back)."""
        stamp = time.time() if ts is None else ts
        return self._put({key: [stamp, self.replica, True, None]}) == 1

    def _entries(self) -> dict[str, list[Any]]:
        out = {}
        for key, packed in self._hashes()[0].items():
            ts, replica, deleted, value = msgpack.unpackb(packed, raw=True)
            out[key] = [ts, replica.decode(), bool(deleted),
                        None if deleted else self.codec.decode(value)]  # fmt: skip
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self.value().get(key, default)

    def value(self) -> dict[str, Any]:
        """The live keys and their values."""
        return crdt.lww_value(self._entries())

    def state(self) -> crdt.LWWState:
        """``{key: [timestamp, replica, deleted, value]}`` (tombstones included)."""
        return {k: v for k, v in sorted(self._entries().items())}

    def merge(self, state: Mapping[str, Any]) -> None:
        """Fold in an LWW-Map state from elsewhere (per key, the newest write wins)."""
        self._put({
            key: [ts, replica, deleted, None if deleted else self.codec.encode(value)]
            for key, (ts, replica, deleted, value) in state.items()
        })  # fmt: skip


def _strings(elements: Iterable[Any]) -> list[str]:
    out = []
    for element in elements:
        if not isinstance(element, str) or not element:
            raise ConfigError(f"OR-Set elements are non-empty strings, got {element!r}")
        out.append(element)
    return out


__all__ = ["GCounter", "LWWMap", "ORSet", "PNCounter"]

"""The primitive under leases and locks: ``SET NX PX`` plus a fencing token from ``INCR``.

A term starts when a holder takes a free name: the fence counter is incremented and the
new value is the term's token, greater than every token issued before. The holder may
renew (or re-take) its own term, which keeps the token; once the term lapses, the next
holder gets a greater token, so a write carrying an older one can be refused.

Example:
    >>> from prefect_memory.plugins.redis import RedisBackend
    >>> Terms(RedisBackend("redis://h:6379/0"), "pm:{x/lock/y}:").keys
    ['pm:{x/lock/y}:term', 'pm:{x/lock/y}:fence']
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..plugins.redis.backend import RedisBackend
from ..plugins.redis.scripts import LuaScript
from .lock_protocol import Release

"""What ending a term found: the holder's term (now ended), no term, or another term."""

# KEYS: term (msgpack {holder, token}), fence counter. ARGV: holder, ms. Returns the token.
_ACQUIRE = LuaScript("""
local cur = redis.call('GET', KEYS[1])
if not cur then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], cmsgpack.pack({ARGV[1], token}), 'PX', ARGV[2])
  return token
end
local term = cmsgpack.unpack(cur)
if term[1] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return term[2]
end
return false
""")
# KEYS: term. ARGV: holder, token, ms. 1 when renewed, 0 when the term is not ours.
_RENEW = LuaScript("""
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local term = cmsgpack.unpack(cur)
if term[1] ~= ARGV[1] or term[2] ~= tonumber(ARGV[2]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""")
# KEYS: term. ARGV: holder (token optional). 1: released; 0: no term (free); -1: another
# term (another holder's, or with a token given, another term of this holder's). One script, so
# that "free" and "another's" are told apart atomically with the delete.
_RELEASE = LuaScript("""
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local term = cmsgpack.unpack(cur)
if term[1] ~= ARGV[1] or (ARGV[2] and term[2] ~= tonumber(ARGV[2])) then return -1 end
redis.call('DEL', KEYS[1])
return 1
""")
_OUTCOMES: dict[int, Release] = {1: "released", 0: "free", -1: "other"}
# KEYS: term, fence counter. Returns {holder, token, pttl} or {false, last token, -2}.
_READ = LuaScript("""
local cur = redis.call('GET', KEYS[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if not cur then return {false, last, -2} end
local term = cmsgpack.unpack(cur)
return {term[1], term[2], redis.call('PTTL', KEYS[1])}
""")


class Terms:
    """Terms of one name in Redis (``keys[0]``: the term, ``keys[1]``: the fence counter)."""

    backend: RedisBackend
    keys: list[str]

    def __init__(self, backend: RedisBackend, base: str) -> None:
        self.backend = backend
        self.keys = [base + "term", base + "fence"]

    def acquire(self, holder: str, seconds: float) -> int | None:
        """Start (or renew) ``holder``'s term; its token, or ``None`` when another holds it."""
        token = self.backend.run_script(_ACQUIRE, self.keys, [holder, _ms(seconds)])
        return None if token is None else int(token)

    def renew(self, holder: str, token: int, seconds: float) -> bool:
        """Push the end of ``holder``'s term ``token``; ``False`` when it is over."""
        args = [holder, token, _ms(seconds)]
        return bool(self.backend.run_script(_RENEW, self.keys[:1], args))

    def release(self, holder: str, token: int | None = None) -> bool:
        """End ``holder``'s term (``token``: only that term); whether it was ours."""
        return self.end(holder, token) == "released"

    def end(self, holder: str, token: int | None = None) -> Release:
        """End ``holder``'s term (``token``: only that term) and say what was found.

        Returns:
            ``"released"`` (it was ours), ``"free"`` (no term: lapsed or ended already) or
            ``"other"`` (another holder's term, or another term than ``token``).
        """
        args: list[Any] = [holder] if token is None else [holder, token]
        return _OUTCOMES[int(self.backend.run_script(_RELEASE, self.keys[:1], args))]

    def current(self) -> tuple[str | None, int, float | None]:
        """``(holder, token, seconds left)`` of the term, or ``(None, last token, None)``."""
        holder, token, pttl = self.backend.run_script(_READ, self.keys)
        if not holder:
            return None, int(token or 0), None
        name = holder.decode() if isinstance(holder, bytes) else str(holder)
        return name, int(token), max(int(pttl), 0) / 1000


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def pack(value: Any) -> bytes:
    """msgpack without the bin type (what Redis's cmsgpack reads)."""
    return msgpack.packb(value, use_bin_type=False)


__all__ = ["Terms", "pack"]

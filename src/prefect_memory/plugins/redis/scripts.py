"""The Lua scripts of the Redis backend (one call per batch) and their SHA1 handling.

Every script gets ``P:{N}:`` (key prefix, namespace token as a Cluster hash tag) as its
only declared key, which routes it to the node of the namespace's slot, and derives the
entry and tag keys from it. Values and metadata travel as one msgpack blob.

Example:
    >>> script = LuaScript("return 1")
    >>> script.sha
    'e0e1f9fabfc9d4800c877a703b823ac0578ff8db'
"""

from __future__ import annotations

import hashlib

#: Longest expiry the scripts write, in milliseconds from ``now`` (about 317 years: above
#: :data:`~prefect_memory.keys.MAX_TTL`, far below what ``PEXPIRE`` and a Lua number
#: formatted as a Redis argument can hold). A put beyond it is refused before any write.
MAX_EXPIRY_MS = 10**13

# Shared by every script: the bound above, and the test of an expiry ``x`` (epoch seconds or
# '') and a sliding ttl ``s`` (seconds or '') before anything is written.
_LUA_LIMITS = f"""
local MAXMS = {MAX_EXPIRY_MS}
local function bad_expiry(x, s, now)
  if x ~= '' then
    local ex = tonumber(x)
    if not ex then return true end
    local ms = (ex - now) * 1000
    if ms ~= ms or ms > MAXMS then return true end
  end
  if s ~= '' then
    local sl = tonumber(s)
    if not sl or sl ~= sl or sl <= 0 or sl * 1000 > MAXMS then return true end
  end
  return false
end
"""


# Shared by the scripts of a namespace's keys: a namespace whose layout record
# ``P:{N}:layout`` exists is not (or no longer) in layout 1; a layout-1 client must not read
# or write it (the record is in the slot of ``P:{N}:``; a bucket's base ``P:{N:i}:`` never
# has one, so the check costs layout 2 one missing-key lookup).
_LUA_LAYOUT = """
do
  local lv = redis.call('HGET', KEYS[1] .. 'layout', 'v')
  if lv then return redis.error_reply('ERR prefect-memory: layout ' .. lv) end
end
"""


class LuaScript:
    """A Lua script and its SHA1 (EVALSHA first, SCRIPT LOAD on NOSCRIPT).

    Args:
        source: The Lua source.
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"LuaScript({self.sha[:10]})"


# Shared by the scripts: purge a tag index of expired members and give it the TTL of its
# longest-lived member (persistent when one has no expiry, or one beyond the bound that
# another writer left there; an empty set is gone).
_LUA_FIX_TAG = (
    _LUA_LIMITS
    + """
local function fix_tag(tk, now)
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
  local top = redis.call('ZRANGE', tk, -1, -1, 'WITHSCORES')
  if #top == 0 then return end
  local ms = math.ceil((tonumber(top[2]) - now) * 1000)
  if ms > MAXMS then
    redis.call('PERSIST', tk)
  else
    redis.call('PEXPIRE', tk, math.max(1, ms))
  end
end
"""
)

# Shared by the writing scripts: the opt-in change message (ARGV[3] = channel, ARGV[4] =
# namespace, ARGV[5] = source). One PUBLISH per batch: msgpack [namespace, source, [keys],
# [versions]], version 0 for a key the batch deleted.
_LUA_NOTIFY = """
local notify = ARGV[3]
local ckeys, cvers, cn = {}, {}, 0
local function changed(key, version)
  cn = cn + 1
  ckeys[cn], cvers[cn] = key, version
end
local function publish()
  if cn > 0 then
    redis.call('PUBLISH', notify, cmsgpack.pack({ARGV[4], ARGV[5], ckeys, cvers}))
  end
end
"""

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = msgpack array, either
#   {F+1, m, n, a, x, s, key1, value1, key2, value2, ...}   (metadata shared by the batch)
#   {F, key1, value1, m, n, a, x, s, key2, ...}             (metadata per record)
# F = 2 writes only keys without a live entry (put-if-absent) and returns them; F = 0 upserts
# and returns 1.
# m = msgpack {created, updated, ttl|false, sliding, {tags}, version}; x = expires_at or '';
# s = the ttl of a sliding entry or ''. Optional ARGV[3..5] = channel, namespace, source:
# then the script PUBLISHes one change message for the whole batch (see _LUA_NOTIFY).
# Every x and s is checked (bad_expiry) before the first write: a batch with one expiry
# that PEXPIRE cannot take is refused whole, so it never leaves an entry without its TTL
# or outside its tag index.
_LUA_PUT = (
    _LUA_FIX_TAG
    + _LUA_LAYOUT
    + _LUA_NOTIFY
    + """
local call, tonumber, unpackm, packm = redis.call, tonumber, cmsgpack.unpack, cmsgpack.pack
local now = tonumber(ARGV[1])
local t = unpackm(ARGV[2])
local ekey, tkey = KEYS[1] .. 'e:', KEYS[1] .. 't:'
local size = #t
local shared = t[1] % 2 == 1
local absent = t[1] >= 2
local written = {}
local m, n, a, x, s
local i, step = 2, 7
if shared then
  m, n, a, x, s = t[2], t[3], t[4], t[5], t[6]
  i, step = 7, 2
  if bad_expiry(x, s, now) then
    return redis.error_reply('ERR prefect-memory: expiry out of range: ' .. tostring(x))
  end
else
  for j = 2, size, 7 do
    if bad_expiry(t[j + 5], t[j + 6], now) then
      return redis.error_reply(
        'ERR prefect-memory: expiry out of range for key ' .. tostring(t[j]) .. ': '
        .. tostring(t[j + 5]))
    end
  end
end
local metas = {}
local function meta(packed)  -- unpacked m, with the set of its tags
  local mt = metas[packed]
  if not mt then
    mt = unpackm(packed)
    local set = {}
    for _, tag in ipairs(mt[5]) do set[tag] = true end
    mt.tagset = set
    metas[packed] = mt
  end
  return mt
end
local adds, shrunk = {}, {}
while i <= size do
  local key, v = t[i], t[i + 1]
  if not shared then
    m, n, a, x, s = t[i + 2], t[i + 3], t[i + 4], t[i + 5], t[i + 6]
  end
  i = i + step
  local k = ekey .. key
  local ms = false
  if x ~= '' then ms = math.ceil((x - now) * 1000) end
  local dead = ms and ms <= 0
  local mt = meta(m)
  local old = call('HMGET', k, 'm', 'n', 'a', 'x')
  local wm, wn, wa, ver = m, n, a, mt[6]
  local skip = false
  if absent and old[1] then
    local ox = tonumber(old[4])
    skip = not ox or ox > now  -- a live entry: not ours to write (Lua 5.1: no goto)
  end
  if not skip then
  written[#written + 1] = key
  if old[1] then
    local om = unpackm(old[1])
    local ox = tonumber(old[4])
    if not ox or ox > now then  -- a live entry: keep its history
      ver = om[6] + 1
      wm = packm({om[1], mt[2], mt[3], mt[4], mt[5], ver})
      wn = old[2]
      if tonumber(old[3]) > a then wa = old[3] end
    end
    for _, tag in ipairs(om[5]) do
      if dead or not mt.tagset[tag] then
        call('ZREM', tkey .. tag, key)
        shrunk[tag] = true
      end
    end
    if dead then call('DEL', k) end
  end
  if notify then changed(key, dead and 0 or ver) end
  if not dead then
    call('HSET', k, 'v', v, 'm', wm, 'n', wn, 'a', wa, 'x', x, 's', s)
    if ms then
      call('PEXPIRE', k, ms)
    elseif old[1] then
      call('PERSIST', k)
    end
    local tags = mt[5]
    if #tags > 0 then
      local score = ms and x or '+inf'
      for _, tag in ipairs(tags) do
        local list = adds[tag]
        if not list then
          list = {}
          adds[tag] = list
        end
        list[#list + 1] = score
        list[#list + 1] = key
      end
    end
  end
  end  -- not skip
end
for tag, list in pairs(adds) do
  local tk = tkey .. tag
  local count = #list
  for j = 1, count, 1000 do
    call('ZADD', tk, unpack(list, j, math.min(j + 999, count)))
  end
  fix_tag(tk, now)
end
for tag in pairs(shrunk) do  -- a removed member may have been the longest-lived one
  if not adds[tag] then fix_tag(tkey .. tag, now) end
end
if notify then publish() end
if absent then return written end
return 1
"""
)

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = '1' to count an access; ARGV[3] = msgpack
# array of keys. Returns the msgpack array of {v, m, n, a, x|false, index} of every live key.
# A sliding ttl beyond the bound (left by another writer) is not slid; an m over 4 MiB comes
# back as its length (no value, no access counted).
_LUA_GET = (
    _LUA_LIMITS
    + _LUA_LAYOUT
    + """
local call, tonumber = redis.call, tonumber
local nows = ARGV[1]
local now = tonumber(nows)
local touch = ARGV[2] == '1'
local keys = cmsgpack.unpack(ARGV[3])
local ekey, tkey = KEYS[1] .. 'e:', KEYS[1] .. 't:'
local out = {}
local m = 0
local function read(i, k)
  local h = call('HMGET', k, 'v', 'm', 'n', 'a', 'x', 's')
  if h[1] then
    local x = tonumber(h[5])
    if not x or x > now then
      -- (no parsing of a when it is replaced anyway; a count another client spoiled is 0)
      local n, a = tonumber(h[3]) or 0, now
      if h[2] and #h[2] > 4194304 then
        -- an m over 4 MiB (another client's: ours stay far below) is sent as its length,
        -- which the client refuses naming the key: neither it nor the value leaves here
        h[1], h[2], n, a = '', #h[2], 0, 0
      elseif not touch then
        a = tonumber(h[4])
      else
        n = n + 1
        local sl = tonumber(h[6])
        if sl and bad_expiry('', sl, now) then sl = nil end
        if sl then  -- sliding: push the expiry of the entry and of its tag indexes
          x = now + sl
          local lms = math.ceil(sl * 1000)
          call('HSET', k, 'n', n, 'a', nows, 'x', x)
          call('PEXPIRE', k, lms)
          for _, tag in ipairs(cmsgpack.unpack(h[2])[5]) do
            local tk = tkey .. tag
            call('ZADD', tk, 'XX', x, keys[i])
            local pttl = call('PTTL', tk)
            if pttl >= 0 and pttl < lms then call('PEXPIRE', tk, lms) end
          end
        else
          call('HSET', k, 'n', n, 'a', nows)
        end
      end
      h[3], h[4], h[5], h[6] = n, a, x or false, i
      m = m + 1
      out[m] = h
    end
  end
end
-- A batch of misses (tombstone lookups, a migration's checks) costs one EXISTS per chunk of
-- keys instead of one HMGET per key: chunks where no key exists are skipped. The probing
-- stops at the first chunk whose keys all exist (a batch of hits pays one EXISTS).
local count = #keys
local probe = count >= 64
local i = 1
while i <= count do
  if probe then
    local last = math.min(i + 255, count)
    local names = {}
    for j = i, last do names[j - i + 1] = ekey .. keys[j] end
    local found = call('EXISTS', unpack(names))
    if found > 0 then
      for j = i, last do read(j, names[j - i + 1]) end
    end
    if found >= last - i + 1 then probe = false end
    i = last + 1
  else
    read(i, ekey .. keys[i])
    i = i + 1
  end
end
return cmsgpack.pack(out)
"""
)

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = msgpack array of keys; optional ARGV[3..5]
# as for _LUA_PUT. Returns how many live entries were removed. With items {key, version,
# updated_at} instead of keys: deletes a key only while its live entry is that very write
# (compare-and-delete) and returns the keys deleted.
_LUA_DELETE = (
    _LUA_FIX_TAG
    + _LUA_LAYOUT
    + _LUA_NOTIFY
    + """
local call, tonumber = redis.call, tonumber
local now = tonumber(ARGV[1])
local keys = cmsgpack.unpack(ARGV[2])
local ekey, tkey = KEYS[1] .. 'e:', KEYS[1] .. 't:'
local removed, gone, conditional = 0, {}, false
local shrunk = {}
for i = 1, #keys do
  local key, want = keys[i], nil
  if type(key) == 'table' then  -- {key, version, updated_at}: delete only that write
    key, want, conditional = key[1], key, true
  end
  local k = ekey .. key
  local h = call('HMGET', k, 'm', 'x')
  if h[1] then
    local x = tonumber(h[2])
    local live = not x or x > now
    local mt = cmsgpack.unpack(h[1])
    if not want or (live and mt[6] == want[2] and mt[2] == want[3]) then
      call('DEL', k)
      if live then removed = removed + 1 end
      if want then gone[#gone + 1] = key end
      if notify then changed(key, 0) end
      for _, tag in ipairs(mt[5]) do
        call('ZREM', tkey .. tag, key)
        shrunk[tag] = true
      end
    end
  end
end
for tag in pairs(shrunk) do fix_tag(tkey .. tag, now) end
if notify then publish() end
if conditional then return gone end
return removed
"""
)

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = msgpack array of tags. Returns the keys
# that carry any of them and still exist; purges dead members on the way.
_LUA_TAGGED = (
    _LUA_FIX_TAG
    + _LUA_LAYOUT
    + """
local base = KEYS[1]
local now = tonumber(ARGV[1])
local tags = cmsgpack.unpack(ARGV[2])
local ekey, tkey = base .. 'e:', base .. 't:'
local alive = {}
local out = {}
local m = 0
for _, tag in ipairs(tags) do
  local tk = tkey .. tag
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
  local stale = false
  for _, key in ipairs(redis.call('ZRANGE', tk, 0, -1)) do
    local live = alive[key]
    if live == nil then
      live = redis.call('EXISTS', ekey .. key) == 1
      alive[key] = live
      if live then
        m = m + 1
        out[m] = key
      end
    end
    if not live then
      redis.call('ZREM', tk, key)
      stale = true
    end
  end
  if stale then fix_tag(tk, now) end
end
return out
"""
)

# A batch of a column scan (``RedisBackend.scan_columns``, ``meta_many``). KEYS[1] =
# 'P:{N}:'; ARGV[1] = the largest value returned, in bytes (-1: none); ARGV[2] = the reply's
# budget in bytes; ARGV[3..] = the names of entries after 'P:{N}:e:' (as SCAN found them).
# Returns a flat array, six items per name in its order, for the names up to the one with
# which the m fields and values returned reach the budget (at least one name: the caller
# asks again for the others, so no reply holds much more than the budget): the
# hash fields m, n, a, x (false where missing), the length of v, and v itself only when it
# has at most ARGV[1] bytes (else false). Reads only: no field is interpreted here (the
# client decodes them as it decodes the other reads), and a value over the bound never
# leaves the server, nor does a metadata field larger than any this library writes (another
# client's): an ``m`` over 4 MiB (a thousand tags of the longest kind) is sent as its length
# (a number: the client refuses it), an ``n``, ``a`` or ``x`` over 64 bytes as '?' (not a
# number: read as the scripts read one).
_LUA_COLUMNS = (
    _LUA_LAYOUT
    + """
local call = redis.call
local limit = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
local ekey = KEYS[1] .. 'e:'
local out, o, sent = {}, 0, 0
for i = 3, #ARGV do
  if sent >= budget then break end
  local k = ekey .. ARGV[i]
  local size = call('HSTRLEN', k, 'v')
  local h
  if size <= limit then
    h = call('HMGET', k, 'm', 'n', 'a', 'x', 'v')
  else
    h = call('HMGET', k, 'm', 'n', 'a', 'x')
    h[5] = false
  end
  if h[1] and #h[1] > 4194304 then h[1] = #h[1] end
  for j = 2, 4 do
    if h[j] and #h[j] > 64 then h[j] = '?' end
  end
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = h[1], h[2], h[3], h[4]
  out[o + 5], out[o + 6] = size, h[5]
  o = o + 6
  if type(h[1]) == 'string' then sent = sent + #h[1] end
  if h[5] then sent = sent + size end
end
return out
"""
)

# Layout 2 (see :mod:`.layout`). KEYS[1] = 'P:{N}:layout', the record; ARGV[1] = layout,
# ARGV[2] = buckets. Writes the record when there is none; returns the record as it is
# then, {v, b} (so two clients claiming a namespace agree on one bucket count).
_LUA_CLAIM = """
local rec = KEYS[1]
if redis.call('EXISTS', rec) == 0 then
  redis.call('HSET', rec, 'v', ARGV[1], 'b', ARGV[2])
end
return redis.call('HMGET', rec, 'v', 'b')
"""

# The upgrade's copy into one bucket. KEYS[1] = 'P:{N:i}:' (a bucket's base); ARGV[1] = now;
# ARGV[2] = msgpack array of {key, {field, value, ...}, x, {tags}}: each entry's hash as it
# was in layout 1, written whole (an entry already there, from a copy that was cut short,
# is overwritten by the same fields: a copy can be repeated), its TTL from its ``x`` (an
# entry expired by ``now`` is not copied), and added to the bucket's tag indexes. Returns
# how many entries were written.
_LUA_MOVE_IN = (
    _LUA_FIX_TAG
    + """
local call, tonumber = redis.call, tonumber
local now = tonumber(ARGV[1])
local items = cmsgpack.unpack(ARGV[2])
local ekey, tkey = KEYS[1] .. 'e:', KEYS[1] .. 't:'
local written, touched = 0, {}
for _, item in ipairs(items) do
  local key, fields, x, tags = item[1], item[2], tonumber(item[3]), item[4]
  local ms = false
  if x then ms = math.min(math.ceil((x - now) * 1000), MAXMS) end
  if not ms or ms > 0 then
    local k = ekey .. key
    call('DEL', k)
    for j = 1, #fields, 1000 do
      call('HSET', k, unpack(fields, j, math.min(j + 999, #fields)))
    end
    if ms then call('PEXPIRE', k, ms) end
    for _, tag in ipairs(tags) do
      call('ZADD', tkey .. tag, ms and item[3] or '+inf', key)
      touched[tag] = true
    end
    written = written + 1
  end
end
for tag in pairs(touched) do fix_tag(tkey .. tag, now) end
return written
"""
)

PUT, GET, DELETE, TAGGED = (
    LuaScript(_LUA_PUT), LuaScript(_LUA_GET), LuaScript(_LUA_DELETE), LuaScript(_LUA_TAGGED)
)  # fmt: skip

COLUMNS = LuaScript(_LUA_COLUMNS)

CLAIM, MOVE_IN = LuaScript(_LUA_CLAIM), LuaScript(_LUA_MOVE_IN)

__all__ = [
    "CLAIM",
    "COLUMNS",
    "DELETE",
    "GET",
    "MAX_EXPIRY_MS",
    "MOVE_IN",
    "PUT",
    "TAGGED",
    "LuaScript",
]

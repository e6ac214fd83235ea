"""Redis backend (``redis://host:port/db``, ``rediss://`` for TLS): shared, native expiry.

Layout (``P`` = ``key_prefix``, ``N`` = :func:`~prefect_memory.keys.ns_token` of the namespace):

- ``P:{N}:e:<key>``: one hash per entry with six fields: ``v`` the value; ``m`` the
  metadata fixed by a write, msgpack ``[created, updated, ttl|false, sliding, [tags],
  version]``; and the ones an access changes: ``n`` access count, ``a`` last access,
  ``x`` expires at (``''``: never), ``s`` the ttl of a sliding entry (``''``: not sliding).
  Six fields rather than one per attribute: a read costs Redis one field lookup and one
  reply element per field, and the hot paths are bound by that server time. Expiry is
  native: the hash carries a Redis TTL, so the server removes expired entries itself;
  a sliding entry's TTL is pushed on every touch.
- ``P:{N}:t:<tag>``: the tag index, a sorted set of keys scored by their ``expires_at``
  (``+inf`` without expiry). Every write to it purges the expired members, and the set's
  own TTL is that of its longest-lived member (none while a member never expires), so
  it never grows with dead members. Rewriting or deleting a key removes it from the
  sets of its old tags.

The braces make ``N`` a Redis Cluster hash tag: all keys of a namespace live in one slot,
so the multi-key Lua scripts of a namespace run on one node. Each script gets
``P:{N}:`` as its only declared key (which routes it) and derives the entry and tag keys
from it.

Hot paths are server-side Lua scripts (EVALSHA, reloaded on NOSCRIPT): ``put_many``,
``get_many`` and ``delete_many`` are one call per batch. Keys, values and metadata travel
as one msgpack blob (Redis's Lua has ``cmsgpack``) instead of thousands of command
arguments, and ``get_many`` answers with one msgpack blob too; a batch whose records
share their metadata (as ``Memory.set_many`` makes them) sends it once.

Example:
    >>> from prefect_memory.plugins.redisdb import RedisBackend
    >>> backend = RedisBackend.from_url("redis://:s3cret@cache.local:6380/2", key_prefix="app")
    >>> backend.url, backend.host, backend.port, backend.db, backend.key_prefix
    ('redis://:***@cache.local:6380/2', 'cache.local', 6380, 2, 'app')
    >>> "s3cret" in repr(backend)
    False
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import msgpack

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError, ResponseError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
    from redis.retry import Retry
except ImportError as _err:  # pragma: no cover - the registry turns this into a hint
    raise ImportError(
        "the redis:// backend needs redis-py: pip install 'prefect-memory[redis]'",
        name="redis",
    ) from _err

from ..errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError
from ..keys import glob_match, ns_token
from .base import Backend, Capabilities, Record

#: Options of ``from_url`` (besides ``ssl_*`` ones, which go to redis-py for ``rediss://``).
_OPTIONS = frozenset({"timeout", "key_prefix", "max_connections", "password", "username"})
#: Query parameters of the URL that stay in it for redis-py to parse.
_URL_PASSTHROUGH = frozenset({"db"})
_PREFIX_FORBIDDEN = frozenset("{}*?[]\\^ \t\r\n\x00")
_SCAN_COUNT = 1000

_META = attrgetter(
    "created_at", "updated_at", "last_access", "access_count", "expires_at", "ttl",
    "sliding", "tags", "version",
)  # fmt: skip
_packb = msgpack.Packer(use_bin_type=False).pack  # Redis's cmsgpack knows no bin type
_unpackb = msgpack.unpackb

# -- Lua ------------------------------------------------------------------------------------
# Shared by the scripts: purge a tag index of expired members and give it the TTL of its
# longest-lived member (persistent when one has no expiry; an empty set is gone).
_LUA_FIX_TAG = """
local function fix_tag(tk, now)
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
  local top = redis.call('ZRANGE', tk, -1, -1, 'WITHSCORES')
  if #top == 0 then return end
  local best = tonumber(top[2])
  if best == math.huge then
    redis.call('PERSIST', tk)
  else
    redis.call('PEXPIRE', tk, math.max(1, math.ceil((best - now) * 1000)))
  end
end
"""

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = msgpack array, either
#   {1, m, n, a, x, s, key1, value1, key2, value2, ...}   (metadata shared by the batch)
#   {0, key1, value1, m, n, a, x, s, key2, ...}             (metadata per record)
# m = msgpack {created, updated, ttl|false, sliding, {tags}, version}; x = expires_at or '';
# s = the ttl of a sliding entry or ''.
_LUA_PUT = (
    _LUA_FIX_TAG
    + """
local call, tonumber, unpackm, packm = redis.call, tonumber, cmsgpack.unpack, cmsgpack.pack
local now = tonumber(ARGV[1])
local t = unpackm(ARGV[2])
local ekey, tkey = KEYS[1] .. 'e:', KEYS[1] .. 't:'
local size = #t
local shared = t[1] == 1
local m, n, a, x, s
local i, step = 2, 7
if shared then
  m, n, a, x, s = t[2], t[3], t[4], t[5], t[6]
  i, step = 7, 2
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
  local wm, wn, wa = m, n, a
  if old[1] then
    local om = unpackm(old[1])
    local ox = tonumber(old[4])
    if not ox or ox > now then  -- a live entry: keep its history
      wm = packm({om[1], mt[2], mt[3], mt[4], mt[5], om[6] + 1})
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
return 1
"""
)

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = '1' to count an access; ARGV[3] = msgpack
# array of keys. Returns the msgpack array of {v, m, n, a, x|false, index} of every live key.
_LUA_GET = """
local call, tonumber = redis.call, tonumber
local nows = ARGV[1]
local now = tonumber(nows)
local touch = ARGV[2] == '1'
local keys = cmsgpack.unpack(ARGV[3])
local ekey, tkey = KEYS[1] .. 'e:', KEYS[1] .. 't:'
local out = {}
local m = 0
for i = 1, #keys do
  local k = ekey .. keys[i]
  local h = call('HMGET', k, 'v', 'm', 'n', 'a', 'x', 's')
  if h[1] then
    local x = tonumber(h[5])
    if not x or x > now then
      local n, a = tonumber(h[3]), now  -- (no parsing of a when it is replaced anyway)
      if not touch then
        a = tonumber(h[4])
      else
        n = n + 1
        local sl = tonumber(h[6])
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
return cmsgpack.pack(out)
"""

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = msgpack array of keys. Returns how many
# live entries were removed.
_LUA_DELETE = (
    _LUA_FIX_TAG
    + """
local call, tonumber = redis.call, tonumber
local now = tonumber(ARGV[1])
local keys = cmsgpack.unpack(ARGV[2])
local ekey, tkey = KEYS[1] .. 'e:', KEYS[1] .. 't:'
local removed = 0
local shrunk = {}
for i = 1, #keys do
  local key = keys[i]
  local k = ekey .. key
  local h = call('HMGET', k, 'm', 'x')
  if h[1] then
    call('DEL', k)
    local x = tonumber(h[2])
    if not x or x > now then removed = removed + 1 end
    for _, tag in ipairs(cmsgpack.unpack(h[1])[5]) do
      call('ZREM', tkey .. tag, key)
      shrunk[tag] = true
    end
  end
end
for tag in pairs(shrunk) do fix_tag(tkey .. tag, now) end
return removed
"""
)

# KEYS[1] = 'P:{N}:'; ARGV[1] = now; ARGV[2] = msgpack array of tags. Returns the keys
# that carry any of them and still exist; purges dead members on the way.
_LUA_TAGGED = (
    _LUA_FIX_TAG
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


class _Secret:
    """A password that never shows in a repr or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('**********')"

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state


class _Script:
    """A Lua script and its SHA1 (EVALSHA first, SCRIPT LOAD on NOSCRIPT)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


_PUT, _GET, _DELETE, _TAGGED = (
    _Script(_LUA_PUT), _Script(_LUA_GET), _Script(_LUA_DELETE), _Script(_LUA_TAGGED)
)  # fmt: skip


#: Bumped in a forked child: a client made before the fork holds the parent's sockets.
_forks = [0]
if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


class _Client:
    """The lazily built client of a backend: a redis-py pool and the connections it lent.

    The hot path skips redis-py's per-command machinery (pool checkout with a readiness
    poll, retries, metrics hooks: several times the cost of the command itself on
    loopback). A connection is borrowed from ``idle`` (or from the pool when none is
    idle), used by one thread for one request, and put back; the pool still creates,
    authenticates, bounds and disconnects every connection.
    """

    __slots__ = ("fork", "idle", "pool", "slots")

    def __init__(self, pool: redis.ConnectionPool, max_connections: int | None) -> None:
        self.pool = pool
        self.idle: list[Any] = []
        self.fork = _forks[0]
        # Connections are kept in ``idle`` rather than given back to the pool, so the pool
        # cannot bound them: a semaphore does (a caller waits up to the timeout for one).
        self.slots = (
            None if max_connections is None else threading.BoundedSemaphore(max_connections)
        )

    def drop(self, conn: Any) -> None:
        """Forget a connection whose state is unknown (disconnect it, give it back)."""
        with contextlib.suppress(Exception):
            conn.disconnect()
        with contextlib.suppress(Exception):
            self.pool.release(conn)

    def drop_idle(self) -> None:
        while self.idle:
            try:
                conn = self.idle.pop()
            except IndexError:  # another thread took the last one
                return
            self.drop(conn)


def _exchange(
    conn: Any, args: tuple[Any, ...], script: _Script | None, pipeline: list[tuple[Any, ...]] | None
) -> Any:
    """One request on ``conn``: a command, a script (loaded on NOSCRIPT) or a pipeline."""
    if pipeline is not None:
        conn.send_packed_command(conn.pack_commands(pipeline))
        replies: list[Any] = []
        error: ResponseError | None = None
        for _ in pipeline:  # read every reply, even after an error one
            try:
                replies.append(conn.read_response())
            except ResponseError as err:
                error = error or err
                replies.append(None)
        if error is not None:
            raise error
        return replies
    if script is None:
        conn.send_command(*args)
        return conn.read_response()
    try:
        conn.send_command("EVALSHA", script.sha, *args)
        return conn.read_response()
    except NoScriptError:
        conn.send_command("SCRIPT", "LOAD", script.source)
        conn.read_response()
        conn.send_command("EVALSHA", script.sha, *args)
        return conn.read_response()


def _redis_glob(pattern: str | None) -> str:
    """A Redis MATCH glob matching at least every key the fnmatch ``pattern`` matches.

    ``?`` matches one byte in Redis but one character in fnmatch, and the bracket syntaxes
    differ, so ``?`` widens to ``*`` and a bracket or backslash ends the pattern with ``*``;
    keys are filtered with the exact glob afterwards.
    """
    if not pattern:
        return "*"
    out: list[str] = []
    for ch in pattern:
        if ch in "*?[":
            if not out or out[-1] != "*":
                out.append("*")
            if ch == "[":
                break
        elif ch in "\\]^":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


class RedisBackend(Backend):
    """Entries in Redis: hashes with native TTL, tag indexes, Lua scripts per batch.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS).
        timeout: Seconds for connecting and for each reply; a dead server raises
            :class:`~prefect_memory.errors.BackendUnavailable` within it.
        key_prefix: First part of every Redis key (no braces, glob characters or spaces).
        max_connections: Bound of the connection pool (callers wait up to ``timeout`` for a
            free connection); ``None`` for no bound.
        password: Password (``str`` or pydantic ``SecretStr``); wins over one in the URL.
        username: ACL user name; wins over one in the URL.
        ssl_options: ``ssl_*`` keyword arguments of redis-py, for ``rediss://`` only.
    """

    scheme: ClassVar[str] = "redis"
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_ttl=True, server_scripts=True, pushdown=True
    )
    _transient = ("_client",)

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        timeout: float = 5.0,
        key_prefix: str = "pm",
        max_connections: int | None = None,
        password: Any = None,
        username: str | None = None,
        ssl_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss"):
            raise ConfigError(f"a Redis URL starts with redis:// or rediss://, got {scheme!r}")
        try:
            self.host = parts.hostname or "127.0.0.1"
            self.port = parts.port or 6379
        except ValueError as err:
            raise ConfigError(f"invalid port in the Redis URL: {err}") from None
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(k for k in query if k not in _URL_PASSTHROUGH and not k.startswith("ssl"))
        if unknown:
            raise ConfigError(f"unknown query options in the Redis URL: {', '.join(unknown)}")
        if scheme == "redis" and (ssl_options or any(k.startswith("ssl") for k in query)):
            raise ConfigError("ssl_* options need a rediss:// URL")
        db_text = query.get("db") or parts.path.strip("/") or "0"
        try:
            self.db = int(db_text)
        except ValueError:
            raise ConfigError(f"the Redis database must be a number, got {db_text!r}") from None
        self.timeout = _positive(timeout, "timeout")
        if max_connections is not None and (
            not isinstance(max_connections, int) or isinstance(max_connections, bool)
            or max_connections < 1
        ):  # fmt: skip
            raise ConfigError(f"max_connections must be a positive int, got {max_connections!r}")
        self.max_connections = max_connections
        self.key_prefix = _check_prefix(key_prefix)
        secret = password if password is not None else (
            unquote(parts.password) if parts.password else None
        )  # fmt: skip
        if secret is not None and not isinstance(secret, str):
            if not callable(getattr(secret, "get_secret_value", None)):
                raise ConfigError(
                    f"password must be a str or a SecretStr, got {type(secret).__name__}"
                )
            secret = secret.get_secret_value()
        self._password = _Secret(secret) if secret else None
        user = username if username is not None else (
            unquote(parts.username) if parts.username else None
        )  # fmt: skip
        self.username = user or None
        self.ssl_options = dict(ssl_options or {})
        # The URL without credentials: shown by repr, and what the pool is built from.
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = f"{host}:{self.port}"
        shown = (self.username or "") + (":***" if self._password else "")
        shown_query = urlencode(
            [(k, "***" if "password" in k else v) for k, v in query.items() if k != "db"]
        )
        self.url = urlunsplit(
            (scheme, f"{shown}@{netloc}" if shown else netloc, f"/{self.db}", shown_query, "")
        )
        passthrough = urlencode({k: v for k, v in query.items() if k != "db"})
        self._pool_url = urlunsplit((scheme, netloc, f"/{self.db}", passthrough, ""))
        self._client: _Client | None = None
        self._bases: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Build from ``redis://...`` or ``rediss://...`` and keyword options.

        ``timeout``, ``key_prefix`` and ``max_connections`` may also be given in the query
        string (keyword options win).

        Raises:
            ConfigError: An option is unknown or invalid (every unknown one is named).
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        kept = []
        for name, value in query:
            if name in ("timeout", "key_prefix", "max_connections"):
                options.setdefault(name, _from_query(name, value))
            else:
                kept.append((name, value))
        url = urlunsplit(parts._replace(query=urlencode(kept)))
        ssl_options = {k: options.pop(k) for k in list(options) if k.startswith("ssl_")}
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown redis:// options: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_OPTIONS))}, ssl_* for rediss://)"
            )
        return cls(url, ssl_options=ssl_options, **options)

    # -- connections ----------------------------------------------------------------------
    def _connect(self) -> _Client:
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": self.timeout,
            "socket_timeout": self.timeout,
            # Retries are ours (see _run): one on a broken connection, none on a timeout.
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            **self.ssl_options,
        }
        if self._password is not None:
            kwargs["password"] = self._password.get_secret_value()
        if self.username:
            kwargs["username"] = self.username
        return _Client(
            redis.ConnectionPool.from_url(self._pool_url, **kwargs), self.max_connections
        )

    def _conn(self) -> _Client:
        client = self._client
        if client is None or client.fork != _forks[0]:
            with self._lock:
                client = self._client
                if client is None or client.fork != _forks[0]:
                    # After a fork the parent's sockets are not ours: start afresh (the
                    # pool of redis-py resets itself in the child too).
                    client = self._client = self._connect()
        return client

    def _run(
        self,
        *args: Any,
        script: _Script | None = None,
        pipeline: list[tuple[Any, ...]] | None = None,
    ) -> Any:
        """Send one command (or the commands of ``pipeline``) and read the reply (replies).

        ``script``: ``args`` are the arguments of EVALSHA after the SHA; the script is
        loaded on NOSCRIPT. A broken connection (server restarted) is retried once on a
        fresh one; redis-py errors are translated at the boundary.
        """
        client = self._conn()
        slots = client.slots
        if slots is not None and not slots.acquire(timeout=self.timeout):
            raise BackendUnavailable(
                f"Redis at {self.host}:{self.port}: no free connection within {self.timeout}s "
                f"(max_connections={self.max_connections})"
            )
        try:
            for attempt in (0, 1):
                try:
                    conn = client.idle.pop()
                except IndexError:
                    try:
                        conn = client.pool.get_connection()
                    except RedisError as err:
                        raise self._error(err) from err
                try:
                    reply = _exchange(conn, args, script, pipeline)
                except ResponseError as err:  # the whole reply was read: the connection is fine
                    client.idle.append(conn)
                    raise self._error(err) from err
                except _RedisConnectionError as err:
                    client.drop(conn)
                    client.drop_idle()  # their server is likely gone too
                    if attempt:
                        raise self._error(err) from err
                    continue
                except RedisError as err:
                    client.drop(conn)
                    raise self._error(err) from err
                except BaseException:
                    client.drop(conn)  # interrupted mid-request: unknown state
                    raise
                client.idle.append(conn)
                return reply
        finally:
            if slots is not None:
                slots.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, err: RedisError) -> BackendError:
        where = f"Redis at {self.host}:{self.port}"
        if isinstance(err, _RedisTimeoutError):
            return BackendTimeout(f"{where} did not answer within {self.timeout}s: {err}")
        if isinstance(err, _RedisConnectionError):
            return BackendUnavailable(f"{where} is unreachable: {err}")
        return BackendError(f"{where}: {type(err).__name__}: {err}")

    def _base(self, ns: str) -> str:
        base = self._bases.get(ns)
        if base is None:
            if len(self._bases) > 4096:
                self._bases.clear()
            base = self._bases[ns] = f"{self.key_prefix}:{{{ns_token(ns)}}}:"
        return base

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.idle.clear()
            with contextlib.suppress(RedisError, OSError):
                client.pool.disconnect()

    def ping(self) -> None:
        self._run("PING")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_bases"] = {}
        return state

    # -- protocol -------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        if not keys:
            return {}
        if not isinstance(keys, (list, tuple)):
            keys = list(keys)
        raw = self._run(1, self._base(ns), now, b"1" if touch else b"0", _packb(keys), script=_GET)
        out: dict[str, Record] = {}
        metas: dict[bytes, tuple[Any, ...]] = {}  # a batch written together shares its m
        for v, m, n, a, x, i in _unpackb(raw, raw=True):
            meta = metas.get(m)
            if meta is None:
                c, u, l, s, tags, r = _unpackb(m)  # noqa: E741
                meta = metas[m] = (c, u, l or None, s, tuple(tags), r)
            c, u, l, s, tags, r = meta  # noqa: E741
            out[keys[i - 1]] = Record(v, c, u, a, n, x or None, l, s, tags, r)
        return out

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        if not records:
            return
        keys = list(records)
        recs = list(records.values())
        metas = list(map(_META, recs))
        first = metas[0]
        if metas.count(first) == len(metas):  # one header for the batch
            flat: list[Any] = [None] * (6 + 2 * len(keys))
            flat[:6] = (1, *_put_meta(first))
            flat[6::2] = keys
            flat[7::2] = [rec.value for rec in recs]
        else:
            flat = [0]
            for key, rec, meta in zip(keys, recs, metas, strict=True):
                flat += (key, rec.value, *_put_meta(meta))
        self._run(1, self._base(ns), now, _packb(flat), script=_PUT)

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        if not keys:
            return 0
        return int(self._run(1, self._base(ns), now, _packb(list(keys)), script=_DELETE))

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        """One pipeline of ``HGET <entry> x``: only the expiry travels, never the value.

        (Rather than ``EXISTS``: an entry that ``now`` finds expired but Redis has not
        dropped yet, e.g. under a caller's own clock, is not live, as for ``get_many``.)
        """
        if not keys:
            return set()
        prefix = self._base(ns) + "e:"
        if len(keys) == 1:
            found = [self._run("HGET", prefix + keys[0], "x")]
        else:
            found = self._run(pipeline=[("HGET", prefix + key, "x") for key in keys])
        return {
            key
            for key, x in zip(keys, found, strict=True)
            if x is not None and (not x or float(x) > now)
        }

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        prefix = self._base(ns) + "e:"
        start = len(prefix.encode())
        for name in self._scan_names(prefix + _redis_glob(pattern)):
            key = name[start:].decode("utf-8", "surrogateescape")
            if glob_match(key, pattern):
                yield key

    def _scan_names(self, match: str) -> Iterator[bytes]:
        """Yield the Redis key names matching ``match`` (each once)."""
        seen: set[bytes] = set()
        cursor: bytes | int = 0
        while True:
            cursor, found = self._run("SCAN", cursor, "MATCH", match, "COUNT", _SCAN_COUNT)
            for name in found:
                if name not in seen:  # SCAN may return a key twice
                    seen.add(name)
                    yield name
            if int(cursor) == 0:
                return

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        tags = list(tags)
        if not tags:
            return set()
        found = self._run(1, self._base(ns), now, _packb(tags), script=_TAGGED)
        return {key.decode("utf-8", "surrogateescape") for key in found}

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        removed = super().clear(ns, now=now, batch_size=batch_size)
        # Tag indexes left over (members that expired natively): drop them all.
        names = list(self._scan_names(self._base(ns) + "t:*"))
        for start in range(0, len(names), batch_size):
            self._run("DEL", *names[start : start + batch_size])
        return removed

    def purge_expired(self, ns: str, *, now: float) -> int:
        """Nothing to do: Redis removes expired entries itself."""
        return 0


def _put_meta(meta: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(m, n, a, x, s)`` of the put script for ``_META`` of a record."""
    created, updated, last_access, count, expires_at, ttl, sliding, tags, version = meta
    m = _packb(
        [created, updated, False if ttl is None else ttl, bool(sliding), list(tags), version]
    )
    return (
        m,
        count,
        last_access,
        "" if expires_at is None else expires_at,
        ttl if sliding and ttl is not None else "",
    )


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    if math.isinf(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(f"key_prefix must be a non-empty str, got {prefix!r}")
    bad = sorted(set(prefix) & _PREFIX_FORBIDDEN)
    if bad:
        raise ConfigError(
            f"key_prefix may not contain braces, glob characters or whitespace, got {prefix!r} "
            f"(offending: {''.join(bad)!r})"
        )
    return prefix


def _from_query(name: str, value: str) -> Any:
    if name == "key_prefix":
        return value
    try:
        return float(value) if name == "timeout" else int(value)
    except ValueError:
        raise ConfigError(f"{name} in the Redis URL must be a number, got {value!r}") from None

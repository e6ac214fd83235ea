"""The Redis link of the analytics objects: a connection and a key space of their own.

Streams, counters and time series go through the backend's
:class:`~prefect_memory.plugins.redis.connection.RedisConnection` (URL parsing, credentials,
the lazy pooled client that survives forks and pickling, one retry on a broken connection,
scripts loaded on NOSCRIPT, errors translated to :class:`~prefect_memory.errors.BackendError`
subclasses) but never touch the backend's entries: every analytics key is

``{prefix}:{<ns token>}:<kind>:...`` with ``kind`` ``s`` (stream), ``c`` (counter),
``al`` (alert), ``ts`` (time series).

The braces make the namespace a Redis Cluster hash tag, as for the backend's own keys, so
the multi-key transactions and scripts of one namespace stay on one node.

Example:
    >>> link = RedisLink.open("redis://cache.local:6380/1", namespace="analytics:eu",
    ...                       key_prefix="app")
    >>> link.key("s", "events")
    'app:{analytics%3Aeu}:s:events'
    >>> link.url
    'redis://cache.local:6380/1'
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError
from ..keys import ns_token, validate_namespace

#: Read the raw chunks (:meth:`RedisLink.fetch`) with our reader (:mod:`._resp`), not
#: redis-py's parser. Kept where it wins, measured against redis-py with hiredis in one run
#: (``benchmarks/bench_resp.py``, ``benchmarks/bench_downsample.py``; figures in
#: docs/analytics.md): ``downsample()`` end to end is 1.2-1.5x faster with ours (the next
#: batch is read on a second thread while numpy aggregates this one; likely because
#: ``recv_into`` lands a chunk in its array without the GIL, where hiredis copies it and
#: builds ``bytes`` holding it); reading alone ties hiredis on large strings (0.93-1.17x)
#: and is 1.2-2.6x faster than redis-py's pure-Python parser (hiredis is an opt-in extra).
#: Below 64 KiB a string goes through our Python line parser, 5-15% slower than hiredis:
#: only :meth:`RedisLink.fetch` (the chunk reads) uses ours; every other command goes
#: through redis-py (with hiredis when installed). ``False``: redis-py for these reads too
#: (the benchmarks measure both).
ONE_COPY_READS = True


def one_copy_reads() -> bool:
    """Whether :meth:`RedisLink.fetch` reads with our one-copy reader (see ONE_COPY_READS)."""
    return ONE_COPY_READS


class RedisLink:
    """A Redis connection (a :class:`RedisBackend`) and the key base of one namespace.

    Args:
        backend: The Redis backend whose connection is borrowed.
        namespace: Namespace of the analytics keys.
    """

    def __init__(self, backend: Any, namespace: str = "default") -> None:
        if getattr(backend, "scheme", None) != "redis" or not hasattr(backend, "connection"):
            raise ConfigError(
                "analytics streams, counters and time series need a Redis store "
                f"(redis:// or rediss://), got {backend!r}"
            )
        self.backend = backend
        self.namespace = validate_namespace(namespace)
        self.base = f"{backend.key_prefix}:{{{ns_token(self.namespace)}}}:"
        self._scripts: dict[str, Any] = {}  # Lua source -> LuaScript
        self._raw: Any = None  # a redis-py client for :meth:`fetch`

    @classmethod
    def open(cls, source: Any, *, namespace: str | None = None, **options: Any) -> RedisLink:
        """A link from a ``redis://`` URL, a Redis-backed Memory, a backend or a link.

        Args:
            source: ``redis://...`` / ``rediss://...`` URL, a :class:`~prefect_memory.Memory`
                on Redis, a ``RedisBackend`` or a :class:`RedisLink`.
            namespace: Namespace of the keys (default: the memory's, else ``"default"``).
            **options: Options of the Redis backend for a URL (``timeout``, ``key_prefix``...).
        """
        if isinstance(source, RedisLink):
            if namespace is None or namespace == source.namespace:
                return source
            return cls(source.backend, namespace)
        if isinstance(source, str):
            from ..plugins.redis.backend import RedisBackend

            return cls(RedisBackend.from_url(source, **options), namespace or "default")
        backend = getattr(source, "backend", None)
        if backend is not None and hasattr(source, "namespace"):  # a Memory
            return cls(backend, namespace or source.namespace)
        return cls(source, namespace or "default")

    @property
    def connection(self) -> Any:
        """The backend's :class:`~prefect_memory.plugins.redis.connection.RedisConnection`."""
        return self.backend.connection

    @property
    def url(self) -> str:
        """The server's URL (without credentials)."""
        return str(self.backend.url)

    def key(self, kind: str, *parts: object) -> str:
        """The Redis key ``{prefix}:{ns}:<kind>:<part>:<part>...``."""
        return self.base + ":".join((kind, *map(str, parts)))

    def run(self, *args: Any) -> Any:
        """Send one command and return its reply (errors translated)."""
        return self.connection.execute(*args, route=self.base)

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip and return their replies."""
        return self.connection.pipeline(commands, route=self.base)

    def transaction(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` atomically (MULTI/EXEC) in one round trip; return their replies."""
        if not commands:
            return []
        replies = self.pipeline([("MULTI",), *commands, ("EXEC",)])
        result = replies[-1]
        if result is None:  # pragma: no cover - no WATCH is used
            raise BackendError("Redis aborted a transaction")
        return list(result)

    def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (EVALSHA, loaded on NOSCRIPT); ``keys`` share the namespace."""
        script = self._scripts.get(source)
        if script is None:
            from ..plugins.redis.scripts import LuaScript

            script = self._scripts[source] = LuaScript(source)
        conn = self.connection
        return conn.request(len(keys), *keys, *args, script=script, route=self.base)

    def client(self, **overrides: Any) -> Any:
        """A dedicated redis-py client with the backend's settings (blocking reads)."""
        return self.connection.redis_client(**overrides)

    def fetch(self, commands: list[tuple[Any, ...]], *, large: int = 65536) -> list[Any]:
        """Like :meth:`pipeline`, for reads of large strings (the raw chunks of a series).

        Replies are what :meth:`pipeline` returns, except that bulk strings of ``large``
        bytes or more come back as ``numpy.uint8`` arrays (both take ``len`` and
        ``numpy.frombuffer``), read from the socket with one copy by our reader (see
        :mod:`._resp` and :data:`ONE_COPY_READS` for why not redis-py's parser).

        For reads only: a broken connection (server restarted) is retried once. On a Redis
        Cluster this is :meth:`pipeline`.
        """
        if not commands:
            return []
        pool = self._raw_pool() if one_copy_reads() else None
        if pool is None:
            return self.pipeline(commands)
        try:
            return self._fetch(pool, commands, large)
        except BackendTimeout:
            raise
        except BackendUnavailable:  # a connection from before a server restart: once more
            return self._fetch(pool, commands, large)

    def _fetch(self, pool: Any, commands: list[tuple[Any, ...]], large: int) -> list[Any]:
        from redis.exceptions import RedisError

        from ._resp import ReplyReader

        translate = self.connection.translate
        try:
            conn = pool.get_connection()
        except (RedisError, OSError) as err:
            raise translate(err) from err
        broken = True
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            sock = conn._get_socket() if hasattr(conn, "_get_socket") else conn._sock
            reader = ReplyReader(sock, large=large)
            replies: list[Any] = []
            error: BackendError | None = None
            for _ in commands:
                try:
                    replies.append(reader.read())
                except BackendUnavailable:
                    raise
                except BackendError as err:  # an error reply: the rest still follows
                    error = error or err
                    replies.append(None)
            broken = reader.start != reader.end  # nothing may be left unread
            if error is not None:
                raise error
            return replies
        except (RedisError, OSError) as err:  # a timeout, a broken socket
            raise translate(err) from err
        finally:
            if broken:
                conn.disconnect()
            pool.release(conn)

    def _raw_pool(self) -> Any:
        if self.connection.cluster:
            return None
        client = self._raw
        if client is None:
            client = self._raw = self.client(protocol=2)
        return client.connection_pool

    def close(self) -> None:
        """Release the connections (reconnects if used again)."""
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()
        self.backend.close()

    def __repr__(self) -> str:
        return f"RedisLink({self.url!r}, namespace={self.namespace!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"backend": self.backend, "namespace": self.namespace, "base": self.base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._scripts = {}
        self._raw = None

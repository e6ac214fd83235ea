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
        """Like :meth:`pipeline`, but bulk strings of ``large`` bytes or more come back as
        ``numpy.uint8`` arrays, read from the socket with one copy (see :mod:`._resp`).

        For reads only: a broken connection (server restarted) is retried once. On a Redis
        Cluster this is :meth:`pipeline`.
        """
        if not commands:
            return []
        pool = self._raw_pool()
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

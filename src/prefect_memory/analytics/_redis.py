"""The Redis link of the analytics objects: a connection and a key space of their own.

Streams, counters and time series reuse the connection handling of the Redis backend
(URL parsing, credentials, the lazy pooled client that survives forks and pickling, one
retry on a broken connection, errors translated to :class:`~prefect_memory.errors.BackendError`
subclasses) but never touch its entries: every analytics key is

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

import hashlib
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
        if getattr(backend, "scheme", None) != "redis" or not hasattr(backend, "_run"):
            raise ConfigError(
                "analytics streams, counters and time series need a Redis store "
                f"(redis:// or rediss://), got {backend!r}"
            )
        self.backend = backend
        self.namespace = validate_namespace(namespace)
        self.base = f"{backend.key_prefix}:{{{ns_token(self.namespace)}}}:"
        self._shas: dict[str, str] = {}
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
            from ..plugins.redisdb import RedisBackend

            return cls(RedisBackend.from_url(source, **options), namespace or "default")
        backend = getattr(source, "backend", None)
        if backend is not None and hasattr(source, "namespace"):  # a Memory
            return cls(backend, namespace or source.namespace)
        return cls(source, namespace or "default")

    @property
    def url(self) -> str:
        """The server's URL (without credentials)."""
        return str(self.backend.url)

    def key(self, kind: str, *parts: object) -> str:
        """The Redis key ``{prefix}:{ns}:<kind>:<part>:<part>...``."""
        return self.base + ":".join((kind, *map(str, parts)))

    def run(self, *args: Any) -> Any:
        """Send one command and return its reply (errors translated)."""
        execute = getattr(self.backend, "execute", None)
        if execute is not None:
            return execute(*args, route=self.base)
        return self.backend._run(*args)  # pragma: no cover - older backends

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip and return their replies."""
        if not commands:
            return []
        try:
            return list(self.backend._run(pipeline=commands, route=self.base))
        except TypeError:  # pragma: no cover - a backend without Cluster routing
            return list(self.backend._run(pipeline=commands))

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
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(
                source.encode(), usedforsecurity=False
            ).hexdigest()
        try:
            return self.run("EVALSHA", sha, len(keys), *keys, *args)
        except BackendError as err:
            cause = type(err.__cause__).__name__
            if cause != "NoScriptError" and "NOSCRIPT" not in str(err):
                raise
        self.run("SCRIPT", "LOAD", source)
        return self.run("EVALSHA", sha, len(keys), *keys, *args)

    def client(self, **overrides: Any) -> Any:
        """A dedicated redis-py client with the backend's settings (blocking reads)."""
        make = getattr(self.backend, "redis_client", None)
        if make is not None:
            return make(**overrides)
        import redis  # pragma: no cover - older backends

        return redis.Redis.from_url(self.backend._pool_url, **overrides)  # pragma: no cover

    def fetch(self, commands: list[tuple[Any, ...]], *, large: int = 65536) -> list[Any]:
        """Like :meth:`pipeline`, but bulk strings of ``large`` bytes or more come back as
        ``numpy.uint8`` arrays, read from the socket with one copy (see :mod:`._resp`).

        For reads only: a broken connection (server restarted) is retried once. On a Redis
        Cluster (or a backend without ``redis_client``) this is :meth:`pipeline`.
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

        where = f"Redis at {self.backend.host}:{self.backend.port}"
        try:
            conn = pool.get_connection()
        except (RedisError, OSError) as err:
            raise BackendUnavailable(f"{where} is unreachable: {err}") from err
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
        except TimeoutError as err:
            raise BackendTimeout(f"{where} did not answer in time: {err}") from err
        except (RedisError, OSError) as err:
            raise BackendUnavailable(f"{where} is unreachable: {err}") from err
        finally:
            if broken:
                conn.disconnect()
            pool.release(conn)

    def _raw_pool(self) -> Any:
        if getattr(self.backend, "cluster", None) or not hasattr(self.backend, "redis_client"):
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
        self._shas = {}
        self._raw = None

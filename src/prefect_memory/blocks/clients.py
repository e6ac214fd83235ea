"""The driver clients of the server blocks, as prefect-redis and prefect-aws hand them out.

``RedisMemory.get_client()`` / ``get_async_client()`` give redis-py clients,
``MongoDBMemory.get_client()`` a pymongo ``MongoClient`` and ``S3Memory.get_client()`` an
s3fs filesystem, each built from the block's settings (the same server, user, password,
TLS files and timeouts as the memory's own connections) and ``as_connection_params()``
the keyword arguments behind them. A client is pooled and shared: one per block and
settings (async ones: per event loop too), never pickled, closed by ``block.close()``.

Example:
    >>> from prefect_memory.blocks import RedisMemory
    >>> block = RedisMemory(host="cache.local", port=6380, db=2)
    >>> block.get_client() is block.get_client()
    True
    >>> block.get_client().connection_pool.connection_kwargs["port"]
    6380
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .credentials import compose_url


class ClientCache:
    """The driver clients a block handed out, by settings (and event loop for async ones).

    Never pickled nor copied (a copy starts empty), and equal to any other cache: a block's
    equality is its settings'. Keys are digests, so no secret stays in them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: dict[str, Any] = {}
        self._async: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ClientCache, ())

    def __copy__(self) -> ClientCache:
        return ClientCache()

    def __deepcopy__(self, memo: dict[int, Any]) -> ClientCache:
        return ClientCache()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientCache)

    __hash__ = object.__hash__

    @staticmethod
    def _digest(kind: str, params: dict[str, Any]) -> str:
        text = repr((kind, sorted((k, repr(v)) for k, v in params.items())))
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, kind: str, params: dict[str, Any], build: Callable[[], Any]) -> Any:
        """The client of ``kind`` for ``params``, built by ``build`` on first use."""
        key = self._digest(kind, params)
        with self._lock:
            client = self._sync.get(key)
            if client is None:
                client = self._sync[key] = build()
            return client

    def get_async(self, kind: str, params: dict[str, Any], build: Callable[[], Any]) -> Any:
        """Like :meth:`get`, one client per running event loop (an async client is bound to
        the loop it first ran on)."""
        try:
            loop: Any = asyncio.get_running_loop()
        except RuntimeError:
            loop = _NO_LOOP
        key = self._digest(kind, params)
        with self._lock:
            clients = self._async.setdefault(loop, {})
            client = clients.get(key)
            if client is None:
                client = clients[key] = build()
            return client

    def close(self) -> None:
        """Close the sync clients (async ones go with their loop)."""
        with self._lock:
            clients, self._sync = list(self._sync.values()), {}
        for client in clients:
            client.close()


class _NoLoop:
    """The weak key of async clients made outside any event loop."""


_NO_LOOP = _NoLoop()


def redis_connection_params(connection: Any) -> dict[str, Any]:
    """``redis.Redis(**params)`` keyword arguments of a Redis backend's connection.

    The same server, database, user, password, TLS files and timeouts as the memory's own
    connections (URL query options such as ``ssl_cert_reqs`` included).
    """
    from redis.connection import SSLConnection, parse_url

    url = compose_url(
        connection.scheme, connection.host, connection.port, f"/{connection.db}",
        connection.passthrough,
    )  # fmt: skip
    params: dict[str, Any] = parse_url(url)
    ssl_class = params.pop("connection_class", None)
    params["ssl"] = ssl_class is not None and issubclass(ssl_class, SSLConnection)
    params["username"] = connection.username
    password = connection.password
    params["password"] = None if password is None else password.get_secret_value()
    params["socket_timeout"] = params["socket_connect_timeout"] = connection.timeout
    for name, value in connection.ssl_options.items():
        params[name] = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return params


def _cache(block: Any) -> ClientCache:
    cache: ClientCache = block._clients
    return cache


class RedisClients:
    """``get_client()``, ``get_async_client()`` and ``as_connection_params()`` of a Redis
    block (prefect-redis's ``RedisDatabase`` names).

    The block declares ``_clients``; a mixin declares no attribute (pydantic would make
    fields of its type hints).
    """

    def as_connection_params(self) -> dict[str, Any]:
        """Keyword arguments of ``redis.Redis(**params)`` for this block's server.

        Host, port, db, username, password (in clear: keep the dict to yourself), ``ssl``
        and the ``ssl_*`` files, and the block's timeout, as prefect-redis's
        ``RedisDatabase.as_connection_params()`` gives them.
        """
        from ..shared._redis import redis_backend

        block: Any = self
        return redis_connection_params(redis_backend(block.memory).connection)

    def get_client(self) -> Any:
        """A redis-py ``Redis`` client of this block's server (pooled, shared by calls).

        The memory's entries live under ``key_prefix`` as hashes: use the memory API for
        them, this client for everything else.
        """
        import redis

        params = self.as_connection_params()
        return _cache(self).get("redis", params, lambda: redis.Redis(**params))

    def get_async_client(self) -> Any:
        """A ``redis.asyncio.Redis`` client of this block's server (one per event loop)."""
        import redis.asyncio

        params = self.as_connection_params()
        return _cache(self).get_async("redis", params, lambda: redis.asyncio.Redis(**params))


class MongoClients:
    """``get_client()``, ``get_async_client()`` and ``as_connection_params()`` of a MongoDB
    block."""

    def as_connection_params(self) -> dict[str, Any]:
        """Keyword arguments of ``pymongo.MongoClient(**params)`` for this block's server.

        ``host`` is the connection URL (without prefect-memory's ``collection`` option),
        with user name, password (in clear: keep the dict to yourself) and the block's
        timeout in milliseconds.
        """
        block: Any = self
        head, _, query = block._memory_url().partition("?")
        kept = [i for i in query.split("&") if i and i.partition("=")[0].lower() != "collection"]
        ms = max(1, int(block.timeout * 1000))
        params: dict[str, Any] = {
            "host": head + ("?" + "&".join(kept) if kept else ""),
            "serverSelectionTimeoutMS": ms,
            "connectTimeoutMS": ms,
            "socketTimeoutMS": ms,
        }
        if block.username is not None:
            params["username"] = block.username
        for name, field in (
            ("password", "password"), ("tlsCertificateKeyFilePassword", "tls_key_password")
        ):  # fmt: skip
            secret = getattr(block, field)
            if secret is not None:
                params[name] = secret.get_secret_value()
        return params

    def get_client(self) -> Any:
        """A ``pymongo.MongoClient`` of this block's server (pooled, shared by calls).

        The entries are documents of the block's collection: use the memory API for them,
        this client for everything else. ``block.close()`` closes it.
        """
        import pymongo

        params = self.as_connection_params()
        return _cache(self).get("mongo", params, lambda: pymongo.MongoClient(**params))

    def get_async_client(self) -> Any:
        """A ``pymongo.AsyncMongoClient`` of this block's server (one per event loop)."""
        import pymongo

        params = self.as_connection_params()
        return _cache(self).get_async("mongo", params, lambda: pymongo.AsyncMongoClient(**params))


class S3Clients:
    """``get_client()`` and ``as_connection_params()`` of an S3 block (an s3fs filesystem)."""

    def as_connection_params(self) -> dict[str, Any]:
        """Keyword arguments of ``s3fs.S3FileSystem(**params)`` for this block's bucket.

        Credentials in clear (keep the dict to yourself), endpoint and region in
        ``client_kwargs``, and the block's timeout as botocore's connect and read timeouts.
        """
        block: Any = self
        params: dict[str, Any] = block._storage_options()
        config = dict(params.get("config_kwargs") or {})
        config.setdefault("connect_timeout", block.timeout)
        config.setdefault("read_timeout", block.timeout)
        params["config_kwargs"] = config
        return params

    def get_client(self) -> Any:
        """An ``s3fs.S3FileSystem`` of this block's server (s3fs caches one per settings).

        The entries are objects under the block's url: use the memory API for them.
        """
        import s3fs

        return s3fs.S3FileSystem(**self.as_connection_params())


__all__ = ["ClientCache", "MongoClients", "RedisClients", "S3Clients", "redis_connection_params"]

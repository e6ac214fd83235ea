"""The async way to MongoDB: one :class:`pymongo.AsyncMongoClient` per event loop.

The async twin of :class:`~.mongodb.MongoBackend`'s client (its ``_coll``): the backend's
operations are sans-I/O bodies (they yield their commands and read the replies, see
:mod:`prefect_memory.aio`) that the blocking driver runs on a :class:`pymongo.MongoClient`
and the async one awaits on the collection this module hands out. Both clients are built
from the same settings (URL, credentials, timeouts, ``client_kwargs``, database, collection,
codec options, write concern: :meth:`.MongoBackend._client_options`), and their errors are
translated by the same code, in the bodies.

An ``AsyncMongoClient`` is bound to the event loop it first ran on, so each loop gets its
own, made on its first request (two ``asyncio.run`` calls on one memory each connect
afresh) and closed when that loop shuts down (with ``asyncio.run``, and any runner that
calls ``loop.shutdown_asyncgens()``); a closed loop's client is dropped, a forked child
starts afresh. Nothing of it is pickled.

Example:
    >>> from prefect_memory.plugins.mongodb import MongoBackend
    >>> backend = MongoBackend("mongodb://db.example:27017/app?collection=m")
    >>> AsyncMongoClients(backend)
    AsyncMongoClients('db.example:27017', 'app.m')
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

import pymongo

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .mongodb import MongoBackend


class _LoopClient:
    """The async client of one event loop, its collection and what closes it."""

    __slots__ = ("client", "coll", "indexing", "loop", "pid", "watch")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, coll: Any) -> None:
        self.loop = loop
        self.pid = os.getpid()
        self.client = client
        self.coll = coll
        #: Serializes the first index creation of this loop's callers (made in the loop).
        self.indexing: asyncio.Lock | None = None
        #: Closes the client when the loop shuts down (see :meth:`watched`).
        self.watch: Any = None

    async def watched(self) -> None:
        """Close the client when the loop shuts down, not when it is long closed.

        An event loop has no hook of its own for its end, but ``asyncio.run`` (and every
        runner that calls ``loop.shutdown_asyncgens()``) closes the async generators still
        open, in the loop, before closing it: such a generator, started here, closes the
        client in its ``finally``.
        """
        self.watch = self._until_shutdown()
        await self.watch.asend(None)

    async def _until_shutdown(self) -> Any:
        try:
            yield
        finally:
            await _close(self.client)


async def _close(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.close()


class AsyncMongoClients:
    """The :class:`pymongo.AsyncMongoClient` of each event loop, for one backend.

    Args:
        backend: The backend: its settings (:meth:`.MongoBackend._client_options`), its
            error translation and whether the indexes are ensured.
    """

    def __init__(self, backend: MongoBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._last: _LoopClient | None = None

    def __repr__(self) -> str:
        where = f"{self.backend.database}.{self.backend.collection}"
        return f"AsyncMongoClients({self.backend.hosts!r}, {where!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"backend": self.backend}  # its settings, never its clients

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["backend"])  # type: ignore[misc]

    def _here(self) -> _LoopClient:
        """The running loop's client (made on first use; those of closed loops dropped)."""
        loop = asyncio.get_running_loop()
        here = self._last
        if here is not None and here.loop is loop and here.pid == os.getpid():
            return here
        with self._lock:
            here = self._loops.get(loop)
            if here is None or here.pid != os.getpid():
                pid = os.getpid()
                for old, conns in list(self._loops.items()):
                    if old.is_closed() or conns.pid != pid:
                        del self._loops[old]  # its sockets close when collected
                url, kwargs = self.backend._client_options()
                with self.backend._errors("connect"):
                    client = pymongo.AsyncMongoClient(url, **kwargs)
                here = self._loops[loop] = _LoopClient(loop, client, self.backend._open(client))
            self._last = here
        return here

    async def collection(self) -> Any:
        """The running loop's collection, with the indexes ensured once per server start.

        Raises:
            BackendError: The client cannot be made, or the indexes cannot be created (see
                :meth:`.MongoBackend._errors`).
        """
        here = self._here()
        if here.watch is None:
            await here.watched()
        backend = self.backend
        if not backend._indexed:
            if here.indexing is None:
                here.indexing = asyncio.Lock()
            async with here.indexing:
                if not backend._indexed:
                    with backend._errors("create indexes"):
                        await here.coll.create_indexes(backend._indexes())
                    backend._indexed = True
        return here.coll

    async def close(self) -> None:
        """Close the running loop's client (the next request makes another)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            here = self._loops.pop(loop, None)
            if self._last is here:
                self._last = None
        if here is not None:
            await _close(here.client)

    def forget(self) -> None:
        """Forget every loop's client (the blocking ``close``): the client of a running
        loop is closed by that loop, the others' sockets close when collected."""
        with self._lock:
            loops, self._loops, self._last = self._loops, {}, None
        for loop, here in loops.items():
            if loop.is_running() and here.pid == os.getpid():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    asyncio.run_coroutine_threadsafe(_close(here.client), loop)


__all__ = ["AsyncMongoClients"]

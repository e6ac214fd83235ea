"""The async way to Redis: redis.asyncio connections, lent per event loop.

The async twin of :class:`~.connection.RedisConnection`'s request path, for a single
server and for a Redis Cluster. It skips redis.asyncio's per-command machinery (pool lock
and readiness check per command, retries, metrics hooks) as the blocking side does: the
pool of redis-py creates, authenticates (same URL, TLS and ACL settings:
:func:`~.connection.plain_options`) and disconnects the connections; they are borrowed from
an idle list, bounded by ``max_connections`` per node (callers wait up to ``timeout`` for
one), one request each. Errors are translated by :meth:`.RedisConnection.translate`: the
same exceptions as the blocking path.

On a Cluster a request goes straight to the node serving its route's slot, as the blocking
path sends it: both run the same bodies of :mod:`.routing` (``MOVED`` followed and the slot
map reloaded, ``ASK`` waited out, replicas for reads, a batch split per node, the nodes at
once) over the one :class:`~.connection.SlotMap` of the blocking connection, which both
paths read and refresh.

Connections belong to the event loop that made them: each loop gets its own pool per node,
made on its first request there (so two ``asyncio.run`` calls on one memory each connect
afresh, and a closed loop's connections are dropped), and a forked child starts afresh.
Nothing of it is pickled.

Example:
    >>> from prefect_memory.plugins.redis.connection import RedisConnection
    >>> AsyncRedisConnection(RedisConnection("cache.local", 6380))
    AsyncRedisConnection('cache.local:6380')
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import redis.asyncio
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as _RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from ...aio import adrive
from ...errors import BackendUnavailable, ConsensusError
from . import routing
from .connection import FORKS, Call, RedisConnection, SlotMap, plain_options, refusal
from .routing import Step
from .scripts import LuaScript

#: ``ssl_*`` options redis.asyncio takes (it has no OCSP ones): with any other, the
#: requests stay on the blocking path, which applies them.
_ASYNC_SSL = frozenset(
    name for name in inspect.signature(SSLConnection.__init__).parameters if name.startswith("ssl")
)
#: Extra seconds to read a WAIT reply beyond the wait itself (as the blocking path).
_WAIT_MARGIN = 1.0
_HIREDIS_PACK = HiredisRespSerializer().pack if HIREDIS_AVAILABLE else None

if sys.version_info >= (3, 11, 3):  # as redis.asyncio: earlier asyncio.timeout had bugs
    from asyncio import timeout as _deadline
else:  # pragma: no cover - Python 3.10: redis-py depends on async-timeout there
    from async_timeout import timeout as _deadline


class _Node:
    """The connections of one node on one event loop: a redis.asyncio pool and those it lent."""

    __slots__ = ("idle", "pool", "slots")

    def __init__(self, pool: Any, max_connections: int | None) -> None:
        self.pool = pool
        self.idle: list[Any] = []
        self.slots = None if max_connections is None else asyncio.Semaphore(max_connections)

    async def drop(self, conn: Any) -> None:
        """Forget a connection whose state is unknown (disconnect it, give it back)."""
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def drop_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            await self.drop(conn)


class _LoopConnections:
    """The connections of one event loop: a :class:`_Node` per node (one for a single
    server; on a Cluster one per primary, and per replica serving reads), made on first use."""

    __slots__ = (
        "connect", "expired", "fork", "inflight", "loop", "max_connections", "nodes", "perform",
        "period", "seed", "timer", "watch",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connect: Callable[[tuple[str, int] | None, bool], Any],
        perform: Callable[[_LoopConnections, Step], Awaitable[Any]],
        max_connections: int | None,
        timeout: float,
    ) -> None:
        self.loop = loop
        self.connect = connect
        self.max_connections = max_connections
        #: ``(address, reader) -> _Node``; ``(None, False)``: the single server.
        self.nodes: dict[tuple[tuple[str, int] | None, bool], _Node] = {}
        self.seed = self.node(None)
        self.fork = FORKS[0]
        #: Runs the steps of a :mod:`.routing` body on this loop.
        self.perform: Callable[[Step], Awaitable[Any]] = functools.partial(perform, self)
        #: Closes the connections when the loop shuts down (see :meth:`watched`).
        self.watch: Any = None
        # The deadlines of the requests under way (see :meth:`track`).
        self.inflight: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.period = min(max(timeout / 10, 0.005), 0.25)

    def node(self, address: tuple[str, int] | None, reader: bool = False) -> _Node:
        """The connections of the node at ``address`` (``READONLY`` ones when ``reader``)."""
        node = self.nodes.get((address, reader))
        if node is None:
            node = self.nodes[(address, reader)] = _Node(
                self.connect(address, reader), self.max_connections
            )
        return node

    # -- deadlines: one timer per loop, not one per request ---------------------------------
    # A request must end within the timeout. ``asyncio.timeout`` per request costs a timer
    # in the loop's heap each (and redis.asyncio's socket timeout one per send and per read);
    # instead each request notes its deadline here, and one periodic check (every tenth of
    # the timeout, at most 0.25 s, only while requests are under way) cancels the requests
    # past theirs, which then raise BackendTimeout.
    def track(self, limit: float) -> asyncio.Task[Any] | None:
        """Note the deadline of the current task's request (``limit`` seconds from now)."""
        task = asyncio.current_task(self.loop)
        if task is not None:
            self.inflight[task] = self.loop.time() + limit
            if self.timer is None:
                self.timer = self.loop.call_later(self.period, self._check)
        return task

    def untrack(self, task: asyncio.Task[Any] | None) -> bool:
        """End the request of ``task``; whether its deadline cancelled it (then undone,
        unless someone else cancelled the task too)."""
        if task is None:
            return False
        self.inflight.pop(task, None)
        if task not in self.expired:
            return False
        self.expired.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        return uncancel is None or uncancel() == 0

    def _check(self) -> None:
        now = self.loop.time()
        for task, deadline in list(self.inflight.items()):
            if deadline <= now and task not in self.expired:
                self.expired.add(task)
                task.cancel()  # it waits inside its request: it gets CancelledError there
        self.timer = self.loop.call_later(self.period, self._check) if self.inflight else None

    async def watched(self) -> None:
        """Disconnect when the loop shuts down, not when it is long closed.

        An event loop has no hook of its own for its end, but ``asyncio.run`` (and every
        runner that calls ``loop.shutdown_asyncgens()``) closes the async generators still
        open, in the loop, before closing it: such a generator, started here, disconnects
        the pool in its ``finally``. (Without it, the sockets of a closed loop's
        connections would stay open until collected.)
        """
        self.watch = self._until_shutdown()
        await self.watch.asend(None)

    async def _until_shutdown(self) -> Any:
        try:
            yield
        finally:
            await self.disconnect()

    async def disconnect(self) -> None:
        """Disconnect every node's connections (the next request reconnects)."""
        nodes = list(self.nodes.values())
        self.abandon()
        for node in nodes:
            await _disconnect(node.pool)

    def abandon(self) -> None:
        """Forget every connection without awaiting (their loop is closed, or another
        process's): their sockets close when collected."""
        for node in self.nodes.values():
            node.idle.clear()


def _timed_out(sync: RedisConnection, address: tuple[str, int] | None) -> _RedisTimeoutError:
    host, port = address or (sync.host, sync.port)
    return _RedisTimeoutError(f"no reply from {host}:{port} in time")


async def _disconnect(pool: Any) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pool.disconnect()


def _packer(conn: Any) -> Any:
    """``pack(*args)`` of one command: hiredis's (as the blocking connections of redis-py
    use when it is installed; redis.asyncio's own is pure Python, several times slower for
    a script call's seven arguments), else the connection's."""
    return _HIREDIS_PACK or conn.pack_command


async def exchange(
    conn: Any,
    args: tuple[Any, ...],
    script: LuaScript | None,
    pipeline: Sequence[tuple[Any, ...]] | None,
    wait: tuple[int, float] | None,
    keep_errors: bool = False,
) -> Any:
    """One request on ``conn`` (see :func:`.connection.exchange`, its blocking twin)."""
    pack = _packer(conn)
    send = conn.send_packed_command
    read = conn.read_response
    if pipeline is not None:
        await send([part for command in pipeline for part in pack(*command)], False)
        replies: list[Any] = []
        error: ResponseError | None = None
        for _ in pipeline:  # read every reply, even after an error one
            try:
                replies.append(await read())
            except ResponseError as err:
                error = error or err
                replies.append(err if keep_errors else None)
        if error is not None and not keep_errors:
            raise error
        reply: Any = replies
    elif script is None:
        await send(pack(*args), False)
        reply = await read()
    else:
        try:
            await send(pack("EVALSHA", script.sha, *args), False)
            reply = await read()
        except NoScriptError:
            await send(pack("SCRIPT", "LOAD", script.source), False)
            await read()
            await send(pack("EVALSHA", script.sha, *args), False)
            reply = await read()
    if wait is None:
        return reply
    replicas, seconds = wait
    if pipeline and all(isinstance(r, ResponseError) for r in reply):
        return reply, replicas  # nothing was written: nothing to wait for (as the blocking twin)
    await send(pack("WAIT", replicas, max(1, int(seconds * 1000))), False)
    return reply, int(await read())


class AsyncRedisConnection:
    """Async requests to the server (or the Cluster) of a :class:`~.connection.RedisConnection`.

    Args:
        sync: The blocking connection: its settings (URL, TLS, ACL user, password,
            timeout, ``max_connections``, ``wait``, seeds, ``read_from_replicas``), its
            error translation and, on a Cluster, its slot map (shared by both paths).
    """

    def __init__(self, sync: RedisConnection) -> None:
        self.sync = sync
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopConnections] = {}
        self._last: _LoopConnections | None = None
        names = set(sync.ssl_options) | {name for name, _ in parse_qsl(sync.passthrough)}
        #: Whether redis.asyncio takes every setting (else the blocking path serves).
        self.supported = not {n for n in names if n.startswith("ssl")} - _ASYNC_SSL
        #: Known to serve: the server (single or Cluster) is known, every setting taken
        #: (see :meth:`native`).
        self.ready = False
        #: Requests sent on the event loop, and those of them routed over a Cluster.
        self.sent = 0
        self.routed = 0

    def __repr__(self) -> str:
        return f"AsyncRedisConnection({f'{self.sync.host}:{self.sync.port}'!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"sync": self.sync}  # its settings, never its connections

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sync"])  # type: ignore[misc]

    async def native(self) -> bool:
        """Whether requests go this way: settings redis.asyncio takes (a single server or
        a Cluster).

        A server not known yet is asked once by the blocking connection (its first
        connection does: ``INFO cluster``, seeds, their errors, a Cluster's slot map), in a
        worker thread.
        """
        if not self.supported:
            return False
        if self.sync.cluster is None:
            await asyncio.to_thread(self.sync.request, "PING")
        self.ready = self.sync.cluster is not None
        return self.ready

    # -- connections of the running loop ----------------------------------------------------
    def _here(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        here = self._last
        if here is not None and here.loop is loop and here.fork == FORKS[0]:
            return here
        with self._lock:
            here = self._loops.get(loop)
            if here is None or here.fork != FORKS[0]:
                for old, conns in list(self._loops.items()):
                    if old.is_closed() or conns.fork != FORKS[0]:
                        conns.abandon()
                        del self._loops[old]
                here = self._loops[loop] = _LoopConnections(
                    loop, self._pool, self._perform, self.sync.max_connections, self.sync.timeout
                )
            self._last = here
        return here

    def _pool(self, address: tuple[str, int] | None, reader: bool = False) -> Any:
        """A redis.asyncio pool of a node (``None``: the server of the URL), as the blocking
        side builds its own; each connection of a ``reader`` pool sends ``READONLY`` first."""
        sync = self.sync
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": sync.timeout,
            "socket_timeout": None,  # one deadline per request instead (see _once)
            # Retries are ours (see _once): one on a broken connection, none on a timeout.
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            **plain_options(sync.ssl_options),
        }
        if sync.password is not None:
            kwargs["password"] = sync.password.get_secret_value()
        if sync.username:
            kwargs["username"] = sync.username
        if reader:
            kwargs["redis_connect_func"] = _connect_readonly
        host, port = address or (sync.host, sync.port)
        return redis.asyncio.ConnectionPool.from_url(sync._url(host, port), **kwargs)

    async def close(self) -> None:
        """Disconnect the running loop's connections (the next request reconnects)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            here = self._loops.pop(loop, None)
            if self._last is here:
                self._last = None
        if here is not None:
            await here.disconnect()

    def forget(self) -> None:
        """Forget every loop's connections (the blocking ``close``): those of a running
        loop are disconnected by that loop, the others close when collected."""
        with self._lock:
            loops, self._loops, self._last = self._loops, {}, None
        for loop, conns in loops.items():
            conns.abandon()
            if loop.is_running():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    asyncio.run_coroutine_threadsafe(conns.disconnect(), loop)

    # -- requests ---------------------------------------------------------------------------
    async def request(
        self,
        *args: Any,
        script: LuaScript | None = None,
        pipeline: list[tuple[Any, ...]] | None = None,
        route: str | None = None,
        wait: tuple[int, float] | None = None,
        readonly: bool = False,
        keep_errors: bool = False,
    ) -> Any:
        """Send one command (or a script, or a pipeline) and read the reply, as
        :meth:`.RedisConnection.request` does: on a Cluster to the node of ``route``'s slot
        (``readonly``: or one of its replicas), following ``MOVED`` and waiting out ``ASK``
        (:func:`.routing.request`, the body both paths run).

        A broken connection (server restarted) is retried once on a fresh one.

        Raises:
            ConsensusError: Fewer replicas than ``wait`` asks acknowledged the write.
            BackendError: The request failed (see :meth:`.RedisConnection.translate`).
        """
        here = self._here()
        if here.watch is None:
            await here.watched()
        sync = self.sync
        if not sync.cluster:
            return await self._once(here, here.seed, None, args, script, pipeline, wait,
                                    keep_errors)  # fmt: skip
        slots = await self._slot_map(here)
        body = routing.request(sync, slots, args, script, pipeline, route, wait, readonly)
        return await adrive(body, here.perform)

    async def fan_out(
        self,
        calls: Sequence[Call],
        *,
        wait: tuple[int, float] | None = None,
        readonly: bool = False,
    ) -> list[Any]:
        """Send many requests, one round trip per node, as :meth:`.RedisConnection.fan_out`
        does (:func:`.routing.fan_out`, the body both paths run; the nodes of a Cluster
        at once, as tasks of the loop)."""
        if not calls:
            return []
        here = self._here()
        if here.watch is None:
            await here.watched()
        slots = await self._slot_map(here) if self.sync.cluster else None
        body = routing.fan_out(self.sync, slots, calls, wait, readonly)
        return await adrive(body, here.perform)  # type: ignore[no-any-return]

    async def _slot_map(self, here: _LoopConnections) -> SlotMap:
        """The Cluster's slot map, shared with the blocking path (loaded on the loop when
        there is none: closed, or a forked child)."""
        slots = self.sync._slots
        if slots is not None and slots.fork == FORKS[0]:
            return slots
        return await adrive(routing.slot_map(self.sync), here.perform)

    async def _perform(self, here: _LoopConnections, step: Step) -> Any:
        """One step of a :mod:`.routing` body on this loop's connections (``"all"``: the
        bodies as tasks of the loop)."""
        kind = step[0]
        if kind == "once":
            _, address, reader, args, script, pipeline, wait, keep_errors = step
            self.routed += address is not None
            node = here.seed if address is None else here.node(address, reader)
            return await self._once(here, node, address, args, script, pipeline, wait,
                                    keep_errors)  # fmt: skip
        if kind == "sleep":
            await asyncio.sleep(step[1])
            return None
        bodies = step[1]
        perform = here.perform
        runs: list[Awaitable[Any]]
        if len(bodies) == 1:
            runs = [adrive(bodies[0], perform)]
        else:
            runs = [asyncio.ensure_future(adrive(body, perform)) for body in bodies]
        failures: list[BaseException | None] = []
        for run in runs:  # every node's reply before the first failure is raised
            try:
                await run
            except asyncio.CancelledError:
                for other in runs:
                    if isinstance(other, asyncio.Future):
                        other.cancel()
                raise
            except BaseException as err:
                failures.append(err)
            else:
                failures.append(None)
        return failures

    async def _once(
        self,
        here: _LoopConnections,
        node: _Node,
        address: tuple[str, int] | None,
        args: tuple[Any, ...],
        script: LuaScript | None,
        pipeline: list[tuple[Any, ...]] | None,
        wait: tuple[int, float] | None,
        keep_errors: bool = False,
    ) -> Any:
        """One request on a connection of ``node`` (at ``address``): a broken connection
        (server restarted) is retried once on a fresh one; errors are translated."""
        self.sent += 1
        slots = node.slots
        sync = self.sync
        if slots is not None:
            if slots.locked():
                try:
                    await asyncio.wait_for(slots.acquire(), sync.timeout)
                except asyncio.TimeoutError:
                    raise BackendUnavailable(
                        f"{sync.where}: no free connection within {sync.timeout}s "
                        f"(max_connections={sync.max_connections})"
                    ) from None
            else:
                await slots.acquire()
        # One deadline for the whole request (the connections have no socket timeout of
        # their own: redis.asyncio would start a timer per send and per read).
        limit = sync.timeout if wait is None else sync.timeout + wait[1] + _WAIT_MARGIN
        try:
            for attempt in (0, 1):
                idle = node.idle
                fresh = not idle
                if fresh:  # (not in an ``except IndexError``: its errors would chain to it)
                    try:
                        async with _deadline(limit):
                            conn = await node.pool.get_connection()
                    except RedisError as err:
                        if attempt or not sync._cut_after_handshake(err):
                            raise sync.translate(err, cut_twice=bool(attempt)) from err
                        continue
                    except asyncio.TimeoutError as err:
                        raise sync.translate(_timed_out(sync, address)) from err
                else:
                    conn = idle.pop()
                task = here.track(limit)
                try:
                    try:
                        reply = await exchange(conn, args, script, pipeline, wait, keep_errors)
                    finally:
                        late = here.untrack(task)  # (before any other await)
                except asyncio.CancelledError:
                    await node.drop(conn)  # interrupted mid-request: unknown state
                    if late:
                        raise sync.translate(_timed_out(sync, address)) from None
                    raise
                except ResponseError as err:  # the whole reply was read: the connection is fine
                    node.idle.append(conn)
                    raise sync.translate(err) from err
                except _RedisConnectionError as err:
                    await node.drop(conn)
                    await node.drop_idle()  # their server is likely gone too
                    if attempt or refusal(err) is not None:
                        raise sync.translate(err, cut_twice=fresh and bool(attempt)) from err
                    continue
                except (RedisError, OSError) as err:
                    await node.drop(conn)
                    raise sync.translate(err) from err
                except BaseException:
                    await node.drop(conn)  # interrupted mid-request (cancelled): unknown state
                    raise
                node.idle.append(conn)
                if wait is not None:
                    reply, acked = reply
                    if acked < wait[0]:
                        raise ConsensusError(
                            f"{sync.where}: the write is on the primary but only {acked} of "
                            f"{wait[0]} replica(s) acknowledged it within {wait[1]}s",
                            acknowledged=acked, quorum=wait[0], timeout=wait[1],
                        )  # fmt: skip
                return reply
        finally:
            if slots is not None:
                slots.release()
        raise AssertionError("unreachable")  # pragma: no cover


async def _connect_readonly(conn: Any) -> None:
    """How a connection to a replica that reads starts: as any other, then ``READONLY``
    (a Cluster replica then serves the reads of its primary's slots)."""
    await conn.on_connect()
    await conn.send_command("READONLY")
    if await conn.read_response() not in (b"OK", "OK"):  # pragma: no cover - the server's word
        raise _RedisConnectionError("READONLY was refused")


__all__ = ["AsyncRedisConnection", "exchange"]

"""Lean connections of the Redis backend: pooled sockets, one request each, Cluster slots.

The hot path skips redis-py's per-command machinery (pool checkout with a readiness poll,
retries, metrics hooks: several times the cost of the command itself on loopback). A
:class:`Connections` lends sockets of one node; :class:`SlotMap` keeps one per node of a
Redis Cluster and tells which node serves a key's slot (``CLUSTER SLOTS``, refreshed on
``MOVED``), and which replicas the node has (reads sent to them when asked: see
:meth:`RedisConnection.request`, ``readonly``). How a request finds its node (``MOVED``
followed, ``ASK`` waited out, replicas, a batch split per node) is written once, in
:mod:`.routing`, and run by both this blocking path and the async one (:mod:`.aio`).

Example:
    >>> slots = SlotMap(lambda host, port: None)
    >>> slots.load([[0, 16383, [b"10.0.0.1", 7000, b"id"]]], "seed")
    >>> slots.owner(b"pm:{ns}:")
    ('10.0.0.1', 7000)
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import TimeoutError as _RedisTimeoutError
from redis.retry import Retry

from ...aio import drive
from ...errors import (
    BackendError,
    BackendPermissionError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ConsensusError,
)
from ...urls import Secret  # the one password wrapper (old import path kept)
from .scripts import LuaScript

#: Bumped in a forked child: a client made before the fork holds the parent's sockets.
FORKS = [0]
if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=lambda: FORKS.__setitem__(0, FORKS[0] + 1))

#: One request of :meth:`RedisConnection.fan_out`: ``(route, script, args, pipeline)``.
Call = tuple[str, "LuaScript | None", "tuple[Any, ...] | None", "list[tuple[Any, ...]] | None"]

#: Extra seconds to read a WAIT reply beyond the wait itself.
_WAIT_MARGIN = 1.0
_REDIRECTS = 5  # most MOVED hops followed for one request
#: First and longest pause before asking again a node whose slot is being migrated (ASK).
_ASK_PAUSE = (0.005, 0.1)
#: TLS failures that a retry could cure: the peer went away mid-handshake.
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
#: How Redis words an ACL refusal: top level (NOPERM) or inside a Lua script (Redis 7).
_NOPERM = ("NOPERM", "no permissions", "user executing the script can't")
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
#: Seconds a replica found in sync serves reads before its state is asked again.
_REPLICA_CHECK = 1.0
#: Seconds a replica found down, lagging or refusing is left alone (reads go to its primary).
_REPLICA_PAUSE = 2.0
#: Age in seconds of a slot map after which reads from replicas ask for a fresh one (replicas
#: added, or named by the server once they have replicated something).
_MAP_AGE = 10.0
#: Replies of a replica that cannot serve a read now (nothing ran there): the slot is not its
#: primary's any more (MOVED), it lost its primary (MASTERDOWN, CLUSTERDOWN, TRYAGAIN), or a
#: script it was sent writes (READONLY: the script stopped at its first write). LOADING is a
#: ConnectionError (unavailable).
_REPLICA_REFUSALS = (AskError, ReadOnlyError, ClusterDownError, TryAgainError)


def plain_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with secrets (``SecretStr``, :class:`Secret`) unwrapped, for redis-py only.

    Example:
        >>> plain_options({"ssl_password": Secret("k3y"), "ssl_certfile": "client.pem"})
        {'ssl_password': 'k3y', 'ssl_certfile': 'client.pem'}
    """
    return {
        name: value.get_secret_value() if hasattr(value, "get_secret_value") else value
        for name, value in options.items()
    }


def _cause(
    err: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first exception of type ``kind`` in the chain of ``err`` (redis-py wraps OSErrors)."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def refusal(err: RedisError) -> str | None:
    """What to change when the server refused us for good (credentials, ACL, TLS), else ``None``.

    Such a refusal is permanent: retrying the same request with the same settings
    cannot succeed, so it is never retried.
    """
    text = str(err)
    if isinstance(err, (AuthenticationError, AuthorizationError)) or text.startswith(
        ("WRONGPASS", "NOAUTH")
    ):
        return "check the user name and password (url, password field, or ACL of the server)"
    if isinstance(err, NoPermissionError) or any(mark in text for mark in _NOPERM):
        return "grant the ACL user this command or key pattern (see docs/security.md)"
    tls = _cause(err, ssl.SSLError)
    if tls is not None and not isinstance(tls, _TRANSIENT_SSL):
        return (
            "the TLS handshake failed: check ssl_ca_certs (the CA of the server's certificate) "
            "and, for a server that checks clients, ssl_certfile and ssl_keyfile"
        )
    return None


class Connections:
    """The connections of one node: a redis-py pool and the connections it lent.

    A connection is borrowed from ``idle`` (or from the pool when none is idle), used by
    one thread for one request, and put back; the pool still creates, authenticates,
    bounds and disconnects every connection.
    """

    __slots__ = ("fork", "idle", "pool", "slots")

    def __init__(self, pool: redis.ConnectionPool, max_connections: int | None) -> None:
        self.pool = pool
        self.idle: list[Any] = []
        self.fork = FORKS[0]
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

    def close(self) -> None:
        self.idle.clear()
        with contextlib.suppress(redis.RedisError, OSError):
            self.pool.disconnect()


def exchange(
    conn: Any,
    args: tuple[Any, ...],
    script: LuaScript | None,
    pipeline: Sequence[tuple[Any, ...]] | None,
    wait: tuple[int, float] | None = None,
    asking: bool = False,
    keep_errors: bool = False,
) -> Any:
    """One request on ``conn``: a command, a script (loaded on NOSCRIPT) or a pipeline.

    ``wait=(replicas, seconds)``: then ``WAIT`` on the same connection (it counts the
    replicas that acknowledged this connection's writes) and return ``(reply, acked)``.
    ``asking``: send ``ASKING`` first (a Cluster slot being migrated). ``keep_errors``: a
    pipeline's error replies are returned in their places instead of raised.
    """
    if asking:
        conn.send_command("ASKING")
        conn.read_response()
    if pipeline is not None:
        conn.send_packed_command(conn.pack_commands(pipeline))
        replies: list[Any] = []
        error: ResponseError | None = None
        for _ in pipeline:  # read every reply, even after an error one
            try:
                replies.append(conn.read_response())
            except ResponseError as err:
                error = error or err
                replies.append(err if keep_errors else None)
        if error is not None and not keep_errors:
            raise error
        reply: Any = replies
    elif script is None:
        conn.send_command(*args)
        reply = conn.read_response()
    else:
        try:
            conn.send_command("EVALSHA", script.sha, *args)
            reply = conn.read_response()
        except NoScriptError:
            conn.send_command("SCRIPT", "LOAD", script.source)
            conn.read_response()
            conn.send_command("EVALSHA", script.sha, *args)
            reply = conn.read_response()
    if wait is None:
        return reply
    replicas, seconds = wait
    if pipeline and all(isinstance(r, ResponseError) for r in reply):
        # Every command was refused (a node that became a replica answers MOVED to all):
        # nothing was written here, so nothing to wait for; WAIT would fail on a replica
        # and hide the redirects the caller follows.
        return reply, replicas
    conn.send_command("WAIT", replicas, max(1, int(seconds * 1000)))
    return reply, int(conn.read_response(timeout=seconds + _WAIT_MARGIN))


def redirect(err: ResponseError) -> tuple[bool, str, int] | None:
    """``(ask, host, port)`` of a Cluster ``MOVED`` or ``ASK`` error, else ``None``."""
    if isinstance(err, AskError):  # MovedError derives from it
        return not isinstance(err, MovedError), str(err.host), int(err.port)
    return None


def _address(member: Sequence[Any], seed_host: str) -> tuple[str, int]:
    """``(host, port)`` of one node of a ``CLUSTER SLOTS`` entry (no host: the seed's)."""
    host = member[0].decode() if isinstance(member[0], bytes) else str(member[0])
    return host or seed_host, int(member[1])


class SlotMap:
    """Which node serves each of the 16384 slots of a Redis Cluster, and their connections.

    Args:
        connect: Builds the :class:`Connections` of a node from ``(host, port)``.
        connect_reader: Builds the connections of a replica that reads (each sends
            ``READONLY`` first); ``None`` when reads never go to replicas.

    Example:
        >>> slots = SlotMap(lambda host, port: None)
        >>> slots.load([[0, 16383, [b"h", 7000, b"a"], [b"h", 7003, b"b"]]], "seed")
        >>> slots.replicas[("h", 7000)]
        (('h', 7003),)
    """

    __slots__ = (
        "connect", "connect_reader", "fork", "health", "known", "loaded", "lock", "nodes", "owners",
        "readers", "replicas", "turns",
    )  # fmt: skip

    def __init__(
        self,
        connect: Callable[[str, int], Any],
        connect_reader: Callable[[str, int], Any] | None = None,
    ) -> None:
        self.connect = connect
        self.connect_reader = connect_reader
        self.owners: list[tuple[str, int] | None] = [None] * 16384
        #: Every node the last ``CLUSTER SLOTS`` named (primaries and replicas), in order:
        #: where to ask for a fresh map when the seed node is gone.
        self.known: list[tuple[str, int]] = []
        #: The replicas of each primary the last ``CLUSTER SLOTS`` named (failed ones are
        #: left out by the server).
        self.replicas: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}
        self.nodes: dict[tuple[str, int], Any] = {}
        #: Connections of replicas for reads (``READONLY``): never used for a write, which a
        #: replica would run and refuse (``READONLY``) instead of redirecting it (``MOVED``).
        self.readers: dict[tuple[str, int], Any] = {}
        #: ``address -> (usable, until)``: a replica's state, asked again after ``until``.
        self.health: dict[tuple[str, int], tuple[bool, float]] = {}
        #: Round robin of the reads of each primary over it and its replicas.
        self.turns: dict[tuple[str, int], int] = {}
        self.loaded = 0.0  # time.monotonic() of the last load
        self.lock = threading.Lock()
        self.fork = FORKS[0]

    def load(self, reply: Sequence[Any], seed_host: str) -> None:
        """Fill the map from a ``CLUSTER SLOTS`` reply (an empty host means the seed's)."""
        owners = [None] * 16384
        known: dict[tuple[str, int], None] = {}
        replicas: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}
        for start, end, primary, *copies in reply:
            for member in (primary, *copies):
                known[_address(member, seed_host)] = None
            node = _address(primary, seed_host)
            owners[int(start) : int(end) + 1] = [node] * (int(end) - int(start) + 1)
            replicas[node] = tuple(_address(member, seed_host) for member in copies)
        self.owners = owners  # type: ignore[assignment]
        self.known = list(known)
        self.replicas = replicas
        self.loaded = time.monotonic()

    def owner(self, route: str | bytes) -> tuple[str, int] | None:
        """The node of the slot of ``route`` (``None`` when the map does not know it)."""
        data = route.encode() if isinstance(route, str) else route
        return self.owners[key_slot(data)]

    def moved(self, route: str | bytes, host: str, port: int) -> None:
        """Record one slot's new owner (a ``MOVED`` reply), before a full refresh."""
        data = route.encode() if isinstance(route, str) else route
        self.owners[key_slot(data)] = (host, port)

    def node(self, address: tuple[str, int]) -> Any:
        """The connections of the node at ``address`` (made on first use)."""
        conns = self.nodes.get(address)
        if conns is None:
            with self.lock:
                conns = self.nodes.get(address)
                if conns is None:
                    conns = self.nodes[address] = self.connect(*address)
        return conns

    def reader(self, address: tuple[str, int]) -> Any:
        """The ``READONLY`` connections of the replica at ``address`` (made on first use)."""
        conns = self.readers.get(address)
        if conns is None:
            assert self.connect_reader is not None, "reads from replicas were not asked for"
            with self.lock:
                conns = self.readers.get(address)
                if conns is None:
                    conns = self.readers[address] = self.connect_reader(*address)
        return conns

    def close(self) -> None:
        with self.lock:
            nodes, self.nodes = list(self.nodes.values()), {}
            readers, self.readers = list(self.readers.values()), {}
        for conns in nodes + readers:
            conns.close()


class RedisConnection:
    """The one way to Redis: pooled connections, Cluster routing, scripts, error translation.

    A :class:`~.backend.RedisBackend` holds one (``backend.connection``); the analytics,
    shared structures and lock managers go through its public surface
    (:meth:`execute`, :meth:`pipeline`, :meth:`run_script`, :meth:`request`,
    :meth:`redis_client`, :meth:`translate`). No socket is opened before the first request;
    a pickled connection carries its settings only and reconnects on first use, and a
    forked child starts on fresh sockets.

    Args:
        host: Seed node's host.
        port: Seed node's port.
        db: Database number.
        timeout: Seconds for connecting and for each reply (and for a free connection).
        max_connections: Bound of the connections of one node (``None``: no bound).
        username: ACL user name.
        password: The password, wrapped so that it never shows.
        scheme: ``"redis"`` or ``"rediss"`` (TLS).
        passthrough: Query string of the URL kept for redis-py (``ssl_*`` options).
        ssl_options: ``ssl_*`` keyword arguments of redis-py.
        cluster: ``True``/``False``, or ``None`` to ask the server (``INFO cluster``) once.
        wait: ``(replicas, seconds)`` of a ``WAIT`` after each write that asks for it
            (``consistency="strong"``), else ``None``.
        seeds: More nodes of the same Cluster, ``(host, port)`` each: where the client
            connects when ``host:port`` does not answer at startup, and asks for the slot
            map when the nodes it knows are gone.
        read_from_replicas: Send the requests marked ``readonly`` (see :meth:`request`) to
            the replicas of the slot's primary too, in turn with the primary (a Cluster only).

    Example:
        >>> conn = RedisConnection("cache.local", 6380, password=Secret("s3cret"))
        >>> conn
        RedisConnection('cache.local:6380')
        >>> conn.where, conn.cluster
        ('Redis at cache.local:6380', None)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        *,
        timeout: float = 5.0,
        max_connections: int | None = None,
        username: str | None = None,
        password: Secret | None = None,
        scheme: str = "redis",
        passthrough: str = "",
        ssl_options: dict[str, Any] | None = None,
        cluster: bool | None = None,
        wait: tuple[int, float] | None = None,
        seeds: Sequence[tuple[str, int]] = (),
        read_from_replicas: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.timeout = timeout
        self.max_connections = max_connections
        self.username = username
        self.password = password
        self.scheme = scheme
        self.passthrough = passthrough
        self.ssl_options = dict(ssl_options or {})
        self.cluster = cluster
        self.wait = wait
        self.seeds = [(str(h), int(p)) for h, p in seeds if (str(h), int(p)) != (host, port)]
        self.read_from_replicas = bool(read_from_replicas)
        if cluster is False and (self.seeds or self.read_from_replicas):
            raise ConfigError(
                "seeds and read_from_replicas are for a Redis Cluster, not with cluster=False"
            )
        #: The seed node in use: ``(host, port)``, or the first of :attr:`seeds` that
        #: answered when it did not.
        self._at = (host, port)
        self._lock = threading.RLock()
        self._pool: Connections | None = None
        self._slots: SlotMap | None = None
        self._threads: ThreadPoolExecutor | None = None

    @property
    def where(self) -> str:
        """``Redis at host:port``: how errors name the server."""
        return f"Redis at {self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"RedisConnection({f'{self.host}:{self.port}'!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state["_pool"] = state["_slots"] = state["_threads"] = None  # nor threads
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {"seeds": [], "read_from_replicas": False, **state}
        state.setdefault("_at", (state["host"], state["port"]))
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._threads = None

    # -- the public surface ---------------------------------------------------------------
    def execute(self, *args: Any, route: str | None = None) -> Any:
        """Send one raw command (routed to the slot of ``route`` on a Cluster).

        Errors are translated (see :meth:`translate`); replies are raw (bytes).
        """
        return self.request(*args, route=route)

    def pipeline(self, commands: list[tuple[Any, ...]], *, route: str | None = None) -> list[Any]:
        """Send ``commands`` in one round trip (to the node of ``route``); their replies.

        Every reply is read even after an error one; the first error is then raised.
        """
        if not commands:
            return []
        return list(self.request(pipeline=commands, route=route))

    def run_script(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Any] = (),
        *,
        wait: bool = False,
    ) -> Any:
        """Run a Lua script (EVALSHA, loaded on NOSCRIPT) on the node of ``keys[0]``.

        Every key must share ``keys[0]``'s hash tag on a Cluster. ``wait=True``: wait for
        the replicas of :attr:`wait` (``consistency="strong"``) as a write does.
        """
        return self.request(
            len(keys), *keys, *args, script=script, route=keys[0] if keys else None,
            wait=self.wait if wait else None,
        )  # fmt: skip

    def redis_client(self, **overrides: Any) -> redis.Redis:
        """A plain redis-py client of the seed node with these settings.

        For what needs a dedicated connection (pub/sub, blocking reads); close it yourself.
        """
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": self.timeout,
            "socket_timeout": self.timeout,
            **plain_options(self.ssl_options),
        }
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        if self.username:
            kwargs["username"] = self.username
        kwargs.update(overrides)
        return redis.Redis.from_url(self._url(*self._at), **kwargs)

    def request(
        self,
        *args: Any,
        script: LuaScript | None = None,
        pipeline: list[tuple[Any, ...]] | None = None,
        route: str | None = None,
        wait: tuple[int, float] | None = None,
        readonly: bool = False,
    ) -> Any:
        """Send one command (or a script, or the commands of ``pipeline``); read the reply.

        ``script``: ``args`` are the arguments of EVALSHA after the SHA (the first key is
        the route). ``route``: a key of the request's slot (Cluster). ``wait``:
        ``(replicas, seconds)`` of a WAIT on the same connection. Redirections of a
        Cluster are followed: ``MOVED`` at once (bounded hops, the slot map reloaded);
        ``ASK`` (the slot is being migrated) by asking the same node again until the slot
        has moved, for up to the timeout (see the comment in the code for why).

        ``readonly``: the request writes nothing (a script too: a replica runs a script and
        refuses its first write). With :attr:`read_from_replicas` it goes, in turn, to the
        slot's primary or one of its replicas in sync (``READONLY`` connections); a replica
        that is down, out of sync or refuses (``MOVED``, ``MASTERDOWN``, ``LOADING``...)
        is left alone for a while and the request goes to the primary: what a replica
        answers may be a little behind the primary.

        Raises:
            ConsensusError: Fewer replicas than ``wait`` asks acknowledged the write.
            BackendError: The request failed (see :meth:`translate`).
        """
        client = self._seed()
        if not self.cluster:
            return self._once(client, args, script, pipeline, wait)
        slots = self._slot_map(client)
        body = routing.request(self, slots, args, script, pipeline, route, wait, readonly)
        return drive(body, functools.partial(self._perform, client, slots))

    def fan_out(
        self,
        calls: Sequence[Call],
        *,
        wait: tuple[int, float] | None = None,
        readonly: bool = False,
    ) -> list[Any]:
        """Send many requests, each to the node of its route: one round trip per node.

        On a Cluster the requests are grouped by the node serving their route's slot; each
        node gets its group as one pipeline (a script call is one ``EVALSHA`` of it, a
        pipeline call its commands), the nodes in parallel threads when there are several.
        A request refused by its node with ``MOVED``/``ASK`` (the slot moved or is moving) or
        ``NOSCRIPT`` (the node forgot the script) did nothing there and is sent again alone
        through :meth:`request`, which follows redirects (waits out a migration) and loads
        scripts; so send only requests that may be sent again: scripts, and pipelines of
        reads.

        Args:
            calls: ``(route, script, args, pipeline)`` each: ``args`` as for
                :meth:`request` with a script (``numkeys, keys..., argv...``), or
                ``pipeline`` a list of commands (then ``script`` and ``args`` are ``None``).
            wait: ``(replicas, seconds)``: a ``WAIT`` on each node's connection after its
                group (``consistency="strong"``).
            readonly: The calls write nothing: with :attr:`read_from_replicas` each node's
                group may go to one of its replicas instead (see :meth:`request`).

        Returns:
            The reply of each call, in order (a pipeline call's: the list of its replies).

        Raises:
            ConsensusError: Fewer replicas than ``wait`` asks acknowledged a node's writes.
            BackendError: A request failed (the first failure, once every reply is read).
        """
        client = self._seed()
        slots = self._slot_map(client) if self.cluster else None
        body = routing.fan_out(self, slots, calls, wait, readonly)
        return drive(body, functools.partial(self._perform, client, slots))

    def _perform(self, client: Connections, slots: SlotMap | None, step: tuple[Any, ...]) -> Any:
        """One step of a :mod:`.routing` body on the blocking connections (``client``: the
        seed in use; ``"all"``: a thread per body when there are several)."""
        kind = step[0]
        if kind == "once":
            _, address, reader, args, script, pipeline, wait, keep_errors = step
            if address is None or slots is None:
                conns = client
            else:
                conns = slots.reader(address) if reader else slots.node(address)
            return self._once(conns, args, script, pipeline, wait, keep_errors=keep_errors)
        if kind == "sleep":
            time.sleep(step[1])
            return None
        bodies = step[1]
        perform = functools.partial(self._perform, client, slots)
        failures: list[BaseException | None] = [None] * len(bodies)
        if len(bodies) == 1:
            runs: list[Callable[[], Any]] = [functools.partial(drive, bodies[0], perform)]
        else:
            pool = self._executor()
            runs = [pool.submit(drive, body, perform).result for body in bodies]
        for i, run in enumerate(runs):
            try:  # wait for every node before the caller raises the first failure
                run()
            except BaseException as err:
                failures[i] = err
        return failures

    def _executor(self) -> ThreadPoolExecutor:
        threads = self._threads
        if threads is None:
            with self._lock:
                threads = self._threads
                if threads is None:
                    threads = self._threads = ThreadPoolExecutor(
                        max_workers=16, thread_name_prefix="prefect-memory-redis"
                    )
        return threads

    def translate(self, err: BaseException, cut_twice: bool = False) -> BackendError | ConfigError:
        """The error of ours for a redis-py error (or an ``OSError`` of a raw socket).

        ``cut_twice``: two fresh connections in a row were closed by the server before any
        reply (a TLS server refusing this client).
        """
        where = self.where
        change = refusal(err) if isinstance(err, RedisError) else None
        if change is not None:
            user = f" as user {self.username!r}" if self.username else ""
            return BackendPermissionError(f"{where} refused the request{user}: {err}; {change}")
        if cut_twice and self._cut_after_handshake(err):
            # TLS 1.3 ends the client's handshake before the server checks its certificate:
            # a refusal then reaches us as an alert (above) or, as often, as a closed socket.
            # The server accepted TCP and TLS twice and then hung up: it refuses this client.
            return BackendPermissionError(
                f"{where} closed two new TLS connections in a row before any reply: it "
                "refuses this client; if the server checks clients (tls-auth-clients), set "
                f"ssl_certfile and ssl_keyfile to a certificate of its CA ({err})"
            )
        if isinstance(err, RedisError) and "DB index is out of range" in str(err):
            return ConfigError(
                f"{where}: the server has no database {self.db} (it has as many as its "
                "'databases' setting, 16 by default): use a smaller number in the URL"
            )
        files = {k: v for k, v in self.ssl_options.items() if k in _TLS_FILES and v}
        if files and _cause(err, (FileNotFoundError, IsADirectoryError)) is not None:
            named = ", ".join(f"{k}={v!r}" for k, v in files.items())
            return ConfigError(f"{where}: a TLS file is missing or a folder: check {named}")
        if isinstance(err, (ClusterDownError, TryAgainError)):
            # CLUSTERDOWN (a failover under way) or TRYAGAIN (a slot half migrated): the
            # command did not run; the same request succeeds once the cluster settles.
            return BackendUnavailable(f"{where}: the Cluster cannot serve this now: {err}")
        if isinstance(err, (_RedisTimeoutError, TimeoutError)):
            return BackendTimeout(f"{where} did not answer within {self.timeout}s: {err}")
        if isinstance(err, (_RedisConnectionError, OSError)):
            return BackendUnavailable(f"{where} is unreachable: {err}")
        return BackendError(f"{where}: {type(err).__name__}: {err}")

    def close(self) -> None:
        """Close every connection (the next request reconnects)."""
        with self._lock:
            client, self._pool = self._pool, None
            slots, self._slots = self._slots, None
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)
        if slots is not None:
            slots.close()
        if client is not None:
            client.close()

    # -- connections ----------------------------------------------------------------------
    def _url(self, host: str, port: int) -> str:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return urlunsplit((self.scheme, netloc, f"/{self.db}", self.passthrough, ""))

    def _connections(self, host: str, port: int, readonly: bool = False) -> Connections:
        """A pool of connections to one node (the seed node or one of a Cluster); each
        connection of a ``readonly`` pool sends ``READONLY`` first (reads on a replica)."""
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": self.timeout,
            "socket_timeout": self.timeout,
            # Retries are ours (see _once): one on a broken connection, none on a timeout.
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            **plain_options(self.ssl_options),
        }
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        if self.username:
            kwargs["username"] = self.username
        if readonly:
            kwargs["redis_connect_func"] = _connect_readonly
        pool = redis.ConnectionPool.from_url(self._url(host, port), **kwargs)
        return Connections(pool, self.max_connections)

    def _reader_connections(self, host: str, port: int) -> Connections:
        return self._connections(host, port, readonly=True)

    def _seed(self) -> Connections:
        client = self._pool
        if client is None or client.fork != FORKS[0]:
            with self._lock:
                client = self._pool
                if client is None or client.fork != FORKS[0]:
                    # After a fork the parent's sockets are not ours: start afresh (the
                    # pool of redis-py resets itself in the child too).
                    client = self._pool = self._connections(*self._at)
                    self._slots = None
                    self._threads = None  # the parent's threads do not exist here
        if self.cluster is None:
            client, info = self._ask_seeds(client, ("INFO", "cluster"))
            cluster = b"cluster_enabled:1" in info
            if not cluster and (self.seeds or self.read_from_replicas):
                what = "seeds" if self.seeds else "read_from_replicas"
                raise ConfigError(
                    f"{self.where} is a single server, not a Redis Cluster: {what} is for a "
                    "Cluster (drop it, or point the URL at a Cluster node)"
                )
            self.cluster = cluster
        return client

    def _ask_seeds(self, client: Connections, args: tuple[Any, ...]) -> tuple[Connections, Any]:
        """``args`` sent to the seed node in use, else to each of :attr:`seeds` in turn (a
        seed down at startup): the connections of the node that answered, and its reply.
        The first that answers becomes the seed in use (one thread looks at a time)."""
        try:
            return client, self._once(client, args, None, None, None)
        except BackendUnavailable as err:
            failure = err
        if not self.seeds:
            raise failure
        with self._lock:
            current = self._pool
            if current is not None and current is not client:  # another thread switched
                with contextlib.suppress(BackendUnavailable):
                    return current, self._once(current, args, None, None, None)
            for address in [(self.host, self.port), *self.seeds]:
                if address == self._at:
                    continue
                other = self._connections(*address)
                try:
                    reply = self._once(other, args, None, None, None)
                except BackendUnavailable:
                    other.close()
                    continue
                old, self._pool, self._at = self._pool, other, address
                self._slots = None
                if old is not None:
                    old.close()
                return other, reply
        raise failure

    def _slot_map(self, seed: Connections) -> SlotMap:
        slots = self._slots
        if slots is None or slots.fork != FORKS[0]:
            with self._lock:
                slots = self._slots
                if slots is None or slots.fork != FORKS[0]:
                    seed, reply = self._ask_seeds(self._pool or seed, ("CLUSTER", "SLOTS"))
                    slots = SlotMap(self._connections, self._reader_connections)
                    slots.nodes[self._at] = seed
                    slots.load(reply, self._at[0])
                    self._slots = slots
        return slots

    def _once(
        self,
        client: Connections,
        args: tuple[Any, ...],
        script: LuaScript | None,
        pipeline: list[tuple[Any, ...]] | None,
        wait: tuple[int, float] | None,
        asking: bool = False,
        keep_errors: bool = False,
    ) -> Any:
        """One request on a connection of ``client``: a broken connection (server
        restarted) is retried once on a fresh one; redis-py errors are translated."""
        slots = client.slots
        if slots is not None and not slots.acquire(timeout=self.timeout):
            raise BackendUnavailable(
                f"{self.where}: no free connection within {self.timeout}s "
                f"(max_connections={self.max_connections})"
            )
        try:
            for attempt in (0, 1):
                fresh = False
                try:
                    conn = client.idle.pop()
                except IndexError:
                    fresh = True
                    try:
                        conn = client.pool.get_connection()
                    except RedisError as err:
                        if attempt or not self._cut_after_handshake(err):
                            raise self.translate(err, cut_twice=bool(attempt)) from err
                        continue
                try:
                    reply = exchange(conn, args, script, pipeline, wait, asking, keep_errors)
                except ResponseError as err:  # the whole reply was read: the connection is fine
                    client.idle.append(conn)
                    raise self.translate(err) from err
                except _RedisConnectionError as err:
                    client.drop(conn)
                    client.drop_idle()  # their server is likely gone too
                    if attempt or refusal(err) is not None or _cause(err, FileNotFoundError):
                        raise self.translate(err, cut_twice=fresh and bool(attempt)) from err
                    continue
                except RedisError as err:
                    client.drop(conn)
                    raise self.translate(err) from err
                except BaseException:
                    client.drop(conn)  # interrupted mid-request: unknown state
                    raise
                client.idle.append(conn)
                if wait is not None:
                    reply, acked = reply
                    if acked < wait[0]:
                        raise ConsensusError(
                            f"{self.where}: the write is on the primary "
                            f"but only {acked} of {wait[0]} replica(s) acknowledged it within "
                            f"{wait[1]}s",
                            acknowledged=acked, quorum=wait[0], timeout=wait[1],
                        )  # fmt: skip
                return reply
        finally:
            if slots is not None:
                slots.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _cut_after_handshake(self, err: BaseException) -> bool:
        """A TLS connection the server closed (EOF, reset) before answering anything."""
        cut = (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)
        return self.scheme == "rediss" and _cause(err, cut) is not None


def _connect_readonly(conn: Any) -> None:
    """How a connection to a replica that reads starts: as any other, then ``READONLY``
    (a Cluster replica then serves the reads of its primary's slots)."""
    conn.on_connect()
    conn.send_command("READONLY")
    if conn.read_response() not in (b"OK", "OK"):  # pragma: no cover - the server's word
        raise _RedisConnectionError("READONLY was refused")


#: The former name (a mixin of the backend, now the connection object it holds).
RedisConnector = RedisConnection


__all__ = [
    "FORKS",
    "Call",
    "Connections",
    "RedisConnection",
    "RedisConnector",
    "Secret",
    "SlotMap",
    "exchange",
    "redirect",
]

from . import routing  # noqa: E402 - its bodies import this module's names

"""Requests routed over a Redis Cluster, written once for the blocking and the async path.

Each function here is a sans-I/O body (see :mod:`prefect_memory.aio`): it does no I/O
itself but yields its steps and is sent their results (or has their exception thrown in):

- ``("once", address, reader, args, script, pipeline, wait, keep_errors)``: one request on
  a connection of the node at ``address`` (``None``: the single server), of its
  ``READONLY`` connections when ``reader`` (a replica serving reads): the reply, or our
  error (:meth:`.RedisConnection.translate`);
- ``("sleep", seconds)``;
- ``("all", bodies)``: run these bodies at once (threads, or tasks of the event loop);
  a list of their failures (``None`` for each that succeeded).

:class:`~.connection.RedisConnection` drives them with its blocking connections (and a
thread per node for ``"all"``), :class:`~.aio.AsyncRedisConnection` with the event loop's
connections: so both paths route, follow ``MOVED``, wait out ``ASK``, refresh the shared
:class:`~.connection.SlotMap` and fall back from replicas the same way.

Example:
    >>> from prefect_memory.aio import drive
    >>> from prefect_memory.plugins.redis.connection import RedisConnection
    >>> conn = RedisConnection("h", 7000, cluster=True)
    >>> drive(request(conn, None, ("PING",)), lambda step: step[:2])
    ('once', None)
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, NoScriptError, ResponseError

from ...errors import BackendError, BackendPermissionError, BackendUnavailable, ConfigError
from .connection import (
    _ASK_PAUSE,
    _MAP_AGE,
    _REDIRECTS,
    _REPLICA_CHECK,
    _REPLICA_PAUSE,
    _REPLICA_REFUSALS,
    FORKS,
    SlotMap,
    redirect,
)

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Call, RedisConnection
    from .scripts import LuaScript

#: One step of a body (see the module docstring), and a body.
Step = tuple[Any, ...]
Body = Generator[Step, Any, Any]
Address = tuple[str, int]


def once(
    address: Address | None,
    args: tuple[Any, ...] = (),
    script: LuaScript | None = None,
    pipeline: list[tuple[Any, ...]] | None = None,
    wait: tuple[int, float] | None = None,
    *,
    reader: bool = False,
    keep_errors: bool = False,
) -> Step:
    """The step of one request on the node at ``address`` (see the module docstring)."""
    return ("once", address, reader, args, script, pipeline, wait, keep_errors)


def slot_map(conn: RedisConnection) -> Generator[Step, Any, SlotMap]:
    """The Cluster's slot map shared by both paths; loaded when there is none (closed, or a
    forked child) from the seed in use or the other seeds."""
    slots = conn._slots
    if slots is not None and slots.fork == FORKS[0]:
        return slots
    fresh = SlotMap(conn._connections, conn._reader_connections)
    yield from refresh(conn, fresh, strict=True)
    with conn._lock:
        slots = conn._slots
        if slots is None or slots.fork != FORKS[0]:
            slots = conn._slots = fresh
    return slots


def refresh(conn: RedisConnection, slots: SlotMap, strict: bool = False) -> Body:
    """Reload the slot map from the seed node, or from any other node the map knows when
    the seed is gone (a failed-over primary). ``strict``: raise when no node answers;
    else leave the map as it is (the next failure tries again)."""
    at = conn._at
    first = [at, *(a for a in [(conn.host, conn.port), *conn.seeds] if a != at)]
    failure: BackendError | None = None
    for address in [*first, *(a for a in slots.known if a not in first)]:
        try:
            reply = yield once(address, ("CLUSTER", "SLOTS"))
        except BackendError as err:
            failure = failure or err
            continue
        if reply:  # a node that lost its slots' view answers []
            slots.load(reply, address[0])
            return
    if strict and failure is not None:
        raise failure


def request(
    conn: RedisConnection,
    slots: SlotMap | None,
    args: tuple[Any, ...],
    script: LuaScript | None = None,
    pipeline: list[tuple[Any, ...]] | None = None,
    route: str | None = None,
    wait: tuple[int, float] | None = None,
    readonly: bool = False,
) -> Body:
    """One request to the node of ``route`` (see :meth:`.RedisConnection.request`);
    ``slots=None``: to the single server."""
    if slots is None:
        return (yield once(None, args, script, pipeline, wait))
    if route is None and script is not None:
        route = args[1]
    owner = None if route is None else slots.owner(route) or conn._at
    if readonly and conn.read_from_replicas and owner is not None and wait is None:
        replica = yield from _reader(conn, slots, owner)
        if replica is not None:
            try:
                return (yield once(replica, args, script, pipeline, reader=True))
            except BackendError as err:
                if not (yield from _replica_failed(conn, slots, replica, err)):
                    raise
    node = owner or conn._at
    hops, pause, deadline = 0, _ASK_PAUSE[0], None
    while True:
        try:
            return (yield once(node, args, script, pipeline, wait))
        except BackendUnavailable:
            # The node is gone (killed, or failed over): its replica may serve its
            # slots by the next call. The error still reaches the caller: the request
            # may have run, and whether to send it again is the caller's call.
            yield from refresh(conn, slots)
            raise
        except BackendError as err:
            hop = redirect(err.__cause__) if isinstance(err.__cause__, ResponseError) else None
            if hop is None or route is None:
                raise
            asking, host, port = hop
            if asking:
                # The slot is being migrated. ASK is not followed: our scripts declare
                # one key and touch others (and a pipeline's ASKING covers only its first
                # command), so on the importing node they would run on the keys already
                # moved only: a key still on the source looks absent, and what they write
                # there collides with the source's copy (MIGRATE: "BUSYKEY", or older
                # values restored over newer ones by a --cluster-replace). Nothing ran
                # here; ask this node again until the slot has moved (MOVED), for up to
                # the timeout.
                now = time.monotonic()
                deadline = deadline or now + conn.timeout
                if now >= deadline:
                    raise BackendUnavailable(
                        f"Redis Cluster at {conn.host}:{conn.port}: the slot of {route!r} "
                        f"was still being migrated after {conn.timeout}s (ASK {host}:{port})"
                    ) from err
                yield ("sleep", min(pause, deadline - now))
                pause = min(pause * 2, _ASK_PAUSE[1])
                continue
            hops += 1
            if hops > _REDIRECTS:
                raise BackendUnavailable(
                    f"Redis Cluster at {conn.host}:{conn.port}: still redirected after "
                    f"{_REDIRECTS} hops"
                ) from err
            slots.moved(route, host, port)  # the slot moved for good: learn the new map
            yield from refresh(conn, slots, strict=True)
            node = (host, port)


def fan_out(
    conn: RedisConnection,
    slots: SlotMap | None,
    calls: Sequence[Call],
    wait: tuple[int, float] | None = None,
    readonly: bool = False,
) -> Body:
    """Many requests, one round trip per node (see :meth:`.RedisConnection.fan_out`);
    ``slots=None``: all to the single server."""
    if not calls:
        return []
    if readonly and wait is not None:
        raise ValueError("a readonly fan_out waits for no replica")
    if len(calls) == 1:
        route, script, args, pipe = calls[0]
        reply = yield from request(conn, slots, args or (), script, pipe, route, wait, readonly)
        return [reply]
    groups: dict[Address | None, list[int]] = {}
    if slots is None:
        groups[None] = list(range(len(calls)))
    else:
        for i, call in enumerate(calls):
            groups.setdefault(slots.owner(call[0]) or conn._at, []).append(i)
    readers: dict[Address | None, Address] = {}
    if readonly and conn.read_from_replicas and slots is not None:
        for node in groups:
            assert node is not None
            replica = yield from _reader(conn, slots, node)
            if replica is not None:
                readers[node] = replica
    results: list[Any] = [None] * len(calls)
    again: list[int] = []
    bodies = [
        _group(conn, slots, node, members, calls, readers.get(node), wait, results, again)
        for node, members in groups.items()
    ]
    failures = yield ("all", bodies)
    failure = next((err for err in failures if err is not None), None)
    if failure is not None:
        if slots is not None and isinstance(failure, BackendUnavailable):
            yield from refresh(conn, slots)  # a node gone: see request()
        raise failure
    for i in sorted(again):
        route, script, args, pipe = calls[i]
        results[i] = yield from request(conn, slots, args or (), script, pipe, route, wait,
                                        readonly)  # fmt: skip
    return results


def _group(
    conn: RedisConnection,
    slots: SlotMap | None,
    node: Address | None,
    members: list[int],
    calls: Sequence[Call],
    replica: Address | None,
    wait: tuple[int, float] | None,
    results: list[Any],
    again: list[int],
) -> Body:
    """The calls of one node as one pipeline; their replies into ``results``, the calls
    to send again alone (``MOVED``/``ASK``/``NOSCRIPT``: nothing ran) into ``again``."""
    commands: list[tuple[Any, ...]] = []
    spans: list[tuple[int, int]] = []
    for i in members:
        _route, script, args, pipe = calls[i]
        if script is not None:
            spans.append((len(commands), 1))
            commands.append(("EVALSHA", script.sha, *(args or ())))
        else:
            spans.append((len(commands), len(pipe or ())))
            commands.extend(pipe or ())
    replies = None
    if replica is not None:
        assert slots is not None
        try:
            replies = yield once(replica, (), None, commands, reader=True, keep_errors=True)
        except BackendError as err:
            if not (yield from _replica_failed(conn, slots, replica, err)):
                raise
        else:
            refused = next((r for r in replies if isinstance(r, _REPLICA_REFUSALS)), None)
            if refused is not None and (yield from _replica_failed(conn, slots, replica, refused)):
                replies = None  # the whole group again, on the primary
    if replies is None:
        replies = yield once(node, (), None, commands, wait, keep_errors=True)
    error: ResponseError | None = None
    for i, (start, size) in zip(members, spans, strict=True):
        part = replies[start : start + size]
        failed = [r for r in part if isinstance(r, ResponseError)]
        if any(isinstance(r, (NoScriptError, AskError)) for r in failed):
            again.append(i)  # not run there: sent again alone
        elif failed:
            error = error or failed[0]
        else:
            results[i] = part[0] if calls[i][1] is not None else part
    if error is not None:
        raise conn.translate(error) from error


# -- reads from replicas ----------------------------------------------------------------------
def _reader(conn: RedisConnection, slots: SlotMap, primary: Address) -> Generator[
    Step, Any, Address | None
]:  # fmt: skip
    """The replica of ``primary`` that serves this read, ``None`` for the primary itself.

    Round robin over the primary and its replicas; a replica found down or out of sync
    (:func:`_replica_usable`) gives its turn to the primary.
    """
    age = time.monotonic() - slots.loaded
    if age > _MAP_AGE or (age > _REPLICA_CHECK and not slots.replicas.get(primary)):
        slots.loaded = time.monotonic()  # one refresh at a time: the others go on
        yield from refresh(conn, slots)
    replicas = slots.replicas.get(primary)
    if not replicas:
        return None
    turn = (slots.turns.get(primary, 0) + 1) % (len(replicas) + 1)
    slots.turns[primary] = turn  # (two threads may take the same turn: harmless)
    if turn == 0:
        return None
    replica = replicas[turn - 1]
    return replica if (yield from _replica_usable(slots, replica)) else None


def _replica_usable(slots: SlotMap, replica: Address) -> Generator[Step, Any, bool]:
    """Whether ``replica`` may serve reads: a replica whose link to its primary is up and
    which is not loading a full copy (``INFO replication``, asked at most once per
    :data:`_REPLICA_CHECK` seconds; a replica that failed waits :data:`_REPLICA_PAUSE`)."""
    now = time.monotonic()
    usable, until = slots.health.get(replica, (False, 0.0))
    if now < until:
        return usable
    try:
        reply = yield once(replica, ("INFO", "replication"), reader=True)
    except BackendError:
        usable = False
    else:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        usable = (
            info.get("role") == "slave"
            and info.get("master_link_status") == "up"
            and info.get("master_sync_in_progress", "0") == "0"
        )
    slots.health[replica] = (usable, now + (_REPLICA_CHECK if usable else _REPLICA_PAUSE))
    return usable


def _replica_failed(
    conn: RedisConnection, slots: SlotMap, replica: Address, err: BaseException
) -> Generator[Step, Any, bool]:
    """Whether a read that ``replica`` failed with ``err`` goes to the primary instead
    (then the replica is left alone for :data:`_REPLICA_PAUSE` seconds). A refusal for
    good (credentials, ACL, TLS) or an error of the request itself is raised instead."""
    cause = err.__cause__ if isinstance(err, BackendError) else err
    if isinstance(err, (BackendPermissionError, ConfigError)):
        return False
    if not isinstance(err, BackendUnavailable) and not isinstance(cause, _REPLICA_REFUSALS):
        return False
    slots.health[replica] = (False, time.monotonic() + _REPLICA_PAUSE)
    if isinstance(cause, AskError):  # its primary lost the slot: the map is old
        yield from refresh(conn, slots)
    return True


__all__ = ["Body", "Step", "fan_out", "once", "refresh", "request", "slot_map"]

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
from it. Against a Cluster (detected with one ``INFO cluster`` when the first connection
is made, or forced with ``cluster=True``) every request goes to the node serving its
namespace's slot (``CLUSTER SLOTS``, refreshed on ``MOVED``), on the same lean connections.

Layout 2 (``layout=2``, ``buckets=B``; see :mod:`.layout`): a namespace is spread over ``B``
hash-tag buckets ``P:{N:i}:`` instead of one slot, so over every primary of a Cluster. Each
batch goes as one script call per bucket (pipelined per node, nodes in parallel threads),
so what layout 1 makes atomic per batch (``put_many``, ``put_absent_many``, ``delete_many``,
``delete_if_unchanged``) is atomic per bucket only; ``tagged``, ``scan`` and ``clear``
visit every bucket. The namespace's layout record ``P:{N}:layout`` keeps each client on
its layout (:class:`~prefect_memory.errors.ConfigError` otherwise, naming
``prefect-memory upgrade``, which moves a layout-1 namespace to layout 2).

Consistency: ``consistency="strong"`` makes every write wait for ``quorum`` replicas to
acknowledge it (``WAIT quorum timeout`` on the connection that wrote) and raise
:class:`~prefect_memory.errors.ConsensusError` when fewer do within ``timeout``.
Change notification: ``put_many``/``delete_many`` take ``notify=(channel, source)``; the
script then PUBLISHes one message per batch (used by :mod:`prefect_memory.shared`).

Hot paths are server-side Lua scripts (EVALSHA, reloaded on NOSCRIPT): ``put_many``,
``get_many`` and ``delete_many`` are one call per batch. Keys, values and metadata travel
as one msgpack blob (Redis's Lua has ``cmsgpack``) instead of thousands of command
arguments, and ``get_many`` answers with one msgpack blob too; a batch whose records
share their metadata (as ``Memory.set_many`` makes them) sends it once.

Async (``capabilities.native_async``): each operation is one sans-I/O body (it yields its
requests and reads their replies, see :mod:`prefect_memory.aio`); the blocking methods
run it through :attr:`connection`, their ``a`` twins (``aget_many``, ``aput_many``...) on
the running event loop through redis.asyncio connections (:mod:`.aio`), with the same
round trips, replies and errors; on a Cluster too (each request to its slot's node, the
routing of :mod:`.routing` shared by both paths).

Example:
    >>> from prefect_memory.plugins.redis import RedisBackend
    >>> backend = RedisBackend.from_url("redis://:s3cret@cache.local:6380/2", key_prefix="app")
    >>> backend.url, backend.host, backend.port, backend.db, backend.key_prefix
    ('redis://:***@cache.local:6380/2', 'cache.local', 6380, 2, 'app')
    >>> "s3cret" in repr(backend)
    False
    >>> strong = RedisBackend.from_url("redis://h", consistency="strong", quorum=2, timeout=0.5)
    >>> strong.consistency, strong.quorum, strong.timeout
    ('strong', 2, 0.5)
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import msgpack

try:
    import redis  # checked first, so that the registry can name the install
except ImportError as _err:  # pragma: no cover - the registry turns this into a hint
    raise ImportError(
        "the redis:// backend needs redis-py: pip install 'prefect-memory[redis]'",
        name="redis",
    ) from _err

from ...aio import Body, Call, adrive, call, drive
from ...errors import BackendError, ConfigError, InvalidTTLError, SerializationError
from ...keys import glob_match, ns_token
from ...urls import redact_url, split_credentials
from ..base import (
    F_EXPIRES,
    Backend,
    Capabilities,
    EntryColumns,
    Record,
    StoreUsage,
)
from .aio import AsyncRedisConnection
from .connection import (  # noqa: F401 - Connections, RedisConnector, SlotMap: re-exported
    Connections,
    RedisConnection,
    RedisConnector,
    Secret,
    SlotMap,
)
from .layout import RECORD, Spread, check_layout, open_spread, read_record, refusal
from .scripts import COLUMNS, DELETE, GET, MAX_EXPIRY_MS, PUT, TAGGED, LuaScript

#: Options of ``from_url`` (besides ``ssl_*`` ones, which go to redis-py for ``rediss://``).
_OPTIONS = frozenset(
    {"timeout", "key_prefix", "max_connections", "password", "username", "consistency",
     "quorum", "cluster", "layout", "buckets", "seeds", "read_from_replicas"}
)  # fmt: skip
#: Options that may also come in the URL's query string.
_QUERY_OPTIONS = (
    "timeout", "key_prefix", "max_connections", "consistency", "quorum", "cluster", "layout",
    "buckets", "seeds", "read_from_replicas",
)  # fmt: skip
#: How the layout-1 scripts word a namespace whose layout record they found.
_LAYOUT_REFUSED = "prefect-memory: layout "
#: Query parameters of the URL that stay in it for redis-py to parse.
_URL_PASSTHROUGH = frozenset({"db"})
_PREFIX_FORBIDDEN = frozenset("{}*?[]\\^ \t\r\n\x00")
_SCAN_COUNT = 1000
#: Bytes of ``m`` fields and values a round of column-script calls returns before their
#: replies stop (the names left out are asked again): what a batch holds undecoded.
COLUMN_BUDGET = 16 << 20
_MIN_CALL_BUDGET = 1 << 20  # per call of a round (each also returns at least one entry)
_REDIRECTS = 5  # most MOVED/ASK hops followed for one request

_META = attrgetter(
    "created_at", "updated_at", "last_access", "access_count", "expires_at", "ttl",
    "sliding", "tags", "version",
)  # fmt: skip
_packb = msgpack.Packer(use_bin_type=False).pack  # Redis's cmsgpack knows no bin type
_unpackb = msgpack.unpackb
_NUMBER = (int, float)

#: ``(channel, source)`` of a write that publishes its changes.
Notify = tuple[str, str]
R = TypeVar("R")


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
            :class:`~prefect_memory.errors.BackendUnavailable` within it. With
            ``consistency="strong"`` also the longest wait for replica acknowledgements.
        key_prefix: First part of every Redis key (no braces, glob characters or spaces).
        max_connections: Bound of the connection pool (callers wait up to ``timeout`` for a
            free connection); ``None`` for no bound.
        password: Password (``str`` or pydantic ``SecretStr``); wins over one in the URL.
        username: ACL user name; wins over one in the URL.
        consistency: ``"eventual"`` (a write returns once the primary has it) or
            ``"strong"`` (a write also waits until ``quorum`` replicas acknowledge it).
        quorum: Replicas that must acknowledge a strong write (``WAIT quorum timeout``).
        cluster: ``True`` for a Redis Cluster, ``False`` for a single server, ``None`` to
            ask the server once (``INFO cluster``) when the first connection is made.
        ssl_options: ``ssl_*`` keyword arguments of redis-py, for ``rediss://`` only.
        layout: Key layout of the namespaces: ``1`` (one slot per namespace, the default)
            or ``2`` (each namespace spread over hash-tag buckets, see
            :mod:`~prefect_memory.plugins.redis.layout`). A namespace stored in the other
            layout is refused with a :class:`~prefect_memory.errors.ConfigError`.
        buckets: Buckets of a namespace that layout 2 creates (default 16; a namespace
            keeps the count it was created or upgraded with).
        seeds: More nodes of the same Cluster (``"host:port,host:port"`` or a list of
            them): tried in turn when the URL's node does not answer at startup.
        read_from_replicas: On a Cluster, reads that count no access (``exists``, ``info``,
            ``keys``, metadata, ``get_many(touch=False)``) go in turn to the slot's primary
            and its replicas in sync; they may be a little behind (docs/guarantees.md).

    Attributes:
        connection: The :class:`~.connection.RedisConnection` every request goes through
            (pools, Cluster routing, scripts, error translation); the analytics and shared
            structures borrow it.
    """

    scheme: ClassVar[str] = "redis"
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_ttl=True, server_scripts=True, atomic_moves=True, metadata_reads=True,
        native_async=True, column_scans=True,
    )  # fmt: skip

    @property
    def stale_reads(self) -> bool:
        """``read_from_replicas``: reads may miss writes the primary acknowledged."""
        return self.connection.read_from_replicas

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        timeout: float = 5.0,
        key_prefix: str = "pm",
        max_connections: int | None = None,
        password: Any = None,
        username: str | None = None,
        consistency: str = "eventual",
        quorum: int = 1,
        cluster: bool | None = None,
        ssl_options: Mapping[str, Any] | None = None,
        layout: int = 1,
        buckets: int | None = None,
        seeds: Any = (),
        read_from_replicas: bool = False,
    ) -> None:
        super().__init__()
        self.layout, self.buckets = check_layout(layout, buckets)
        self._spreads: dict[str, Spread] = {}
        #: Layout-1 namespaces a script or a read found without a record (its pipelined
        #: reads then skip the check; the scripts check on every call).
        self._checked: set[str] = set()
        #: The async way to the server (made on first async use; never pickled).
        self._aio: AsyncRedisConnection | None = None
        url, url_password = split_credentials(url)  # a raw '/', '?', '#' or '@' in it
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss"):
            raise ConfigError(f"a Redis URL starts with redis:// or rediss://, got {scheme!r}")
        try:
            host = parts.hostname or "127.0.0.1"
            port = parts.port or 6379
        except ValueError:
            raise ConfigError(f"invalid port in the Redis URL {redact_url(url)}") from None
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(k for k in query if k not in _URL_PASSTHROUGH and not k.startswith("ssl"))
        if unknown:
            raise ConfigError(f"unknown query options in the Redis URL: {', '.join(unknown)}")
        if scheme == "redis" and (ssl_options or any(k.startswith("ssl") for k in query)):
            raise ConfigError("ssl_* options need a rediss:// URL")
        db_text = query.get("db") or parts.path.strip("/") or "0"
        try:
            db = int(db_text)
        except ValueError:
            raise ConfigError(f"the Redis database must be a number, got {db_text!r}") from None
        if db < 0:
            raise ConfigError(f"the Redis database must be 0 or more, got {db}")
        timeout = _positive(timeout, "timeout")
        if max_connections is not None and (
            not isinstance(max_connections, int) or isinstance(max_connections, bool)
            or max_connections < 1
        ):  # fmt: skip
            raise ConfigError(f"max_connections must be a positive int, got {max_connections!r}")
        self.key_prefix = _check_prefix(key_prefix)
        self.consistency, self.quorum = _check_consistency(consistency, quorum)
        if cluster is not None and not isinstance(cluster, bool):
            raise ConfigError(f"cluster must be True, False or None, got {cluster!r}")
        if cluster and db:
            raise ConfigError(f"a Redis Cluster has database 0 only, got {db}")
        secret = password if password is not None else url_password
        if secret is not None and not isinstance(secret, str):
            if not callable(getattr(secret, "get_secret_value", None)):
                raise ConfigError(
                    f"password must be a str or a SecretStr, got {type(secret).__name__}"
                )
            secret = secret.get_secret_value()
        hidden = Secret(secret) if secret else None
        user = username if username is not None else (
            unquote(parts.username) if parts.username else None
        )  # fmt: skip
        user = user or None
        # The URL without credentials: shown by repr, and what the pool is built from.
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        shown = (user or "") + (":***" if hidden else "")
        shown_query = urlencode(
            [(k, "***" if "password" in k else v) for k, v in query.items() if k != "db"]
        )
        self.url = urlunsplit(
            (scheme, f"{shown}@{netloc}" if shown else netloc, f"/{db}", shown_query, "")
        )
        self._bases: dict[str, str] = {}
        self.connection = RedisConnection(
            host, port, db, timeout=timeout, max_connections=max_connections, username=user,
            password=hidden, scheme=scheme, cluster=cluster,
            passthrough=urlencode({k: v for k, v in query.items() if k != "db"}),
            ssl_options=dict(ssl_options or {}),
            wait=(self.quorum, timeout) if self.consistency == "strong" else None,
            seeds=_seeds(seeds), read_from_replicas=_flag(read_from_replicas, "read_from_replicas"),
        )  # fmt: skip

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Build from ``redis://...`` or ``rediss://...`` and keyword options.

        ``timeout``, ``key_prefix``, ``max_connections``, ``consistency``, ``quorum``,
        ``cluster``, ``layout``, ``buckets``, ``seeds`` (``h:p,h:p``) and
        ``read_from_replicas`` may also be given in the query string (keyword options win).

        Raises:
            ConfigError: An option is unknown or invalid (every unknown one is named).
        """
        url, url_password = split_credentials(url)
        if url_password is not None:
            options.setdefault("password", Secret(url_password))
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        kept = []
        for name, value in query:
            if name in _QUERY_OPTIONS:
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

    # -- settings, kept by the connection -------------------------------------------------
    @property
    def host(self) -> str:
        """Host of the (seed) server."""
        return self.connection.host

    @property
    def port(self) -> int:
        """Port of the (seed) server."""
        return self.connection.port

    @property
    def db(self) -> int:
        """Database number."""
        return self.connection.db

    @property
    def timeout(self) -> float:
        """Seconds for connecting, for each reply and for replica acknowledgements."""
        return self.connection.timeout

    @property
    def max_connections(self) -> int | None:
        """Bound of the connections of one node (``None``: no bound)."""
        return self.connection.max_connections

    @property
    def username(self) -> str | None:
        """ACL user name (``None``: the default user)."""
        return self.connection.username

    @property
    def ssl_options(self) -> dict[str, Any]:
        """``ssl_*`` keyword arguments of redis-py (``rediss://``)."""
        return self.connection.ssl_options

    @property
    def cluster(self) -> bool | None:
        """``True`` on a Redis Cluster (``None`` until the first connection tells)."""
        return self.connection.cluster

    @cluster.setter
    def cluster(self, value: bool | None) -> None:
        self.connection.cluster = value

    @property
    def _client(self) -> Connections | None:
        """The connections of the seed node (``None`` before the first request)."""
        return self.connection._pool

    @property
    def _slots(self) -> SlotMap | None:
        """The slot map of a Cluster (``None`` before the first routed request)."""
        return self.connection._slots

    def _base(self, ns: str) -> str:
        base = self._bases.get(ns)
        if base is None:
            if len(self._bases) > 4096:
                self._bases.clear()
            base = self._bases[ns] = f"{self.key_prefix}:{{{ns_token(ns)}}}:"
        return base

    def ping(self) -> None:
        self.connection.request("PING")

    def close(self) -> None:
        """Close the connections (the next request reconnects), the async ones too."""
        self.connection.close()
        if self._aio is not None:
            self._aio.forget()

    # -- for the layers above (prefect_memory.shared, analytics): see :attr:`connection` ------
    def execute(self, *args: Any, route: str | None = None) -> Any:
        """Send one raw command (see :meth:`.RedisConnection.execute`)."""
        return self.connection.execute(*args, route=route)

    def run_script(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Any] = (),
        *,
        wait: bool = False,
    ) -> Any:
        """Run a Lua script on the node of ``keys[0]`` (see :meth:`.RedisConnection.run_script`)."""
        return self.connection.run_script(script, keys, args, wait=wait)

    def redis_client(self, **overrides: Any) -> redis.Redis:
        """A plain redis-py client of the seed node (see :meth:`.RedisConnection.redis_client`)."""
        return self.connection.redis_client(**overrides)

    def usage(self) -> StoreUsage:
        """``used_memory`` against ``maxmemory`` (``INFO memory``; no limit when 0)."""
        reply = self.connection.request("INFO", "memory")
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return StoreUsage(
            used_bytes=int(info["used_memory"]),
            limit_bytes=int(info.get("maxmemory", "0") or 0) or None,
            details={"maxmemory_policy": info.get("maxmemory_policy")},
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_bases"] = {}
        state["_spreads"] = {}
        state["_checked"] = set()
        state["connection"] = copy.copy(self.connection)  # its settings, never its sockets
        state["_aio"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "connection" not in state:  # pickled before the connection was its own object
            state = dict(state)
            for name in ("_client", "_slots", "_pool_url"):
                state.pop(name, None)
            state["connection"] = RedisConnection(
                state.pop("host"), state.pop("port"), state.pop("db"),
                timeout=state.pop("timeout"), max_connections=state.pop("max_connections"),
                username=state.pop("username"), password=state.pop("_password"),
                scheme=state.pop("_scheme"), passthrough=state.pop("_passthrough"),
                ssl_options=state.pop("ssl_options"), cluster=state.pop("cluster"),
                wait=state.pop("_wait"),
            )  # fmt: skip
        state.setdefault("layout", 1)
        state.setdefault("buckets", None)
        state.setdefault("_spreads", {})
        state.setdefault("_checked", set())
        state["_aio"] = None
        super().__setstate__(state)

    # -- layouts --------------------------------------------------------------------------
    def _spread(self, ns: str) -> Spread | None:
        """The buckets of ``ns`` in layout 2 (``None`` for layout 1); read once per namespace."""
        if self.layout == 1:
            return None
        spread = self._spreads.get(ns)
        if spread is None:
            if len(self._spreads) > 4096:
                self._spreads.clear()
            spread = self._spreads[ns] = open_spread(self, ns, self.buckets)
        return spread

    def _one(self, ns: str, *args: Any, **options: Any) -> Body[Any]:
        """A layout-1 request: the scripts refuse a namespace that has a layout record."""
        try:
            reply = yield ("request", args, options)  # (call(...) would pack them again)
        except BackendError as err:
            text = str(err)
            at = text.find(_LAYOUT_REFUSED)
            if at < 0:
                raise
            words = text[at + len(_LAYOUT_REFUSED) :].split()
            # raises, with the bucket count, while the record is there
            yield call("_check_record", ns)
            raise ConfigError(refusal(ns, words[0] if words else None, 1)) from err
        self._checked.add(ns)  # the script found no record
        return reply

    def _check_record(self, ns: str, found: Any = None) -> None:
        """Refuse ``ns`` to this layout-1 client when it has a layout record."""
        v, b = read_record(self, ns)  # (again when ``found``: for the bucket count)
        if v is None and found is not None:  # gone since: still refused, it was there
            v = bytes(found).decode("utf-8", "replace")[:16]
        if v is not None:
            self._checked.discard(ns)
            raise ConfigError(refusal(ns, v, 1, b))

    # -- the drivers: each operation is one sans-I/O body, run blocking or async ------------
    # A body (``_get_many``, ``_put``...) yields its requests: ``call("request", ...)`` and
    # ``call("fan_out", ...)`` as for :class:`.RedisConnection`, or ``call(<method>, ...)``
    # for a blocking method of the backend itself (a namespace's layout record: read once
    # per namespace, or when a script refused the namespace).
    def _perform(self, step: Call) -> Any:
        method, args, kwargs = step
        if method == "request":
            return self.connection.request(*args, **kwargs)
        if method == "fan_out":
            return self.connection.fan_out(*args, **kwargs)
        return getattr(self, method)(*args, **kwargs)

    async def _aperform(self, step: Call) -> Any:
        method, args, kwargs = step
        aio = self._aio
        assert aio is not None  # made by _arun
        if method == "request":
            return await aio.request(*args, **kwargs)
        if method == "fan_out":
            return await aio.fan_out(*args, **kwargs)
        return await asyncio.to_thread(getattr(self, method), *args, **kwargs)

    def _run(self, body: Body[R]) -> R:
        return drive(body, self._perform)

    async def _arun(self, body: Body[R], method: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``body`` on the running event loop (a single server or a Cluster); with settings
        redis.asyncio does not take, ``method(*args, **kwargs)`` in a worker thread instead."""
        aio = self._aio
        if aio is None:
            with self._lock:
                aio = self._aio
                if aio is None:
                    aio = self._aio = AsyncRedisConnection(self.connection)
        if aio.ready or await aio.native():
            return await adrive(body, self._aperform)
        body.close()
        return await asyncio.to_thread(method, *args, **kwargs)

    def _spread_of(self, ns: str) -> Body[Spread | None]:
        """:meth:`_spread` in a body (the namespace's record is read once)."""
        spread = self._spreads.get(ns)
        if spread is None:
            spread = yield call("_spread", ns)
        return spread

    # -- protocol -------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        return self._run(self._get_many(ns, keys, now, touch))

    async def aget_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        """Async twin of :meth:`get_many` (the same body, on the event loop)."""
        return await self._arun(
            self._get_many(ns, keys, now, touch), self.get_many, ns, keys, now=now, touch=touch
        )

    def _get_many(
        self, ns: str, keys: Sequence[str], now: float, touch: bool
    ) -> Body[dict[str, Record]]:
        if not keys:
            return {}
        if not isinstance(keys, (list, tuple)):
            keys = list(keys)
        flag = b"1" if touch else b"0"
        spread = None if self.layout == 1 else (yield from self._spread_of(ns))
        if spread is None:
            raw = yield from self._one(
                ns, 1, self._base(ns), now, flag, _packb(keys), script=GET, readonly=not touch
            )
            return _records(keys, raw)
        groups = spread.group(keys)
        replies = yield call(
            "fan_out",
            [(spread.bases[b], GET, (1, spread.bases[b], now, flag, _packb(part)), None)
             for b, part in groups.items()], readonly=not touch,
        )  # fmt: skip
        out: dict[str, Record] = {}
        for part, raw in zip(groups.values(), replies, strict=True):
            out.update(_records(part, raw))
        return out

    def put_many(
        self, ns: str, records: Mapping[str, Record], *, now: float, notify: Notify | None = None
    ) -> None:
        """Upsert ``records``; ``notify=(channel, source)`` publishes the batch's changes
        (in layout 2 one message per bucket)."""
        self._run(self._put(ns, records, now=now, notify=notify, absent=False))

    async def aput_many(
        self, ns: str, records: Mapping[str, Record], *, now: float, notify: Notify | None = None
    ) -> None:
        """Async twin of :meth:`put_many`."""
        await self._arun(
            self._put(ns, records, now=now, notify=notify, absent=False),
            self.put_many, ns, records, now=now, notify=notify,
        )  # fmt: skip

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        """Write the records whose key has no live entry, atomically (one script call; in
        layout 2 one per bucket, each atomic)."""
        return set(self._run(self._put(ns, records, now=now, notify=None, absent=True)))

    async def aput_absent_many(
        self, ns: str, records: Mapping[str, Record], *, now: float
    ) -> set[str]:
        """Async twin of :meth:`put_absent_many`."""
        written = await self._arun(
            self._put(ns, records, now=now, notify=None, absent=True),
            self.put_absent_many, ns, records, now=now,
        )  # fmt: skip
        return set(written)

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        """Delete keys still holding the write ``(version, updated_at)``, atomically (in
        layout 2: atomically per bucket)."""
        return self._run(self._delete_if_unchanged(ns, expected, now))

    def _delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], now: float
    ) -> Body[set[str]]:
        if not expected:
            return set()
        wait = self.connection.wait
        spread = None if self.layout == 1 else (yield from self._spread_of(ns))
        if spread is None:
            items = [[key, int(token[0]), float(token[1])] for key, token in expected.items()]
            gone = yield from self._one(
                ns, 1, self._base(ns), now, _packb(items), script=DELETE, wait=wait
            )
            return {key.decode("utf-8") for key in gone}
        calls = []
        for b, part in spread.group(expected).items():
            items = [[key, int(expected[key][0]), float(expected[key][1])] for key in part]
            calls.append((spread.bases[b], DELETE, (1, spread.bases[b], now, _packb(items)), None))
        out: set[str] = set()
        for gone in (yield call("fan_out", calls, wait=wait)):
            out.update(key.decode("utf-8") for key in gone)
        return out

    def _put(
        self,
        ns: str,
        records: Mapping[str, Record],
        *,
        now: float,
        notify: Notify | None,
        absent: bool,
    ) -> Body[list[str]]:
        if not records:
            return []
        keys = list(records)
        recs = list(records.values())
        metas = list(map(_META, recs))
        # Records made together (Memory.set_many) share their expiry objects: each
        # distinct triple (by identity, alive in ``metas``: no equal-but-other value
        # like True for 1 slips past) is checked once.
        checked: set[tuple[int, int, int]] = set()
        for key, meta in zip(keys, metas, strict=True):  # every record, before any write
            expiry = (id(meta[4]), id(meta[5]), id(meta[6]))
            if expiry not in checked:
                _check_expiry(key, meta, now)
                checked.add(expiry)
        mode = 2 if absent else 0
        extra = () if notify is None else (notify[0], ns, notify[1])
        wait = self.connection.wait
        spread = None if self.layout == 1 else (yield from self._spread_of(ns))
        if spread is None:
            flat = _put_flat(keys, recs, metas, mode)
            reply = yield from self._one(
                ns, 1, self._base(ns), now, _packb(flat), *extra, script=PUT, wait=wait
            )
            return [key.decode("utf-8") for key in reply] if absent else keys
        calls = []
        for b, part in _group_items(spread, keys).items():
            flat = _put_flat(
                [keys[i] for i in part], [recs[i] for i in part], [metas[i] for i in part], mode
            )
            base = spread.bases[b]
            calls.append((base, PUT, (1, base, now, _packb(flat), *extra), None))
        replies = yield call("fan_out", calls, wait=wait)
        if not absent:
            return keys
        return [key.decode("utf-8") for reply in replies for key in reply]

    def delete_many(
        self, ns: str, keys: Sequence[str], *, now: float, notify: Notify | None = None
    ) -> int:
        """Delete ``keys``; ``notify=(channel, source)`` publishes the batch's deletions."""
        return self._run(self._delete_many(ns, keys, now, notify))

    async def adelete_many(
        self, ns: str, keys: Sequence[str], *, now: float, notify: Notify | None = None
    ) -> int:
        """Async twin of :meth:`delete_many`."""
        return await self._arun(
            self._delete_many(ns, keys, now, notify), self.delete_many, ns, keys, now=now,
            notify=notify,
        )  # fmt: skip

    def _delete_many(
        self, ns: str, keys: Sequence[str], now: float, notify: Notify | None
    ) -> Body[int]:
        if not keys:
            return 0
        extra = () if notify is None else (notify[0], ns, notify[1])
        wait = self.connection.wait
        spread = None if self.layout == 1 else (yield from self._spread_of(ns))
        if spread is None:
            removed = yield from self._one(
                ns, 1, self._base(ns), now, _packb(list(keys)), *extra, script=DELETE, wait=wait
            )
            return int(removed)
        calls = [
            (spread.bases[b], DELETE, (1, spread.bases[b], now, _packb(part), *extra), None)
            for b, part in spread.group(keys).items()
        ]
        return sum(int(n) for n in (yield call("fan_out", calls, wait=wait)))

    def _pipelines(
        self,
        ns: str,
        keys: Sequence[str],
        commands: Callable[[str], list[tuple[Any, ...]]],
        readonly: bool = False,
    ) -> Body[tuple[list[str], list[Any]]]:
        """Run ``commands(entry)`` for each key, one pipeline per bucket (layout 1: one, led
        by the layout check); the keys in the order of the replies, and the replies."""
        spread = None if self.layout == 1 else (yield from self._spread_of(ns))
        if spread is None:
            base = self._base(ns)
            prefix = base + "e:"
            check = ns not in self._checked
            pipeline: list[tuple[Any, ...]] = [("HGET", base + RECORD, "v")] if check else []
            for key in keys:
                pipeline += commands(prefix + key)
            if len(pipeline) == 1:
                one = ("request", pipeline[0], {"route": base, "readonly": readonly})
                replies = [(yield one)]
            else:
                replies = yield (
                    "request", (), {"pipeline": pipeline, "route": base, "readonly": readonly}
                )  # fmt: skip
            if check:
                found, *replies = replies
                if found is not None:
                    yield call("_check_record", ns, found)
                self._checked.add(ns)
            return list(keys), replies
        groups = spread.group(keys)
        calls = []
        for b, part in groups.items():
            prefix = spread.bases[b] + "e:"
            pipeline = []
            for key in part:
                pipeline += commands(prefix + key)
            calls.append((spread.bases[b], None, None, pipeline))
        ordered = [key for part in groups.values() for key in part]
        replies = yield call("fan_out", calls, readonly=readonly)
        return ordered, [r for reply in replies for r in reply]

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """The metadata and the stored size of the value of ``keys``, never the value: one
        call of the read-only column script (in layout 2 one per bucket, pipelined per
        node; more when replies reach their byte budget, see :data:`COLUMN_BUDGET`), which
        sends an ``m`` field over 4 MiB as its length and a count, access time or expiry
        over 64 bytes as ``?`` (another client's: ours stay far below), so neither leaves
        the server.

        Raises:
            SerializationError: An entry's fields are not what this library writes
                (another client wrote them), naming the key.
        """
        return self._run(self._meta_many(ns, keys, now))

    def _meta_many(self, ns: str, keys: Sequence[str], now: float) -> Body[dict[str, Record]]:
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        spread = None if self.layout == 1 else (yield from self._spread_of(ns))
        if spread is None:
            groups = [(self._base(ns), [key.encode() for key in unique])]
        else:
            groups = [(spread.bases[b], [key.encode() for key in part])
                      for b, part in spread.group(unique).items()]  # fmt: skip
        columns = yield from self._read_columns(ns, groups, -1, now, one=spread is None)
        return columns.records(range(len(columns)))

    def scan_columns(
        self,
        ns: str,
        *,
        now: float,
        batch_size: int = 1000,
        value_bytes: int = 0,
        query: Mapping[str, Any] | None = None,
    ) -> Iterator[EntryColumns]:
        """The live entries of ``ns`` as columns: ``SCAN``, then one script call per batch.

        The entries' names come from ``SCAN`` (per node in layout 2, as :meth:`scan`), up
        to ``batch_size`` a batch; a batch is read by one call of a read-only script (in
        layout 2 one per bucket, pipelined per node; a reply stops at its byte budget,
        :data:`COLUMN_BUDGET`, and the names it left out are asked again) that returns, per
        entry, the fields :meth:`meta_many` reads, the length of the value, and the value
        itself only when it has at most ``value_bytes`` bytes: a larger value never leaves
        the server. The
        fields are decoded as :meth:`meta_many` decodes them (an entry gone since the
        ``SCAN``, or expired at ``now``, is left out; unreadable fields raise
        :class:`~prefect_memory.errors.SerializationError` naming the key), straight into
        columns. No pushdown here: with a ``query`` the base class does the work.

        Raises:
            SerializationError: An entry's fields, or its name, are not what this library
                writes (another client wrote them).
        """
        if query is not None:
            yield from super().scan_columns(
                ns, now=now, batch_size=batch_size, value_bytes=value_bytes, query=query
            )
            return
        size = max(1, int(batch_size))
        limit = int(value_bytes) if value_bytes > 0 else -1
        spread = self._spread(ns)
        if spread is None:
            base = self._base(ns)
            self._check_record(ns)
            start = len(base.encode()) + 2
            names = self._scan_names(base + "e:*", base, readonly=True)
            for part in _chunks((name[start:] for name in names), size):
                columns = self._run(self._read_columns(ns, [(base, part)], limit, now, one=True))
                if columns.keys:
                    yield columns
            return
        for pairs in _chunks(_bucket_names(spread, self._spread_names(spread, "e:*", True)), size):
            groups: dict[bytes, list[bytes]] = {}
            for bucket, name in pairs:
                found = groups.get(bucket)
                if found is None:
                    groups[bucket] = [name]
                else:
                    found.append(name)
            del pairs
            routes = [(bucket.decode(), part) for bucket, part in groups.items()]
            columns = self._run(self._read_columns(ns, routes, limit, now, one=False))
            if columns.keys:
                yield columns

    def _read_columns(
        self, ns: str, groups: list[tuple[str, list[bytes]]], limit: int, now: float, *, one: bool
    ) -> Body[EntryColumns]:
        """The live entries of ``groups`` (route, names after ``e:``) read by the column
        script: one call per group (``one``: the layout-1 request, which refuses a namespace
        with a layout record), pipelined per node. A reply stops at its byte budget
        (:data:`COLUMN_BUDGET`, shared by the calls of a round): the names it left out are
        asked again; each reply is decoded as it comes, so no more than a round's budget
        (plus one entry per call) is held undecoded."""
        rows: list[tuple[Any, ...]] = []
        metas: dict[bytes, tuple[Any, ...]] = {}
        pending = [(route, names) for route, names in groups if names]
        while pending:
            budget = max(_MIN_CALL_BUDGET, COLUMN_BUDGET // len(pending))
            if one:
                ((route, names),) = pending
                reply = yield from self._one(
                    ns, 1, route, limit, budget, *names, script=COLUMNS, readonly=True
                )
                replies = [reply]
                del reply
            else:
                calls = [(route, COLUMNS, (1, route, limit, budget, *names), None)
                         for route, names in pending]  # fmt: skip
                replies = list((yield call("fan_out", calls, readonly=True)))
            left = []
            for i, (route, names) in enumerate(pending):
                done = _column_rows(names, replies[i], now, metas, rows.append)
                replies[i] = None  # decoded: its fields go
                if done < len(names):
                    left.append((route, names[done:]))
            pending = left
        if not rows:
            return EntryColumns([], [], [], [], [], [], [], [], [], [], [], [])
        return EntryColumns(*map(list, zip(*rows, strict=True)))

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        """One pipeline of ``HGET <entry> x`` (per bucket in layout 2): only the expiry
        travels, never the value.

        (Rather than ``EXISTS``: an entry that ``now`` finds expired but Redis has not
        dropped yet, e.g. under a caller's own clock, is not live, as for ``get_many``.)
        """
        return self._run(self._exists_many(ns, keys, now))

    async def aexists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        """Async twin of :meth:`exists_many`."""
        return await self._arun(
            self._exists_many(ns, keys, now), self.exists_many, ns, keys, now=now
        )

    def _exists_many(self, ns: str, keys: Sequence[str], now: float) -> Body[set[str]]:
        if not keys:
            return set()
        ordered, found = yield from self._pipelines(
            ns, keys, lambda entry: [("HGET", entry, F_EXPIRES)], readonly=True
        )
        return {
            key for key, x in zip(ordered, found, strict=True) if x is not None and _live_x(x, now)
        }

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        spread = self._spread(ns)
        if spread is None:
            base = self._base(ns)
            self._check_record(ns)
            prefix = base + "e:"
            start = len(prefix.encode())
            for name in self._scan_names(prefix + _redis_glob(pattern), base, readonly=True):
                key = name[start:].decode("utf-8", "surrogateescape")
                if glob_match(key, pattern):
                    yield key
            return
        for name in self._spread_names(spread, "e:" + _redis_glob(pattern), readonly=True):
            base = spread.base_of(name)
            if base is None or name[len(base) : len(base) + 2] != b"e:":
                continue
            key = name[len(base) + 2 :].decode("utf-8", "surrogateescape")
            if glob_match(key, pattern):
                yield key

    def _spread_names(self, spread: Spread, match: str, readonly: bool = False) -> Iterator[bytes]:
        """Names matching ``P:{N:*}:<match>`` on every node holding a bucket (filter them
        with :meth:`.Spread.base_of`): one SCAN per node, not per bucket."""
        routes: list[str | None] = [None]
        conn = self.connection
        conn._seed()
        if conn.cluster:
            slots = conn._slot_map(conn._seed())
            by_node: dict[Any, str] = {}
            for base in spread.bases:
                by_node.setdefault(slots.owner(base), base)
            routes = list(by_node.values())
        for route in routes:
            yield from self._scan_names(spread.match + match, route, readonly)

    def _scan_names(self, match: str, route: str | None, readonly: bool = False) -> Iterator[bytes]:
        """Yield the Redis key names matching ``match`` on the node of ``route`` (each once;
        ``readonly``: a replica of that node may answer, see :meth:`.RedisConnection.request`)."""
        seen: set[bytes] = set()
        cursor: bytes | int = 0
        while True:
            cursor, found = self.connection.request(
                "SCAN", cursor, "MATCH", match, "COUNT", _SCAN_COUNT, route=route, readonly=readonly
            )
            for name in found:
                if name not in seen:  # SCAN may return a key twice
                    seen.add(name)
                    yield name
            if int(cursor) == 0:
                return

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        return self._run(self._tagged(ns, tags, now))

    async def atagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        """Async twin of :meth:`tagged`."""
        return await self._arun(self._tagged(ns, tags, now), self.tagged, ns, tags, now=now)

    def _tagged(self, ns: str, tags: Iterable[str], now: float) -> Body[set[str]]:
        tags = list(tags)
        if not tags:
            return set()
        packed = _packb(tags)
        spread = None if self.layout == 1 else (yield from self._spread_of(ns))
        if spread is None:
            found = yield from self._one(ns, 1, self._base(ns), now, packed, script=TAGGED)
            return {key.decode("utf-8", "surrogateescape") for key in found}
        calls = [(base, TAGGED, (1, base, now, packed), None) for base in spread.bases]
        return {
            key.decode("utf-8", "surrogateescape")
            for found in (yield call("fan_out", calls))
            for key in found
        }

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        removed = super().clear(ns, now=now, batch_size=batch_size)
        # Tag indexes left over (members that expired natively): drop them all.
        spread = self._spread(ns)
        if spread is None:
            base = self._base(ns)
            names = list(self._scan_names(base + "t:*", base))
            for start in range(0, len(names), batch_size):
                self.connection.request("DEL", *names[start : start + batch_size], route=base)
            return removed
        by_base: dict[bytes, list[bytes]] = {}
        for name in self._spread_names(spread, "t:*"):
            base = spread.base_of(name)
            if base is not None and name[len(base) : len(base) + 2] == b"t:":
                by_base.setdefault(base, []).append(name)
        for base, names in by_base.items():
            for start in range(0, len(names), batch_size):
                self.connection.request(
                    "DEL", *names[start : start + batch_size], route=base.decode()
                )
        return removed

    def purge_expired(self, ns: str, *, now: float) -> int:
        """Nothing to do: Redis removes expired entries itself."""
        return 0


def _put_flat(
    keys: Sequence[str], recs: Sequence[Record], metas: Sequence[tuple[Any, ...]], mode: int
) -> list[Any]:
    """The put script's msgpack array for these records (one header when they share it)."""
    first = metas[0]
    if metas.count(first) == len(metas):  # one header for the batch
        flat: list[Any] = [None] * (6 + 2 * len(keys))
        flat[:6] = (mode + 1, *_put_meta(first))
        flat[6::2] = keys
        flat[7::2] = [rec.value for rec in recs]
        return flat
    flat = [mode]
    for key, rec, meta in zip(keys, recs, metas, strict=True):
        flat += (key, rec.value, *_put_meta(meta))
    return flat


def _group_items(spread: Spread, keys: Sequence[str]) -> dict[int, list[int]]:
    """Indexes of ``keys`` by bucket."""
    out: dict[int, list[int]] = {}
    crc, count = zlib.crc32, spread.buckets
    for i, key in enumerate(keys):
        out.setdefault(crc(key.encode("utf-8", "surrogateescape")) % count, []).append(i)
    return out


def _records(keys: Sequence[str], raw: bytes) -> dict[str, Record]:
    """The records of the get script's reply (indexes into ``keys``).

    Raises:
        SerializationError: An entry's fields are not what this library writes (another
            client wrote them), naming its key.
    """
    out: dict[str, Record] = {}
    metas: dict[bytes, tuple[Any, ...]] = {}  # a batch written together shares its m
    for row in _unpackb(raw, raw=True, strict_map_key=False):
        if type(row) is dict:  # a field the script read as nil (spoiled) leaves a hole
            row = [row.get(j) for j in range(1, 7)]
        v, m, n, a, x, i = row
        key = keys[i - 1]
        meta = metas.get(m)
        if meta is None:
            meta = metas[m] = _meta(key, m)
        c, u, l, s, tags, r = meta  # noqa: E741
        if type(n) is not int or not isinstance(a, (int, float)) or type(v) is not bytes:
            raise SerializationError(f"entry {key!r} has unreadable fields in Redis")
        out[key] = Record(v, c, u, a, n, x or None, l, s, tags, r)
    return out


def _chunks(items: Iterable[R], size: int) -> Iterator[list[R]]:
    """``items`` in lists of ``size`` (the last one shorter), read lazily."""
    it = iter(items)
    while part := list(itertools.islice(it, size)):
        yield part


def _bucket_names(spread: Spread, names: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """``(bucket base, name after 'e:')`` of the entry names among ``names`` (layout 2)."""
    for name in names:
        base = spread.base_of(name)
        if base is not None and name[len(base) : len(base) + 2] == b"e:":
            yield base, name[len(base) + 2 :]


def _expiry(x: Any) -> float | None:
    """``expires_at`` of an entry's ``x`` field, read as the scripts read it (``tonumber``:
    empty, missing or not a number is no expiry)."""
    if not x:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _entry(
    key: str, m: Any, n: Any, a: Any, x: Any, now: float, metas: dict[bytes, tuple[Any, ...]]
) -> tuple[Any, ...] | None:
    """The metadata of a live entry from its hash fields ``m n a x`` (``None``: gone, or
    expired at ``now``), in the order of :class:`Record` after the value: ``(created,
    updated, last_access, access_count, expires_at, ttl, sliding, tags, version)``.

    Read as the scripts read them: a count that is not a number is no access yet, an
    expiry that is not a number is none (and NaN is expired); ``metas`` caches the
    decoded ``m`` of a batch (entries written together share it).

    Raises:
        SerializationError: ``m`` or ``a`` is not what this library writes.

    Example:
        >>> m = _packb([1.0, 2.0, False, False, ["t"], 3])
        >>> _entry("k", m, b"4", b"5.5", b"", 9.0, {})
        (1.0, 2.0, 5.5, 4, None, None, False, ('t',), 3)
        >>> _entry("k", m, b"spoiled", None, b"9", 9.0, {}) is None  # expired at 9.0
        True
    """
    if m is None:
        return None
    expires = _expiry(x)
    if expires is not None and not expires > now:
        return None
    meta = metas.get(m)
    if meta is None:
        if len(metas) > 4096:
            metas.clear()
        meta = metas[m] = _meta(key, m)
    c, u, l, s, tags, r = meta  # noqa: E741
    try:
        last = float(a) if a else float(c)
    except (TypeError, ValueError):
        raise SerializationError(f"entry {key!r} has unreadable fields in Redis") from None
    count = _count(key, n)
    return c, u, last, count, expires, l, s, tags, r


def _count(key: str, n: Any) -> int:
    """``access_count`` of an entry's ``n`` field (not a number: 0, as the scripts read it).

    Raises:
        SerializationError: ``n`` is a number but not a whole one (as :meth:`get_many`).
    """
    if not n:
        return 0
    try:
        return int(n)
    except (TypeError, ValueError):
        pass
    try:
        number = float(n)
    except (TypeError, ValueError):
        return 0
    if not number.is_integer():
        raise SerializationError(f"entry {key!r} has unreadable fields in Redis")
    return int(number)


def _column_rows(
    names: Sequence[bytes],
    reply: Any,
    now: float,
    metas: dict[bytes, tuple[Any, ...]],
    add: Callable[[tuple[Any, ...]], None],
) -> int:
    """Decode a column-script reply for ``names`` (the names sent, after ``e:``): ``add``
    each live entry's row ``(key, created, ..., version, size, value)``, each read by
    :func:`_entry` (as every read decodes them; ``metas`` caches decoded ``m`` fields);
    return how many of ``names`` the reply answers (it stops at its byte budget).

    Raises:
        SerializationError: A name is not UTF-8, or an entry's fields are unreadable.
        BackendError: The reply is not the script's (six items per name answered, at least
            one name).
    """
    if type(reply) is not list or not reply or len(reply) % 6 or len(reply) > 6 * len(names):
        raise BackendError("Redis answered a column scan with an unexpected reply")
    items = iter(reply)
    done = len(reply) // 6
    for name, m, n, a, x, size, v in zip(
        names[:done], items, items, items, items, items, items, strict=True
    ):
        if m is None:
            continue  # gone since the SCAN
        try:
            key = name.decode()
        except UnicodeDecodeError:
            raise SerializationError(
                f"an entry name in Redis is not UTF-8: {name[:64]!r}"
            ) from None
        row = _entry(key, m, n, a, x, now, metas)
        if row is None:
            continue  # expired at now
        if type(size) is not int or (v is not None and len(v) != size):
            raise BackendError("Redis answered a column scan with an unexpected reply")
        add((key, *row, size, v))
    return done


def _meta(key: str, m: Any) -> tuple[Any, ...]:
    """``(created, updated, ttl, sliding, tags, version)`` of an entry's ``m`` field.

    Raises:
        SerializationError: ``m`` is not what this library writes (another client wrote
            it), naming the key.
    """
    try:
        c, u, l, s, tags, r = _unpackb(m)  # noqa: E741
        if (
            type(tags) is not list or type(r) is not int or type(s) is not bool
            or not isinstance(c, _NUMBER) or not isinstance(u, _NUMBER)
            or not (l is False or l is None or isinstance(l, _NUMBER))
        ):  # fmt: skip
            raise TypeError
        for tag in tags:
            if type(tag) is not str:
                raise TypeError
    except (ValueError, TypeError, msgpack.UnpackException):
        raise SerializationError(f"entry {key!r} has unreadable metadata in Redis") from None
    return c, u, l or None, s, tuple(tags), r


def _check_consistency(consistency: Any, quorum: Any) -> tuple[str, int]:
    if consistency not in ("eventual", "strong"):
        raise ConfigError(f"consistency must be 'eventual' or 'strong', got {consistency!r}")
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        raise ConfigError(f"quorum must be a positive int (replicas), got {quorum!r}")
    return consistency, quorum


def _live_x(x: bytes, now: float) -> bool:
    """Whether the ``x`` field of an entry is live at ``now``, read as the scripts read it
    (``tonumber``: empty or not a number is no expiry)."""
    try:
        return not x or float(x) > now
    except ValueError:
        return True


def _check_expiry(key: str, meta: tuple[Any, ...], now: float) -> None:
    """Refuse a record whose expiry ``PEXPIRE`` cannot take, before anything is sent.

    (The put script checks it too, before its first write, against any other caller.)
    """
    expires_at, ttl, sliding = meta[4], meta[5], meta[6]
    for value, what, base in (
        (expires_at, "expires_at", now),
        (ttl if sliding else None, "ttl", 0),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidTTLError(f"entry {key!r}: {what} must be a number, got {value!r}")
        if not (value - base) * 1000 <= MAX_EXPIRY_MS or (what == "ttl" and not value > 0):
            raise InvalidTTLError(
                f"entry {key!r}: {what} {value!r} is out of the range Redis holds "
                f"(at most {MAX_EXPIRY_MS // 1000} seconds from now)"
            )


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


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def _seeds(value: Any) -> list[tuple[str, int]]:
    """``[(host, port), ...]`` of ``"h:p,h:p"`` or a list of ``"h:p"`` / ``(h, p)``."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"seeds must be 'host:port,host:port' or a list, got {value!r}")
    out = []
    for item in items:
        if isinstance(item, str):
            host, _, port = item.strip().rpartition(":")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            host, port = item
        else:
            host, port = "", ""
        try:
            number = int(port)
        except (TypeError, ValueError):
            number = 0
        if not host or not isinstance(host, str) or not 0 < number < 65536:
            raise ConfigError(f"a seed is host:port (like 10.0.0.2:7000), got {item!r}")
        out.append((host, number))
    return out


def _from_query(name: str, value: str) -> Any:
    if name in ("key_prefix", "consistency", "seeds"):
        return value
    if name == "read_from_replicas":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(
                f"read_from_replicas in the Redis URL must be true or false: {value!r}"
            )
        return value.lower() in ("true", "1", "yes")
    if name == "cluster":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no", "auto"):
            raise ConfigError(f"cluster in the Redis URL must be true, false or auto: {value!r}")
        return None if value.lower() == "auto" else value.lower() in ("true", "1", "yes")
    try:
        return float(value) if name == "timeout" else int(value)
    except ValueError:
        raise ConfigError(f"{name} in the Redis URL must be a number, got {value!r}") from None

"""MongoDB backend (``mongodb://`` and ``mongodb+srv://``): one document per entry.

URL: ``mongodb://[user:pass@]host[:port][,host2...]/[db]?collection=NAME&<pymongo options>``.
``collection`` (default ``prefect_memory``) is ours and is removed before the URL reaches
:class:`pymongo.MongoClient`; every other query parameter goes to pymongo as is. The
database is the URL path (default ``prefect_memory``).

One collection holds every namespace. A document is::

    {_id: "<ns_token(ns)>:<key>", ns, k: key, v: Binary value,
     c: created_at, u: updated_at, a: last_access (epoch seconds),
     n: access_count, x: expires_at (BSON date or null), l: ttl seconds,
     s: sliding, g: [tags], r: version}

``ns_token`` contains no ``:``, so ids of different namespaces never collide. A TTL
index on ``x`` (``expireAfterSeconds=0``) lets the server delete expired entries; as its
monitor runs only every 60 seconds, every read also filters expired documents out.

Round trips per batch (commands): ``get_many`` 1 find (+1 update with ``touch``, sliding
entries included in the same command); ``put_many`` of up to 8 records 1 update command of
upserts that merge the old metadata on the server (+1 find +1 bulk write for the rare keys
they cannot merge: expired leftovers, foreign documents, records of version other than 1),
of more 1 find of the old metadata + 1 bulk write; ``delete_many``
2 deletes (live ones, counted, then expired leftovers); ``scan`` one streamed find;
``tagged`` and ``exists_many`` 1 find each. A single key is matched by ``_id`` equality,
more by ``$in``.

Async (``capabilities.native_async``): ``get_many``, ``put_many``, ``put_absent_many``,
``delete_many``, ``exists_many`` and ``tagged`` are each one sans-I/O body (it yields its
commands and reads their results, see :mod:`prefect_memory.aio`); the blocking methods run
it on a :class:`pymongo.MongoClient`, their ``a`` twins (``aget_many``, ``aput_many``...)
on the running event loop's :class:`pymongo.AsyncMongoClient` (:mod:`.mongodb_aio`: one per
loop, closed with it), with the same commands, results and errors. The other operations
(scans, ``meta_many``, ``delete_if_unchanged``, ``clear``) have no async twin of their own:
callers run them in a worker thread. Without pymongo's async API (before 4.13) every twin
runs the blocking method in a worker thread.

The server-side merge uses update operators only (``$set``, ``$setOnInsert``, ``$max``,
``$inc``, ``$unset``, filters with ``$type`` lists: MongoDB 3.6 and later), no pipeline
update. It is tested against the MongoDB wire server of the test suite (mongoeco), not
against a real mongod: there, an upsert whose filter misses an existing ``_id`` (an
expired entry the TTL monitor has not removed yet) fails with a duplicate key and takes
the general path; mongoeco hides expired documents and inserts over them instead. Both
end with the same entry.

Example:
    >>> from prefect_memory.plugins.mongodb import MongoBackend
    >>> backend = MongoBackend.from_url("mongodb://bob:s3cret@db.example:27017/app?collection=m")
    >>> backend.database, backend.collection, backend.hosts
    ('app', 'm', 'db.example:27017')
    >>> "s3cret" in repr(backend)
    False
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from ..aio import Body, Call, adrive, call, drive
from ..errors import (
    BackendError,
    BackendPermissionError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ConsensusError,
    PrefectMemoryError,
    SerializationError,
)
from ..keys import glob_match, literal_prefix, ns_token
from ..urls import SECRET_WORDS, Secret, split_credentials
from .base import (
    F_ACCESS_COUNT,
    F_ACCESSED,
    F_CREATED,
    F_EXPIRES,
    F_KEY,
    F_SLIDING,
    F_TAGS,
    F_TTL,
    F_UPDATED,
    F_VALUE,
    F_VERSION,
    FIELD_OF,
    Backend,
    Capabilities,
    Record,
    StoreUsage,
)

try:
    import pymongo
    from bson import Binary
    from bson.codec_options import CodecOptions
    from bson.errors import BSONError, InvalidBSON
    from pymongo import ReplaceOne, UpdateMany, UpdateOne
    from pymongo.errors import (
        AutoReconnect,
        BulkWriteError,
        ConfigurationError,
        ConnectionFailure,
        DuplicateKeyError,
        ExecutionTimeout,
        NetworkTimeout,
        OperationFailure,
        PyMongoError,
        WriteConcernError,
        WTimeoutError,
    )
    from pymongo.write_concern import WriteConcern
except ImportError as _err:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the mongodb:// backend needs pymongo: pip install 'prefect-memory[mongodb]'",
        name="pymongo",
    ) from _err

from .mongodb_aio import AsyncMongoClients  # (after the check that pymongo is there)

R = TypeVar("R")
#: pymongo's async API is there (``AsyncMongoClient``, GA in pymongo 4.13; the extra allows
#: 4.6): without it the ``a`` twins run the blocking methods in a worker thread.
_ASYNC_DRIVER = pymongo.version_tuple >= (4, 13) and hasattr(pymongo, "AsyncMongoClient")
DEFAULT_DATABASE = "prefect_memory"
_DUPLICATE_KEY = 11000
#: Most records a ``put_many`` merges over the old metadata on the server (one command);
#: a larger batch reads the old metadata first (one find for the whole batch), which
#: costs a test server that scans for each new key less (see ``put_many``).
_MERGE_ON_SERVER = 8
#: Default ``claim_timeout``: seconds after which a conditional delete's claim (left by a
#: call that died between its claim and its delete) may be taken over by another call.
_CLAIM_STALE = 60.0
DEFAULT_COLLECTION = "prefect_memory"
DEFAULT_TIMEOUT = 5.0
DEFAULT_PORT = 27017

#: Keyword options :meth:`MongoBackend.from_url` accepts.
OPTIONS = frozenset(
    {
        "timeout",
        "collection",
        "database",
        "write_concern",
        "client_kwargs",
        "username",
        "password",
        "consistency",
        "quorum",
        "claim_timeout",
    }
)

_UTC = _dt.timezone.utc
_CODEC_OPTIONS: CodecOptions[Any] = CodecOptions(tz_aware=True, tzinfo=_UTC)
_MAX_DATETIME = _dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=_UTC)
_INDEXES = [
    pymongo.IndexModel(
        [(F_EXPIRES, pymongo.ASCENDING)], name="pm_expiry_ttl", expireAfterSeconds=0
    ),
    pymongo.IndexModel([("ns", pymongo.ASCENDING), (F_KEY, pymongo.ASCENDING)], name="pm_ns_k"),
    pymongo.IndexModel([("ns", pymongo.ASCENDING), (F_TAGS, pymongo.ASCENDING)], name="pm_ns_g"),
]
#: Projection of the key alone (listings).
_KEY_ONLY = {F_KEY: 1, "_id": 0}
_META_PROJECTION = dict.fromkeys((F_KEY, F_CREATED, F_ACCESSED, F_ACCESS_COUNT, F_VERSION), 1)
_DB_FORBIDDEN = frozenset('/\\. "$\x00')
_MAX_MESSAGE = 600
#: Server error codes of refused credentials or operations: AuthenticationFailed,
#: Unauthorized, UserNotFound, and Atlas's authentication error.
_REFUSED_CODES = frozenset({18, 13, 11, 8000})
_REFUSED_WORDS = ("authentication failed", "not authorized", "requires authentication")
_NUMBER = (int, float)
_MAYBE_NUMBER = (int, float, type(None))
#: The type of each field of an entry document (what ``_record`` reads).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    F_KEY: (str,), F_VALUE: (bytes,), F_CREATED: _NUMBER, F_UPDATED: _NUMBER,
    F_ACCESSED: _NUMBER, F_ACCESS_COUNT: (int, type(None)),
    F_EXPIRES: (_dt.datetime, type(None)), F_TTL: _MAYBE_NUMBER, F_SLIDING: (bool, type(None)),
    F_TAGS: (list, type(None)), F_VERSION: (int, type(None)),
}  # fmt: skip

log = logging.getLogger(__name__)


def _to_datetime(ts: float | None) -> _dt.datetime | None:
    """Epoch seconds as an aware UTC datetime (BSON keeps milliseconds); ``None`` stays."""
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, tz=_UTC)
    except (OverflowError, OSError, ValueError):
        return _MAX_DATETIME if ts > 0 else _dt.datetime(1970, 1, 1, tzinfo=_UTC)


def _live(now: _dt.datetime) -> dict[str, Any]:
    """Filter of the entries still alive at ``now`` (no expiry, or expiry in the future)."""
    return {"$or": [{F_EXPIRES: None}, {F_EXPIRES: {"$gt": now}}]}


def _expired(now: _dt.datetime | None) -> dict[str, Any]:
    """Condition on ``x`` of the entries expired at ``now``.

    ``$type`` keeps ``null`` (no expiry) out explicitly: mongod's type bracketing does
    that by itself, but some wire-compatible servers (mongoeco) match ``null <= date``.
    """
    return {"$type": "date", "$lte": now}


def _doc_problem(doc: Mapping[str, Any], fields: Iterable[str] = _FIELD_TYPES) -> str | None:
    """Why ``doc`` is not an entry document (``None``: it is one), for ``fields``."""
    for name in fields:
        types = _FIELD_TYPES[name]
        if name not in doc:
            if type(None) in types:
                continue
            return f"field {name!r} is missing"
        value = doc[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(t.__name__ for t in types if t is not type(None))
            return f"field {name!r} is {type(value).__name__}, not {wanted}"
    tags = doc.get(F_TAGS)
    if F_TAGS in fields and tags and not all(isinstance(t, str) for t in tags):
        return f"field {F_TAGS!r} holds a tag that is not a str"
    return None


def _not_ours(doc: Mapping[str, Any], ns: str | None, problem: str) -> SerializationError:
    where = f" of namespace {ns!r}" if ns is not None else ""
    return SerializationError(
        f"MongoDB document {str(doc.get('_id'))[:200]!r}{where} is not a prefect-memory "
        f"entry ({problem}): delete it, or write its key again"
    )


def _record(doc: Mapping[str, Any], ns: str | None = None) -> Record:
    """The record of an entry document.

    Raises:
        SerializationError: ``doc`` is not an entry (another program's document, or a
            corrupt one), naming its id (namespace and key) and the faulty field.
    """
    problem = _doc_problem(doc)
    if problem:
        raise _not_ours(doc, ns, problem)
    expires = doc.get(F_EXPIRES)
    ttl = doc.get(F_TTL)
    return Record(
        value=bytes(doc[F_VALUE]),
        created_at=float(doc[F_CREATED]),
        updated_at=float(doc[F_UPDATED]),
        last_access=float(doc[F_ACCESSED]),
        access_count=int(doc.get(F_ACCESS_COUNT) or 0),
        expires_at=None if expires is None else expires.timestamp(),
        ttl=None if ttl is None else float(ttl),
        sliding=bool(doc.get(F_SLIDING)),
        tags=tuple(doc.get(F_TAGS) or ()),
        version=int(doc.get(F_VERSION) or 1),
    )


def _is_sliding(doc: Mapping[str, Any]) -> bool:
    return bool(doc.get(F_SLIDING)) and doc.get(F_TTL) is not None


def _secret(value: Any) -> str | None:
    """The plain text of a password given as ``str`` or pydantic ``SecretStr``."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    if getter is not None:
        value = getter()
    if not isinstance(value, str):
        raise ConfigError(f"password must be a str or SecretStr, got {type(value).__name__}")
    return value


def _redact_query(query: str) -> str:
    """The query string with the value of every secret parameter (``*password*``...) masked."""
    parts = []
    for segment in re.split("[&;]", query) if query else []:
        name, eq, _ = segment.partition("=")
        if eq and any(word in unquote_plus(name).lower() for word in SECRET_WORDS):
            segment = f"{name}=***"
        parts.append(segment)
    return "&".join(parts)


def _refused(err: OperationFailure) -> bool:
    """Whether the server refused the credentials or the operation (by code, or by message
    for servers that answer a failed login without a code)."""
    if err.code in _REFUSED_CODES:
        return True
    text = str(err).lower()
    return any(words in text for words in _REFUSED_WORDS)


class _ParsedUrl:
    """The pieces of a MongoDB URL we need (no network, no DNS)."""

    def __init__(self, url: str) -> None:
        url, url_password = split_credentials(url)  # a raw '/', '?', '#' or '@' in it
        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in ("mongodb", "mongodb+srv"):
            raise ConfigError(
                f"a MongoDB URL looks like 'mongodb://host:27017/db?collection=name', "
                f"got scheme {scheme or url[:20]!r}"
            )
        netloc, slash, tail = rest.partition("/")
        path, _, query = tail.partition("?")
        if not slash and "?" in netloc:
            netloc, _, query = netloc.partition("?")
        userinfo, at, hosts = netloc.rpartition("@")
        self.scheme = scheme
        self.hosts = hosts
        self.username: str | None = None
        self.password: str | None = None
        if at:
            user, colon, password = userinfo.partition(":")
            self.username = unquote_plus(user) or None
            self.password = unquote_plus(password) if colon else None
        if url_password is not None:
            self.password = url_password
        if not hosts:
            raise ConfigError("a MongoDB URL needs a host, e.g. 'mongodb://127.0.0.1:27017/db'")
        self.path = path
        self.database = unquote(path) or None
        self.collection: str | None = None
        kept: list[str] = []
        for segment in re.split("[&;]", query) if query else []:
            if not segment:
                continue
            name, _, value = segment.partition("=")
            if unquote_plus(name) == "collection":
                self.collection = unquote_plus(value)
            else:
                kept.append(segment)
        self.query = "&".join(kept)
        self.original_query = query

    def client_url(self) -> str:
        """The URL for pymongo: no credentials (passed apart) and none of our parameters."""
        url = f"{self.scheme}://{self.hosts}/{self.path}"
        return f"{url}?{self.query}" if self.query else url

    def display_hosts(self) -> str:
        """``host:port[,host:port]`` for messages (default port added, never credentials)."""
        if self.scheme == "mongodb+srv":
            return self.hosts
        out = []
        for host in self.hosts.split(","):
            tail = host.rpartition("]")[2] if host.startswith("[") else host
            out.append(host if ":" in tail else f"{host}:{DEFAULT_PORT}")
        return ",".join(out)


class MongoBackend(Backend):
    """Entries as documents of one MongoDB collection (shared by every process).

    Args:
        url: ``mongodb://[user:pass@]host[:port]/[db]?collection=NAME&...``.
        timeout: Seconds for server selection, connecting and each socket operation; a dead
            server raises :class:`~prefect_memory.errors.BackendUnavailable` within it.
        collection: Collection name (overrides the URL's ``collection``).
        database: Database name (overrides the URL path).
        write_concern: ``w`` of the writes, e.g. ``"majority"`` or ``1``.
        client_kwargs: Extra keyword arguments of :class:`pymongo.MongoClient` (they win over
            the timeouts set from ``timeout``).
        username: User name (overrides the URL's).
        password: Password as ``str`` or pydantic ``SecretStr`` (overrides the URL's); never
            shown in ``repr`` or error messages.
        consistency: ``"strong"``: every write waits until ``quorum`` replicas besides the
            primary have it (write concern ``w=quorum+1``, or ``"majority"``, with
            ``wtimeout=timeout``) and raises
            :class:`~prefect_memory.errors.ConsensusError` otherwise. ``"eventual"``
            (default): ``write_concern`` as given.
        quorum: Replicas (besides the primary) of a strong write, or ``"majority"``.
        claim_timeout: Seconds a conditional delete's claim on a document holds (default
            60). A migration killed between the claim and the delete of a batch leaves its
            entries where they were, readable, and also copied in the colder tier; a
            migration started once the claim has expired moves them (before that it skips
            them). Longer than any stall of a live call (an older claim is taken over).

    Raises:
        ConfigError: The URL or an option is invalid.
    """

    scheme: ClassVar[str] = "mongodb"
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_ttl=True,
        pushdown=True,
        atomic_moves=True,
        metadata_reads=True,
        native_async=_ASYNC_DRIVER,
    )
    _transient = ("_client", "_collection", "_indexed", "_aio")

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        collection: str | None = None,
        database: str | None = None,
        write_concern: str | int | WriteConcern | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        username: str | None = None,
        password: Any = None,
        consistency: str = "eventual",
        quorum: int | str = 1,
        claim_timeout: float = _CLAIM_STALE,
    ) -> None:
        super().__init__()
        if not isinstance(url, str):
            raise ConfigError(f"url must be a str, got {type(url).__name__}")
        parsed = _ParsedUrl(url)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if client_kwargs is not None and not isinstance(client_kwargs, Mapping):
            raise ConfigError(f"client_kwargs must be a mapping, got {type(client_kwargs)}")
        if (
            isinstance(claim_timeout, bool)
            or not isinstance(claim_timeout, (int, float))
            or not 0 < claim_timeout < math.inf
        ):
            raise ConfigError(
                f"claim_timeout must be a positive number of seconds, got {claim_timeout!r}"
            )
        self.timeout = float(timeout)
        self.claim_timeout = float(claim_timeout)
        self.database = _check_database(database or parsed.database or DEFAULT_DATABASE)
        self.collection = _check_collection(collection or parsed.collection or DEFAULT_COLLECTION)
        self.write_concern = _write_concern(write_concern)
        self.consistency, self.quorum = consistency, quorum
        if consistency == "strong":
            if write_concern is not None:
                raise ConfigError("give either write_concern or consistency='strong', not both")
            self.write_concern = _strong_concern(quorum, self.timeout)
        elif consistency != "eventual":
            raise ConfigError(f"consistency must be 'eventual' or 'strong', got {consistency!r}")
        self.client_kwargs: dict[str, Any] = dict(client_kwargs or {})
        self.hosts = parsed.display_hosts()
        self.username = username if username is not None else parsed.username
        plain = _secret(password) if password is not None else parsed.password
        self._password = None if plain is None else Secret(plain)
        self._client_url = Secret(parsed.client_url())  # may hold passwords of TLS files
        userinfo = ""
        if self.username:
            userinfo = quote(self.username, safe="") + (":***" if plain is not None else "") + "@"
        query = _redact_query(parsed.original_query)
        self.url = f"{parsed.scheme}://{userinfo}{parsed.hosts}/{parsed.path}" + (
            f"?{query}" if query else ""
        )
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None
        self._collection: Any = None
        self._indexed = False
        #: The async clients, one per event loop (made on first async use; never pickled).
        self._aio: AsyncMongoClients | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MongoBackend:
        """Build from ``mongodb://...`` or ``mongodb+srv://...`` (see the class for options).

        Raises:
            ConfigError: The URL is malformed or an option is unknown or invalid.
        """
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown mongodb:// options: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(OPTIONS))})"
            )
        if options.get("timeout") is None:
            options.pop("timeout", None)
        return cls(url, **options)

    # -- client -------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        if self._password is not None:
            secret = self._password.get_secret_value()
            if secret:
                for form in {secret, quote_plus(secret), quote(secret, safe="")}:
                    text = text.replace(form, "***")
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "..."
        return text

    def _describe(self, action: str, err: BaseException) -> str:
        where = f"MongoDB {self.hosts} ({self.database}.{self.collection})"
        return self._scrub(f"{where}: {action} failed: {type(err).__name__}: {err}")

    def _translate(self, err: PyMongoError, action: str) -> PrefectMemoryError:
        message = self._describe(action, err)
        if self.consistency == "strong" and _concern_failed(err):
            return ConsensusError(message, quorum=self.quorum, timeout=self.timeout)
        if isinstance(err, (ExecutionTimeout, NetworkTimeout, WTimeoutError)):
            return BackendTimeout(message)
        if isinstance(err, ConnectionFailure):  # ServerSelectionTimeoutError, AutoReconnect
            return BackendUnavailable(message)
        if isinstance(err, ConfigurationError):
            return ConfigError(message)
        if isinstance(err, OperationFailure) and _refused(err):
            return BackendPermissionError(
                f"{message} (check the user name, the password and the user's roles on "
                f"{self.database}.{self.collection})"
            )
        return BackendError(message)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate pymongo and BSON errors into prefect-memory errors."""
        try:
            yield
        except PyMongoError as err:
            if isinstance(err, ConnectionFailure):
                # The server may come back with empty storage: ensure the indexes again.
                self._indexed = False
            raise self._translate(err, action) from err
        except (InvalidBSON, RecursionError) as err:  # a document no reader can decode
            raise SerializationError(self._describe(action, err)) from err
        except BSONError as err:
            raise BackendError(self._describe(action, err)) from err

    def _client_options(self) -> tuple[str, dict[str, Any]]:
        """The URL and keyword arguments of a client (blocking or async): the timeouts from
        ``timeout``, the credentials, then ``client_kwargs``, which win."""
        ms = max(1, int(self.timeout * 1000))
        kwargs: dict[str, Any] = {
            "serverSelectionTimeoutMS": ms,
            "connectTimeoutMS": ms,
            "socketTimeoutMS": ms,
            "appname": "prefect-memory",
        }
        if self.username is not None:
            kwargs["username"] = self.username
        if self._password is not None:
            kwargs["password"] = self._password.get_secret_value()
        kwargs.update(self.client_kwargs)
        return self._client_url.get_secret_value(), kwargs

    def _open(self, client: Any) -> Any:
        """The collection of entries on ``client`` (blocking or async), with our codec
        options and write concern."""
        return client.get_database(
            self.database, codec_options=_CODEC_OPTIONS, write_concern=self.write_concern
        ).get_collection(self.collection)

    @staticmethod
    def _indexes() -> list[pymongo.IndexModel]:
        return _INDEXES

    def _get_client(self) -> pymongo.MongoClient[dict[str, Any]]:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                url, kwargs = self._client_options()
                with self._errors("connect"):
                    client = pymongo.MongoClient(url, **kwargs)
                self._client = client
                self._collection = self._open(client)
                self._indexed = False
            return self._client

    def _coll(self) -> Any:
        """The collection, with the client created and the indexes ensured once per client."""
        coll = self._collection
        if coll is not None and self._indexed:
            return coll
        self._get_client()
        with self._lock:
            coll = self._collection
            if not self._indexed:
                with self._errors("create indexes"):
                    coll.create_indexes(_INDEXES)
                self._indexed = True
            return coll

    def ping(self) -> None:
        """Send the ``ping`` command.

        Raises:
            BackendUnavailable: The server cannot be reached within the timeout.
        """
        client = self._get_client()
        with self._errors("ping"):
            client.admin.command("ping")

    def usage(self) -> StoreUsage:
        """The collection's data size (``collStats``), its document count and storage size."""
        coll = self._coll()
        with self._errors("collStats"):
            stats = coll.database.command("collStats", coll.name)
        return StoreUsage(
            used_bytes=int(stats.get("size", 0)),
            details={
                "documents": int(stats.get("count", 0)),
                "storage_size": stats.get("storageSize"),
            },
        )

    def close(self) -> None:
        """Close the client, and the async client of every event loop (each in its loop);
        new ones are made on next use."""
        with self._lock:
            client, self._client = self._client, None
            self._collection = None
            self._indexed = False
            aio = self._aio
        if aio is not None:
            aio.forget()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.setdefault("_aio", None)  # pickled before the async path
        super().__setstate__(state)

    # -- documents ----------------------------------------------------------------------------
    @staticmethod
    def _doc(token: str, ns: str, key: str, record: Record) -> dict[str, Any]:
        return {
            "_id": f"{token}:{key}",
            "ns": ns,
            F_KEY: key,
            F_VALUE: Binary(record.value),
            F_CREATED: record.created_at,
            F_UPDATED: record.updated_at,
            F_ACCESSED: record.last_access,
            F_ACCESS_COUNT: record.access_count,
            F_EXPIRES: _to_datetime(record.expires_at),
            F_TTL: record.ttl,
            F_SLIDING: bool(record.sliding),
            F_TAGS: list(record.tags),
            F_VERSION: record.version,
        }

    @staticmethod
    def _ids(ns: str, keys: Iterable[str]) -> list[str]:
        token = ns_token(ns)
        return [f"{token}:{key}" for key in dict.fromkeys(keys)]

    # -- the drivers: an operation is one sans-I/O body, run blocking or async -------------
    # A body (``_get_many``, ``_put_many``...) yields its commands as ``call(<collection
    # method>, ...)`` (``find`` answers with the list of documents) and is sent their
    # results, or has pymongo's exception thrown in, which the body translates
    # (:meth:`_errors`): the blocking driver runs them on :class:`pymongo.MongoClient`'s
    # collection, the async one awaits them on the running loop's
    # :class:`pymongo.AsyncMongoClient` (:mod:`.mongodb_aio`). Same commands, same replies,
    # same errors.
    def _perform(self, step: Call) -> Any:
        method, args, kwargs = step
        coll = self._coll()
        if method == "find":
            return list(coll.find(*args, **kwargs))
        return getattr(coll, method)(*args, **kwargs)

    async def _aperform(self, step: Call) -> Any:
        method, args, kwargs = step
        aio = self._aio
        if aio is None:
            with self._lock:
                aio = self._aio
                if aio is None:
                    aio = self._aio = AsyncMongoClients(self)
        coll = await aio.collection()
        if method == "find":
            return await coll.find(*args, **kwargs).to_list()
        return await getattr(coll, method)(*args, **kwargs)

    def _run(self, body: Body[R]) -> R:
        return drive(body, self._perform)

    async def _arun(self, body: Body[R], method: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``body`` on the running event loop; without pymongo's async API (before 4.13)
        ``method(*args, **kwargs)`` in a worker thread instead."""
        if _ASYNC_DRIVER:
            return await adrive(body, self._aperform)
        body.close()
        return await asyncio.to_thread(method, *args, **kwargs)

    async def aclose(self) -> None:
        """Close the running event loop's async client now (:meth:`close` closes every
        client: each loop's async client in its loop, the blocking one here); the next
        request makes another."""
        if self._aio is not None:
            await self._aio.close()

    # -- protocol -----------------------------------------------------------------------------
    def get_many(
        self, ns: str, keys: Sequence[str], *, now: float, touch: bool = False
    ) -> dict[str, Record]:
        """Return the live records of ``keys`` (1 find; +1 update with ``touch``)."""
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
        when = _to_datetime(now)
        with self._errors("get"):
            docs = yield call("find", {"_id": _one_of(self._ids(ns, keys)), **_live(when)})
        skip = len(ns_token(ns)) + 1
        records: dict[str, Record] = {}
        for doc in docs:  # checked before the touch, which reads some of the fields
            key = str(doc["_id"])[skip:]
            records[key] = _record(doc, ns)
            if doc[F_KEY] != key:
                raise _not_ours(doc, ns, f"field {F_KEY!r} is {doc[F_KEY][:100]!r}, not its key")
        if touch and docs:
            with self._errors("get"):
                yield _many_updates(_touches(docs, now, when))
        if touch:
            records = {key: record.touched(now) for key, record in records.items()}
        return records

    def meta_many(self, ns: str, keys: Sequence[str], *, now: float) -> dict[str, Record]:
        """The live records of ``keys`` without values (1 aggregate): every field but ``v``,
        whose size ``$binarySize`` measures on the server (MongoDB 4.4 and later). A
        document that is not an entry raises as in :meth:`get_many`."""
        if not keys:
            return {}
        coll = self._coll()
        fields = dict.fromkeys((F_KEY, *FIELD_OF.values()), 1)
        binary = {"$eq": [{"$type": "$" + F_VALUE}, "binData"]}
        pipeline = [
            {"$match": {"_id": _one_of(self._ids(ns, keys)), **_live(_to_datetime(now))}},
            {"$project": {**fields, "z": {"$cond": [binary, {"$binarySize": "$" + F_VALUE}, -1]}}},
        ]
        with self._errors("get metadata"):
            docs = list(coll.aggregate(pipeline))
        skip = len(ns_token(ns)) + 1
        out: dict[str, Record] = {}
        for doc in docs:
            key, size = str(doc["_id"])[skip:], doc.get("z")
            value = b"" if isinstance(size, int) and size >= 0 else None
            record = _record({**doc, F_VALUE: value}, ns)
            if doc[F_KEY] != key:
                raise _not_ours(doc, ns, f"field {F_KEY!r} is {doc[F_KEY][:100]!r}, not its key")
            record.stored_size = size
            out[key] = record
        return out

    def put_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        """Upsert ``records``, keeping the creation and access history of live entries.

        Up to ``_MERGE_ON_SERVER`` records (single writes: their latency is the round
        trip): 1 bulk write of upserts that merge the old metadata on the server (see
        :func:`_merge_upsert`); the keys they cannot merge that way (a record of version
        other than 1, an expired entry the TTL monitor has not removed yet, a foreign or
        corrupt document, whose upsert fails alone with a duplicate ``_id``) then take the
        path of larger batches: 1 find of the live old metadata + 1 bulk write of whole
        documents, merged here (the find is paid once for the whole batch).
        """
        self._run(self._put_many(ns, records, now))

    async def aput_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> None:
        """Async twin of :meth:`put_many` (the same body, on the event loop)."""
        await self._arun(self._put_many(ns, records, now), self.put_many, ns, records, now=now)

    def _put_many(self, ns: str, records: Mapping[str, Record], now: float) -> Body[None]:
        if not records:
            return
        token = ns_token(ns)
        with self._errors("put"):
            if len(records) > _MERGE_ON_SERVER:
                yield from self._replace_merged(token, ns, records, now)
                return
            when = _to_datetime(now)
            keys = [key for key, record in records.items() if record.version == 1]
            rest = [key for key, record in records.items() if record.version != 1]
            if keys:
                ops = [_merge_upsert(self._doc(token, ns, k, records[k]), when) for k in keys]
                try:
                    yield from _write_once_more_if_closed(ops)
                except DuplicateKeyError:  # a single upsert (update_one) that could not merge
                    rest += keys
                except BulkWriteError as err:
                    errors = err.details.get("writeErrors", [])
                    if err.details.get("writeConcernErrors") or any(
                        e.get("code") != _DUPLICATE_KEY for e in errors
                    ):
                        raise
                    rest += [keys[e["index"]] for e in errors]
            if rest:
                yield from self._replace_merged(token, ns, {k: records[k] for k in rest}, now)

    def _replace_merged(
        self, token: str, ns: str, records: Mapping[str, Record], now: float
    ) -> Body[None]:
        """The general path of :meth:`put_many`: 1 find of the live old metadata + 1 bulk
        write of whole documents (a foreign or corrupt document is replaced as if absent)."""
        ids = [f"{token}:{key}" for key in records]
        docs = yield call(
            "find", {"_id": _one_of(ids), **_live(_to_datetime(now))}, _META_PROJECTION
        )
        old = {
            doc[F_KEY]: Record(
                value=b"",
                created_at=float(doc[F_CREATED]),
                updated_at=float(doc[F_CREATED]),
                last_access=float(doc[F_ACCESSED]),
                access_count=int(doc.get(F_ACCESS_COUNT) or 0),
                version=int(doc.get(F_VERSION) or 1),
            )
            for doc in docs
            if not _doc_problem(doc, _META_PROJECTION)
        }
        ops = []
        for key, record in records.items():
            merged = record.merged_over(old.get(key), now)
            doc = self._doc(token, ns, key, merged)
            ops.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
        yield call("bulk_write", ops, ordered=False)

    def put_absent_many(self, ns: str, records: Mapping[str, Record], *, now: float) -> set[str]:
        """Insert the records whose key has no live entry: expired leftovers removed, then
        one unordered ``insert_many`` in which an existing ``_id`` fails alone (2 commands).

        An insert is atomic per document, so a write that lands between the two commands
        is never overwritten: its key is reported as not written.
        """
        return self._run(self._put_absent_many(ns, records, now))

    async def aput_absent_many(
        self, ns: str, records: Mapping[str, Record], *, now: float
    ) -> set[str]:
        """Async twin of :meth:`put_absent_many` (the same body, on the event loop)."""
        return await self._arun(
            self._put_absent_many(ns, records, now), self.put_absent_many, ns, records, now=now
        )

    def _put_absent_many(
        self, ns: str, records: Mapping[str, Record], now: float
    ) -> Body[set[str]]:
        if not records:
            return set()
        token = ns_token(ns)
        keys = list(records)
        docs = [self._doc(token, ns, key, records[key]) for key in keys]
        with self._errors("put if absent"):
            expired = _expired(_to_datetime(now))
            yield call(
                "delete_many", {"_id": _one_of([d["_id"] for d in docs]), F_EXPIRES: expired}
            )
            try:
                yield call("insert_many", docs, ordered=False)
            except BulkWriteError as err:
                errors = err.details.get("writeErrors", [])
                if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                    raise
                taken = {keys[e["index"]] for e in errors}
                return set(keys) - taken
        return set(keys)

    def delete_if_unchanged(
        self, ns: str, expected: Mapping[str, tuple[int, float]], *, now: float
    ) -> set[str]:
        """Delete the keys whose live entry is still the write ``(version, updated_at)``,
        and return exactly the keys THIS call deleted (another process deleting the same
        keys at once gets the others).

        Three commands: claim the matching documents for this call (one unordered bulk of
        per-document updates; each is atomic, so a document claimed by another call, or
        rewritten, no longer matches), read back the ids claimed, delete those. A claim
        left by a call that died is taken over after ``claim_timeout`` seconds; until then
        the entry stays where it is, readable (a rewrite replaces the whole document,
        claim included).
        """
        if not expected:
            return set()
        coll = self._coll()
        token = ns_token(ns)
        when = _to_datetime(now)
        claim = uuid.uuid4().hex
        free = {"$or": [{"w": {"$exists": False}}, {"wt": {"$lt": now - self.claim_timeout}}]}
        ops = [
            UpdateOne(
                {
                    "$and": [
                        {"_id": f"{token}:{key}", F_VERSION: int(t[0]), F_UPDATED: float(t[1])},
                        _live(when),
                        free,
                    ]
                },
                {"$set": {"w": claim, "wt": now}},
            )
            for key, t in expected.items()
        ]
        ids = [f"{token}:{key}" for key in expected]
        with self._errors("delete if unchanged"):
            if not coll.bulk_write(ops, ordered=False).modified_count:
                return set()
            mine = [d["_id"] for d in coll.find({"_id": {"$in": ids}, "w": claim}, {"_id": 1})]
            if not mine:
                return set()
            deleted = coll.delete_many({"_id": {"$in": mine}, "w": claim}).deleted_count
            if deleted < len(mine):  # taken over after a stall longer than claim_timeout
                other = coll.find({"_id": {"$in": mine}, "w": {"$ne": claim}}, {"_id": 1})
                mine = [i for i in mine if i not in {d["_id"] for d in other}]
                if len(mine) != deleted:
                    mine = []  # which ones were ours is unknown: claim none (safe for moves)
        prefix = len(token) + 1
        return {i[prefix:] for i in mine}

    def delete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        """Delete ``keys``: the live ones (counted), then expired leftovers (2 commands)."""
        return self._run(self._delete_many(ns, keys, now))

    async def adelete_many(self, ns: str, keys: Sequence[str], *, now: float) -> int:
        """Async twin of :meth:`delete_many` (the same body, on the event loop)."""
        return await self._arun(
            self._delete_many(ns, keys, now), self.delete_many, ns, keys, now=now
        )

    def _delete_many(self, ns: str, keys: Sequence[str], now: float) -> Body[int]:
        if not keys:
            return 0
        ids = self._ids(ns, keys)
        when = _to_datetime(now)
        with self._errors("delete"):
            result = yield call("delete_many", {"_id": _one_of(ids), **_live(when)})
            yield call("delete_many", {"_id": _one_of(ids), F_EXPIRES: _expired(when)})
        return result.deleted_count if result.acknowledged else 0

    def scan(self, ns: str, pattern: str | None, *, now: float) -> Iterator[str]:
        """Yield live keys matching ``pattern``, sorted, from one streamed find."""
        coll = self._coll()
        query: dict[str, Any] = {"ns": ns, **_live(_to_datetime(now))}
        prefix = literal_prefix(pattern)
        if prefix and prefix == pattern:
            query[F_KEY] = prefix
        elif prefix:
            query[F_KEY] = {"$regex": "^" + re.escape(prefix)}
        with self._errors("scan"):
            cursor = coll.find(query, _KEY_ONLY, sort=[(F_KEY, 1)], batch_size=1000)
            with cursor:
                for doc in cursor:
                    key = _listed_key(doc, ns)
                    if key is not None and glob_match(key, pattern):
                        yield key

    def scan_query(self, ns: str, query: Mapping[str, Any], *, now: float) -> Iterator[str]:
        """Yield the live keys of ``ns`` whose documents also match ``query`` (pushdown)."""
        coll = self._coll()
        full = {"$and": [{"ns": ns, **_live(_to_datetime(now))}, query]}
        with self._errors("scan"):
            cursor = coll.find(full, _KEY_ONLY, batch_size=1000)
            with cursor:
                for doc in cursor:
                    key = _listed_key(doc, ns)
                    if key is not None:
                        yield key

    def tagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        """Return the live keys carrying any of ``tags`` (1 find)."""
        return self._run(self._tagged(ns, tags, now))

    async def atagged(self, ns: str, tags: Iterable[str], *, now: float) -> set[str]:
        """Async twin of :meth:`tagged` (the same body, on the event loop)."""
        return await self._arun(self._tagged(ns, tags, now), self.tagged, ns, tags, now=now)

    def _tagged(self, ns: str, tags: Iterable[str], now: float) -> Body[set[str]]:
        wanted = list(dict.fromkeys(tags))
        if not wanted:
            return set()
        query = {"ns": ns, F_TAGS: {"$in": wanted}, **_live(_to_datetime(now))}
        with self._errors("tagged"):
            docs = yield call("find", query, _KEY_ONLY)
        found = (_listed_key(doc, ns) for doc in docs)
        return {key for key in found if key is not None}

    def exists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        """Return which of ``keys`` are live (1 find of ids, no access counted)."""
        return self._run(self._exists_many(ns, keys, now))

    async def aexists_many(self, ns: str, keys: Sequence[str], *, now: float) -> set[str]:
        """Async twin of :meth:`exists_many` (the same body, on the event loop)."""
        return await self._arun(
            self._exists_many(ns, keys, now), self.exists_many, ns, keys, now=now
        )

    def _exists_many(self, ns: str, keys: Sequence[str], now: float) -> Body[set[str]]:
        if not keys:
            return set()
        skip = len(ns_token(ns)) + 1
        query = {"_id": _one_of(self._ids(ns, keys)), **_live(_to_datetime(now))}
        with self._errors("exists"):
            docs = yield call("find", query, {"_id": 1})
        return {doc["_id"][skip:] for doc in docs}

    def clear(self, ns: str, *, now: float, batch_size: int = 1000) -> int:
        """Delete every entry of ``ns``; return how many were live (2 commands)."""
        coll = self._coll()
        with self._errors("clear"):
            result = coll.delete_many({"ns": ns, **_live(_to_datetime(now))})
            coll.delete_many({"ns": ns})
        return result.deleted_count if result.acknowledged else 0

    def purge_expired(self, ns: str, *, now: float) -> int:
        """Delete the expired entries of ``ns`` the TTL monitor has not removed yet."""
        coll = self._coll()
        with self._errors("purge expired"):
            result = coll.delete_many({"ns": ns, F_EXPIRES: _expired(_to_datetime(now))})
        return result.deleted_count if result.acknowledged else 0


#: One update of a command: ``(filter, update)``.
_Update = tuple[dict[str, Any], dict[str, Any]]


def _one_of(ids: list[str]) -> Any:
    """The ``_id`` condition of a list of ids: an equality for one ``str`` (the ``_id``
    index serves it on any server; some wire-compatible ones scan for an ``$in``), else
    ``$in`` (never an equality with a value that could be an operator document)."""
    return ids[0] if len(ids) == 1 and isinstance(ids[0], str) else {"$in": ids}


def _write_once_more_if_closed(upserts: list[_Update]) -> Body[None]:
    """The merge upserts ``(filter, update)`` in one command (see :func:`_upserts`), sent
    again once when a pooled connection turned out closed (the server restarted): the
    general path's ``find`` went first and pymongo retries a read on a fresh connection,
    while a write on a server without retryable writes (a standalone) is not retried. A
    timeout is never sent again (the write may have run). Sending the upserts twice is
    harmless: the second finds the first's entry and merges over it (the version goes up
    once more, which versions may).
    """
    step = _upserts(upserts)
    try:
        yield step
    except AutoReconnect as err:  # not ServerSelectionTimeoutError: no server, no retry
        if isinstance(err, NetworkTimeout):
            raise
        yield step


def _upserts(upserts: list[_Update]) -> Call:
    """One command of upserts: ``update_one`` for one (a failed one raises
    ``DuplicateKeyError``, leaner than a bulk write), else an unordered ``bulk_write`` (a
    failed one is in its ``BulkWriteError``)."""
    if len(upserts) == 1:
        (query, update), *_ = upserts
        return call("update_one", query, update, upsert=True)
    ops = [UpdateOne(query, update, upsert=True) for query, update in upserts]
    return call("bulk_write", ops, ordered=False)


def _many_updates(updates: list[_Update]) -> Call:
    """One command of ``update_many`` ``(filter, update)`` pairs (a bulk write for more than
    one)."""
    if len(updates) == 1:
        (query, update), *_ = updates
        return call("update_many", query, update)
    return call("bulk_write", [UpdateMany(q, u) for q, u in updates], ordered=False)


def _touches(docs: list[dict[str, Any]], now: float, when: Any) -> list[_Update]:
    """The updates ``(filter, update)`` counting one access of ``docs`` (and sliding the
    expiry of sliding ones), for one command (:func:`_many_updates`)."""
    plain = [doc["_id"] for doc in docs if not _is_sliding(doc)]
    sliding: dict[float, list[str]] = {}
    for doc in docs:
        if _is_sliding(doc):
            sliding.setdefault(float(doc[F_TTL]), []).append(doc["_id"])
    updates: list[_Update] = []
    if plain:
        touch = {"$inc": {F_ACCESS_COUNT: 1}, "$set": {F_ACCESSED: now}}
        updates.append(({"_id": _one_of(plain)}, touch))
    for ttl, ids in sliding.items():
        updates.append(
            (
                {"_id": _one_of(ids), **_live(when)},
                {
                    "$inc": {F_ACCESS_COUNT: 1},
                    "$set": {F_ACCESSED: now, F_EXPIRES: _to_datetime(now + ttl)},
                },
            )
        )
    return updates


#: BSON types of the numbers an entry's times may be (``bool`` and decimals are not).
_NUMBER_TYPES = ["double", "int", "long"]


def _merge_upsert(doc: dict[str, Any], when: _dt.datetime) -> _Update:
    """One upsert ``(filter, update)`` writing ``doc`` (a new record, version 1) as
    :meth:`Record.merged_over` would over the live entry it replaces, computed by the server
    in the same command.

    The filter matches the live entry only when its merged fields are well typed (as
    :func:`_doc_problem` checks them); then ``created_at`` and ``access_count`` are kept
    (``$setOnInsert``), ``last_access`` is the later one (``$max``), the version goes up
    by one (``$inc``, which makes 1 of a new document) and a claim of
    ``delete_if_unchanged`` is dropped, as a replacement drops it. Without a live entry
    the document is inserted as is. With an entry the filter does not match (expired,
    foreign, corrupt), the insert fails alone with a duplicate ``_id`` (the caller then
    replaces it). Works on MongoDB 2.6+ (no pipeline update needed).
    """
    kept = {F_CREATED: doc[F_CREATED], F_ACCESS_COUNT: doc[F_ACCESS_COUNT]}
    written = {
        name: value
        for name, value in doc.items()
        if name not in ("_id", F_CREATED, F_ACCESS_COUNT, F_ACCESSED, F_VERSION)
    }
    query = {
        "_id": doc["_id"],
        F_CREATED: {"$type": _NUMBER_TYPES},
        F_ACCESSED: {"$type": _NUMBER_TYPES},
        F_ACCESS_COUNT: {"$type": ["int", "long", "null"]},
        F_VERSION: {"$type": ["int", "long"], "$ne": 0},
        **_live(when),
    }
    update = {
        "$set": written,
        "$setOnInsert": kept,
        "$max": {F_ACCESSED: doc[F_ACCESSED]},
        "$inc": {F_VERSION: 1},
        "$unset": {"w": "", "wt": ""},
    }
    return query, update


def _listed_key(doc: Mapping[str, Any], ns: str) -> str | None:
    """The key of a listed document (``{k}``); ``None``, with a warning, for a document
    that is not an entry (no ``k``, or not a ``str``)."""
    key = doc.get(F_KEY)
    if isinstance(key, str):
        return key
    log.warning(
        "skipped a MongoDB document of namespace %r: not a prefect-memory entry (its 'k' "
        "is %.100r)", ns, key,
    )  # fmt: skip
    return None


#: The password wrapper (one class for every store; the old name stays for old pickles).
_Secret = Secret


def _check_database(name: str) -> str:
    if not isinstance(name, str) or not name or any(ch in _DB_FORBIDDEN for ch in name):
        raise ConfigError(
            f'invalid MongoDB database name {name!r} (non-empty, without / \\ . space " $)'
        )
    return name


def _check_collection(name: str) -> str:
    if (
        not isinstance(name, str)
        or not name
        or "$" in name
        or "\x00" in name
        or name.startswith("system.")
    ):
        raise ConfigError(
            f"invalid MongoDB collection name {name!r} (non-empty, without $, not system.*)"
        )
    return name


def _strong_concern(quorum: Any, timeout: float) -> WriteConcern:
    if quorum != "majority" and (isinstance(quorum, bool) or not isinstance(quorum, int)
                                 or quorum < 1):  # fmt: skip
        raise ConfigError(f"quorum must be a positive int (replicas) or 'majority', got {quorum!r}")
    w = quorum if quorum == "majority" else int(quorum) + 1
    return WriteConcern(w=w, wtimeout=max(1, int(timeout * 1000)))


def _concern_failed(err: PyMongoError) -> bool:
    """A write concern that could not be met: timed out, or not satisfiable here."""
    if isinstance(err, (WTimeoutError, WriteConcernError)):
        return True
    details = getattr(err, "details", None) or {}
    if details.get("writeConcernErrors"):
        return True
    text = str(details.get("errmsg", "")) if isinstance(details, dict) else ""
    return "replicated host" in text or "write concern" in text.lower()


def _write_concern(value: Any) -> WriteConcern | None:
    if value is None or isinstance(value, WriteConcern):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(
            f"write_concern must be a str such as 'majority' or an int, got {value!r}"
        )
    if isinstance(value, int) and value < 1:
        raise ConfigError(
            f"write_concern must be >= 1 (unacknowledged writes cannot report counts), got {value}"
        )
    return WriteConcern(w=value)


__all__ = ["DEFAULT_COLLECTION", "DEFAULT_DATABASE", "OPTIONS", "MongoBackend"]

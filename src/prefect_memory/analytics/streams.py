"""Event streams on Redis Streams, with trimming and consumer groups.

An :class:`EventStream` appends events (dicts, or rows of a DataFrame validated by the
built-in events model) with ``XADD ... MAXLEN ~ n`` (or ``MINID ~ <now - max_age>``),
pipelined for batches; each event travels as one msgpack field, so types (datetimes,
numbers, nested values) come back as they went in.

A :class:`Consumer` reads through a Redis *consumer group* rather than a checkpoint of our
own: the group's last-delivered id and its pending-entries list live inside the stream
key, so they are persisted (AOF/RDB) and replicated with the stream itself, trimmed with
it, and shared by competing consumers (several Prefect workers split a stream). An event
stays pending until :meth:`Consumer.ack`; after a crash, the consumer first gets its own
pending events again (at-least-once), and :meth:`Consumer.claim` takes over the events of
a consumer that died. A checkpoint of our own would have to reimplement all of that.

Example (the trim arguments an ``XADD`` gets; the stream itself needs a Redis server)::

    >>> stream = EventStream("redis://127.0.0.1:6390/0", "events", max_length=100000)
    >>> stream.trim_args()
    ['MAXLEN', '~', 100000]
    >>> EventStream("redis://127.0.0.1:6390/0", "events", trim="MINID", max_age=3600,
    ...             clock=lambda: 7200.0).trim_args()
    ['MINID', '~', '3600000-0']
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..codecs import Codec
from ..errors import BackendError, ConfigError
from ._redis import RedisLink

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("prefect_memory.analytics")
_FIELD = b"e"
Entry = tuple[str, dict[str, Any]]


class EventStream:
    """A Redis Stream of events, trimmed as it grows.

    Args:
        source: ``redis://`` URL, Redis-backed :class:`~prefect_memory.Memory`, or link.
        name: Name of the stream.
        max_length: Entries kept with ``trim="MAXLEN"`` (the tutorial's ``maxLength``).
        trim: ``"MAXLEN"`` (keep the newest ``max_length``) or ``"MINID"`` (keep the last
            ``max_age`` seconds), the tutorial's ``trimStrategy``.
        approximate: Trim with ``~`` (whole radix-tree nodes: much cheaper, keeps a few
            more entries than asked).
        max_age: Seconds kept with ``trim="MINID"``.
        schema: pandera model that frames given to :meth:`add_many` and returned by
            :meth:`read_frame` are checked with (default: the built-in events model for
            frames, none for dicts).
        namespace: Namespace of the keys (default: the memory's, else ``"default"``).
        clock: Source of epoch seconds (for ``MINID``).
        **options: Redis options for a URL (``key_prefix``, ``timeout``...).
    """

    def __init__(
        self,
        source: Any,
        name: str,
        *,
        max_length: int | None = 100_000,
        trim: str = "MAXLEN",
        approximate: bool = True,
        max_age: float | None = None,
        schema: Any = None,
        namespace: str | None = None,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        strategy = str(trim).upper()
        if strategy not in ("MAXLEN", "MINID"):
            raise ConfigError(f"trim must be 'MAXLEN' or 'MINID', got {trim!r}")
        if strategy == "MAXLEN" and max_length is not None and (
            not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1
        ):  # fmt: skip
            raise ConfigError(f"max_length must be a positive int, got {max_length!r}")
        if strategy == "MINID" and not (isinstance(max_age, (int, float)) and max_age > 0):
            raise ConfigError(f"trim='MINID' needs max_age= positive seconds, got {max_age!r}")
        self.link = RedisLink.open(source, namespace=namespace, **options)
        self.name = name
        self.key = self.link.key("s", name)
        self.max_length, self.trim_strategy = max_length, strategy
        self.approximate, self.max_age = bool(approximate), max_age
        self.schema, self.clock = schema, clock
        self.codec = Codec()

    def __repr__(self) -> str:
        return f"EventStream({self.name!r}, trim={self.trim_args()})"

    def trim_args(self) -> list[Any]:
        """The trimming arguments of each ``XADD`` (empty: no trimming)."""
        mark = "~" if self.approximate else "="
        if self.trim_strategy == "MINID":
            cutoff = int((self.clock() - float(self.max_age or 0)) * 1000)
            return ["MINID", mark, f"{max(cutoff, 0)}-0"]
        return [] if self.max_length is None else ["MAXLEN", mark, self.max_length]

    # -- writing ------------------------------------------------------------------------------
    def add(self, event: Mapping[str, Any], *, id: str = "*") -> str:
        """Append one event; return its stream id (``"1714557600000-0"``)."""
        if not isinstance(event, Mapping):
            raise TypeError(f"an event is a mapping, got {type(event).__name__}")
        reply = self.link.run("XADD", self.key, *self.trim_args(), id, _FIELD,
                              self.codec.encode(dict(event)))  # fmt: skip
        return reply.decode()

    def add_many(self, events: Iterable[Mapping[str, Any]] | pd.DataFrame) -> list[str]:
        """Append events (dicts, or the rows of a DataFrame) in one pipeline; return ids.

        A DataFrame is validated first (``schema``, default the built-in events model),
        every failure listed in one :class:`~prefect_memory.ValidationError`.
        """
        if hasattr(events, "to_dict") and hasattr(events, "columns"):
            from ..tabular.schemas import validate_frame

            schema = self.schema
            if schema is None:
                from ..tabular.models import EventsModel

                schema = EventsModel
            frame = validate_frame(events, schema)
            rows: list[dict[str, Any]] = [
                {k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")
            ]
        else:
            rows = [dict(e) for e in events]
        trim = self.trim_args()
        commands = [("XADD", self.key, *trim, "*", _FIELD, self.codec.encode(r)) for r in rows]
        ids: list[str] = []
        for i in range(0, len(commands), 1000):
            ids += [x.decode() for x in self.link.pipeline(commands[i : i + 1000])]
        return ids

    # -- reading ------------------------------------------------------------------------------
    def _decode(self, raw: Any) -> list[Entry]:
        out: list[Entry] = []
        for entry_id, fields in raw or ():
            if not fields:  # deleted or trimmed while pending
                continue
            data = dict(zip(fields[0::2], fields[1::2], strict=True)).get(_FIELD)
            out.append((entry_id.decode(), self.codec.decode(data) if data else {}))
        return out

    def read(self, after: str = "0", count: int | None = None, *, end: str = "+") -> list[Entry]:
        """Events with an id greater than ``after`` (up to ``end``), oldest first.

        Args:
            after: An id already seen (``"0"``: from the beginning).
            count: Most events to return (default: all).
            end: Last id included (``"+"``: the newest).
        """
        start = "-" if after in ("0", "0-0", "-") else f"({after}"
        extra = [] if count is None else ["COUNT", int(count)]
        return self._decode(self.link.run("XRANGE", self.key, start, end, *extra))

    def read_frame(self, after: str = "0", count: int | None = None) -> pd.DataFrame:
        """:meth:`read` as a DataFrame indexed by ``id`` (validated by ``schema`` if set)."""
        import pandas as pd

        entries = self.read(after, count)
        frame = pd.DataFrame([e for _, e in entries], index=pd.Index([i for i, _ in entries],
                                                                     name="id"))  # fmt: skip
        if self.schema is not None and len(frame):
            from ..tabular.schemas import validate_frame

            frame = validate_frame(frame, self.schema)
        return frame

    def __len__(self) -> int:
        return int(self.link.run("XLEN", self.key))

    def trim(self) -> int:
        """Trim now (as each ``XADD`` does); return how many entries were removed."""
        args = self.trim_args()
        return int(self.link.run("XTRIM", self.key, *args)) if args else 0

    def delete(self) -> None:
        """Remove the stream and its consumer groups."""
        self.link.run("DEL", self.key)

    def consumer(self, group: str, name: str = "consumer-1", *, start: str = "0") -> Consumer:
        """A :class:`Consumer` of this stream in consumer group ``group``."""
        return Consumer(self, group, name, start=start)


def _plain(value: Any) -> Any:
    """A frame cell as msgpack carries it (NaN/NaT -> None, Timestamp -> datetime)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    to_py = getattr(value, "to_pydatetime", None)
    if to_py is not None:
        return None if str(value) == "NaT" else to_py()
    item = getattr(value, "item", None)
    return item() if item is not None else value


class Consumer:
    """A consumer in a Redis consumer group: its position survives restarts with the stream.

    Args:
        stream: The stream read.
        group: Consumer group (created on first use, with the stream if missing).
        name: This consumer's name in the group (one per worker).
        start: Where a new group starts: ``"0"`` (every event kept) or ``"$"`` (new ones).

    Each :meth:`read` first returns this consumer's unacknowledged events (after a crash),
    then new ones; :meth:`ack` marks events processed.
    """

    def __init__(self, stream: EventStream, group: str, name: str = "consumer-1", *,
                 start: str = "0") -> None:  # fmt: skip
        self.stream, self.group, self.name, self.start = stream, group, name, start
        self._ready = False
        self._backlog: str | None = "0"  # where the pending events are read from next
        #: Events lost while pending (trimmed before being acknowledged).
        self.lost = 0

    def __repr__(self) -> str:
        return f"Consumer({self.stream.name!r}, group={self.group!r}, name={self.name!r})"

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            self.stream.link.run("XGROUP", "CREATE", self.stream.key, self.group, self.start,
                                 "MKSTREAM")  # fmt: skip
        except BackendError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._ready = True

    def read(self, count: int = 100, *, block: float | None = None) -> list[Entry]:
        """Up to ``count`` events: this consumer's pending ones first, then new ones.

        Args:
            count: Most events to return.
            block: Seconds to wait for new events when there are none (below the
                connection's timeout); ``None``: do not wait.
        """
        self._ensure()
        link, key = self.stream.link, self.stream.key
        while self._backlog is not None:  # pending events first, page by page
            raw = link.run("XREADGROUP", "GROUP", self.group, self.name, "COUNT", int(count),
                           "STREAMS", key, self._backlog)  # fmt: skip
            entries = raw[0][1] if raw else []
            if not entries:
                self._backlog = None
                break
            self._backlog = entries[-1][0].decode()
            gone = [e[0] for e in entries if not e[1]]
            if gone:  # trimmed while pending: nothing left to process
                self.lost += len(gone)
                logger.warning("stream %s: %d pending events were trimmed before being "
                               "acknowledged", self.stream.name, len(gone))  # fmt: skip
                link.run("XACK", key, self.group, *gone)
            live = self.stream._decode(entries)
            if live:
                return live
        wait = [] if block is None else ["BLOCK", max(1, int(block * 1000))]
        raw = link.run("XREADGROUP", "GROUP", self.group, self.name, "COUNT", int(count),
                       *wait, "STREAMS", key, ">")  # fmt: skip
        return self.stream._decode(raw[0][1] if raw else [])

    def ack(self, ids: Iterable[str] | str) -> int:
        """Acknowledge processed events (by id); return how many were pending."""
        ids = [ids] if isinstance(ids, str) else [i if isinstance(i, str) else i[0] for i in ids]
        if not ids:
            return 0
        self._ensure()
        return int(self.stream.link.run("XACK", self.stream.key, self.group, *ids))

    def pending(self) -> int:
        """How many events of the group are delivered but not acknowledged."""
        self._ensure()
        return int(self.stream.link.run("XPENDING", self.stream.key, self.group)[0])

    def position(self) -> str:
        """The group's last delivered id (``"0-0"`` before any read)."""
        self._ensure()
        for info in self.stream.link.run("XINFO", "GROUPS", self.stream.key):
            fields = dict(zip(info[0::2], info[1::2], strict=True))
            if fields[b"name"].decode() == self.group:
                return fields[b"last-delivered-id"].decode()
        raise KeyError(self.group)  # pragma: no cover - created above

    def claim(self, min_idle: float, count: int = 100) -> list[Entry]:
        """Take over events pending for ``min_idle`` seconds or more at other consumers."""
        self._ensure()
        reply = self.stream.link.run("XAUTOCLAIM", self.stream.key, self.group, self.name,
                                     int(min_idle * 1000), "0-0", "COUNT", int(count))  # fmt: skip
        return self.stream._decode(reply[1])

    def __iter__(self) -> Iterator[Entry]:
        """Events one by one until none is left; each is acknowledged once the loop body
        asked for the next (at-least-once: a crash in the body leaves it pending)."""
        while True:
            batch = self.read()
            if not batch:
                return
            for entry in batch:
                yield entry
                self.ack(entry[0])

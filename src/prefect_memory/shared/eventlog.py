"""Event sourcing: an append-only log in a Redis stream, snapshots in any Memory.

``append`` adds events to the stream (``XADD``, durable as the server is) and publishes
them in the same script; ``state`` folds the events not applied yet into the local state
with the ``reducer``; ``rebuild`` starts over from the latest snapshot plus the events
after it. Every ``snapshot_every`` applied events the state is saved as a snapshot, in the
log's memory or in the ``snapshots`` memory (any store: SQLite, S3, ...). Reducers must be
deterministic: every process folds the same events in the same order.

Example:
    >>> def count(state, event):
    ...     return {**state, event["kind"]: state.get(event["kind"], 0) + 1}
    >>> fold(count, {}, [{"kind": "a"}, {"kind": "b"}, {"kind": "a"}])
    {'a': 2, 'b': 1}
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from ..errors import ConfigError
from ..memory import Memory
from ..plugins.redis.scripts import LuaScript
from ._redis import namespace_of, object_key, redis_backend
from .broadcast import Listener

Reducer = Callable[[Any, Any], Any]
_PAGE = 1000

# KEYS[1]: the stream. ARGV[1]: channel; ARGV[2..]: encoded events. One PUBLISH per batch:
# msgpack {{id, event}, ...}. Returns the ids.
_APPEND = LuaScript("""
local ids, out = {}, {}
for i = 2, #ARGV do
  local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  ids[#ids + 1] = id
  out[#out + 1] = {id, ARGV[i]}
end
redis.call('PUBLISH', ARGV[1], cmsgpack.pack(out))
return ids
""")


def fold(reducer: Reducer, state: Any, events: Iterable[Any]) -> Any:
    """Apply ``reducer`` to ``state`` and each event in order."""
    for event in events:
        state = reducer(state, event)
    return state


class EventLog:
    """An event-sourced state shared by every process that opens the same log.

    Args:
        memory: A Memory on Redis (the stream lives in its namespace).
        name: The log's name.
        reducer: ``reducer(state, event) -> new state``.
        snapshot_every: Save a snapshot after this many applied events (``0``: never).
        initial: The state before the first event (copied, never mutated).
        snapshots: Where snapshots go (default: ``memory``); any Memory.
    """

    def __init__(
        self,
        memory: Memory,
        name: str,
        reducer: Reducer,
        *,
        snapshot_every: int = 100,
        initial: Any = None,
        snapshots: Memory | None = None,
    ) -> None:
        if not callable(reducer):
            raise ConfigError(f"reducer must be callable, got {reducer!r}")
        if (
            isinstance(snapshot_every, bool)
            or not isinstance(snapshot_every, int)
            or (snapshot_every < 0)
        ):
            raise ConfigError(f"snapshot_every must be an int >= 0, got {snapshot_every!r}")
        self.backend = redis_backend(memory)
        self.memory, self.name, self.reducer = memory, name, reducer
        self.snapshot_every, self.initial = snapshot_every, initial
        self.snapshots = snapshots or memory
        self.snapshot_key = f"eventlog:{name}:snapshot"
        base = object_key(self.backend, namespace_of(memory), "eventlog", name)
        self.stream, self.channel = base + "events", base + "changes"
        self.codec = memory.codec
        self._state: Any = copy.deepcopy(initial)
        self._last_id = "0-0"
        self._since_snapshot = 0
        self._listener: Listener | None = None

    @property
    def last_id(self) -> str:
        """Stream id of the last event folded into the local state."""
        return self._last_id

    def append(self, *events: Any) -> list[str]:
        """Append ``events`` (one script call, one broadcast); return their stream ids."""
        if not events:
            return []
        args = [self.channel, *(self.codec.encode(event) for event in events)]
        ids = self.backend.run_script(_APPEND, [self.stream], args, wait=True)
        self.catch_up()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    @property
    def state(self) -> Any:
        """The state after every event appended so far (folds in the new ones)."""
        return self.catch_up()

    def catch_up(self) -> Any:
        """Fold the events after :attr:`last_id` into the state; return it."""
        while True:
            page = self.backend.execute(
                "XRANGE", self.stream, f"({self._last_id}", "+", "COUNT", _PAGE, route=self.stream
            )
            for entry_id, fields in page:
                self._state = self.reducer(self._state, self.codec.decode(_field(fields)))
                self._last_id = entry_id.decode()
                self._since_snapshot += 1
                if self.snapshot_every and self._since_snapshot >= self.snapshot_every:
                    self.snapshot()
            if len(page) < _PAGE:
                return self._state

    def snapshot(self) -> None:
        """Save the local state and its position now."""
        self.snapshots.set(self.snapshot_key, {"state": self._state, "last_id": self._last_id})
        self._since_snapshot = 0

    def rebuild(self) -> Any:
        """Start from the latest snapshot (or ``initial``) and fold every later event."""
        saved = self.snapshots.get(self.snapshot_key)
        if saved is None:
            self._state, self._last_id = copy.deepcopy(self.initial), "0-0"
        else:
            self._state, self._last_id = saved["state"], saved["last_id"]
        self._since_snapshot = 0
        return self.catch_up()

    def events(self, after: str = "0-0") -> list[tuple[str, Any]]:
        """``(id, event)`` of the events after ``after`` (all of them by default)."""
        out: list[tuple[str, Any]] = []
        while True:
            page = self.backend.execute(
                "XRANGE", self.stream, f"({after}", "+", "COUNT", _PAGE, route=self.stream
            )
            for entry_id, fields in page:
                after = entry_id.decode()
                out.append((after, self.codec.decode(_field(fields))))
            if len(page) < _PAGE:
                return out

    def compact(self) -> int:
        """Drop the events the saved snapshot covers; return how many were dropped."""
        saved = self.snapshots.get(self.snapshot_key)
        if saved is None:
            return 0
        return int(self.backend.execute(
            "XTRIM", self.stream, "MINID", _next_id(saved["last_id"]), route=self.stream
        ))  # fmt: skip

    def subscribe(self, callback: Callable[[str, Any], None]) -> None:
        """Call ``callback(id, event)`` (in a listener thread) for every appended event."""

        def on_message(data: bytes) -> None:
            for entry_id, raw in msgpack.unpackb(data, raw=True):
                callback(entry_id.decode(), self.codec.decode(raw))

        self.close()
        self._listener = Listener(self.backend, {self.channel: on_message}).start()

    def close(self) -> None:
        """Stop the listener of :meth:`subscribe`, if any."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    def clear(self) -> None:
        """Delete the stream and the snapshot (the log starts empty)."""
        self.backend.execute("DEL", self.stream, route=self.stream)
        self.snapshots.delete(self.snapshot_key)
        self._state, self._last_id, self._since_snapshot = copy.deepcopy(self.initial), "0-0", 0


def _field(fields: list[bytes]) -> bytes:
    return dict(zip(fields[::2], fields[1::2], strict=True))[b"e"]


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


__all__ = ["EventLog", "fold"]

"""Change broadcast over Redis pub/sub: one message per write batch, a listener thread.

Why pub/sub and not streams: a change message only tells in-process caches what to drop,
so it is worth nothing once a subscriber has missed it; what matters is latency and zero
storage. Pub/sub delivers in order with no per-message storage or trimming, and a PUBLISH
from the write script costs no round trip. What pub/sub loses (messages sent while a
subscriber is disconnected) is made safe by the subscriber: on every (re)connection it
resets, i.e. drops its whole cache (``on_reset``), exactly as Redis's own client-side
caching does. Event logs, which must not lose anything, use streams instead
(:mod:`prefect_memory.shared.eventlog`).

Example:
    >>> for change in decode_changes(encode_changes("ns", "writer-1", ["a", "b"], [3, 0])):
    ...     print(change)
    Change(key='a', namespace='ns', version=3, source='writer-1')
    Change(key='b', namespace='ns', version=0, source='writer-1')
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgpack

from ..errors import BackendUnavailable
from ..plugins.redis.backend import RedisBackend

log = logging.getLogger(__name__)

_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds between reconnection attempts


class Change(NamedTuple):
    """One changed entry, as a write broadcasts it.

    Attributes:
        key: The entry's key (``""``: the whole namespace was cleared).
        namespace: Its namespace.
        version: The entry's version after the write; ``0`` when the write deleted it;
            ``-1`` when the writer does not know it (a store without server scripts).
        source: Who wrote (the writer's ``source`` id).
    """

    key: str
    namespace: str
    version: int
    source: str


def encode_changes(
    namespace: str, source: str, keys: Sequence[str], versions: Sequence[int]
) -> bytes:
    """One message for a batch (the layout the Redis write scripts publish)."""
    return msgpack.packb([namespace, source, list(keys), list(versions)])


def decode_changes(data: bytes) -> list[Change]:
    """The changes of one message (see :func:`encode_changes`)."""
    namespace, source, keys, versions = msgpack.unpackb(data, raw=False)
    if isinstance(keys, dict) or isinstance(versions, dict):  # an empty Lua table
        keys, versions = [], []
    return [Change(k, namespace, int(v), source) for k, v in zip(keys, versions, strict=True)]


class Listener:
    """A thread listening to channels of one Redis, calling back on every message.

    Args:
        backend: The Redis backend (its settings make the dedicated pub/sub connection).
        channels: ``{channel: callback(bytes)}``.
        on_reset: Called (in the listener thread) each time the subscription is
            (re)established: messages sent meanwhile may have been missed.
        subscribe_timeout: Seconds :meth:`start` waits for the first subscription.
    """

    def __init__(
        self,
        backend: RedisBackend,
        channels: dict[str, Callable[[bytes], None]],
        *,
        on_reset: Callable[[], None] | None = None,
        subscribe_timeout: float = 5.0,
    ) -> None:
        self.backend = backend
        self.channels = dict(channels)
        self.on_reset = on_reset
        self.subscribe_timeout = subscribe_timeout
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None

    def start(self) -> Listener:
        """Start the thread and wait (bounded) until the channels are subscribed.

        Raises:
            BackendUnavailable: Not subscribed within ``subscribe_timeout``.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pm-listener", daemon=True)
            self._thread.start()
        if not self.subscribed.wait(self.subscribe_timeout):
            raise BackendUnavailable(
                f"could not subscribe to {sorted(self.channels)} on Redis at "
                f"{self.backend.host}:{self.backend.port} within {self.subscribe_timeout}s"
            )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (bounded wait) and close its connection."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the thread runs and its subscription is up."""
        return self._thread is not None and self.subscribed.is_set()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            client = pubsub = None
            try:
                client = self.backend.redis_client(socket_timeout=None, health_check_interval=10)
                pubsub = client.pubsub()
                pubsub.subscribe(*self.channels)
                pending = len(self.channels)  # confirmations still to read
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._dispatch(message)
                    elif message["type"] == "subscribe":
                        pending -= 1
                        if pending == 0:  # from here on, no message is missed
                            self._reset()
                            self.subscribed.set()
                            failures = 0
            except Exception as err:  # connection lost: reset and reconnect (bounded backoff)
                self.subscribed.clear()
                log.warning("change listener lost its subscription (%s); reconnecting", err)
                self._stop.wait(_BACKOFF[min(failures, len(_BACKOFF) - 1)])
                failures += 1
            finally:
                self.subscribed.clear()
                for closer in (pubsub, client):
                    if closer is not None:
                        with contextlib.suppress(Exception):
                            closer.close()

    def _reset(self) -> None:
        if self.on_reset is not None:
            try:
                self.on_reset()
            except Exception:  # pragma: no cover - a callback bug must not kill the thread
                log.exception("change listener: on_reset failed")

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        callback = self.channels.get(channel)
        if callback is None:
            return
        try:
            callback(message["data"])
        except Exception:  # pragma: no cover - a callback bug must not kill the thread
            log.exception("change listener: the callback of %s failed", channel)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


__all__ = ["Change", "Listener", "decode_changes", "encode_changes", "wait_until"]

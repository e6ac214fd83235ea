"""A small TCP proxy for fault tests: forwards to a real server, and can stall or cut.

``stall()`` stops forwarding in both directions (connections stay open, new ones are
accepted: a server that "accepts and never answers"); ``resume()`` delivers what waited;
``cut()`` resets every open connection (the clients see ECONNRESET); ``stop()`` closes
the listener too. ``hold()`` freezes only the connections open now (new ones flow), and
``deliver()`` later sends what their clients wrote meanwhile, keeping the server side open
until it answers even when the client has gone: a request delivered late, as a server
that holds a request and applies it after newer ones does. Threads, no asyncio: the
tests drive it from plain synchronous code.

    with TcpProxy("127.0.0.1", redis.port) as proxy:
        client = redis.Redis(port=proxy.port)
        proxy.stall(); ...; proxy.resume()
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

_CHUNK = 65536
_POLL = 0.05  # seconds between checks of the stop flag in blocking calls


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self.released = threading.Event()  # cleared while held
        self.released.set()
        self.was_held = False
        self.delivered = 0  # bytes sent upstream after a hold

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if reset:  # RST instead of FIN: the peer sees a connection reset
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_host:upstream_port`` (module docstring)."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = port
        self.connections = 0
        self.stalls = 0
        self.cuts = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._links: set[_Link] = set()
        self.held: list[_Link] = []
        self._match: bytes | Callable[[bytes], bool] | None = None
        self._match_left = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(_POLL)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopped.clear()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._flowing.set()
        self.cut(count=False)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- faults -----------------------------------------------------------------------------
    def stall(self) -> None:
        """Stop forwarding: every byte waits (clients block on their reads)."""
        self.stalls += 1
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, delivering what waited."""
        self._flowing.set()

    def cut(self, *, count: bool = True) -> None:
        """Reset every open connection (new connections are still accepted)."""
        self.cuts += count
        with self._lock:
            links, self._links = list(self._links), set()
        for link in links:
            link.close(reset=True)

    def hold(self, match: bytes | Callable[[bytes], bool] | None = None, count: int = 1) -> int:
        """Hold client bytes until :meth:`deliver`; return the connections held now.

        Without ``match``: the connections open now (new ones flow). With ``match``: the
        next ``count`` requests whose first bytes are ``match`` (``b"PUT "``), or for
        which ``match(first_chunk)`` is true, on any connection. Held bytes are read and
        kept by the proxy, as a server holding a request would, so a client that gives up
        cannot take them back.
        """
        if match is not None:
            with self._lock:
                self._match, self._match_left = match, count
            return 0
        with self._lock:
            links = list(self._links)
        for link in links:
            link.was_held = True
            link.released.clear()
        self.held += links
        return len(links)

    def deliver(self) -> int:
        """Send upstream what the held connections' clients wrote; return the bytes sent.

        Waits (up to 5 s) until the bytes have gone; the server side of a connection
        whose client has gone stays open a little while so the server finishes the request.
        """
        links, self.held = self.held, []
        for link in links:
            link.released.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            not link.closed.is_set() and link.delivered == 0 for link in links
        ):
            time.sleep(_POLL)
        return sum(link.delivered for link in links)

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    # -- forwarding -------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:  # the server is down: the client sees its connection closed
                client.close()
                continue
            self.connections += 1
            link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(link, src, dst), name="tcp-proxy-pump", daemon=True
                ).start()

    def _matches(self, link: _Link, data: bytes) -> bool:
        """Whether ``data`` starts a request to hold (then ``link`` is held from here)."""
        with self._lock:
            match = self._match
            if match is None:
                return False
            if not (match(data) if callable(match) else data.startswith(match)):
                return False
            self._match_left -= 1
            if self._match_left <= 0:
                self._match = None
        link.was_held = True
        link.released.clear()
        self.held.append(link)
        return True

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(_POLL)  # raises if a cut() closed the socket already
            if dst is link.upstream:
                self._forward_requests(link)
            else:
                self._forward_answers(link)
        except OSError:
            pass
        finally:
            link.close()
            with self._lock:
                self._links.discard(link)

    def _forward_requests(self, link: _Link) -> None:
        """Client to server. Stalled: nothing is read (the client blocks). Held: what the
        client sends is read and kept (it cannot take it back) until :meth:`deliver`."""
        pending = bytearray()
        gone = False  # the client closed (or reset) its end
        while not link.closed.is_set():
            if not self._flowing.wait(_POLL):
                continue
            if not gone:
                try:
                    data: bytes | None = link.client.recv(_CHUNK)
                except TimeoutError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    gone = True
                elif data is not None:
                    if link.released.is_set():
                        self._matches(link, data)
                    pending += data
            released = link.released.is_set()
            if pending and released:
                link.upstream.sendall(pending)
                if link.was_held:
                    link.delivered += len(pending)
                pending.clear()
            if gone:
                if released:
                    break
                link.released.wait(_POLL)
        if link.was_held:
            link.closed.wait(3.0)  # a late request: the server finishes, answering nobody

    def _forward_answers(self, link: _Link) -> None:
        """Server to client (after a hold, an answer to a client that left is dropped)."""
        while not link.closed.is_set():
            if not self._flowing.wait(_POLL):
                continue
            try:
                data = link.upstream.recv(_CHUNK)
            except TimeoutError:
                continue
            if not data:
                return
            while not self._flowing.is_set():  # stalled between recv and send
                if link.closed.wait(_POLL):
                    return
            try:
                link.client.sendall(data)
            except OSError:
                if not link.was_held:
                    raise

    def __repr__(self) -> str:
        state = "stalled" if self.stalled else "forwarding"
        return f"<TcpProxy {self.address} -> {self.upstream[0]}:{self.upstream[1]} {state}>"


def proxied_url(url: str, proxy: TcpProxy, port: int) -> Any:
    """``url`` with ``127.0.0.1:<port>`` replaced by the proxy's address."""
    return url.replace(f"127.0.0.1:{port}", proxy.address)


__all__ = ["TcpProxy", "proxied_url"]

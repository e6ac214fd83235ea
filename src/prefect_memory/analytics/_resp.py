"""A RESP2 reply reader that lands large bulk strings in buffers of their own, copied once.

redis-py's pure-Python parser copies a bulk string three times (socket buffer, ``BytesIO``,
slice); for the megabyte-sized raw chunks of a time series, that is most of the cost of a
downsampling run. Against redis-py with hiredis (C, an opt-in extra) it wins where it is
used, the chunk reads of ``downsample()`` (1.2-1.5x end to end) and loses 5-15% on
strings below 64 KiB: ``ONE_COPY_READS`` in :mod:`._redis` says why, with the benchmarks.

:class:`ReplyReader` reads replies of a pipeline from the socket of a
redis-py connection: small items from its own buffer, a large bulk string straight into a
fresh numpy array with ``recv_into`` (what is already buffered is copied, the rest goes from
the kernel to its final place).

Example:
    >>> import socket
    >>> left, right = socket.socketpair()
    >>> one_int64 = b"\\x01" + bytes(7)
    >>> _ = right.sendall(b"+OK\\r\\n*3\\r\\n:1\\r\\n$-1\\r\\n$8\\r\\n" + one_int64 + b"\\r\\n")
    >>> reader = ReplyReader(left, large=4)
    >>> reader.read()
    b'OK'
    >>> one, nil, blob = reader.read()
    >>> one, nil, blob.view("<i8").tolist()
    (1, None, [1])
    >>> left.close(); right.close()
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BackendError, BackendUnavailable

#: Bounds of what a reply may claim (a hostile or broken server): Redis' own
#: ``proto-max-bulk-len`` default, and nested arrays deeper than any command returns.
MAX_BULK = 512 * 1024 * 1024
MAX_DEPTH = 8
MAX_LINE = 16 * 1024 * 1024


class ReplyReader:
    """Read RESP2 replies from ``sock``; bulk strings of ``large`` bytes or more come back
    as ``numpy.uint8`` arrays, smaller ones as ``bytes``.

    Args:
        sock: A connected socket (plain or TLS) with nothing else reading from it.
        large: Size from which a bulk string gets a buffer of its own.
        size: Size of the buffer for everything else.
    """

    def __init__(self, sock: Any, *, large: int = 65536, size: int = 1 << 18) -> None:
        self.sock = sock
        self.large = large
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def _fill(self) -> None:
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):  # keep the unread tail, at the front
            tail = self.end - self.start
            if tail == len(self.buf):  # one line longer than the buffer: grow it
                if tail >= MAX_LINE:
                    raise BackendUnavailable("a reply line from Redis is too long: refused")
                self.buf.extend(bytearray(len(self.buf)))
                self.view.release()
                self.view = memoryview(self.buf)
            else:
                self.buf[:tail] = self.buf[self.start : self.end]
                self.start, self.end = 0, tail
        got = self.sock.recv_into(self.view[self.end :])
        if not got:
            raise BackendUnavailable("Redis closed the connection in the middle of a reply")
        self.end += got

    def _line(self) -> bytes:
        while True:
            at = self.buf.find(b"\r\n", self.start, self.end)
            if at >= 0:
                line = bytes(self.buf[self.start : at])
                self.start = at + 2
                return line
            self._fill()

    def _bulk(self, size: int) -> Any:
        if size < self.large:
            while self.end - self.start < size + 2:
                self._fill()
            data = bytes(self.buf[self.start : self.start + size])
            self.start += size + 2
            return data
        out = np.empty(size, dtype=np.uint8)
        target = memoryview(out)
        have = min(size, self.end - self.start)
        target[:have] = self.view[self.start : self.start + have]
        self.start += have
        filled = have
        while filled < size:
            got = self.sock.recv_into(target[filled:], size - filled)
            if not got:
                raise BackendUnavailable("Redis closed the connection in the middle of a reply")
            filled += got
        while self.end - self.start < 2:  # the \r\n after the data
            self._fill()
        self.start += 2
        return out

    def read(self, depth: int = 0) -> Any:
        """One reply: ``bytes``/array, ``int``, ``None``, or a list of replies.

        Raises:
            BackendError: The reply is an error (the rest of the pipeline is still read by
                the next calls).
            BackendUnavailable: The reply is not RESP2 within the bounds (``MAX_BULK``,
                ``MAX_DEPTH``): the connection cannot be trusted any more.
        """
        line = self._line()
        kind, rest = line[:1], line[1:]
        try:
            number = int(rest) if kind in (b"$", b"*", b":") else 0
        except ValueError:
            raise BackendUnavailable(f"unexpected reply from Redis: {line[:40]!r}") from None
        if kind == b"$":
            if number > MAX_BULK:
                raise BackendUnavailable(f"a reply from Redis claims {number} bytes: refused")
            return None if number < 0 else self._bulk(number)
        if kind == b"*":
            if depth >= MAX_DEPTH:
                raise BackendUnavailable("a reply from Redis nests arrays too deep: refused")
            return None if number < 0 else [self.read(depth + 1) for _ in range(number)]
        if kind == b":":
            return number
        if kind == b"+":
            return rest
        if kind == b"-":
            raise BackendError(f"Redis: {rest.decode(errors='replace')}")
        raise BackendUnavailable(f"unexpected reply from Redis: {line[:40]!r}")

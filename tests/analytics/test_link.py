"""RedisLink.fetch: the reads of raw chunks, through our one-copy reader and through redis-py
(hiredis), on a real redis-server; our reader refuses replies past its bounds."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import prefect_memory as pm
from prefect_memory.analytics import RedisLink
from prefect_memory.analytics import _redis as link_module
from prefect_memory.analytics._resp import MAX_DEPTH, ReplyReader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import RedisServer


@pytest.mark.parametrize("ours", [True, False], ids=["one-copy reader", "redis-py"])
def test_fetch_reads_large_values_and_survives_a_restart(monkeypatch: Any, ours: bool) -> None:
    monkeypatch.setattr(link_module, "ONE_COPY_READS", ours)
    server = RedisServer().start()
    try:
        link = RedisLink.open(server.url)
        big = np.arange(100_000, dtype=np.int64)
        link.pipeline([("SET", "big", big.tobytes()), ("SET", "small", b"abc")])
        got = link.fetch([("GET", "big"), ("GET", "small"), ("GET", "none"), ("EXISTS", "big")])
        assert isinstance(got[0], np.ndarray) == ours  # ours: one copy into an array
        assert np.array_equal(np.frombuffer(got[0], dtype=np.int64), big)
        assert got[1:] == [b"abc", None, 1]
        snapshot = link.fetch([("MULTI",), ("GET", "big"), ("EXISTS", "small"), ("EXEC",)])[-1]
        assert np.array_equal(np.frombuffer(snapshot[0], dtype=np.int64), big)
        assert snapshot[1] == 1
        with pytest.raises(pm.BackendError, match="WRONGTYPE"):
            link.fetch([("HGET", "big", "x"), ("GET", "small")])
        assert link.fetch([("GET", "small")]) == [b"abc"]  # the connection is still good
        server.kill()
        with pytest.raises(pm.BackendUnavailable):
            link.fetch([("GET", "small")])
        server.restart()
        assert link.fetch([("GET", "small")]) == [None]  # no persistence: a fresh server
    finally:
        server.stop()


def test_the_chunk_reads_use_our_reader_by_default() -> None:
    assert link_module.ONE_COPY_READS is True and link_module.one_copy_reads()


@pytest.mark.parametrize(
    "reply, error",
    [
        (b"$99999999999\r\n", "claims 99999999999 bytes"),
        (b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n", "nests arrays too deep"),
        (b"$abc\r\n", "unexpected reply"),
        (b"?what\r\n", "unexpected reply"),
    ],
)
def test_our_reader_refuses_replies_past_its_bounds(reply: bytes, error: str) -> None:
    left, right = socket.socketpair()
    try:
        right.sendall(reply)
        with pytest.raises(pm.BackendUnavailable, match=error):
            ReplyReader(left).read()
    finally:
        left.close()
        right.close()


def test_our_reader_reads_nesting_up_to_its_bound() -> None:
    left, right = socket.socketpair()
    try:
        right.sendall(b"*1\r\n" * MAX_DEPTH + b":7\r\n")
        got = ReplyReader(left).read()
        for _ in range(MAX_DEPTH):
            got = got[0]
        assert got == 7
    finally:
        left.close()
        right.close()

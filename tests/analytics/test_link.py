"""RedisLink.fetch: the one-copy reader of the raw chunks, on a real redis-server."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import prefect_memory as pm
from prefect_memory.analytics import RedisLink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import RedisServer


def test_fetch_reads_large_values_with_one_copy_and_survives_a_restart() -> None:
    server = RedisServer().start()
    try:
        link = RedisLink.open(server.url)
        big = np.arange(100_000, dtype=np.int64)
        link.pipeline([("SET", "big", big.tobytes()), ("SET", "small", b"abc")])
        got = link.fetch([("GET", "big"), ("GET", "small"), ("GET", "none"), ("EXISTS", "big")])
        assert np.array_equal(got[0].view(np.int64), big)
        assert got[1:] == [b"abc", None, 1]
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

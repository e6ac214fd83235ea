"""Change broadcast and the L1 of SharedMemory, on a real redis-server."""

from __future__ import annotations

import pickle
import statistics
import threading
import time
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.shared import Change, SharedMemory
from prefect_memory.shared.broadcast import wait_until

pytestmark = pytest.mark.redis


def _pair(url: str, prefix: str, **options: Any) -> tuple[SharedMemory, SharedMemory]:
    a = SharedMemory(pm.open_memory(url, namespace="s", key_prefix=prefix), **options)
    b = SharedMemory(pm.open_memory(url, namespace="s", key_prefix=prefix), **options)
    return a, b


def test_a_write_drops_the_other_l1_copy(redis_url: str, prefix: str) -> None:
    a, b = _pair(redis_url, prefix)
    seen: list[Change] = []
    b.on_change(seen.append)
    a.set("k", 1)
    assert wait_until(lambda: len(seen) == 1, 2.0)
    assert b.get("k") == 1 and b.cached("k")
    assert b.get("k") == 1 and b.stats["hits"] == 1
    a.set("k", 2)
    assert wait_until(lambda: not b.cached("k"), 2.0)
    assert b.get("k") == 2
    assert wait_until(lambda: len(seen) >= 2, 2.0)
    assert seen[-1] == Change("k", "s", 2, a.source)
    a.delete("k")
    assert wait_until(lambda: seen[-1].version == 0, 2.0)
    assert b.get("k", "gone") == "gone"
    a.close(), b.close()


def test_one_publish_per_batch(redis_url: str, prefix: str, redis_server: Any) -> None:
    a, b = _pair(redis_url, prefix)
    messages: list[Change] = []
    b.on_change(messages.append)
    raw = redis_server.client()
    pubsub_before, evals_before = _calls(raw, "publish"), _calls(raw, "evalsha")
    a.set_many({f"k{i}": i for i in range(300)})
    assert wait_until(lambda: len(messages) == 300, 3.0)
    assert _calls(raw, "publish") - pubsub_before == 1  # one PUBLISH for the batch...
    assert _calls(raw, "evalsha") - evals_before == 1  # ...from inside the write script
    assert {c.version for c in messages} == {1}
    raw.close(), a.close(), b.close()


def _calls(raw: Any, command: str) -> int:
    stats = raw.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_refresh_mode_rereads_at_once(redis_url: str, prefix: str) -> None:
    a, b = _pair(redis_url, prefix, on_change="refresh")
    a.set("k", "v1")
    assert b.get("k") == "v1"
    a.set("k", "v2")
    l1 = b.backend.l1
    assert wait_until(
        lambda: (
            (r := l1.get_many("s", ["k"], now=time.time()).get("k")) is not None and r.version == 2
        ),
        2.0,
    )
    a.close(), b.close()


def test_clear_tags_and_a_pickled_copy(redis_url: str, prefix: str) -> None:
    a, b = _pair(redis_url, prefix)
    a.set_many({"x": 1, "y": 2}, tags=["t"])
    assert b.get_many(["x", "y"]) == {"x": 1, "y": 2}
    assert a.invalidate_tags("t") == 2
    assert wait_until(lambda: not b.cached("x") and not b.cached("y"), 2.0)
    a.set("z", 3)
    assert b.get("z") == 3
    a.clear()
    assert wait_until(lambda: not b.cached("z"), 2.0)
    clone = pickle.loads(pickle.dumps(b))
    a.set("w", 4)
    assert clone.get("w") == 4 and clone.cached("w")
    a.close(), b.close(), clone.close()


def test_lost_connection_resets_the_l1(redis_url: str, prefix: str, redis_server: Any) -> None:
    a, b = _pair(redis_url, prefix)
    a.set("k", 1)
    assert b.get("k") == 1 and b.cached("k")
    raw = redis_server.client()
    raw.client_kill_filter(_type="pubsub")  # every subscriber loses its connection
    raw.close()
    assert wait_until(lambda: b.stats["resets"] >= 2, 5.0)
    assert not b.cached("k")
    assert b.get("k") == 1
    a.close(), b.close()


def test_staleness_after_a_write(redis_url: str, prefix: str) -> None:
    """How long a reader's L1 serves the old value after a write returned (printed)."""
    a, b = _pair(redis_url, prefix)
    dropped = threading.Event()
    b.on_change(lambda change: dropped.set())
    delays = []
    for i in range(200):
        b.get(f"k{i % 10}")  # cached
        dropped.clear()
        a.set(f"k{i % 10}", i)
        written = time.perf_counter()
        assert dropped.wait(2.0)
        delays.append(time.perf_counter() - written)
        assert b.get(f"k{i % 10}") == i
    delays.sort()
    p50, p99 = statistics.median(delays) * 1e6, delays[int(len(delays) * 0.99)] * 1e6
    print(f"\nstaleness after a write (write returned -> reader's L1 dropped): "
          f"p50 {p50:.0f} us, p99 {p99:.0f} us, max {delays[-1] * 1e6:.0f} us")  # fmt: skip
    assert p99 < 100_000  # 100 ms: generous for a loaded CI machine
    a.close(), b.close()

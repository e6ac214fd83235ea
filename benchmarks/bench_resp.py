"""RESP reply readers: ours (``analytics/_resp.py``) vs redis-py with hiredis vs pure Python.

One run, on a redis-server of its own (tests/servers.py), the same pipelined reads through
three readers, interleaved (each batch of commands is read by every reader in turn, the best
of ``--repeat`` rounds kept per batch and reader, then summed), so the load of the machine
hits all of them alike:

- ``ours``: :meth:`RedisLink.fetch`, the reader the downsampling uses (bulk strings of
  64 KiB or more land in numpy arrays with one copy, smaller ones parsed in Python);
- ``hiredis``: redis-py with its default parser, hiredis (``redis.utils.
  HIREDIS_AVAILABLE`` must be true: ``pip install hiredis``);
- ``pure``: the same with redis-py's pure-Python ``_RESP2Parser``;
- ``h.pipe``: a redis-py ``pipeline`` with hiredis (adds the response callbacks).

``hiredis`` and ``pure`` run the round trip as :meth:`RedisLink.fetch` does (pack the
commands, send them, read one reply per command) with redis-py's ``read_response``: the
parsers compared, nothing else.

Cases (sizes for ``--points`` raw points, default 10M as in bench_downsample.py):

(a) ``chunks``: a time series' raw chunks (1h of 10 Hz points: 288 KB per blob), 64 GETs a
    round trip, as ``TimeSeries.points`` reads them; and the snapshot read of
    ``downsample()`` itself (MULTI, 4 commands per chunk, 32 chunks, EXEC);
(b) ``medium``: 16 KiB values, 64 GETs a round trip (below our one-copy threshold);
(c) ``small``: 100-byte values, 1000 GETs a round trip (entries of a cache).

Every reader's replies are checked equal to the others' before timing.

Usage: ``python benchmarks/bench_resp.py [--points N] [--repeat R] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import redis
from redis._parsers import _HiredisParser, _RESP2Parser
from redis.utils import HIREDIS_AVAILABLE

from prefect_memory.analytics import RedisLink, TimeSeries
from prefect_memory.analytics.downsample import BATCH_CHUNKS
from servers import RedisServer

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND


def _client(url: str, parser: type) -> redis.Redis:
    return redis.Redis.from_url(url, protocol=2, parser_class=parser)


def _pipelined(client: redis.Redis) -> Callable[[list[tuple[Any, ...]]], list[Any]]:
    """Send ``commands`` in one round trip with redis-py (no MULTI added)."""

    def run(commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()

    return run


def _raw(client: redis.Redis) -> Callable[[list[tuple[Any, ...]]], list[Any]]:
    """The same round trip without the pipeline object: pack, send, ``read_response``.

    What a switch of :meth:`RedisLink.fetch` to redis-py's parser would do (the parser
    alone, no response callbacks); error replies are not expected here.
    """
    pool = client.connection_pool

    def run(commands: list[tuple[Any, ...]]) -> list[Any]:
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            return [conn.read_response() for _ in commands]
        finally:
            pool.release(conn)

    return run


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if a is None or b is None or isinstance(a, int) or isinstance(b, int):
        return a == b
    return bytes(a) == bytes(b)


def _case(
    name: str, batches: list[list[tuple[Any, ...]]], readers: dict[str, Any], repeat: int
) -> dict[str, float]:
    """Best time of each reader over the batches (interleaved rounds); replies compared."""
    first = {label: [read(b) for b in batches[:2]] for label, read in readers.items()}
    if batches[0][0] == ("MULTI",):  # compare EXEC's replies (redis-py maps some QUEUED)
        first = {label: [r[-1] for r in got] for label, got in first.items()}
    ref = first["ours"]
    for label, got in first.items():
        assert _same(got, ref), f"{name}: {label} read something else than ours"
    # Per batch, every reader in turn (rotating who goes first), best of ``repeat`` per batch
    # and reader, summed: a burst of load on the machine hits one batch of every reader
    # alike, not all the batches of one reader.
    best = {label: [float("inf")] * len(batches) for label in readers}
    order = list(readers.items())
    for r in range(repeat):
        for i, batch in enumerate(batches):
            k = (r + i) % len(order)
            for label, read in order[k:] + order[:k]:
                started = time.perf_counter()
                read(batch)
                took = time.perf_counter() - started
                if took < best[label][i]:
                    best[label][i] = took
    return {label: sum(times) for label, times in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1M points, 3 rounds")
    args = parser.parse_args()
    n, repeat = (1_000_000, 3) if args.quick else (args.points, args.repeat)
    if not HIREDIS_AVAILABLE:
        sys.exit("hiredis is not installed: pip install hiredis (redis-py then uses it)")
    import hiredis

    load = os.getloadavg()
    print(f"redis-py {redis.__version__}, hiredis {hiredis.__version__}; {n:,} points; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip

    results: list[tuple[str, int, dict[str, float]]] = []
    with RedisServer() as server:
        link = RedisLink.open(server.url, namespace="bench")
        fast, pure = _client(server.url, _HiredisParser), _client(server.url, _RESP2Parser)
        readers = {"ours": link.fetch, "hiredis": _raw(fast), "pure": _raw(pure),
                   "hiredis pipeline": _pipelined(fast)}  # fmt: skip

        # (a) raw chunks of a series
        ts_obj = TimeSeries(link, "bench", retention=365 * 86400,
                            downsampling=[{"interval": 60, "aggregation": "avg"}])  # fmt: skip
        rng = np.random.default_rng(1)
        for i in range(0, n, 1_000_000):
            m = min(1_000_000, n - i)
            stamps = START + np.arange(i, i + m, dtype=np.int64) * (SECOND // 10)
            ts_obj.add_points(stamps, rng.normal(50.0, 10.0, m))
        b = ts_obj.base
        ids = [int(c) for c in link.run("ZRANGE", b + "i", 0, -1)]
        gets = [("GET", f"{b}r:{c}:{p}") for c in ids for p in "tv"]
        raw = sum(link.run("STRLEN", key) for _, key in gets)
        batches = [gets[i : i + 64] for i in range(0, len(gets), 64)]
        results.append(("(a) chunks, 64 GETs/trip", raw, _case("chunks", batches, readers, repeat)))
        snap = []
        for i in range(0, len(ids), BATCH_CHUNKS):
            commands: list[tuple[Any, ...]] = [("MULTI",)]
            for c in ids[i : i + BATCH_CHUNKS]:
                commands += [("HGET", b + "v", c), ("HEXISTS", b + "av", c),
                             ("GET", f"{b}r:{c}:t"), ("GET", f"{b}r:{c}:v")]  # fmt: skip
            snap.append([*commands, ("EXEC",)])
        results.append(("    downsample snapshot (MULTI)", raw,
                        _case("snapshot", snap, readers, repeat)))  # fmt: skip
        ts_obj.delete()

        # (b) 16 KiB values, (c) 100-byte values
        cases = [("(b) medium, 16 KiB values", 16384, 5000, 64),
                 ("(c) small, 100-byte values", 100, 200_000, 1000)]  # fmt: skip
        for label, size, count, per_trip in cases:
            if args.quick:
                count //= 5
            blob = rng.bytes(size)
            keys = [link.key("v", label[:3], i) for i in range(count)]
            for i in range(0, count, 1000):
                link.pipeline([("SET", k, blob) for k in keys[i : i + 1000]])
            gets = [("GET", k) for k in keys]
            batches = [gets[i : i + per_trip] for i in range(0, count, per_trip)]
            results.append((f"{label}, {per_trip}/trip", size * count,
                            _case(label, batches, readers, repeat)))  # fmt: skip
            for i in range(0, count, 1000):
                link.run("DEL", *keys[i : i + 1000])
        fast.close()
        pure.close()
        link.close()

    print(f"\n{'case':<36}{'MB':>7}{'MB/s: ours':>11}{'hiredis':>9}{'pure':>7}{'h.pipe':>8}"
          f"{'ours/hiredis':>14}{'ours/pure':>11}{'ours/h.pipe':>13}")  # fmt: skip
    for label, size, best in results:
        mb = size / 1e6
        rate = {k: mb / v for k, v in best.items()}
        print(f"{label:<36}{mb:>7.1f}{rate['ours']:>11.0f}{rate['hiredis']:>9.0f}"
              f"{rate['pure']:>7.0f}{rate['hiredis pipeline']:>8.0f}"
              f"{best['hiredis'] / best['ours']:>13.2f}x{best['pure'] / best['ours']:>10.2f}x"
              f"{best['hiredis pipeline'] / best['ours']:>12.2f}x")  # fmt: skip
    print("\nhiredis / pure: redis-py's parser alone (pack, send, read_response per reply);")
    print("h.pipe: a redis-py pipeline with hiredis (response callbacks too).")
    print("ratios are speed (time of the other reader / time of ours): > 1 means ours wins")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

"""Downsampling benchmark: numpy aggregation vs pandas, end to end vs a raw read, increments.

One run, on a redis-server of its own (tests/servers.py), with ``--points`` points
(default 10M) at 10 Hz, 0.1% of them arriving up to 5 minutes late, downsampled as the
tutorial says (60 s avg, 3600 s sum):

(a) the aggregation step alone (sort + bucket states + values of every resolution)
    against pandas ``resample`` of the same in-memory points (target: >= 2x pandas);
(b) ``TimeSeries.downsample()`` end to end (read the raw chunks from Redis, aggregate,
    write the buckets) against merely reading the same chunks with redis-py's ``MGET``
    (target: >= 0.7x the read-only rate); and the same run with ``RedisLink.fetch``
    reading through redis-py's parser (hiredis when installed) instead of our one-copy
    reader, for the ratio that keeps ours (``analytics/_redis.py``, ``ONE_COPY_READS``);
(c) a second run after adding 1% new points (target: about 1% of the first run).

Usage: ``python benchmarks/bench_downsample.py [--points N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from redis.utils import HIREDIS_AVAILABLE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from prefect_memory.analytics import TimeSeries
from prefect_memory.analytics import _redis as link_module
from prefect_memory.analytics.aggregate import (
    finalize,
    merge_states,
    sort_points,
    states_from_points,
)
from servers import RedisServer

RULES = [{"interval": 60, "aggregation": "avg"}, {"interval": 3600, "aggregation": "sum"}]
SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND


def make_points(n: int, start: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points at 10 Hz from ``start`` in arrival order: 0.1% up to 5 minutes late."""
    rng = np.random.default_rng(seed)
    ts = start + np.arange(n, dtype=np.int64) * (SECOND // 10)
    values = rng.normal(50.0, 10.0, n)
    late = rng.choice(n, size=max(1, n // 1000), replace=False)
    ts[late] -= rng.integers(1, 300 * SECOND, late.size)  # stamped earlier than they arrive
    return ts, values


def ours(ts: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    ts, values, _ = sort_points(ts, values)
    minute = states_from_points(ts, values, 60 * SECOND, ("sum",), assume_sorted=True)
    hour = merge_states(minute, 3600 * SECOND)
    return {"60s avg": finalize(minute, "avg"), "3600s sum": finalize(hour, "sum")}


def theirs(series: pd.Series) -> dict[str, np.ndarray]:
    minute = series.resample("60s", origin="epoch").mean()
    hour = series.resample("3600s", origin="epoch").sum()
    return {"60s avg": minute.dropna().to_numpy(), "3600s sum": hour.to_numpy()}


def best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, repeat = args.points, args.repeat
    ts, values = make_points(n, START, seed=1)
    load = os.getloadavg()
    print(f"{n:,} points, 10 Hz, {n // 1000:,} late; rules {RULES}; hiredis "
          f"{HIREDIS_AVAILABLE}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip

    # (a) aggregation alone vs pandas on the same in-memory points
    series = pd.Series(values, index=pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC"))
    mine, ref = ours(ts, values), theirs(series)
    for key in mine:
        np.testing.assert_allclose(mine[key], ref[key], rtol=1e-9)
    t_ours = best(lambda: ours(ts, values), repeat)
    t_pandas = best(lambda: theirs(series), repeat)
    rows = [("(a) aggregation: numpy", t_ours, n / t_ours),
            ("    pandas resample", t_pandas, n / t_pandas)]  # fmt: skip

    with RedisServer() as server:
        ts_obj = TimeSeries(server.url, "bench", retention=365 * 86400, downsampling=RULES)
        for i in range(0, n, 1_000_000):
            ts_obj.add_points(ts[i : i + 1_000_000], values[i : i + 1_000_000])
        b = ts_obj.base
        ids = [int(c) for c in ts_obj.link.run("ZRANGE", b + "i", 0, -1)]
        keys = [f"{b}r:{c}:{p}" for c in ids for p in "tv"]
        client = server.client()

        def read_only() -> None:
            for i in range(0, len(keys), 64):
                client.mget(keys[i : i + 64])

        def first_run() -> None:  # every chunk dirty, no bucket stored yet
            client.sadd(b + "d", *ids)
            client.delete(b + "av")
            report = ts_obj.downsample()
            assert report.chunks == len(ids), report

        started = time.perf_counter()  # the very first run: cold allocator and connections
        cold = ts_obj.downsample()
        t_cold = time.perf_counter() - started
        read_only()  # warm up the read path too

        def read_fetch() -> None:  # the same chunks through the reader downsample() uses
            for i in range(0, len(keys), 64):
                ts_obj.link.fetch([("GET", key) for key in keys[i : i + 64]])

        def with_redis_py(fn: Any) -> Any:  # RedisLink.fetch through redis-py's parser
            def run() -> None:
                link_module.ONE_COPY_READS = False
                try:
                    fn()
                finally:
                    link_module.ONE_COPY_READS = True

            return run

        parser = "hiredis" if HIREDIS_AVAILABLE else "pure-Python parser"
        t_read = t_e2e = t_fetch = t_e2e_py = t_fetch_py = float("inf")
        for _ in range(repeat + 2):  # interleaved: all see the same load of the machine
            t_read = min(t_read, best(read_only, 1))
            t_e2e = min(t_e2e, best(first_run, 1))
            t_fetch = min(t_fetch, best(read_fetch, 1))
            t_e2e_py = min(t_e2e_py, best(with_redis_py(first_run), 1))
            t_fetch_py = min(t_fetch_py, best(with_redis_py(read_fetch), 1))
        rows += [(f"    very first run ({cold.sorted_chunks} chunks sorted)", t_cold, n / t_cold),
                 ("(b) downsample end to end", t_e2e, n / t_e2e),
                 (f"    the same, fetch via redis-py ({parser})", t_e2e_py, n / t_e2e_py),
                 (f"    raw redis-py MGET only ({parser})", t_read, n / t_read),
                 ("    RedisLink.fetch only (one copy)", t_fetch, n / t_fetch),
                 (f"    the same via redis-py ({parser})", t_fetch_py, n / t_fetch_py)]  # fmt: skip

        # (c) 1% new points after the watermark
        extra = n // 100
        newest = int(ts.max())
        inc_ts, inc_values = make_points(extra, newest + SECOND // 10, seed=2)
        ts_obj.add_points(inc_ts, inc_values)
        started = time.perf_counter()
        report = ts_obj.downsample()
        t_inc = time.perf_counter() - started
        rows.append((f"(c) second run, +{extra:,} points", t_inc, extra / t_inc))
        everything = pd.Series(
            np.r_[values, inc_values],
            index=pd.DatetimeIndex(np.r_[ts, inc_ts].view("datetime64[ns]"), tz="UTC"),
        )
        expected = everything.resample("60s", origin="epoch").mean().dropna()
        got = ts_obj.range(interval=60)
        np.testing.assert_allclose(got["value"].to_numpy(), expected.to_numpy(), rtol=1e-9)
        client.close()

    print(f"\n{'step':<48}{'seconds':>10}{'points/s':>16}")
    for name, seconds, rate in rows:
        print(f"{name:<48}{seconds:>10.3f}{rate:>16,.0f}")
    print("\nratios")
    print(f"(a) numpy / pandas speed:            {t_pandas / t_ours:6.2f}x  (target >= 2)")
    print(f"(b) end-to-end / read-only rate:     {t_read / t_e2e:6.2f}x  (target >= 0.7)")
    print(f"    end to end, our reader / {parser}: {t_e2e_py / t_e2e:5.2f}x  "
          "(> 1: the one-copy reader pays; benchmarks/bench_resp.py)")  # fmt: skip
    print(f"(c) second run / first run time:     {100 * t_inc / t_e2e:6.2f}%  (target ~1%)")
    print(f"    second run: {report.summary()}")


if __name__ == "__main__":
    main()

"""Real-time analytics: the tutorial's "Example 2" on Redis.

The tutorial's ``analyticsMemory`` config (``ANALYTICS_CONFIG``), read by ``pm.from_config``
and :meth:`~prefect_memory.analytics.Analytics.from_config`, drives everything:

- ``streams.events``: an event stream trimmed with ``MAXLEN ~`` (the example lowers the
  tutorial's 100,000 to ``max_length`` so that trimming shows);
- ``processing.windows``: counters per metric over a sliding minute (``realtime``, 60 s
  sliding by 10 s), tumbling hours and days;
- ``streams.aggregations``: a time series of revenue downsampled to 1-minute averages and
  1-hour sums (incrementally, on Redis);
- an alert: at least ``error_threshold`` errors in a realtime window, logged, collected,
  and sent as a Prefect event (``prefect-memory.alert.triggered``) when a Prefect API is
  configured (``PREFECT_API_URL``);
- a consumer group reading the stream and acknowledging what it processed.

The tutorial's ``AnalyticsProcessor.processEvent`` runs per batch of 10 seconds of events
(one pipeline each for the stream, the counters and the series). Everything is written in a
namespace of its own per run (``analytics-<run>``), deleted at the end unless ``keep``.

Run it against your Redis (or set ``PREFECT_MEMORY_REDIS_URL``)::

    python examples/realtime_analytics.py --redis redis://localhost:6379/0
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import uuid
from typing import Any

import numpy as np

import prefect_memory as pm
from prefect_memory.analytics import Alert, AlertFired, Analytics
from prefect_memory.analytics.alerts import emit_prefect_event, log_alert

#: The tutorial's ``analyticsMemory``, as JSON.
ANALYTICS_CONFIG: dict[str, Any] = {
    "memory": {
        "backend": "hybrid",
        "streams": {
            "events": {"type": "redis-stream", "maxLength": 100000, "trimStrategy": "MAXLEN"},
            "aggregations": {
                "type": "time-series", "retention": 86400,
                "downsampling": [{"interval": 60, "aggregation": "avg"},
                                 {"interval": 3600, "aggregation": "sum"}],
            },
        },
        "processing": {
            "windows": {
                "realtime": {"size": 60, "slide": 10},
                "hourly": {"size": 3600, "slide": 3600},
                "daily": {"size": 86400, "slide": 86400},
            }
        },
    }
}  # fmt: skip

EVENT_TYPES = ("page_view", "click", "purchase", "error")


def simulate(rng: np.random.Generator, n: int, start: float, end: float) -> dict[str, np.ndarray]:
    """``n`` shop events between ``start`` and ``end`` (sorted), with a burst of errors.

    Returns:
        Arrays ``ts`` (epoch seconds), ``type`` (index into ``EVENT_TYPES``) and ``value``
        (the amount of a purchase, else 0).
    """
    ts = np.sort(rng.uniform(start, end, n))
    kind = rng.choice(4, size=n, p=[0.70, 0.20, 0.07, 0.03])
    burst_at = start + (end - start) * 0.6  # an outage: 80 errors in 20 seconds
    burst = np.sort(rng.uniform(burst_at, burst_at + 20, 80))
    ts = np.concatenate([ts, burst])
    kind = np.concatenate([kind, np.full(burst.size, 3)])
    order = np.argsort(ts, kind="stable")
    ts, kind = ts[order], kind[order]
    value = np.where(kind == 2, np.round(rng.lognormal(3.4, 0.5, ts.size), 2), 0.0)
    return {"ts": ts, "type": kind, "value": value}


def main(
    redis_url: str | None = None,
    *,
    events: int = 30_000,
    hours: float = 2.0,
    max_length: int = 10_000,
    error_threshold: int = 40,
    namespace: str | None = None,
    keep: bool = False,
    seed: int = 11,
    verbose: bool = True,
) -> dict[str, Any]:
    """Process a simulated event stream and return what the analytics saw.

    Args:
        redis_url: Redis URL (default ``$PREFECT_MEMORY_REDIS_URL`` or localhost).
        events: Events over the period (plus a burst of 80 errors).
        hours: Length of the simulated period, ending now.
        max_length: ``maxLength`` of the event stream (``MAXLEN ~``).
        error_threshold: Errors in a realtime window that fire the alert.
        namespace: Namespace of the keys (default ``analytics-<random>``).
        keep: Keep the stream and the series afterwards (counters expire by themselves).
        seed: Seed of the simulation.
        verbose: Print each step.

    Returns:
        The stream, counters, alerts, downsampling and consumer figures.
    """
    redis_url = redis_url or os.environ.get("PREFECT_MEMORY_REDIS_URL", "redis://localhost:6379/0")
    say = print if verbose else (lambda *_a: None)
    namespace = namespace or f"analytics-{uuid.uuid4().hex[:8]}"
    config = copy.deepcopy(ANALYTICS_CONFIG)
    config["memory"]["streams"]["events"]["maxLength"] = max_length
    spaces = pm.from_config(config)
    analytics = Analytics.from_config(spaces, connection=redis_url, namespace=namespace)
    fired: list[AlertFired] = []
    handlers = [log_alert, fired.append]
    if os.environ.get("PREFECT_API_URL"):
        handlers.append(emit_prefect_event)
    stream = analytics.stream("events")
    counter = analytics.counter(
        alerts=[Alert("metric:error", threshold=error_threshold, op=">=", window="realtime",
                      name="error burst")],
        handlers=handlers,
    )  # fmt: skip
    revenue = analytics.series("revenue", "aggregations")
    now = time.time()
    sim = simulate(np.random.default_rng(seed), events, now - hours * 3600, now)
    started = time.perf_counter()
    try:
        steps = np.floor(sim["ts"] / 10).astype(np.int64)  # one batch per 10 s of events
        bounds = np.flatnonzero(np.diff(steps)) + 1
        for rows in np.split(np.arange(steps.size), bounds):
            ts, kind, value = sim["ts"][rows], sim["type"][rows], sim["value"][rows]
            stream.add_many([{"type": EVENT_TYPES[k], "ts": float(t), "value": float(v)}
                             for t, k, v in zip(ts, kind, value, strict=True)])  # fmt: skip
            counts = np.bincount(kind, minlength=4)
            counter.incr_many({f"metric:{EVENT_TYPES[k]}": int(c) for k, c in enumerate(counts)
                               if c}, at=float(ts[-1]))  # fmt: skip
            buys = kind == 2
            if buys.any():
                revenue.add_points((ts[buys] * 1e9).astype(np.int64), value[buys])
        processing = time.perf_counter() - started
        say(f"processed {sim['ts'].size} events in {processing:.2f} s; stream keeps "
            f"{len(stream)} (MAXLEN ~{max_length})")  # fmt: skip

        report = revenue.downsample()
        start = (now - hours * 3600) // 3600 * 3600
        hourly = revenue.range(start, now + 3600, interval=3600, aggregation="sum")
        minutes = revenue.range(start, now + 3600, interval=60)
        total = float(sim["value"].sum())
        say(
            f"revenue: {report.points} points -> {len(minutes)} one-minute averages, "
            f"{len(hourly)} hourly sums totalling {hourly['value'].sum():.2f} (raw {total:.2f})"
        )

        consumer = stream.consumer("fraud-check", "worker-1")
        batch = consumer.read(count=100)
        acked = consumer.ack([entry_id for entry_id, _ in batch])
        say(f"consumer group: read {len(batch)}, acknowledged {acked}, pending "
            f"{consumer.pending()}")  # fmt: skip
        say(
            f"alerts: {len(fired)} firing(s) of 'error burst' (>= {error_threshold} errors "
            "in a 60-s window, once per window instance)"
        )
        windows = {name: counter.value("metric:page_view", name, at=float(sim["ts"][-1]))
                   for name in counter.windows}  # fmt: skip
        return {
            "namespace": namespace,
            "events": int(sim["ts"].size),
            "stream": {"length": len(stream), "max_length": max_length,
                       "trimmed": int(sim["ts"].size) - len(stream)},
            "counters": {"page_view": windows},
            "alerts": [{"metric": f.metric, "value": f.value, "window_start": f.window_start}
                       for f in fired],
            "downsampling": {"points": report.points, "buckets": dict(report.buckets),
                             "minutes": len(minutes), "hours": len(hourly),
                             "hourly_total": round(float(hourly["value"].sum()), 6),
                             "raw_total": round(total, 6)},
            "consumer": {"read": len(batch), "acked": acked, "pending": consumer.pending()},
            "seconds": round(time.perf_counter() - started, 3),
        }  # fmt: skip
    finally:
        if not keep:
            stream.delete()
            revenue.delete()
        stream.link.backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="Redis URL (default $PREFECT_MEMORY_REDIS_URL)")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--keep", action="store_true", help="keep the stream and series")
    args = parser.parse_args()
    main(args.redis, events=args.events, keep=args.keep)

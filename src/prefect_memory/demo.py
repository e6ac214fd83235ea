"""``make demo``: the memory core at work on the embedded default, no servers needed.

Run with ``python -m prefect_memory.demo [--url URL]``. It stores sessions with a sliding
TTL, caches features in batches, invalidates by tag, lists keys by glob, shows entry
metadata, and reopens the store to show that what was written is still there.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import prefect_memory as pm


def run(url: str) -> dict[str, object]:
    """Run the demo against ``url`` and return its summary."""
    started = time.perf_counter()
    sessions = pm.open_memory(url, namespace="sessions", ttl=1800, refresh=True)
    features = pm.open_memory(url, namespace="features", ttl=86400, compression=True)

    sessions.set("session:42", {"user": 7, "cart": []}, tags=["user:7"])
    sessions.set("session:43", {"user": 8, "cart": [101]}, tags=["user:8"])
    rng = np.random.default_rng(0)
    batch = {f"user:{i}": rng.random(32, dtype=np.float32) for i in range(1000)}
    features.set_many(batch, tags=["model:v1"])

    hits = features.get_many([f"user:{i}" for i in range(0, 1200, 3)])
    session = sessions.get("session:42")
    info = sessions.info("session:42")
    matching = sorted(sessions.keys("session:*"))
    removed = sessions.invalidate_tags("user:8")
    sessions.close()
    features.close()

    reopened = pm.open_memory(url, namespace="features")
    survived = len(reopened.get_many(list(batch)[:100]))
    summary = {
        "url": url,
        "session": session,
        "session access_count": info.access_count if info else None,
        "session expires_at": info.expires_at.isoformat() if info and info.expires_at else None,
        "sessions matching session:*": matching,
        "removed by tag user:8": removed,
        "features stored": len(batch),
        "feature hits / lookups": f"{len(hits)} / 400",
        "features present after reopen": f"{survived} / 100",
        "seconds": round(time.perf_counter() - started, 3),
    }
    reopened.clear()
    pm.open_memory(url, namespace="sessions").clear()
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("PREFECT_MEMORY_URL", "sqlite:///.prefect-memory/demo.db"),
        help="memory URL (default: the embedded SQLite store)",
    )
    args = parser.parse_args(argv)
    summary = run(args.url)
    width = max(len(k) for k in summary)
    print("prefect-memory demo")
    for key, value in summary.items():
        print(f"  {key.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

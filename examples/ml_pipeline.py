"""Machine-learning pipeline: the tutorial's "Example 3", the flow behind ``make demo``.

The flow is :func:`prefect_memory.demo.pipeline.ml_pipeline` (importable: deploy it, or
call it from your own flow). Here it runs on your servers: Redis as the hot tier (features
for serving, the model registry, the prediction cache, the event stream and the latency time
series), MongoDB as the warm tier (training partitions, feature tables, aggregates) and an S3
bucket as the cold tier, a Parquet archive. What the tutorial's ``mlMemory`` says maps to:

================================  ============================================================
tutorial                          here
================================  ============================================================
``datasets.training`` (s3,        daily ``training:<date>`` frames (pandera ``FeaturesModel``),
parquet, partitioning: date)      archived by the tier rules into date-partitioned Parquet
``datasets.features`` (redis,     ``features:user:<id>`` vectors and ``features:day:<date>``
msgpack, compression)             tables, msgpack + zstd (``compression: true``)
``datasets.models`` (versioning)  ``model:v1``, ``model:v2`` with ``stage:*`` tags, and
                                  ``model:production`` naming the promoted version
``compute.cache.predictions``     a Prefect task cached in a ``RedisMemory`` block
(ttl 3600)                        (``INPUTS + TASK_SOURCE``, results expire after an hour)
``compute.cache.preprocessed``    the features' 7-day TTL
(ttl 604800)
================================  ============================================================

Run it (URLs default to ``$PREFECT_MEMORY_REDIS_URL``, ``$PREFECT_MEMORY_MONGODB_URL``,
``$PREFECT_MEMORY_S3_URL``, with ``$PREFECT_MEMORY_S3_ENDPOINT``, ``$AWS_ACCESS_KEY_ID`` and
``$AWS_SECRET_ACCESS_KEY`` for S3)::

    python examples/ml_pipeline.py --redis redis://localhost:6379/0 \\
        --mongodb mongodb://localhost:27017/ml --s3 s3://my-bucket/archive

It uses the Prefect API of ``PREFECT_API_URL`` when set, else starts a temporary one. Each
run first empties the namespace ``ml`` in the three stores (and its analytics keys).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from prefect_memory.demo.pipeline import ml_pipeline
from prefect_memory.demo.prefect_api import TemporaryPrefectAPI, configured_api, wants_temporary
from prefect_memory.demo.stores import DemoConfig, close_all

__all__ = ["DemoConfig", "main", "ml_pipeline"]


def main(
    redis_url: str | None = None,
    mongo_url: str | None = None,
    s3_url: str | None = None,
    *,
    s3_endpoint: str | None = None,
    s3_key: str | None = None,
    s3_secret: str | None = None,
    sizes: dict[str, int] | None = None,
    prefect_api: str = "auto",
    workdir: str | Path = ".prefect-memory/examples",
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the ML pipeline flow on Redis, MongoDB and S3; return the flow's summary.

    Args:
        redis_url: Hot tier and analytics (``?key_prefix=`` allowed).
        mongo_url: Warm tier (``collection=ml_demo`` added when the URL names none).
        s3_url: ``s3://bucket/prefix`` of the Parquet archive (the bucket must exist).
        s3_endpoint: Endpoint of an S3-compatible server (MinIO, SeaweedFS).
        s3_key: Access key id.
        s3_secret: Secret access key.
        sizes: Overrides of :class:`~prefect_memory.demo.stores.DemoSizes`.
        prefect_api: ``"auto"`` (``PREFECT_API_URL`` if set, else temporary), ``"current"``
            or ``"temporary"``.
        workdir: Where a temporary Prefect API keeps its database.
        verbose: Print the summary.

    Returns:
        The flow's summary: entries per tier, archive, cache hits, models, events, steps.
    """
    env = os.environ.get
    config = DemoConfig.services(
        redis_url or env("PREFECT_MEMORY_REDIS_URL", "redis://localhost:6379/0"),
        mongo_url or env("PREFECT_MEMORY_MONGODB_URL", "mongodb://localhost:27017/prefect_memory"),
        s3_url or env("PREFECT_MEMORY_S3_URL", "s3://prefect-memory/archive"),
        s3_endpoint=s3_endpoint or env("PREFECT_MEMORY_S3_ENDPOINT"),
        s3_key=s3_key or env("AWS_ACCESS_KEY_ID"),
        s3_secret=s3_secret or env("AWS_SECRET_ACCESS_KEY"),
        sizes=sizes or {},
    )
    api = None
    if wants_temporary(prefect_api):
        api = TemporaryPrefectAPI(Path(workdir) / "prefect" / "prefect.db").start(background=False)
    try:
        with api.active() if api is not None else configured_api():
            summary = ml_pipeline(config)
    finally:
        close_all()
        if api is not None:
            api.stop()
    if verbose:
        from rich.console import Console

        from prefect_memory.demo.report import render_summary

        render_summary(summary, Console())
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="Redis URL (default $PREFECT_MEMORY_REDIS_URL)")
    parser.add_argument("--mongodb", help="MongoDB URL (default $PREFECT_MEMORY_MONGODB_URL)")
    parser.add_argument("--s3", help="s3://bucket/prefix (default $PREFECT_MEMORY_S3_URL)")
    parser.add_argument("--s3-endpoint", help="S3-compatible endpoint URL")
    parser.add_argument("--users", type=int, help="users with features (default 1000)")
    args = parser.parse_args()
    main(args.redis, args.mongodb, args.s3, s3_endpoint=args.s3_endpoint,
         sizes={"users": args.users} if args.users else None)  # fmt: skip

"""Run a migration in its own process, slowly, printing after every batch (killed by a test)."""

from __future__ import annotations

import json
import os
import sys
import time

from prefect_memory.plugins.fs import FsspecBackend
from prefect_memory.plugins.mongodb import MongoBackend
from prefect_memory.plugins.redisdb import RedisBackend
from prefect_memory.tiers import Tier, TieredMemory


def build(spec: dict, now: float) -> TieredMemory:
    """The three-tier memory the test and this worker share."""
    tiers = [
        Tier("hot", RedisBackend.from_url(spec["redis"], key_prefix=spec["prefix"]),
             patterns=("session:*",)),
        Tier("warm", MongoBackend.from_url(spec["mongodb"]), patterns=("user:*",)),
        Tier("cold", FsspecBackend(spec["s3"], storage_options=spec["storage_options"]),
             patterns=("archive:*",)),
    ]  # fmt: skip
    rules = [
        {"from": "hot", "to": "warm", "condition": "accessCount < 5 AND age > 3600"},
        {"from": "warm", "to": "cold", "condition": "lastAccess > 86400"},
    ]
    return TieredMemory(tiers, rules, namespace=spec["namespace"], clock=lambda: now)


def main() -> None:
    spec = json.loads(os.environ["PM_TIER_SPEC"])
    mem = build(spec, float(os.environ["PM_NOW"]))

    def progress(report: object) -> None:
        print("batch", flush=True)
        time.sleep(0.3)

    mem.migrate(batch_size=5, progress=progress)
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())

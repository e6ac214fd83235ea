"""Shared fixtures.

Server fixtures start real servers (see ``tests/servers.py``) once per session
on free loopback ports. A server that cannot start FAILS the tests that use it,
with the reason and the server's log tail: ``make test`` installs everything
they need (``make servers``), so a missing server is a real error, not a skip.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from servers import (  # noqa: E402
    MongoWireServer,
    MotoS3Server,
    RedisServer,
    S3Server,
    ServerError,
)


def _start(server_factory, what: str):
    try:
        return server_factory().start()
    except ServerError as exc:
        pytest.fail(f"{what} could not start: {exc}", pytrace=False)


# ---------------------------------------------------------------------------
# Real servers (session-scoped; all logic lives in tests/servers.py)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free port: ``.url`` (redis://127.0.0.1:P/0), ``.port``."""
    server = _start(RedisServer, "redis-server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoWireServer]:
    """mongoeco's wire server (or $PREFECT_MEMORY_TEST_MONGODB_URL): ``.url``, ``.database``."""
    server = _start(MongoWireServer, "MongoDB wire server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """SeaweedFS S3: ``.endpoint_url``, ``.key``, ``.secret``, ``.storage_options``,
    ``.make_bucket(name)``."""
    server = _start(S3Server, "SeaweedFS S3 server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[MotoS3Server]:
    """moto's in-process S3 (fast, any credentials); same attributes as ``s3_server``."""
    server = _start(MotoS3Server, "moto S3 server")
    yield server
    server.stop()


# ---------------------------------------------------------------------------
# Library fixtures
# ---------------------------------------------------------------------------
# >>> Reserved for the library engineer: add prefect_memory fixtures below this
# >>> line (backends, stores, Prefect harness, ...). Server fixtures above.


def make_opener(
    request: pytest.FixtureRequest, tmp_path: Any, default_namespace: str
) -> Callable[..., Any]:
    """``open(backend, namespace=..., **options)`` on a store private to the calling test.

    ``backend`` is one of memory, sqlite, json, file, s3, redis; every memory opened for
    the same backend in one test shares that test's store.
    """
    import prefect_memory as pm

    unique = uuid.uuid4().hex[:10]

    def _open(backend: str, namespace: str = default_namespace, **options: Any) -> Any:
        if backend == "memory":
            url = f"memory://t-{unique}"
        elif backend == "sqlite":
            url = f"sqlite:///{tmp_path}/m.db"
        elif backend == "json":
            url = f"json:///{tmp_path}/m.json"
        elif backend == "file":
            url = f"file://{tmp_path}/files"
        elif backend == "s3":
            server = request.getfixturevalue("s3_server")
            server.make_bucket("pm-stores")
            url = f"s3://pm-stores/{unique}"
            options = {"storage_options": server.storage_options, **options}
        elif backend == "redis":
            url = request.getfixturevalue("redis_server").url
            options = {"key_prefix": f"t{unique}", **options}
        else:
            raise AssertionError(f"unknown test backend {backend!r}")
        return pm.open_memory(url, namespace=namespace, **options)

    return _open


# -- a Memory on the store of a folder's ``store`` fixture (contract suite, Redis Cluster) --
@pytest.fixture
def open_mem(store: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``open_mem(namespace=None, **options)``: a Memory on ``store`` (``{"url", "options"}``,
    defined by the folder), with a namespace unique to the test unless one is given."""
    import prefect_memory as pm

    opened: list[pm.Memory] = []
    default_ns = "ns-" + uuid.uuid4().hex[:8]

    def _open(namespace: str | None = None, **options: Any) -> pm.Memory:
        merged = {**store["options"], **options}
        mem = pm.open_memory(store["url"], namespace=namespace or default_ns, **merged)
        opened.append(mem)
        return mem

    yield _open
    for mem in opened:
        mem.close()


@pytest.fixture
def mem(open_mem: Callable[..., Any]) -> Any:
    """A Memory from ``open_mem``."""
    return open_mem()


def load_ui_helper() -> ModuleType:
    """``scripts/ui_screenshot.py`` as a module (Prefect server and Chromium helpers)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "ui_screenshot.py"
    spec = importlib.util.spec_from_file_location("ui_screenshot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real ``prefect server`` for the session (own PREFECT_HOME, free loopback port).

    Shared by the CLI, deploy and UI tests (``server``, ``prefect_api`` fixtures); the
    packaging tests start their own, since they delete and re-register block types.
    """
    server = load_ui_helper().PrefectServer(tmp_path_factory.mktemp("prefect-server-home"))
    try:
        server.start(timeout=180)
    except RuntimeError as err:
        pytest.fail(f"prefect server start failed: {err}", pytrace=False)
    yield server
    server.stop()

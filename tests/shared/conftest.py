"""Servers of the shared-memory tests: a primary with a real replica, and a 3-node Cluster.

Also the ``store``/``open_mem``/``mem`` fixtures of the contract suite, pointed at the
Cluster, so that ``test_cluster_contract.py`` runs the contract tests unchanged.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from servers import RedisServer, ServerError, free_port_pair


def _start(server: RedisServer, what: str) -> RedisServer:
    try:
        server.start()
    except ServerError as exc:
        pytest.fail(f"{what} could not start: {exc}", pytrace=False)
    return server


@dataclass
class Replicated:
    """A primary and its replica (``--replicaof``), replication link up."""

    primary: RedisServer
    replica: RedisServer

    @property
    def url(self) -> str:
        return self.primary.url


@pytest.fixture(scope="session")
def replicated() -> Iterator[Replicated]:
    primary = _start(RedisServer(), "redis-server (primary)")
    replica = _start(
        RedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]),
        "redis-server (replica)",
    )
    client = primary.client()
    deadline = time.monotonic() + 20
    while (client.info("replication").get("slave0") or {}).get("state") != "online":
        if time.monotonic() > deadline:
            pytest.fail("the replica did not connect to the primary within 20s", pytrace=False)
        time.sleep(0.05)
    client.close()
    yield Replicated(primary, replica)
    replica.stop()
    primary.stop()


@dataclass
class Cluster:
    """Three primaries of a Redis Cluster (no replicas), every slot served."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url


def _cluster_ok(node: RedisServer) -> bool:
    client = node.client()
    try:
        info = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three ``redis-server --cluster-enabled yes`` joined by ``redis-cli --cluster create``."""
    conf_dir = tmp_path_factory.mktemp("cluster")
    nodes = []
    for i in range(3):
        conf = conf_dir / f"nodes-{i}-{uuid.uuid4().hex[:6]}.conf"
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", str(conf),
                 "--cluster-node-timeout", "5000"]  # fmt: skip
        # A cluster node also listens on its bus port, port + 10000: both must be free.
        server = RedisServer(extra_args=extra, port=free_port_pair(10000))
        nodes.append(_start(server, f"cluster node {i}"))
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    try:
        done = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"redis-cli --cluster create failed: {exc}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"redis-cli --cluster create: {done.stdout}\n{done.stderr}", pytrace=False)
    deadline = time.monotonic() + 30
    while not all(_cluster_ok(node) for node in nodes):
        if time.monotonic() > deadline:
            pytest.fail("the cluster did not reach cluster_state:ok in 30s", pytrace=False)
        time.sleep(0.1)
    yield Cluster(nodes)
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()


# -- the contract suite's fixtures, on the Cluster -------------------------------------------
@pytest.fixture
def backend_name() -> str:
    return "redis-cluster"


@pytest.fixture(params=[1, 2], ids=["layout1", "layout2"])
def store(redis_cluster: Cluster, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A fresh key prefix on the Cluster, in layout 1 (a namespace in one slot) and in
    layout 2 (a namespace spread over 16 hash-tag buckets, so over every primary)."""
    options: dict[str, Any] = {"key_prefix": "pmc" + uuid.uuid4().hex[:10]}
    if request.param == 2:
        options["layout"] = 2
    return {"url": redis_cluster.url, "options": options}


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's plain redis-server."""
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    return "pms" + uuid.uuid4().hex[:10]

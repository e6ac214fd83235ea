"""A real Redis Cluster of 3 primaries and 3 replicas, for the fault tests that kill and reshard.

Not a ``conftest.py`` (pytest would not look for it here): a test module imports the
fixture, ``from shared.conftest_replicas import redis_cluster_replicas``. Six
``redis-server --cluster-enabled yes`` joined by ``redis-cli --cluster create ...
--cluster-replicas 1``, with a short ``cluster-node-timeout`` (:data:`NODE_TIMEOUT_MS`) so a
killed primary's replica is promoted in a few seconds.

The fixture is session-wide: a test that kills or reshards leaves the cluster healthy
again (the killed node back as a replica), and each test starts with
:meth:`ReplicatedCluster.repair` (restarts what a failed test left down, closes open slots).

``redis_cluster_tls`` is the same cluster speaking TLS only (module-wide): one test CA for
every node, ``--tls-cluster yes --tls-replication yes`` (the cluster bus and replication
over TLS too), clients must show a certificate of the CA (``tls-auth-clients yes``).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servers import (
    RedisServer,
    ServerError,
    TlsRedisServer,
    free_port_pair,
    make_test_certificates,
)

#: ``cluster-node-timeout``: a primary silent this long is failed over by its replica.
NODE_TIMEOUT_MS = 2000


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


@dataclass
class ReplicatedCluster:
    """Six cluster nodes: three primaries, each with one replica (roles change on failover)."""

    nodes: list[RedisServer]
    #: Options of ``redis-cli`` before ``--cluster`` (TLS: ``--tls --cacert ...``).
    cli_options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The seed URL clients are given (node 0; roles may change, the URL stays)."""
        return self.nodes[0].url

    def ssl_options(self) -> dict[str, Any]:
        """The ``ssl_*`` options of a client the nodes let in (``{}`` without TLS)."""
        node = self.nodes[0]
        return node.ssl_options() if isinstance(node, TlsRedisServer) else {}

    def replicas(self) -> list[RedisServer]:
        """The live nodes that are replicas now."""
        return [node for node in self.live() if self.info(node, "replication")["role"] == "slave"]

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def command(self, node: RedisServer, *args: object) -> Any:
        """One command on ``node`` through a fresh redis-py client (closed afterwards)."""
        client = node.client(socket_timeout=5, socket_connect_timeout=2)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.is_running()]

    def info(self, node: RedisServer, section: str) -> dict[str, Any]:
        """``INFO section`` of ``node``, as redis-py parses it."""
        return self.command(node, "INFO", section)  # type: ignore[return-value]

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        text = _text(self.command(node, "CLUSTER", "INFO"))
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {name: value.strip() for name, value in pairs}

    def primaries(self) -> list[RedisServer]:
        """The live nodes that are primaries now."""
        return [node for node in self.live() if self.info(node, "replication")["role"] == "master"]

    def owner(self, slot: int) -> RedisServer:
        """The primary serving ``slot`` (from ``CLUSTER SLOTS`` of a live node)."""
        for start, end, primary, *_ in self.command(self.live()[0], "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
            if int(start) <= slot <= int(end):
                return self.node(int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def replica_of(self, primary: RedisServer) -> RedisServer | None:
        """The live node replicating ``primary`` (``None`` if none)."""
        for node in self.live():
            info = self.info(node, "replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                return node
        return None

    def healthy(self) -> bool:
        """All nodes up, ``cluster_state:ok`` everywhere, 3 primaries each with a synced replica."""
        try:
            if len(self.live()) != len(self.nodes):
                return False
            if any(self.cluster_info(node)["cluster_state"] != "ok" for node in self.nodes):
                return False
            if self.open_slots():
                self.fix()  # a reshard that failed: the next test gets a clean cluster
                return False
            primaries = self.primaries()
            if len(primaries) != 3:
                return False
            # CLUSTER SLOTS names a replica once it has replicated something (Redis 7 hides
            # one with replication offset 0): clients reading from replicas need that.
            ranges = self.command(self.live()[0], "CLUSTER", "SLOTS")
            if any(len(entry) < 4 for entry in ranges):  # type: ignore[union-attr]
                return False
            for primary in primaries:
                info = self.info(primary, "replication")
                if info.get("connected_slaves") != 1 or info["slave0"].get("state") != "online":
                    return False
            return True
        except Exception:  # a node restarting, a reply mid-change: not healthy yet
            return False

    def wait_state_ok(self, nodes: list[RedisServer], limit: float = 30.0) -> float:
        """Wait until ``cluster_state:ok`` on ``nodes``; return the seconds waited."""
        began = time.monotonic()
        while True:
            try:
                if all(self.cluster_info(node)["cluster_state"] == "ok" for node in nodes):
                    return time.monotonic() - began
            except Exception:
                pass
            if time.monotonic() - began > limit:
                raise TimeoutError(f"cluster_state:ok not reached within {limit}s")
            time.sleep(0.05)

    def wait_healthy(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not self.healthy():
            if time.monotonic() > deadline:
                states = {n.port: n.is_running() for n in self.nodes}
                raise TimeoutError(f"the cluster is not healthy after {limit}s: running={states}")
            time.sleep(0.1)

    def fix(self) -> None:
        """Close the slots a failed reshard left migrating/importing (``--cluster fix``)."""
        node = self.live()[0]
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.cli("fix", f"127.0.0.1:{node.port}", "--cluster-yes", "--cluster-replace")

    def open_slots(self) -> bool:
        """Whether a node has a slot in migrating or importing state."""
        return any(
            b"->-" in line or b"-<-" in line
            for node in self.live()
            for line in self.command(node, "CLUSTER", "NODES").splitlines()
            if b"myself" in line
        )

    def repair(self, limit: float = 60.0) -> None:
        """Restart the nodes that are down (a test that failed mid-fault), close open slots,
        and wait until :meth:`healthy`: what each test does first."""
        for node in self.nodes:
            if not node.is_running():
                node.restart()  # rejoins from its nodes.conf, as a replica if failed over
        self.wait_healthy(limit)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``redis-cli --cluster ...`` (raises with its output when it fails)."""
        done = subprocess.run(
            ["redis-cli", *self.cli_options, "--cluster", *args], capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
            )
        return done


class TlsClusterNode(TlsRedisServer):
    """A cluster node speaking TLS only, with the certificates of its cluster (one CA).

    The cluster bus and the replication links are TLS too; a node shows the client
    certificate of the CA when it connects to another (``tls-auth-clients yes``).
    """

    name = "redis-tls-cluster"

    def __init__(self, certs: dict[str, Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shared_certs = certs

    def _allocate_ports(self) -> None:
        RedisServer._allocate_ports(self)
        self.certs = self.shared_certs

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            "--tls-cluster", "yes", "--tls-replication", "yes",
            "--tls-client-cert-file", str(self.certs["client_cert"]),
            "--tls-client-key-file", str(self.certs["client_key"]),
        ]  # fmt: skip


def start_replicated_cluster(conf_dir: Path, *, tls: bool = False) -> ReplicatedCluster:
    """Start six nodes and join them: 3 primaries + 3 replicas, every slot served.

    ``tls``: nodes of :class:`TlsClusterNode` (certificates made in ``conf_dir/certs``).
    """
    nodes: list[RedisServer] = []
    certs = make_test_certificates(conf_dir / "certs") if tls else {}
    options: tuple[str, ...] = ()
    if tls:
        options = ("--tls", "--cacert", str(certs["ca"]), "--cert", str(certs["client_cert"]),
                   "--key", str(certs["client_key"]))  # fmt: skip
    try:
        for i in range(6):
            extra = ["--cluster-enabled", "yes",
                     "--cluster-config-file", str(conf_dir / f"nodes-{i}.conf"),
                     "--cluster-node-timeout", str(NODE_TIMEOUT_MS)]  # fmt: skip
            # A cluster node also listens on its bus port, port + 10000: both must be free.
            port = free_port_pair(10000)
            node = (
                TlsClusterNode(certs, extra_args=extra, port=port)
                if tls
                else RedisServer(extra_args=extra, port=port)
            )
            nodes.append(node.start())
        cluster = ReplicatedCluster(nodes, options)
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        cluster.cli("create", *addresses, "--cluster-replicas", "1", "--cluster-yes")
        cluster.wait_healthy(60.0)
    except (ServerError, RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired) as exc:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop(timeout=3)
        what = "TLS " if tls else ""
        pytest.fail(f"the 3+3 {what}Redis Cluster could not start: {exc}", pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def redis_cluster_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedCluster]:
    """3 primaries + 3 replicas (``redis-cli --cluster create --cluster-replicas 1``)."""
    cluster = start_replicated_cluster(tmp_path_factory.mktemp("cluster-replicas"))
    yield cluster
    for node in cluster.nodes:
        with contextlib.suppress(Exception):
            node.stop(timeout=3)


@pytest.fixture(scope="module")
def redis_cluster_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedCluster]:
    """3 primaries + 3 replicas speaking TLS only (see :class:`TlsClusterNode`)."""
    cluster = start_replicated_cluster(tmp_path_factory.mktemp("cluster-tls"), tls=True)
    yield cluster
    for node in cluster.nodes:
        with contextlib.suppress(Exception):
            node.stop(timeout=3)


__all__ = [
    "NODE_TIMEOUT_MS",
    "ReplicatedCluster",
    "TlsClusterNode",
    "redis_cluster_replicas",
    "redis_cluster_tls",
    "start_replicated_cluster",
]

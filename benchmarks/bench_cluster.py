"""One namespace on a 3-primary Redis Cluster: ours (layout 2) vs redis-py ``RedisCluster``.

Workload: ``set_many`` then ``get_many`` of N entries (default 100,000; the ~100-byte
feature dict of ``bench_redis.py``, same TTL), repeated R times (median and best shown):

- raw: redis-py ``RedisCluster`` pipelines of ``SET key msgpack(value) EX ttl`` / ``GET key``
  (values packed / unpacked with msgpack so both sides pay serialization; redis-py groups
  the commands by node itself), in chunks of ``--chunk`` commands (default 10,000);
- ours, layout 2: ``Memory.set_many`` / ``Memory.get_many`` on ``redis://...?layout=2``:
  the namespace spread over 16 buckets, so over the three primaries; a batch goes as one
  script call per bucket, pipelined per node, the nodes in parallel threads;
- ours, layout 1 (reference): the same namespace in one slot, so on one primary.

Both sides read replies with redis-py's parser: ``hiredis`` when it is installed (the
header says which). Target: layout 2 >= 0.9x raw for both. Usage::

    python benchmarks/bench_cluster.py            # starts its own 3-node cluster
    python benchmarks/bench_cluster.py --quick    # N=20,000, R=2
    python benchmarks/bench_cluster.py --url redis://127.0.0.1:7000/0
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.utils import HIREDIS_AVAILABLE

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import prefect_memory as pm  # noqa: E402

TTL = 3600
VALUE: dict[str, Any] = {
    "user_id": 1234567,
    "segment": "premium",
    "score": 0.87315,
    "active": True,
    "tags": ["a", "b", "c"],
    "counts": [1, 2, 3, 4, 5],
    "name": "feature-vector",
}


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536:
            with socket.socket() as s:  # the cluster bus port must be free too
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


@contextmanager
def cluster() -> Iterator[str]:
    """Three ``redis-server --cluster-enabled yes`` joined by ``redis-cli --cluster create``."""
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        raise SystemExit("redis-server and redis-cli are needed (or pass --url)")
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    procs, ports = [], []
    try:
        for i in range(3):
            port = _free_port()
            ports.append(port)
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{i}.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(work),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            for _ in range(200):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for port in ports:
            for _ in range(300):
                out = subprocess.run(
                    ["redis-cli", "-p", str(port), "cluster", "info"],
                    capture_output=True, text=True, check=False,
                ).stdout  # fmt: skip
                if "cluster_state:ok" in out:
                    break
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a node of a running cluster (else one is started)")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=10_000, help="raw pipeline size")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.n, args.rounds = 20_000, 2
    if args.url:
        run(args, args.url)
    else:
        with cluster() as url:
            run(args, url)


def run(args: argparse.Namespace, url: str) -> None:
    n, rounds = args.n, args.rounds
    data = {f"feature:{i:07d}": dict(VALUE, user_id=i) for i in range(n)}
    keys = list(data)
    host, port = url.split("//")[1].split("/")[0].split(":")
    raw = RedisCluster(startup_nodes=[ClusterNode(host, int(port))], protocol=2)
    server = raw.get_default_node().redis_connection.info("server")["redis_version"]
    print(
        f"redis-py {redis.__version__}, redis.utils.HIREDIS_AVAILABLE={HIREDIS_AVAILABLE} "
        f"(both sides parse replies with {'hiredis' if HIREDIS_AVAILABLE else 'pure Python'}); "
        f"redis-server {server}",
        flush=True,
    )
    prefix = "bench" + uuid.uuid4().hex[:6]
    packb, unpackb = msgpack.packb, msgpack.unpackb

    def raw_set() -> None:
        for start in range(0, n, args.chunk):
            pipe = raw.pipeline(transaction=False)
            for key in keys[start : start + args.chunk]:
                pipe.set(f"{prefix}:raw:{key}", packb(data[key]), ex=TTL)
            pipe.execute()

    def raw_get() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for start in range(0, n, args.chunk):
            part = keys[start : start + args.chunk]
            pipe = raw.pipeline(transaction=False)
            for key in part:
                pipe.get(f"{prefix}:raw:{key}")
            for key, value in zip(part, pipe.execute(), strict=True):
                if value is not None:
                    out[key] = unpackb(value)
        return out

    mems = {
        "ours layout 2": pm.open_memory(url, namespace="features", key_prefix=prefix, layout=2),
        "ours layout 1": pm.open_memory(url, namespace="features", key_prefix=prefix + "l1"),
    }
    results: dict[str, dict[str, list[float]]] = {}
    order = ["raw RedisCluster pipelines", *mems]
    for _ in range(rounds):  # interleaved rounds: a load change hits every side alike
        results.setdefault(order[0], {}).setdefault("set", []).extend(timed(raw_set, 1))
        got: dict[str, Any] = {}
        results[order[0]].setdefault("get", []).extend(
            timed(lambda got=got: got.update(raw_get()), 1)
        )
        assert got == data
        for name, mem in mems.items():
            results.setdefault(name, {}).setdefault("set", []).extend(
                timed(lambda mem=mem: mem.set_many(data, ttl=TTL), 1)
            )
            seen: dict[str, Any] = {}
            results[name].setdefault("get", []).extend(
                timed(lambda mem=mem, seen=seen: seen.update(mem.get_many(keys)), 1)
            )
            assert seen == data
    spread = mems["ours layout 2"].backend._spread("features")
    slots = mems["ours layout 2"].backend._slots
    nodes = {slots.owner(base) for base in spread.bases}
    print(
        f"N={n:,} entries of ~{len(packb(VALUE))} B msgpack values, {rounds} rounds "
        f"(interleaved), cluster of 3 primaries at {url}; layout 2: {spread.buckets} buckets "
        f"on {len(nodes)} primaries; raw pipelines of {args.chunk:,}\n"
    )
    print(f"{'side':<30}{'op':<6}{'entries/s':>12}{'median':>10}{'best':>10}")
    medians: dict[tuple[str, str], float] = {}
    for name in order:
        for op in ("set", "get"):
            times = results[name][op]
            med = medians[(name, op)] = statistics.median(times)
            print(f"{name:<30}{op:<6}{n / med:>12,.0f}{med:>9.2f}s{min(times):>9.2f}s")
    print(f"\n{'ratio (throughput, medians)':<44}{'value':>8}{'target':>10}")
    for op in ("set", "get"):
        for name in mems:
            ratio = medians[(order[0], op)] / medians[(name, op)]
            target = ">= 0.9x" if name.endswith("2") else ""
            print(f"{name + ' / raw, ' + op + '_many':<44}{ratio:>7.2f}x{target:>10}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(
        f"\nmachine: {platform.system()} {platform.release()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {' '.join(f'{x:.1f}' for x in load)}; "
        f"python {platform.python_version()}"
    )
    for mem in mems.values():
        mem.clear()
        mem.close()
    for key in keys:
        raw.delete(f"{prefix}:raw:{key}")
    raw.close()


if __name__ == "__main__":
    main()

"""Stalled servers (they accept and never answer) and cut connections, through a TCP proxy.

A stall must not hang a call: every call returns (or fails) within its bound, and once a
breaker opens, at once. A stall ends here with ``cut()`` then ``resume()``: the proxy drops
the connections the clients gave up on, so a write abandoned at its timeout cannot be
delivered late (a real network may deliver it late: see docs/guarantees.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from faults.drive import RECHECK, TIMEOUT, breaker, read_raw, started, stream
from faults.ledger import Ledger
from faults.proxy import TcpProxy, proxied_url
from prefect_memory.registry import open_backend
from prefect_memory.resilience import CircuitBreaker, CircuitOpen, HybridMemory, ResilientBackend
from servers import MongoWireServer, RedisServer, S3Server

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

#: A call on a stalled store ends within its timeout (or deadline) plus this margin.
MARGIN = 1.0
DEADLINE = 1.5


def store_behind_proxy(kind: str, server: Any, proxy: TcpProxy) -> tuple[str, dict[str, Any]]:
    """URL and options of a store reached through ``proxy``."""
    if kind == "redis":
        return f"redis://{proxy.address}/0", {"timeout": TIMEOUT, "key_prefix": uuid.uuid4().hex}
    if kind == "mongodb":
        url = proxied_url(server.url, proxy, server.port)
        return f"{url}&collection=s{uuid.uuid4().hex[:8]}", {"timeout": TIMEOUT}
    server.make_bucket("pm-stalls")
    options = {
        **server.storage_options,
        "client_kwargs": {"endpoint_url": f"http://{proxy.address}"},
    }
    return f"s3://pm-stalls/{uuid.uuid4().hex[:8]}", {
        "storage_options": options,
        "timeout": TIMEOUT,
    }


def new_server(kind: str) -> Any:
    server = {"redis": RedisServer, "mongodb": MongoWireServer, "s3": S3Server}[kind]()
    if getattr(server, "external", False):
        pytest.skip("an external MongoDB is not behind our proxy")
    return server


@pytest.fixture
def proxied(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, TcpProxy]]:
    kind = request.param
    server = new_server(kind)
    with started(server), TcpProxy("127.0.0.1", server.port) as proxy:
        yield kind, server, proxy


def timed(call: Any) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        call()
    except pm.PrefectMemoryError as err:
        return time.monotonic() - began, err
    return time.monotonic() - began, None


@pytest.mark.parametrize("proxied", ["redis", "mongodb", "s3"], indirect=True)
def test_a_stalled_store_cannot_hang_a_call(
    proxied: tuple[str, Any, TcpProxy], ledger: Ledger
) -> None:
    kind, server, proxy = proxied
    url, options = store_behind_proxy(kind, server, proxy)
    gate = CircuitBreaker(kind, failure_threshold=2, reset_timeout=0.3)
    backend = ResilientBackend(open_backend(url, **options), breaker=gate, deadline=DEADLINE)
    mem = pm.Memory(backend, "stall")
    for key in ("a", "b"):
        ledger.put(mem, key)
    proxy.stall()
    ledger.fault(f"stall {kind}")
    took, err = timed(lambda: mem.get("a"))
    assert isinstance(err, pm.BackendUnavailable), err
    assert took <= DEADLINE + MARGIN, f"{kind}: a read took {took:.2f}s on a stalled store"
    assert not ledger.put(mem, "b")  # not acknowledged (it may still land: it is allowed to)
    assert ledger.max_latency <= DEADLINE + MARGIN, f"{kind}: a write took {ledger.max_latency}s"
    ledger.notes["stalled_read_seconds"] = round(took, 3)
    took, err = timed(lambda: mem.get("a"))  # the breaker is open now: no waiting at all
    assert isinstance(err, CircuitOpen) and took < 0.05
    ledger.notes["open_breaker_call_seconds"] = round(took, 4)
    ledger.put(mem, "c")  # refused at once: not acknowledged
    proxy.cut()
    proxy.resume()
    deadline = time.monotonic() + 30
    while not ledger.put(mem, "d") and time.monotonic() < deadline:
        time.sleep(0.05)  # the breaker lets a trial through after 0.3 s
    assert gate.state.value == "closed"
    ledger.verify(
        read_raw(open_backend(url, **{**options, "timeout": 10.0}), "stall", ledger.ops), kind
    )
    ledger.assert_clean()


@pytest.mark.parametrize(
    "proxied,role",
    [("redis", "primary"), ("mongodb", "secondary"), ("s3", "secondary")],
    indirect=["proxied"],
)
def test_hybrid_keeps_answering_while_a_store_is_stalled(
    proxied: tuple[str, Any, TcpProxy], role: str, tmp_path: Path, ledger: Ledger
) -> None:
    kind, server, proxy = proxied
    url, options = store_behind_proxy(kind, server, proxy)
    local = f"sqlite:///{tmp_path}/local.db"
    primary, secondary = (url, local) if role == "primary" else (local, url)
    mem = HybridMemory(
        primary, secondary, strategy="write-behind" if role == "primary" else "write-through",
        journal=str(tmp_path / "journal.db"), flush_interval=0.05, accept_degraded=True,
        breaker=breaker(), deadline=DEADLINE, namespace="stalled", recheck_after=RECHECK,
        **{f"{role}_options": options},
    )  # fmt: skip
    keys = [f"k{i:03d}" for i in range(60)]
    n = 60 if kind == "s3" else 150

    def stall() -> None:
        ledger.fault(f"stall {kind} ({role})")
        proxy.stall()

    def heal() -> None:
        ledger.notes["queued_at_heal"] = mem.backlog(role)
        proxy.cut()
        proxy.resume()

    stream(mem, ledger, keys, 3 * n, seed=5, at={n: stall, 2 * n: heal})
    assert ledger.failed == 0
    assert ledger.max_latency <= DEADLINE + MARGIN, f"an operation took {ledger.max_latency:.2f}s"
    mem.settle(timeout=60 + RECHECK)
    assert mem.backlog() == 0 and mem.in_doubt() == 0
    ledger.verify(mem.get_many(list(ledger.ops)), "hybrid")
    patient = open_backend(url, **{**options, "timeout": 10.0})
    ledger.verify(read_raw(patient, "stalled", ledger.ops), f"{role} ({kind})")
    ledger.assert_clean()


@pytest.mark.parametrize("proxied", ["redis"], indirect=True)
def test_connections_cut_mid_stream(proxied: tuple[str, Any, TcpProxy], ledger: Ledger) -> None:
    """Connections reset under a stream of writes: Redis reconnects, nothing acked is lost."""
    kind, server, proxy = proxied
    url, options = store_behind_proxy(kind, server, proxy)
    mem = pm.open_memory(url, namespace="cut", **options)
    cuts = {i: proxy.cut for i in range(25, 1000, 50)}
    for _ in cuts:
        ledger.fault("cut redis connections")
    stream(mem, ledger, [f"c{i:03d}" for i in range(100)], 1000, seed=6, at=cuts)
    ledger.notes["failed_during_cuts"] = ledger.failed
    ledger.verify(read_raw(open_backend(url, **options), "cut", ledger.ops), kind)
    ledger.assert_clean()


@pytest.mark.parametrize("proxied", ["redis", "mongodb", "s3"], indirect=True)
def test_a_write_delivered_late_is_put_right(
    proxied: tuple[str, Any, TcpProxy], tmp_path: Path, ledger: Ledger
) -> None:
    """A write the client gave up on reaches the server after newer writes of its keys.

    The proxy holds the connections open when the write is sent and delivers their bytes
    once newer writes (on new connections) have been answered: the server applies an
    older value last, as SeaweedFS did after a restart. The hybrid rechecks the keys of
    every write that may land late and puts back the last acknowledged one.
    """
    kind, server, proxy = proxied
    url, options = store_behind_proxy(kind, server, proxy)
    mem = HybridMemory(
        f"sqlite:///{tmp_path}/local.db", url, strategy="write-through", accept_degraded=True,
        journal=str(tmp_path / "journal.db"), flush_interval=60, recheck_after=3.0,
        namespace="late", secondary_options=options,
    )  # fmt: skip
    keys = [f"k{i}" for i in range(5)]
    patient = open_backend(url, **{**options, "timeout": 10.0})
    for key in keys:
        ledger.put(mem, key)
    if kind == "s3":  # a put reads the keys' headers first: hold the first PUT itself
        proxy.hold(match=b"PUT ")
    elif kind == "mongodb":  # the first update command (not the monitor's heartbeats)
        proxy.hold(match=lambda chunk: b"\x02update\x00" in chunk[:64])
    else:  # the pooled connection the next write will use
        assert proxy.hold(), "no pooled connection to hold"
    ledger.fault(f"hold {kind} connections, deliver their bytes after newer writes")
    assert ledger.put_many(mem, keys)  # acknowledged (degraded: queued for the secondary)
    mem.flush(timeout=30)  # what was queued for the secondary goes on new connections
    assert ledger.put_many(mem, keys)
    mem.flush(timeout=30)
    latest = read_raw(patient, "late", keys)
    assert proxy.deliver() > 0, "nothing was held"
    deadline = time.monotonic() + 15
    while read_raw(patient, "late", keys) == latest and time.monotonic() < deadline:
        time.sleep(0.1)
    stale = {k for k, v in read_raw(patient, "late", keys).items() if v != latest.get(k)}
    assert stale, f"{kind}: the held write never landed over the newer ones"
    ledger.notes["stale_after_late_delivery"] = len(stale)
    ledger.notes["in_doubt"] = mem.in_doubt()
    mem.settle(timeout=30)  # (rechecked 3 s after the failure, the delivery came before)
    ledger.notes["repaired"] = mem.backend.repaired["secondary"]
    ledger.verify(read_raw(patient, "late", keys), f"secondary ({kind})")
    ledger.verify(mem.get_many(keys), "hybrid")
    ledger.assert_clean()


@pytest.mark.parametrize("proxied", ["s3"], indirect=True)
def test_an_s3_put_with_no_answer_is_given_up_within_its_timeout(
    proxied: tuple[str, Any, TcpProxy], ledger: Ledger
) -> None:
    """No deadline here: the store's own ``timeout`` must bound an upload. botocore's
    ``Expect: 100-continue`` made aiohttp wait for an answer with no timeout (120 s)."""
    kind, server, proxy = proxied
    url, options = store_behind_proxy(kind, server, proxy)
    mem = pm.open_memory(url, namespace="expect", **options)
    ledger.put(mem, "a")
    proxy.hold(match=b"PUT ")  # the next upload is read by the "server", never answered
    ledger.fault("hold one S3 put")
    began = time.monotonic()
    assert ledger.put(mem, "a")  # the attempt times out; the retry, on a new connection, lands
    took = time.monotonic() - began
    assert took < 10 * TIMEOUT, f"a put with no answer took {took:.1f}s (timeout {TIMEOUT}s)"
    ledger.notes["held_put_seconds"] = round(took, 2)
    proxy.cut()  # the held request is dropped, not delivered
    ledger.verify(read_raw(open_backend(url, **options), "expect", ledger.ops), kind)
    ledger.assert_clean()

"""Hostile bytes into the value decoder: no crash, bounded memory, only our errors.

Anything in a store may have been written by someone else. Every decode of hostile bytes
runs in a child process (:mod:`._decode_child`, address space capped with ``RLIMIT_AS``),
so a segfault or a runaway allocation fails the test instead of killing pytest.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prefect_memory as pm
from conftest import make_opener
from hostile._decode_child import DecodeChild
from prefect_memory.codecs import Codec

GIB = 1 << 30


@pytest.fixture(scope="module")
def child() -> Iterator[DecodeChild]:
    worker = DecodeChild(memory_mb=2048)
    yield worker
    worker.close()


def assert_refused(answer: dict[str, Any], *words: str) -> None:
    assert answer["outcome"] == "error", answer
    assert answer["type"] == "prefect_memory.errors.SerializationError", answer
    for word in words:
        assert word in answer["message"], answer


def assert_ours(answer: dict[str, Any]) -> None:
    assert answer["outcome"] == "value" or answer["ours"], answer


# -- hostile values, built as another client would write them ----------------------------
def nested_ext(code: int | list[int], depth: int) -> bytes:
    """An extension container (9 tuple, 7 set, 8 frozenset) holding itself ``depth`` times."""
    codes = code if isinstance(code, list) else [code]
    body = msgpack.packb(1)
    for level in range(depth):
        body = msgpack.packb(msgpack.ExtType(codes[level % len(codes)], b"\x91" + body))
    return b"\x01" + body


def ext_bytes(code: int, payload: bytes) -> bytes:
    """An ext32 of any code (msgpack.ExtType refuses the reserved negative ones)."""
    return b"\xc9" + struct.pack(">Ib", len(payload), code) + payload


def zstd_frame(chunk: bytes, total: int, *, declare: bool) -> bytes:
    """A zstd frame of ``total`` bytes (repeats of ``chunk``), built without holding them."""
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=declare)
    obj = cctx.compressobj(size=total if declare else -1)
    block = chunk * ((1 << 20) // len(chunk))
    out, left = [], total
    while left:
        piece = block[:left]
        out.append(obj.compress(piece))
        left -= len(piece)
    out.append(obj.flush())
    return b"".join(out)


@pytest.fixture(scope="module")
def gib_bomb() -> bytes:
    """A stored value of about 32 KB declaring 1 GiB once decompressed."""
    return b"\x02" + zstd_frame(b"\x00", GIB, declare=True)


def pickle_payload(marker: Path) -> bytes:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    return b"\x01" + msgpack.packb(msgpack.ExtType(12, pickle.dumps(Boom())))


# -- item 1: depth -----------------------------------------------------------------------
@pytest.mark.parametrize("codes", [9, 7, 8, [9, 8, 7]], ids=["tuple", "set", "frozenset", "mix"])
@pytest.mark.parametrize("depth", [101, 300, 20_000])
def test_nested_extensions_are_refused_not_a_crash(child, codes, depth) -> None:
    data = nested_ext(codes, depth)
    assert_refused(child.decode(data), "max_depth=100")
    if depth > 256:
        assert_refused(child.decode(data, max_depth=256), "max_depth=256")
    else:
        assert child.decode(data, max_depth=256)["outcome"] in ("value", "error")


def test_100_levels_decode_even_on_a_small_thread_stack(child) -> None:
    """Extension containers are decoded iteratively: the C stack does not grow per level."""
    data = nested_ext([9, 8], 99)  # 99 extension levels + the list of each = depth 100
    for stack in (256 * 1024, 8 << 20):
        answer = child.ask({"decode": data.hex(), "thread_stack": stack})
        assert answer["outcome"] == "value", answer


def test_plain_lists_and_maps_past_msgpacks_bound_are_refused(child) -> None:
    """Plain nesting is decoded by msgpack without recursion, up to its 1024 levels."""
    for depth in (1025, 100_000):
        assert_refused(child.decode(b"\x01" + b"\x91" * depth + b"\x01"), "max_depth")
        assert_refused(child.decode(b"\x01" + b"\x81\x01" * depth + b"\x01"), "max_depth")
    for depth in (100, 1000):
        answer = child.ask(
            {"decode": (b"\x01" + b"\x91" * depth + b"\x01").hex(), "thread_stack": 256 * 1024}
        )
        assert answer["outcome"] == "value", answer


def test_encode_refuses_what_decode_would_refuse() -> None:
    codec = Codec()
    for make in (tuple, frozenset, lambda x: [(x,)], lambda x: {"k": (x,)}):
        value: Any = 1
        for _ in range(100 // (1 if make in (tuple, frozenset) else 2)):
            value = make([value]) if make in (tuple, frozenset) else make(value)
        assert codec.decode(codec.encode(value)) == value
        deeper = make([value]) if make in (tuple, frozenset) else make(value)
        with pytest.raises(pm.SerializationError, match="max_depth=100"):
            codec.encode(deeper)
    for make in (list, lambda x: {"k": x}):  # plain nesting: msgpack's bound on writes
        value = 1
        for _ in range(1100):
            value = make([value]) if make is list else make(value)
        with pytest.raises(pm.SerializationError, match="nested deeper"):
            codec.encode(value)
    deep: Any = ()
    for _ in range(5000):  # raised a raw RecursionError before
        deep = (deep,)
    with pytest.raises(pm.SerializationError, match="max_depth=100"):
        codec.encode(deep)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(pm.SerializationError, match="nested deeper"):
        codec.encode(loop)
    shared: tuple[Any, ...] = ()
    for _ in range(60):  # 2**60 paths through 60 tuples
        shared = (shared, shared)
    with pytest.raises(pm.SerializationError, match="max_items"):
        codec.encode(shared)


def test_bounds_are_codec_options() -> None:
    codec = Codec(max_depth=3, max_items=10, max_decoded_size=100)
    assert codec.decode(codec.encode([[(1,)]])) == [[(1,)]]
    with pytest.raises(pm.SerializationError, match="max_depth=3"):
        codec.encode([[[(1,)]]])
    with pytest.raises(pm.SerializationError, match="max_items=10"):
        codec.encode(list(range(10)))
    with pytest.raises(pm.SerializationError, match="max_decoded_size=100"):
        codec.encode("x" * 200)
    with pytest.raises(pm.SerializationError, match="max_decoded_size=100"):
        codec.decode(Codec().encode("x" * 200))
    assert pickle.loads(pickle.dumps(codec)).max_items == 10
    for bad in ({"max_depth": 0}, {"max_depth": 1000}, {"max_items": -1}, {"max_depth": True}):
        with pytest.raises(pm.ConfigError):
            Codec(**bad)


# -- item 2: decompression and amplification bombs ---------------------------------------
def test_declared_gib_is_refused_before_decompressing(child, gib_bomb) -> None:
    assert len(gib_bomb) < 64 * 1024
    assert_refused(child.decode(gib_bomb), "max_decoded_size=268435456", f"{GIB}")


def test_frame_without_declared_size_stops_past_the_limit(child) -> None:
    bomb = b"\x02" + zstd_frame(b"\x00", 64 << 20, declare=False)
    assert_refused(child.decode(bomb, max_decoded_size=1 << 20), "max_decoded_size=1048576")
    value = {"rows": list(range(1000))}
    body = msgpack.packb(value)
    undeclared = b"\x02" + zstandard.ZstdCompressor(write_content_size=False).compress(body)
    assert zstandard.frame_content_size(undeclared[1:]) == -1
    assert Codec().decode(undeclared) == value


def test_lying_frame_headers_are_refused(child) -> None:
    real = zstandard.ZstdCompressor().compress(b"\x01" * 5000)
    fhd = real[4]
    fcs_bytes = {0: 1 if fhd & 0x20 else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
    at = 5 + (0 if fhd & 0x20 else 1) + (0, 1, 2, 4)[fhd & 3]
    assert fcs_bytes in (2, 4, 8)
    for declared in (300, 4999, 5001, 200 << 20):
        if fcs_bytes == 2 and declared > 65535 + 256:
            continue
        field = (declared - 256 if fcs_bytes == 2 else declared).to_bytes(fcs_bytes, "little")
        lying = b"\x02" + real[:at] + field + real[at + fcs_bytes :]
        assert_ours(child.decode(lying))
        assert child.decode(lying)["outcome"] == "error"


def test_many_small_containers_are_refused_by_count(child) -> None:
    """16 MiB of empty maps would build 1.2 GiB of dicts; 64 MiB, 4.6 GiB."""
    n = 64 << 20
    bomb = b"\x02" + zstd_frame_with_prefix(b"\xdd" + struct.pack(">I", n), b"\x80", n)
    assert len(bomb) < 1 << 20
    assert_refused(child.decode(bomb), "max_items=4000000")
    flat = b"\x01" + msgpack.packb([{} for _ in range(2000)])
    assert_refused(child.decode(flat, max_items=1000), "max_items=1000")
    assert child.decode(flat)["outcome"] == "value"


def zstd_frame_with_prefix(prefix: bytes, chunk: bytes, count: int) -> bytes:
    cctx = zstandard.ZstdCompressor(level=1)
    obj = cctx.compressobj(size=len(prefix) + count)
    out = [obj.compress(prefix)]
    block = chunk * (1 << 20)
    for _ in range(count // len(block)):
        out.append(obj.compress(block))
    out.append(obj.compress(chunk * (count % len(block))))
    out.append(obj.flush())
    return b"".join(out)


# -- item 3: nothing runs, nothing else escapes ------------------------------------------
def test_pickle_and_numpy_objects_never_run(child, tmp_path) -> None:
    marker = tmp_path / "ran"
    assert_refused(child.decode(pickle_payload(marker)), "pickle=True")
    assert not marker.exists()
    obj_array = msgpack.packb(["|O", [1], b"\x00" * 8])
    assert_refused(child.decode(b"\x01" + msgpack.packb(msgpack.ExtType(5, obj_array))))
    scalar = msgpack.packb(msgpack.ExtType(6, msgpack.packb(["|O", b"\x00" * 8])))
    assert_refused(child.decode(b"\x01" + scalar))
    assert not marker.exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x03",
        b"\x01",
        b"\x01\xc1",
        b"\x01\xdb\xff\xff\xff\xff",  # str32 of 4 GiB, 0 bytes given
        b"\x01\xdd\xff\xff\xff\xff",  # array32 of 4 G items
        b"\x01\xdf\xff\xff\xff\xff",  # map32 of 4 G pairs
        b"\x01\xc9\xff\xff\xff\xff\x09",  # ext32 of 4 GiB
        b"\x01\xa2\xff\xfe",  # invalid UTF-8
        b"\x01\x81\x90\x01",  # a list as a map key
        b"\x01\xd4\x09\x01",  # a tuple that is not a list
        b"\x01\xd5\x07\x91\x90",  # a set of a list
        b"\x01\xd6\x04\x93\x01\x02\x03"[:-1],  # a truncated timedelta
        b"\x01\xc7\x03\x04\x93\xcf\xff",  # a timedelta of nonsense
        b"\x01\xd4\x01\x31",  # a datetime "1"
        b"\x01\xd4\x0b\x00",  # a uuid of one byte
        b"\x01\xd6\x0a1e99",  # decimal 1e99 is fine; the next are not
        b"\x01\xd4\x0a\xff",
        b"\x01\xd4\xff\x00",  # a msgpack timestamp of one byte
        b"\x02",
        b"\x02(\xb5/\xfd",  # a zstd magic and nothing else
    ],
)
def test_malformed_bytes_raise_our_errors_only(child, data) -> None:
    answer = child.decode(data)
    assert_ours(answer)


# -- item 5: fuzz ------------------------------------------------------------------------
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@FUZZ
@given(prefix=st.sampled_from([b"\x01", b"\x02", b""]), rest=st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(child, prefix, rest) -> None:
    assert_ours(child.decode(prefix + rest))


def _render(node: Any) -> bytes:
    kind, arg = node
    if kind == "raw":
        return arg
    if kind == "ext":
        code, inner = arg
        return ext_bytes(code, b"".join(map(_render, inner)))
    if kind == "array":
        declared, items = arg
        return b"\xdd" + struct.pack(">I", declared) + b"".join(map(_render, items))
    declared, items = arg
    return b"\xdf" + struct.pack(">I", declared) + b"".join(map(_render, items))


_leaf = st.one_of(
    st.tuples(st.just("raw"), st.binary(max_size=8)),
    st.tuples(
        st.just("raw"),
        st.sampled_from(
            [
                msgpack.packb(x)
                for x in (0, -1, 2**64 - 1, 1.5, "s", b"b", None, True, [], {}, "é" * 3)
            ]
            + [b"\xdb\xff\xff\xff\xf0", b"\xc6\x7f\xff\xff\xff", b"\xc1", b"\xa2\xff\xfe"]
        ),
    ),
)
_codes = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 99, -1])
_tree = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.tuples(st.just("ext"), st.tuples(_codes, st.lists(inner, max_size=3))),
        st.tuples(
            st.just("array"),
            st.tuples(st.sampled_from([0, 1, 2, 3, 2**31, 2**32 - 1]), st.lists(inner, max_size=3)),
        ),
        st.tuples(
            st.just("map"),
            st.tuples(st.sampled_from([0, 1, 2, 2**31]), st.lists(inner, max_size=4)),
        ),
    ),
    max_leaves=30,
)


@FUZZ
@given(tree=_tree, deep=st.sampled_from([0, 0, 0, 150, 400]), code=_codes)
def test_fuzz_structured_msgpack(child, tree, deep, code) -> None:
    body = _render(tree)
    for _ in range(deep):
        body = ext_bytes(code, b"\x91" + body)
    assert_ours(child.decode(b"\x01" + body))


@FUZZ
@given(
    tree=_tree,
    declare=st.booleans(),
    cut=st.integers(0, 64),
    flip=st.integers(0, 255),
    at=st.integers(0, 40),
)
def test_fuzz_zstd_frames(child, tree, declare, cut, flip, at) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=declare).compress(_render(tree))
    assert_ours(child.decode(b"\x02" + frame))
    damaged = bytearray(frame[: max(1, len(frame) - cut)])
    damaged[at % len(damaged)] ^= flip
    assert_ours(child.decode(b"\x02" + bytes(damaged)))
    assert_ours(child.decode(b"\x02" + frame + frame))


# -- regressions against real stores: another client writes, our reader survives ---------
@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    return make_opener(request, tmp_path, "hostile")


def _hostile_values(tmp_path: Path, gib_bomb: bytes) -> dict[str, tuple[bytes, str]]:
    return {
        "deep": (nested_ext(9, 300), "max_depth"),
        "deep-set": (nested_ext([7, 8], 5000), "max_depth"),
        "bomb": (gib_bomb, "max_decoded_size"),
        "pickled": (pickle_payload(tmp_path / "ran"), "pickle=True"),
    }


def _write_raw(backend: str, mem: Any, tmp_path: Path, key: str, data: bytes) -> None:
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "m.db") as db:
            cur = db.execute(
                "UPDATE pm_entries SET value = ? WHERE ns = ? AND key = ?",
                (data, mem.namespace, key),
            )
            assert cur.rowcount == 1
        return
    import redis

    client = redis.Redis.from_url(mem.backend.url)
    try:
        found = list(client.scan_iter(match=f"{mem.backend.key_prefix}:*:e:{key}"))
        assert len(found) == 1, found
        client.hset(found[0], "v", data)
    finally:
        client.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_hostile_values_written_by_another_client(
    child, open_store, tmp_path, gib_bomb, backend
) -> None:
    mem = open_store(backend)
    values = _hostile_values(tmp_path, gib_bomb)
    for key in values:
        mem.set(key, "placeholder")
    for key, (data, _) in values.items():
        _write_raw(backend, mem, tmp_path, key, data)
    if backend == "sqlite":
        url, options = f"sqlite:///{tmp_path}/m.db", {}
    else:
        url, options = mem.backend.url, {"key_prefix": mem.backend.key_prefix}
    request = {"url": url, "namespace": mem.namespace, "options": options}
    answers = child.ask({"get": list(values), **request})
    for answer, (_, word) in zip(answers, values.values(), strict=True):
        assert_refused(answer, word)
    assert not (tmp_path / "ran").exists()
    # the reader survived: the same child still reads a good value
    mem.set("good", {"fine": (1, 2)})
    again = child.ask({"get": ["good"], **request})
    assert again == [{"outcome": "value", "type": "dict", "ours": True, "message": ""}]

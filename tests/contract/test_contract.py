"""The contract every backend passes, against real servers (see conftest.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np
import pytest

import prefect_memory as pm
from prefect_memory.errors import InvalidKeyError, KeyTypeError, SerializationError


class Opaque:
    """A value msgpack cannot carry."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.x == self.x


VALUES = {
    "dict": {"user": 7, "roles": ["a", "b"], "nested": {"x": 1.5}},
    "list": [1, "two", 3.0, None, True],
    "bytes": b"\x00\xffbinary",
    "unicode": "héllo wörld ✓ 日本",
    "int": 2**60,
    "none": None,
    "naive_datetime": dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
    "aware_datetime": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),
    "date": dt.date(2024, 1, 31),
    "tuple": (1, (2, 3)),
    "set": {1, 2, 3},
}


def test_roundtrip_values(mem: pm.Memory) -> None:
    mem.set_many(VALUES)
    got = mem.get_many(list(VALUES))
    assert got == VALUES
    for name, value in VALUES.items():
        assert type(got[name]) is type(value), name


def test_numpy_arrays(mem: pm.Memory) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    mem.set("arr", arr)
    out = mem.get("arr")
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, arr)


def test_large_value(mem: pm.Memory) -> None:
    blob = os.urandom(5 * 1024 * 1024)
    mem.set("big", blob)
    assert mem.get("big") == blob
    assert mem.info("big").size >= len(blob)


def test_get_default_and_missing(mem: pm.Memory) -> None:
    assert mem.get("missing") is None
    assert mem.get("missing", default=42) == 42
    mem.set("k:1", 1)
    assert mem.get_many(["k:1", "missing", "k:1"]) == {"k:1": 1}
    assert mem.info("missing") is None
    with pytest.raises(KeyError):
        mem["missing"]


def test_exists_delete(mem: pm.Memory) -> None:
    mem.set("a", 1)
    assert mem.exists("a") and "a" in mem
    assert mem.delete("a") is True
    assert mem.delete("a") is False
    assert not mem.exists("a")
    mem.set_many({"x": 1, "y": 2})
    assert mem.delete_many(["x", "y", "z"]) == 2


def test_batches_cross_batch_size(open_mem: Callable[..., pm.Memory]) -> None:
    mem = open_mem(batch_size=100)
    data = {f"item:{i:05d}": {"i": i} for i in range(450)}
    mem.set_many(data, ttl=600)
    assert mem.get_many(list(data)) == data
    assert sorted(mem.keys("item:*")) == sorted(data)
    assert mem.delete_many(list(data)) == 450


def test_keys_glob(mem: pm.Memory) -> None:
    mem.set_many({"k:1": 1, "k:2": 2, "k:10": 10, "other": 0, "k?": 5})
    assert sorted(mem.keys("k:*")) == ["k:1", "k:10", "k:2"]
    assert sorted(mem.keys("k:?")) == ["k:1", "k:2"]
    assert sorted(mem.keys()) == sorted(["k:1", "k:2", "k:10", "other", "k?"])
    assert list(mem.keys("other")) == ["other"]
    assert list(mem.keys("nothing*")) == []


def test_namespaces_never_collide(open_mem: Callable[..., pm.Memory]) -> None:
    tag = uuid.uuid4().hex[:6]
    ab = open_mem(f"a{tag}:b")
    a = open_mem(f"a{tag}")
    ab.set("c", "from a:b")
    a.set("b:c", "from a")
    assert ab.get("c") == "from a:b"
    assert a.get("b:c") == "from a"
    assert list(ab.keys()) == ["c"]
    assert list(a.keys()) == ["b:c"]
    star = open_mem(f"s{tag}*")
    plain = open_mem(f"s{tag}x")
    plain.set("k", 1)
    assert list(star.keys()) == []
    star.set("k", 2)
    assert plain.get("k") == 1
    assert star.clear() == 1
    assert plain.get("k") == 1


KEYS = [
    "unicode:日本語:ключ",
    "with/slashes/in/it",
    "with spaces and\ttabs",
    "..",
    ".",
    "~tilde",
    "%41percent",
    "emoji:🙂",
    "x" * 512,
    "ü" * 512,
    "\U0001d518" * 512,  # a 4-byte UTF-8 character
    "*literal?[star]",
]


def test_key_shapes(mem: pm.Memory) -> None:
    data = {key: i for i, key in enumerate(KEYS)}
    mem.set_many(data)
    for key, i in data.items():
        assert mem.get(key) == i, key
    assert sorted(mem.keys()) == sorted(KEYS)
    assert mem.get_many(KEYS) == data
    assert mem.delete_many(KEYS) == len(KEYS)


@pytest.mark.parametrize("bad", ["", None, 5, b"bytes"])
def test_invalid_keys(mem: pm.Memory, bad: object) -> None:
    expected = InvalidKeyError if bad == "" else KeyTypeError
    builtin = ValueError if bad == "" else TypeError
    for call in (
        lambda: mem.set(bad, 1),  # type: ignore[arg-type]
        lambda: mem.get(bad),  # type: ignore[arg-type]
        lambda: mem.get_many([bad]),  # type: ignore[list-item]
        lambda: mem.set_many({bad: 1}),  # type: ignore[dict-item]
        lambda: mem.delete(bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(expected) as info:
            call()
        assert isinstance(info.value, builtin)
        assert isinstance(info.value, pm.PrefectMemoryError)


def test_ttl_expires(mem: pm.Memory) -> None:
    mem.set("short", 1, ttl=0.6)
    mem.set_many({"short:2": 2}, ttl=dt.timedelta(seconds=0.6))
    mem.set("long", 2, ttl=60)
    mem.set("forever", 3)
    assert mem.exists("short")
    info = mem.info("short")
    assert info.expires_at is not None and info.ttl == pytest.approx(0.6)
    assert mem.info("forever").expires_at is None
    time.sleep(1.3)
    assert mem.get("short", "gone") == "gone"
    assert not mem.exists("short:2")
    assert sorted(mem.keys()) == ["forever", "long"]
    assert mem.get_many(["short", "short:2", "long"]) == {"long": 2}


def test_default_ttl_of_memory(open_mem: Callable[..., pm.Memory]) -> None:
    mem = open_mem(ttl=0.6)
    mem.set("a", 1)
    mem.set("b", 2, ttl=None)
    time.sleep(1.3)
    assert not mem.exists("a")
    assert mem.get("b") == 2


def test_sliding_ttl(mem: pm.Memory) -> None:
    mem.set("slide", 1, ttl=1.0, refresh=True)
    mem.set("fixed", 1, ttl=1.0)
    for _ in range(3):
        time.sleep(0.5)
        assert mem.get("slide") == 1
    assert not mem.exists("fixed")
    time.sleep(1.5)
    assert not mem.exists("slide")


def test_invalid_ttl(mem: pm.Memory) -> None:
    for bad in (0, -1, "10"):
        with pytest.raises(ValueError):
            mem.set("k", 1, ttl=bad)  # type: ignore[arg-type]


def test_access_metadata(mem: pm.Memory) -> None:
    before = time.time()
    mem.set("k", "v1", tags=["t"])
    first = mem.info("k")
    assert first.access_count == 0 and first.version == 1
    assert first.created_at.timestamp() >= before - 1
    mem.get("k")
    mem.get("k")
    mem.get_many(["k"])
    mem.exists("k")
    mem.info("k")
    info = mem.info("k")
    assert info.access_count == 3
    assert info.last_access >= first.last_access
    time.sleep(0.05)
    mem.set("k", "v2")
    after = mem.info("k")
    assert after.version == 2
    assert after.created_at == first.created_at
    assert after.updated_at > first.updated_at
    assert after.access_count == 3
    assert after.tags == ()


def test_tags(open_mem: Callable[..., pm.Memory]) -> None:
    mem = open_mem()
    other = open_mem("other-" + uuid.uuid4().hex[:6])
    mem.set("session:1", 1, tags=["user:7", "sessions"])
    mem.set("session:2", 2, tags=["user:8", "sessions"])
    mem.set_many({"cart:7": 3, "pref:7": 4}, tags=["user:7"])
    mem.set("plain", 5)
    other.set("session:1", "other", tags=["user:7"])
    assert mem.info("session:1").tags == ("user:7", "sessions")
    assert mem.invalidate_tags("user:7") == 3
    assert sorted(mem.keys()) == ["plain", "session:2"]
    assert other.get("session:1") == "other"
    assert mem.invalidate_tags("nothing") == 0
    mem.set("session:2", 2)  # rewritten without tags: no longer tagged
    assert mem.invalidate_tags("sessions", "user:8") == 0
    assert mem.get("session:2") == 2


def test_compression(open_mem: Callable[..., pm.Memory]) -> None:
    packed = open_mem(compression=True, compress_threshold=64)
    plain = open_mem(packed.namespace)
    text = "compressible " * 10_000
    packed.set("text", text)
    assert packed.info("text").size < len(text) // 10
    assert plain.get("text") == text
    plain.set("small", "x")
    assert packed.get("small") == "x"


def test_pickle_is_opt_in(open_mem: Callable[..., pm.Memory]) -> None:
    strict = open_mem()
    with pytest.raises(SerializationError, match="pickle=True"):
        strict.set("obj", Opaque(1))
    trusting = open_mem(strict.namespace, pickle=True)
    trusting.set("obj", Opaque(2))
    assert trusting.get("obj") == Opaque(2)
    with pytest.raises(SerializationError, match="pickle"):
        strict.get("obj")


def test_memory_survives_pickling(mem: pm.Memory) -> None:
    mem.set("k", {"v": 1})
    clone = pickle.loads(pickle.dumps(mem))
    assert clone.get("k") == {"v": 1}
    clone.set("k2", 2)
    assert mem.get("k2") == 2
    clone.close()


def test_clear_only_own_namespace(open_mem: Callable[..., pm.Memory]) -> None:
    mine = open_mem()
    theirs = open_mem("theirs-" + uuid.uuid4().hex[:6])
    mine.set_many({"a": 1, "b": 2})
    theirs.set("a", 3)
    assert mine.clear() == 2
    assert list(mine.keys()) == []
    assert theirs.get("a") == 3


def test_async_twins(mem: pm.Memory) -> None:
    async def main() -> tuple[object, ...]:
        await mem.aset("k", 1, ttl=60, tags=["t"])
        await mem.aset_many({"x": 1, "y": 2})
        got = await mem.aget("k")
        many = await mem.aget_many(["x", "y"])
        keys = sorted(await mem.akeys())
        removed = await mem.ainvalidate_tags("t")
        return got, many, keys, removed, await mem.aexists("k")

    assert asyncio.run(main()) == (1, {"x": 1, "y": 2}, ["k", "x", "y"], 1, False)


def test_reopen_keeps_data(open_mem: Callable[..., pm.Memory], backend_name: str) -> None:
    mem = open_mem()
    mem.set("durable", {"v": 1}, tags=["t"])
    mem.close()
    again = open_mem(mem.namespace)
    assert again.get("durable") == {"v": 1}
    assert again.invalidate_tags("t") == 1


def test_mapping_sugar(mem: pm.Memory) -> None:
    mem["a"] = 1
    assert mem["a"] == 1
    del mem["a"]
    assert "a" not in mem
    with pytest.raises(KeyError):
        del mem["a"]


def test_conditional_moves(mem: pm.Memory) -> None:
    """put_absent_many never overwrites; delete_if_unchanged spares rewritten entries."""
    backend, ns, now = mem.backend, mem.namespace, time.time()
    mem.set("a", 1)
    record = pm.Record(mem.codec.encode(2), now, now, now)
    assert backend.put_absent_many(ns, {"a": record, "b": record}, now=now) == {"b"}
    assert mem.get_many(["a", "b"]) == {"a": 1, "b": 2}
    token = backend.get_many(ns, ["a"], now=now)["a"].token
    mem.get("a")  # reads do not change the token
    assert backend.get_many(ns, ["a"], now=now)["a"].token == token
    time.sleep(0.01)
    mem.set("a", 3)
    assert backend.delete_if_unchanged(ns, {"a": token, "zz": (1, 0.0)}, now=now) == set()
    assert mem.get("a") == 3
    fresh = backend.get_many(ns, ["a"], now=now)["a"].token
    assert backend.delete_if_unchanged(ns, {"a": fresh}, now=now) == {"a"}
    assert not mem.exists("a")


def test_concurrent_put_absent_has_one_winner_per_key(mem: pm.Memory) -> None:
    """Writers racing to move the same keys: a store declaring ``atomic_moves`` lets exactly
    one win each key, and what it holds is the winner's value; any store ends with every
    key written once by someone who says so."""
    backend, ns = mem.backend, mem.namespace
    keys = [f"k{i:03d}" for i in range(60)]
    won: dict[int, set[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(n: int) -> None:
        now = time.time()
        record = pm.Record(mem.codec.encode(n), now, now, now)
        start.wait()
        try:
            for i in range(0, len(keys), 10):
                batch = {k: record for k in keys[i : i + 10]}
                won.setdefault(n, set()).update(backend.put_absent_many(ns, batch, now=now))
        except BaseException as err:  # a writer that fails is a failure, not a thread warning
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    stored = mem.get_many(keys)
    assert stored.keys() == set(keys)
    claimed = set().union(*won.values())
    assert claimed == set(keys)
    for key, value in stored.items():
        assert key in won[value]  # the stored value's writer said it wrote the key
    if backend.capabilities.atomic_moves:
        assert sum(map(len, won.values())) == len(keys), "a key was won twice"


def test_add_only_if_absent_and_tagged(mem: pm.Memory) -> None:
    assert mem.add("k", 1, tags=["t"]) is True
    assert mem.add("k", 2) is False
    assert mem.get("k") == 1
    mem.set("short", 0, ttl=0.3)
    time.sleep(0.5)
    assert mem.add("short", "again") is True  # an expired entry counts as absent
    mem.set_many({"x": 1, "y": 2}, tags=["t", "u"])
    assert mem.tagged("t") == ["k", "x", "y"]
    assert mem.tagged(["u"], "nothing") == ["x", "y"]
    assert mem.tagged() == []

"""Core pieces without servers: codecs, keys, registry, errors, open_memory."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import pickle
import sys
import textwrap
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import prefect_memory as pm
from prefect_memory import registry
from prefect_memory.codecs import Codec
from prefect_memory.keys import file_name, key_from_file_name, literal_prefix, ns_token, unquote
from prefect_memory.plugins.inprocess import InProcessBackend


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.time(1, 2, 3),
        dt.timedelta(days=1, seconds=5, microseconds=7),
        decimal.Decimal("3.14159265358979323846"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        frozenset({1, 2}),
        complex(1, -2),
        np.int64(7),
        {"nested": [(1, {2, 3}), {"d": dt.date(2020, 2, 29)}]},
    ],
)
def test_codec_roundtrip_types(value: object) -> None:
    codec = Codec()
    out = codec.decode(codec.encode(value))
    assert out == value
    assert type(out) is type(value)


def test_codec_subclasses_become_base_types() -> None:
    codec = Codec()
    assert codec.decode(codec.encode(OrderedDict(a=1))) == {"a": 1}
    assert codec.decode(codec.encode(Color.RED)) == 1


def test_codec_compression_threshold() -> None:
    codec = Codec(compression=True, compress_threshold=100)
    small, large = codec.encode("x" * 10), codec.encode("x" * 1000)
    assert small[0] == 0x01 and large[0] == 0x02
    assert len(large) < 100
    assert Codec().decode(large) == "x" * 1000  # readers need no option to decode


def test_codec_rejects_garbage_and_unknown_objects() -> None:
    codec = Codec()
    with pytest.raises(pm.SerializationError, match="format byte"):
        codec.decode(b"\x7fabc")
    with pytest.raises(pm.SerializationError, match="corrupt"):
        codec.decode(b"\x01\xc1")
    with pytest.raises(pm.SerializationError, match="pickle=True") as info:
        codec.encode(object())
    assert isinstance(info.value, TypeError)
    with pytest.raises(pm.SerializationError):
        codec.encode(np.array([object()], dtype=object))


def test_codec_pickles() -> None:
    codec = pickle.loads(pickle.dumps(Codec(compression=True, pickle=True)))
    assert codec.compression and codec.pickle


def test_ns_token_and_file_names() -> None:
    assert ns_token("a:b") != ns_token("a") and ":" not in ns_token("a:b:{c}*")
    assert unquote(ns_token("ünï/cøde {x}")) == "ünï/cøde {x}"
    for key in ["simple", "a/b", "..", ".hidden", "%2F", "~x", "日本"]:
        name = file_name(key)
        assert "/" not in name and not name.startswith(".")
        assert key_from_file_name(name) == key
    long_name = file_name("ü" * 512)
    assert long_name.startswith("~") and key_from_file_name(long_name) is None
    assert literal_prefix("k:*") == "k:" and literal_prefix("exact") == "exact"


def test_error_tree() -> None:
    assert issubclass(pm.BackendUnavailable, ConnectionError)
    assert issubclass(pm.BackendTimeout, TimeoutError)
    assert issubclass(pm.EntryNotFound, KeyError)
    assert issubclass(pm.KeyTypeError, TypeError) and issubclass(pm.KeyTypeError, ValueError)
    assert issubclass(pm.MissingDependencyError, ImportError)
    for cls in (pm.ConfigError, pm.UnknownBackendError, pm.SerializationError):
        assert issubclass(cls, pm.PrefectMemoryError)


def test_unknown_scheme_names_it_and_the_installed_ones() -> None:
    with pytest.raises(pm.UnknownBackendError) as info:
        pm.open_memory("nosuch://x")
    message = str(info.value)
    assert "'nosuch'" in message
    for scheme in ("memory", "sqlite", "json", "file", "s3", "redis", "mongodb"):
        assert scheme in message
    with pytest.raises(pm.ConfigError, match="scheme://"):
        pm.open_memory("not a url")


def test_register_backend_and_clobber() -> None:
    def factory(url: str, **options: object) -> InProcessBackend:
        return InProcessBackend("custom-" + url.split("://", 1)[1])

    pm.register_backend("custom", factory, clobber=True)
    mem = pm.open_memory("custom://one", namespace="n")
    mem.set("k", 1)
    assert pm.open_memory("custom://one", namespace="n").get("k") == 1
    with pytest.raises(pm.ConfigError, match="already registered"):
        pm.register_backend("custom", factory)
    with pytest.raises(pm.ConfigError, match="already registered"):
        pm.register_backend("redis", factory)
    with pytest.raises(pm.ConfigError, match="invalid URL scheme"):
        pm.register_backend("bad scheme", factory)
    pm.register_backend("notabackend", lambda url, **kw: object(), clobber=True)
    with pytest.raises(pm.ConfigError, match="not a Backend"):
        pm.open_memory("notabackend://x")


def test_entry_point_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package declaring the entry point is found without any registration."""
    pkg = tmp_path / "thirdparty_backend.py"
    pkg.write_text(
        textwrap.dedent(
            """
            from prefect_memory.plugins.inprocess import InProcessBackend

            class ThirdParty(InProcessBackend):
                scheme = "thirdparty"
            """
        )
    )
    dist = tmp_path / "thirdparty_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-backend\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[prefect_memory.backends]\nthirdparty = thirdparty_backend:ThirdParty\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    assert "thirdparty" in pm.available_backends()
    mem = pm.open_memory("thirdparty://", namespace="x")
    assert type(mem.backend).__name__ == "ThirdParty"
    mem.set("k", [1])
    assert mem.get("k") == [1]
    sys.modules.pop("thirdparty_backend", None)


def test_missing_dependency_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    monkeypatch.delitem(sys.modules, "prefect_memory.plugins.redis.backend", raising=False)
    with pytest.raises(pm.MissingDependencyError, match=r"prefect-memory\[redis\]"):
        pm.open_memory("redis://127.0.0.1:1/0")


def test_open_memory_default_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_MEMORY_URL", raising=False)
    mem = pm.open_memory(namespace="d")
    mem.set("k", 1)
    assert (tmp_path / ".prefect-memory" / "memory.db").exists()
    monkeypatch.setenv("PREFECT_MEMORY_URL", f"json:///{tmp_path}/m.json")
    assert pm.open_memory().backend.scheme == "json"


def test_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(pm.ConfigError, match="bogus"):
        pm.open_memory(f"sqlite:///{tmp_path}/x.db?bogus=1")
    with pytest.raises(pm.ConfigError, match="bogus"):
        pm.open_memory(f"file://{tmp_path}", bogus=1)
    with pytest.raises(pm.ConfigError, match="local file"):
        pm.open_memory("sqlite://host/x.db")
    with pytest.raises(pm.ConfigError, match="batch_size"):
        pm.open_memory("memory://", batch_size=0)
    with pytest.raises(pm.InvalidKeyError):
        pm.open_memory("memory://", namespace="")


def test_inprocess_lru_evicts_to_hook() -> None:
    evicted: list[tuple[str, str]] = []
    backend = InProcessBackend(
        max_entries=3, on_evict=lambda ns, key, rec: evicted.append((ns, key))
    )
    mem = pm.Memory(backend, "n")
    mem.set_many({"a": 1, "b": 2, "c": 3})
    mem.get("a")  # a becomes most recently used
    mem.set("d", 4)
    assert evicted == [("n", "b")]
    assert sorted(mem.keys()) == ["a", "c", "d"]
    assert backend.evictions == 1
    with pytest.raises(TypeError, match="private"):
        pickle.dumps(pm.Memory(InProcessBackend(), "x"))


def test_memory_repr_and_clock() -> None:
    now = [1000.0]
    mem = pm.Memory(InProcessBackend(), "clocked", ttl=10, clock=lambda: now[0])
    mem.set("k", 1)
    assert mem.info("k").expires_at == dt.datetime.fromtimestamp(1010, tz=dt.timezone.utc)
    now[0] = 1011.0
    assert mem.get("k") is None
    assert "clocked" in repr(mem)


def test_hooks_run_in_order_and_reverse() -> None:
    calls: list[str] = []

    class Tag(pm.Hook):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_save(self, key: str, value: object) -> object:
            calls.append(f"save:{self.name}")
            return [self.name, value]

        def after_load(self, key: str, value: object) -> object:
            calls.append(f"load:{self.name}")
            assert isinstance(value, list) and value[0] == self.name
            return value[1]

        def encode_bytes(self, key: str, data: bytes) -> bytes:
            return bytes(b ^ ord(self.name) for b in data)

        def decode_bytes(self, key: str, data: bytes) -> bytes:
            return bytes(b ^ ord(self.name) for b in data)

    backend = InProcessBackend()
    mem = pm.Memory(backend, "h", hooks=[Tag("a"), Tag("b")])
    mem.set_many({"k": 1})
    assert mem.get_many(["k"]) == {"k": 1} and mem.get("k") == 1
    assert calls[:4] == ["save:a", "save:b", "load:b", "load:a"]
    raw = pm.Memory(backend, "h")
    with pytest.raises(pm.SerializationError):
        raw.get("k")  # stored bytes are transformed: not readable without the hooks
    with pytest.raises(pm.ConfigError, match="Hook"):
        pm.Memory(backend, "h", hooks=[object()])  # type: ignore[list-item]

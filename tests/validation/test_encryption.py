"""EncryptionHook: round-trips on real stores, ciphertext at rest, clear errors for wrong keys."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import pickle
import subprocess
import sys

import pytest
from pydantic import SecretBytes, SecretStr

import prefect_memory as pm
from prefect_memory.validation import EncryptionHook, PrefectSecretKey, generate_key
from prefect_memory.validation.secrets import key_bytes, key_id

KEY_BACKENDS = ["sqlite", "file", "redis"]  # the key tests: embedded, file and a real server

SECRET_TEXT = "the launch code is 0000"


def stored_bytes(mem: pm.Memory, key: str) -> bytes:
    record = mem.backend.get_many(mem.namespace, [key], now=mem.clock())[key]
    return bytes(record.value)


@pytest.mark.parametrize("backend", [*KEY_BACKENDS, "s3"])
def test_round_trip_and_ciphertext_at_rest(open_mem, backend: str) -> None:
    key = generate_key()
    mem = open_mem(backend, hooks=[EncryptionHook(key)])
    value = {
        "note": SECRET_TEXT,
        "at": dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
        "blob": b"\x00" * 10,
        "big": "x" * 2_000_000,
    }
    mem.set("secret:1", value)
    mem.set_many({"secret:2": SECRET_TEXT, "secret:3": [1, 2, 3]})
    assert mem.get("secret:1") == value
    assert mem.get_many(["secret:2", "secret:3"]) == {
        "secret:2": SECRET_TEXT,
        "secret:3": [1, 2, 3],
    }
    data = stored_bytes(mem, "secret:1")
    assert data.startswith(b"PMENC") and SECRET_TEXT.encode() not in data
    assert b"x" * 64 not in data
    # another memory on the same store with the same key (as another worker would)
    assert open_mem(backend, hooks=[EncryptionHook(key)]).get("secret:2") == SECRET_TEXT


@pytest.mark.parametrize("backend", KEY_BACKENDS)
def test_wrong_key_is_a_clear_error_that_never_shows_keys(open_mem, backend: str, caplog) -> None:
    right, wrong = generate_key(), generate_key()
    open_mem(backend, hooks=[EncryptionHook(right)]).set("user:1", {"ssn": "123"})
    reader = open_mem(backend, hooks=[EncryptionHook(wrong)])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(pm.DecryptionError) as info:
        reader.get("user:1")
    err = info.value
    assert isinstance(err, pm.PrefectMemoryError) and isinstance(err, ValueError)
    text = str(err)
    assert "user:1" in text and "another key" in text
    for key in (right, wrong):
        raw = key_bytes(key)
        for shown in (key, raw.hex(), base64.b64encode(raw).decode()):
            assert shown not in text and shown not in caplog.text
            assert shown not in repr(reader.hooks[0])


def test_tampered_or_moved_ciphertext_fails_authentication() -> None:
    mem = pm.open_memory("memory://", hooks=[EncryptionHook(generate_key())])
    mem.set("a", "payload")
    ns, now = mem.namespace, mem.clock()
    record = mem.backend.get_many(ns, ["a"], now=now)["a"]
    flipped = bytearray(record.value)
    flipped[-1] ^= 0x01
    mem.backend.put_many(ns, {"b": record}, now=now)  # same bytes under another key
    mem.backend.put_many(ns, {"c": type(record)(bytes(flipped), now, now, now)}, now=now)
    for key in ("b", "c"):
        with pytest.raises(pm.DecryptionError, match="failed authentication"):
            mem.get(key)
    unbound = pm.open_memory("memory://", hooks=[EncryptionHook(generate_key(), bind_key=False)])
    unbound.set("a", "payload")
    record = unbound.backend.get_many(unbound.namespace, ["a"], now=now)["a"]
    unbound.backend.put_many(unbound.namespace, {"b": record}, now=now)
    assert unbound.get("b") == "payload"  # bind_key=False: values may be copied between keys


def test_plaintext_entries_need_allow_plaintext(open_mem) -> None:
    raw = open_mem("sqlite")
    raw.set("old", {"written": "before encryption"})
    key = generate_key()
    with pytest.raises(pm.DecryptionError, match="not encrypted"):
        open_mem("sqlite", hooks=[EncryptionHook(key)]).get("old")
    mem = open_mem("sqlite", hooks=[EncryptionHook(key, allow_plaintext=True)])
    assert mem.get("old") == {"written": "before encryption"}
    mem.set("old", mem.get("old"))  # rewriting encrypts it
    assert stored_bytes(mem, "old").startswith(b"PMENC")


def test_key_rotation_reads_old_values_and_writes_with_the_new_key() -> None:
    old, new = generate_key(), generate_key()
    mem = pm.open_memory("memory://rotation", hooks=[EncryptionHook(old)])
    mem.set("k", 1)
    rotated = pm.open_memory("memory://rotation", hooks=[EncryptionHook([new, old])])
    assert rotated.get("k") == 1
    rotated.set("k", 2)
    with pytest.raises(pm.DecryptionError):
        mem.get("k")  # only the new key can read it now
    assert pm.open_memory("memory://rotation", hooks=[EncryptionHook(new)]).get("k") == 2


@pytest.mark.parametrize(
    "key",
    [
        b"k" * 16,
        b"k" * 24,
        b"k" * 32,
        base64.urlsafe_b64encode(b"k" * 32).decode(),
        (b"k" * 32).hex(),
        (b"k" * 16).hex(),
        SecretStr(base64.urlsafe_b64encode(b"k" * 32).decode()),
        SecretBytes(b"k" * 32),
    ],
    ids=["aes128", "aes192", "aes256", "base64", "hex", "hex128", "SecretStr", "SecretBytes"],
)
def test_key_forms(key: object) -> None:
    mem = pm.open_memory("memory://", hooks=[EncryptionHook(key)])
    mem.set("k", "v")
    assert mem.get("k") == "v"


@pytest.mark.parametrize("key", [b"short", "not a key", 12345, SecretStr("abc")])
def test_bad_keys_are_config_errors(key: object) -> None:
    with pytest.raises(pm.ConfigError, match="encryption key"):
        EncryptionHook(key)
    with pytest.raises(pm.ConfigError, match="needs a key"):
        EncryptionHook()


def test_memory_with_encryption_pickles() -> None:
    mem = pm.open_memory("memory://pickled", hooks=[EncryptionHook(generate_key())])
    mem.set("k", "v")
    clone = pickle.loads(pickle.dumps(mem))
    assert clone.get("k") == "v"


def test_prefect_secret_block_key_is_loaded_lazily_and_never_pickled(monkeypatch) -> None:
    from prefect.blocks.system import Secret

    key = generate_key()
    loads: list[str] = []

    class FakeSecret:
        def get(self) -> str:
            return key

    def fake_load(name: str, **_: object) -> FakeSecret:
        loads.append(name)
        return FakeSecret()

    monkeypatch.setattr(Secret, "load", fake_load)
    old_key = generate_key()
    # rotation: the block's key encrypts, an old raw key still decrypts
    hook = EncryptionHook([PrefectSecretKey("memory-key"), old_key])
    assert loads == []  # nothing fetched until the first use
    assert old_key not in repr(hook) and "memory-key" in repr(hook)
    mem = pm.open_memory("memory://secret-block", hooks=[hook])
    mem.set("k", SECRET_TEXT)
    assert loads == ["memory-key"]
    state = pickle.dumps(mem)
    assert key.encode() not in state and key_bytes(key) not in state
    assert pickle.loads(state).get("k") == SECRET_TEXT
    assert loads == ["memory-key", "memory-key"]  # the unpickled copy loads it again
    assert PrefectSecretKey("memory-key") in hook._sources
    assert stored_bytes(mem, "k")[7:11] == key_id(key_bytes(key))  # written with the block's key


def test_importing_the_hooks_does_not_import_prefect_or_pandas() -> None:
    code = (
        "import sys, prefect_memory, prefect_memory.validation.hooks, "
        "prefect_memory.validation.config\n"
        "print(sorted(m for m in ('prefect', 'pandas', 'pandera') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

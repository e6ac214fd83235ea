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


# -- namespace binding (header version 2) and values of the version 1 format ----------------


def version_1_bytes(raw_key: bytes, key: str, value: object, *, bind_key: bool = True) -> bytes:
    """A value encrypted as the version 1 format did (memory key bound, namespace not)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = b"PMENC" + bytes((1, 1 if bind_key else 0)) + key_id(raw_key)
    nonce = b"\x07" * 12
    aad = header + (key.encode() if bind_key else b"")
    return header + nonce + AESGCM(raw_key).encrypt(nonce, pm.Codec().encode(value), aad)


def put_raw(mem: pm.Memory, key: str, data: bytes) -> None:
    now = mem.clock()
    mem.set(key, "placeholder")
    record = mem.backend.get_many(mem.namespace, [key], now=now)[key]
    mem.backend.put_many(mem.namespace, {key: type(record)(data, now, now, now)}, now=now)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_version_1_values_still_decrypt(open_mem, backend: str) -> None:
    key = generate_key()
    mem = open_mem(backend, hooks=[EncryptionHook(key)])
    raw = key_bytes(key)
    put_raw(mem, "old", version_1_bytes(raw, "old", {"n": (1, 2)}))
    put_raw(mem, "unbound", version_1_bytes(raw, "unbound", [1], bind_key=False))
    assert mem.get("old") == {"n": (1, 2)}
    assert mem.get("unbound") == [1]
    put_raw(mem, "moved", version_1_bytes(raw, "old", {"n": (1, 2)}))
    with pytest.raises(pm.DecryptionError, match="failed authentication"):
        mem.get("moved")  # version 1 still binds the memory key


def test_the_hook_binds_the_namespace_it_is_given() -> None:
    hook = EncryptionHook(generate_key())
    sealed = hook.encode_bytes_in("alice", "k", b"\x01\xa1v")
    assert sealed[5] == 2  # header version 2: namespace bound
    assert hook.decode_bytes_in("alice", "k", sealed) == b"\x01\xa1v"
    for namespace in ("bob", "alic", "alicek", ""):
        with pytest.raises(pm.DecryptionError, match="another key or namespace"):
            hook.decode_bytes_in(namespace, "k", sealed)
    with pytest.raises(pm.DecryptionError, match="bound to its namespace"):
        hook.decode_bytes("k", sealed)  # a reader that cannot tell the namespace
    # the length prefix keeps (namespace, key) pairs apart: ("ab", "c") is not ("a", "bc")
    with pytest.raises(pm.DecryptionError):
        hook.decode_bytes_in("a", "bc", hook.encode_bytes_in("ab", "c", b"x"))
    unbound = EncryptionHook(generate_key(), bind_key=False)
    sealed = unbound.encode_bytes_in("alice", "k", b"x")
    assert unbound.decode_bytes_in("alice", "other", sealed) == b"x"
    with pytest.raises(pm.DecryptionError):
        unbound.decode_bytes_in("bob", "k", sealed)  # the namespace is bound regardless


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_ciphertext_copied_to_another_namespace_fails(open_mem, backend: str) -> None:
    key = generate_key()
    alice = open_mem(backend, namespace="alice", hooks=[EncryptionHook(key)])
    bob = open_mem(backend, namespace="bob", hooks=[EncryptionHook(key)])
    alice.set("balance", 100)
    bob.set("balance", 0)
    assert stored_bytes(alice, "balance")[5] == 2
    now = alice.clock()
    record = alice.backend.get_many("alice", ["balance"], now=now)["balance"]
    bob.backend.put_many("bob", {"balance": record}, now=now)  # same key, same memory key
    with pytest.raises(pm.DecryptionError, match="another key or namespace"):
        bob.get("balance")
    assert alice.get("balance") == 100


def test_rollback_within_a_namespace_is_not_detected() -> None:
    """The documented limit: an older ciphertext of the same key and namespace decrypts."""
    mem = pm.open_memory("memory://rollback", hooks=[EncryptionHook(generate_key())])
    mem.set("k", "v1")
    now = mem.clock()
    old = mem.backend.get_many(mem.namespace, ["k"], now=now)["k"]
    mem.set("k", "v2")
    mem.backend.put_many(mem.namespace, {"k": old}, now=now)
    assert mem.get("k") == "v1"

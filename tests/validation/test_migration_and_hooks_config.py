"""MigrationHook upgrades old records; hooks_from_config builds the tutorial's hook lists."""

from __future__ import annotations

from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.validation import (
    EncryptionHook,
    MigrationHook,
    SchemaHook,
    generate_key,
    hooks_from_config,
)

KEY_BACKENDS = ["sqlite", "file", "redis"]  # the key tests: embedded, file and a real server


def v1_to_v2(record: dict[str, Any]) -> dict[str, Any]:
    first, _, last = record.pop("fullname").partition(" ")
    return {**record, "first": first, "last": last}


def v2_to_v3(record: dict[str, Any]) -> dict[str, Any]:
    record["tags"] = sorted(set(record.get("tags", [])))
    return record


UPGRADES = {1: v1_to_v2, 2: v2_to_v3}
SCHEMAS = {
    "validation": True,
    "strict": True,
    "definitions": {
        "user": {
            "type": "object",
            "required": ["first", "last"],
            "properties": {
                "first": {"type": "string", "minLength": 1},
                "last": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "schema_version": {"type": "integer"},
            },
        }
    },
}


@pytest.mark.parametrize("backend", KEY_BACKENDS)
def test_old_records_are_upgraded_on_load(open_mem, backend: str) -> None:
    raw = open_mem(backend)
    raw.set("user:1", {"fullname": "Ada Lovelace", "schema_version": 1})
    raw.set(
        "user:2", {"first": "Alan", "last": "Turing", "tags": ["b", "a", "b"], "schema_version": 2}
    )
    raw.set("user:3", {"fullname": "Grace Hopper"})  # written before versions existed
    raw.set("other:1", {"fullname": "not a user"})
    mem = open_mem(backend, hooks=[MigrationHook(UPGRADES, patterns="user:*", missing_version=1)])
    assert mem.get("user:1") == {
        "first": "Ada",
        "last": "Lovelace",
        "tags": [],
        "schema_version": 3,
    }
    assert mem.get("user:2")["tags"] == ["a", "b"]
    assert mem.get("user:3")["first"] == "Grace"
    assert mem.get("other:1") == {"fullname": "not a user"}  # pattern does not match
    mem.set("user:4", {"first": "Edsger", "last": "Dijkstra"})
    assert raw.get("user:4")["schema_version"] == 3  # stamped on save
    assert raw.get("user:1")["schema_version"] == 1  # loads do not rewrite the store
    mem.set("user:1", mem.get("user:1"))  # rewriting stores the upgraded record
    assert raw.get("user:1")["schema_version"] == 3


def test_records_without_a_version_are_left_alone_by_default() -> None:
    mem = pm.open_memory("memory://", hooks=[MigrationHook(UPGRADES, stamp=False)])
    mem.set("u", {"fullname": "A B"})
    assert mem.get("u") == {"fullname": "A B"}


def test_migration_errors_are_validation_errors() -> None:
    raw = pm.open_memory("memory://migrations")
    raw.set("newer", {"schema_version": 9})
    raw.set("broken", {"schema_version": 1})  # v1_to_v2 needs "fullname"
    raw.set("ancient", {"schema_version": 0})
    mem = pm.open_memory("memory://migrations", hooks=[MigrationHook(UPGRADES)])
    with pytest.raises(pm.ValidationError, match="no upgrade path from version 9"):
        mem.get("newer")
    with pytest.raises(pm.ValidationError, match="upgrade from version 1 failed") as info:
        mem.get("broken")
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.paths == ["schema_version"]
    with pytest.raises(pm.ValidationError, match="version 0"):
        mem.get("ancient")
    raw.set("bad-return", {"schema_version": 2})
    returns_list = pm.open_memory("memory://migrations", hooks=[MigrationHook({2: lambda r: [r]})])
    with pytest.raises(pm.ValidationError, match="returned a list"):
        returns_list.get("bad-return")


def test_migration_steps_must_be_consecutive() -> None:
    with pytest.raises(pm.ConfigError, match=r"no upgrade from version\(s\) \[2\]"):
        MigrationHook({1: v1_to_v2, 3: v2_to_v3})
    with pytest.raises(pm.ConfigError, match="must be callable"):
        MigrationHook({1: "v1_to_v2"})  # type: ignore[dict-item]
    assert MigrationHook({}, version=5).version == 5


@pytest.mark.parametrize("backend", KEY_BACKENDS)
def test_tutorial_hook_lists_validate_encrypt_decrypt_and_transform(open_mem, backend: str) -> None:
    key = generate_key()
    spec = {"beforeSave": ["validate", "encrypt"], "afterLoad": ["decrypt", "transform"]}
    hooks = hooks_from_config(
        spec, schemas=SCHEMAS, key=key, migrations=MigrationHook(UPGRADES, missing_version=1)
    )
    assert [type(h) for h in hooks] == [SchemaHook, EncryptionHook, MigrationHook]
    assert hooks[0].on_load is False
    # an encrypted v1 record from an older writer (encryption, no migration)
    open_mem(backend, hooks=[EncryptionHook(key)]).set("user:1", {"fullname": "Ada L"})
    mem = open_mem(backend, hooks=hooks)
    assert mem.get("user:1") == {"first": "Ada", "last": "L", "tags": [], "schema_version": 3}
    mem.set("user:2", {"first": "Alan", "last": "T"})
    with pytest.raises(pm.ValidationError) as info:
        mem.set("user:3", {"first": "", "nick": "x"})
    assert set(info.value.paths) == {"first", "last", "nick"}
    raw = open_mem(backend)
    with pytest.raises(pm.SerializationError):
        raw.get("user:2")  # ciphertext, not msgpack
    with pytest.raises(pm.DecryptionError):
        open_mem(backend, hooks=[EncryptionHook(generate_key())]).get("user:2")


def test_validate_in_after_load_checks_on_load_and_custom_names() -> None:
    class Shout(pm.Hook):
        def after_load(self, key: str, value: Any) -> Any:
            return value.upper() if isinstance(value, str) else value

    shout = Shout()
    hooks = hooks_from_config(
        {"beforeSave": ["validate"], "afterLoad": ["shout", "validate"]},
        schemas=SCHEMAS,
        custom={"shout": shout},
    )
    assert hooks[0].on_load is True and hooks[1] is shout
    mem = pm.open_memory("memory://", hooks=hooks)
    mem.set("greeting", "hi")
    assert mem.get("greeting") == "HI"


def test_config_problems_are_listed_with_their_paths() -> None:
    with pytest.raises(pm.ConfigError) as info:
        hooks_from_config(
            {"beforeSave": ["validate", "encrypt", "zip"], "afterLoad": "decrypt", "onError": []}
        )
    text = str(info.value)
    assert "hooks.onError: unknown key" in text
    assert "hooks.afterLoad: must be a list" in text
    assert "hooks.beforeSave[0]: 'validate' needs schemas" in text
    assert "hooks.beforeSave[1]: 'encrypt' needs a key" in text
    assert "hooks.beforeSave[2]: unknown hook 'zip'" in text
    with pytest.raises(pm.ConfigError, match=r"hooks.afterLoad\[0\]: 'transform' needs migrations"):
        hooks_from_config({"afterLoad": ["transform"]})
    with pytest.raises(pm.ConfigError, match=r"hooks.beforeSave\[0\]: an encryption key"):
        hooks_from_config({"beforeSave": ["encrypt"]}, key="bad")


def test_frames_pass_through_migration_untouched() -> None:
    pd = pytest.importorskip("pandas")
    mem = pm.open_memory("memory://", hooks=[MigrationHook(UPGRADES, missing_version=1)])
    df = pd.DataFrame({"a": [1]})
    mem.frames.put("user:frame", df)
    assert "schema_version" not in mem.get("user:frame")
    assert mem.frames.get("user:frame").equals(df)

"""The tutorial's JSON Schemas: every failing path named, formats really checked, $ref, strict."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.validation import RecordSchemas, SchemaHook

KEY_BACKENDS = ["sqlite", "file", "redis"]  # the key tests: embedded, file and a real server

#: The tutorial's "Memory Schemas and Validation" section, as users paste it.
TUTORIAL: dict[str, Any] = {
    "memory": {
        "schemas": {
            "validation": True,
            "strict": True,
            "definitions": {
                "user": {
                    "type": "object",
                    "required": ["id", "email", "createdAt"],
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "email": {"type": "string", "format": "email"},
                        "profile": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "avatar": {"type": "string", "format": "uri"},
                            },
                        },
                        "createdAt": {"type": "string", "format": "date-time"},
                    },
                },
                "task": {
                    "type": "object",
                    "required": ["id", "title", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "title": {"type": "string", "minLength": 1, "maxLength": 200},
                        "status": {"enum": ["pending", "in_progress", "completed"]},
                        "assignedTo": {"$ref": "#/definitions/user/properties/id"},
                    },
                },
            },
        }
    }
}
SECTION = TUTORIAL["memory"]["schemas"]
USER_ID = str(uuid.UUID("6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b"))


def good_user() -> dict[str, Any]:
    return {
        "id": USER_ID,
        "email": "ada@example.com",
        "profile": {"name": "Ada", "avatar": "https://example.com/ada.png"},
        "createdAt": "2024-05-01T12:00:00Z",
    }


def good_task() -> dict[str, Any]:
    return {"id": "t1", "title": "Write tests", "status": "pending", "assignedTo": USER_ID}


@pytest.fixture
def schemas() -> RecordSchemas:
    return RecordSchemas.from_config(SECTION)


def paths(err: pm.ValidationError) -> dict[str, str]:
    return {f.path: f.check for f in err.failures}


@pytest.mark.parametrize("backend", KEY_BACKENDS)
def test_tutorial_config_checks_set_and_names_every_failing_path(open_mem, backend: str) -> None:
    mem = open_mem(backend, hooks=[SchemaHook(RecordSchemas.from_config(SECTION))])
    mem.set("user:1", good_user())
    mem.set("task:1", good_task())
    bad = {
        "id": "not-a-uuid",
        "email": "ada(at)example.com",
        "profile": {"name": 7, "avatar": "not a uri", "nickname": "x"},
        "createdAt": "2024-02-30T10:00:00Z",
        "role": "admin",
    }
    with pytest.raises(pm.ValidationError) as info:
        mem.set("user:2", bad)
    err = info.value
    assert isinstance(err, ValueError) and err.key == "user:2" and err.schema == "user"
    assert paths(err) == {
        "id": "format",
        "email": "format",
        "profile.name": "type",
        "profile.avatar": "format",
        "profile.nickname": "additionalProperties",
        "createdAt": "format",
        "role": "additionalProperties",
    }
    assert not mem.exists("user:2")  # refused before anything was written
    with pytest.raises(pm.ValidationError) as info:
        mem.set("task:2", {"title": "", "status": "done", "assignedTo": "bob"})
    assert paths(info.value) == {
        "id": "required",
        "title": "minLength",
        "status": "enum",
        "assignedTo": "format",  # through the $ref to user.properties.id
    }
    mem.set("note:1", {"anything": True})  # no schema for this key


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        (
            "uuid",
            USER_ID,
            [
                "6f1c2b9e3d4a4e5f8a7b1c2d3e4f5a6b",
                "{" + USER_ID + "}",
                "urn:uuid:" + USER_ID,
                "6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6",
            ],
        ),
        (
            "email",
            "a.b+c@mail.example.org",
            ["ada", "ada@", "@example.com", "ada@example", "a b@example.com", "ada@@example.com"],
        ),
        (
            "uri",
            "https://example.com/a?b=c#d",
            ["/relative/path", "example.com", "not a uri", "http://exa mple.com", ""],
        ),
        (
            "date-time",
            "2024-02-29T23:59:59.123+01:00",
            [
                "2024-02-30T00:00:00Z",
                "2024-01-01T00:00:00",
                "2024-01-01",
                "2024-13-01T00:00:00Z",
                "yesterday",
            ],
        ),
    ],
)
def test_formats_are_really_checked(fmt: str, good: str, bad: list[str]) -> None:
    schemas = RecordSchemas({"thing": {"type": "string", "format": fmt}})
    schemas.validate("thing:ok", good)
    for value in bad:
        with pytest.raises(pm.ValidationError) as info:
            schemas.validate("thing:bad", value)
        assert info.value.failures[0].check == "format", value


def test_ref_resolves_into_the_definitions_and_bad_refs_are_config_errors() -> None:
    schemas = RecordSchemas(copy.deepcopy(SECTION["definitions"]))
    assert schemas.failures("task", good_task()) == []
    (failure,) = schemas.failures("task", {**good_task(), "assignedTo": "x"})
    assert failure.path == "assignedTo" and "uuid" in failure.message
    broken = copy.deepcopy(SECTION["definitions"])
    broken["task"]["properties"]["assignedTo"] = {"$ref": "#/definitions/usr/properties/id"}
    broken["task"]["properties"]["owner"] = {"$ref": "https://example.com/schema.json"}
    with pytest.raises(pm.ConfigError) as info:
        RecordSchemas(broken)
    text = str(info.value)
    assert "schemas.definitions.task.properties.assignedTo.$ref" in text
    assert "schemas.definitions.task.properties.owner.$ref" in text


def test_strict_rejects_unknown_properties_unless_a_schema_says_otherwise() -> None:
    loose = RecordSchemas(SECTION["definitions"], strict=False)
    assert loose.failures("user", {**good_user(), "role": "admin"}) == []
    definitions = copy.deepcopy(SECTION["definitions"])
    definitions["user"]["properties"]["profile"]["additionalProperties"] = True
    strict = RecordSchemas(definitions, strict=True)
    user = {**good_user(), "profile": {"name": "Ada", "theme": "dark"}}
    assert strict.failures("user", user) == []  # explicit additionalProperties wins
    failures = strict.failures("user", {**user, "role": "admin"})
    assert [(f.path, f.message) for f in failures] == [
        ("role", "unknown property (the schema is strict)")
    ]


def test_nested_arrays_have_indexed_paths_and_tuples_are_arrays() -> None:
    schemas = RecordSchemas(
        {
            "doc": {
                "type": "object",
                "properties": {
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}}
                },
            }
        }
    )
    assert schemas.failures("doc", {"tags": ("a", "b")}) == []
    (failure,) = schemas.failures("doc", {"tags": ["ok", "toolong"]})
    assert failure.path == "tags[1]" and failure.check == "maxLength"


def test_key_mapping_is_configurable() -> None:
    schemas = RecordSchemas(SECTION["definitions"], keys={"users/*": "user", "*": "task"})
    assert schemas.schema_for("users/7") == "user"
    assert schemas.schema_for("user:7") == "task"  # first match wins: the catch-all
    with pytest.raises(pm.ConfigError, match="unknown schema 'person'"):
        RecordSchemas(SECTION["definitions"], keys={"people/*": "person"})


def test_invalid_schemas_are_listed_with_their_paths() -> None:
    with pytest.raises(pm.ConfigError) as info:
        RecordSchemas({"a": {"type": "strin"}, "b": {"properties": {"x": {"minLength": -1}}}})
    text = str(info.value)
    assert "schemas.definitions.a.type" in text and "schemas.definitions.b" in text
    with pytest.raises(pm.ConfigError, match="unknown key"):
        RecordSchemas.from_config({**SECTION, "strictness": True})


def test_validation_false_keeps_the_schemas_but_checks_nothing() -> None:
    mem = pm.from_config(
        {"memory": {"backend": "memory", "schemas": {**SECTION, "validation": False}}}
    )
    mem.set("user:1", {"id": 1})  # not checked
    assert mem.hooks == ()


def test_from_config_wires_the_schemas_section(tmp_path) -> None:
    config = copy.deepcopy(TUTORIAL)
    config["memory"].update({"backend": "sqlite", "location": str(tmp_path / "m.db")})
    mem = pm.from_config(config)
    mem.set("user:1", good_user())
    with pytest.raises(pm.ValidationError) as info:
        mem.set("user:2", {**good_user(), "email": "nope"})
    assert info.value.paths == ["email"]
    spaces = pm.from_config(
        {
            "memory": {
                "schemas": SECTION,
                "namespaces": {
                    "a": {"backend": "memory"},
                    "b": {"backend": "memory", "schemas": {"definitions": {"x": {}}}},
                },
            }
        }
    )
    with pytest.raises(pm.ValidationError):
        spaces["a"].set("user:1", {})  # inherits the top-level schemas
    spaces["b"].set("user:1", {})  # has its own


def test_schema_hook_can_check_on_load(open_mem) -> None:
    raw = open_mem("sqlite")
    raw.set("user:old", {"id": "legacy"})
    checked = open_mem("sqlite", hooks=[SchemaHook(SECTION, on_load=True)])
    with pytest.raises(pm.ValidationError) as info:
        checked.get("user:old")
    assert set(info.value.paths) == {"id", "email", "createdAt"}
    assert open_mem("sqlite", hooks=[SchemaHook(SECTION)]).get("user:old") == {"id": "legacy"}

"""Record schemas: the tutorial's ``schemas.definitions`` (JSON Schema), checked per key pattern.

The definitions live in one document (``{"definitions": {...}}``), so references written as
in the tutorial resolve: ``{"$ref": "#/definitions/user/properties/id"}``. Only references
inside that document are allowed (no network fetches); a reference that points nowhere is
a :class:`~prefect_memory.errors.ConfigError` when the schemas are built, not a surprise at
the first ``set``. Schemas follow JSON Schema 2020-12 unless a definition names another
draft with ``$schema``; formats are checked strictly (see :mod:`.formats`).

Keys map to definitions by glob: by default ``"<name>:*"`` for every definition (``user:42``
is a ``user``); give ``keys={"users/*": "user"}`` for another layout. The first matching
pattern wins; keys that match none are not checked (add ``"*": "name"`` to require one).

``strict=True`` rejects unknown properties: every object schema that declares
``properties`` and says nothing about ``additionalProperties`` gets
``additionalProperties: false`` (nested objects too). An explicit ``additionalProperties``
wins; objects assembled with ``allOf`` should set it themselves.

Values are checked as JSON: datetimes must be ISO strings, tuples count as arrays.

Example:
    >>> schemas = RecordSchemas({
    ...     "user": {"type": "object", "required": ["id", "email"],
    ...              "properties": {"id": {"type": "string", "format": "uuid"},
    ...                             "email": {"type": "string", "format": "email"}}},
    ...     "task": {"type": "object", "required": ["title"],
    ...              "properties": {"title": {"type": "string", "maxLength": 5},
    ...                             "assignedTo": {"$ref": "#/definitions/user/properties/id"}}},
    ... }, strict=True)
    >>> schemas.schema_for("task:1"), schemas.schema_for("note:1")
    ('task', None)
    >>> schemas.validate("task:1", {"title": "too long", "assignedTo": "nope", "extra": 1})
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ValidationError: task:1 does not match schema 'task' (3 failures):
      assignedTo: format: 'nope' is not a 'uuid'
      extra: additionalProperties: unknown property (the schema is strict)
      title: maxLength: 'too long' is too long
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as JsonSchemaError

from ..errors import ConfigError, ValidationError, ValidationFailure
from ..keys import glob_match
from .formats import format_checker, require_format_packages

_MAP_KEYWORDS = ("properties", "patternProperties", "definitions", "$defs", "dependentSchemas")
_ONE_KEYWORDS = ("additionalProperties", "unevaluatedProperties", "items", "contains", "not",
                 "if", "then", "else", "propertyNames", "unevaluatedItems")  # fmt: skip
_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SECTION_KEYS = {"validation", "strict", "definitions", "keys"}


class RecordSchemas:
    """JSON Schemas of records by key pattern.

    Args:
        definitions: Schema per name (the tutorial's ``schemas.definitions``).
        keys: Key glob -> definition name; default ``{"<name>:*": name}`` per definition.
        strict: Reject properties a schema does not declare (see the module docstring).
        validation: Whether hooks built from these schemas check anything (the tutorial's
            ``"validation": true``); the schemas are checked for errors either way.

    Raises:
        ConfigError: An invalid schema, an unknown name in ``keys``, or a ``$ref`` that
            points nowhere, each with its path.
        MissingDependencyError: A format is used whose checker package is not installed.
    """

    def __init__(
        self,
        definitions: Mapping[str, Mapping[str, Any]],
        *,
        keys: Mapping[str, str] | None = None,
        strict: bool = False,
        validation: bool = True,
    ) -> None:
        problems: list[str] = []
        if not isinstance(definitions, Mapping) or not definitions:
            raise ConfigError("schemas.definitions: must be a non-empty object of schemas")
        self.strict = bool(strict)
        self.validation = bool(validation)
        self.definitions: dict[str, Any] = copy.deepcopy(dict(definitions))
        if self.strict:
            for schema in self.definitions.values():
                _close_objects(schema)
        self.keys: dict[str, str] = (
            dict(keys) if keys is not None else {f"{name}:*": name for name in self.definitions}
        )
        for pattern, name in self.keys.items():
            if name not in self.definitions:
                problems.append(
                    f"schemas.keys.{pattern}: unknown schema {name!r} "
                    f"(definitions: {', '.join(self.definitions)})"
                )
        root = {"definitions": self.definitions}
        self._validators: dict[str, Any] = {}
        formats: set[str] = set()
        for name, schema in self.definitions.items():
            where = f"schemas.definitions.{name}"
            if not isinstance(schema, Mapping):
                problems.append(f"{where}: must be an object (a JSON Schema)")
                continue
            cls = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
            try:
                cls.check_schema(schema)
            except SchemaError as err:
                at = "".join(f".{p}" for p in err.absolute_path)
                problems.append(f"{where}{at}: invalid schema: {err.message}")
                continue
            for path, node in _walk(schema, where):
                ref = node.get("$ref")
                if isinstance(ref, str) and not _resolves(root, ref):
                    problems.append(f"{path}.$ref: {ref!r} points nowhere in the definitions")
                if isinstance(node.get("format"), str):
                    formats.add(node["format"])
            types = cls.TYPE_CHECKER.redefine(
                "array", lambda _checker, value: isinstance(value, (list, tuple))
            )
            validator_cls = jsonschema.validators.extend(cls, type_checker=types)
            document = {**root, "$ref": f"#/definitions/{_escape(name)}"}
            self._validators[name] = validator_cls(document, format_checker=format_checker())
        if problems:
            raise ConfigError("invalid schemas:\n  " + "\n  ".join(problems))
        require_format_packages(formats)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> RecordSchemas:
        """Build from the tutorial's ``schemas`` section (``validation``, ``strict``,
        ``definitions``, and ``keys`` for the key mapping)."""
        if not isinstance(section, Mapping):
            raise ConfigError("schemas: must be an object")
        unknown = sorted(set(section) - _SECTION_KEYS)
        if unknown:
            raise ConfigError(
                "invalid schemas:\n  " + "\n  ".join(
                    f"schemas.{k}: unknown key (allowed: {', '.join(sorted(_SECTION_KEYS))})"
                    for k in unknown
                )
            )  # fmt: skip
        return cls(
            section.get("definitions") or {},
            keys=section.get("keys"),
            strict=bool(section.get("strict", False)),
            validation=bool(section.get("validation", True)),
        )

    def __repr__(self) -> str:
        return f"RecordSchemas({list(self.definitions)}, keys={self.keys}, strict={self.strict})"

    def schema_for(self, key: str) -> str | None:
        """The definition name that ``key`` maps to (``None`` when no pattern matches)."""
        for pattern, name in self.keys.items():
            if glob_match(key, pattern):
                return name
        return None

    def failures(self, name: str, value: Any) -> list[ValidationFailure]:
        """Every failure of ``value`` against the definition ``name`` (empty when valid)."""
        validator = self._validators[name]
        out: dict[tuple[str, str], ValidationFailure] = {}
        for error in validator.iter_errors(value):
            for failure in self._explain(error):
                out.setdefault((failure.path, failure.check), failure)
        return [out[k] for k in sorted(out)]

    def validate(self, key: str, value: Any) -> None:
        """Raise :class:`ValidationError` (naming every failing path) unless ``value`` fits
        the schema of ``key``; keys without a schema pass."""
        name = self.schema_for(key)
        if name is None:
            return
        failures = self.failures(name, value)
        if failures:
            raise ValidationError(failures, key=key, schema=name)

    def _explain(self, error: JsonSchemaError) -> Iterator[ValidationFailure]:
        path = _path(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, Mapping):
            for prop in error.validator_value:
                if prop not in error.instance:
                    yield ValidationFailure(
                        _join(path, prop), "required", "required property missing"
                    )
            return
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = set(error.schema.get("properties", {}))
            patterns = list(error.schema.get("patternProperties", {}))
            for prop in error.instance:
                if prop not in known and not any(re.search(p, prop) for p in patterns):
                    why = "the schema is strict" if self.strict else "not allowed by the schema"
                    yield ValidationFailure(
                        _join(path, prop), "additionalProperties", f"unknown property ({why})"
                    )
            return
        yield ValidationFailure(path, str(error.validator), error.message)


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(path: str, prop: str) -> str:
    return f"{path}.{prop}" if path else str(prop)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _resolves(root: Mapping[str, Any], ref: str) -> bool:
    if not ref.startswith("#"):
        return False  # only references inside the definitions (no network)
    node: Any = root
    for raw in filter(None, ref[1:].split("/")):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _subschemas(schema: Mapping[str, Any], where: str) -> Iterator[tuple[str, Any]]:
    for keyword in _MAP_KEYWORDS:
        children = schema.get(keyword)
        if isinstance(children, Mapping):
            for name, child in children.items():
                yield f"{where}.{keyword}.{name}", child
    for keyword in _ONE_KEYWORDS:
        if isinstance(schema.get(keyword), Mapping):
            yield f"{where}.{keyword}", schema[keyword]
    for keyword in _LIST_KEYWORDS:
        children = schema.get(keyword)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield f"{where}.{keyword}[{i}]", child


def _walk(schema: Any, where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(schema, Mapping):
        return
    yield where, schema
    for path, child in _subschemas(schema, where):
        yield from _walk(child, path)


def _close_objects(schema: Any) -> None:
    for _, node in _walk(schema, ""):
        if (
            isinstance(node, dict) and "properties" in node
            and "additionalProperties" not in node and "unevaluatedProperties" not in node
        ):  # fmt: skip
            node["additionalProperties"] = False

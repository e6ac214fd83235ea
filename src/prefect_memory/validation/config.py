"""Hooks from the tutorial's config shapes: ``hooks: {beforeSave: [...], afterLoad: [...]}``.

Names and the hooks they install (one hook object per kind, whichever list names it):

=====================  ==========================================================
``validate``           :class:`~.hooks.SchemaHook` (``schemas=``); in ``afterLoad`` too:
                       records are checked on load as well
``encrypt``/``decrypt`` :class:`~.hooks.EncryptionHook` (``key=`` or ``secret_block=``);
                       either name installs it, and it both encrypts and decrypts
``transform``/``migrate`` :class:`~.hooks.MigrationHook` (``migrations=``: ``{1: f, ...}``
                       or a ready ``MigrationHook``)
any other name         a hook you pass in ``custom={"name": hook}`` (also overrides the above)
=====================  ==========================================================

Order: value hooks run on save in ``beforeSave`` order; hooks named only in
``afterLoad`` run on load in that order, before the save hooks (which then run in
reverse). Byte hooks (encryption) always run last on save and first on load, so
``afterLoad: ['decrypt', 'transform']`` decrypts before it migrates, as written.

Example:
    >>> from prefect_memory.validation import generate_key
    >>> hooks = hooks_from_config(
    ...     {"beforeSave": ["validate", "encrypt"], "afterLoad": ["decrypt", "transform"]},
    ...     schemas={"definitions": {"user": {"type": "object", "required": ["id"]}}},
    ...     key=generate_key(), migrations={1: lambda record: record})
    >>> [type(h).__name__ for h in hooks]
    ['SchemaHook', 'EncryptionHook', 'MigrationHook']
    >>> hooks_from_config({"beforeSave": ["validate", "compress"]})
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ConfigError: invalid hooks:
      hooks.beforeSave[0]: 'validate' needs schemas (schemas=... or a 'schemas' section)
      hooks.beforeSave[1]: unknown hook 'compress' (known: decrypt, encrypt, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..memory import Hook
from .hooks import EncryptionHook, MigrationHook, SchemaHook
from .records import RecordSchemas

_LISTS = {"beforeSave": "save", "before_save": "save", "afterLoad": "load", "after_load": "load"}
_KINDS = {"validate": "validate", "encrypt": "crypt", "decrypt": "crypt",
          "transform": "migrate", "migrate": "migrate"}  # fmt: skip


def hooks_from_config(
    spec: Mapping[str, Any],
    *,
    schemas: RecordSchemas | Mapping[str, Any] | None = None,
    key: Any = None,
    secret_block: str | None = None,
    migrations: MigrationHook | Mapping[int, Any] | None = None,
    custom: Mapping[str, Hook] | None = None,
    path: str = "hooks",
) -> list[Hook]:
    """Build the hooks a ``{"beforeSave": [...], "afterLoad": [...]}`` section names.

    Args:
        spec: The section.
        schemas: For ``validate``: record schemas or the tutorial's ``schemas`` section.
        key: For ``encrypt``/``decrypt``: the key (see :class:`~.hooks.EncryptionHook`).
        secret_block: For ``encrypt``/``decrypt``: a Prefect Secret block holding the key.
        migrations: For ``transform``/``migrate``: ``{version: upgrade}`` or a ``MigrationHook``.
        custom: Hooks by name, for other names (or to replace the built-in ones).
        path: Where the section sits in the config (for messages).

    Returns:
        The hooks, ordered for ``Memory(hooks=...)``.

    Raises:
        ConfigError: Listing every unknown name and missing ingredient with its path.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: must be an object with beforeSave/afterLoad lists")
    problems: list[str] = []
    for name in spec:
        if name not in _LISTS:
            problems.append(f"{path}.{name}: unknown key (allowed: beforeSave, afterLoad)")
    named: dict[str, list[str]] = {"save": [], "load": []}
    where: dict[str, str] = {}
    for list_name, phase in _LISTS.items():
        names = spec.get(list_name, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(f"{path}.{list_name}: must be a list of hook names")
            continue
        for i, name in enumerate(names):
            named[phase].append(name)
            where.setdefault(name, f"{path}.{list_name}[{i}]")
    custom = dict(custom or {})
    built: dict[str, Hook] = {}  # by kind (or custom name)
    ingredients = {
        "schemas": schemas,
        "key": key,
        "secret_block": secret_block,
        "migrations": migrations,
    }
    for name in dict.fromkeys(named["save"] + named["load"]):
        kind = name if name in custom else _KINDS.get(name)
        if kind is None:
            known = ", ".join(sorted(_KINDS))
            problems.append(
                f"{where[name]}: unknown hook {name!r} (known: {known}; pass others in custom=)"
            )
        elif kind not in built:
            hook = (
                custom[name]
                if name in custom
                else _builtin(kind, name, ingredients, named, where, problems)
            )
            if hook is not None:
                built[kind] = hook
    if problems:
        raise ConfigError("invalid hooks:\n  " + "\n  ".join(problems))

    def hooks_of(names: list[str]) -> list[Hook]:
        out: list[Hook] = []
        for name in names:
            hook = built[name if name in custom else _KINDS[name]]
            if hook not in out:
                out.append(hook)
        return out

    save = hooks_of(named["save"])
    load_only = [h for h in hooks_of(named["load"]) if h not in save]
    return save + list(reversed(load_only))


def _builtin(
    kind: str,
    name: str,
    ingredients: Mapping[str, Any],
    named: Mapping[str, list[str]],
    where: Mapping[str, str],
    problems: list[str],
) -> Hook | None:
    try:
        if kind == "validate":
            schemas = ingredients["schemas"]
            if schemas is None:
                problems.append(
                    f"{where[name]}: 'validate' needs schemas (schemas=... or a 'schemas' section)"
                )
                return None
            return SchemaHook(schemas, on_load="validate" in named["load"])
        if kind == "crypt":
            if ingredients["key"] is None and ingredients["secret_block"] is None:
                problems.append(
                    f"{where[name]}: {name!r} needs a key (key=... or secret_block=...)"
                )
                return None
            return EncryptionHook(ingredients["key"], secret_block=ingredients["secret_block"])
        migrations = ingredients["migrations"]
        if migrations is None:
            problems.append(f"{where[name]}: {name!r} needs migrations ({{version: upgrade}})")
            return None
        return migrations if isinstance(migrations, MigrationHook) else MigrationHook(migrations)
    except ConfigError as err:
        problems.append(f"{where[name]}: {err}")
        return None


def read_schemas(section: Any, *, path: str = "schemas") -> tuple[RecordSchemas | None, list[str]]:
    """Read a config's ``schemas`` section: its :class:`~.records.RecordSchemas`, or ``None``
    and every problem, each starting with its path in the config (``path`` replaces the
    leading ``schemas``). The config reader (:mod:`prefect_memory.config.reader`) reads the
    section through this.

    Example:
        >>> read_schemas({"definitions": {"a": {"type": "strin"}}}, path="memory.schemas")
        (None, ["memory.schemas.definitions.a.type: invalid schema: 'strin' is not valid ..."])
    """
    try:
        return RecordSchemas.from_config(section), []
    except ConfigError as err:
        lines = str(err).splitlines()
        if len(lines) == 1:
            only = lines[0]
            lines = ["invalid schemas:", only if only.startswith("schemas") else f"schemas: {only}"]
        return None, [path + line.strip().removeprefix("schemas") for line in lines[1:]]
    except ImportError as err:
        return None, [f"{path}: {err}"]


def schema_hook_from_config(section: Any, *, path: str = "schemas") -> SchemaHook | None:
    """The :class:`~.hooks.SchemaHook` a config's ``schemas`` section asks for.

    ``None`` when the section turns validation off (its schemas are still checked).

    Raises:
        ConfigError: ``"invalid schemas:"`` then one line per problem, each starting with
            its path in the config (``path`` replaces the leading ``schemas``).
    """
    schemas, problems = read_schemas(section, path=path)
    if schemas is None:
        raise ConfigError("invalid schemas:\n  " + "\n  ".join(problems))
    return SchemaHook(schemas) if schemas.validation else None

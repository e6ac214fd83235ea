"""The one reader of the tutorial's JSON: a config in, typed specs and every problem out.

:func:`read_config` reads a config once into a :data:`~.specs.ConfigSpec` (a single store,
a hybrid, tiers, or named parts) and the list of its problems, each with its path
(``memory.tiers[1].ttl: ...``); :func:`parse_config` raises them as one
:class:`~prefect_memory.ConfigError`. Every shape and value check lives here, once: keys
applied or refused, memory settings, stores and their URLs, the Parquet shape, a hybrid's
``primary``/``secondary``/``sync``, tiers and their migration rules, the sections of a
namespaces config (``schemas`` checked by :mod:`prefect_memory.validation`, ``streams`` and
``processing`` by :mod:`prefect_memory.analytics`). Nothing is opened:
:mod:`.build` opens the stores of a spec, :mod:`prefect_memory.blocks.from_config` plans
blocks from it.

Example:
    >>> spec, problems = read_config({"memory": {"backend": "hybrid", "tiers": [
    ...     {"name": "hot", "backend": "memory", "ttl": "1h"},
    ...     {"name": "cold", "backend": "sqlite", "location": "/data/cold.db"}],
    ...     "migration": {"rules": [{"from": "hot", "to": "cold", "condition": "age > 60"}]}}})
    >>> spec.type, [(t.name, t.store.url, t.ttl) for t in spec.tiers], problems
    ('tiered', [('hot', 'memory://', 3600.0), ('cold', 'sqlite:////data/cold.db', None)], [])
    >>> spec.rules[0].path
    'memory.migration.rules[0]'
    >>> read_config({"backend": "hybrid", "primary": "redis", "sync": {"interval": -1}})
    (None, ["memory: a hybrid memory needs 'secondary' (or 'tiers')", 'memory.sync.interval: ...'])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from ..errors import ConfigError, PrefectMemoryError
from ..keys import validate_namespace
from ..units import parse_duration, parse_size
from . import specs
from .checks import Checks
from .document import MAX_NUMBER, config_error, describe, load_config
from .specs import SyncSpec
from .tables import (
    APPLIED_SETTINGS,
    HYBRID_KEYS,
    MEMORY_KEYS,
    PART_KEYS,
    RULE_KEYS,
    SECTIONS_KEYS,
    TIER_KEYS,
    TIERED_KEYS,
)

__all__ = ["ConfigReader", "SyncSpec", "parse_config", "read_config"]
_EVERYTHING = PART_KEYS | MEMORY_KEYS | HYBRID_KEYS | TIERED_KEYS | {"schemas"}


class ConfigReader(Checks):
    """Reads the shapes of one ``memory`` section into specs, every problem with its path.

    A method returns ``None`` for a shape it could not read (its problems are recorded).
    Its arguments are those of :class:`~.checks.Checks`.
    """

    def __init__(self, connections: Mapping[str, str], base_dir: Path) -> None:
        super().__init__(connections, base_dir)
        #: Whether each ``schemas`` section read (by path) could be applied.
        self.schemas_read: dict[str, bool] = {}

    def read(self, spec: Mapping[str, Any]) -> specs.ConfigSpec | None:
        """The spec of a whole ``memory`` section (``None`` when it has problems)."""
        parts = self.named_parts(spec)
        if parts is None:
            memory = self.memory("memory", spec, "default")
            return None if self.problems else memory
        named = []
        for name, path, part in parts:
            inherited = spec if "schemas" in spec and "schemas" not in part else None
            memory = self.memory(path, part, name, inherited)
            if memory is not None:
                applied = {k: part[k] for k in APPLIED_SETTINGS if k in part}
                named.append(specs.NamedPart(name=name, path=path, memory=memory, applied=applied))
        if self.problems:
            return None
        extras = {k: dict(spec[k]) for k in ("streams", "processing") if spec.get(k) is not None}
        return specs.NamespacesSpec(parts=named, **extras)

    def memory(
        self, path: str, spec: Mapping[str, Any], namespace: str,
        inherited: Mapping[str, Any] | None = None,
    ) -> specs.MemorySpec | None:  # fmt: skip
        """One memory (a single store, a hybrid or tiers) with its record schemas
        (``inherited``: the top of a namespaces config, whose ``schemas`` apply here)."""
        kind = self.kind(path, spec)
        memory: specs.MemorySpec | None
        if kind is None:  # still report the other problems of the part
            self.check_keys(path, spec, _EVERYTHING)
            self.settings(path, spec, None)
            memory = None
        elif kind == "hybrid":
            memory = self.hybrid(path, spec, namespace)
        else:
            self.check_keys(path, spec, PART_KEYS | MEMORY_KEYS | {"schemas"})
            settings = self.settings(path, spec, namespace)
            store = self.store(path, kind, spec)
            memory = None if store is None else specs.SingleSpec(
                path=path, settings=settings, store=store
            )  # fmt: skip
        schemas = self.schemas(path, spec, inherited)
        if memory is None or schemas is None:
            return memory
        return memory.model_copy(update={"schemas": schemas})

    def schemas(
        self, path: str, spec: Mapping[str, Any], inherited: Mapping[str, Any] | None
    ) -> specs.SchemasSpec | None:
        """The ``schemas`` section a memory checks records with (its own or the inherited,
        whose problems are listed once however many parts inherit it)."""
        if "schemas" in spec:
            section = specs.SchemasSpec(path=f"{path}.schemas", section=spec["schemas"])
        elif inherited is not None and "schemas" in inherited:
            section = specs.SchemasSpec(path="memory.schemas", section=inherited["schemas"])
        else:
            return None
        if section.section is None:
            return None
        if section.path not in self.schemas_read:
            from ..validation.config import read_schemas

            schemas, problems = read_schemas(section.section, path=section.path)
            self.problems.extend(problems)
            self.schemas_read[section.path] = schemas is not None
        return section if self.schemas_read[section.path] else None

    def hybrid(
        self, path: str, spec: Mapping[str, Any], namespace: str = "default"
    ) -> specs.HybridSpec | specs.TieredSpec | None:
        """A hybrid memory, or tiers when the spec has ``tiers``."""
        settings = self.settings(path, spec, namespace)
        owner = f"the memory ({path})"
        if "tiers" in spec:
            self.check_keys(path, spec, TIERED_KEYS | MEMORY_KEYS | {"schemas"})
            raw_tiers = self.tier_list(path, spec)
            tiers = [self.tier(f"{path}.tiers[{i}]", raw, owner) for i, raw in enumerate(raw_tiers)]
            names = [raw.get("name") for raw in raw_tiers if isinstance(raw, Mapping)]
            for i, tier_name in enumerate(names):
                if isinstance(tier_name, str) and names.index(tier_name) != i:
                    self.problem(f"{path}.tiers", f"duplicate tier name {describe(tier_name)}")
            rules = self.rule_specs(path, spec, [n for n in names if isinstance(n, str)])
            promote = spec.get("promote", "home")
            if promote not in ("home", "first", "never"):
                self.problem(f"{path}.promote", f"must be 'home', 'first' or 'never', got "
                             f"{describe(promote)}")  # fmt: skip
            if not tiers or rules is None or promote not in ("home", "first", "never"):
                return None
            if any(tier is None for tier in tiers):
                return None
            return specs.TieredSpec(path=path, settings=settings, tiers=tiers, rules=rules,
                              promote=promote)  # fmt: skip
        self.check_keys(path, spec, HYBRID_KEYS | MEMORY_KEYS | {"schemas"})
        parts: list[specs.PartSpec | None] = []
        for role in ("primary", "secondary"):
            if role not in spec:
                self.problem(path, f"a hybrid memory needs '{role}' (or 'tiers')")
                parts.append(None)
            else:
                parts.append(self.backend(f"{path}.{role}", spec[role], owner))
        sync = self.sync(path, spec)
        journal = spec.get("journal")
        if journal is not None and (not isinstance(journal, str) or not journal):
            self.problem(f"{path}.journal", f"must be a file path, got {describe(journal)}")
            return None
        journal_sync = spec.get("journal_sync", "full")
        if journal_sync not in get_args(specs.JournalSync):
            self.problem(f"{path}.journal_sync", f"must be 'full' or 'normal', got "
                         f"{describe(journal_sync)}")  # fmt: skip
            return None
        if parts[0] is None or parts[1] is None:
            return None
        return specs.HybridSpec(path=path, settings=settings, primary=parts[0], secondary=parts[1],
                          sync=sync, journal=journal, journal_sync=journal_sync)  # fmt: skip

    def backend(
        self, path: str, spec: Any, owner: str, tier: bool = False
    ) -> specs.StoreSpec | specs.HybridSpec | specs.TieredSpec | None:
        """The store of a part (``owner``: the memory its memory settings belong to)."""
        part = self.part(path, spec)
        if part is None:
            return None
        kind, spec = part
        if kind == "hybrid":
            if tier:
                self.problem(path, "a tier is one store: a hybrid cannot be a tier")
                return None
            for key in sorted(set(spec) & (MEMORY_KEYS | {"schemas"})):  # only its stores count
                self.problem(f"{path}.{key}", f"not a setting of a part: set it on {owner}")
            return self.hybrid(path, spec)
        self.check_keys(path, spec, PART_KEYS | (TIER_KEYS if tier else set()), owner)
        return self.store(path, kind, spec)

    def tier_list(self, path: str, spec: Mapping[str, Any]) -> list[Any]:
        """The raw ``tiers`` of a tiered memory (``[]`` and a problem when not a list)."""
        raw_tiers = spec.get("tiers")
        if not isinstance(raw_tiers, list) or not raw_tiers:
            self.problem(f"{path}.tiers", "must be a non-empty list of tiers")
            return []
        return raw_tiers

    def tier(self, path: str, raw: Any, owner: str) -> specs.TierSpec | None:
        """One tier of a tiered memory."""
        if not isinstance(raw, Mapping):
            self.problem(path, "a tier must be an object")
            return None
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            self.problem(f"{path}.name", "each tier needs a name")
        patterns = raw.get("patterns", [])
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            self.problem(f"{path}.patterns", "must be a list of key globs")
            patterns = []
        values: dict[str, Any] = {}
        for key, parse, target in (
            ("ttl", parse_duration, "ttl"),
            ("maxSize", parse_size, "max_bytes"),
        ):
            try:
                values[target] = parse(raw.get(key), name=key)
            except ConfigError as err:
                self.problem(f"{path}.{key}", str(err))
        max_entries = raw.get("maxEntries")
        if max_entries is not None and (
            not isinstance(max_entries, int) or isinstance(max_entries, bool)
            or not 1 <= max_entries <= MAX_NUMBER
        ):  # fmt: skip
            self.problem(
                f"{path}.maxEntries", f"must be a positive integer, got {describe(max_entries)}"
            )
            max_entries = False
        store = self.backend(path, raw, owner, tier=True)
        if not isinstance(store, specs.StoreSpec) or not isinstance(name, str) or not name:
            return None
        if len(values) < 2 or max_entries is False:  # a limit could not be read
            return None
        return specs.TierSpec(path=path, name=name, store=store, max_size=raw.get("maxSize"),
                        max_entries=max_entries, patterns=tuple(patterns), **values)  # fmt: skip

    def rule_specs(
        self, path: str, spec: Mapping[str, Any], tiers: list[str]
    ) -> list[specs.RuleSpec] | None:
        """The migration rules, every problem of every rule reported (``None``: problems)."""
        from ..tiers import parse_rule

        before = len(self.problems)
        migration = self.mapping(f"{path}.migration", spec.get("migration"))
        self.check_keys(f"{path}.migration", migration, {"rules"})
        raw_rules = migration.get("rules", [])
        if not isinstance(raw_rules, list):
            self.problem(f"{path}.migration.rules", "must be a list of rules")
            return None
        rules = []
        for i, raw in enumerate(raw_rules):
            where = f"{path}.migration.rules[{i}]"
            if not isinstance(raw, Mapping):
                self.problem(where, f"expected an object, got {type(raw).__name__}")
                continue
            self.check_keys(where, raw, RULE_KEYS)
            for key in sorted(RULE_KEYS - set(raw)):
                self.problem(where, f"missing '{key}'")
            ends = [raw.get("from"), raw.get("to")]
            for key, value in zip(("from", "to"), ends, strict=True):
                if key in raw and value not in tiers:
                    self.problem(f"{where}.{key}", f"unknown tier {describe(value)} "
                                 f"(tiers: {', '.join(tiers)})")  # fmt: skip
            if "from" in raw and raw.get("from") == raw.get("to"):
                self.problem(where, "from and to are the same tier")
            if "condition" not in raw:
                continue
            try:
                parse_rule(raw["condition"])
            except ConfigError as err:
                self.problem(f"{where}.condition", str(err))
                continue
            if len(self.problems) == before:
                rules.append(specs.RuleSpec(path=where, source=ends[0], target=ends[1],
                                      condition=raw["condition"]))  # fmt: skip
        return None if len(self.problems) > before else rules

    def rules(self, path: str, spec: Mapping[str, Any], tiers: list[str]) -> list[Any]:
        """The :class:`~prefect_memory.tiers.MigrationRule` objects of the readable rules."""
        return [rule.migration_rule() for rule in self.rule_specs(path, spec, tiers) or []]

    def named_parts(
        self, spec: Mapping[str, Any]
    ) -> list[tuple[str, str, Mapping[str, Any]]] | None:
        """``(name, path, spec)`` of every namespace-like part, or ``None`` for a single memory.

        ``namespaces`` and ``datasets`` hold parts by name; ``compute.cache`` holds caches
        (``{"predictions": {"ttl": 3600}}``) on ``compute.backend`` (SQLite); ``streams`` and
        ``processing`` are checked by the analytics module. The top's ``backend``, ``ttl``,
        ``refresh``, ``compression``, ``serialization`` and ``pickle`` are defaults of the parts.
        """
        sections = [k for k in ("namespaces", "datasets", "compute", "streams", "processing")
                    if k in spec]  # fmt: skip
        if not sections:
            return None
        self.check_keys("memory", spec, SECTIONS_KEYS)
        defaults = {k: spec[k] for k in MEMORY_KEYS - {"namespace"} if k in spec}
        kind = spec.get("type", spec.get("backend"))
        parts: list[tuple[str, str, Mapping[str, Any]]] = []
        for section in ("namespaces", "datasets"):
            block = spec.get(section)
            if block is None:
                continue
            if not isinstance(block, Mapping) or not block:
                self.problem(f"memory.{section}", "must be a non-empty object")
                continue
            for name, part in block.items():
                if not isinstance(part, Mapping):
                    self.problem(f"memory.{section}.{name}", "must be an object")
                    continue
                if kind is not None and "type" not in part and "backend" not in part:
                    part = {"backend": kind, **part}
                parts.append((name, f"memory.{section}.{name}", {**defaults, **part}))
        compute = self.mapping("memory.compute", spec.get("compute"))
        self.check_keys("memory.compute", compute, {"backend", "cache"})
        caches = self.mapping("memory.compute.cache", compute.get("cache"))
        default = compute.get("backend", "sqlite")
        for name, part in caches.items():
            if not isinstance(part, Mapping):
                self.problem(f"memory.compute.cache.{name}", "must be an object")
            else:
                part = {"backend": default, **defaults, **part}
                parts.append((name, f"memory.compute.cache.{name}", part))
        names = [name for name, _, _ in parts]
        for name in sorted({n for n in names if names.count(n) > 1}):
            self.problem("memory", f"the name {name!r} is used by more than one part")
        for name, part_path, _ in parts:
            try:
                validate_namespace(name)
            except PrefectMemoryError as err:
                self.problem(part_path, f"the name is the namespace: {err}")
        if "streams" in spec or "processing" in spec:
            from ..analytics.config import check_sections

            self.problems.extend(check_sections(spec.get("streams"), spec.get("processing")))
        return parts


def read_config(
    source: Mapping[str, Any] | str | os.PathLike[str],
    connections: Mapping[str, str] | None = None,
) -> tuple[specs.ConfigSpec | None, list[str]]:
    """Read a config (dict or JSON file) into its spec, and list its problems.

    Args:
        source: The config as a dict or the path of a JSON file (relative paths in it are
            relative to the file's folder; for a dict, to the working folder).
        connections: URL per backend name for parts that give no ``connection``.

    Returns:
        ``(spec, [])``, or ``(None, problems)``: each problem is ``"path: message"``.

    Raises:
        ConfigError: The document cannot be read, or is past the limits of
            :func:`~prefect_memory.config.load_config`.
    """
    section, base = load_config(source)
    reader = ConfigReader(connections or {}, base)
    spec = reader.read(section)
    return (None, reader.problems) if reader.problems else (spec, [])


def parse_config(
    source: Mapping[str, Any] | str | os.PathLike[str],
    connections: Mapping[str, str] | None = None,
) -> specs.ConfigSpec:
    """The spec of a config, or one :class:`ConfigError` listing every problem with its path.

    Example:
        >>> parse_config({"namespaces": {"s": {"backend": "memory", "ttl": 5}}}).parts[0].memory
        SingleSpec(type='single', path='memory.namespaces.s', settings=MemorySettings(...), ...)
    """
    spec, problems = read_config(source, connections)
    if spec is None:
        raise config_error(problems)
    return spec

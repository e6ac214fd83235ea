"""Build memories from the tutorial's JSON shapes: ``pm.from_config(dict | path)``.

Supported shapes (all under an optional top-level ``"memory"`` key):

- one store: ``{"backend": "redis", "connection": "redis://...", "ttl": 60}``;
- hybrid: ``{"backend": "hybrid", "primary": {...}, "secondary": {...}, "sync": {...}}``;
- tiers: ``{"backend": "hybrid", "tiers": [...], "migration": {"rules": [...]}}``;
- namespaces: ``{"namespaces": {"sessions": {"backend": "redis", "ttl": 1800}, ...}}``;
- record schemas: ``{"schemas": {"validation": true, "strict": true, "definitions": {...}}}``
  (JSON Schema checked on ``set``, see :mod:`prefect_memory.validation.records`; on a
  namespaces config, a top-level ``schemas`` applies to namespaces without their own).

A part names its store with ``type``/``backend`` and where it lives with ``connection``
(a URL), ``location`` (a path or URL) and ``storage_options``. Stores named without a
place use ``connections=`` (or the defaults in :data:`DEFAULT_CONNECTIONS`). Unknown keys,
unknown backends and bad values are collected and raised as one :class:`ConfigError`
listing every problem with its path in the config.

Example:
    >>> import prefect_memory as pm
    >>> mem = pm.from_config({"memory": {"backend": "memory", "ttl": 60, "namespace": "s"}})
    >>> mem.namespace, mem.ttl
    ('s', 60.0)
    >>> pm.from_config({"memory": {"backend": "hybird"}})
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ConfigError: invalid memory config:
      memory.backend: unknown backend 'hybird' (known: ...)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs import Codec
from .errors import ConfigError
from .memory import Memory
from .plugins.base import Backend
from .registry import available_backends, open_backend
from .units import parse_duration, parse_size

#: Where a store named without ``connection``/``location`` lives.
DEFAULT_CONNECTIONS: dict[str, str] = {
    "memory": "memory://",
    "redis": "redis://localhost:6379/0",
    "mongodb": "mongodb://localhost:27017/prefect_memory",
    "sqlite": "sqlite:///.prefect-memory/memory.db",
    "json": "json:///.prefect-memory/memory.json",
    "file": "file://.prefect-memory/files",
}
_ALIASES = {"mongo": "mongodb", "inprocess": "memory", "local": "sqlite", "fs": "file"}
_PART_KEYS = {"type", "backend", "connection", "location", "storage_options", "options"}
_TIER_KEYS = frozenset({"name", "ttl", "maxSize", "maxEntries", "patterns"})
_MEMORY_KEYS = {"namespace", "ttl", "refresh", "compression", "serialization", "pickle", "tags"}
#: Sections of the tutorial that later features read; accepted and kept as they are.
RESERVED_SECTIONS = ("schemas", "streams", "processing", "datasets", "compute", "validators",
                     "hooks", "cache", "persist", "indexes", "versioning", "format",
                     "partitioning", "consistency", "broadcast")  # fmt: skip


@dataclass
class Namespaces(Mapping[str, Memory]):
    """The memories of a ``"namespaces"`` config, by namespace name."""

    memories: dict[str, Memory]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Top-level sections for other modules (``streams``, ``processing``), as written.
    extras: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Memory:
        try:
            return self.memories[name]
        except KeyError:
            raise KeyError(
                f"no namespace {name!r} in the config (has: {', '.join(self)})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.memories)

    def __len__(self) -> int:
        return len(self.memories)


class _Builder:
    def __init__(self, connections: Mapping[str, str], base_dir: Path) -> None:
        self.problems: list[str] = []
        self.connections = {**DEFAULT_CONNECTIONS, **connections}
        self.base_dir = base_dir

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def check_keys(self, path: str, spec: Mapping[str, Any], allowed: set[str]) -> None:
        for key in spec:
            if key not in allowed and key not in RESERVED_SECTIONS:
                self.problem(
                    f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )

    def kind(self, path: str, spec: Mapping[str, Any]) -> str | None:
        raw = spec.get("type", spec.get("backend"))
        if not isinstance(raw, str) or not raw:
            self.problem(path, "needs a 'type' or 'backend' naming the store")
            return None
        name = _ALIASES.get(raw.lower(), raw.lower())
        known = set(available_backends()) | {"hybrid"}
        if name not in known:
            self.problem(
                f"{path}.backend", f"unknown backend {raw!r} (known: {', '.join(sorted(known))})"
            )
            return None
        return name

    def url(self, path: str, kind: str, spec: Mapping[str, Any]) -> str | None:
        connection, location = spec.get("connection"), spec.get("location")
        for name, value in (("connection", connection), ("location", location)):
            if value is not None and not isinstance(value, str):
                self.problem(f"{path}.{name}", f"must be a string, got {type(value).__name__}")
                return None
        place = connection or location
        if place and "://" in place:
            if kind == "parquet" and not place.lower().startswith("parquet"):
                return f"parquet::{place}"  # the archive on s3://..., not an object store
            return place
        if place:
            local = Path(os.path.expanduser(place))
            if not local.is_absolute():
                local = self.base_dir / local
            local = Path(os.path.normpath(local))
            if kind in ("json", "sqlite", "parquet"):
                return f"{kind}:///{local}"
            if kind == "file":
                return f"file://{local}"
            self.problem(f"{path}.connection", f"a {kind} store needs a URL, got {place!r}")
            return None
        if kind in self.connections:
            return self.connections[kind]
        self.problem(path, f"a {kind} store needs 'connection' (e.g. {kind}://...)")
        return None

    def backend(self, path: str, spec: Any, extra: frozenset[str] = frozenset()) -> Backend | None:
        if isinstance(spec, str):  # "primary": "redis"
            spec = {"backend": spec}
        if not isinstance(spec, Mapping):
            self.problem(path, f"expected an object or a backend name, got {type(spec).__name__}")
            return None
        kind = self.kind(path, spec)
        if kind is None:
            return None
        if kind == "hybrid":
            return self.hybrid(path, spec).backend if not self.problems else None
        self.check_keys(path, spec, _PART_KEYS | _MEMORY_KEYS | {"name"} | extra)
        url = self.url(path, kind, spec)
        options = dict(spec.get("options") or {})
        if spec.get("storage_options") is not None:
            options["storage_options"] = spec["storage_options"]
        if url is None:
            return None
        try:
            return open_backend(url, **options)
        except ConfigError as err:
            self.problem(path, str(err))
        return None

    def memory_options(self, path: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "ttl" in spec:
            try:
                out["ttl"] = parse_duration(spec["ttl"], name="ttl")
            except ConfigError as err:
                self.problem(f"{path}.ttl", str(err))
        if "refresh" in spec:
            out["refresh"] = bool(spec["refresh"])
        codec: dict[str, Any] = {}
        if spec.get("compression"):
            codec["compression"] = True
        if spec.get("serialization") not in (None, "msgpack"):
            self.problem(f"{path}.serialization", "only 'msgpack' is supported")
        if spec.get("pickle"):
            codec["pickle"] = True
        if codec:
            out["codec"] = Codec(**codec)
        return out

    def hybrid(self, path: str, spec: Mapping[str, Any], namespace: str = "default") -> Memory:
        from .resilience import HybridMemory
        from .tiers import Tier, TieredMemory

        if "tiers" in spec:
            self.check_keys(
                path, spec, {"backend", "type", "tiers", "migration", "promote"} | _MEMORY_KEYS
            )
            tiers: list[Tier] = []
            raw_tiers = spec["tiers"]
            if not isinstance(raw_tiers, list) or not raw_tiers:
                self.problem(f"{path}.tiers", "must be a non-empty list of tiers")
                raw_tiers = []
            for i, raw in enumerate(raw_tiers):
                tier = self.tier(f"{path}.tiers[{i}]", raw)
                if tier is not None:
                    tiers.append(tier)
            rules = (spec.get("migration") or {}).get("rules", [])
            if self.problems:
                raise self.error()
            try:
                return TieredMemory(
                    tiers, rules, promote=spec.get("promote", "home"),
                    namespace=spec.get("namespace", namespace), **self.memory_options(path, spec),
                )  # fmt: skip
            except ConfigError as err:
                self.problem(path, str(err))
                raise self.error() from err
        self.check_keys(
            path,
            spec,
            {"backend", "type", "primary", "secondary", "sync", "journal"} | _MEMORY_KEYS,
        )
        for part in ("primary", "secondary"):
            if part not in spec:
                self.problem(path, f"a hybrid memory needs '{part}' (or 'tiers')")
        sync = spec.get("sync") or {}
        self.check_keys(f"{path}.sync", sync, {"enabled", "interval", "strategy"})
        strategy = sync.get("strategy", "write-through")
        if strategy not in ("write-through", "write-behind"):
            self.problem(
                f"{path}.sync.strategy",
                f"must be 'write-through' or 'write-behind', got {strategy!r}",
            )
        interval = sync.get("interval", 30000)
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
            self.problem(
                f"{path}.sync.interval", f"must be positive milliseconds, got {interval!r}"
            )
            interval = 30000
        primary = (
            self.backend(f"{path}.primary", spec.get("primary")) if "primary" in spec else None
        )
        secondary = (
            self.backend(f"{path}.secondary", spec.get("secondary"))
            if "secondary" in spec
            else None
        )
        options = self.memory_options(path, spec)
        if self.problems or primary is None or secondary is None:
            raise self.error()
        mem = HybridMemory(
            primary, secondary, strategy=strategy, journal=spec.get("journal"),
            flush_interval=min(float(interval) / 1000.0, 5.0),
            namespace=spec.get("namespace", namespace), **options,
        )  # fmt: skip
        mem.sync_interval = float(interval) / 1000.0 if sync.get("enabled", True) else None
        return mem

    def tier(self, path: str, raw: Any) -> Any:
        from .tiers import Tier

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
        if max_entries is not None and (not isinstance(max_entries, int) or max_entries < 1):
            self.problem(f"{path}.maxEntries", f"must be a positive integer, got {max_entries!r}")
            max_entries = None
        backend = self.backend(path, raw, _TIER_KEYS)
        if backend is None or not isinstance(name, str) or not name:
            return None
        return Tier(name, backend, patterns=tuple(patterns), max_entries=max_entries, **values)

    def error(self) -> ConfigError:
        return ConfigError("invalid memory config:\n  " + "\n  ".join(self.problems))


def load_config(source: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """Read a config (dict or JSON file); return its ``memory`` section and its folder."""
    if isinstance(source, Mapping):
        data, base = dict(source), Path.cwd()
    else:
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(f"config file not found: {path}") from err
        except ValueError as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}") from err
        base = path.resolve().parent
    if not isinstance(data, Mapping):
        raise ConfigError(f"a memory config is a JSON object, got {type(data).__name__}")
    section = data.get("memory", data)
    if not isinstance(section, Mapping):
        raise ConfigError("memory: must be an object")
    unknown = set(data) - {"memory", "maintenance"} if "memory" in data else set()
    if unknown:
        lines = [
            f"{k}: unknown top-level key (expected 'memory', 'maintenance')"
            for k in sorted(unknown)
        ]
        raise ConfigError("invalid memory config:\n  " + "\n  ".join(lines))
    return dict(section), base


def from_config(
    source: Mapping[str, Any] | str | os.PathLike[str],
    *,
    connections: Mapping[str, str] | None = None,
) -> Memory | Namespaces:
    """Build the memory a config describes.

    Args:
        source: The config as a dict or the path of a JSON file.
        connections: URL per backend name for parts that give no ``connection``
            (defaults: :data:`DEFAULT_CONNECTIONS`).

    Returns:
        A :class:`~prefect_memory.Memory` (a ``HybridMemory`` or ``TieredMemory`` for those
        shapes), or :class:`Namespaces` when the config has ``namespaces``, ``datasets``,
        ``compute`` or ``streams`` sections.

    Raises:
        ConfigError: listing every problem with its path in the config.
    """
    spec, base = load_config(source)
    builder = _Builder(connections or {}, base)
    path = "memory"
    groups = _named_parts(builder, spec)
    if groups is None:
        memory = _build_one(builder, path, spec, spec.get("namespace", "default"))
        if builder.problems or memory is None:
            raise builder.error()
        return memory
    builder.check_keys(path, spec, {"backend", "type", "namespaces"} | _MEMORY_KEYS)
    memories: dict[str, Memory] = {}
    settings: dict[str, dict[str, Any]] = {}
    for name, ns_path, ns_spec in groups:
        settings[name] = {k: ns_spec[k] for k in ns_spec if k in RESERVED_SECTIONS}
        memory = _build_one(builder, ns_path, ns_spec, name, inherited=spec)
        if memory is not None:
            memories[name] = memory
    if builder.problems:
        raise builder.error()
    extras = {k: spec[k] for k in ("streams", "processing") if k in spec}
    return Namespaces(memories, settings, extras)


def _named_parts(
    builder: _Builder, spec: Mapping[str, Any]
) -> list[tuple[str, str, Mapping[str, Any]]] | None:
    """``(name, path, spec)`` of every namespace-like part, or ``None`` for a single memory.

    ``namespaces`` and ``datasets`` hold parts by name; ``compute.cache`` holds caches
    (``{"predictions": {"ttl": 3600}}``) on ``compute.backend`` (SQLite); ``streams`` and
    ``processing`` are kept for the analytics module.
    """
    sections = [k for k in ("namespaces", "datasets", "compute", "streams") if k in spec]
    if not sections:
        return None
    parts: list[tuple[str, str, Mapping[str, Any]]] = []
    for section in ("namespaces", "datasets"):
        block = spec.get(section)
        if block is None:
            continue
        if not isinstance(block, Mapping) or not block:
            builder.problem(f"memory.{section}", "must be a non-empty object")
            continue
        for name, part in block.items():
            if not isinstance(part, Mapping):
                builder.problem(f"memory.{section}.{name}", "must be an object")
            else:
                parts.append((name, f"memory.{section}.{name}", part))
    caches = (spec.get("compute") or {}).get("cache", {}) if "compute" in spec else {}
    if not isinstance(caches, Mapping):
        builder.problem("memory.compute.cache", "must be an object")
        caches = {}
    default = (spec.get("compute") or {}).get("backend", "sqlite")
    for name, part in caches.items():
        if not isinstance(part, Mapping):
            builder.problem(f"memory.compute.cache.{name}", "must be an object")
        else:
            parts.append((name, f"memory.compute.cache.{name}", {"backend": default, **part}))
    names = [name for name, _, _ in parts]
    for name in sorted({n for n in names if names.count(n) > 1}):
        builder.problem("memory", f"the name {name!r} is used by more than one part")
    return parts


def _build_one(
    builder: _Builder,
    path: str,
    spec: Mapping[str, Any],
    namespace: str,
    inherited: Mapping[str, Any] | None = None,
) -> Memory | None:
    kind = builder.kind(path, spec)
    if kind is None:
        return None
    if kind == "hybrid":
        try:
            memory = builder.hybrid(path, spec, namespace)
        except ConfigError:
            return None
    else:
        options = builder.memory_options(path, spec)
        backend = builder.backend(path, spec)
        if backend is None:
            return None
        memory = Memory(backend, spec.get("namespace", namespace), **options)
    section_path = path if "schemas" in spec else "memory"
    section = spec.get("schemas", (inherited or {}).get("schemas"))
    if section is not None:  # JSON Schemas checked on set (prefect_memory.validation)
        try:
            from .validation.config import schema_hook_from_config

            hook = schema_hook_from_config(section, path=f"{section_path}.schemas")
        except (ConfigError, ImportError) as err:
            lines = str(err).splitlines()[1:] or [f"{section_path}.schemas: {err}"]
            builder.problems.extend(line.strip() for line in lines)
            return None
        if hook is not None:
            memory.hooks = (hook, *memory.hooks)
    return memory

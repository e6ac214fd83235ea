"""The checks of a config's shapes, shared by :func:`~prefect_memory.from_config` and
:func:`~prefect_memory.blocks.blocks_from_config`.

A :class:`ConfigReader` walks one ``memory`` section and collects every problem with its path
(``memory.tiers[1].ttl: ...``); the Memory builder (:mod:`prefect_memory.config.build`) and the
block planner (:mod:`prefect_memory.blocks.from_config`) build on what it reads: which store a
part names and where it lives, a hybrid's ``sync`` (:class:`SyncSpec`), the migration rules of
tiers, and the named parts of a namespaces config.

Example:
    >>> from pathlib import Path
    >>> reader = ConfigReader({}, Path("/cfg"))
    >>> reader.sync("memory", {"sync": {"strategy": "write-behind", "interval": 60000}})
    SyncSpec(strategy='write-behind', interval=60000.0, enabled=True)
    >>> reader.url("memory", "sqlite", {"location": "data/m.db"})
    'sqlite:////cfg/data/m.db'
    >>> reader.sync("memory", {"sync": {"interval": -1, "colour": 1}}).interval
    30000.0
    >>> print(reader.error())
    invalid memory config:
      memory.sync.colour: unknown key (allowed: enabled, interval, strategy)
      memory.sync.interval: must be positive milliseconds (at most 100 years), got -1
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PrefectMemoryError
from ..keys import validate_namespace
from ..registry import available_backends
from ..units import MAX_DURATION
from .document import config_error, describe
from .tables import (
    ALIASES,
    DEFAULT_CONNECTIONS,
    MEMORY_KEYS,
    REFUSED_KEYS,
    RULE_KEYS,
    SECTIONS_KEYS,
    SYNC_KEYS,
)


@dataclass(frozen=True)
class SyncSpec:
    """A hybrid memory's ``sync`` section, checked."""

    strategy: str = "write-through"
    #: Milliseconds between syncs (also bounds how long writes wait behind).
    interval: float = 30000.0
    enabled: bool = True

    @property
    def flush_interval(self) -> float:
        """Seconds between flushes of pending writes (at most 5)."""
        return min(self.interval / 1000.0, 5.0)

    @property
    def sync_interval(self) -> float | None:
        """Seconds between background syncs, ``None`` when sync is off."""
        return self.interval / 1000.0 if self.enabled else None


class ConfigReader:
    """Reads the shapes of one ``memory`` section and collects every problem with its path.

    Args:
        connections: URL per backend name for parts named without a place (over
            :data:`~prefect_memory.config.DEFAULT_CONNECTIONS`).
        base_dir: The folder relative paths are in (the config file's).
    """

    def __init__(self, connections: Mapping[str, str], base_dir: Path) -> None:
        self.problems: list[str] = []
        self.connections = {**DEFAULT_CONNECTIONS, **connections}
        self.base_dir = base_dir

    def problem(self, path: str, message: str) -> None:
        """Record a problem at ``path``."""
        self.problems.append(f"{path}: {message}")

    def error(self) -> ConfigError:
        """One :class:`ConfigError` listing every problem recorded."""
        return config_error(self.problems)

    def check_keys(
        self, path: str, spec: Mapping[str, Any], allowed: set[str] | frozenset[str],
        owner: str | None = None,
    ) -> None:  # fmt: skip
        """Report keys not in ``allowed``: refused ones with what to do instead;
        ``owner`` names where memory settings go when ``spec`` is a part of a memory."""
        for key in spec:
            if key in allowed:
                continue
            if key in REFUSED_KEYS:
                self.problem(f"{path}.{key}", REFUSED_KEYS[key])
            elif owner is not None and key in (MEMORY_KEYS | {"schemas"}):
                self.problem(f"{path}.{key}", f"not a setting of a part: set it on {owner}")
            else:
                allowed_keys = ", ".join(sorted(allowed))
                self.problem(f"{path}.{key}", f"unknown key (allowed: {allowed_keys})")

    def mapping(self, path: str, value: Any, what: str = "an object") -> Mapping[str, Any]:
        """``value`` if it is an object (``None``: empty), else a problem and ``{}``."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(path, f"must be {what}, got {type(value).__name__}")
            return {}
        return value

    def flag(self, path: str, value: Any) -> bool:
        """``value`` if it is a boolean, else a problem and ``False``."""
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, got {describe(value)}")
            return False
        return value

    def kind(self, path: str, spec: Mapping[str, Any]) -> str | None:
        """The backend a part names with ``type``/``backend`` (aliases resolved)."""
        raw = spec.get("type", spec.get("backend"))
        if not isinstance(raw, str) or not raw:
            self.problem(path, "needs a 'type' or 'backend' naming the store")
            return None
        name = ALIASES.get(raw.lower(), raw.lower())
        known = set(available_backends()) | {"hybrid"}
        if name not in known:
            where = "type" if "type" in spec else "backend"
            self.problem(
                f"{path}.{where}",
                f"unknown backend {describe(raw)} (known: {', '.join(sorted(known))})",
            )
            return None
        return name

    def part(self, path: str, spec: Any) -> tuple[str, Mapping[str, Any]] | None:
        """``(kind, spec)`` of a part written as an object or a backend name (``"redis"``)."""
        if isinstance(spec, str):  # "primary": "redis"
            spec = {"backend": spec}
        if not isinstance(spec, Mapping):
            self.problem(path, f"expected an object or a backend name, got {type(spec).__name__}")
            return None
        kind = self.kind(path, spec)
        return None if kind is None else (kind, spec)

    def store_kind(self, path: str, kind: str, spec: Mapping[str, Any]) -> str | None:
        """``parquet`` for the tutorial's Parquet shape (``format``/``partitioning``)."""
        fmt, partitioning = spec.get("format"), spec.get("partitioning")
        if fmt is None and partitioning is None:
            return kind
        ok = True
        if partitioning is not None and partitioning != "date":
            self.problem(
                f"{path}.partitioning",
                "the Parquet archive partitions by date only: use 'date', got "
                + describe(partitioning),
            )
            ok = False
        if fmt is None:
            self.problem(
                f"{path}.partitioning", "applies to the Parquet archive: add \"format\": "
                "\"parquet\" (on an s3 or file store), or remove 'partitioning'",
            )  # fmt: skip
            return None
        if fmt != "parquet":
            self.problem(
                f"{path}.format", f"only 'parquet' (the Parquet archive) is supported, got "
                f"{describe(fmt)}; other stores keep entries in their own format: remove 'format'",
            )  # fmt: skip
            return None
        if kind not in ("s3", "file", "parquet"):
            self.problem(
                f"{path}.format", f"a {kind} store has no Parquet format: use 'backend': 's3' "
                "or 'file' (or 'parquet') with 'format': 'parquet'",
            )  # fmt: skip
            return None
        return "parquet" if ok else None

    def url(
        self, path: str, kind: str, spec: Mapping[str, Any], store: str | None = None
    ) -> str | None:
        """The URL of a part (``store``: the kind whose default connection applies)."""
        connection, location = spec.get("connection"), spec.get("location")
        for name, value in (("connection", connection), ("location", location)):
            if value is not None and not isinstance(value, str):
                self.problem(f"{path}.{name}", f"must be a string, got {type(value).__name__}")
                return None
        place = connection or location
        store = store or kind
        if not place and store in self.connections:
            place = self.connections[store]
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
            self.problem(f"{path}.connection", f"a {kind} store needs a URL, got {describe(place)}")
            return None
        self.problem(path, f"a {store} store needs 'connection' (e.g. {store}://...)")
        return None

    def namespace(self, path: str, spec: Mapping[str, Any], default: str) -> str:
        """The memory's ``namespace`` (``default`` when not given), checked."""
        value = spec.get("namespace", default)
        try:
            return validate_namespace(value)
        except PrefectMemoryError as err:
            self.problem(f"{path}.namespace", str(err))
            return "default"

    def sync(self, path: str, spec: Mapping[str, Any]) -> SyncSpec:
        """The ``sync`` section of a hybrid memory (defaults where a value is wrong)."""
        sync = self.mapping(f"{path}.sync", spec.get("sync"))
        self.check_keys(f"{path}.sync", sync, SYNC_KEYS)
        strategy = sync.get("strategy", "write-through")
        if strategy not in ("write-through", "write-behind"):
            self.problem(
                f"{path}.sync.strategy",
                f"must be 'write-through' or 'write-behind', got {describe(strategy)}",
            )
        interval = sync.get("interval", 30000)
        if (
            not isinstance(interval, (int, float)) or isinstance(interval, bool)
            or not 0 < interval <= MAX_DURATION * 1000
        ):  # fmt: skip
            self.problem(
                f"{path}.sync.interval", f"must be positive milliseconds (at most 100 years), "
                f"got {describe(interval)}",
            )  # fmt: skip
            interval = 30000
        enabled = self.flag(f"{path}.sync.enabled", sync.get("enabled", True))
        return SyncSpec(str(strategy), float(interval), enabled)

    def tier_list(self, path: str, spec: Mapping[str, Any]) -> list[Any]:
        """The raw ``tiers`` of a tiered memory (``[]`` and a problem when not a list)."""
        raw_tiers = spec.get("tiers")
        if not isinstance(raw_tiers, list) or not raw_tiers:
            self.problem(f"{path}.tiers", "must be a non-empty list of tiers")
            return []
        return raw_tiers

    def rules(self, path: str, spec: Mapping[str, Any], tiers: list[str]) -> list[Any]:
        """The migration rules, every problem of every rule reported."""
        from ..tiers import MigrationRule, parse_rule

        migration = self.mapping(f"{path}.migration", spec.get("migration"))
        self.check_keys(f"{path}.migration", migration, {"rules"})
        raw_rules = migration.get("rules", [])
        if not isinstance(raw_rules, list):
            self.problem(f"{path}.migration.rules", "must be a list of rules")
            return []
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
                condition = parse_rule(raw["condition"])
            except ConfigError as err:
                self.problem(f"{where}.condition", str(err))
                continue
            if all(isinstance(end, str) for end in ends):
                rules.append(MigrationRule(ends[0], ends[1], condition))
        return rules

    def named_parts(
        self, spec: Mapping[str, Any]
    ) -> list[tuple[str, str, Mapping[str, Any]]] | None:
        """``(name, path, spec)`` of every namespace-like part, or ``None`` for a single memory.

        ``namespaces`` and ``datasets`` hold parts by name; ``compute.cache`` holds caches
        (``{"predictions": {"ttl": 3600}}``) on ``compute.backend`` (SQLite); ``streams`` and
        ``processing`` are checked here and applied by the analytics module. The top's
        ``backend``, ``ttl``, ``refresh``, ``compression``, ``serialization`` and ``pickle``
        are defaults of the parts.
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

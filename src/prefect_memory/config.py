"""Build memories from the tutorial's JSON shapes: ``pm.from_config(dict | path)``.

Supported shapes (all under an optional top-level ``"memory"`` key):

- one store: ``{"backend": "redis", "connection": "redis://...", "ttl": 60}``;
- hybrid: ``{"backend": "hybrid", "primary": {...}, "secondary": {...}, "sync": {...}}``;
- tiers: ``{"backend": "hybrid", "tiers": [...], "migration": {"rules": [...]}}``;
- namespaces: ``{"namespaces": {"sessions": {"backend": "redis", "ttl": 1800}, ...}}``
  (also ``datasets`` and ``compute.cache``; ``ttl``, ``refresh``, ``compression``,
  ``serialization``, ``pickle`` and ``backend`` at the top are defaults of the parts);
- the Parquet archive: a store with ``"format": "parquet"`` (``"partitioning": "date"``) on
  ``s3``, ``file`` or a local folder opens :mod:`prefect_memory.plugins.parquet`;
- record schemas: ``{"schemas": {"validation": true, "strict": true, "definitions": {...}}}``
  (JSON Schema checked on ``set``, see :mod:`prefect_memory.validation.records`; on a
  namespaces config, a top-level ``schemas`` applies to namespaces without their own);
- ``streams`` and ``processing``: checked here, applied by :mod:`prefect_memory.analytics`.

A part names its store with ``type``/``backend`` and where it lives with ``connection``
(a URL), ``location`` (a path or URL) and ``storage_options``. Stores named without a
place use ``connections=`` (or the defaults in :data:`DEFAULT_CONNECTIONS`).

Every key is applied or refused: keys the library cannot apply (``persist``, ``indexes``,
``cache``, ``versioning``...) are refused with what to do instead (:data:`REFUSED_KEYS`).
Unknown keys, unknown backends, bad values and documents past the limits
(:data:`MAX_CONFIG_BYTES`, :data:`MAX_CONFIG_DEPTH`, :data:`MAX_CONFIG_NODES`) are collected
and raised as one :class:`ConfigError` listing every problem with its path in the config.

Example:
    >>> import prefect_memory as pm
    >>> mem = pm.from_config({"memory": {"backend": "memory", "ttl": 60, "namespace": "s"}})
    >>> mem.namespace, mem.ttl
    ('s', 60.0)
    >>> pm.from_config({"memory": {"backend": "hybird", "ttl": "200y", "indexes": ["id"]}})
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ConfigError: invalid memory config:
      memory.backend: unknown backend 'hybird' (known: ...)
      memory.indexes: entries are stored encoded, their fields cannot be indexed; ...
      memory.ttl: ttl must be seconds or a duration like '1h' (units: ms, s, m, h, d, w), ...
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs import Codec
from .errors import ConfigError, PrefectMemoryError
from .keys import validate_namespace
from .memory import Memory
from .plugins.base import Backend
from .registry import available_backends, open_backend
from .units import MAX_DURATION, parse_duration, parse_size

#: Where a store named without ``connection``/``location`` lives.
DEFAULT_CONNECTIONS: dict[str, str] = {
    "memory": "memory://",
    "redis": "redis://localhost:6379/0",
    "mongodb": "mongodb://localhost:27017/prefect_memory",
    "sqlite": "sqlite:///.prefect-memory/memory.db",
    "json": "json:///.prefect-memory/memory.json",
    "file": "file://.prefect-memory/files",
}
#: Largest config file read, in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of objects and lists in a config.
MAX_CONFIG_DEPTH = 64
#: Most values (objects, lists, strings, numbers) in a config.
MAX_CONFIG_NODES = 100_000
#: Longest string in a config, in characters.
MAX_CONFIG_STRING = 65_536
_MAX_NUMBER = 2**63  # no setting needs more than a 64-bit integer
_ALIASES = {"mongo": "mongodb", "inprocess": "memory", "local": "sqlite", "fs": "file"}
#: Where and how a store lives (every store part, tier and single memory).
_PART_KEYS = frozenset({"type", "backend", "connection", "location", "storage_options",
                        "options", "consistency", "format", "partitioning"})  # fmt: skip
_TIER_KEYS = frozenset({"name", "ttl", "maxSize", "maxEntries", "patterns"})
#: Settings of a memory (single, hybrid, tiered, or defaults of a namespaces config).
_MEMORY_KEYS = frozenset({"namespace", "ttl", "refresh", "compression", "serialization",
                          "pickle"})  # fmt: skip
_HYBRID_KEYS = frozenset({"backend", "type", "primary", "secondary", "sync", "journal"})
_TIERED_KEYS = frozenset({"backend", "type", "tiers", "migration", "promote"})
#: Keys of the top of a namespaces config (its ``ttl``... are defaults of the parts).
_SECTIONS_KEYS = frozenset({"backend", "type", "namespaces", "datasets", "compute", "streams",
                            "processing", "schemas"}) | (_MEMORY_KEYS - {"namespace"})  # fmt: skip
#: Sections other modules read: ``schemas`` (validation), ``streams``/``processing``
#: (analytics), ``datasets``/``compute`` (named parts).
RESERVED_SECTIONS = ("schemas", "streams", "processing", "datasets", "compute")
#: Keys of the tutorial that cannot be applied, and what to do instead.
REFUSED_KEYS: dict[str, str] = {
    "persist": "whether Redis keeps data across restarts is the server's own setting "
    "(appendonly/save in redis.conf); remove 'persist', or use a hybrid memory with a "
    "durable 'secondary'",
    "indexes": "entries are stored encoded, their fields cannot be indexed; remove "
    "'indexes' and find entries by key pattern (keys('order:*')) or by tags",
    "cache": "a hybrid memory keeps the same entries in both stores, so a TTL for the "
    "cache side alone is not supported; use 'tiers' with a 'ttl' per tier (entries move "
    "down after it) or 'ttl' for the whole memory",
    "versioning": "old versions are not kept; put the version in the key ('model:v2') or "
    "turn on versioning of the S3 bucket itself",
    "validators": "validators are Python objects: pass hooks=[...] to pm.open_memory() or "
    "Memory(); JSON Schemas go in 'schemas'",
    "hooks": "hooks are Python objects: pass hooks=[...] to pm.open_memory() or Memory()",
    "broadcast": "change broadcasts come from prefect_memory.shared.SharedMemory(memory); "
    "remove 'broadcast'",
    "tags": "tags are always available: pass tags=[...] to set(); remove 'tags'",
}
_SYNC_KEYS = {"enabled", "interval", "strategy"}
_RULE_KEYS = {"from", "to", "condition"}


@dataclass
class Namespaces(Mapping[str, Memory]):
    """The memories of a ``"namespaces"`` config, by namespace name."""

    memories: dict[str, Memory]
    #: Per name, the store settings written in the config (``format``, ``partitioning``,
    #: ``consistency``), as applied.
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


def _name(value: Any) -> str:
    """``repr`` of a config value for a message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + "...'"


class _Builder:
    def __init__(self, connections: Mapping[str, str], base_dir: Path) -> None:
        self.problems: list[str] = []
        self.connections = {**DEFAULT_CONNECTIONS, **connections}
        self.base_dir = base_dir

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

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
            elif owner is not None and key in (_MEMORY_KEYS | {"schemas"}):
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
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, got {_name(value)}")
            return False
        return value

    def kind(self, path: str, spec: Mapping[str, Any]) -> str | None:
        raw = spec.get("type", spec.get("backend"))
        if not isinstance(raw, str) or not raw:
            self.problem(path, "needs a 'type' or 'backend' naming the store")
            return None
        name = _ALIASES.get(raw.lower(), raw.lower())
        known = set(available_backends()) | {"hybrid"}
        if name not in known:
            where = "type" if "type" in spec else "backend"
            self.problem(
                f"{path}.{where}",
                f"unknown backend {_name(raw)} (known: {', '.join(sorted(known))})",
            )
            return None
        return name

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
                + _name(partitioning),
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
                f"{_name(fmt)}; other stores keep entries in their own format: remove 'format'",
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
            self.problem(f"{path}.connection", f"a {kind} store needs a URL, got {_name(place)}")
            return None
        self.problem(path, f"a {store} store needs 'connection' (e.g. {store}://...)")
        return None

    def options(self, path: str, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        options = dict(self.mapping(f"{path}.options", spec.get("options")))
        storage = spec.get("storage_options")
        if storage is not None:
            options["storage_options"] = dict(self.mapping(f"{path}.storage_options", storage))
        if "consistency" in spec:
            if kind == "redis":
                options["consistency"] = spec["consistency"]
            else:
                self.problem(
                    f"{path}.consistency",
                    f"only Redis stores take 'consistency' (this is a {kind} store): remove it",
                )
        return options

    def backend(self, path: str, spec: Any, owner: str, tier: bool = False) -> Backend | None:
        """The store of a part (``owner``: the memory its memory settings belong to)."""
        if isinstance(spec, str):  # "primary": "redis"
            spec = {"backend": spec}
        if not isinstance(spec, Mapping):
            self.problem(path, f"expected an object or a backend name, got {type(spec).__name__}")
            return None
        kind = self.kind(path, spec)
        if kind is None:
            return None
        if kind == "hybrid":
            if tier:
                self.problem(path, "a tier is one store: a hybrid cannot be a tier")
                return None
            memory = self.hybrid(path, spec)
            return None if memory is None else memory.backend
        self.check_keys(path, spec, _PART_KEYS | (_TIER_KEYS if tier else set()), owner)
        return self.open(path, kind, spec)

    def open(self, path: str, kind: str, spec: Mapping[str, Any]) -> Backend | None:
        store = self.store_kind(path, kind, spec)
        if store is None:
            return None
        url = self.url(path, store, spec, kind)
        options = self.options(path, kind, spec)
        if url is None:
            return None
        try:
            return open_backend(url, **options)
        except ConfigError as err:
            self.problem(path, str(err))
        except (TypeError, ValueError) as err:  # e.g. an option the store does not take
            self.problem(f"{path}.options", f"the {store} store refused its options: {err}")
        return None

    def namespace(self, path: str, spec: Mapping[str, Any], default: str) -> str:
        value = spec.get("namespace", default)
        try:
            return validate_namespace(value)
        except PrefectMemoryError as err:
            self.problem(f"{path}.namespace", str(err))
            return "default"

    def memory_options(self, path: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "ttl" in spec:
            try:
                out["ttl"] = parse_duration(spec["ttl"], name="ttl")
            except ConfigError as err:
                self.problem(f"{path}.ttl", str(err))
        if "refresh" in spec:
            out["refresh"] = self.flag(f"{path}.refresh", spec["refresh"])
        codec: dict[str, Any] = {}
        if "compression" in spec and self.flag(f"{path}.compression", spec["compression"]):
            codec["compression"] = True
        if spec.get("serialization") not in (None, "msgpack"):
            self.problem(f"{path}.serialization", "only 'msgpack' is supported")
        if "pickle" in spec and self.flag(f"{path}.pickle", spec["pickle"]):
            codec["pickle"] = True
        if codec:
            out["codec"] = Codec(**codec)
        return out

    def sync(self, path: str, spec: Mapping[str, Any]) -> tuple[str, float, bool]:
        """``(strategy, interval in ms, enabled)`` of a hybrid's ``sync`` section."""
        sync = self.mapping(f"{path}.sync", spec.get("sync"))
        self.check_keys(f"{path}.sync", sync, _SYNC_KEYS)
        strategy = sync.get("strategy", "write-through")
        if strategy not in ("write-through", "write-behind"):
            self.problem(
                f"{path}.sync.strategy",
                f"must be 'write-through' or 'write-behind', got {_name(strategy)}",
            )
        interval = sync.get("interval", 30000)
        if (
            not isinstance(interval, (int, float)) or isinstance(interval, bool)
            or not 0 < interval <= MAX_DURATION * 1000
        ):  # fmt: skip
            self.problem(
                f"{path}.sync.interval", f"must be positive milliseconds (at most 100 years), "
                f"got {_name(interval)}",
            )  # fmt: skip
            interval = 30000
        enabled = self.flag(f"{path}.sync.enabled", sync.get("enabled", True))
        return str(strategy), float(interval), enabled

    def rules(self, path: str, spec: Mapping[str, Any], tiers: list[str]) -> list[Any]:
        """The migration rules, every problem of every rule reported."""
        from .tiers import MigrationRule, parse_rule

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
            self.check_keys(where, raw, _RULE_KEYS)
            for key in sorted(_RULE_KEYS - set(raw)):
                self.problem(where, f"missing '{key}'")
            ends = [raw.get("from"), raw.get("to")]
            for key, value in zip(("from", "to"), ends, strict=True):
                if key in raw and value not in tiers:
                    self.problem(f"{where}.{key}", f"unknown tier {_name(value)} "
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

    def hybrid(
        self, path: str, spec: Mapping[str, Any], namespace: str = "default"
    ) -> Memory | None:
        """A ``HybridMemory`` or ``TieredMemory`` (``None`` when there are problems)."""
        from .resilience import HybridMemory
        from .tiers import TieredMemory

        options = self.memory_options(path, spec)
        name = self.namespace(path, spec, namespace)
        owner = f"the memory ({path})"
        if "tiers" in spec:
            self.check_keys(path, spec, _TIERED_KEYS | _MEMORY_KEYS | {"schemas"})
            raw_tiers = spec["tiers"]
            if not isinstance(raw_tiers, list) or not raw_tiers:
                self.problem(f"{path}.tiers", "must be a non-empty list of tiers")
                raw_tiers = []
            tiers = [self.tier(f"{path}.tiers[{i}]", raw, owner) for i, raw in enumerate(raw_tiers)]
            names = [raw.get("name") for raw in raw_tiers if isinstance(raw, Mapping)]
            for i, tier_name in enumerate(names):
                if isinstance(tier_name, str) and names.index(tier_name) != i:
                    self.problem(f"{path}.tiers", f"duplicate tier name {_name(tier_name)}")
            rules = self.rules(path, spec, [n for n in names if isinstance(n, str)])
            promote = spec.get("promote", "home")
            if promote not in ("home", "first", "never"):
                self.problem(f"{path}.promote", f"must be 'home', 'first' or 'never', got "
                             f"{_name(promote)}")  # fmt: skip
            if self.problems or None in tiers:
                return None
            try:
                return TieredMemory(tiers, rules, promote=promote, namespace=name, **options)
            except ConfigError as err:
                self.problem(path, str(err))
                return None
        self.check_keys(path, spec, _HYBRID_KEYS | _MEMORY_KEYS | {"schemas"})
        parts = []
        for role in ("primary", "secondary"):
            if role not in spec:
                self.problem(path, f"a hybrid memory needs '{role}' (or 'tiers')")
                parts.append(None)
            else:
                parts.append(self.backend(f"{path}.{role}", spec[role], owner))
        strategy, interval, enabled = self.sync(path, spec)
        journal = spec.get("journal")
        if journal is not None and (not isinstance(journal, str) or not journal):
            self.problem(f"{path}.journal", f"must be a file path, got {_name(journal)}")
        if self.problems or parts[0] is None or parts[1] is None:
            return None
        mem = HybridMemory(
            parts[0], parts[1], strategy=strategy, journal=journal,  # type: ignore[arg-type]
            flush_interval=min(interval / 1000.0, 5.0), namespace=name, **options,
        )  # fmt: skip
        mem.sync_interval = interval / 1000.0 if enabled else None
        return mem

    def tier(self, path: str, raw: Any, owner: str) -> Any:
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
        if max_entries is not None and (
            not isinstance(max_entries, int) or isinstance(max_entries, bool)
            or not 1 <= max_entries <= _MAX_NUMBER
        ):  # fmt: skip
            self.problem(
                f"{path}.maxEntries", f"must be a positive integer, got {_name(max_entries)}"
            )
            max_entries = None
        backend = self.backend(path, raw, owner, tier=True)
        if backend is None or not isinstance(name, str) or not name:
            return None
        return Tier(name, backend, patterns=tuple(patterns), max_entries=max_entries, **values)

    def error(self) -> ConfigError:
        return ConfigError("invalid memory config:\n  " + "\n  ".join(self.problems))


def check_document(data: Any, root: str = "") -> list[str]:
    """The problems of a config document as a whole: depth, size, keys, strings, numbers.

    Iterative (a deep or cyclic document cannot exhaust the stack) and bounded by
    :data:`MAX_CONFIG_NODES` visits.

    Example:
        >>> check_document({"memory": {"ttl": float("nan"), 1: "x"}})
        ['memory: keys are strings, got int 1', 'memory.ttl: nan is not a JSON number']
    """
    problems: list[str] = []
    stack: list[tuple[str, Any, int]] = [(root, data, 0)]
    visits = 0
    while stack:
        path, value, depth = stack.pop()
        visits += 1
        if visits > MAX_CONFIG_NODES:
            problems.append(f"{root or 'config'}: more than {MAX_CONFIG_NODES} values")
            break
        where = path or "config"
        if isinstance(value, Mapping | list | tuple):
            if depth >= MAX_CONFIG_DEPTH:
                problems.append(f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels")
                continue
            items: list[tuple[str, Any]] = []
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        problems.append(f"{where}: keys are strings, got "
                                        f"{type(key).__name__} {_name(key)}")  # fmt: skip
                        continue
                    problem = _string_problem(key)
                    if problem:
                        problems.append(f"{where}: a key {problem}")
                        continue
                    items.append((f"{path}.{key}" if path else key, item))
            else:
                items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
            stack.extend((p, item, depth + 1) for p, item in reversed(items))
        elif isinstance(value, str):
            problem = _string_problem(value)
            if problem:
                problems.append(f"{where}: {problem}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: {value} is not a JSON number")
        elif isinstance(value, int | float) and abs(value) > _MAX_NUMBER:
            problems.append(f"{where}: {_name(value)} is out of range (at most 2**63)")
    return problems


def _string_problem(text: str) -> str | None:
    if len(text) > MAX_CONFIG_STRING:
        return f"longer than {MAX_CONFIG_STRING} characters ({len(text)})"
    if "\x00" in text:
        return "holds a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"holds a lone surrogate, not valid UTF-8: {_name(text)}"
    return None


def _read_json(path: Path) -> Any:
    """The JSON document of a config file, every failure a ConfigError naming the path."""
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except (OSError, ValueError) as err:  # name too long, NUL in the path...
        raise ConfigError(f"config file {path} cannot be read: {err}") from err
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"config path {path} is a directory, not a JSON file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never ends
        raise ConfigError(f"config path {path} is not a regular file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is {info.st_size} bytes, more than {MAX_CONFIG_BYTES}"
        )
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except PermissionError as err:
        raise ConfigError(f"config file {path}: permission denied") from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return json.loads(
            raw.decode("utf-8-sig"), parse_constant=_no_constant, parse_float=_finite_float
        )
    except RecursionError as err:
        raise ConfigError(
            f"config file {path} is nested deeper than {MAX_CONFIG_DEPTH} levels"
        ) from err
    except ValueError as err:  # also UnicodeDecodeError
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from err


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def load_config(source: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """Read a config (dict or JSON file); return its ``memory`` section and its folder.

    Raises:
        ConfigError: The file cannot be read or is not JSON, or the document is past a
            limit (:data:`MAX_CONFIG_BYTES`, :data:`MAX_CONFIG_DEPTH`,
            :data:`MAX_CONFIG_NODES`, :data:`MAX_CONFIG_STRING`), holds ``NaN``, numbers
            out of range or non-string keys: every problem with its path.
    """
    if isinstance(source, Mapping):
        data, base = source, Path.cwd()
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        data, base = _read_json(path), path.absolute().parent
    else:
        raise ConfigError(
            f"a config is a dict or the path of a JSON file, got {type(source).__name__}"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"a memory config is a JSON object, got {type(data).__name__}")
    problems = check_document(data, "" if "memory" in data else "memory")
    if problems:
        raise ConfigError("invalid memory config:\n  " + "\n  ".join(problems))
    section = data.get("memory", data)
    if not isinstance(section, Mapping):
        raise ConfigError(f"memory: must be an object, got {type(section).__name__}")
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
        memory = _build_one(builder, path, spec, "default")
        if builder.problems or memory is None:
            raise builder.error()
        return memory
    memories: dict[str, Memory] = {}
    settings: dict[str, dict[str, Any]] = {}
    for name, ns_path, ns_spec in groups:
        settings[name] = {k: ns_spec[k] for k in _APPLIED_SETTINGS if k in ns_spec}
        memory = _build_one(builder, ns_path, ns_spec, name, inherited=spec)
        if memory is not None:
            memories[name] = memory
    if builder.problems:
        raise builder.error()
    extras = {k: spec[k] for k in ("streams", "processing") if k in spec}
    return Namespaces(memories, settings, extras)


_APPLIED_SETTINGS = ("format", "partitioning", "consistency")


def _named_parts(
    builder: _Builder, spec: Mapping[str, Any]
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
    builder.check_keys("memory", spec, _SECTIONS_KEYS)
    defaults = {k: spec[k] for k in _MEMORY_KEYS - {"namespace"} if k in spec}
    kind = spec.get("type", spec.get("backend"))
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
                continue
            if kind is not None and "type" not in part and "backend" not in part:
                part = {"backend": kind, **part}
            parts.append((name, f"memory.{section}.{name}", {**defaults, **part}))
    compute = builder.mapping("memory.compute", spec.get("compute"))
    builder.check_keys("memory.compute", compute, {"backend", "cache"})
    caches = builder.mapping("memory.compute.cache", compute.get("cache"))
    default = compute.get("backend", "sqlite")
    for name, part in caches.items():
        if not isinstance(part, Mapping):
            builder.problem(f"memory.compute.cache.{name}", "must be an object")
        else:
            part = {"backend": default, **defaults, **part}
            parts.append((name, f"memory.compute.cache.{name}", part))
    names = [name for name, _, _ in parts]
    for name in sorted({n for n in names if names.count(n) > 1}):
        builder.problem("memory", f"the name {name!r} is used by more than one part")
    for name, part_path, _ in parts:
        try:
            validate_namespace(name)
        except PrefectMemoryError as err:
            builder.problem(part_path, f"the name is the namespace: {err}")
    if "streams" in spec or "processing" in spec:
        from .analytics.config import check_sections

        builder.problems.extend(check_sections(spec.get("streams"), spec.get("processing")))
    return parts


def _build_one(
    builder: _Builder,
    path: str,
    spec: Mapping[str, Any],
    namespace: str,
    inherited: Mapping[str, Any] | None = None,
) -> Memory | None:
    kind = builder.kind(path, spec)
    if kind is None:  # still report the other problems of the part
        everything = _PART_KEYS | _MEMORY_KEYS | _HYBRID_KEYS | _TIERED_KEYS | {"schemas"}
        builder.check_keys(path, spec, everything)
        builder.memory_options(path, spec)
        return None
    if kind == "hybrid":
        memory = builder.hybrid(path, spec, namespace)
    else:
        builder.check_keys(path, spec, _PART_KEYS | _MEMORY_KEYS | {"schemas"})
        options = builder.memory_options(path, spec)
        name = builder.namespace(path, spec, namespace)
        backend = builder.open(path, kind, spec)
        memory = None if backend is None else Memory(backend, name, **options)
    if memory is None:
        return None
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

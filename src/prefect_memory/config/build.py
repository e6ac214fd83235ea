"""Build the memory a config describes: :func:`from_config` and :class:`Namespaces`.

:class:`MemoryBuilder` is a :class:`~prefect_memory.config.reader.ConfigReader` that also opens
the stores: a single store, a ``HybridMemory`` (``primary``/``secondary``/``sync``), a
``TieredMemory`` (``tiers``/``migration``/``promote``), or one of those per named part.

Example:
    >>> mem = from_config({"memory": {"backend": "hybrid", "primary": "memory",
    ...                               "secondary": "memory", "sync": {"enabled": False}}})
    >>> type(mem).__name__, mem.sync_interval
    ('HybridMemory', None)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..codecs import Codec
from ..errors import ConfigError
from ..memory import Memory
from ..plugins.base import Backend
from ..registry import open_backend
from ..units import parse_duration, parse_size
from .document import MAX_NUMBER, describe, load_config
from .reader import ConfigReader
from .tables import (
    APPLIED_SETTINGS,
    HYBRID_KEYS,
    MEMORY_KEYS,
    PART_KEYS,
    TIER_KEYS,
    TIERED_KEYS,
)


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


class MemoryBuilder(ConfigReader):
    """Reads a config's shapes and opens what they describe (``None`` on any problem)."""

    def options(self, path: str, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a store (``options``, ``storage_options``, ``consistency``)."""
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
        part = self.part(path, spec)
        if part is None:
            return None
        kind, spec = part
        if kind == "hybrid":
            if tier:
                self.problem(path, "a tier is one store: a hybrid cannot be a tier")
                return None
            memory = self.hybrid(path, spec)
            return None if memory is None else memory.backend
        self.check_keys(path, spec, PART_KEYS | (TIER_KEYS if tier else set()), owner)
        return self.open(path, kind, spec)

    def open(self, path: str, kind: str, spec: Mapping[str, Any]) -> Backend | None:
        """Open the store a part describes."""
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

    def memory_options(self, path: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a memory (``ttl``, ``refresh``, its codec)."""
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

    def hybrid(
        self, path: str, spec: Mapping[str, Any], namespace: str = "default"
    ) -> Memory | None:
        """A ``HybridMemory`` or ``TieredMemory`` (``None`` when there are problems)."""
        from ..hybrid import HybridMemory
        from ..tiers import TieredMemory

        options = self.memory_options(path, spec)
        name = self.namespace(path, spec, namespace)
        owner = f"the memory ({path})"
        if "tiers" in spec:
            self.check_keys(path, spec, TIERED_KEYS | MEMORY_KEYS | {"schemas"})
            raw_tiers = self.tier_list(path, spec)
            tiers = [self.tier(f"{path}.tiers[{i}]", raw, owner) for i, raw in enumerate(raw_tiers)]
            names = [raw.get("name") for raw in raw_tiers if isinstance(raw, Mapping)]
            for i, tier_name in enumerate(names):
                if isinstance(tier_name, str) and names.index(tier_name) != i:
                    self.problem(f"{path}.tiers", f"duplicate tier name {describe(tier_name)}")
            rules = self.rules(path, spec, [n for n in names if isinstance(n, str)])
            promote = spec.get("promote", "home")
            if promote not in ("home", "first", "never"):
                self.problem(f"{path}.promote", f"must be 'home', 'first' or 'never', got "
                             f"{describe(promote)}")  # fmt: skip
            if self.problems or None in tiers:
                return None
            try:
                return TieredMemory(tiers, rules, promote=promote, namespace=name, **options)
            except ConfigError as err:
                self.problem(path, str(err))
                return None
        self.check_keys(path, spec, HYBRID_KEYS | MEMORY_KEYS | {"schemas"})
        parts = []
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
        if self.problems or parts[0] is None or parts[1] is None:
            return None
        mem = HybridMemory(
            parts[0], parts[1], strategy=sync.strategy, journal=journal,  # type: ignore[arg-type]
            flush_interval=sync.flush_interval, namespace=name, **options,
        )  # fmt: skip
        mem.sync_interval = sync.sync_interval
        return mem

    def tier(self, path: str, raw: Any, owner: str) -> Any:
        """One ``Tier`` of a tiered memory."""
        from ..tiers import Tier

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
            max_entries = None
        backend = self.backend(path, raw, owner, tier=True)
        if backend is None or not isinstance(name, str) or not name:
            return None
        return Tier(name, backend, patterns=tuple(patterns), max_entries=max_entries, **values)

    def memory(
        self,
        path: str,
        spec: Mapping[str, Any],
        namespace: str,
        inherited: Mapping[str, Any] | None = None,
    ) -> Memory | None:
        """One memory (a single store, a hybrid or tiers) with its record schemas."""
        kind = self.kind(path, spec)
        if kind is None:  # still report the other problems of the part
            everything = PART_KEYS | MEMORY_KEYS | HYBRID_KEYS | TIERED_KEYS | {"schemas"}
            self.check_keys(path, spec, everything)
            self.memory_options(path, spec)
            return None
        if kind == "hybrid":
            memory = self.hybrid(path, spec, namespace)
        else:
            self.check_keys(path, spec, PART_KEYS | MEMORY_KEYS | {"schemas"})
            options = self.memory_options(path, spec)
            name = self.namespace(path, spec, namespace)
            backend = self.open(path, kind, spec)
            memory = None if backend is None else Memory(backend, name, **options)
        if memory is None:
            return None
        section_path = path if "schemas" in spec else "memory"
        section = spec.get("schemas", (inherited or {}).get("schemas"))
        if section is not None:  # JSON Schemas checked on set (prefect_memory.validation)
            try:
                from ..validation.config import schema_hook_from_config

                hook = schema_hook_from_config(section, path=f"{section_path}.schemas")
            except (ConfigError, ImportError) as err:
                lines = str(err).splitlines()[1:] or [f"{section_path}.schemas: {err}"]
                self.problems.extend(line.strip() for line in lines)
                return None
            if hook is not None:
                memory.hooks = (hook, *memory.hooks)
        return memory


def from_config(
    source: Mapping[str, Any] | str | os.PathLike[str],
    *,
    connections: Mapping[str, str] | None = None,
) -> Memory | Namespaces:
    """Build the memory a config describes.

    Args:
        source: The config as a dict or the path of a JSON file.
        connections: URL per backend name for parts that give no ``connection``
            (defaults: :data:`~prefect_memory.config.DEFAULT_CONNECTIONS`).

    Returns:
        A :class:`~prefect_memory.Memory` (a ``HybridMemory`` or ``TieredMemory`` for those
        shapes), or :class:`Namespaces` when the config has ``namespaces``, ``datasets``,
        ``compute`` or ``streams`` sections.

    Raises:
        ConfigError: listing every problem with its path in the config.
    """
    spec, base = load_config(source)
    builder = MemoryBuilder(connections or {}, base)
    groups = builder.named_parts(spec)
    if groups is None:
        memory = builder.memory("memory", spec, "default")
        if builder.problems or memory is None:
            raise builder.error()
        return memory
    memories: dict[str, Memory] = {}
    settings: dict[str, dict[str, Any]] = {}
    for name, ns_path, ns_spec in groups:
        settings[name] = {k: ns_spec[k] for k in APPLIED_SETTINGS if k in ns_spec}
        memory = builder.memory(ns_path, ns_spec, name, inherited=spec)
        if memory is not None:
            memories[name] = memory
    if builder.problems:
        raise builder.error()
    extras = {k: spec[k] for k in ("streams", "processing") if k in spec}
    return Namespaces(memories, settings, extras)

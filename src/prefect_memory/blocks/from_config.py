"""The blocks a tutorial config describes: ``blocks_from_config(config, name_prefix=...)``.

The config shapes are those of :func:`prefect_memory.from_config` (one store, hybrid, tiers,
namespaces), read with the same rules (a part's ``connection``/``location``, default
connections, paths relative to the config file). Each shape becomes blocks:

- one store: one block named ``<prefix>``;
- hybrid: ``<prefix>-primary`` and ``<prefix>-secondary``, then the ``HybridMemory``
  ``<prefix>`` that references them;
- tiers: one block per tier, ``<prefix>-<tier>``, then the ``TieredMemory`` ``<prefix>``;
- namespaces (and the named parts of ``datasets`` and ``compute.cache``): the above for
  each, with the prefix ``<prefix>-<name>``.

Memory settings become block fields (``ttl``, ``refresh``, ``compression``); what a block
cannot hold (``pickle``, ``schemas``) is refused, and what has no block form (the
``streams``/``processing`` sections, S3 ``storage_options`` other than the key, secret and
endpoint) is listed in :attr:`ConfigBlocks.notes`. Problems are collected and raised as one
:class:`~prefect_memory.ConfigError` listing each with its path in the config.

Example:
    >>> from prefect_memory.blocks import blocks_from_config
    >>> planned = blocks_from_config(
    ...     {"memory": {"backend": "hybrid", "primary": {"type": "memory"},
    ...                 "secondary": {"type": "sqlite", "location": "/data/m.db"},
    ...                 "sync": {"strategy": "write-behind", "interval": 60000}}},
    ...     name_prefix="cache")
    >>> for name, block in planned.blocks:
    ...     print(name, block.get_block_type_slug())
    cache-primary in-process-memory
    cache-secondary sqlite-memory
    cache hybrid-memory
    >>> planned.blocks[-1][1].sync_interval
    60.0
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config.document import load_config
from ..config.reader import ConfigReader
from ..config.tables import HYBRID_KEYS, MEMORY_KEYS, PART_KEYS, TIER_KEYS, TIERED_KEYS
from ..errors import ConfigError
from ..units import parse_duration
from .archive import ParquetArchiveMemory
from .base import MemoryBlock
from .composite import HybridMemory, TieredMemory, slugify
from .composite_parts import MemoryTier
from .local import InProcessMemory, JsonMemory, SqliteMemory
from .remote import MongoMemory, RedisMemory, S3Memory

_NAME = re.compile(r"^[a-z0-9-]+$")
_BLOCK_OF_SCHEME: dict[str, type[MemoryBlock]] = {
    "redis": RedisMemory, "rediss": RedisMemory, "mongodb": MongoMemory,
    "mongodb+srv": MongoMemory, "s3": S3Memory, "json": JsonMemory, "sqlite": SqliteMemory,
    "memory": InProcessMemory, "parquet": ParquetArchiveMemory,
}  # fmt: skip
#: Memory settings every block holds as a field of its own.
_BLOCK_FLAGS = ("refresh", "compression")


@dataclass
class ConfigBlocks:
    """The blocks a config describes, in saving order (parts before what uses them)."""

    blocks: list[tuple[str, MemoryBlock]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def conflicts(self) -> list[str]:
        """``type/name`` of the planned blocks that are already saved in the Prefect API."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        taken: list[str] = []
        with get_client(sync_client=True) as client:
            for name, block in self.blocks:
                slug = block.get_block_type_slug()
                try:
                    client.read_block_document_by_name(name, slug, include_secrets=False)
                except ObjectNotFound:
                    continue
                taken.append(f"{slug}/{name}")
        return taken

    def save(
        self,
        *,
        overwrite: bool = False,
        progress: Callable[[str, MemoryBlock], None] | None = None,
    ) -> list[str]:
        """Save every block (parts first, so composed blocks reference them).

        Args:
            overwrite: Replace block documents that already have these names.
            progress: Called with the name and the block after each save.

        Returns:
            ``type/name`` of every block saved.
        """
        saved: list[str] = []
        for name, block in self.blocks:
            block.save(name, overwrite=overwrite)
            saved.append(f"{block.get_block_type_slug()}/{name}")
            if progress is not None:
                progress(name, block)
        return saved


class _Planner:
    def __init__(self, reader: ConfigReader) -> None:
        self.reader = reader
        self.out = ConfigBlocks()

    def problem(self, path: str, message: str) -> None:
        self.reader.problem(path, message)

    def invalid(
        self, path: str, err: ValidationError, rename: Mapping[str, str] | None = None
    ) -> None:
        rename = rename or {}
        for error in err.errors():
            loc = error["loc"]
            parts = [rename.get(str(p), str(p)) if i == 0 else p for i, p in enumerate(loc)]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
            message = str(error["msg"]).removeprefix("Value error, ")
            self.problem(path + where, message)

    def settings(self, path: str, spec: Mapping[str, Any]) -> dict[str, bool]:
        """The memory settings a block holds (``refresh``, ``compression``); refuses the
        ones it cannot (``pickle``, ``schemas``, another serialization)."""
        flags = {
            key: self.reader.flag(f"{path}.{key}", spec[key]) for key in _BLOCK_FLAGS if key in spec
        }
        if "pickle" in spec and self.reader.flag(f"{path}.pickle", spec["pickle"]):
            self.problem(
                f"{path}.pickle",
                "a block never loads pickled values (anyone who can edit the block or write "
                "the store could run code in your flows): remove 'pickle', or build with "
                "pm.from_config",
            )
        if "schemas" in spec:
            self.problem(
                f"{path}.schemas",
                "a block has no record schemas: remove 'schemas' to save blocks, or build "
                "with pm.from_config (which checks them on set)",
            )
        if spec.get("serialization") not in (None, "msgpack"):
            self.problem(f"{path}.serialization", "only 'msgpack' is supported")
        return flags

    def ttl(self, path: str, spec: Mapping[str, Any]) -> float | None:
        try:
            return parse_duration(spec.get("ttl"), name="ttl")
        except ConfigError as err:
            self.problem(f"{path}.ttl", str(err))
            return None

    def store(
        self, path: str, spec: Any, extra: frozenset[str] = frozenset(),
        owner: str | None = None, **fields: Any,
    ) -> Any:  # fmt: skip
        """The single-store block of a part (``fields``: more block fields)."""
        part = self.reader.part(path, spec)
        if part is None:
            return None
        kind, spec = part
        if kind == "hybrid":
            self.problem(path, "a hybrid part inside a hybrid memory has no block form")
            return None
        self.reader.check_keys(path, spec, PART_KEYS | extra, owner)
        store = self.reader.store_kind(path, kind, spec)
        url = None if store is None else self.reader.url(path, store, spec, kind)
        options = self.reader.mapping(f"{path}.options", spec.get("options"))
        storage = dict(self.reader.mapping(f"{path}.storage_options", spec.get("storage_options")))
        if "consistency" in spec:
            self.problem(f"{path}.consistency", "a block has no 'consistency' setting: put "
                         "?consistency=strong in the Redis URL instead")  # fmt: skip
        if url is None:
            return None
        scheme = url.partition("://")[0].lower()
        cls = _BLOCK_OF_SCHEME.get(scheme.partition("::")[0])
        if cls is None:
            known = ", ".join(sorted(_BLOCK_OF_SCHEME))
            self.problem(path, f"no memory block for {scheme}:// stores (blocks exist for {known})")
            return None
        fields = {**options, **fields}
        if cls is ParquetArchiveMemory and "row_group_bytes" in fields:
            fields["row_group_size"] = fields.pop("row_group_bytes")
        if cls is S3Memory or cls is ParquetArchiveMemory:
            kwargs = storage.pop("client_kwargs", None)
            endpoint = kwargs.get("endpoint_url") if isinstance(kwargs, Mapping) else None
            for key, target in (("key", "aws_access_key_id"), ("secret", "aws_secret_access_key"),
                                ("endpoint_url", "endpoint_url")):  # fmt: skip
                value = storage.pop(key, endpoint if key == "endpoint_url" else None)
                if value is not None:
                    fields[target] = value
        for key in storage:
            self.out.notes.append(f"{path}.storage_options.{key}: not a block field, not kept")
        try:
            if cls in (RedisMemory, MongoMemory, S3Memory, ParquetArchiveMemory):
                return cls(url=url, **fields)
            return cls.from_connection_string(url, **fields)
        except ValidationError as err:
            self.invalid(path, err, {"url": "connection"})
        return None

    def single(self, path: str, spec: Mapping[str, Any], namespace: str, name: str) -> None:
        flags = self.settings(path, spec)
        ttl = self.ttl(path, spec)
        block = self.store(
            path, spec, MEMORY_KEYS | {"schemas"}, namespace=spec.get("namespace", namespace),
            ttl=ttl, **flags,
        )  # fmt: skip
        if block is not None:
            self.out.blocks.append((name, block))

    def hybrid(self, path: str, spec: Mapping[str, Any], namespace: str, name: str) -> None:
        self.reader.check_keys(path, spec, HYBRID_KEYS | MEMORY_KEYS | {"schemas"})
        flags = self.settings(path, spec)
        parts: dict[str, Any] = {}
        for role in ("primary", "secondary"):
            if role not in spec:
                self.problem(path, f"a hybrid memory needs '{role}' (or 'tiers')")
            else:
                parts[role] = self.store(f"{path}.{role}", spec[role], owner=f"the memory ({path})")
        sync = self.reader.sync(path, spec)
        fields: dict[str, Any] = {
            "strategy": sync.strategy, "flush_interval": sync.flush_interval,
            "sync_interval": sync.sync_interval,
        }  # fmt: skip
        ttl = self.ttl(path, spec)
        if None in parts.values() or len(parts) < 2:
            return
        try:
            block = HybridMemory(
                **parts, **fields, journal=spec.get("journal"),
                namespace=spec.get("namespace", namespace), ttl=ttl, **flags,
            )  # fmt: skip
        except ValidationError as err:
            self.invalid(path, err, {"strategy": "sync.strategy", "sync_interval": "sync.interval"})
            return
        self.out.blocks.extend((f"{name}-{role}", part) for role, part in parts.items())
        self.out.blocks.append((name, block))

    def tiered(self, path: str, spec: Mapping[str, Any], namespace: str, name: str) -> None:
        self.reader.check_keys(path, spec, TIERED_KEYS | MEMORY_KEYS | {"schemas"})
        flags = self.settings(path, spec)
        raw_tiers = self.reader.tier_list(path, spec)
        if not raw_tiers:
            return
        tiers: list[MemoryTier] = []
        for i, raw in enumerate(raw_tiers):
            tier_path = f"{path}.tiers[{i}]"
            if not isinstance(raw, Mapping):
                self.problem(tier_path, "a tier must be an object")
                continue
            entries = raw.get("maxEntries")
            if isinstance(entries, bool) or (isinstance(entries, int) and entries > 2**63):
                self.problem(f"{tier_path}.maxEntries", f"must be a positive integer: {entries}")
                continue
            block = self.store(tier_path, raw, TIER_KEYS, owner=f"the memory ({path})")
            if block is None:
                continue
            values = {
                "name": raw.get("name", ""), "block": block, "ttl": raw.get("ttl"),
                "max_size": raw.get("maxSize"), "max_entries": raw.get("maxEntries"),
                "patterns": raw.get("patterns", []),
            }  # fmt: skip
            try:
                tiers.append(MemoryTier(**values))
            except ValidationError as err:
                self.invalid(tier_path, err, {"max_size": "maxSize", "max_entries": "maxEntries"})
        names = [t.get("name") for t in raw_tiers if isinstance(t, Mapping)]
        self.reader.rules(path, spec, [n for n in names if isinstance(n, str)])  # problems
        migration = spec.get("migration")
        rules = migration.get("rules", []) if isinstance(migration, Mapping) else []
        ttl = self.ttl(path, spec)
        if len(tiers) < len(raw_tiers) or self.reader.problems:
            return
        try:
            block = TieredMemory(
                tiers=tiers, rules=rules, promote=spec.get("promote", "home"),
                namespace=spec.get("namespace", namespace), ttl=ttl, **flags,
            )  # fmt: skip
        except ValidationError as err:
            self.invalid(path, err, {"rules": "migration.rules"})
            return
        self.out.blocks.extend((f"{name}-{slugify(t.name)}", t.block) for t in tiers)
        self.out.blocks.append((name, block))

    def plan(self, path: str, spec: Mapping[str, Any], namespace: str, name: str) -> None:
        """Plan the blocks of one memory (a single store, a hybrid or tiers)."""
        kind = self.reader.kind(path, spec)
        if kind == "hybrid":
            method = self.tiered if "tiers" in spec else self.hybrid
            method(path, spec, namespace, name)
        elif kind is not None:
            self.single(path, spec, namespace, name)


def blocks_from_config(
    source: Mapping[str, Any] | str | os.PathLike[str],
    *,
    name_prefix: str = "memory",
    connections: Mapping[str, str] | None = None,
) -> ConfigBlocks:
    """Plan the blocks a config describes (nothing is saved; see :meth:`ConfigBlocks.save`).

    Args:
        source: The config as a dict or the path of a JSON file.
        name_prefix: Name of the block (or first part of the names, see the module docstring):
            lowercase letters, digits and dashes.
        connections: URL per backend name for parts that give no ``connection``.

    Returns:
        The planned blocks and the notes about settings no block keeps.

    Raises:
        ConfigError: Listing every problem with its path in the config.
    """
    if not _NAME.match(name_prefix):
        raise ConfigError(
            f"name prefix {name_prefix!r}: use lowercase letters, digits and dashes only"
        )
    spec, base = load_config(source)
    planner = _Planner(ConfigReader(connections or {}, base))
    path = "memory"
    groups = planner.reader.named_parts(spec)  # namespaces, datasets, compute.cache
    if groups is None:
        planner.plan(path, spec, spec.get("namespace", "default"), name_prefix)
    else:
        for name, part_path, part_spec in groups:
            planner.plan(part_path, part_spec, name, f"{name_prefix}-{slugify(name)}")
        for section in ("streams", "processing"):
            if section in spec:
                planner.out.notes.append(f"{path}.{section}: no block form, not kept")
    names = [name for name, _ in planner.out.blocks]
    for name in sorted({n for n in names if names.count(n) > 1}):
        planner.problem(path, f"two blocks would be named {name!r}: rename a part")
    if planner.reader.problems:
        raise planner.reader.error()
    return planner.out


def default_prefix(path: str | os.PathLike[str]) -> str:
    """The name prefix for a config file: its name without extension, as a block name.

    Example:
        >>> default_prefix("conf/Shop_Memory.json")
        'shop-memory'
    """
    return slugify(Path(path).stem)

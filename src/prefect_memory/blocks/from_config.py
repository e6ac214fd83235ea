"""The blocks a tutorial config describes: ``blocks_from_config(config, name_prefix=...)``.

The config is read by the same reader as :func:`prefect_memory.from_config`
(:func:`~prefect_memory.config.read_config`: one store, hybrid, tiers, namespaces; a part's
``connection``/``location``, default connections, paths relative to the config file), and
the blocks are planned from its specs. Each shape becomes blocks:

- one store: one block named ``<prefix>``;
- hybrid: ``<prefix>-primary`` and ``<prefix>-secondary``, then the ``HybridMemoryBlock``
  ``<prefix>`` that references them;
- tiers: one block per tier, ``<prefix>-<tier>``, then the ``TieredMemoryBlock`` ``<prefix>``;
- namespaces (and the named parts of ``datasets`` and ``compute.cache``): the above for
  each, with the prefix ``<prefix>-<name>``.

Memory settings become block fields (``ttl``, ``refresh``, ``compression``); what a block
cannot hold (``pickle``, ``schemas``) is refused, and what has no block form (the
``streams``/``processing`` sections, S3 ``storage_options`` other than the key, secret and
endpoint) is listed in :attr:`ConfigBlocks.notes`. Problems are collected and raised as one
:class:`~prefect_memory.ConfigError` listing each with its path in the config: the config's
own problems first (the reader's), then, once it reads cleanly, what the blocks refuse.

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

from ..config import parse_config
from ..config.document import config_error
from ..config.specs import (
    HybridSpec,
    NamespacesSpec,
    PartSpec,
    SingleSpec,
    StoreSpec,
    TieredSpec,
)
from ..errors import ConfigError
from .archive import ParquetArchiveMemory
from .base import MemoryBlock
from .composite import HybridMemoryBlock, TieredMemoryBlock, slugify
from .composite_parts import MemoryTier
from .local import InProcessMemory, JsonMemory, SqliteMemory
from .remote import MongoDBMemory, RedisMemory, S3Memory

_NAME = re.compile(r"^[a-z0-9-]+$")
_BLOCK_OF_SCHEME: dict[str, type[MemoryBlock]] = {
    "redis": RedisMemory, "rediss": RedisMemory, "mongodb": MongoDBMemory,
    "mongodb+srv": MongoDBMemory, "s3": S3Memory, "json": JsonMemory, "sqlite": SqliteMemory,
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
    """Plans the blocks of a spec; what a block refuses is a problem at the spec's path."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.out = ConfigBlocks()

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def invalid(
        self, path: str, err: ValidationError, rename: Mapping[str, str] | None = None
    ) -> None:
        """A block's validation errors, each at its key's path in the config."""
        rename = rename or {}
        for error in err.errors():
            loc = error["loc"]
            parts = [rename.get(str(p), str(p)) if i == 0 else p for i, p in enumerate(loc)]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
            message = str(error["msg"]).removeprefix("Value error, ")
            self.problem(path + where, message)

    def settings(self, path: str, spec: SingleSpec | HybridSpec | TieredSpec) -> dict[str, Any]:
        """The memory settings as block fields; refuses what a block cannot hold
        (``pickle``, ``schemas``)."""
        settings = spec.settings
        if settings.pickle:
            self.problem(
                f"{path}.pickle",
                "a block never loads pickled values (anyone who can edit the block or write "
                "the store could run code in your flows): remove 'pickle', or build with "
                "pm.from_config",
            )
        if spec.schemas is not None:
            self.problem(
                spec.schemas.path,
                "a block has no record schemas: remove 'schemas' to save blocks, or build "
                "with pm.from_config (which checks them on set)",
            )
        fields: dict[str, Any] = {"namespace": settings.namespace, "ttl": settings.ttl}
        fields.update({k: v for k in _BLOCK_FLAGS if (v := getattr(settings, k)) is not None})
        return fields

    def store(self, spec: PartSpec, **fields: Any) -> Any:
        """The single-store block of a part (``fields``: more block fields)."""
        if not isinstance(spec, StoreSpec):
            self.problem(spec.path, "a hybrid part inside a hybrid memory has no block form")
            return None
        path = spec.path
        storage = dict(spec.storage_options or {})
        if spec.consistency is not None:
            self.problem(f"{path}.consistency", "a block has no 'consistency' setting: put "
                         "?consistency=strong in the Redis URL instead")  # fmt: skip
        scheme = spec.url.partition("://")[0].lower()
        cls = _BLOCK_OF_SCHEME.get(scheme.partition("::")[0])
        if cls is None:
            known = ", ".join(sorted(_BLOCK_OF_SCHEME))
            self.problem(path, f"no memory block for {scheme}:// stores (blocks exist for {known})")
            return None
        fields = {**spec.options, **fields}
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
            if cls in (RedisMemory, MongoDBMemory, S3Memory, ParquetArchiveMemory):
                return cls(url=spec.url, **fields)
            return cls.from_connection_string(spec.url, **fields)
        except ValidationError as err:
            self.invalid(path, err, {"url": "connection"})
        return None

    def single(self, spec: SingleSpec, name: str) -> None:
        block = self.store(spec.store, **self.settings(spec.path, spec))
        if block is not None:
            self.out.blocks.append((name, block))

    def hybrid(self, spec: HybridSpec, name: str) -> None:
        fields = self.settings(spec.path, spec)
        parts = {"primary": self.store(spec.primary), "secondary": self.store(spec.secondary)}
        sync = spec.sync
        if None in parts.values():
            return
        try:
            block = HybridMemoryBlock(
                **parts, strategy=sync.strategy, flush_interval=sync.flush_interval,
                sync_interval=sync.sync_interval, journal=spec.journal,
                journal_sync=spec.journal_sync, **fields,
            )  # fmt: skip
        except ValidationError as err:
            rename = {"strategy": "sync.strategy", "sync_interval": "sync.interval"}
            self.invalid(spec.path, err, rename)
            return
        self.out.blocks.extend((f"{name}-{role}", part) for role, part in parts.items())
        self.out.blocks.append((name, block))

    def tiered(self, spec: TieredSpec, name: str) -> None:
        fields = self.settings(spec.path, spec)
        tiers: list[MemoryTier] = []
        for tier in spec.tiers:
            block = self.store(tier.store)
            if block is None:
                continue
            values = {
                "name": tier.name, "block": block, "ttl": tier.ttl, "max_size": tier.max_size,
                "max_entries": tier.max_entries, "patterns": list(tier.patterns),
            }  # fmt: skip
            try:
                tiers.append(MemoryTier(**values))
            except ValidationError as err:
                rename = {"max_size": "maxSize", "max_entries": "maxEntries"}
                self.invalid(tier.path, err, rename)
        if len(tiers) < len(spec.tiers) or self.problems:
            return
        try:
            block = TieredMemoryBlock(
                tiers=tiers, rules=[rule.as_config() for rule in spec.rules],
                promote=spec.promote, **fields,
            )  # fmt: skip
        except ValidationError as err:
            self.invalid(spec.path, err, {"rules": "migration.rules"})
            return
        self.out.blocks.extend((f"{name}-{slugify(t.name)}", t.block) for t in tiers)
        self.out.blocks.append((name, block))

    def plan(self, spec: SingleSpec | HybridSpec | TieredSpec, name: str) -> None:
        """Plan the blocks of one memory (a single store, a hybrid or tiers)."""
        if isinstance(spec, SingleSpec):
            self.single(spec, name)
        elif isinstance(spec, HybridSpec):
            self.hybrid(spec, name)
        else:
            self.tiered(spec, name)


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
        ConfigError: Listing every problem with its path in the config: first those of its
            shapes and values (:func:`~prefect_memory.config.read_config`), else what the
            blocks refuse.
    """
    if not _NAME.match(name_prefix):
        raise ConfigError(
            f"name prefix {name_prefix!r}: use lowercase letters, digits and dashes only"
        )
    spec = parse_config(source, connections)
    planner = _Planner()
    if isinstance(spec, NamespacesSpec):
        for part in spec.parts:
            planner.plan(part.memory, f"{name_prefix}-{slugify(part.name)}")
        for section in spec.extras():
            planner.out.notes.append(f"{spec.path}.{section}: no block form, not kept")
    else:
        planner.plan(spec, name_prefix)
    names = [name for name, _ in planner.out.blocks]
    for name in sorted({n for n in names if names.count(n) > 1}):
        planner.problem("memory", f"two blocks would be named {name!r}: rename a part")
    if planner.problems:
        raise config_error(planner.problems)
    return planner.out


def default_prefix(path: str | os.PathLike[str]) -> str:
    """The name prefix for a config file: its name without extension, as a block name.

    Example:
        >>> default_prefix("conf/Shop_Memory.json")
        'shop-memory'
    """
    return slugify(Path(path).stem)

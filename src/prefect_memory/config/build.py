"""Build the memory a config's spec describes: :func:`from_config` and :class:`Namespaces`.

:func:`from_config` reads the config once (:func:`~.reader.read_config`: every shape problem,
nothing opened), then :class:`MemoryBuilder` opens what the spec describes: a single store,
a ``HybridMemory``, a ``TieredMemory``, or one of those per named part. What goes wrong
while opening (a store refusing its URL or an option) is reported at the spec's path, or at
the option's (``memory.tiers[1].options.claim_timeout``) when the store's message names an
option the part gives; all of it is raised as one :class:`~prefect_memory.ConfigError`.

Example:
    >>> mem = from_config({"memory": {"backend": "hybrid", "primary": "memory",
    ...                               "secondary": "memory", "sync": {"enabled": False}}})
    >>> type(mem).__name__, mem.sync_interval
    ('HybridMemory', None)
    >>> from_config({"backend": "memory", "options": {"colour": 1}})
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ConfigError: invalid memory config:
      memory.options: the memory store refused its options: ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..memory import Memory
from ..plugins.base import Backend
from ..registry import open_backend
from .document import config_error
from .reader import read_config
from .specs import (
    ConfigSpec,
    HybridSpec,
    MemorySpec,
    NamespacesSpec,
    PartSpec,
    SingleSpec,
    StoreSpec,
    TieredSpec,
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


class MemoryBuilder:
    """Opens what a spec describes; what cannot be opened is a problem at the spec's path.

    Example:
        >>> from prefect_memory.config import parse_config
        >>> builder = MemoryBuilder()
        >>> builder.build(parse_config({"backend": "memory", "namespace": "n"})).namespace
        'n'
    """

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        """Record a problem at ``path``."""
        self.problems.append(f"{path}: {message}")

    def build(self, spec: ConfigSpec) -> Memory | Namespaces:
        """The memory (or the named memories) of ``spec``; raises every problem at once."""
        if isinstance(spec, NamespacesSpec):
            built: Memory | Namespaces | None = self.namespaces(spec)
        else:
            built = self.memory(spec)
        if self.problems or built is None:
            raise config_error(self.problems)
        return built

    def namespaces(self, spec: NamespacesSpec) -> Namespaces:
        """One memory per named part."""
        memories: dict[str, Memory] = {}
        for part in spec.parts:
            memory = self.memory(part.memory)
            if memory is not None:
                memories[part.name] = memory
        settings = {part.name: dict(part.applied) for part in spec.parts}
        return Namespaces(memories, settings, spec.extras())

    def memory(self, spec: MemorySpec) -> Memory | None:
        """One memory (a single store, a hybrid or tiers) with its record schemas."""
        memory: Memory | None
        if isinstance(spec, SingleSpec):
            backend = self.store(spec.store)
            settings = spec.settings
            memory = None if backend is None else Memory(
                backend, settings.namespace, **settings.memory_options()
            )  # fmt: skip
        elif isinstance(spec, HybridSpec):
            memory = self.hybrid(spec)
        else:
            memory = self.tiered(spec)
        if memory is not None and spec.schemas is not None:
            from ..validation.config import schema_hook_from_config

            hook = schema_hook_from_config(spec.schemas.section, path=spec.schemas.path)
            if hook is not None:  # JSON Schemas checked on set (prefect_memory.validation)
                memory.hooks = (hook, *memory.hooks)
        return memory

    def store(self, spec: StoreSpec) -> Backend | None:
        """Open a store."""
        try:
            return open_backend(spec.url, **spec.open_options())
        except ConfigError as err:
            self.problem(self.where(spec, str(err)), str(err))
        except (TypeError, ValueError) as err:  # e.g. an option the store does not take
            self.problem(
                f"{spec.path}.options", f"the {spec.store} store refused its options: {err}"
            )
        return None

    @staticmethod
    def where(spec: StoreSpec, message: str) -> str:
        """Where a store's refusal belongs: the option its message starts with, else the part.

        Stores name the option they refuse first (``claim_timeout must be a positive
        number of seconds, got 0``); an option the part gives in ``options`` is reported at
        its own path, anything else (the URL, a default) at the part's.

        Example:
            >>> from prefect_memory.config import parse_config
            >>> spec = parse_config({"backend": "mongodb", "connection": "mongodb://h/db",
            ...                      "options": {"claim_timeout": 0}}).store
            >>> MemoryBuilder.where(spec, "claim_timeout must be a positive number, got 0")
            'memory.options.claim_timeout'
            >>> MemoryBuilder.where(spec, "a MongoDB URL needs a host")
            'memory'
        """
        name = message.split(" ", 1)[0].rstrip(":,")
        return f"{spec.path}.options.{name}" if name in spec.options else spec.path

    def part(self, spec: PartSpec) -> Backend | None:
        """The backend of a hybrid's part: a store, or a hybrid or tiered memory's."""
        if isinstance(spec, StoreSpec):
            return self.store(spec)
        memory = self.hybrid(spec) if isinstance(spec, HybridSpec) else self.tiered(spec)
        return None if memory is None else memory.backend

    def hybrid(self, spec: HybridSpec) -> Memory | None:
        """A ``HybridMemory`` over two parts."""
        from ..hybrid import HybridMemory

        primary, secondary = self.part(spec.primary), self.part(spec.secondary)
        if self.problems or primary is None or secondary is None:
            return None
        settings, sync = spec.settings, spec.sync
        mem = HybridMemory(
            primary, secondary, strategy=sync.strategy, journal=spec.journal,
            journal_sync=spec.journal_sync, flush_interval=sync.flush_interval,
            namespace=settings.namespace, **settings.memory_options(),
        )  # fmt: skip
        mem.sync_interval = sync.sync_interval
        return mem

    def tiered(self, spec: TieredSpec) -> Memory | None:
        """A ``TieredMemory`` over its tiers, with its migration rules."""
        from ..tiers import Tier, TieredMemory

        tiers = []
        for tier in spec.tiers:
            backend = self.store(tier.store)
            if backend is not None:
                limits = {"ttl": tier.ttl, "max_bytes": tier.max_bytes,
                          "max_entries": tier.max_entries, "patterns": tier.patterns}  # fmt: skip
                tiers.append(Tier(tier.name, backend, **limits))
        if self.problems or len(tiers) < len(spec.tiers):
            return None
        rules = [rule.migration_rule() for rule in spec.rules]
        settings = spec.settings
        try:
            return TieredMemory(tiers, rules, promote=spec.promote, namespace=settings.namespace,
                                **settings.memory_options())  # fmt: skip
        except ConfigError as err:
            self.problem(spec.path, str(err))
            return None


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
        ConfigError: listing every problem with its path in the config: first those of
            its shapes and values, else those of opening its stores.
    """
    spec, problems = read_config(source, connections)
    if spec is None:
        raise config_error(problems)
    return MemoryBuilder().build(spec)

"""The typed specs a config is read into, before anything is opened.

:func:`~prefect_memory.config.read_config` reads the tutorial's JSON once into these pydantic
models (every problem listed with its path); :func:`~prefect_memory.from_config` builds a
Memory from them and :func:`~prefect_memory.blocks.blocks_from_config` plans blocks from
them. Each spec keeps its ``path`` in the config, so what goes wrong later (a store refusing
its URL when opened, a block refusing a value) is still reported where it was written.

The memory shapes are told apart by ``type`` (as Feast types its store configs):

- ``"single"``: :class:`SingleSpec`, one store;
- ``"hybrid"``: :class:`HybridSpec`, a primary and a secondary (each a :class:`StoreSpec`, a
  hybrid or tiers) kept in sync (:class:`SyncSpec`);
- ``"tiered"``: :class:`TieredSpec`, :class:`TierSpec` tiers and :class:`RuleSpec` rules;
- ``"namespaces"``: :class:`NamespacesSpec`, named parts (:class:`NamedPart`) and the
  ``streams``/``processing`` sections.

Example:
    >>> from prefect_memory.config import parse_config
    >>> spec = parse_config({"memory": {"backend": "hybrid", "ttl": "1h", "primary": "memory",
    ...                                 "secondary": {"type": "sqlite", "location": "/d/m.db"}}})
    >>> spec.type, spec.settings.ttl, spec.primary.url, spec.secondary.url
    ('hybrid', 3600.0, 'memory://', 'sqlite:////d/m.db')
    >>> spec.secondary.path, spec.sync
    ('memory.secondary', SyncSpec(strategy='write-through', interval=30000.0, enabled=True))
    >>> CONFIG_SPEC.validate_python(spec.model_dump()) == spec
    True
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyncSpec(_Spec):
    """A hybrid memory's ``sync`` section, checked.

    Example:
        >>> SyncSpec("write-behind", 60000).flush_interval
        5.0
    """

    strategy: Literal["write-through", "write-behind"] = "write-through"
    #: Milliseconds between syncs (also bounds how long writes wait behind).
    interval: float = Field(30000.0, gt=0)
    enabled: bool = True

    def __init__(self, *args: Any, **data: Any) -> None:
        # Positional arguments as the former dataclass took them (strategy, interval, enabled).
        data.update(zip(("strategy", "interval", "enabled"), args, strict=False))
        super().__init__(**data)

    @property
    def flush_interval(self) -> float:
        """Seconds between flushes of pending writes (at most 5)."""
        return min(self.interval / 1000.0, 5.0)

    @property
    def sync_interval(self) -> float | None:
        """Seconds between background syncs, ``None`` when sync is off."""
        return self.interval / 1000.0 if self.enabled else None


class MemorySettings(_Spec):
    """The settings of one memory: ``namespace``, ``ttl``, ``refresh`` and its codec."""

    namespace: str = "default"
    #: Seconds (``None``: no expiry).
    ttl: float | None = None
    #: ``None`` where the config does not say (the memory's or block's default applies).
    refresh: bool | None = None
    compression: bool | None = None
    pickle: bool = False
    serialization: Literal["msgpack"] = "msgpack"

    def memory_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~prefect_memory.Memory` (besides the namespace)."""
        from ..codecs import Codec

        out: dict[str, Any] = {"ttl": self.ttl}
        if self.refresh is not None:
            out["refresh"] = self.refresh
        codec = {k: True for k in ("compression", "pickle") if getattr(self, k)}
        if codec:
            out["codec"] = Codec(**codec)
        return out


class StoreSpec(_Spec):
    """One store: which, where, and the keyword arguments it is opened with."""

    type: Literal["store"] = "store"
    #: Where the part is in the config (``memory.tiers[1]``).
    path: str
    #: The backend the config names (aliases resolved): ``redis``, ``s3``, ``sqlite``...
    kind: str
    #: The store that opens: ``parquet`` for the Parquet shape, else ``kind``.
    store: str
    url: str
    options: dict[str, Any] = Field(default_factory=dict)
    #: ``None`` when the config has no ``storage_options``.
    storage_options: dict[str, Any] | None = None
    #: Redis stores only (the reader refuses it on the others).
    consistency: Any = None
    format: Literal["parquet"] | None = None
    partitioning: Literal["date"] | None = None

    def open_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~prefect_memory.registry.open_backend`."""
        out = dict(self.options)
        if self.storage_options is not None:
            out["storage_options"] = dict(self.storage_options)
        if self.consistency is not None:
            out["consistency"] = self.consistency
        return out


class SchemasSpec(_Spec):
    """A ``schemas`` section (checked by :mod:`prefect_memory.validation`), as written."""

    #: Where the section is (``memory.schemas`` for the one namespaces inherit).
    path: str
    section: Any


class TierSpec(_Spec):
    """One tier of a tiered memory: its store and limits."""

    path: str
    name: str
    store: StoreSpec
    #: Seconds an entry stays in the tier (``None``: no limit).
    ttl: float | None = None
    max_bytes: int | None = None
    #: ``maxSize`` as written (``"100MB"``): blocks keep it so.
    max_size: int | str | None = None
    max_entries: int | None = None
    patterns: tuple[str, ...] = ()


class RuleSpec(_Spec):
    """A migration rule: ``from`` a tier ``to`` another when ``condition`` holds."""

    path: str
    source: str
    target: str
    condition: str

    def migration_rule(self) -> Any:
        """The :class:`~prefect_memory.tiers.MigrationRule` (the condition parsed)."""
        from ..tiers import MigrationRule

        return MigrationRule.parse(self.source, self.target, self.condition)

    def as_config(self) -> dict[str, str]:
        """The rule as the config writes it (``{"from", "to", "condition"}``)."""
        return {"from": self.source, "to": self.target, "condition": self.condition}


class _MemorySpec(_Spec):
    """What every memory has: where it is written, its settings, its record schemas."""

    type: str
    path: str
    settings: MemorySettings = Field(default_factory=MemorySettings)
    #: The ``schemas`` section its records are checked with (its own or the inherited one).
    schemas: SchemasSpec | None = None


class SingleSpec(_MemorySpec):
    """A memory on one store."""

    type: Literal["single"] = "single"
    store: StoreSpec


#: The values of a hybrid's ``journal_sync`` (:data:`prefect_memory.hybrid.journal.JOURNAL_SYNCS`).
JournalSync = Literal["full", "normal"]


class HybridSpec(_MemorySpec):
    """A hybrid memory: a primary and a secondary kept in sync.

    Example:
        >>> from prefect_memory.config import parse_config
        >>> spec = parse_config({"backend": "hybrid", "primary": "memory", "secondary": "memory",
        ...                      "journal_sync": "normal"})
        >>> spec.journal, spec.journal_sync
        (None, 'normal')
    """

    type: Literal["hybrid"] = "hybrid"
    primary: PartSpec
    secondary: PartSpec
    sync: SyncSpec = Field(default_factory=SyncSpec)
    journal: str | None = None
    #: How durable a write-behind journal commit is: ``"full"`` (an fsync per commit:
    #: survives a crash of the machine) or ``"normal"`` (survives a crash of the process).
    journal_sync: JournalSync = "full"


class TieredSpec(_MemorySpec):
    """A tiered memory: tiers, migration rules and where reads promote entries."""

    type: Literal["tiered"] = "tiered"
    tiers: list[TierSpec]
    rules: list[RuleSpec] = Field(default_factory=list)
    promote: Literal["home", "first", "never"] = "home"


#: A part of a hybrid memory: a store, or (as ``from_config`` allows) a hybrid or tiers.
PartSpec = Annotated[StoreSpec | HybridSpec | TieredSpec, Field(discriminator="type")]
#: One memory.
MemorySpec = Annotated[SingleSpec | HybridSpec | TieredSpec, Field(discriminator="type")]


class NamedPart(_Spec):
    """A part of a namespaces config: the name is its namespace."""

    name: str
    path: str
    memory: MemorySpec
    #: The store settings written on the part (``format``, ``partitioning``,
    #: ``consistency``), as applied.
    applied: dict[str, Any] = Field(default_factory=dict)


class NamespacesSpec(_Spec):
    """Named parts (``namespaces``, ``datasets``, ``compute.cache``) and the analytics sections."""

    type: Literal["namespaces"] = "namespaces"
    path: str = "memory"
    parts: list[NamedPart] = Field(default_factory=list)
    #: ``streams`` and ``processing`` as written (checked; applied by
    #: :mod:`prefect_memory.analytics`).
    streams: dict[str, Any] | None = None
    processing: dict[str, Any] | None = None

    def extras(self) -> dict[str, Any]:
        """The analytics sections the config has, by name."""
        pairs = (("streams", self.streams), ("processing", self.processing))
        return {name: section for name, section in pairs if section is not None}


#: What a config describes: one memory, or named parts.
ConfigSpec = Annotated[
    SingleSpec | HybridSpec | TieredSpec | NamespacesSpec, Field(discriminator="type")
]
#: Validates a :data:`ConfigSpec` from plain data (``model_dump()`` of one, or JSON).
CONFIG_SPEC: TypeAdapter[Any] = TypeAdapter(ConfigSpec)

HybridSpec.model_rebuild()

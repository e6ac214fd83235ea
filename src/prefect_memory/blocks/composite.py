"""Composed memory blocks: :class:`HybridMemoryBlock` (two stores) and :class:`TieredMemoryBlock`.

Their parts are memory blocks themselves (``RedisMemory``, ``SqliteMemory``...): saved in
the Prefect API, they are referenced by the composed block (the UI shows them as block
references) and load as blocks with it. Building the :class:`~prefect_memory.Memory` is the
only thing these blocks do differently: the memory API, result storage, ``ttl`` expiry of
results and locks are those of every :class:`~prefect_memory.blocks.MemoryBlock`.

The composed block's ``namespace``, ``ttl`` and ``result_signing_key`` apply to every entry
and stored result; the parts give the stores (their connection fields), their own
``namespace``, ``ttl`` and ``result_signing_key`` are not used.

Example:
    >>> import tempfile
    >>> from prefect_memory.blocks import HybridMemoryBlock, InProcessMemory, SqliteMemory
    >>> folder = tempfile.mkdtemp()
    >>> block = HybridMemoryBlock(
    ...     primary=InProcessMemory(name="docs-hybrid"),
    ...     secondary=SqliteMemory(path=f"{folder}/memory.db"),
    ...     namespace="docs",
    ... )
    >>> block.set("user:7", {"name": "Ada"})
    >>> block.secondary.memory.with_namespace("docs").get("user:7")  # written to both
    {'name': 'Ada'}

The blocks were named ``HybridMemory`` and ``TieredMemory`` before, like the engine classes
:class:`prefect_memory.HybridMemory` and :class:`prefect_memory.tiers.TieredMemory` (whose
constructors differ); those names still load the blocks here, and pickles made with them.
The block type slugs (``hybrid-memory``, ``tiered-memory``) did not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..aio import async_twin
from ..memory import Memory
from ..tiers.migration import BATCH_SIZE
from .base import MemoryBlock
from .composite_parts import (
    MemoryTier,
    StoreBlock,
    TierRule,
    fix_part_types,
    resolve_reference,
    tier_references,
)
from .locks import MemoryLockManager, RedisLockManager
from .renamed import renamed_getattr

if TYPE_CHECKING:
    from ..hybrid import SyncReport
    from ..tiers import MigrationReport


class _ComposedBlock(MemoryBlock, ABC):
    """What both composed blocks share: parts, saving them, locks on a Redis part.

    ``ABC`` among the direct bases keeps Prefect from registering this class as a block type.
    """

    @abstractmethod
    def parts(self) -> dict[str, MemoryBlock]:
        """The part blocks by role (``primary``/``secondary``, or the tier names)."""

    @classmethod
    def from_connection_string(cls, url: str, **fields: Any) -> MemoryBlock:
        """Not available: a composed block is built from its parts.

        Raises:
            ValueError: Always.
        """
        raise ValueError(f"a {cls.__name__} block is built from its parts, not from a URL")

    def save_with_parts(self, name: str, *, overwrite: bool = False) -> list[tuple[str, str]]:
        """Save every part not saved yet as ``<name>-<role>``, then this block as ``name``.

        Saved parts are referenced by the composed block: the UI shows them as block
        references and a change to a part applies to every block using it. Parts already
        saved keep their name and are not saved again.

        Args:
            name: Name of this block; parts get ``<name>-<role>`` (e.g. ``cache-primary``).
            overwrite: Replace block documents that already have these names.

        Returns:
            ``(block type slug, block name)`` of every block saved, parts first.
        """
        saved: list[tuple[str, str]] = []
        for role, part in self.parts().items():
            if part._block_document_id is None:
                part_name = f"{name}-{slugify(role)}"
                part.save(part_name, overwrite=overwrite)
                saved.append((part.get_block_type_slug(), part_name))
        self.save(name, overwrite=overwrite)
        saved.append((self.get_block_type_slug(), name))
        return saved

    def _define_metadata_on_nested_blocks(
        self, block_document_references: dict[str, dict[str, Any]]
    ) -> None:
        # Prefect inlines a referenced part's data without its block type, and a union of
        # blocks with the same fields (JSON / SQLite: a path) then picks the wrong class.
        fix_part_types(self, block_document_references)
        super()._define_metadata_on_nested_blocks(block_document_references)

    def _redis_part(self) -> MemoryBlock | None:
        return None

    def lock_manager(self, hold_timeout: float = 300.0) -> MemoryLockManager:
        """A lock manager with a hold timeout (see :meth:`MemoryBlock.lock_manager`).

        With a Redis primary (hybrid) or a Redis first tier (tiered), locks are taken in
        that Redis with ``SET NX PX``: atomic across every process and machine.
        """
        redis_part = self._redis_part()
        if redis_part is not None:
            locks_block = redis_part.model_copy(update={"namespace": self.namespace})
            return RedisLockManager(locks_block, hold_timeout=hold_timeout)
        return MemoryLockManager(self, hold_timeout=hold_timeout)


def slugify(text: str) -> str:
    """A block-name-safe form of ``text`` (lowercase letters, digits and dashes).

    Example:
        >>> slugify("Hot Tier_1")
        'hot-tier-1'
    """
    out = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in text.lower())
    return "-".join(filter(None, out.split("-"))) or "part"


class HybridMemoryBlock(_ComposedBlock):
    """A memory over a primary and a secondary block, kept in step (write-through/-behind)."""

    # Set, not derived from the class name: saved blocks and deployments name the slug.
    _block_type_name: ClassVar[str] = "Hybrid Memory"
    _block_type_slug: ClassVar[str] = "hybrid-memory"
    _description: ClassVar[str] = (
        "A prefect-memory store over two memory blocks: a fast primary (e.g. Redis) answers "
        "reads, a durable secondary (e.g. SQLite, MongoDB) gets every write, synchronously "
        "(write-through) or from a local journal (write-behind). Also a result storage."
    )
    _code_example: ClassVar[str] = """
```python
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect_memory.blocks import HybridMemoryBlock

memory = HybridMemoryBlock.load("BLOCK_NAME")  # primary and secondary load as blocks too
memory.set("user:7", {"name": "Ada"}, ttl=3600)  # written to both stores
memory.get("user:7")  # read from the primary, else the secondary
memory.sync()  # reconcile both stores (the newer write wins)

@task(cache_policy=INPUTS + TASK_SOURCE, result_storage=memory)
def features(day: str):
    return {"day": day}
```
"""

    primary: StoreBlock = Field(
        description="The fast store that answers reads (a saved memory block, e.g. Redis).",
    )
    secondary: StoreBlock = Field(
        description="The durable store that receives every write (e.g. SQLite or MongoDB).",
    )
    strategy: Literal["write-through", "write-behind"] = Field(
        default="write-through",
        description=(
            "write-through: each write reaches both stores before it returns; write-behind: "
            "writes go to a local journal and reach the secondary in the background."
        ),
    )
    sync_interval: float | None = Field(
        default=30.0,
        gt=0,
        description="Seconds between two reconciliations by a sync flow (empty: no periodic sync).",
    )
    flush_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between two background writes of the journal to the secondary.",
    )
    journal: str | None = Field(
        default=None,
        description=(
            "Path of the write-behind journal file (empty: .prefect-memory/journal-<id>.db "
            "in the working directory)."
        ),
    )

    journal_sync: Literal["full", "normal"] = Field(
        default="full",
        description=(
            "How durable a write-behind journal commit is. full: an fsync per write, an "
            "acknowledged write survives a crash of the process and of the machine; normal: "
            "no fsync per write (faster), it survives a crash of the process (kill -9) but "
            "not an OS crash or power loss."
        ),
    )

    @field_validator("primary", "secondary", mode="before")
    @classmethod
    def _load_reference(cls, value: Any) -> Any:
        return resolve_reference(value)

    @field_validator("journal")
    @classmethod
    def _check_journal(cls, value: str | None) -> str | None:
        if value is not None and (not value or "\x00" in value):
            raise ValueError(f"must be a non-empty file path, got {value!r}")
        return value

    def parts(self) -> dict[str, MemoryBlock]:
        """The part blocks: ``{"primary": ..., "secondary": ...}``."""
        return {"primary": self.primary, "secondary": self.secondary}

    def _memory_url(self) -> str:
        return f"hybrid://{self.primary._memory_url()}+{self.secondary._memory_url()}"

    def _build_memory(self) -> Memory:
        from ..hybrid import HybridMemory as CoreHybridMemory

        memory = CoreHybridMemory(
            self.primary.memory.backend,
            self.secondary.memory.backend,
            strategy=self.strategy,
            journal=self.journal,
            journal_sync=self.journal_sync,
            flush_interval=self.flush_interval,
            **self._memory_settings(),
        )
        memory.sync_interval = self.sync_interval
        return memory

    def _redis_part(self) -> MemoryBlock | None:
        from .remote import RedisMemory

        return self.primary if isinstance(self.primary, RedisMemory) else None

    def sync(self) -> SyncReport:
        """Reconcile both stores for this namespace (the newer write wins); return the report."""
        return self.memory.sync()  # type: ignore[attr-defined]

    def flush(self, timeout: float | None = None) -> int:
        """Apply the write-behind journal to the secondary now; return the entries applied."""
        return self.memory.flush(timeout)  # type: ignore[attr-defined]

    def backlog(self) -> int:
        """Write-behind entries not yet applied to the secondary."""
        return self.memory.backlog()  # type: ignore[attr-defined]

    def settle(self, timeout: float = 60.0) -> None:
        """Flush, then wait until no write a store timed out on can still land late."""
        self.memory.settle(timeout)  # type: ignore[attr-defined]

    # No ``async`` twin of ``sync`` (a keyword): ``await asyncio.to_thread(block.sync)``.
    aflush = async_twin(flush)
    abacklog = async_twin(backlog)
    asettle = async_twin(settle)


class TieredMemoryBlock(_ComposedBlock):
    """A memory over tiers of memory blocks (hot, warm, cold...), with migration rules."""

    # Set, not derived from the class name: saved blocks and deployments name the slug.
    _block_type_name: ClassVar[str] = "Tiered Memory"
    _block_type_slug: ClassVar[str] = "tiered-memory"
    _description: ClassVar[str] = (
        "A prefect-memory store over tiers of memory blocks (hot Redis, warm MongoDB, cold "
        "S3...): key patterns choose a tier, reads promote entries, and migrate() moves "
        "them by rules on access counts, age and idle time. Also a result storage."
    )
    _code_example: ClassVar[str] = """
```python
from prefect_memory.blocks import TieredMemoryBlock

memory = TieredMemoryBlock.load("BLOCK_NAME")  # every tier's block loads as a block too
memory.set("session:42", {"user": 7})  # lands in the first tier whose patterns match
memory.info("session:42").tier  # the tier holding it, e.g. 'hot'
report = memory.migrate(dry_run=True)  # what the rules, tier TTLs and budgets would move
report.planned
```
"""

    tiers: list[MemoryTier] = Field(
        min_length=1,
        description="The tiers, hottest first; each names a memory block and its limits.",
    )
    rules: list[TierRule] = Field(
        default_factory=list,
        description="Migration rules: move entries from a tier to another when a condition holds.",
    )
    promote: Literal["home", "first", "never"] = Field(
        default="home",
        description=(
            "Where a read moves an entry found colder than its home tier: home (the tier "
            "its key pattern names), first (the hottest tier) or never."
        ),
    )

    @field_validator("tiers")
    @classmethod
    def _unique_tier_names(cls, tiers: list[MemoryTier]) -> list[MemoryTier]:
        seen: set[str] = set()
        for i, tier in enumerate(tiers):
            if tier.name in seen:
                raise ValueError(f"tiers[{i}].name: duplicate tier name {tier.name!r}")
            seen.add(tier.name)
        return tiers

    @field_validator("rules")
    @classmethod
    def _rules_name_tiers(cls, rules: list[TierRule], info: Any) -> list[TierRule]:
        tiers = info.data.get("tiers")
        if tiers is None:  # the tiers are invalid: that error is reported already
            return rules
        names = [tier.name for tier in tiers]
        for i, rule in enumerate(rules):
            for label, value in (("from", rule.from_), ("to", rule.to)):
                if value not in names:
                    raise ValueError(
                        f"rules[{i}].{label}: unknown tier {value!r} (tiers: {', '.join(names)})"
                    )
            if rule.from_ == rule.to:
                raise ValueError(f"rules[{i}]: from and to are the same tier {rule.to!r}")
        return rules

    def parts(self) -> dict[str, MemoryBlock]:
        """The tier blocks by tier name."""
        return {tier.name: tier.block for tier in self.tiers}

    def _memory_url(self) -> str:
        return "tiered://" + "+".join(tier.name for tier in self.tiers)

    def _build_memory(self) -> Memory:
        from ..tiers import MigrationRule, Tier
        from ..tiers import TieredMemory as CoreTieredMemory

        tiers = [
            Tier(
                tier.name,
                tier.block.memory.backend,
                ttl=tier.ttl,
                max_bytes=tier.max_bytes,
                max_entries=tier.max_entries,
                patterns=tuple(tier.patterns),
            )
            for tier in self.tiers
        ]
        rules = [MigrationRule.parse(r.from_, r.to, r.condition) for r in self.rules]
        return CoreTieredMemory(tiers, rules, promote=self.promote, **self._memory_settings())

    def _to_block_document(self, *args: Any, **kwargs: Any) -> Any:
        # Prefect references only top-level block fields; a saved tier block is referenced
        # here too (the UI shows it as a block reference; loading resolves it).
        document = super()._to_block_document(*args, **kwargs)
        tier_references(self.tiers, document.data)
        return document

    def _redis_part(self) -> MemoryBlock | None:
        from .remote import RedisMemory

        first = self.tiers[0].block
        return first if isinstance(first, RedisMemory) else None

    def migrate(
        self,
        *,
        dry_run: bool = False,
        batch_size: int = BATCH_SIZE,
        progress: Callable[[MigrationReport], None] | None = None,
    ) -> MigrationReport:
        """Move entries by the rules, tier TTLs and budgets; a dry run only lists the moves.

        Args:
            dry_run: Only plan: ``report.planned`` lists ``(key, from, to)``.
            batch_size: Entries read per batch.
            progress: Called with the running report after every batch.

        Returns:
            The :class:`~prefect_memory.tiers.MigrationReport`.
        """
        return self.memory.migrate(  # type: ignore[attr-defined]
            dry_run=dry_run, batch_size=batch_size, progress=progress
        )

    amigrate = async_twin(migrate)


#: Former names (deprecated): ``HybridMemory`` and ``TieredMemory`` are the engine classes.
__getattr__ = renamed_getattr(
    __name__, {"HybridMemory": "HybridMemoryBlock", "TieredMemory": "TieredMemoryBlock"}, globals()
)

__all__ = [
    "HybridMemoryBlock",
    "MemoryTier",
    "StoreBlock",
    "TierRule",
    "TieredMemoryBlock",
    "slugify",
]

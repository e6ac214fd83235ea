"""The parts of the composed blocks: which blocks a part can be, tiers, rules, references.

Prefect 3.9 and nested blocks (what these helpers work around):

- A top-level block field whose block is saved is stored as a reference
  (``{"$ref": {"block_document_id": ...}}``), which the server resolves when the parent
  loads; an unsaved one is stored inline, as a copy, in the parent's document.
- A resolved reference comes back *without* its block type. With a field typed as a
  union of blocks, pydantic then picks the first class that accepts the data: a saved
  ``SqliteMemory`` part would load as a ``JsonMemory`` (both have just a ``path``).
  :func:`fix_part_types` rebuilds such a part with the class the reference names.
- Blocks inside a list (the tiers) are never references for Prefect: the server resolves
  only top-level ones. The UI writes a ``$ref`` wherever a block field is, lists included.
  So a saved tier block is written as a ``$ref`` (:func:`tier_references`) and a ``$ref``
  is resolved through the Prefect API when the block loads (:func:`resolve_reference`).
- Prefect hides the secrets of a nested block in what the API shows (``********``), but
  not inside a list: an unsaved tier block with a secret is refused on save.

Example:
    >>> from prefect_memory.blocks import TierRule
    >>> TierRule(**{"from": "hot", "to": "cold", "condition": "idle > 1h"}).from_
    'hot'
    >>> TierRule(**{"from": "hot", "to": "cold", "condition": "idle >> 1h"})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for TierRule
    condition
      Value error, unexpected '>', ... at position 6 in 'idle >> 1h' ...
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..errors import ConfigError
from ..units import parse_duration, parse_size
from .archive import ParquetArchiveMemory
from .local import InProcessMemory, JsonMemory, SqliteMemory
from .remote import MongoDBMemory, RedisMemory, S3Memory

#: The blocks a part of a composed block can be (one store each).
StoreBlock = (
    RedisMemory | MongoDBMemory | S3Memory | JsonMemory | SqliteMemory | InProcessMemory
    | ParquetArchiveMemory
)  # fmt: skip
STORE_BLOCKS: tuple[type[Block], ...] = (
    RedisMemory, MongoDBMemory, S3Memory, JsonMemory, SqliteMemory, InProcessMemory,
    ParquetArchiveMemory,
)  # fmt: skip


def resolve_reference(value: Any) -> Any:
    """Load the block a ``{"$ref": {"block_document_id": ...}}`` names; other values pass.

    Raises:
        ValueError: The reference is malformed or names no block document.
    """
    if not (isinstance(value, dict) and "$ref" in value):
        return value
    ref = value["$ref"]
    raw_id = ref.get("block_document_id") if isinstance(ref, dict) else None
    try:
        document_id = UUID(str(raw_id))
    except ValueError:
        raise ValueError(
            f"a block reference is {{'$ref': {{'block_document_id': <uuid>}}}}, got {value!r}"
        ) from None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            document = client.read_block_document(document_id, include_secrets=True)
    except ObjectNotFound:
        raise ValueError(f"the referenced block document {document_id} does not exist") from None
    return Block._from_block_document(document)


def fix_part_types(block: Block, references: dict[str, dict[str, Any]]) -> None:
    """Rebuild each referenced part whose class is not the block type its reference names."""
    for field_name, reference in references.items():
        part = getattr(block, field_name, None)
        slug = ((reference.get("block_document") or {}).get("block_type") or {}).get("slug")
        if not isinstance(part, Block) or not slug or part.get_block_type_slug() == slug:
            continue
        right = next((c for c in STORE_BLOCKS if c.get_block_type_slug() == slug), None)
        if right is None:
            right = Block.get_block_class_from_key(slug)
        values = {name: getattr(part, name) for name in part.model_fields_set}
        setattr(block, field_name, right.model_validate(values))


def tier_references(tiers: list[MemoryTier], data: dict[str, Any]) -> None:
    """In a block document's ``data``, replace each saved tier block by its reference.

    Raises:
        ValueError: An unsaved tier block holds a secret. Prefect hides secrets of nested
            blocks, but not inside a list: saved inline, the secret would show in the UI.
    """
    secrets = [
        f"tiers[{i}].block.{name}"
        for i, tier in enumerate(tiers)
        if tier.block._block_document_id is None
        for name, value in tier.block
        if isinstance(value, SecretStr)
    ]
    if secrets:
        raise ValueError(
            f"{', '.join(secrets)}: a tier block with a secret must be saved first (or use "
            "save_with_parts): Prefect does not hide secrets of blocks inside a list"
        )
    items = data.get("tiers")
    if not isinstance(items, list):
        return
    for tier, item in zip(tiers, items, strict=False):
        document_id = tier.block._block_document_id
        if document_id is not None and isinstance(item, dict):
            item["block"] = {"$ref": {"block_document_id": str(document_id)}}


class MemoryTier(BaseModel):
    """One tier of a :class:`~prefect_memory.blocks.TieredMemoryBlock`: a memory block and limits.

    Example:
        >>> from prefect_memory.blocks import InProcessMemory, MemoryTier
        >>> tier = MemoryTier(name="hot", block=InProcessMemory(name="docs-tier"),
        ...                   ttl="1h", max_size="100MB", patterns=["session:*"])
        >>> tier.ttl, tier.max_bytes
        (3600.0, 104857600)
    """

    # Inputs stay out of validation errors: a tier's block may hold a password or a key.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    name: str = Field(description="Name of the tier, used by the rules (e.g. hot, warm, cold).")
    block: StoreBlock = Field(description="The memory block holding this tier's entries.")
    ttl: float | None = Field(
        default=None,
        description=(
            "Most seconds (or '1h', '7d') an entry stays in this tier before migrate() "
            "moves it to the next one (empty: no limit)."
        ),
    )
    max_size: int | str | None = Field(
        default=None,
        description="Size budget such as '100MB' or '1GB' (empty or 'unlimited': none).",
    )
    max_entries: int | None = Field(default=None, ge=1, description="Entry budget (empty: none).")
    patterns: list[str] = Field(
        default_factory=list,
        description="Key globs whose writes land in this tier, e.g. session:*.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty tier name")
        return value

    @field_validator("block", mode="before")
    @classmethod
    def _load_reference(cls, value: Any) -> Any:
        return resolve_reference(value)

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl_seconds(cls, value: Any) -> Any:
        return _config_value(parse_duration, value, "ttl")

    @field_validator("max_size")
    @classmethod
    def _check_size(cls, value: int | str | None) -> int | str | None:
        _config_value(parse_size, value, "max_size")
        return value

    @field_validator("patterns")
    @classmethod
    def _check_patterns(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not p]
        if bad:
            raise ValueError("patterns must be non-empty key globs")
        return value

    @property
    def max_bytes(self) -> int | None:
        """The size budget in bytes (``None``: no budget)."""
        return parse_size(self.max_size, name="max_size")


class TierRule(BaseModel):
    """A migration rule: move entries ``from`` a tier ``to`` another when ``condition`` holds.

    The condition uses ``accessCount``, ``age``, ``lastAccess``, ``idle``, ``size``,
    ``ttlLeft`` and ``tag`` with ``AND``/``OR``/``NOT``, e.g. ``accessCount < 5 AND age > 1h``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    from_: str = Field(alias="from", description="Name of the tier the entries leave.")
    to: str = Field(description="Name of the tier the entries move to.")
    condition: str = Field(
        description="When to move an entry, e.g. accessCount < 5 AND age > 3600.",
    )

    @field_validator("condition")
    @classmethod
    def _parse_condition(cls, value: str) -> str:
        from ..tiers.rules import parse_rule

        try:
            parse_rule(value)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return value


def _config_value(parse: Any, value: Any, name: str) -> Any:
    try:
        return parse(value, name=name)
    except ConfigError as err:
        raise ValueError(str(err)) from None

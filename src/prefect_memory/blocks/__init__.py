"""Prefect blocks for prefect-memory: configuration in the Prefect API, a Memory on use.

Every block exposes the memory API (``get``, ``set``, ``get_many``...), is a Prefect
``WritableFileSystem`` (usable as ``result_storage``, with its ``ttl`` expiring stored
results in the store) and hands out a lock manager with a hold timeout.

``prefect block register -m prefect_memory.blocks`` registers them; a Prefect server
registers them by itself through the ``prefect.collections`` entry point.

Example:
    >>> from prefect_memory.blocks import SqliteMemory
    >>> SqliteMemory.get_block_type_slug()
    'sqlite-memory'
"""

from __future__ import annotations

from .archive import ParquetArchiveMemory
from .base import MemoryBlock
from .composite import HybridMemory, TieredMemory
from .composite_parts import MemoryTier, TierRule
from .from_config import ConfigBlocks, blocks_from_config
from .local import InProcessMemory, JsonMemory, SqliteMemory
from .locks import MemoryLockManager, RedisLockManager
from .remote import MongoMemory, RedisMemory, S3Memory
from .results import ResultNotFound, ResultSignatureError, StoredResult

#: Every memory block: the single-store ones (the Parquet archive last), then the composed
#: ones (whose parts are single-store blocks).
BLOCKS: tuple[type[MemoryBlock], ...] = (
    RedisMemory,
    MongoMemory,
    S3Memory,
    JsonMemory,
    SqliteMemory,
    InProcessMemory,
    ParquetArchiveMemory,
    HybridMemory,
    TieredMemory,
)

__all__ = [
    "BLOCKS",
    "ConfigBlocks",
    "HybridMemory",
    "InProcessMemory",
    "JsonMemory",
    "MemoryBlock",
    "MemoryLockManager",
    "MemoryTier",
    "MongoMemory",
    "ParquetArchiveMemory",
    "RedisLockManager",
    "RedisMemory",
    "ResultNotFound",
    "ResultSignatureError",
    "S3Memory",
    "SqliteMemory",
    "StoredResult",
    "TierRule",
    "TieredMemory",
    "blocks_from_config",
]

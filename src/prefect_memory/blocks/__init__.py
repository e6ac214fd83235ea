"""Prefect blocks for prefect-memory: configuration in the Prefect API, a Memory on use.

Every block exposes the memory API (``get``, ``set``, ``get_many``...), is a Prefect
``WritableFileSystem`` (usable as ``result_storage``, with its ``ttl`` expiring stored
results in the store) and hands out a lock manager with a hold timeout.

``prefect block register -m prefect_memory.blocks`` registers them; a Prefect server
registers them by itself through the ``prefect.collections`` entry point.

The composed blocks are ``HybridMemoryBlock`` and ``TieredMemoryBlock`` (``HybridMemory``
and ``TieredMemory`` are the engine classes of :mod:`prefect_memory`); the MongoDB block is
``MongoDBMemory``, as its slug ``mongodb-memory`` says. Their former names here
(``HybridMemory``, ``TieredMemory``, ``MongoMemory``) are deprecated aliases for one
release: the same classes, with a :class:`DeprecationWarning`. Block type slugs did not
change.

Example:
    >>> from prefect_memory.blocks import SqliteMemory, TieredMemoryBlock
    >>> SqliteMemory.get_block_type_slug(), TieredMemoryBlock.get_block_type_slug()
    ('sqlite-memory', 'tiered-memory')
"""

from __future__ import annotations

from .archive import ParquetArchiveMemory
from .base import MemoryBlock
from .composite import HybridMemoryBlock, TieredMemoryBlock
from .composite_parts import MemoryTier, TierRule
from .from_config import ConfigBlocks, blocks_from_config
from .local import InProcessMemory, JsonMemory, SqliteMemory
from .locks import MemoryLockManager, RedisLockManager
from .remote import MongoDBMemory, RedisMemory, S3Memory
from .renamed import RENAMED_BLOCKS, renamed_getattr
from .results import ResultNotFound, ResultSignatureError, StoredResult

#: Every memory block: the single-store ones (the Parquet archive last), then the composed
#: ones (whose parts are single-store blocks).
BLOCKS: tuple[type[MemoryBlock], ...] = (
    RedisMemory,
    MongoDBMemory,
    S3Memory,
    JsonMemory,
    SqliteMemory,
    InProcessMemory,
    ParquetArchiveMemory,
    HybridMemoryBlock,
    TieredMemoryBlock,
)

#: ``from prefect_memory.blocks import HybridMemory`` (a former name) still works and warns;
#: the former names stay out of ``dir()`` and ``__all__``, so walking the module (``prefect
#: block register -m``, ``inspect.getmembers``) neither warns nor sees a block twice.
__getattr__ = renamed_getattr(__name__, RENAMED_BLOCKS, globals())

__all__ = [
    "BLOCKS",
    "ConfigBlocks",
    "HybridMemoryBlock",
    "InProcessMemory",
    "JsonMemory",
    "MemoryBlock",
    "MemoryLockManager",
    "MemoryTier",
    "MongoDBMemory",
    "ParquetArchiveMemory",
    "RedisLockManager",
    "RedisMemory",
    "ResultNotFound",
    "ResultSignatureError",
    "S3Memory",
    "SqliteMemory",
    "StoredResult",
    "TierRule",
    "TieredMemoryBlock",
    "blocks_from_config",
]

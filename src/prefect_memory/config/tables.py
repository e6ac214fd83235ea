"""The keys a config may hold, by shape, and the keys it refuses with what to do instead.

Example:
    >>> "persist" in REFUSED_KEYS, "ttl" in MEMORY_KEYS
    (True, True)
"""

from __future__ import annotations

#: Where a store named without ``connection``/``location`` lives.
DEFAULT_CONNECTIONS: dict[str, str] = {
    "memory": "memory://",
    "redis": "redis://localhost:6379/0",
    "mongodb": "mongodb://localhost:27017/prefect_memory",
    "sqlite": "sqlite:///.prefect-memory/memory.db",
    "json": "json:///.prefect-memory/memory.json",
    "file": "file://.prefect-memory/files",
}
#: Other names of backends, by the name the registry knows.
ALIASES = {"mongo": "mongodb", "inprocess": "memory", "local": "sqlite", "fs": "file"}
#: Where and how a store lives (every store part, tier and single memory).
PART_KEYS = frozenset({"type", "backend", "connection", "location", "storage_options",
                       "options", "consistency", "format", "partitioning"})  # fmt: skip
#: Keys of a tier besides those of its store.
TIER_KEYS = frozenset({"name", "ttl", "maxSize", "maxEntries", "patterns"})
#: Settings of a memory (single, hybrid, tiered, or defaults of a namespaces config).
MEMORY_KEYS = frozenset({"namespace", "ttl", "refresh", "compression", "serialization",
                         "pickle"})  # fmt: skip
#: Keys of a hybrid memory besides its memory settings.
HYBRID_KEYS = frozenset({"backend", "type", "primary", "secondary", "sync", "journal",
                         "journal_sync"})  # fmt: skip
#: Keys of a tiered memory besides its memory settings.
TIERED_KEYS = frozenset({"backend", "type", "tiers", "migration", "promote"})
#: Keys of the top of a namespaces config (its ``ttl``... are defaults of the parts).
SECTIONS_KEYS = frozenset({"backend", "type", "namespaces", "datasets", "compute", "streams",
                           "processing", "schemas"}) | (MEMORY_KEYS - {"namespace"})  # fmt: skip
#: Keys of a hybrid's ``sync`` section.
SYNC_KEYS = frozenset({"enabled", "interval", "strategy"})
#: Keys of a migration rule.
RULE_KEYS = frozenset({"from", "to", "condition"})
#: Store settings of a named part kept as written in :attr:`Namespaces.settings`.
APPLIED_SETTINGS = ("format", "partitioning", "consistency")
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

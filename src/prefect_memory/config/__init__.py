"""Build memories from the tutorial's JSON shapes: ``pm.from_config(dict | path)``.

Supported shapes (all under an optional top-level ``"memory"`` key):

- one store: ``{"backend": "redis", "connection": "redis://...", "ttl": 60}``;
- hybrid: ``{"backend": "hybrid", "primary": {...}, "secondary": {...}, "sync": {...}}``;
- tiers: ``{"backend": "hybrid", "tiers": [...], "migration": {"rules": [...]}}``;
- namespaces: ``{"namespaces": {"sessions": {"backend": "redis", "ttl": 1800}, ...}}``
  (also ``datasets`` and ``compute.cache``; ``ttl``, ``refresh``, ``compression``,
  ``serialization``, ``pickle`` and ``backend`` at the top are defaults of the parts);
- the Parquet archive: a store with ``"format": "parquet"`` (``"partitioning": "date"``) on
  ``s3``, ``file`` or a local folder opens :mod:`prefect_memory.plugins.parquet`;
- record schemas: ``{"schemas": {"validation": true, "strict": true, "definitions": {...}}}``
  (JSON Schema checked on ``set``, see :mod:`prefect_memory.validation.records`; on a
  namespaces config, a top-level ``schemas`` applies to namespaces without their own);
- ``streams`` and ``processing``: checked here, applied by :mod:`prefect_memory.analytics`.

The package reads a config once, then builds from what it read: :mod:`.document` reads the
document and bounds it; :mod:`.reader` (with :mod:`.checks`; the key tables are in
:mod:`.tables`) reads it into typed specs (:mod:`.specs`, pydantic models told apart by
``type``) and lists every problem: :func:`read_config`, :func:`parse_config`. Nothing is
opened until then: :mod:`.build` opens the stores of a spec and builds the memory, and
:func:`prefect_memory.blocks.blocks_from_config` plans blocks from the same spec.

A part names its store with ``type``/``backend`` and where it lives with ``connection``
(a URL), ``location`` (a path or URL) and ``storage_options``. Stores named without a
place use ``connections=`` (or the defaults in :data:`DEFAULT_CONNECTIONS`).

Every key is applied or refused: keys the library cannot apply (``persist``, ``indexes``,
``cache``, ``versioning``...) are refused with what to do instead (:data:`REFUSED_KEYS`).
Unknown keys, unknown backends, bad values and documents past the limits
(:data:`MAX_CONFIG_BYTES`, :data:`MAX_CONFIG_DEPTH`, :data:`MAX_CONFIG_NODES`) are collected
and raised as one :class:`ConfigError` listing every problem with its path in the config.

Example:
    >>> import prefect_memory as pm
    >>> mem = pm.from_config({"memory": {"backend": "memory", "ttl": 60, "namespace": "s"}})
    >>> mem.namespace, mem.ttl
    ('s', 60.0)
    >>> pm.from_config({"memory": {"backend": "hybird", "ttl": "200y", "indexes": ["id"]}})
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ConfigError: invalid memory config:
      memory.backend: unknown backend 'hybird' (known: ...)
      memory.indexes: entries are stored encoded, their fields cannot be indexed; ...
      memory.ttl: ttl must be seconds or a duration like '1h' (units: ms, s, m, h, d, w), ...
"""

from .build import MemoryBuilder, Namespaces, from_config
from .document import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    MAX_CONFIG_STRING,
    check_document,
    load_config,
)
from .reader import ConfigReader, parse_config, read_config
from .specs import (
    CONFIG_SPEC,
    ConfigSpec,
    HybridSpec,
    MemorySettings,
    NamedPart,
    NamespacesSpec,
    RuleSpec,
    SchemasSpec,
    SingleSpec,
    StoreSpec,
    SyncSpec,
    TieredSpec,
    TierSpec,
)
from .tables import DEFAULT_CONNECTIONS, REFUSED_KEYS, RESERVED_SECTIONS

__all__ = [
    "CONFIG_SPEC",
    "DEFAULT_CONNECTIONS",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_CONFIG_STRING",
    "REFUSED_KEYS",
    "RESERVED_SECTIONS",
    "ConfigReader",
    "ConfigSpec",
    "HybridSpec",
    "MemoryBuilder",
    "MemorySettings",
    "NamedPart",
    "Namespaces",
    "NamespacesSpec",
    "RuleSpec",
    "SchemasSpec",
    "SingleSpec",
    "StoreSpec",
    "SyncSpec",
    "TierSpec",
    "TieredSpec",
    "check_document",
    "from_config",
    "load_config",
    "parse_config",
    "read_config",
]

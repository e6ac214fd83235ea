"""Where the demo keeps things: its config, the tiered memory (from the tutorial's JSON shape),
the result storage block of the prediction cache, and a clock that can be moved forward.

The two profiles differ only in URLs:

==========  ==============================  ==========================================
tier        embedded (``make demo``)        services (``make demo PROFILE=services``)
==========  ==============================  ==========================================
hot         ``memory://<name>``             ``redis://...`` (also streams, time series)
warm        ``sqlite:///<dir>/warm.db``     ``mongodb://...?collection=...``
cold        ``parquet:///<dir>/archive``    ``parquet::s3://<bucket>/archive``
==========  ==============================  ==========================================

Example:
    >>> config = DemoConfig.embedded("/tmp/pm-demo-doc")
    >>> spec = memory_config(config)["memory"]
    >>> [(t["name"], t["backend"]) for t in spec["tiers"]]
    [('hot', 'memory'), ('warm', 'sqlite'), ('cold', 'parquet')]
    >>> spec["migration"]["rules"][1]["condition"]
    'lastAccess > 86400'
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr

if TYPE_CHECKING:
    from ..blocks import MemoryBlock
    from ..plugins.parquet import ParquetArchiveBackend
    from ..tiers import TieredMemory
    from .events import Recorder

#: Where each kind of entry lives first (the tutorial's ``patterns``).
HOT_PATTERNS = ["features:user:*", "model:*"]
WARM_PATTERNS = ["features:day:*", "training:*", "predictions:*", "events:*", "aggregates:*"]
#: The migration rules (the tutorial's, with the hot rule adapted to a model registry).
RULES = [
    {"from": "hot", "to": "warm",
     "condition": 'tag == "stage:retired" OR (accessCount < 1 AND age > 1h)'},
    {"from": "warm", "to": "cold", "condition": "lastAccess > 86400"},
]  # fmt: skip
#: Default users of the services profile (the MongoDB stand-in is slow past a few thousand).
SERVICES_USERS = 1000
#: Time to live of cached features (the tutorial's ``compute.cache.preprocessed``).
FEATURES_TTL = 7 * 86400
#: Time to live of cached predictions (the tutorial's ``compute.cache.predictions``).
PREDICTIONS_TTL = 3600


class DemoSizes(BaseModel):
    """How much data the demo makes (the defaults take a few seconds per step)."""

    users: int = Field(default=5000, ge=10, description="Users with features.")
    days: int = Field(default=14, ge=3, description="Daily training partitions.")
    requests: int = Field(default=300, ge=1, description="Prediction requests served.")
    distinct_users: int = Field(default=75, ge=1, description="Users sending requests.")
    backfill_events: int = Field(
        default=200_000, ge=0, description="Request events of the last 24 hours to record."
    )


class DemoConfig(BaseModel):
    """Everything the pipeline needs to open its stores (a flow parameter: JSON, no secrets
    in clear: the S3 keys are ``SecretStr`` and Prefect shows them masked)."""

    profile: Literal["embedded", "services"] = "embedded"
    namespace: str = "ml"
    hot: str = "memory://ml-demo-hot"
    warm: str = "sqlite:///.prefect-memory/demo/warm.db"
    cold: str = "parquet:///.prefect-memory/demo/archive"
    s3_endpoint: str | None = None
    s3_key: SecretStr | None = None
    s3_secret: SecretStr | None = None
    analytics: str | None = Field(
        default=None, description="redis:// URL for streams and time series (else frames)."
    )
    results_block: str = Field(default="ml-demo-predictions", description="Saved block name.")
    migrate_batch: int = Field(
        default=500, ge=1, description="Entries per migration batch (one archive file each)."
    )
    sizes: DemoSizes = Field(default_factory=DemoSizes)
    seed: int = 7

    @classmethod
    def embedded(cls, workdir: str | Path = ".prefect-memory/demo", **fields: Any) -> DemoConfig:
        """The embedded profile: in-process hot tier, SQLite warm tier, local Parquet archive."""
        root = Path(workdir)
        token = "".join(c if c.isalnum() else "-" for c in root.name)[:20] or "demo"
        return cls(
            profile="embedded",
            hot=f"memory://ml-{token}-hot",
            warm=f"sqlite:///{root / 'warm.db'}",
            cold=f"parquet:///{root / 'archive'}",
            **fields,
        )

    @classmethod
    def services(
        cls,
        redis_url: str,
        mongo_url: str,
        s3_url: str,
        *,
        s3_endpoint: str | None = None,
        s3_key: str | None = None,
        s3_secret: str | None = None,
        **fields: Any,
    ) -> DemoConfig:
        """The services profile: Redis hot tier and analytics, MongoDB warm, S3 archive.

        Args:
            redis_url: ``redis://host:port/db`` (``?key_prefix=`` allowed).
            mongo_url: ``mongodb://host:port/db`` (``collection=`` added when missing).
            s3_url: ``s3://bucket/prefix`` of the archive.
            s3_endpoint: S3-compatible endpoint (SeaweedFS, MinIO); default AWS.
            s3_key: Access key id.
            s3_secret: Secret access key.
            **fields: Other fields (``sizes``, ``namespace``...).
        """
        # The MongoDB wire server of the tests (mongoeco) scans its collection on every
        # query: small batches, and fewer users unless asked for.
        fields.setdefault("migrate_batch", 100)
        sizes = fields.pop("sizes", None) or {}
        if isinstance(sizes, dict):
            sizes = {"users": SERVICES_USERS, **sizes}
        if "collection=" not in mongo_url:
            mongo_url += ("&" if "?" in mongo_url else "?") + "collection=ml_demo"
        return cls(
            profile="services",
            hot=redis_url,
            warm=mongo_url,
            cold="parquet::" + s3_url,
            s3_endpoint=s3_endpoint,
            s3_key=SecretStr(s3_key) if s3_key else None,
            s3_secret=SecretStr(s3_secret) if s3_secret else None,
            analytics=redis_url,
            sizes=sizes,
            **fields,
        )

    def storage_options(self) -> dict[str, Any]:
        """fsspec options of the archive (S3 endpoint and keys), secrets included."""
        options: dict[str, Any] = {}
        if self.s3_key is not None:
            options["key"] = self.s3_key.get_secret_value()
        if self.s3_secret is not None:
            options["secret"] = self.s3_secret.get_secret_value()
        if self.s3_endpoint:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint}
        return options


def _kind(url: str) -> str:
    return url.split(":", 1)[0].lower()


def memory_config(config: DemoConfig, *, secrets: bool = False) -> dict[str, Any]:
    """The tiered memory as the tutorial's JSON shape (``pm.from_config`` builds it).

    Args:
        config: The demo's config.
        secrets: Put the S3 keys in (``False``: the shape to show or log).
    """
    cold: dict[str, Any] = {"name": "cold", "backend": "parquet", "connection": config.cold,
                            "patterns": ["archive:*"]}  # fmt: skip
    options = config.storage_options()
    if options:
        shown = {k: (v if k == "client_kwargs" or secrets else "***") for k, v in options.items()}
        cold["storage_options"] = shown
    return {
        "memory": {
            "backend": "hybrid",
            "namespace": config.namespace,
            "compression": True,
            "tiers": [
                {"name": "hot", "backend": _kind(config.hot), "connection": config.hot,
                 "patterns": HOT_PATTERNS},
                {"name": "warm", "backend": _kind(config.warm), "connection": config.warm,
                 "patterns": WARM_PATTERNS},
                cold,
            ],
            "migration": {"rules": RULES},
        }
    }  # fmt: skip


class SimClock:
    """Wall-clock time plus an offset: the demo moves it forward to run maintenance "later".

    Example:
        >>> clock = SimClock()
        >>> clock.advance(3600); round(clock() - time.time())
        3600
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.offset += float(seconds)


def split_key_prefix(url: str) -> tuple[str, str | None]:
    """A Redis URL without its ``key_prefix`` query option, and that option.

    Example:
        >>> split_key_prefix("redis://127.0.0.1:6390/0?key_prefix=t1&timeout=2")
        ('redis://127.0.0.1:6390/0?timeout=2', 't1')
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "key_prefix"), None)
    kept = urlencode([(k, v) for k, v in query if k != "key_prefix"])
    return urlunsplit(parts._replace(query=kept)), prefix


def results_block(config: DemoConfig) -> MemoryBlock:
    """The block that stores (and expires) the prediction task's cached results, unsaved.

    In-process next to the hot tier in the embedded profile, in Redis with the services.
    """
    from ..blocks import InProcessMemory, RedisMemory

    fields: dict[str, Any] = {"namespace": f"{config.namespace}-predictions",
                              "ttl": PREDICTIONS_TTL}  # fmt: skip
    if _kind(config.hot) in ("redis", "rediss"):
        url, prefix = split_key_prefix(config.hot)
        return RedisMemory(url=url, key_prefix=prefix or "pm", **fields)
    name = config.hot.split("://", 1)[1].split("?")[0].strip("/") or "ml-demo"
    return InProcessMemory(name=f"{name}-results", **fields)


@dataclass
class Stores:
    """The open stores of one config: the tiered memory, its clock, events, result block."""

    config: DemoConfig
    memory: TieredMemory
    clock: SimClock
    events: Recorder
    block: MemoryBlock | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def archive(self) -> ParquetArchiveBackend:
        """The Parquet archive (the cold tier's backend)."""
        return self.memory.tiers[-1].backend  # type: ignore[return-value]

    def saved_block(self) -> MemoryBlock:
        """The result storage block, saved in the Prefect API (Prefect refuses unsaved ones)."""
        if self.block is None:
            block = results_block(self.config)
            block.save(self.config.results_block, overwrite=True)
            self.block = block
        return self.block

    def entries_per_tier(self) -> dict[str, int]:
        """How many live entries of the namespace each tier holds."""
        now, ns = self.clock(), self.memory.namespace
        return {
            tier.name: sum(1 for _ in tier.backend.scan(ns, None, now=now))
            for tier in self.memory.tiers
        }

    def archive_files(self) -> list[str]:
        """The Parquet data files of the namespace in the archive."""
        return list(self.archive.dataset(self.memory.namespace).files)

    def close(self) -> None:
        """Release connections (the in-process hot tier keeps its data until exit)."""
        self.memory.close()
        self.events.close()
        if self.block is not None:
            self.block.close()


_OPEN: dict[str, Stores] = {}
_OPEN_LOCK = threading.Lock()


def _key(config: DemoConfig) -> str:
    return config.model_dump_json(exclude={"sizes", "seed", "results_block", "migrate_batch"})


def open_stores(config: DemoConfig, *, fresh: bool = False) -> Stores:
    """The stores of ``config``, opened once per process (``fresh``: open them anew).

    The prediction task calls this on every cache miss: the second call is a dict lookup.
    """
    import prefect_memory as pm

    from .events import open_recorder

    key = _key(config)
    with _OPEN_LOCK:
        stores = _OPEN.get(key)
        if stores is not None and not fresh:
            return stores
        if stores is not None:
            stores.close()
        memory: TieredMemory = pm.from_config(memory_config(config, secrets=True))  # type: ignore[assignment]
        clock = SimClock()
        memory.clock = clock
        stores = Stores(config, memory, clock, open_recorder(config, memory))
        _OPEN[key] = stores
        return stores


def close_all() -> None:
    """Close every store opened in this process (before their servers stop)."""
    with _OPEN_LOCK:
        for stores in _OPEN.values():
            stores.close()
        _OPEN.clear()

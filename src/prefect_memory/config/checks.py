"""The checks of a config's smallest pieces: keys, flags, a store, memory settings, ``sync``.

:class:`Checks` records every problem with its path (``memory.sync.interval: ...``) and
returns what it read as a spec (:class:`~.specs.StoreSpec`, :class:`~.specs.MemorySettings`,
:class:`~.specs.SyncSpec`) or ``None``; :class:`~.reader.ConfigReader` reads the shapes made
of them. Nothing here opens a store or imports a store driver.

Example:
    >>> from pathlib import Path
    >>> checks = Checks({}, Path("/cfg"))
    >>> checks.store("memory", "sqlite", {"location": "data/m.db"}).url
    'sqlite:////cfg/data/m.db'
    >>> checks.settings("memory", {"ttl": "1h", "refresh": True}, "default")
    MemorySettings(namespace='default', ttl=3600.0, refresh=True, compression=None, ...)
    >>> checks.store("memory.primary", "redis", {"format": "csv"}) is None
    True
    >>> checks.problems
    ["memory.primary.format: only 'parquet' (the Parquet archive) is supported, ..."]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PrefectMemoryError
from ..keys import validate_namespace
from ..registry import available_backends
from ..units import MAX_DURATION, parse_duration
from .document import config_error, describe
from .specs import MemorySettings, StoreSpec, SyncSpec
from .tables import ALIASES, DEFAULT_CONNECTIONS, MEMORY_KEYS, REFUSED_KEYS, SYNC_KEYS


class Checks:
    """Checks the pieces of one ``memory`` section and collects every problem with its path.

    Args:
        connections: URL per backend name for parts named without a place (over
            :data:`~prefect_memory.config.DEFAULT_CONNECTIONS`).
        base_dir: The folder relative paths are in (the config file's).
    """

    def __init__(self, connections: Mapping[str, str], base_dir: Path) -> None:
        self.problems: list[str] = []
        self.connections = {**DEFAULT_CONNECTIONS, **connections}
        self.base_dir = base_dir

    def problem(self, path: str, message: str) -> None:
        """Record a problem at ``path``."""
        self.problems.append(f"{path}: {message}")

    def error(self) -> ConfigError:
        """One :class:`ConfigError` listing every problem recorded."""
        return config_error(self.problems)

    def check_keys(
        self, path: str, spec: Mapping[str, Any], allowed: set[str] | frozenset[str],
        owner: str | None = None,
    ) -> None:  # fmt: skip
        """Report keys not in ``allowed``: refused ones with what to do instead;
        ``owner`` names where memory settings go when ``spec`` is a part of a memory."""
        for key in spec:
            if key in allowed:
                continue
            if key in REFUSED_KEYS:
                self.problem(f"{path}.{key}", REFUSED_KEYS[key])
            elif owner is not None and key in (MEMORY_KEYS | {"schemas"}):
                self.problem(f"{path}.{key}", f"not a setting of a part: set it on {owner}")
            else:
                allowed_keys = ", ".join(sorted(allowed))
                self.problem(f"{path}.{key}", f"unknown key (allowed: {allowed_keys})")

    def mapping(self, path: str, value: Any, what: str = "an object") -> Mapping[str, Any]:
        """``value`` if it is an object (``None``: empty), else a problem and ``{}``."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(path, f"must be {what}, got {type(value).__name__}")
            return {}
        return value

    def flag(self, path: str, value: Any) -> bool:
        """``value`` if it is a boolean, else a problem and ``False``."""
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, got {describe(value)}")
            return False
        return value

    def kind(self, path: str, spec: Mapping[str, Any]) -> str | None:
        """The backend a part names with ``type``/``backend`` (aliases resolved)."""
        raw = spec.get("type", spec.get("backend"))
        if not isinstance(raw, str) or not raw:
            self.problem(path, "needs a 'type' or 'backend' naming the store")
            return None
        name = ALIASES.get(raw.lower(), raw.lower())
        known = set(available_backends()) | {"hybrid"}
        if name not in known:
            where = "type" if "type" in spec else "backend"
            self.problem(
                f"{path}.{where}",
                f"unknown backend {describe(raw)} (known: {', '.join(sorted(known))})",
            )
            return None
        return name

    def part(self, path: str, spec: Any) -> tuple[str, Mapping[str, Any]] | None:
        """``(kind, spec)`` of a part written as an object or a backend name (``"redis"``)."""
        if isinstance(spec, str):  # "primary": "redis"
            spec = {"backend": spec}
        if not isinstance(spec, Mapping):
            self.problem(path, f"expected an object or a backend name, got {type(spec).__name__}")
            return None
        kind = self.kind(path, spec)
        return None if kind is None else (kind, spec)

    def store_kind(self, path: str, kind: str, spec: Mapping[str, Any]) -> str | None:
        """``parquet`` for the tutorial's Parquet shape (``format``/``partitioning``)."""
        fmt, partitioning = spec.get("format"), spec.get("partitioning")
        if fmt is None and partitioning is None:
            return kind
        ok = True
        if partitioning is not None and partitioning != "date":
            self.problem(
                f"{path}.partitioning",
                "the Parquet archive partitions by date only: use 'date', got "
                + describe(partitioning),
            )
            ok = False
        if fmt is None:
            self.problem(
                f"{path}.partitioning", "applies to the Parquet archive: add \"format\": "
                "\"parquet\" (on an s3 or file store), or remove 'partitioning'",
            )  # fmt: skip
            return None
        if fmt != "parquet":
            self.problem(
                f"{path}.format", f"only 'parquet' (the Parquet archive) is supported, got "
                f"{describe(fmt)}; other stores keep entries in their own format: remove 'format'",
            )  # fmt: skip
            return None
        if kind not in ("s3", "file", "parquet"):
            self.problem(
                f"{path}.format", f"a {kind} store has no Parquet format: use 'backend': 's3' "
                "or 'file' (or 'parquet') with 'format': 'parquet'",
            )  # fmt: skip
            return None
        return "parquet" if ok else None

    def url(
        self, path: str, kind: str, spec: Mapping[str, Any], store: str | None = None
    ) -> str | None:
        """The URL of a part (``store``: the kind whose default connection applies)."""
        connection, location = spec.get("connection"), spec.get("location")
        for name, value in (("connection", connection), ("location", location)):
            if value is not None and not isinstance(value, str):
                self.problem(f"{path}.{name}", f"must be a string, got {type(value).__name__}")
                return None
        place = connection or location
        store = store or kind
        if not place and store in self.connections:
            place = self.connections[store]
        if place and "://" in place:
            if kind == "parquet" and not place.lower().startswith("parquet"):
                return f"parquet::{place}"  # the archive on s3://..., not an object store
            return place
        if place:
            local = Path(os.path.expanduser(place))
            if not local.is_absolute():
                local = self.base_dir / local
            local = Path(os.path.normpath(local))
            if kind in ("json", "sqlite", "parquet"):
                return f"{kind}:///{local}"
            if kind == "file":
                return f"file://{local}"
            self.problem(f"{path}.connection", f"a {kind} store needs a URL, got {describe(place)}")
            return None
        self.problem(path, f"a {store} store needs 'connection' (e.g. {store}://...)")
        return None

    def store(self, path: str, kind: str, spec: Mapping[str, Any]) -> StoreSpec | None:
        """The store a part describes (its keys are checked by the caller)."""
        store = self.store_kind(path, kind, spec)
        if store is None:
            return None
        url = self.url(path, store, spec, kind)
        options = dict(self.mapping(f"{path}.options", spec.get("options")))
        storage = spec.get("storage_options")
        if storage is not None:
            storage = dict(self.mapping(f"{path}.storage_options", storage))
        if "consistency" in spec and kind != "redis":
            self.problem(
                f"{path}.consistency",
                f"only Redis stores take 'consistency' (this is a {kind} store): remove it",
            )
        if url is None:
            return None
        fmt, partitioning = spec.get("format"), spec.get("partitioning")
        return StoreSpec(
            path=path, kind=kind, store=store, url=url, options=options,
            storage_options=storage, consistency=spec.get("consistency"),
            format=fmt, partitioning=partitioning,
        )  # fmt: skip

    def namespace(self, path: str, spec: Mapping[str, Any], default: str) -> str:
        """The memory's ``namespace`` (``default`` when not given), checked."""
        value = spec.get("namespace", default)
        try:
            return validate_namespace(value)
        except PrefectMemoryError as err:
            self.problem(f"{path}.namespace", str(err))
            return "default"

    def settings(self, path: str, spec: Mapping[str, Any], namespace: str | None) -> MemorySettings:
        """The memory settings (``namespace`` is not checked when ``None``)."""
        values: dict[str, Any] = {}
        if "ttl" in spec:
            try:
                values["ttl"] = parse_duration(spec["ttl"], name="ttl")
            except ConfigError as err:
                self.problem(f"{path}.ttl", str(err))
        if "refresh" in spec:
            values["refresh"] = self.flag(f"{path}.refresh", spec["refresh"])
        if "compression" in spec:
            values["compression"] = self.flag(f"{path}.compression", spec["compression"])
        if spec.get("serialization") not in (None, "msgpack"):
            self.problem(f"{path}.serialization", "only 'msgpack' is supported")
        if "pickle" in spec:
            values["pickle"] = self.flag(f"{path}.pickle", spec["pickle"])
        if namespace is not None:
            values["namespace"] = self.namespace(path, spec, namespace)
        return MemorySettings(**values)

    def sync(self, path: str, spec: Mapping[str, Any]) -> SyncSpec:
        """The ``sync`` section of a hybrid memory (defaults where a value is wrong)."""
        sync = self.mapping(f"{path}.sync", spec.get("sync"))
        self.check_keys(f"{path}.sync", sync, SYNC_KEYS)
        strategy = sync.get("strategy", "write-through")
        if strategy not in ("write-through", "write-behind"):
            self.problem(
                f"{path}.sync.strategy",
                f"must be 'write-through' or 'write-behind', got {describe(strategy)}",
            )
            strategy = "write-through"
        interval = sync.get("interval", 30000)
        if (
            not isinstance(interval, (int, float)) or isinstance(interval, bool)
            or not 0 < interval <= MAX_DURATION * 1000
        ):  # fmt: skip
            self.problem(
                f"{path}.sync.interval", f"must be positive milliseconds (at most 100 years), "
                f"got {describe(interval)}",
            )  # fmt: skip
            interval = 30000
        enabled = self.flag(f"{path}.sync.enabled", sync.get("enabled", True))
        return SyncSpec(strategy, float(interval), enabled)

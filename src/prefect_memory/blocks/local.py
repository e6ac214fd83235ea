"""The memory blocks on local storage: a JSON file, a SQLite file, the running process.

Example:
    >>> from prefect_memory.blocks import SqliteMemory
    >>> SqliteMemory.from_connection_string("sqlite:///data/memory.db").path
    'data/memory.db'
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from pydantic import Field, field_validator

from ..plugins.local_paths import local_path_from_url
from .base import MemoryBlock
from .remote import check_scheme


class _FileBlock(MemoryBlock, ABC):
    """A block over one local file (``path``), opened as ``<_scheme>:///path``.

    ``ABC`` among the direct bases keeps Prefect from registering this class as a block type.
    """

    _scheme: ClassVar[str]

    @field_validator("path", check_fields=False)
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value or "\x00" in value:
            raise ValueError(f"must be a non-empty file path, got {value!r}")
        return value

    @classmethod
    def from_connection_string(cls, url: str, **fields: Any) -> MemoryBlock:
        """Build from ``<scheme>:///relative/path`` or ``<scheme>:////absolute/path``."""
        check_scheme(url, (cls._scheme,), f"{cls._scheme}:///memory/file")
        path, _query = local_path_from_url(url)
        return cls(path=path, **fields)

    def _memory_url(self) -> str:
        return f"{self._scheme}:///" + quote(self.path, safe="/~")  # type: ignore[attr-defined]


class JsonMemory(_FileBlock):
    """A memory in one local JSON file (readable backups, small data, no server)."""

    _block_type_name: ClassVar[str] = "JSON Memory"
    _description: ClassVar[str] = (
        "A prefect-memory store in one local JSON file, rewritten atomically under a file "
        "lock: a readable backup for small data on one machine."
    )
    _code_example: ClassVar[str] = """
```python
from prefect_memory.blocks import JsonMemory

memory = JsonMemory.load("BLOCK_NAME")
memory.set("settings:theme", "dark")
memory.get("settings:theme")
```
"""

    path: str = Field(
        default=".prefect-memory/memory.json",
        description="Path of the JSON file (created with its folder on first write).",
    )

    _scheme: ClassVar[str] = "json"


class SqliteMemory(_FileBlock):
    """A memory in a local SQLite file (durable, shared by the processes of one machine)."""

    _block_type_name: ClassVar[str] = "SQLite Memory"
    _description: ClassVar[str] = (
        "A prefect-memory store in a local SQLite file: durable, shared by the processes of "
        "one machine, with tags and TTLs. Also a result storage for local runs."
    )
    _code_example: ClassVar[str] = """
```python
from prefect_memory.blocks import SqliteMemory

memory = SqliteMemory.load("BLOCK_NAME")
memory.set("run:last", {"rows": 42}, ttl=3600)
memory.exists("run:last")
```
"""

    path: str = Field(
        default=".prefect-memory/memory.db",
        description="Path of the SQLite database file (created with its folder).",
    )

    _scheme: ClassVar[str] = "sqlite"


class InProcessMemory(MemoryBlock):
    """A memory in this process only: fast, bounded by ``max_entries``, gone at exit."""

    _block_type_name: ClassVar[str] = "In-Process Memory"
    _description: ClassVar[str] = (
        "A prefect-memory store inside the running process: an LRU-bounded dictionary shared "
        "by the blocks of the same name, for tests and per-process caches."
    )
    _code_example: ClassVar[str] = """
```python
from prefect_memory.blocks import InProcessMemory

memory = InProcessMemory.load("BLOCK_NAME")
memory.set("hot:user:7", {"name": "Ada"}, ttl=60)
memory.get("hot:user:7")
```
"""

    name: str = Field(
        default="default",
        description="Name of the store: the blocks of one process with the same name share it.",
    )
    max_entries: int = Field(
        default=100_000,
        ge=1,
        description="Most entries kept; the least recently used are evicted past it.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value or any(ch in value for ch in "/?#\x00"):
            raise ValueError(f"must be non-empty, without / ? # or NUL, got {value!r}")
        return value

    @classmethod
    def from_connection_string(cls, url: str, **fields: Any) -> InProcessMemory:
        """Build from ``memory://name`` (``?max_entries=N`` allowed)."""
        check_scheme(url, ("memory",), "memory://cache")
        parts = urlsplit(url)
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        if "max_entries" in query:
            fields.setdefault("max_entries", query["max_entries"])
        name = (parts.netloc + parts.path).strip("/")
        if name:
            fields.setdefault("name", name)
        return cls(**fields)

    def _memory_url(self) -> str:
        return f"memory://{self.name}"

    def _memory_options(self) -> dict[str, Any]:
        return {"max_entries": self.max_entries}

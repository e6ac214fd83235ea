"""Moved to :mod:`prefect_memory.plugins.parquet.store`; this path stays for old imports."""

from __future__ import annotations

from ..plugins.parquet.store import (
    ArchiveStore,
    Encoded,
    in_background,
)

__all__ = [
    "ArchiveStore",
    "Encoded",
    "in_background",
]

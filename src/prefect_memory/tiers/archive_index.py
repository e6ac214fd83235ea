"""Moved to :mod:`prefect_memory.plugins.parquet.index`; this path stays for old imports."""

from __future__ import annotations

from ..plugins.parquet.index import (
    NsIndex,
    Stat,
)

__all__ = [
    "NsIndex",
    "Stat",
]

"""Moved to :mod:`prefect_memory.plugins.parquet.backend`; this path stays for old imports."""

from __future__ import annotations

from ..plugins.parquet.backend import (
    ParquetArchiveBackend,
    location_of,
)

__all__ = [
    "ParquetArchiveBackend",
    "location_of",
]

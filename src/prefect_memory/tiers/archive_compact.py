"""Moved to :mod:`prefect_memory.plugins.parquet.compact`; this path stays for old imports."""

from __future__ import annotations

from ..plugins.parquet.compact import (
    CompactionReport,
    compact,
    purge_expired,
)

__all__ = [
    "CompactionReport",
    "compact",
    "purge_expired",
]

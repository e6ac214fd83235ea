"""Moved to :mod:`prefect_memory.plugins.parquet.query`; this path stays for old imports."""

from __future__ import annotations

from ..plugins.parquet.query import (
    DEFAULT_COLUMNS,
    dataset,
    name_seq_of,
    query,
)

__all__ = [
    "DEFAULT_COLUMNS",
    "dataset",
    "name_seq_of",
    "query",
]

"""Moved to :mod:`prefect_memory.plugins.parquet.format`; this path stays for old imports."""

from __future__ import annotations

from ..plugins.parquet.format import (
    COLUMNS,
    META_COLUMNS,
    SCHEMA,
    TIME_COLUMNS,
    Fetch,
    PartFile,
    ReadRequest,
    build_table,
    day_of,
    encode_table,
    fetch_tables,
    read_footers,
    write_rows,
)

__all__ = [
    "COLUMNS",
    "META_COLUMNS",
    "SCHEMA",
    "TIME_COLUMNS",
    "Fetch",
    "PartFile",
    "ReadRequest",
    "build_table",
    "day_of",
    "encode_table",
    "fetch_tables",
    "read_footers",
    "write_rows",
]

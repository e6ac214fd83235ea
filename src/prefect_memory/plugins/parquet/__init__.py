"""The Parquet store: entries as rows of a hive-partitioned Parquet dataset (the cold tier).

One module per job: :mod:`.backend` (the :class:`ParquetArchiveBackend` users open with a
``parquet://`` URL), :mod:`.store` (listing, reading and claiming files on the store),
:mod:`.format` (the row schema, writing and ranged reading of Parquet files),
:mod:`.log` (the commit log: which files count, in which order), :mod:`.index` (the
in-memory key index per namespace), :mod:`.summary` (key summaries of the files and
the index manifests that bundle them), :mod:`.lookup` (cold lookups through them),
:mod:`.compact` (compaction and expiry) and :mod:`.query` (date-range queries as
DataFrames, a pyarrow dataset).

Importing this package is cheap; pyarrow loads with the first name used.

Example:
    >>> import tempfile
    >>> from prefect_memory.plugins.parquet import ParquetArchiveBackend
    >>> archive = ParquetArchiveBackend("parquet:///" + tempfile.mkdtemp())
    >>> archive.scheme
    'parquet'
"""

from __future__ import annotations

from ...lazy_exports import lazy_exports

_EXPORTS = {
    "ParquetArchiveBackend": "backend",
    "location_of": "backend",
    "CompactionReport": "compact",
    "DEFAULT_COLUMNS": "query",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

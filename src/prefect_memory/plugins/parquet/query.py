"""Reading the archive by date: a pandas DataFrame with partition pruning, or a pyarrow dataset.

:func:`query` opens only the ``date=`` partitions between ``start`` and ``end``; inside
them it reads only the value chunks of the row groups that hold a selected row (and no
file at all when ``value`` is not asked for: every other column is in the key index).
By default it returns the current entries archived in the range (``latest_only``); with
``latest_only=False`` it returns every archived row version (history), tombstones left out.

Example:
    >>> import tempfile, datetime as dt
    >>> from prefect_memory.plugins.parquet import ParquetArchiveBackend
    >>> from prefect_memory.plugins.base import Record
    >>> archive = ParquetArchiveBackend("parquet:///" + tempfile.mkdtemp())
    >>> day = dt.datetime(2024, 5, 6, tzinfo=dt.timezone.utc).timestamp()
    >>> for i in range(3):  # one write a day
    ...     archive.put_many("ns", {f"k{i}": Record(b"v", day, day, day)}, now=day + i * 86400)
    >>> frame = query(archive, "ns", dt.date(2024, 5, 7), "2024-05-08", columns=["key", "date"])
    >>> frame.values.tolist()
    [['k1', '2024-05-07'], ['k2', '2024-05-08']]
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError
from .format import TIME_COLUMNS, PartFile, day_of

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.dataset as ds

    from .backend import ParquetArchiveBackend

DEFAULT_COLUMNS = (
    "key",
    "namespace",
    "value",
    "created_at",
    "updated_at",
    "last_access",
    "access_count",
    "expires_at",
    "ttl",
    "sliding",
    "tags",
    "version",
    "archived_at",
    "date",
)
_ALL = (*DEFAULT_COLUMNS, "seq", "deleted")
_UTC = _dt.timezone.utc


def _epoch(value: Any, *, end: bool) -> tuple[float, bool] | None:
    """A bound as ``(epoch seconds, inclusive)``; a date's end is the next midnight."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = (
                _dt.datetime.fromisoformat(value) if "T" in value else _dt.date.fromisoformat(value)
            )
        except ValueError as err:
            raise ConfigError(f"not an ISO date or datetime: {value!r}") from err
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=_UTC)
        return aware.timestamp(), True
    if isinstance(value, _dt.date):
        midnight = _dt.datetime(value.year, value.month, value.day, tzinfo=_UTC)
        if end:
            return (midnight + _dt.timedelta(days=1)).timestamp(), False
        return midnight.timestamp(), True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), True
    raise ConfigError(f"a date bound must be a date, datetime, ISO string or epoch, got {value!r}")


def query(
    backend: ParquetArchiveBackend,
    ns: str,
    start: Any = None,
    end: Any = None,
    *,
    columns: Sequence[str] | None = None,
    latest_only: bool = True,
    include_expired: bool = False,
    now: float | None = None,
) -> pd.DataFrame:
    """Rows of ``ns`` archived between ``start`` and ``end`` (inclusive) as a DataFrame.

    Args:
        backend: The archive.
        ns: Namespace.
        start: First date, datetime, ISO string or epoch seconds (``None``: the first row).
        end: Last one (a date includes its whole day; ``None``: the last row).
        columns: Columns to return (default: every column of the data files but
            ``seq``/``deleted``, plus ``date``, the partition). Times come back as UTC
            datetimes.
        latest_only: Only the current version of each entry (else: every row version).
        include_expired: Keep expired entries (``latest_only``).
        now: Current time for expiry (default: the wall clock).

    Returns:
        A DataFrame sorted by archive time, then key.
    """
    import pandas as pd

    wanted = list(columns or DEFAULT_COLUMNS)
    unknown = [c for c in wanted if c not in _ALL]
    if unknown:
        raise ConfigError(f"unknown columns {unknown}; available: {', '.join(_ALL)}")
    lo, hi = _epoch(start, end=False), _epoch(end, end=True)
    now = time.time() if now is None else now
    with backend._errors("query"), backend._lock:
        index = backend.refresh(ns)
        first = day_of(lo[0]) if lo else ""
        last = day_of(hi[0] if hi[1] else hi[0] - 1e-6) if hi else "9999"
        files = sorted(
            (f for f in index.files.values() if first <= f.day <= last), key=lambda f: f.path
        )  # partition pruning: the other partitions are never opened
        picks: list[tuple[PartFile, np.ndarray]] = []
        for file in files:
            mask = ~file.deleted
            if file.void_rows is not None:  # rows whose condition failed never applied
                mask &= ~file.void_rows
            if lo:
                mask &= file.archived >= lo[0]
            if hi:
                mask &= (file.archived <= hi[0]) if hi[1] else (file.archived < hi[0])
            rows = np.flatnonzero(mask)
            if latest_only:
                rows = np.array(
                    [r for r in rows if _current(index, file, int(r), now, include_expired)],
                    dtype=np.int64,
                )
            if len(rows):
                picks.append((file, rows))
        values: dict[tuple[str, int], bytes] = {}
        if "value" in wanted and picks:
            hits = {(f.path, int(r)): (f, int(r)) for f, rows in picks for r in rows}
            values = backend.read_values(hits)  # type: ignore[arg-type]
        frames = [_frame(index, ns, f, rows, values, wanted, latest_only) for f, rows in picks]
    if not frames:
        return pd.DataFrame({c: [] for c in wanted})
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["_archived", "_key"], kind="stable")
    return frame.reset_index(drop=True)[wanted]


def _current(index: Any, file: PartFile, row: int, now: float, include_expired: bool) -> bool:
    key = file.keys[row]
    if index.latest.get(key) is not file:
        return False
    return include_expired or index.row_live(key, file, row, now)


def _frame(
    index: Any,
    ns: str,
    file: PartFile,
    rows: np.ndarray,
    values: dict[tuple[str, int], bytes],
    wanted: list[str],
    latest_only: bool,
) -> pd.DataFrame:
    import pandas as pd

    count, last, expires = file.count[rows], file.last_access[rows], file.expires[rows]
    if latest_only:  # apply access statistics, as ``info()`` does
        count, last, expires = count.copy(), last.copy(), expires.copy()
        for i, row in enumerate(rows.tolist()):
            stat = index.stat_for(file.keys[row], file, row)
            if stat is not None:
                count[i], last[i] = stat.count, max(last[i], stat.last_access)
                if stat.expires_at is not None:
                    expires[i] = stat.expires_at
    source = {
        "key": lambda: [file.keys[r] for r in rows.tolist()],
        "namespace": lambda: [ns] * len(rows),
        "value": lambda: [values[(file.path, r)] for r in rows.tolist()],
        "created_at": lambda: file.created[rows],
        "updated_at": lambda: file.updated[rows],
        "last_access": lambda: last,
        "access_count": lambda: count,
        "expires_at": lambda: expires,
        "ttl": lambda: file.ttl[rows],
        "sliding": lambda: file.sliding[rows],
        "tags": lambda: file.tags.take(rows).to_pylist(),
        "version": lambda: file.version[rows],
        "archived_at": lambda: file.archived[rows],
        "date": lambda: [file.day] * len(rows),
        "seq": lambda: file.seq[rows],
        "deleted": lambda: file.deleted[rows],
    }
    data: dict[str, Any] = {"_archived": file.archived[rows], "_key": source["key"]()}
    for name in wanted:
        column = source[name]()
        if name in TIME_COLUMNS:
            column = pd.to_datetime(column, unit="s", utc=True)
        data[name] = column
    return pd.DataFrame(data)


def dataset(backend: ParquetArchiveBackend, ns: str) -> ds.Dataset:
    """Every data file of ``ns`` that counts as a pyarrow dataset (hive ``date`` partition),
    through fsspec, with the columns of the current schema (:mod:`.format`; ``value_json``
    is null in files written before it existed).

    Raw rows: superseded versions and tombstones included (filter on ``deleted`` and keep
    the highest ``seq`` per key for the current state, or use :func:`query`). Files not
    (or no longer) named by the archive's log are left out, and so are rows that never
    applied (a conditional write whose condition failed); a write whose log slot differs
    from the ``seq`` it was encoded with is read into memory with its rows' ``seq`` set to
    the slot.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from .format import SCHEMA, conform

    date = pa.schema([pa.field("date", pa.string())])
    with backend._errors("list"), backend._lock:
        index = backend.refresh(ns)
        files = sorted(index.files.values(), key=lambda f: f.path)
        plain = [f.path for f in files if not _rewritten(f)]
        fixed = [f for f in files if _rewritten(f)]
        whole = pds.dataset(
            plain,
            schema=pa.unify_schemas([SCHEMA, date]),  # version 1 files: value_json null
            format="parquet",
            filesystem=PyFileSystem(FSSpecHandler(backend.fs)),
            partitioning=pds.partitioning(date, flavor="hive"),
            partition_base_dir=backend.ns_root(ns),
        )
        if not fixed:
            return whole
        tables = []
        for file in fixed:
            with backend.fs.open(file.path, "rb") as fh:
                table = conform(pq.read_table(fh), value_json=False)
            names = table.schema.names
            table = table.set_column(names.index("seq"), "seq", pa.array(file.seq))
            if file.void_rows is not None:
                table = table.filter(pc.invert(pa.array(file.void_rows)))
            tables.append(table.append_column("date", pa.repeat(pa.scalar(file.day), len(table))))
        extra = pa.concat_tables(tables)
        if not plain:
            return pds.dataset(extra)
        return pds.dataset([whole, pds.dataset(extra.cast(whole.schema))])


def _rewritten(file: PartFile) -> bool:
    """Whether a file's raw rows differ from what counts (void rows, ``seq`` != slot)."""
    if file.void_rows is not None:
        return True
    return bool(file.slot) and bool(len(file.keys)) and name_seq_of(file) != file.slot


def name_seq_of(file: PartFile) -> int:
    """The ``seq`` a write file was encoded with (its name carries it)."""
    from .log import name_seq

    return name_seq(file.path)

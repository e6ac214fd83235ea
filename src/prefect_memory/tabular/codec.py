"""DataFrames to bytes and back, exactly: Arrow IPC (Feather v2) by default, Parquet on request.

A stored frame is a small *frame envelope* (a dict the memory's codec carries like any
other value)::

    {"__frame__": 1, "format": "arrow", "rows": 3, "columns": [...], "data": b"ARROW1...",
     "restore": {...}}

``data`` holds the frame with its index (pyarrow's pandas metadata keeps index names,
``RangeIndex`` bounds, MultiIndex levels, categoricals, nullable and extension dtypes,
timezones and time units). ``restore`` keeps what Arrow does not: the storage of
``string[python]`` columns, which columns were ``object`` (pandas 3 would read strings back
as ``str`` and lists as arrays), and the ``freq`` of a ``DatetimeIndex``.

Why Arrow IPC by default: it maps every pandas/Arrow type one to one (durations, time
units, dictionaries, nested types) with no logical-type translation, it reads without
decoding pages (the frame is read whole on every ``get_frame``), and with zstd buffer
compression it is as small as Parquet for typical tables. Parquet (``format="parquet"``)
is there for frames that other tools (DuckDB, Spark, Athena) will read straight from a
file store; both round-trip the same frames exactly here.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"v": [1.5, None]},
    ...                   index=pd.date_range("2024-01-01", periods=2, freq="D", tz="UTC"))
    >>> envelope = encode_frame(df)
    >>> envelope["format"], envelope["rows"], envelope["data"][:6]
    ('arrow', 2, b'ARROW1')
    >>> decode_frame(envelope).equals(df)
    True
    >>> decode_frame(encode_frame(df, format="parquet")).index.freqstr
    'D'
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SerializationError

FrameFormat = Literal["arrow", "parquet"]
FORMATS: tuple[str, ...] = ("arrow", "parquet")
#: Marks a stored value as a frame envelope (the value is the envelope's version).
MARKER = "__frame__"
_VERSION = 1


def is_frame_envelope(value: Any) -> bool:
    """Tell whether a loaded value is a frame envelope written by :func:`encode_frame`.

    Example:
        >>> is_frame_envelope({"__frame__": 1, "format": "arrow", "data": b""})
        True
        >>> is_frame_envelope({"data": b""})
        False
    """
    return isinstance(value, Mapping) and value.get(MARKER) == _VERSION and "data" in value


def encode_frame(
    df: pd.DataFrame, *, format: FrameFormat = "arrow", compression: str | None = "zstd"
) -> dict[str, Any]:
    """Encode ``df`` (values, dtypes and index) into a frame envelope.

    Args:
        df: The frame.
        format: ``"arrow"`` (Arrow IPC file, a.k.a. Feather v2) or ``"parquet"``.
        compression: Buffer/page compression (``"zstd"``, ``"lz4"``, ``None``).

    Returns:
        The envelope dict (store it as a value).

    Raises:
        SerializationError: A column Arrow cannot carry (mixed-type objects, duplicate
            column names, complex numbers...), named in the message.
    """
    if not isinstance(df, pd.DataFrame):
        raise SerializationError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if format not in FORMATS:
        raise SerializationError(f"format must be one of {FORMATS}, got {format!r}")
    duplicated = df.columns[df.columns.duplicated()].tolist()
    if duplicated:
        raise SerializationError(f"cannot store a frame with duplicate column names {duplicated}")
    restore = _restore_info(df)
    if "labels" in restore:  # Arrow wants unique str names; the labels come back on decode
        names = [str(c) for c in df.columns]
        if len(set(names)) != len(names):
            names = [f"column_{i}" for i in range(len(names))]
        df = df.set_axis(names, axis=1)
    try:
        table = pa.Table.from_pandas(df, preserve_index=None)
    except (pa.ArrowException, TypeError, ValueError) as err:
        raise SerializationError(f"cannot store this frame as Arrow: {err}") from err
    if format == "arrow":
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=compression)
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
    else:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression=compression or "none", version="2.6")
        data = buffer.getvalue()
    return {
        MARKER: _VERSION,
        "format": format,
        "rows": len(df),
        "columns": [str(c) for c in df.columns],
        "data": data,
        "restore": restore,
    }


def decode_frame(envelope: Mapping[str, Any]) -> pd.DataFrame:
    """Decode a frame envelope back into the exact frame that was encoded.

    Raises:
        SerializationError: The value is not a frame envelope or its bytes are corrupt.
    """
    if not is_frame_envelope(envelope):
        raise SerializationError("this entry does not hold a frame (use get, not get_frame)")
    data = envelope["data"]
    try:
        if envelope.get("format") == "parquet":
            table = pq.read_table(io.BytesIO(data))
        else:
            table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        df = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise SerializationError(f"stored frame is corrupt: {err}") from err
    return _restore(df, table, envelope.get("restore") or {})


def _string_storage(dtype: Any) -> list[Any] | None:
    if not isinstance(dtype, pd.StringDtype):
        return None
    return [dtype.storage, dtype.na_value is pd.NA]


def _restore_info(df: pd.DataFrame) -> dict[str, Any]:
    info: dict[str, Any] = {}
    strings = {i: s for i, dt in enumerate(df.dtypes) if (s := _string_storage(dt)) is not None}
    if strings:
        info["strings"] = strings
    objects = [i for i, dt in enumerate(df.dtypes) if pd.api.types.is_object_dtype(dt)]
    if objects:
        info["objects"] = objects
    if df.index.dtype == object and not isinstance(df.index, pd.MultiIndex):
        info["index_object"] = True
    index_storage = _string_storage(df.index.dtype)
    if index_storage is not None and not isinstance(df.index, pd.MultiIndex):
        info["index_string"] = index_storage
    columns = df.columns
    if isinstance(columns, pd.RangeIndex):
        info["labels"] = {"range": [columns.start, columns.stop, columns.step]}
    elif not all(isinstance(c, str) for c in columns):
        info["labels"] = {"values": list(columns), "names": list(columns.names)}
    freq = getattr(df.index, "freqstr", None)
    if isinstance(df.index, (pd.DatetimeIndex, pd.TimedeltaIndex)) and freq:
        info["freq"] = freq
    return info


def _with_storage(dtype: Any, storage: list[Any]) -> Any:
    target = pd.StringDtype(storage[0], na_value=pd.NA if storage[1] else float("nan"))
    return None if dtype == target else target


def _restore(df: pd.DataFrame, table: pa.Table, info: Mapping[Any, Any]) -> pd.DataFrame:
    # Object columns as the Python objects they held (pandas 3 would make strings ``str``
    # and lists numpy arrays); data columns come first in the table, index columns last.
    for i in info.get("objects") or ():
        values = table.column(int(i)).to_pylist()
        df.isetitem(int(i), pd.Series(values, index=df.index, dtype=object))
    labels = info.get("labels")
    if labels is not None:
        if "range" in labels:
            df.columns = pd.RangeIndex(*labels["range"])
        elif labels["values"] and all(isinstance(v, tuple) for v in labels["values"]):
            df.columns = pd.MultiIndex.from_tuples(labels["values"], names=labels["names"])
        else:
            df.columns = pd.Index(labels["values"], name=labels["names"][0])
    if info.get("index_object") and df.index.dtype != object:
        df.index = df.index.astype(object)
    for position, storage in (info.get("strings") or {}).items():
        i = int(position)
        target = _with_storage(df.dtypes.iloc[i], storage)
        if target is not None:
            df.isetitem(i, df.iloc[:, i].astype(target))
    if "index_string" in info:
        target = _with_storage(df.index.dtype, info["index_string"])
        if target is not None:
            df.index = df.index.astype(target)
    freq = info.get("freq")
    if freq:
        try:
            cls = pd.DatetimeIndex if isinstance(df.index, pd.DatetimeIndex) else pd.TimedeltaIndex
            df.index = cls(df.index, freq=freq)
        except (ValueError, TypeError):  # pragma: no cover - the index no longer fits its freq
            pass
    return df

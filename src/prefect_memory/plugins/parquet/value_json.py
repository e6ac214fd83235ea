"""The ``value_json`` column: stored values as JSON text, for engines that cannot read msgpack.

The archive stores the exact bytes a memory wrote (``value``, what every read of ours
uses). Next to them, a data file carries ``value_json``: the UTF-8 JSON text of the
value those bytes decode to, when JSON holds that value *exactly*, and null otherwise.
So ``json.loads(value_json)`` equals what ``Memory.get`` returns for the entry (before
load hooks), and DuckDB, Polars, Spark or Athena read values without our code.

The column is written when the archive is opened with ``value_json=True`` (off by
default, null then): decoding every value costs about 3 µs a row on the write path
(msgpack, then orjson when installed, the standard library's encoder otherwise), which
is more than the rest of a write of small values (``benchmarks/bench_archive.py``).

Which values get JSON (anything else is null):

- bytes in the codec's plain formats (format byte ``0x01`` msgpack, ``0x02`` msgpack +
  zstd) of at most :data:`JSON_MAX_BYTES` once decompressed;
- holding only JSON's own types: ``None``, ``bool``, ``int``, finite ``float``, ``str``,
  ``list``, and ``dict`` with ``str`` keys. Bytes, tuples, sets, datetimes, decimals,
  UUIDs, numpy arrays, pickled objects, NaN and non-``str`` keys have no exact JSON form:
  the whole value is null (its ``value`` bytes still read back exactly). A value that
  *is* ``None`` is the JSON text ``null``, not a null cell.

Why the backend, on the stored bytes: a memory runs its hooks before a backend sees a
value, so an encrypting hook (:class:`~prefect_memory.validation.EncryptionHook`) hands
over ciphertext (``b"PMENC"...``, not a codec format): its JSON is null. The JSON is a
function of the stored bytes only, so it never tells more than the ``value`` column
beside it, whatever hooks a memory runs; a value hook's output (``before_save``) is
what is stored, and what the JSON shows. Decoding is bounded (size above, msgpack's
own nesting and length limits); nothing decoded is executed.

Example:
    >>> import prefect_memory as pm
    >>> codec = pm.Codec()
    >>> value_json(codec.encode({"rows": 10, "ok": True}))
    '{"rows":10,"ok":true}'
    >>> value_json(codec.encode({"at": b"raw"})) is None, value_json(b"PMENC...") is None
    (True, True)
    >>> value_json(pm.Codec(compression=True, compress_threshold=0).encode([1.5, "é"]))
    '[1.5,"é"]'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgpack
import pyarrow as pa

from ..._gc import gc_paused

#: Largest value (its msgpack body, once decompressed) given a JSON form.
JSON_MAX_BYTES = 1 << 20
_MSGPACK = 0x01  # the format bytes of prefect_memory.codecs
_MSGPACK_ZSTD = 0x02
try:  # 10x faster than the standard library's encoder (optional: same output, see below)
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    _orjson = None
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_encode = _ENCODER.encode


class _NotJson(Exception):
    """An extension type (tuple, set, datetime...): the value has no exact JSON form."""


def _refuse(code: int, data: bytes) -> Any:
    raise _NotJson


def _inflate(frame: memoryview) -> bytes | None:
    """A zstd frame's content, or ``None`` when it is corrupt or over the bound."""
    import zstandard

    try:
        declared = zstandard.frame_content_size(frame)
        if declared > JSON_MAX_BYTES:
            return None
        dctx = zstandard.ZstdDecompressor()
        if declared >= 0:
            return dctx.decompress(frame, allow_extra_data=False)
        with dctx.stream_reader(frame, read_across_frames=False) as reader:
            out = reader.read(JSON_MAX_BYTES + 1)
        return None if len(out) > JSON_MAX_BYTES else out
    except zstandard.ZstdError:
        return None


def value_json(data: bytes) -> str | None:
    """The JSON text of the value stored as ``data``, or ``None`` (see the module docstring)."""
    if not data or len(data) > JSON_MAX_BYTES + 1:
        return None
    kind = data[0]
    body: Any
    if kind == _MSGPACK:
        body = memoryview(data)[1:]
    elif kind == _MSGPACK_ZSTD:
        body = _inflate(memoryview(data)[1:])
        if body is None:
            return None
    else:
        return None
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_refuse)
    except (_NotJson, ValueError):  # an extension; corrupt or foreign bytes (ValueErrors)
        return None
    if _orjson is not None:
        try:
            text = _orjson.dumps(value)
        except TypeError:  # bytes, bytes keys, over 64-bit ints, deep nesting: decide below
            return _exact(value)
        # orjson writes NaN and infinities as null: a value holding a float (msgpack's
        # 0xca/0xcb) and a null goes the exact way (rare: both in one value)
        if b"null" in text and (b"\xcb" in data or b"\xca" in data or kind == _MSGPACK_ZSTD):
            return _exact(value)
        return text.decode()
    return _exact(value)


def _exact(value: Any) -> str | None:
    """The standard library's encoder: exact or ``None`` (bytes and bytes keys raise
    TypeError, NaN ValueError, too deep RecursionError)."""
    try:
        return _encode(value)
    except (ValueError, TypeError, RecursionError):
        return None


def json_column(values: Sequence[bytes], blank: bool = False) -> pa.Array:
    """``value_json`` of a batch of stored values (all null with ``blank``: tombstones, or
    the column switched off)."""
    if blank:
        return pa.nulls(len(values), pa.large_string())
    # Every decoded value is garbage at once and holds no cycle; left on, the collector
    # scans every live object (the whole batch) again and again: twice the decoding time.
    with gc_paused():
        texts = list(map(value_json, values))
    return pa.array(texts, pa.large_string())

"""Value codecs: msgpack with typed extensions, optional zstd, pickle only on opt-in.

Stored bytes start with one format byte, so that a reader always knows how to decode
what a writer produced, whatever options each had.

Example:
    >>> import datetime as dt
    >>> codec = Codec()
    >>> value = {"at": dt.datetime(2024, 1, 2, 3, 4, 5), "ids": (1, 2), "raw": b"\\x00"}
    >>> codec.decode(codec.encode(value)) == value
    True
"""

from __future__ import annotations

import datetime as _dt
import decimal
import pickle
import uuid
from typing import Any

import msgpack

from .errors import SerializationError

_MSGPACK = 0x01
_MSGPACK_ZSTD = 0x02

_EXT_DATETIME = 1
_EXT_DATE = 2
_EXT_TIME = 3
_EXT_TIMEDELTA = 4
_EXT_NDARRAY = 5
_EXT_NPSCALAR = 6
_EXT_SET = 7
_EXT_FROZENSET = 8
_EXT_TUPLE = 9
_EXT_DECIMAL = 10
_EXT_UUID = 11
_EXT_PICKLE = 12
_EXT_COMPLEX = 13

try:  # zstandard is a core dependency, but keep decoding of plain values importable without it
    import zstandard as _zstd
except ImportError:  # pragma: no cover - exercised only on broken installs
    _zstd = None


class Codec:
    """Encode Python values to bytes and back.

    Args:
        compression: Compress encoded values with zstd when they reach ``compress_threshold``.
        compress_threshold: Size in bytes from which values are compressed.
        compress_level: zstd level (1 is fast, 19 is small).
        pickle: Allow values msgpack cannot carry to be pickled, and pickled values to be
            loaded. Off by default: unpickling data from a shared store runs arbitrary code.

    Example:
        >>> Codec(compression=True, compress_threshold=16).decode(
        ...     Codec(compression=True, compress_threshold=16).encode("x" * 1000)) == "x" * 1000
        True
    """

    __slots__ = ("_cctx", "_dctx", "compress_level", "compress_threshold", "compression", "pickle")

    def __init__(
        self,
        *,
        compression: bool = False,
        compress_threshold: int = 4096,
        compress_level: int = 3,
        pickle: bool = False,
    ) -> None:
        if compress_threshold < 0:
            raise ValueError("compress_threshold must be >= 0")
        if compression and _zstd is None:  # pragma: no cover
            raise SerializationError("compression needs the 'zstandard' package")
        self.compression = compression
        self.compress_threshold = compress_threshold
        self.compress_level = compress_level
        self.pickle = pickle
        self._cctx: Any = None
        self._dctx: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "compression": self.compression,
            "compress_threshold": self.compress_threshold,
            "compress_level": self.compress_level,
            "pickle": self.pickle,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"Codec(compression={self.compression}, compress_threshold={self.compress_threshold}, "
            f"pickle={self.pickle})"
        )

    # -- encoding -----------------------------------------------------------------------------
    def _default(self, obj: Any) -> Any:
        if isinstance(obj, tuple):
            return msgpack.ExtType(_EXT_TUPLE, self._pack(list(obj)))
        if isinstance(obj, _dt.datetime):
            return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
        if isinstance(obj, _dt.date):
            return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
        if isinstance(obj, _dt.time):
            return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
        if isinstance(obj, _dt.timedelta):
            return msgpack.ExtType(
                _EXT_TIMEDELTA, self._pack([obj.days, obj.seconds, obj.microseconds])
            )
        if isinstance(obj, (set, frozenset)):
            code = _EXT_FROZENSET if isinstance(obj, frozenset) else _EXT_SET
            return msgpack.ExtType(code, self._pack(list(obj)))
        if isinstance(obj, decimal.Decimal):
            return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
        if isinstance(obj, uuid.UUID):
            return msgpack.ExtType(_EXT_UUID, obj.bytes)
        if isinstance(obj, complex):
            return msgpack.ExtType(_EXT_COMPLEX, self._pack([obj.real, obj.imag]))
        np = _numpy_if_loaded(obj)
        if np is not None:
            if isinstance(obj, np.ndarray) and obj.dtype != object:
                data = [obj.dtype.str, list(obj.shape), np.ascontiguousarray(obj).tobytes()]
                return msgpack.ExtType(_EXT_NDARRAY, self._pack(data))
            if isinstance(obj, np.generic) and obj.dtype != object:
                return msgpack.ExtType(_EXT_NPSCALAR, self._pack([obj.dtype.str, obj.tobytes()]))
        # Subclasses of the plain types (IntEnum, OrderedDict, str enums...) as their base type.
        for base in (bool, int, float, str, bytes, dict, list):
            if isinstance(obj, base):
                return base(obj)
        if self.pickle:
            return msgpack.ExtType(_EXT_PICKLE, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        raise SerializationError(
            f"cannot store a value of type {type(obj).__module__}.{type(obj).__qualname__}: "
            "msgpack cannot carry it; convert it, or open the memory with pickle=True "
            "(only for stores you trust)"
        )

    def _pack(self, value: Any) -> bytes:
        return msgpack.packb(value, default=self._default, use_bin_type=True, strict_types=True)

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` to bytes (format byte first)."""
        try:
            body = self._pack(value)
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError) as err:
            raise SerializationError(f"cannot encode value: {err}") from err
        if self.compression and len(body) >= self.compress_threshold:
            if self._cctx is None:
                self._cctx = _zstd.ZstdCompressor(level=self.compress_level)
            return bytes((_MSGPACK_ZSTD,)) + self._cctx.compress(body)
        return bytes((_MSGPACK,)) + body

    # -- decoding -----------------------------------------------------------------------------
    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE:
            return tuple(self._unpack(data))
        if code == _EXT_DATETIME:
            return _dt.datetime.fromisoformat(data.decode())
        if code == _EXT_DATE:
            return _dt.date.fromisoformat(data.decode())
        if code == _EXT_TIME:
            return _dt.time.fromisoformat(data.decode())
        if code == _EXT_TIMEDELTA:
            days, seconds, micros = self._unpack(data)
            return _dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == _EXT_SET:
            return set(self._unpack(data))
        if code == _EXT_FROZENSET:
            return frozenset(self._unpack(data))
        if code == _EXT_DECIMAL:
            return decimal.Decimal(data.decode())
        if code == _EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == _EXT_COMPLEX:
            real, imag = self._unpack(data)
            return complex(real, imag)
        if code in (_EXT_NDARRAY, _EXT_NPSCALAR):
            import numpy as np

            if code == _EXT_NDARRAY:
                dtype, shape, raw = self._unpack(data)
                return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
            dtype, raw = self._unpack(data)
            return np.frombuffer(raw, dtype=np.dtype(dtype))[0]
        if code == _EXT_PICKLE:
            if not self.pickle:
                raise SerializationError(
                    "this entry holds a pickled value; open the memory with pickle=True to load it "
                    "(only for stores you trust)"
                )
            return pickle.loads(data)
        return msgpack.ExtType(code, data)

    def _unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, strict_map_key=False)

    def decode(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`encode` (with any options)."""
        if not data:
            raise SerializationError("cannot decode an empty value")
        kind = data[0]
        try:
            if kind == _MSGPACK:
                return self._unpack(memoryview(data)[1:])
            if kind == _MSGPACK_ZSTD:
                if _zstd is None:  # pragma: no cover
                    raise SerializationError("this value is zstd-compressed: install 'zstandard'")
                if self._dctx is None:
                    self._dctx = _zstd.ZstdDecompressor()
                return self._unpack(self._dctx.decompress(memoryview(data)[1:]))
        except SerializationError:
            raise
        except Exception as err:
            raise SerializationError(f"stored value is corrupt or not ours: {err}") from err
        raise SerializationError(f"unknown value format byte 0x{kind:02x}")


def _numpy_if_loaded(obj: Any) -> Any:
    """Return the numpy module if ``obj`` comes from it (never imports numpy for others)."""
    if type(obj).__module__ == "numpy" or type(obj).__module__.startswith("numpy."):
        import numpy

        return numpy
    return None

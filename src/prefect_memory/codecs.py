"""Value codecs: msgpack with typed extensions, optional zstd, pickle only on opt-in.

Stored bytes start with one format byte, so that a reader always knows how to decode
what a writer produced, whatever options each had.

Anything read from a store may have been written by someone else, so decoding is
bounded: nesting (``max_depth`` for values holding tuples or sets, msgpack's own 1024
levels for plain lists and dicts), size once decompressed (``max_decoded_size``) and the
number of container elements (``max_items``), each checked before the work it guards.
Any bytes at all give a value or a :class:`~prefect_memory.errors.SerializationError`
naming the limit; nothing decoded is executed (pickle only with ``pickle=True``). The
extension containers (tuple, set, frozenset) are decoded iteratively, so the C stack
stays flat whatever the nesting. Encoding refuses what decoding would refuse.

Example:
    >>> import datetime as dt
    >>> codec = Codec()
    >>> value = {"at": dt.datetime(2024, 1, 2, 3, 4, 5), "ids": (1, 2), "raw": b"\\x00"}
    >>> codec.decode(codec.encode(value)) == value
    True
    >>> deep = ()
    >>> for _ in range(200):
    ...     deep = (deep,)
    >>> codec.encode(deep)
    Traceback (most recent call last):
    ...
    prefect_memory.errors.SerializationError: value is nested deeper than max_depth=100 ...
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import pickle
import threading
import uuid
from typing import Any

import msgpack

from .errors import ConfigError, SerializationError

_MSGPACK = 0x01
_MSGPACK_ZSTD = 0x02
_MSGPACK_BYTE = bytes((_MSGPACK,))
_unpackb = msgpack.unpackb

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

#: Defaults of the decoding bounds (see :class:`Codec`).
DEFAULT_MAX_DEPTH = 100
DEFAULT_MAX_DECODED_SIZE = 256 * 1024 * 1024
DEFAULT_MAX_ITEMS = 4_000_000
_MAX_DEPTH_CAP = 256  # encoding recurses once per tuple/set level: stay far from Python's limit
_COUNT_IN_C_FROM = 1 << 20  # bodies larger than this count items while msgpack builds them
_STREAM_CHUNK = 1 << 20
_PLAIN_WRITE_DEPTH = 1024  # msgpack refuses deeper lists/dicts, when writing and reading

_CONTAINER_EXTS = {_EXT_TUPLE: tuple, _EXT_SET: set, _EXT_FROZENSET: frozenset}
_ENCODE_CONTAINERS = (list, tuple, dict, set, frozenset)
_CONTAINER_TYPES = frozenset(_ENCODE_CONTAINERS)
_SCALARS = frozenset((str, int, float, bool, bytes, type(None), _dt.datetime, _dt.date))

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
        max_depth: Deepest nesting of a value that holds tuples, sets or frozensets
            (lists and dicts count too; a flat list is depth 1), at most 256. Default 100.
            Values of lists and dicts only are bounded by msgpack itself (1024 levels
            written and read) and decoded without recursion, so they skip this check:
            the hot path stays as fast as plain msgpack.
        max_decoded_size: Largest encoded value in bytes, once decompressed (a zstd frame
            is refused from its declared size, or as soon as its output passes the limit).
            Default 256 MiB.
        max_items: Most elements all containers of one value may hold together (each
            container counts itself plus its length). Decoding takes about 100 bytes of
            memory per item at worst, so this bounds a reader's memory. Default 4,000,000.

    Raises:
        ConfigError: A bound is not a positive int (or ``max_depth`` is over 256).

    Example:
        >>> Codec(compression=True, compress_threshold=16).decode(
        ...     Codec(compression=True, compress_threshold=16).encode("x" * 1000)) == "x" * 1000
        True
        >>> Codec(max_items=10).encode(list(range(100)))
        Traceback (most recent call last):
        ...
        prefect_memory.errors.SerializationError: value holds more than max_items=10 ...
    """

    __slots__ = (
        "_local",
        "compress_level",
        "compress_threshold",
        "compression",
        "max_decoded_size",
        "max_depth",
        "max_items",
        "pickle",
    )

    def __init__(
        self,
        *,
        compression: bool = False,
        compress_threshold: int = 4096,
        compress_level: int = 3,
        pickle: bool = False,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        if compress_threshold < 0:
            raise ConfigError("compress_threshold must be >= 0")
        problems = [
            f"{name} must be a positive int, got {value!r}"
            for name, value in (
                ("max_depth", max_depth),
                ("max_decoded_size", max_decoded_size),
                ("max_items", max_items),
            )
            if isinstance(value, bool) or not isinstance(value, int) or value < 1
        ]
        if not problems and max_depth > _MAX_DEPTH_CAP:
            problems.append(f"max_depth must be at most {_MAX_DEPTH_CAP}, got {max_depth}")
        if problems:
            raise ConfigError("invalid Codec: " + "; ".join(problems))
        if compression and _zstd is None:  # pragma: no cover
            raise SerializationError("compression needs the 'zstandard' package")
        self.compression = compression
        self.compress_threshold = compress_threshold
        self.compress_level = compress_level
        self.pickle = pickle
        self.max_depth = max_depth
        self.max_decoded_size = max_decoded_size
        self.max_items = max_items
        self._local = threading.local()  # zstd contexts are not safe to share between threads

    def __getstate__(self) -> dict[str, Any]:
        return {
            "compression": self.compression,
            "compress_threshold": self.compress_threshold,
            "compress_level": self.compress_level,
            "pickle": self.pickle,
            "max_depth": self.max_depth,
            "max_decoded_size": self.max_decoded_size,
            "max_items": self.max_items,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"Codec(compression={self.compression}, compress_threshold={self.compress_threshold}, "
            f"pickle={self.pickle}, max_depth={self.max_depth}, "
            f"max_decoded_size={self.max_decoded_size}, max_items={self.max_items})"
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

    def _probe(self, obj: Any) -> Any:
        """``default`` of the first, walk-free packing: stops at the first container extension."""
        if isinstance(obj, (tuple, set, frozenset)):
            raise _HoldsExtContainers
        return self._default(obj)

    def _pack(self, value: Any) -> bytes:
        return msgpack.packb(value, default=self._default, use_bin_type=True, strict_types=True)

    def _check_shape(self, value: Any) -> None:
        """Refuse values deeper than ``max_depth`` or with more than ``max_items``.

        Breadth first, one level at a time: cycles and shared parts end at a bound.
        """
        if not isinstance(value, _ENCODE_CONTAINERS):
            return
        level: list[Any] = [value]
        depth = items = 0
        while level:
            depth += 1
            if depth > self.max_depth:
                raise _too_deep(self.max_depth, "value")
            items += len(level) + sum(map(len, level))
            if items > self.max_items:
                raise _too_many(self.max_items, "value")
            below: list[Any] = []
            for node in level:
                if isinstance(node, dict):
                    kinds = set(map(type, node.values()))
                    kinds.update(map(type, node))
                    kinds -= _SCALARS
                    if kinds and (kinds <= _CONTAINER_TYPES or any(map(_is_container, kinds))):
                        below += [c for c in node.values() if isinstance(c, _ENCODE_CONTAINERS)]
                        below += [c for c in node if isinstance(c, _ENCODE_CONTAINERS)]
                else:
                    kinds = set(map(type, node))
                    kinds -= _SCALARS
                    if kinds and (kinds <= _CONTAINER_TYPES or any(map(_is_container, kinds))):
                        below += [c for c in node if isinstance(c, _ENCODE_CONTAINERS)]
            level = below

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` to bytes (format byte first).

        Raises:
            SerializationError: The value cannot be carried, or is past a bound of this
                codec (nested deeper than ``max_depth``, more than ``max_items`` elements,
                larger than ``max_decoded_size``): a reader would refuse it.
        """
        try:
            try:  # plain values (no tuple/set/frozenset) need no walk: msgpack bounds them
                body = msgpack.packb(
                    value, default=self._probe, use_bin_type=True, strict_types=True
                )
            except _HoldsExtContainers:
                self._check_shape(value)
                body = self._pack(value)
            else:
                if len(body) > self.max_items:  # every element takes at least one byte
                    self._check_shape(value)
        except SerializationError:
            raise
        except ValueError as err:
            if "recursion limit" in str(err):  # msgpack's own bound on plain nesting
                raise SerializationError(
                    f"value is nested deeper than msgpack's {_PLAIN_WRITE_DEPTH} levels of "
                    "lists and dicts, or holds itself; flatten it"
                ) from err
            raise SerializationError(f"cannot encode value: {err}") from err
        except Exception as err:  # TypeError, OverflowError, RecursionError...
            raise SerializationError(f"cannot encode value: {err}") from err
        if len(body) > self.max_decoded_size:
            raise _too_large(len(body), self.max_decoded_size, "value is")
        if self.compression and len(body) >= self.compress_threshold:
            cctx = getattr(self._local, "cctx", None)
            if cctx is None:
                cctx = self._local.cctx = _zstd.ZstdCompressor(level=self.compress_level)
            return bytes((_MSGPACK_ZSTD,)) + cctx.compress(body)
        return bytes((_MSGPACK,)) + body

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`encode` (with any options).

        Raises:
            SerializationError: For any bytes that are not a value within this codec's
                bounds (corrupt, foreign, too deep, too large, or pickled without
                ``pickle=True``); never another exception.
        """
        # Fast path: a small plain msgpack value in ``bytes`` (what every store hands back
        # for the common case), within every bound by its size alone (see ``_unpack``), is
        # unpacked at once. Anything else, and any failure here (hostile or corrupt bytes,
        # container extensions), takes the full path below, which raises the errors.
        if (
            type(data) is bytes
            and data[:1] == _MSGPACK_BYTE
            and (size := len(data) - 1) <= _COUNT_IN_C_FROM
            and size <= self.max_decoded_size
            and 2 * size + 1 <= self.max_items
        ):
            try:
                return _unpackb(data[1:], ext_hook=self._fast_hook, raw=False, strict_map_key=False)
            except Exception:  # the full path below says what went wrong
                pass
        try:
            view = memoryview(data).cast("B")
            if not len(view):
                raise SerializationError("cannot decode an empty value")
            kind = view[0]
            if kind == _MSGPACK:
                body: Any = view[1:]
                if len(body) > self.max_decoded_size:
                    raise _too_large(len(body), self.max_decoded_size, "stored value is")
                return self._unpack(body)
            if kind == _MSGPACK_ZSTD:
                return self._unpack(self._decompress(view[1:]))
        except SerializationError:
            raise
        except msgpack.StackError as err:  # plain nesting past msgpack's own 1024 levels
            raise _too_deep(self.max_depth, "stored value") from err
        except Exception as err:  # msgpack, zstd, Unicode, numpy, datetime... all ours now
            if "exceeds max_array_len" in str(err) or "exceeds max_map_len" in str(err):
                raise _too_many(self.max_items, "stored value") from err
            raise SerializationError(
                f"stored value is corrupt or not ours: {type(err).__name__}: {err}"
            ) from err
        raise SerializationError(f"unknown value format byte 0x{kind:02x}")

    def _unpack(self, body: Any) -> Any:
        size = len(body)
        if size <= _COUNT_IN_C_FROM and 2 * size + 1 <= self.max_items:
            try:  # too small to hold max_items: no counting, and no walk unless tuples/sets
                return msgpack.unpackb(
                    body, ext_hook=self._fast_hook, raw=False, strict_map_key=False
                )
            except _HoldsExtContainers:
                pass
        return _Decoding(self, size).run(body)

    def _scalar_ext(self, code: int, data: bytes) -> Any:
        """Decode one extension that holds no container (datetime, decimal, numpy...)."""
        if code == _EXT_DATETIME:
            return _dt.datetime.fromisoformat(data.decode())
        if code == _EXT_DATE:
            return _dt.date.fromisoformat(data.decode())
        if code == _EXT_TIME:
            return _dt.time.fromisoformat(data.decode())
        if code == _EXT_TIMEDELTA:
            days, seconds, micros = _leaf_payload(data)
            return _dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == _EXT_DECIMAL:
            return decimal.Decimal(data.decode())
        if code == _EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == _EXT_COMPLEX:
            real, imag = _leaf_payload(data)
            return complex(real, imag)
        if code in (_EXT_NDARRAY, _EXT_NPSCALAR):
            return _numpy_value(code, data)
        if code == _EXT_PICKLE:
            if not self.pickle:
                raise SerializationError(
                    "this entry holds a pickled value; open the memory with pickle=True to load it "
                    "(only for stores you trust)"
                )
            return pickle.loads(data)
        return msgpack.ExtType(code, data)

    def _fast_hook(self, code: int, data: bytes) -> Any:
        """``ext_hook`` of the walk-free decoding: stops at the first container extension."""
        if code in _CONTAINER_EXTS:
            raise _HoldsExtContainers
        return self._scalar_ext(code, data)

    def _decompress(self, frame: memoryview) -> bytes:
        if _zstd is None:  # pragma: no cover
            raise SerializationError("this value is zstd-compressed: install 'zstandard'")
        limit = self.max_decoded_size
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = _zstd.ZstdDecompressor()
        declared = _zstd.frame_content_size(frame)
        if declared > limit:
            raise _too_large(declared, limit, "compressed value declares it")
        if declared >= 0:  # zstd checks the output against the declared size
            return dctx.decompress(frame, allow_extra_data=False)
        out = bytearray()  # no declared size: stream, and stop once past the limit
        with dctx.stream_reader(frame, read_across_frames=False) as reader:
            while chunk := reader.read(min(_STREAM_CHUNK, limit + 1 - len(out))):
                out += chunk
                if len(out) > limit:
                    raise _too_large(len(out), limit, "compressed value expands to at least")
        return bytes(out)


class _Pending:
    """A tuple/set/frozenset whose payload is decoded after the value around it."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code = code
        self.data = data


class _Decoding:
    """One call of :meth:`Codec.decode`: extension hook, item budget, iterative rebuild.

    msgpack calls the extension hook from C. Decoding a container extension there (as a
    nested ``unpackb``) would stack a C frame of ~35 KB per level, and a few hundred levels
    overflow the stack; so container extensions become :class:`_Pending` and are decoded
    one after the other by :meth:`_rebuild`, which also enforces depth and items.
    """

    __slots__ = ("built_in_c", "codec", "items", "options", "pending")

    def __init__(self, codec: Codec, size: int) -> None:
        self.codec = codec
        self.items = 0  # counted by the rebuild
        self.built_in_c = 0  # counted while msgpack builds (large bodies only)
        self.pending = 0  # container extensions met
        self.options: dict[str, Any] = {
            "ext_hook": self.ext_hook,
            "raw": False,
            "strict_map_key": False,
        }
        if size > _COUNT_IN_C_FROM or 2 * size + 1 > codec.max_items:  # else it cannot be many
            cap = min(size, codec.max_items)
            self.options.update(
                list_hook=self.count,
                object_hook=self.count,
                max_array_len=cap,
                max_map_len=cap,
            )

    def run(self, body: Any) -> Any:
        value = msgpack.unpackb(body, **self.options)
        if type(value) not in (list, dict, _Pending):
            return value
        if self.pending:
            return self._rebuild(value)
        return value  # lists and dicts only: msgpack built them without recursion, bounded

    def count(self, container: Any) -> Any:
        self.built_in_c += 1 + len(container)
        if self.built_in_c > self.codec.max_items:
            raise _too_many(self.codec.max_items, "stored value")
        return container

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code in _CONTAINER_EXTS:
            self.pending += 1
            return _Pending(code, data)
        return self.codec._scalar_ext(code, data)

    def _rebuild(self, root: Any) -> Any:
        """Decode pending extensions and check depth and items, without recursion.

        Lists and dicts are fresh from msgpack, so they are completed in place; a pending
        extension is decoded to its element list, which is completed like any list and
        then frozen into its type by a ``build`` step that runs after its children.
        """
        limit, max_items = self.codec.max_depth, self.codec.max_items
        holder = [root]
        stack: list[tuple[Any, ...]] = [("visit", holder, 0)]
        while stack:
            step = stack.pop()
            if step[0] == "build":  # ("build", pending, elements, slot, key)
                _, pending, elements, slot, key = step
                slot[key] = _CONTAINER_EXTS[pending.code](elements)
                continue
            if step[0] == "rekey":  # a dict with tuple keys: its keys are built now
                _, node, built = step
                fresh = {built.get(id(k), k) if type(k) is _Pending else k: v
                         for k, v in node.items()}  # fmt: skip
                node.clear()
                node.update(fresh)
                continue
            _, node, depth = step
            if depth > limit:
                raise _too_deep(limit, "stored value")
            if depth:  # the holder is not part of the value
                self.items += 1 + len(node)
                if self.items > max_items:
                    raise _too_many(max_items, "stored value")
            if type(node) is list:
                if _NESTED.isdisjoint(map(type, node)):
                    continue
                slots: Any = enumerate(node)
                target = node
            else:
                keys = [k for k in node if type(k) is _Pending]
                if keys:
                    built: dict[int, Any] = {}
                    stack.append(("rekey", node, built))
                    for k in keys:
                        self._push_pending(stack, k, depth + 1, built, id(k))
                if _NESTED.isdisjoint(map(type, node.values())):
                    continue
                slots = list(node.items())
                target = node
            for key, child in slots:
                kind = type(child)
                if kind is _Pending:
                    self._push_pending(stack, child, depth + 1, target, key)
                elif kind is list or kind is dict:
                    stack.append(("visit", child, depth + 1))
        return holder[0]

    def _push_pending(
        self, stack: list[Any], pending: _Pending, depth: int, slot: Any, key: Any
    ) -> None:
        if depth > self.codec.max_depth:
            raise _too_deep(self.codec.max_depth, "stored value")
        elements = msgpack.unpackb(pending.data, **self.options)
        if type(elements) is not list:
            raise SerializationError(
                f"stored value is corrupt: extension {pending.code} must hold a list, "
                f"got {type(elements).__name__}"
            )
        stack.append(("build", pending, elements, slot, key))
        stack.append(("visit", elements, depth))


_NESTED = frozenset((list, dict, _Pending))


class _HoldsExtContainers(Exception):
    """Raised by :meth:`Codec._probe`: the value holds a tuple, set or frozenset."""


@functools.lru_cache(maxsize=256)
def _is_container(kind: type) -> bool:
    return issubclass(kind, _ENCODE_CONTAINERS)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise SerializationError(f"stored value is corrupt: extension {code} inside a scalar")


def _leaf_payload(data: bytes) -> Any:
    """The plain list inside a scalar extension (timedelta, complex, numpy): no extensions."""
    return msgpack.unpackb(data, ext_hook=_refuse_ext, raw=False, strict_map_key=False)


def _numpy_value(code: int, data: bytes) -> Any:
    import numpy as np

    if code == _EXT_NDARRAY:
        dtype_text, shape, raw = _leaf_payload(data)
    else:
        (dtype_text, raw), shape = _leaf_payload(data), None
    dtype = np.dtype(str(dtype_text)[:64])
    if dtype.hasobject:
        raise SerializationError("stored value is corrupt: numpy object arrays are never loaded")
    if shape is None:
        return np.frombuffer(raw, dtype=dtype)[0]
    return np.frombuffer(raw, dtype=dtype).reshape([int(n) for n in shape]).copy()


def _too_deep(limit: int, what: str) -> SerializationError:
    return SerializationError(
        f"{what} is nested deeper than max_depth={limit} levels (lists, dicts, tuples, sets); "
        "flatten it, or use Codec(max_depth=...) on every writer and reader (at most 256)"
    )


def _too_many(limit: int, what: str) -> SerializationError:
    return SerializationError(
        f"{what} holds more than max_items={limit} container elements; split it, store it "
        "as bytes or an array, or use Codec(max_items=...) on every writer and reader"
    )


def _too_large(size: int, limit: int, what: str) -> SerializationError:
    return SerializationError(
        f"{what} {size} bytes, over max_decoded_size={limit}; split the value, or use "
        "Codec(max_decoded_size=...) on every writer and reader"
    )


def _numpy_if_loaded(obj: Any) -> Any:
    """Return the numpy module if ``obj`` comes from it (never imports numpy for others)."""
    if type(obj).__module__ == "numpy" or type(obj).__module__.startswith("numpy."):
        import numpy

        return numpy
    return None

"""``mem.frames``: the DataFrames of a memory, an accessor registered by this package.

:class:`~prefect_memory.Memory` does not know DataFrames: importing
:mod:`prefect_memory.tabular` (which ``import prefect_memory`` does) registers the
``frames`` accessor, the way pandera registers ``df.pandera`` on pandas. The methods are
thin: their bodies live in :mod:`prefect_memory.tabular.frames`, imported on first call,
so that ``import prefect_memory`` never loads pandas, pyarrow or pandera.

The former methods ``mem.put_frame``/``get_frame``/``append_frame`` (and their ``a``
async twins) still work and warn (:class:`DeprecationWarning`).

Example:
    >>> import pandas as pd
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("memory://")
    >>> mem.frames.put("t", pd.DataFrame({"a": [1, 2]}))
    >>> mem.frames.append("t", pd.DataFrame({"a": [3]}))
    3
    >>> mem.frames.get("t")
       a
    0  1
    1  2
    2  3
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..aio import async_twin
from ..memory import Memory, register_memory_accessor, register_memory_method

_UNSET: Any = object()


@register_memory_accessor("frames")
class Frames:
    """``mem.frames``: ``put``, ``get`` and ``append`` DataFrames (and their async twins).

    Args:
        memory: The memory the frames are stored in.
    """

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def __repr__(self) -> str:
        return f"Frames({self._memory!r})"

    def put(
        self,
        key: str,
        df: Any,
        *,
        schema: Any = None,
        format: str = "arrow",
        ttl: Any = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Validate a DataFrame and store it under ``key`` (Arrow IPC, or ``"parquet"``).

        Args:
            key: The key.
            df: A pandas DataFrame (values, dtypes and index round-trip exactly).
            schema: A pandera ``DataFrameModel``; default: the one registered for ``key``
                (:func:`prefect_memory.tabular.register_schema`), if any.
            format: ``"arrow"`` (Arrow IPC file) or ``"parquet"``.
            ttl: As for :meth:`~prefect_memory.Memory.set`.
            tags: As for :meth:`~prefect_memory.Memory.set`.
            refresh: As for :meth:`~prefect_memory.Memory.set`.

        Raises:
            ValidationError: Listing every failing column, check and example rows.
        """
        from .frames import put_frame

        options: dict[str, Any] = {"tags": tags, "refresh": refresh}
        if ttl is not _UNSET:
            options["ttl"] = ttl
        put_frame(self._memory, key, df, schema=schema, format=format, **options)  # type: ignore[arg-type]

    def get(self, key: str, default: Any = None, *, schema: Any = None) -> Any:
        """Load the DataFrame under ``key`` (``default`` when missing), validated on load.

        Raises:
            ValidationError: The stored frame fails its schema (e.g. written without it).
        """
        from .frames import get_frame

        return get_frame(self._memory, key, default, schema=schema)

    def append(
        self,
        key: str,
        df: Any,
        *,
        schema: Any = None,
        ttl: Any = _UNSET,
        tags: Iterable[str] | None = None,
        lock_timeout: float = 30.0,
    ) -> int:
        """Append the rows of ``df`` to the frame under ``key``; return its row count.

        The combined frame is validated; concurrent appends are serialized by a lease
        lock (see :mod:`prefect_memory.tabular.frames`).
        """
        from .frames import append_frame

        options: dict[str, Any] = {"tags": tags, "lock_timeout": lock_timeout}
        if ttl is not _UNSET:
            options["ttl"] = ttl
        return append_frame(self._memory, key, df, schema=schema, **options)

    aput = async_twin(put)
    aget = async_twin(get)
    aappend = async_twin(append)


def _alias(method: str) -> Callable[..., Any]:
    def call(memory: Memory, *args: Any, **kwargs: Any) -> Any:
        return getattr(memory.frames, method)(*args, **kwargs)

    call.__doc__ = getattr(Frames, method).__doc__
    return call


#: The former method names on Memory -> the accessor's method they now call.
DEPRECATED_METHODS = {
    "put_frame": "put",
    "get_frame": "get",
    "append_frame": "append",
    "aput_frame": "aput",
    "aget_frame": "aget",
    "aappend_frame": "aappend",
}

for _old, _new in DEPRECATED_METHODS.items():
    register_memory_method(_old, _alias(_new), deprecated=f"mem.frames.{_new}(...)")

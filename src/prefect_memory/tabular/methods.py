"""``FrameMethods``: the frame methods of :class:`~prefect_memory.Memory`, as a mixin.

The methods are thin: their bodies live in :mod:`prefect_memory.tabular.frames`, imported
on first call, so that ``import prefect_memory`` never loads pandas, pyarrow or pandera.

Example:
    >>> import pandas as pd
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("memory://")
    >>> mem.put_frame("t", pd.DataFrame({"a": [1, 2]}))
    >>> mem.append_frame("t", pd.DataFrame({"a": [3]}))
    3
    >>> mem.get_frame("t")
       a
    0  1
    1  2
    2  3
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._twins import async_twin

_UNSET: Any = object()


class FrameMethods:
    """``put_frame``, ``get_frame`` and ``append_frame`` (and their async twins)."""

    def put_frame(
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
            ttl, tags, refresh: As for :meth:`~prefect_memory.Memory.set`.

        Raises:
            ValidationError: Listing every failing column, check and example rows.
        """
        from .frames import put_frame

        options: dict[str, Any] = {"tags": tags, "refresh": refresh}
        if ttl is not _UNSET:
            options["ttl"] = ttl
        put_frame(self, key, df, schema=schema, format=format, **options)  # type: ignore[arg-type]

    def get_frame(self, key: str, default: Any = None, *, schema: Any = None) -> Any:
        """Load the DataFrame under ``key`` (``default`` when missing), validated on load.

        Raises:
            ValidationError: The stored frame fails its schema (e.g. written without it).
        """
        from .frames import get_frame

        return get_frame(self, key, default, schema=schema)  # type: ignore[arg-type]

    def append_frame(
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
        return append_frame(self, key, df, schema=schema, **options)  # type: ignore[arg-type]

    aput_frame = async_twin(put_frame)
    aget_frame = async_twin(get_frame)
    aappend_frame = async_twin(append_frame)

"""Former home of ``FrameMethods``, the frame methods of :class:`~prefect_memory.Memory`.

:class:`~prefect_memory.Memory` no longer inherits them: DataFrames are reached through
the ``mem.frames`` accessor (:class:`~prefect_memory.tabular.accessor.Frames`), and the
old method names stay on ``Memory`` as deprecated aliases. ``FrameMethods`` remains
importable for code that named it.

Example:
    >>> import pandas as pd
    >>> import prefect_memory as pm
    >>> mem = pm.open_memory("memory://")
    >>> mem.frames.put("t", pd.DataFrame({"a": [1, 2]}))
    >>> mem.frames.get("t")["a"].tolist()
    [1, 2]
"""

from __future__ import annotations

from ..memory import Memory
from .accessor import Frames


class FrameMethods:
    """``put_frame``, ``get_frame`` and ``append_frame`` (deprecated: use ``mem.frames``)."""

    put_frame = Memory.put_frame  # type: ignore[attr-defined]
    get_frame = Memory.get_frame  # type: ignore[attr-defined]
    append_frame = Memory.append_frame  # type: ignore[attr-defined]
    aput_frame = Memory.aput_frame  # type: ignore[attr-defined]
    aget_frame = Memory.aget_frame  # type: ignore[attr-defined]
    aappend_frame = Memory.aappend_frame  # type: ignore[attr-defined]


__all__ = ["FrameMethods", "Frames"]

"""Tabular memory: pandas DataFrames stored exactly, validated by pandera on save and load.

Importing this package is cheap; pandas, pyarrow and pandera load with the first name used
from it (``pip install 'prefect-memory[tabular]'``). Importing it registers the ``frames``
accessor of every memory (``mem.frames.put``/``get``/``append``, see
:mod:`prefect_memory.tabular.accessor`).

Example:
    >>> import pandas as pd
    >>> import prefect_memory as pm
    >>> from prefect_memory.tabular import PredictionsModel, register_schema
    >>> mem = pm.open_memory("memory://", namespace="ml")
    >>> register_schema(mem, "predictions:*", PredictionsModel)
    >>> mem.frames.put("predictions:churn", pd.DataFrame({
    ...     "entity_id": ["u1"], "model_name": ["churn"], "model_version": ["3"],
    ...     "prediction": [1], "probability": [0.93],
    ...     "predicted_at": [pd.Timestamp("2024-05-01 12:00", tz="Europe/Paris")]}))
    >>> mem.frames.get("predictions:churn")["predicted_at"].iloc[0]
    Timestamp('2024-05-01 10:00:00+0000', tz='UTC')
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports
from .accessor import Frames as Frames  # importing registers mem.frames

_EXPORTS = {
    "FrameSchemas": "schemas",
    "validate_frame": "schemas",
    "encode_frame": "codec",
    "decode_frame": "codec",
    "is_frame_envelope": "codec",
    "put_frame": "frames",
    "get_frame": "frames",
    "append_frame": "frames",
    "register_schema": "frames",
    "frame_schemas": "frames",
    "frame_lock": "frames",
    "FrameLockTimeout": "frames",
    "FrameSchemaHook": "hook",
    "EventsModel": "models",
    "AggregatesModel": "models",
    "FeaturesModel": "models",
    "PredictionsModel": "models",
    "BUILTIN_TABLES": "models",
    "AGGREGATIONS": "models",
}

__all__ = sorted([*_EXPORTS, "Frames"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

"""``FrameSchemaHook``: DataFrames through plain ``set``/``get``, validated both ways.

With this hook on a memory, ``mem.set(key, df)`` validates the frame against the schema
registered for ``key`` and stores it like ``put_frame`` does; ``mem.get(key)`` returns the
DataFrame, validated again on load. ``put_frame``/``get_frame``/``register_schema`` use
the hook's registry, so a frame is validated once per save and once per load whichever
way it travels.

Example:
    >>> import pandas as pd
    >>> import pandera.pandas as pa
    >>> import prefect_memory as pm
    >>> class Prices(pa.DataFrameModel):
    ...     price: float = pa.Field(gt=0)
    ...     class Config:
    ...         coerce = True
    >>> hook = FrameSchemaHook({"prices:*": Prices})
    >>> mem = pm.open_memory("memory://", hooks=[hook])
    >>> mem.set("prices:today", pd.DataFrame({"price": [1, 2]}))
    >>> mem.get("prices:today")["price"].dtype
    dtype('float64')
    >>> mem.set("prices:bad", pd.DataFrame({"price": [0.0]}))
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ValidationError: prices:bad does not match schema 'Prices' (1 failure):
      price: greater_than(0): 1 of 1 rows fail [e.g. 0: 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..memory import Hook
from .codec import FrameFormat, decode_frame, encode_frame, is_frame_envelope
from .schemas import FrameSchemas, schema_name, validate_frame


class FrameSchemaHook(Hook):
    """Validate and encode DataFrames on save; decode and validate them on load.

    Args:
        schemas: A :class:`FrameSchemas` registry, or a mapping of key glob to pandera
            model (``{"events:*": EventsModel}``); default: an empty registry to fill with
            ``register_schema`` or ``hook.schemas.register``.
        namespace: Restrict the patterns of a mapping to one namespace.
        format: How frames given to ``set`` are stored (``"arrow"`` or ``"parquet"``).
    """

    def __init__(
        self,
        schemas: FrameSchemas | Mapping[str, Any] | None = None,
        *,
        namespace: str | None = None,
        format: FrameFormat = "arrow",
    ) -> None:
        if isinstance(schemas, FrameSchemas):
            self.schemas = schemas
        else:
            self.schemas = FrameSchemas()
            for pattern, model in (schemas or {}).items():
                self.schemas.register(pattern, model, namespace=namespace)
        self.format = format
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"FrameSchemaHook({self.schemas!r})"

    def model_for(self, key: str) -> Any:
        """The schema this hook checks ``key`` against (``None``: not checked)."""
        # Hooks see keys, not namespaces: namespace-specific entries match with this
        # hook's namespace (or any namespace when it has none).
        return self.schemas.model_for(self.namespace or "", key)

    def before_save(self, key: str, value: Any) -> Any:
        """Validate a DataFrame and turn it into a frame envelope; pass other values."""
        if not isinstance(value, pd.DataFrame):
            return value
        model = self.model_for(key)
        if model is not None:
            value = validate_frame(value, model, key=key)
        envelope = encode_frame(value, format=self.format)
        if model is not None:
            envelope["schema"] = schema_name(model)
        return envelope

    def after_load(self, key: str, value: Any) -> Any:
        """Turn a frame envelope back into a DataFrame and validate it."""
        if not is_frame_envelope(value):
            return value
        df = decode_frame(value)
        model = self.model_for(key)
        return validate_frame(df, model, key=key) if model is not None else df

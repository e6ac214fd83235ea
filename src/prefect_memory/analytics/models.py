"""pandera model of time-series points, and time conversions shared by the analytics objects.

Example:
    >>> import pandas as pd
    >>> points = PointsModel.validate(pd.DataFrame({
    ...     "timestamp": ["2024-05-01T12:00:00+02:00", "2024-05-01T10:00:30Z"],
    ...     "value": [1, 2.5]}))
    >>> str(points["timestamp"].dtype), points["value"].tolist()
    ('datetime64[ns, UTC]', [1.0, 2.5])
    >>> to_epoch_ns("2024-05-01T10:00:00Z"), to_epoch_ns(1714557600)
    (1714557600000000000, 1714557600000000000)
"""

# No ``from __future__ import annotations``: pandera reads these annotations at runtime.

import datetime as _dt
import json
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from ..tabular.models import UtcTimestamp, is_label_object  # one definition of each


class PointsModel(pa.DataFrameModel):
    """Points of a time series: ``timestamp`` (aware, UTC), a finite ``value``, and
    optional ``labels`` (a JSON object of string values: the sub-series of the row)."""

    timestamp: Series[UtcTimestamp]
    value: Series[float] = pa.Field(nullable=False)
    labels: Series[str] | None = pa.Field(nullable=True)

    class Config:
        name = "points"
        strict = True
        coerce = True

    @pa.check("value", name="value_is_finite")
    def _finite(cls, values: pd.Series) -> pd.Series:
        return pd.Series(np.isfinite(values.to_numpy(dtype=np.float64)), index=values.index)

    @pa.check("labels", element_wise=True, name="labels_are_json_objects")
    def _labels_are_json_objects(cls, text: object) -> bool:
        return is_label_object(text)


def to_epoch_ns(value: Any) -> int:
    """Epoch nanoseconds of a time: a number (epoch seconds), ``datetime``, ``Timestamp``,
    ``numpy.datetime64`` or ISO string; naive times are taken as UTC."""
    if isinstance(value, bool):
        raise TypeError(f"a time must be epoch seconds or a datetime, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (
            round(float(value) * 1_000_000_000)
            if isinstance(value, (float, np.floating))
            else int(value) * 1_000_000_000
        )
    if isinstance(value, (str, _dt.datetime, _dt.date, pd.Timestamp, np.datetime64)):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
        return int(stamp.tz_convert("UTC").as_unit("ns").value)
    raise TypeError(f"a time must be epoch seconds or a datetime, got {type(value).__name__}")


def ns_to_index(ns: np.ndarray) -> pd.DatetimeIndex:
    """A UTC ``DatetimeIndex`` (ns) of epoch nanoseconds."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC")


def canonical_labels(labels: Any) -> str:
    """Labels (a mapping or its JSON text) as sorted ``k=v`` pairs: ``host=a,zone=eu``."""
    if labels is None:
        return ""
    if isinstance(labels, str):
        labels = json.loads(labels) if labels.strip() else {}
    if not isinstance(labels, dict):
        raise TypeError(f"labels must be a mapping of str to str, got {labels!r}")
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))

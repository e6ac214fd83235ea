"""pandera models of the built-in tables: events, aggregates, features, predictions.

Every timestamp is stored timezone-aware, in UTC, with nanoseconds: ``coerce`` converts
aware timestamps of any zone and ISO strings with an offset, and takes naive timestamps
as UTC (pandera's rule for a timezone-aware dtype; localize them first if they are local
times). The models are ``strict``: subclass one to add columns (pandera models inherit
fields and ``Config``), or set ``strict = "filter"`` to drop unknown ones.

Example:
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "timestamp": ["2024-05-01T12:00:00+02:00", "2024-05-01T10:00:01Z"],
    ...     "type": ["click", "view"], "value": [1, None],
    ...     "labels": ['{"page": "home"}', None]})
    >>> checked = EventsModel.validate(events)
    >>> str(checked["timestamp"].dtype), checked["timestamp"].iloc[0].isoformat()
    ('datetime64[ns, UTC]', '2024-05-01T10:00:00+00:00')
    >>> sorted(BUILTIN_TABLES)
    ['aggregates', 'events', 'features', 'predictions']
"""

# No ``from __future__ import annotations`` here: pandera reads these annotations at runtime.

import json
from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

#: Aggregations a downsampled bucket may hold.
AGGREGATIONS = ("avg", "sum", "min", "max", "count", "first", "last", "std")

#: A pandera column dtype: timezone-aware, UTC, nanoseconds (analytics models use it too).
UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]


def is_label_object(text: object) -> bool:
    """Whether ``text`` is empty or a JSON object of string values (a row's labels)."""
    if text is None or (isinstance(text, float) and text != text):
        return True
    try:
        labels = json.loads(str(text))
    except ValueError:
        return False
    return isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())


class EventsModel(pa.DataFrameModel):
    """Raw events: one row per event.

    Columns: ``timestamp`` (aware, UTC), ``type`` (non-empty), ``value`` (float, may be
    missing), optional ``source`` and ``labels`` (a JSON object of string values, kept as
    text so that it round-trips exactly, e.g. ``'{"host": "a"}'``).
    """

    timestamp: Series[UtcTimestamp]
    type: Series[str] = pa.Field(str_length={"min_value": 1})
    value: Series[float] = pa.Field(nullable=True)
    source: Series[str] | None = pa.Field(nullable=True)
    labels: Series[str] | None = pa.Field(nullable=True)

    class Config:
        name = "events"
        strict = True
        coerce = True

    @pa.check("labels", element_wise=True, name="labels_are_json_objects")
    def _labels_are_json_objects(cls, text: object) -> bool:
        return is_label_object(text)


class AggregatesModel(pa.DataFrameModel):
    """Downsampled buckets of a metric: one row per metric, interval, aggregation and bucket.

    ``bucket`` is the start of the bucket (aware, UTC, aligned on ``interval`` seconds since
    the epoch); ``count`` is how many raw points the bucket holds.
    """

    metric: Series[str] = pa.Field(str_length={"min_value": 1})
    bucket: Series[UtcTimestamp]
    interval: Series[int] = pa.Field(gt=0)
    aggregation: Series[str] = pa.Field(isin=list(AGGREGATIONS))
    value: Series[float] = pa.Field(nullable=True)
    count: Series[int] = pa.Field(ge=0)

    class Config:
        name = "aggregates"
        strict = True
        coerce = True
        unique = ["metric", "interval", "aggregation", "bucket"]

    @pa.dataframe_check(name="bucket_aligned_on_interval")
    def _bucket_aligned(cls, df: pd.DataFrame) -> "pd.Series[bool]":
        seconds = df["bucket"].astype("int64") // 1_000_000_000
        exact = df["bucket"].astype("int64") % 1_000_000_000 == 0
        return exact & (seconds % df["interval"] == 0)


class FeaturesModel(pa.DataFrameModel):
    """A feature table (wide): one row per entity and time, one numeric column per feature.

    ``entity_id`` and ``event_timestamp`` identify a row (unique together); every other
    column is a feature and must be numeric or boolean (so this model is not strict).
    """

    entity_id: Series[str] = pa.Field(str_length={"min_value": 1})
    event_timestamp: Series[UtcTimestamp]
    created_at: Series[UtcTimestamp] | None = pa.Field(nullable=True)

    class Config:
        name = "features"
        strict = False
        coerce = True
        unique = ["entity_id", "event_timestamp"]

    @pa.dataframe_check(name="features_are_numeric")
    def _features_are_numeric(cls, df: pd.DataFrame) -> pd.DataFrame:
        keys = {"entity_id", "event_timestamp", "created_at"}
        types = pd.api.types
        ok = df.notna() | True  # same shape as df, all True
        for column in df.columns:
            dtype = df[column].dtype
            if column not in keys and not (
                types.is_numeric_dtype(dtype) or types.is_bool_dtype(dtype)
            ):
                ok[column] = False
        return ok


class PredictionsModel(pa.DataFrameModel):
    """Model outputs: one row per entity, model version and prediction time.

    ``probability`` (optional) is the model's confidence in ``[0, 1]``.
    """

    entity_id: Series[str] = pa.Field(str_length={"min_value": 1})
    model_name: Series[str] = pa.Field(str_length={"min_value": 1})
    model_version: Series[str] = pa.Field(str_length={"min_value": 1})
    prediction: Series[float]
    probability: Series[float] | None = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 1}
    )
    predicted_at: Series[UtcTimestamp]

    class Config:
        name = "predictions"
        strict = True
        coerce = True


#: The built-in tables by name (register them with ``register_schema(mem, "events:*", ...)``).
BUILTIN_TABLES: dict[str, type[pa.DataFrameModel]] = {
    "events": EventsModel,
    "aggregates": AggregatesModel,
    "features": FeaturesModel,
    "predictions": PredictionsModel,
}

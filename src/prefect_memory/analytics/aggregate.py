"""Bucket aggregation in numpy: one sort (only when needed), then ``reduceat`` per field.

A bucket's *state* holds what its aggregations need: ``count`` always, and ``sum``,
``min``, ``max``, ``first``, ``last`` and ``m2`` (the sum of squared deviations from the
bucket mean) as the configured aggregations require. States are numpy structured arrays,
one row per non-empty bucket, ``bucket`` being the bucket start in epoch nanoseconds
(buckets are aligned on the epoch, left-closed, labelled by their start: pandas'
``resample(..., origin="epoch")``).

States come from raw points (:func:`states_from_points`: ``m2`` by two passes, the mean
first, which is as exact as pandas' Welford update) or from the states of a finer interval
that divides the coarser one (:func:`merge_states`: Chan's parallel formula, stable
because it adds squared deviations of bucket means rather than subtracting sums of
squares). Ties in time keep their arrival order (a stable sort), so ``first``/``last``
equal pandas' on a stably sorted frame.

Example:
    >>> import numpy as np
    >>> s = 1_000_000_000
    >>> ts = np.array([61, 0, 30, 59, 125], dtype=np.int64) * s
    >>> values = np.array([4.0, 1.0, 2.0, 3.0, 7.0])
    >>> states = states_from_points(ts, values, 60 * s, fields_for(["avg", "std", "first"]))
    >>> (states["bucket"] // s).tolist(), states["count"].tolist()
    ([0, 60, 120], [3, 1, 1])
    >>> finalize(states, "avg").tolist(), finalize(states, "first").tolist()
    ([2.0, 4.0, 7.0], [1.0, 4.0, 7.0])
    >>> finalize(states, "std").round(6).tolist()
    [1.0, nan, nan]
    >>> hourly = merge_states(states, 3600 * s)
    >>> hourly["count"].tolist(), finalize(hourly, "avg").tolist()
    ([5], [3.4])
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Aggregations a time series can downsample with.
AGGREGATIONS = ("avg", "sum", "min", "max", "count", "first", "last", "std")
#: State fields (besides ``bucket`` and ``count``) in their storage order.
STATE_FIELDS = ("sum", "min", "max", "first", "last", "m2")
_NEEDS = {
    "avg": ("sum",), "sum": ("sum",), "count": (), "min": ("min",), "max": ("max",),
    "first": ("first",), "last": ("last",), "std": ("sum", "m2"),
}  # fmt: skip
_ALIASES = {"mean": "avg", "average": "avg", "stddev": "std", "total": "sum"}


def normalize_aggregation(name: str) -> str:
    """The canonical name of an aggregation (``"mean"`` -> ``"avg"``), or ValueError."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _NEEDS:
        raise ValueError(
            f"unknown aggregation {name!r} (known: {', '.join(AGGREGATIONS)}; "
            "aliases: mean, average, stddev, total)"
        )
    return key


def fields_for(aggregations: Iterable[str]) -> tuple[str, ...]:
    """The state fields the ``aggregations`` need, in storage order."""
    wanted = {f for agg in aggregations for f in _NEEDS[normalize_aggregation(agg)]}
    return tuple(f for f in STATE_FIELDS if f in wanted)


def state_dtype(fields: Iterable[str]) -> np.dtype:
    """The structured dtype of states holding ``fields``."""
    names = set(fields)
    return np.dtype(
        [("bucket", "<i8"), ("count", "<i8")] + [(f, "<f8") for f in STATE_FIELDS if f in names]
    )


def state_fields(states: np.ndarray) -> tuple[str, ...]:
    """The state fields (besides ``bucket``, ``count``) that ``states`` holds."""
    return tuple(f for f in STATE_FIELDS if f in (states.dtype.names or ()))


def sort_points(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(ts, values, was_sorted)``: the points in time order, ties in arrival order."""
    if ts.size < 2 or not bool((ts[1:] < ts[:-1]).any()):
        return ts, values, True
    order = np.argsort(ts, kind="stable")
    return ts[order], values[order], False


def _segments(ts: np.ndarray, interval: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bucket ids, start offsets)`` of the non-empty buckets of sorted ``ts``."""
    n = ts.size
    first, last = int(ts[0]) // interval, int(ts[-1]) // interval
    span = last - first + 1
    if span <= n:  # dense: a binary search per bucket edge, no per-point division
        edges = (np.arange(first + 1, last + 1, dtype=np.int64)) * interval
        starts = np.empty(span, dtype=np.int64)
        starts[0] = 0
        starts[1:] = np.searchsorted(ts, edges, side="left")
        counts = np.diff(starts, append=n)
        keep = counts > 0
        return np.arange(first, last + 1, dtype=np.int64)[keep], starts[keep]
    ids = ts // interval  # sparse: fewer points than buckets
    starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate(([0], starts)).astype(np.int64)
    return ids[starts], starts


def states_from_points(
    ts: np.ndarray,
    values: np.ndarray,
    interval: int,
    fields: Iterable[str],
    *,
    assume_sorted: bool = False,
) -> np.ndarray:
    """The states of the ``interval``-nanosecond buckets of the points ``(ts, values)``.

    Args:
        ts: Timestamps in epoch nanoseconds (``int64``), in any order.
        values: The values (``float64``), one per timestamp.
        interval: Bucket width in nanoseconds.
        fields: State fields to compute (see :func:`fields_for`).
        assume_sorted: Skip the order check (the caller sorted the points).

    Returns:
        A structured array, one row per non-empty bucket, sorted by bucket.
    """
    dtype = state_dtype(fields)
    if ts.size == 0:
        return np.empty(0, dtype=dtype)
    ts = np.asarray(ts, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if not assume_sorted:
        ts, values, _ = sort_points(ts, values)
    ids, starts = _segments(ts, interval)
    out = np.empty(ids.size, dtype=dtype)
    out["bucket"] = ids * interval
    counts = np.diff(starts, append=ts.size)
    out["count"] = counts
    names = dtype.names or ()
    if "sum" in names:
        out["sum"] = np.add.reduceat(values, starts)
    if "min" in names:
        out["min"] = np.minimum.reduceat(values, starts)
    if "max" in names:
        out["max"] = np.maximum.reduceat(values, starts)
    if "first" in names:
        out["first"] = values[starts]
    if "last" in names:
        out["last"] = values[starts + counts - 1]
    if "m2" in names:
        dev = values - np.repeat(out["sum"] / counts, counts)
        np.multiply(dev, dev, out=dev)
        out["m2"] = np.add.reduceat(dev, starts)
    return out


def merge_states(states: np.ndarray, interval: int) -> np.ndarray:
    """The states of ``interval``-ns buckets from the (sorted) states of a finer interval.

    The finer interval must divide ``interval``; ``m2`` merges by Chan's formula
    ``M2 = sum(M2_i + n_i * (mean_i - mean)**2)``.
    """
    fields = state_fields(states)
    dtype = state_dtype(fields)
    if states.size == 0:
        return np.empty(0, dtype=dtype)
    ids = states["bucket"] // interval
    starts = np.concatenate(([0], np.flatnonzero(ids[1:] != ids[:-1]) + 1)).astype(np.int64)
    out = np.empty(starts.size, dtype=dtype)
    out["bucket"] = ids[starts] * interval
    counts = states["count"]
    out["count"] = np.add.reduceat(counts, starts)
    if "sum" in fields:
        out["sum"] = np.add.reduceat(states["sum"], starts)
    if "min" in fields:
        out["min"] = np.minimum.reduceat(states["min"], starts)
    if "max" in fields:
        out["max"] = np.maximum.reduceat(states["max"], starts)
    if "first" in fields:
        out["first"] = states["first"][starts]
    if "last" in fields:
        out["last"] = states["last"][np.append(starts[1:], states.size) - 1]
    if "m2" in fields:
        sizes = np.diff(starts, append=states.size)
        gap = states["sum"] / counts - np.repeat(out["sum"] / out["count"], sizes)
        out["m2"] = np.add.reduceat(states["m2"] + counts * gap * gap, starts)
    return out


def finalize(states: np.ndarray, aggregation: str) -> np.ndarray:
    """The values of ``aggregation`` for each bucket of ``states`` (``float64``).

    ``std`` is the sample standard deviation (``ddof=1``, NaN for a single point), as in
    pandas.
    """
    agg = normalize_aggregation(aggregation)
    missing = [f for f in _NEEDS[agg] if f not in (states.dtype.names or ())]
    if missing:
        raise ValueError(
            f"these buckets cannot give {agg!r}: they keep no {', '.join(missing)} "
            "(add the aggregation to the downsampling rule of this interval)"
        )
    counts = states["count"].astype(np.float64)
    if agg == "count":
        return counts
    if agg == "avg":
        return states["sum"] / counts
    if agg == "std":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.sqrt(states["m2"] / (counts - 1.0))
        out[counts < 2] = np.nan
        return out
    return states[agg].astype(np.float64, copy=True)

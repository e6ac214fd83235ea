"""pandera schemas for stored frames: a registry by key pattern, and one error for every failure.

Schemas are pandera ``DataFrameModel`` classes (or ``DataFrameSchema`` objects). Their
``Config`` decides ``strict`` (unknown columns rejected, or dropped with ``"filter"``) and
``coerce`` (values converted to the declared dtypes). Validation is always lazy: every
failing column, check and example row is collected into one
:class:`~prefect_memory.errors.ValidationError`.

Example:
    >>> import pandas as pd
    >>> import pandera.pandas as pa
    >>> class Orders(pa.DataFrameModel):
    ...     qty: int = pa.Field(ge=1)
    ...     sku: str = pa.Field(str_length={"min_value": 3})
    >>> schemas = FrameSchemas()
    >>> schemas.register("orders:*", Orders)
    >>> schemas.model_for("default", "orders:2024") is Orders
    True
    >>> validate_frame(pd.DataFrame({"qty": [1, 0, -2], "sku": ["abc", "x", "abcd"]}), Orders)
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ValidationError: value does not match schema 'Orders' (2 failures):
      qty: greater_than_or_equal_to(1): 2 of 3 rows fail [e.g. 1: 0, 2: -2]
      sku: str_length(3, None): 1 of 3 rows fail [e.g. 1: 'x']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from ..errors import ConfigError, ValidationError, ValidationFailure
from ..keys import glob_match

#: How many example rows a failure shows (the error's ``details`` holds them all).
MAX_EXAMPLES = 5
_FRAME_WIDE = "DataFrameSchema"
_COLUMN_PRESENCE = {"column_in_schema", "column_in_dataframe"}


@dataclass(frozen=True)
class _Entry:
    pattern: str
    schema: Any
    namespace: str | None


class FrameSchemas:
    """pandera schemas of stored frames, by key glob and optionally by namespace.

    The first registered pattern that matches a key wins, a namespace-specific entry
    before one for every namespace; registering the same pattern (and namespace) again
    replaces its schema.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def __repr__(self) -> str:
        shown = ", ".join(f"{e.pattern!r}: {schema_name(e.schema)}" for e in self._entries)
        return f"FrameSchemas({{{shown}}})"

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[str, Any, str | None]]:
        return ((e.pattern, e.schema, e.namespace) for e in self._entries)

    def register(self, pattern: str, schema: Any, *, namespace: str | None = None) -> None:
        """Check frames stored under keys matching ``pattern`` against ``schema``.

        Args:
            pattern: Key glob (``"events:*"``; ``"*"`` for every key).
            schema: A pandera ``DataFrameModel`` subclass or ``DataFrameSchema``.
            namespace: Only in this namespace (default: in every namespace).
        """
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"a schema pattern must be a non-empty key glob, got {pattern!r}")
        check_schema(schema)
        entry = _Entry(pattern, schema, namespace)
        for i, old in enumerate(self._entries):
            if (old.pattern, old.namespace) == (pattern, namespace):
                self._entries[i] = entry
                return
        self._entries.append(entry)

    def unregister(self, pattern: str, *, namespace: str | None = None) -> bool:
        """Forget the schema of ``pattern``; tell whether there was one."""
        before = len(self._entries)
        self._entries = [
            e for e in self._entries if (e.pattern, e.namespace) != (pattern, namespace)
        ]
        return len(self._entries) != before

    def model_for(self, namespace: str, key: str) -> Any | None:
        """The schema for ``key`` in ``namespace`` (``None`` when no pattern matches)."""
        for wanted in (namespace, None):
            for entry in self._entries:
                if entry.namespace == wanted and glob_match(key, entry.pattern):
                    return entry.schema
        return None


def check_schema(schema: Any) -> None:
    """Raise :class:`ConfigError` unless ``schema`` is a pandera model or frame schema."""
    is_model = isinstance(schema, type) and issubclass(schema, pa.DataFrameModel)
    if not (is_model or isinstance(schema, pa.DataFrameSchema)):
        raise ConfigError(
            "a frame schema must be a pandera DataFrameModel subclass or DataFrameSchema, "
            f"got {schema!r}"
        )


def schema_name(schema: Any) -> str:
    """The name an error shows for ``schema``."""
    if isinstance(schema, type):
        return schema.__name__
    return getattr(schema, "name", None) or type(schema).__name__


def validate_frame(df: pd.DataFrame, schema: Any, *, key: str | None = None) -> pd.DataFrame:
    """Validate ``df`` lazily; return it as validated (coerced or filtered per the schema).

    Raises:
        ValidationError: Listing every failing column, check and example rows; the
            pandera ``failure_cases`` frame is in its ``details``.
    """
    check_schema(schema)
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
    except SchemaError as err:  # raised eagerly by some checks even with lazy=True
        case = {
            "schema_context": type(err.schema).__name__,
            "column": getattr(err.schema, "name", None),
            "check": str(err.check or "schema"),
            "failure_case": str(err),
            "index": None,
        }
        cases = pd.DataFrame([case])
    failures = failures_from_cases(cases, rows=len(df))
    raise ValidationError(failures, key=key, schema=schema_name(schema), details=cases) from None


def failures_from_cases(cases: pd.DataFrame, *, rows: int) -> list[ValidationFailure]:
    """Turn pandera's ``failure_cases`` into one :class:`ValidationFailure` per column and check.

    Column checks give ``(row index, failing value)`` examples; frame-wide checks (a
    ``@dataframe_check``, ``unique=[...]``) give ``(row index, {column: value})`` rows.
    """
    cases = cases.sort_index()
    out: list[ValidationFailure] = []
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for case in cases.itertuples(index=False):
        context, column, check = str(case.schema_context), case.column, str(case.check)
        if check in _COLUMN_PRESENCE:
            name = str(case.failure_case)
            message = "column missing" if check == "column_in_dataframe" else (
                "column not in the schema (the schema is strict)"
            )  # fmt: skip
            out.append(ValidationFailure(name, check, message))
            continue
        if context == "Index" or (context == "MultiIndex"):
            path = f"index {column!r}" if column not in (None, "") else "index"
        elif context == _FRAME_WIDE:
            path = "<frame>"
        else:
            path = str(column)
        groups.setdefault((context, path, check), []).append(case)
    for (context, path, check), group in groups.items():
        out.append(_failure(context, path, check, group, rows))
    return out


def _failure(context: str, path: str, check: str, group: list[Any], rows: int) -> ValidationFailure:
    if context == _FRAME_WIDE:  # one case per (row, column): rebuild the rows
        by_row: dict[Any, dict[str, Any]] = {}
        for case in group:
            row = by_row.setdefault(_plain(case.index), {})
            if isinstance(case.failure_case, dict):  # pandera's shape for a one-column failure
                row.update({str(k): _plain(v) for k, v in case.failure_case.items()})
            else:
                row[str(case.column)] = _plain(case.failure_case)
        columns = list(dict.fromkeys(c for row in by_row.values() for c in row))
        path = ",".join(columns) if check == "multiple_fields_uniqueness" else path
        examples = tuple(list(by_row.items())[:MAX_EXAMPLES])
        count = len(by_row)
    else:
        examples = tuple((_plain(c.index), _plain(c.failure_case)) for c in group[:MAX_EXAMPLES])
        count = len(group)
    if check.startswith("dtype(") and all(c.index is None for c in group):
        message = f"has dtype {group[0].failure_case}, expected {check[6:-1]}"
        examples, count = (), 1
    elif check.startswith("coerce_dtype("):
        message = f"{count} value(s) cannot be coerced to {check[13:-1]}"
    elif all(_plain(c.index) is None for c in group):  # the check itself failed to run
        message = "; ".join(dict.fromkeys(str(c.failure_case) for c in group))
        examples, count = (), 1
    else:
        message = f"{count} of {rows} rows fail"
    return ValidationFailure(path, check, message, examples, count)


def _plain(value: Any) -> Any:
    """Numpy scalars as Python values and missing values as ``None`` (readable in messages)."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value

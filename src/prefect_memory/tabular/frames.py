"""Frames in a memory: ``put_frame``, ``get_frame``, ``append_frame`` and schema registration.

A memory exposes these through its ``frames`` accessor (``mem.frames.put(...)``, see
:mod:`prefect_memory.tabular.accessor`); they live here so that pandas, pyarrow and
pandera load only when a frame is used.

- **Schemas**: ``register_schema(mem, "events:*", EventsModel)`` checks every frame stored
  under a matching key, on save *and* on load (data written by an older writer, or by a
  memory without the schema, is caught when read). A per-call ``schema=`` overrides it.
- **Append**: ``append_frame`` reads the stored frame, concatenates the new rows and
  validates the *combined* frame before writing it back: frame-wide checks (``unique``
  keys, row-wise ``@dataframe_check``\\ s, sorted timestamps) can only be judged on all the
  rows, and the append already reads and rewrites the whole frame, so validating it costs
  the same order of time. Failing rows keep their label in the error (new rows of a
  default ``RangeIndex`` continue the stored numbering).
- **Concurrent appends** take a lease lock: an entry in the namespace
  ``<namespace>/frame-locks`` written with ``put_absent_many``, released with
  ``delete_if_unchanged``, expiring by itself after ``lock_lease`` seconds if its holder
  dies. It is atomic across processes where the backend's ``put_absent_many`` is
  (``capabilities.atomic_moves``: every built-in store but S3 servers that ignore
  conditional requests); elsewhere a small race between processes remains (threads of one
  process are always serialized by a local lock).

Example:
    >>> import pandas as pd
    >>> import prefect_memory as pm
    >>> from prefect_memory.tabular import EventsModel
    >>> mem = pm.open_memory("memory://", namespace="frames-doc")
    >>> register_schema(mem, "events:*", EventsModel)
    >>> day = pd.DataFrame({"timestamp": pd.to_datetime(["2024-05-01 10:00"], utc=True),
    ...                     "type": ["click"], "value": [1.0]})
    >>> mem.frames.put("events:2024-05-01", day)
    >>> mem.frames.append("events:2024-05-01", day.assign(type="view"))
    2
    >>> mem.frames.get("events:2024-05-01")["type"].tolist()
    ['click', 'view']
    >>> try:
    ...     mem.frames.put("events:bad", day.assign(type=""))
    ... except pm.ValidationError as err:
    ...     print(err.paths, err.failures[0].check)
    ['type'] str_length(1, None)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import PrefectMemoryError, ValidationError, ValidationFailure
from ..memory import _UNSET, TTL, Memory
from ..plugins.base import Record
from .codec import FrameFormat, decode_frame, encode_frame, is_frame_envelope
from .schemas import FrameSchemas, schema_name, validate_frame

if TYPE_CHECKING:
    from .hook import FrameSchemaHook

LOCKS_SUFFIX = "/frame-locks"
#: Striped in-process locks (a bounded set: one per key would grow without end).
_LOCAL_LOCKS = tuple(threading.RLock() for _ in range(64))


class FrameLockTimeout(PrefectMemoryError, TimeoutError):
    """Another writer held the frame's append lock for longer than ``lock_timeout``."""


def frame_schemas(mem: Memory) -> FrameSchemas:
    """The frame schema registry of ``mem`` (a :class:`FrameSchemaHook`'s if it has one).

    Memories made by ``mem.with_namespace(...)`` after the registry exists share it.
    """
    hook = _schema_hook(mem)
    if hook is not None:
        return hook.schemas
    registry = mem.__dict__.get("frame_schemas")
    if registry is None:
        registry = mem.__dict__["frame_schemas"] = FrameSchemas()
    return registry


def register_schema(
    mem: Memory, pattern: str, schema: Any, *, namespace: str | None = None
) -> None:
    """Check frames stored in ``mem`` under keys matching ``pattern`` against ``schema``.

    Args:
        mem: The memory.
        pattern: Key glob, e.g. ``"events:*"``.
        schema: A pandera ``DataFrameModel`` subclass (or ``DataFrameSchema``).
        namespace: Only in this namespace (default: every namespace of this memory and
            of its ``with_namespace`` copies).
    """
    frame_schemas(mem).register(pattern, schema, namespace=namespace)


def _schema_hook(mem: Memory) -> FrameSchemaHook | None:
    from .hook import FrameSchemaHook

    for hook in mem.hooks:
        if isinstance(hook, FrameSchemaHook):
            return hook
    return None


def _schema_for(mem: Memory, key: str, schema: Any) -> Any:
    return schema if schema is not None else frame_schemas(mem).model_for(mem.namespace, key)


def put_frame(
    mem: Memory,
    key: str,
    df: pd.DataFrame,
    *,
    schema: Any = None,
    format: FrameFormat = "arrow",
    ttl: TTL = _UNSET,
    tags: Iterable[str] = (),
    refresh: bool | None = None,
) -> None:
    """Validate ``df`` (per ``schema`` or the registry) and store it under ``key``.

    The stored frame is the validated one: coerced dtypes, and unknown columns dropped
    by a ``strict="filter"`` schema.
    """
    model = _schema_for(mem, key, schema)
    if model is not None:
        df = validate_frame(df, model, key=key)
    envelope = encode_frame(df, format=format)
    if model is not None:
        envelope["schema"] = schema_name(model)
    mem.set(key, envelope, ttl=ttl, tags=tags, refresh=refresh)


def get_frame(mem: Memory, key: str, default: Any = None, *, schema: Any = None) -> Any:
    """Load the frame under ``key`` (``default`` when missing), validated on the way out."""
    value = mem.get(key, _UNSET)
    if value is _UNSET:
        return default
    return _loaded_frame(mem, key, value, schema)


def _loaded_frame(mem: Memory, key: str, value: Any, schema: Any) -> pd.DataFrame:
    model = _schema_for(mem, key, schema)
    if isinstance(value, pd.DataFrame):  # a FrameSchemaHook decoded (and validated) it
        hook = _schema_hook(mem)
        if model is None or (hook is not None and model is hook.model_for(key)):
            return value
        return validate_frame(value, model, key=key)
    df = decode_frame(value)
    return validate_frame(df, model, key=key) if model is not None else df


def append_frame(
    mem: Memory,
    key: str,
    df: pd.DataFrame,
    *,
    schema: Any = None,
    ttl: TTL = _UNSET,
    tags: Iterable[str] | None = None,
    lock_timeout: float = 30.0,
    lock_lease: float = 60.0,
) -> int:
    """Append the rows of ``df`` to the frame under ``key``; return its new row count.

    A missing entry is created (like :func:`put_frame`). The combined frame is validated
    (see the module docstring); without a schema, the new rows must have the stored
    columns and must not change any column's dtype. The entry keeps its format, TTL
    length, sliding flag and tags unless ``ttl``/``tags`` are given; its expiry restarts
    like after any write.

    Raises:
        ValidationError: The combined frame fails its schema, or (without one) the
            columns or dtypes differ from the stored frame.
        FrameLockTimeout: Another writer held the lock for more than ``lock_timeout``.
    """
    with frame_lock(mem, key, timeout=lock_timeout, lease=lock_lease):
        info = mem.info(key)
        stored = mem.get(key, _UNSET) if info is not None else _UNSET
        if stored is _UNSET:
            put_frame(mem, key, df, schema=schema, ttl=ttl, tags=tags or ())
            return len(df)
        fmt = stored.get("format", "arrow") if is_frame_envelope(stored) else "arrow"
        current = _loaded_frame(mem, key, stored, schema)
        model = _schema_for(mem, key, schema)
        combined = _concat(current, df, key=key, checked=model is not None)
        if ttl is _UNSET:
            ttl = info.ttl  # type: ignore[union-attr]
        put_frame(
            mem, key, combined, schema=schema, format=fmt, ttl=ttl,
            tags=info.tags if tags is None else tags,  # type: ignore[union-attr]
            refresh=info.sliding,  # type: ignore[union-attr]
        )  # fmt: skip
        return len(combined)


def _concat(current: pd.DataFrame, new: pd.DataFrame, *, key: str, checked: bool) -> pd.DataFrame:
    if not isinstance(new, pd.DataFrame):
        raise TypeError(f"append_frame takes a pandas DataFrame, got {type(new).__name__}")
    if not checked:
        missing = [c for c in current.columns if c not in new.columns]
        extra = [c for c in new.columns if c not in current.columns]
        failures = [
            ValidationFailure(str(c), "column_in_dataframe", "column missing from the new rows")
            for c in missing
        ]
        failures += [
            ValidationFailure(str(c), "column_in_schema", "column not in the stored frame")
            for c in extra
        ]
        if failures:
            raise ValidationError(failures, key=key, schema="stored frame")
        new = new[list(current.columns)]
    old_index, new_index = current.index, new.index
    if (
        isinstance(old_index, pd.RangeIndex) and isinstance(new_index, pd.RangeIndex)
        and old_index.step == 1 and new_index.step == 1 and new_index.start == 0
    ):  # fmt: skip
        new = new.set_axis(
            pd.RangeIndex(old_index.stop, old_index.stop + len(new), name=old_index.name)
        )
    combined = (
        pd.concat([current, new]) if len(current) and len(new) else (new if len(new) else current)
    )
    if not checked:
        drift = [
            ValidationFailure(
                str(c),
                "dtype",
                f"appending changes its dtype {current[c].dtype} to {combined[c].dtype}",
            )
            for c in current.columns
            if combined[c].dtype != current[c].dtype
        ]
        if drift:
            raise ValidationError(drift, key=key, schema="stored frame")
    return combined


@contextmanager
def frame_lock(
    mem: Memory, key: str, *, timeout: float = 30.0, lease: float = 60.0
) -> Iterator[None]:
    """Hold the append lock of ``key`` (see the module docstring for its guarantees)."""
    backend, ns = mem.backend, mem.namespace + LOCKS_SUFFIX
    local = _LOCAL_LOCKS[hash((id(backend), ns, key)) % len(_LOCAL_LOCKS)]
    if not local.acquire(timeout=max(timeout, 0.0)):
        raise FrameLockTimeout(f"could not lock frame {key!r} within {timeout} s")
    try:
        owner = uuid.uuid4().bytes
        deadline, pause = time.monotonic() + timeout, 0.005
        while True:
            now = mem.clock()
            record = Record(owner, now, now, now, 0, now + lease, lease, False, (), 1)
            if key in backend.put_absent_many(ns, {key: record}, now=now):
                break
            if time.monotonic() >= deadline:
                raise FrameLockTimeout(f"could not lock frame {key!r} within {timeout} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        try:
            yield
        finally:
            now = mem.clock()
            held = backend.get_many(ns, [key], now=now).get(key)
            if held is not None and bytes(held.value) == owner:
                backend.delete_if_unchanged(ns, {key: held.token}, now=now)
    finally:
        local.release()

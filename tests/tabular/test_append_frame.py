"""append_frame: combined frame validated, entry metadata kept, concurrent appends not lost."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

import prefect_memory as pm
from prefect_memory.plugins.base import Record
from prefect_memory.tabular import EventsModel, FrameLockTimeout, frame_lock, register_schema
from prefect_memory.tabular.frames import LOCKS_SUFFIX

KEY_BACKENDS = ["sqlite", "file", "redis"]  # the key tests: embedded, file and a real server


class Readings(pa.DataFrameModel):
    sensor: Series[str]
    seq: Series[int] = pa.Field(ge=0)
    value: Series[float]

    class Config:
        strict = True
        coerce = True
        unique = ["sensor", "seq"]


def readings(sensor: str, start: int, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        {"sensor": sensor, "seq": range(start, start + n), "value": [float(i) for i in range(n)]}
    )


@pytest.mark.parametrize("backend", KEY_BACKENDS)
def test_append_continues_the_index_and_keeps_dtypes_ttl_and_tags(open_mem, backend: str) -> None:
    mem = open_mem(backend)
    register_schema(mem, "r:*", Readings)
    assert mem.frames.append("r:1", readings("a", 0)) == 2  # creates the entry
    mem.frames.put("r:1", readings("a", 0), ttl=600, tags=["sensor:a"])
    assert mem.frames.append("r:1", readings("a", 2, 3)) == 5
    out = mem.frames.get("r:1")
    assert list(out.index) == [0, 1, 2, 3, 4] and isinstance(out.index, pd.RangeIndex)
    assert list(out["seq"]) == [0, 1, 2, 3, 4] and out["seq"].dtype == "int64"
    info = mem.info("r:1")
    assert info is not None and info.ttl == 600 and info.tags == ("sensor:a",)


def test_append_validates_the_combined_frame() -> None:
    mem = pm.open_memory("memory://")
    register_schema(mem, "r:*", Readings)
    mem.frames.put("r:1", readings("a", 0))
    with pytest.raises(pm.ValidationError) as info:  # each half is valid; together not unique
        mem.frames.append("r:1", readings("a", 1))
    (failure,) = info.value.failures
    assert failure.check == "multiple_fields_uniqueness"
    assert [row for row, _ in failure.examples] == [1, 2]  # stored row 1, new row 2
    assert len(mem.frames.get("r:1")) == 2  # unchanged
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.append("r:1", readings("a", 5).assign(seq=[-1, 7]))
    assert info.value.failures[0].examples == ((2, -1),)


def test_append_coerces_new_rows_like_the_stored_ones() -> None:
    mem = pm.open_memory("memory://")
    register_schema(mem, "events:*", EventsModel)
    first = pd.DataFrame(
        {"timestamp": [pd.Timestamp("2024-01-01", tz="UTC")], "type": ["a"], "value": [1.0]}
    )
    mem.frames.put("events:1", first)
    later = pd.DataFrame({"timestamp": ["2024-01-01T03:00:00+02:00"], "type": ["b"], "value": [2]})
    mem.frames.append("events:1", later)
    out = mem.frames.get("events:1")
    assert str(out["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert out["timestamp"].iloc[1] == pd.Timestamp("2024-01-01 01:00", tz="UTC")


def test_append_without_schema_needs_the_same_columns_and_dtypes() -> None:
    mem = pm.open_memory("memory://")
    mem.frames.put("t", pd.DataFrame({"a": [1], "b": ["x"]}))
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.append("t", pd.DataFrame({"a": [2], "c": ["y"]}))
    assert {(f.path, f.check) for f in info.value.failures} == {
        ("b", "column_in_dataframe"),
        ("c", "column_in_schema"),
    }
    with pytest.raises(pm.ValidationError, match="int64 to float64"):
        mem.frames.append("t", pd.DataFrame({"a": [2.5], "b": ["y"]}))
    assert mem.frames.append("t", pd.DataFrame({"b": ["z"], "a": [3]})) == 2  # column order free
    assert list(mem.frames.get("t").columns) == ["a", "b"]


def test_labelled_indexes_are_kept() -> None:
    mem = pm.open_memory("memory://")
    day = pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC", name="at")
    mem.frames.put("t", pd.DataFrame({"v": [1.0, 2.0]}, index=day))
    mem.frames.append("t", pd.DataFrame({"v": [3.0]}, index=day[-1:] + pd.Timedelta("1h")))
    out = mem.frames.get("t")
    assert out.index.name == "at" and str(out.index.tz) == "UTC" and len(out) == 3


def _append_many(url: str, worker: int, count: int) -> None:
    mem = pm.open_memory(url, namespace="race")
    for i in range(count):
        mem.frames.append("log", readings(f"w{worker}", i, 1))


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
def test_concurrent_appends_from_threads_lose_nothing(open_mem, backend: str) -> None:
    mem = open_mem(backend, namespace="race")
    register_schema(mem, "log", Readings)
    threads = [
        threading.Thread(
            target=lambda w=w: [mem.frames.append("log", readings(f"w{w}", i, 1)) for i in range(8)]
        )
        for w in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = mem.frames.get("log")
    assert len(out) == 32 and not out.duplicated(["sensor", "seq"]).any()


def test_concurrent_appends_from_processes_lose_nothing(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/race.db"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(url, w, 5)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    out = pm.open_memory(url, namespace="race").frames.get("log")
    assert len(out) == 15 and sorted(out["sensor"].unique()) == ["w0", "w1", "w2"]


def test_a_held_lock_times_out_and_a_dead_holder_expires(open_mem) -> None:
    mem = open_mem("sqlite")
    mem.frames.put("t", pd.DataFrame({"a": [1]}))
    other = open_mem("sqlite")  # another writer (own backend, as in another process)
    with frame_lock(other, "t"):
        started = time.monotonic()
        with pytest.raises(FrameLockTimeout):
            mem.frames.append("t", pd.DataFrame({"a": [2]}), lock_timeout=0.3)
        assert time.monotonic() - started < 5
    # a holder that died: its lock entry expires after its lease
    now = mem.clock()
    stale = Record(b"dead", now, now, now, 0, now + 0.5, 0.5, False, (), 1)
    mem.backend.put_many(mem.namespace + LOCKS_SUFFIX, {"t": stale}, now=now)
    assert mem.frames.append("t", pd.DataFrame({"a": [2]}), lock_timeout=10) == 2
    assert not mem.backend.exists_many(mem.namespace + LOCKS_SUFFIX, ["t"], now=mem.clock())

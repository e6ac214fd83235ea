"""Frames round-trip exactly through every store: values, dtypes, index, timezones, freq."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import prefect_memory as pm
from prefect_memory.tabular import decode_frame, encode_frame, is_frame_envelope

ALL_BACKENDS = ["memory", "sqlite", "json", "file", "s3", "redis"]


def rich_frame(rows: int = 6) -> pd.DataFrame:
    """One column per kind of dtype users store, with missing values where allowed."""
    half = rows // 2
    index = pd.date_range(  # crosses the DST change of 2024-03-31
        "2024-03-30 22:00", periods=rows, freq="h", tz="Europe/Paris", name="when"
    )
    columns = {
        "utc_ns": pd.date_range("2024-01-01", periods=rows, freq="s", tz="UTC"),
        "tokyo_us": pd.date_range("2024-01-01", periods=rows, freq="D", tz="Asia/Tokyo").as_unit(
            "us"
        ),
        "naive_ms": pd.date_range("2024-01-01", periods=rows, freq="min").as_unit("ms"),
        "with_nat": pd.to_datetime(["2024-01-01 09:30", None] * half).tz_localize(
            "America/New_York"
        ),
        "i8": np.arange(rows, dtype="int8"),
        "u64": np.arange(rows, dtype="uint64") * 2**40,
        "f32": np.linspace(0, 1, rows, dtype="float32"),
        "f64_nan": [1.5, np.nan] * half,
        "Int64": pd.array([1, None] * half, dtype="Int64"),
        "boolean": pd.array([True, None] * half, dtype="boolean"),
        "bool": [True, False] * half,
        "text": ["a", None] * half,
        "text_python": pd.array(["é", None] * half, dtype="string[python]"),
        "text_arrow": pd.array(["x", None] * half, dtype="string[pyarrow]"),
        "objects": pd.Series(["u", None] * half, dtype=object),
        "lists": pd.Series([[1, 2], []] * half, dtype=object),
        "category": pd.Categorical(["lo", "hi"] * half, categories=["hi", "lo"], ordered=True),
        "duration": pd.to_timedelta(np.arange(rows), unit="ms"),
        "period": pd.period_range("2024-01", periods=rows, freq="M"),
    }
    return pd.DataFrame({k: list(v) if k == "with_nat" else v for k, v in columns.items()}).pipe(
        lambda df: df.set_axis(index)
    )


def assert_exact(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert_frame_equal(out, expected, check_exact=True, check_freq=True)
    assert list(out.dtypes) == list(expected.dtypes)  # also the string storage
    assert out.index.dtype == expected.index.dtype
    assert out.index.names == expected.index.names


def test_rich_frame_has_what_it_claims() -> None:
    df = rich_frame()
    assert str(df["tokyo_us"].dtype) == "datetime64[us, Asia/Tokyo]"
    assert str(df["with_nat"].dtype).endswith("America/New_York]")
    assert df.index.freqstr == "h" and str(df.index.tz) == "Europe/Paris"


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_codec_round_trips_exactly(fmt: str) -> None:
    df = rich_frame()
    assert_exact(decode_frame(encode_frame(df, format=fmt)), df)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_put_get_exact_on_every_store(open_mem, backend: str, fmt: str) -> None:
    mem = open_mem(backend)
    df = rich_frame()
    mem.frames.put("table:rich", df, format=fmt)
    assert_exact(mem.frames.get("table:rich"), df)
    # a second memory on the same store (another process would see the same)
    assert_exact(open_mem(backend).frames.get("table:rich"), df)


@pytest.mark.parametrize(
    "index",
    [
        pd.RangeIndex(5, 11, 2, name="r"),
        pd.MultiIndex.from_tuples(
            [
                ("a", pd.Timestamp("2024-01-01", tz="UTC")),
                ("b", pd.Timestamp("2024-01-02", tz="UTC")),
                ("b", pd.Timestamp("2024-01-03", tz="UTC")),
            ],
            names=["k", "at"],
        ),
        pd.CategoricalIndex(["x", "y", "x"], name="c"),
        pd.Index(["é", "ü", "ß"], dtype="string[python]", name="s"),
        pd.timedelta_range(0, periods=3, freq="15min", name="td"),
    ],
    ids=["range", "multi-tz", "categorical", "string-python", "timedelta-freq"],
)
def test_indexes_round_trip(open_mem, index: pd.Index) -> None:
    mem = open_mem("sqlite")
    df = pd.DataFrame({"v": [1.0, 2.0, 3.0], 7: ["a", "b", "c"]}, index=index)
    mem.frames.put("t", df)
    out = mem.frames.get("t")
    assert_frame_equal(out, df, check_exact=True, check_index_type=True, check_column_type=True)
    assert type(out.index) is type(df.index)


def test_empty_frame_keeps_dtypes(open_mem) -> None:
    mem = open_mem("file")
    df = pd.DataFrame(
        {"a": pd.Series([], dtype="int16"), "t": pd.Series([], dtype="datetime64[ns, UTC]")}
    )
    mem.frames.put("empty", df)
    assert_exact(mem.frames.get("empty"), df)


@pytest.mark.parametrize("backend", ["sqlite", "s3", "redis"])
def test_several_megabyte_frame(open_mem, backend: str) -> None:
    rng = np.random.default_rng(7)
    rows = 400_000
    df = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=rows, freq="s", tz="UTC"),
            "value": rng.normal(size=rows),
            "code": rng.integers(0, 1_000_000, rows),
        }
    )
    mem = open_mem(backend)
    mem.frames.put("big", df)
    info = mem.info("big")
    assert info is not None and info.size > 5_000_000  # random floats do not compress much
    assert_exact(mem.frames.get("big"), df)


def test_stored_value_is_an_arrow_or_parquet_envelope(open_mem) -> None:
    mem = open_mem("sqlite")
    df = pd.DataFrame({"a": [1]})
    mem.frames.put("arrow", df)
    mem.frames.put("parquet", df, format="parquet")
    arrow, parquet = mem.get("arrow"), mem.get("parquet")
    assert is_frame_envelope(arrow) and arrow["data"][:6] == b"ARROW1"
    assert parquet["data"][:4] == b"PAR1" and parquet["rows"] == 1
    assert mem.frames.get("missing") is None and mem.frames.get("missing", "none") == "none"


def test_frames_that_arrow_cannot_carry_are_clear_errors(open_mem) -> None:
    mem = open_mem("memory")
    with pytest.raises(pm.SerializationError, match="duplicate column"):
        mem.frames.put("dup", pd.DataFrame([[1, 2]], columns=["a", "a"]))
    with pytest.raises(pm.SerializationError, match="Arrow"):
        mem.frames.put("mixed", pd.DataFrame({"m": [1, "x", b"y"]}, dtype=object))
    mem.set("plain", {"not": "a frame"})
    with pytest.raises(pm.SerializationError, match="does not hold a frame"):
        mem.frames.get("plain")


def test_frames_with_compression_and_ttl(open_mem) -> None:
    mem = open_mem("sqlite", compression=True)
    df = pd.DataFrame({"a": np.zeros(50_000)})
    mem.frames.put("z", df, ttl=60, tags=["batch:1"])
    assert_exact(mem.frames.get("z"), df)
    info = mem.info("z")
    assert info is not None and info.ttl == 60 and info.tags == ("batch:1",)
    assert mem.invalidate_tags("batch:1") == 1


def test_async_twins(open_mem) -> None:
    mem = open_mem("memory")
    df = pd.DataFrame({"a": [1, 2]})

    async def main() -> int:
        await mem.frames.aput("a", df)
        assert await mem.frames.aappend("a", df) == 4
        return len(await mem.frames.aget("a"))

    assert asyncio.run(main()) == 4

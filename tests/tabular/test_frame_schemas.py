"""pandera schemas on frames: every failure named, coerce and strict, checked on save and load."""

from __future__ import annotations

from typing import Optional

import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

import prefect_memory as pm
from prefect_memory.tabular import (
    AggregatesModel,
    EventsModel,
    FeaturesModel,
    FrameSchemaHook,
    PredictionsModel,
    frame_schemas,
    register_schema,
)

KEY_BACKENDS = ["sqlite", "file", "redis"]  # the key tests: embedded, file and a real server


class Orders(pa.DataFrameModel):
    order_id: Series[int] = pa.Field(ge=1, unique=True)
    status: Series[str] = pa.Field(isin=["open", "paid"])
    amount: Series[float] = pa.Field(ge=0)
    note: Optional[Series[str]] = pa.Field(nullable=True)  # noqa: UP045 - pandera reads it

    class Config:
        strict = True
        coerce = True


class LooseOrders(Orders):
    class Config:
        strict = False
        coerce = False


class FilteredOrders(Orders):
    class Config:
        strict = "filter"
        coerce = True


def good_orders() -> pd.DataFrame:
    return pd.DataFrame({"order_id": [1, 2], "status": ["open", "paid"], "amount": [9.5, 0.0]})


def bad_orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": [1, 0, 2, -4],
            "status": ["open", "lost", "paid", "gone"],
            "amount": [1.0, -5.0, 2.0, 3.0],
            "extra": [1, 2, 3, 4],
        }
    )


@pytest.mark.parametrize("backend", KEY_BACKENDS)
def test_every_failing_column_check_and_example_rows_are_named(open_mem, backend: str) -> None:
    mem = open_mem(backend)
    register_schema(mem, "orders:*", Orders)
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.put("orders:today", bad_orders())
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, pm.PrefectMemoryError)
    assert err.key == "orders:today" and err.schema == "Orders"
    by = {(f.path, f.check): f for f in err.failures}
    assert set(by) == {
        ("extra", "column_in_schema"),
        ("order_id", "greater_than_or_equal_to(1)"),
        ("status", "isin(['open', 'paid'])"),
        ("amount", "greater_than_or_equal_to(0)"),
    }
    ids = by[("order_id", "greater_than_or_equal_to(1)")]
    assert ids.examples == ((1, 0), (3, -4)) and ids.count == 2
    assert by[("status", "isin(['open', 'paid'])")].examples == ((1, "lost"), (3, "gone"))
    assert by[("amount", "greater_than_or_equal_to(0)")].examples == ((1, -5.0),)
    text = str(err)
    for column in ("extra", "order_id", "status", "amount"):
        assert column in text
    assert "1: 'lost'" in text and "3: 'gone'" in text
    assert isinstance(err.details, pd.DataFrame) and len(err.details) >= 6
    assert not mem.exists("orders:today")  # nothing stored


def test_examples_are_capped_but_counted() -> None:
    mem = pm.open_memory("memory://")
    df = pd.DataFrame({"order_id": range(-20, 0), "status": "open", "amount": 1.0})
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.put("o", df, schema=Orders)
    (failure,) = info.value.failures
    assert failure.count == 20 and len(failure.examples) == 5
    assert "(+15 more)" in str(failure)


def test_frame_wide_checks_show_whole_rows() -> None:
    mem = pm.open_memory("memory://")
    df = good_orders().assign(order_id=[7, 7])
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.put("o", df, schema=Orders)
    (failure,) = info.value.failures
    assert failure.path == "order_id" and failure.check == "field_uniqueness"
    bucket = pd.DataFrame(
        {
            "metric": ["cpu"],
            "bucket": [pd.Timestamp("2024-01-01 00:00:30", tz="UTC")],
            "interval": [60],
            "aggregation": ["avg"],
            "value": [1.0],
            "count": [3],
        }
    )
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.put("agg", bucket, schema=AggregatesModel)
    (failure,) = info.value.failures
    assert failure.path == "<frame>" and failure.check == "bucket_aligned_on_interval"
    (row_index, row), *_ = failure.examples
    assert row_index == 0 and row["interval"] == 60 and row["metric"] == "cpu"


def test_coerce_converts_and_stores_the_coerced_frame(open_mem) -> None:
    mem = open_mem("sqlite")
    register_schema(mem, "orders:*", Orders)
    raw = pd.DataFrame({"order_id": ["1", "2"], "status": ["open", "paid"], "amount": [3, 4]})
    mem.frames.put("orders:1", raw)
    out = mem.frames.get("orders:1")
    assert out["order_id"].dtype == "int64" and out["amount"].dtype == "float64"
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.put("orders:2", raw.assign(order_id=["1", "two"]))
    assert info.value.failures[0].check == "coerce_dtype('int64')"
    assert info.value.failures[0].examples == ((1, "two"),)


def test_without_coerce_dtypes_must_match_and_unknown_columns_pass(open_mem) -> None:
    mem = open_mem("sqlite")
    register_schema(mem, "loose:*", LooseOrders)
    raw = good_orders().assign(amount=[1, 2], extra="kept")  # ints where floats are declared
    with pytest.raises(pm.ValidationError) as info:
        mem.frames.put("loose:1", raw)
    (failure,) = info.value.failures
    assert failure.path == "amount" and "int64" in failure.message
    mem.frames.put("loose:1", raw.assign(amount=[1.0, 2.0]))
    assert list(mem.frames.get("loose:1").columns)[-1] == "extra"


def test_strict_filter_drops_unknown_columns(open_mem) -> None:
    mem = open_mem("file")
    register_schema(mem, "orders:*", FilteredOrders)
    mem.frames.put("orders:f", good_orders().assign(junk=1))
    assert "junk" not in mem.frames.get("orders:f").columns


@pytest.mark.parametrize("backend", KEY_BACKENDS)
def test_schema_is_checked_on_load_too(open_mem, backend: str) -> None:
    raw = open_mem(backend)  # knows no schema: stores anything
    raw.frames.put("orders:legacy", bad_orders().drop(columns="extra"))
    validated = open_mem(backend)
    register_schema(validated, "orders:*", Orders)
    with pytest.raises(pm.ValidationError) as info:
        validated.frames.get("orders:legacy")
    assert info.value.key == "orders:legacy"
    assert set(info.value.paths) == {"order_id", "status", "amount"}
    assert raw.frames.get("orders:legacy") is not None  # the data is still there


def test_patterns_namespaces_and_per_call_schema() -> None:
    mem = pm.open_memory("memory://", namespace="shop")
    register_schema(mem, "orders:*", Orders, namespace="shop")
    register_schema(mem, "*", LooseOrders)  # fallback for every key and namespace
    registry = frame_schemas(mem)
    assert registry.model_for("shop", "orders:1") is Orders
    assert registry.model_for("shop", "other") is LooseOrders
    assert registry.model_for("elsewhere", "orders:1") is LooseOrders
    other = mem.with_namespace("elsewhere")
    assert frame_schemas(other) is registry  # with_namespace copies share the registry
    other.frames.put("orders:1", good_orders().assign(extra=1))  # LooseOrders: extras pass
    with pytest.raises(pm.ValidationError):
        mem.frames.put("orders:1", good_orders().assign(extra=1))  # Orders is strict
    mem.frames.put("orders:1", good_orders().assign(extra=1), schema=LooseOrders)
    with pytest.raises(pm.ValidationError):
        mem.frames.get("orders:1")  # the registered schema still applies on load
    assert len(mem.frames.get("orders:1", schema=LooseOrders)) == 2
    with pytest.raises(pm.ConfigError, match="DataFrameModel"):
        register_schema(mem, "x", dict)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_frame_schema_hook_makes_set_and_get_carry_frames(open_mem, backend: str) -> None:
    hook = FrameSchemaHook({"orders:*": Orders})
    mem = open_mem(backend, hooks=[hook])
    mem.set("orders:1", good_orders())
    out = mem.get("orders:1")
    assert isinstance(out, pd.DataFrame) and len(out) == 2
    assert mem.frames.get("orders:1").equals(out)
    with pytest.raises(pm.ValidationError):
        mem.set("orders:2", bad_orders())
    mem.frames.put("orders:3", good_orders())  # put_frame uses the hook's registry
    register_schema(mem, "events:*", EventsModel)
    assert hook.schemas.model_for("", "events:1") is EventsModel
    raw = open_mem(backend)
    raw.frames.put("orders:bad", bad_orders())
    with pytest.raises(pm.ValidationError):
        mem.get("orders:bad")  # the hook validates on load as well


def test_builtin_models_accept_good_tables_and_name_bad_ones() -> None:
    mem = pm.open_memory("memory://")
    at = pd.Timestamp("2024-05-01 12:00", tz="Europe/Paris")
    good = {
        EventsModel: pd.DataFrame(
            {"timestamp": [at], "type": ["click"], "value": [1], "labels": ['{"page": "home"}']}
        ),
        AggregatesModel: pd.DataFrame(
            {
                "metric": ["cpu"],
                "bucket": [pd.Timestamp("2024-01-01 00:01", tz="UTC")],
                "interval": [60],
                "aggregation": ["avg"],
                "value": [0.5],
                "count": [2],
            }
        ),
        FeaturesModel: pd.DataFrame(
            {"entity_id": ["u1"], "event_timestamp": [at], "age": [31], "vip": [True]}
        ),
        PredictionsModel: pd.DataFrame(
            {
                "entity_id": ["u1"],
                "model_name": ["churn"],
                "model_version": ["3"],
                "prediction": [1.0],
                "probability": [0.9],
                "predicted_at": [at],
            }
        ),
    }
    for model, df in good.items():
        mem.frames.put(f"t:{model.__name__}", df, schema=model)
        out = mem.frames.get(f"t:{model.__name__}", schema=model)
        stamps = [c for c in out.columns if str(out[c].dtype).startswith("datetime64")]
        assert stamps and all(str(out[c].dtype) == "datetime64[ns, UTC]" for c in stamps)
    bad = {
        EventsModel: (good[EventsModel].assign(labels=["not json"], type=[""]), {"labels", "type"}),
        AggregatesModel: (
            good[AggregatesModel].assign(aggregation=["mean"], count=[-1]),
            {"aggregation", "count"},
        ),
        FeaturesModel: (good[FeaturesModel].assign(color=["red"]), {"<frame>"}),
        PredictionsModel: (good[PredictionsModel].assign(probability=[1.5]), {"probability"}),
    }
    for model, (df, paths) in bad.items():
        with pytest.raises(pm.ValidationError) as info:
            mem.frames.put("bad", df, schema=model)
        assert set(info.value.paths) == paths, model

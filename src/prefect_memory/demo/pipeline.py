"""The tutorial's machine-learning pipeline as a Prefect flow over a tiered memory.

``ml_pipeline(config)`` runs six steps, each a task:

1. **features**: compute feature snapshots from raw activity (numpy), store the daily
   training partitions and today's feature table with ``mem.frames.put`` (validated by the
   built-in pandera ``FeaturesModel``, msgpack + zstd), and cache one feature vector per
   user for online serving (``set_many``, 7-day TTL);
2. **train**: fit two logistic regressions, version them as ``model:v1`` and ``model:v2``
   (tags ``stage:production`` / ``stage:retired``) and promote the better one;
3. **serve**: answer prediction requests through :func:`predict`, a Prefect task whose
   results are cached in a memory block (``cache_policy=INPUTS + TASK_SOURCE``, TTL);
4. **events**: record the requests (and the last 24 hours of traffic) and downsample them;
5. **migrate** (the clock moved 2 hours on): tier rules move what nobody used out of hot;
6. **archive** (2 days on): what stayed idle goes to the Parquet archive, then compaction.

It returns a summary dict (entries per tier, archive files, cache hit rate, time per step).
Each run first empties its namespace (``config.namespace``, default ``ml``) in every tier.

Example (the stores of a config, without running the flow)::

    >>> from prefect_memory.demo.stores import DemoConfig
    >>> DemoConfig.embedded("/tmp/pm-demo-doc").profile
    'embedded'
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from . import data
from .model import evaluate, predict_proba, train
from .report import reporter
from .stores import FEATURES_TTL, PREDICTIONS_TTL, DemoConfig, Stores, open_stores

HOUR, DAY = 3600.0, 86400.0
V1_FEATURES = data.FEATURES[:8]  # the first model sees half of the features


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _features_frame(ids: list[str], vectors: np.ndarray, at: float, labels: Any = None) -> Any:
    import pandas as pd

    frame = pd.DataFrame(vectors, columns=list(data.FEATURES))
    frame.insert(0, "entity_id", ids)
    frame.insert(1, "event_timestamp", pd.Timestamp(at, unit="s", tz="UTC"))
    if labels is not None:
        frame["churned"] = labels
    return frame


@task(name="compute-features", cache_policy=NO_CACHE)
def compute_features(config: DemoConfig, now: float) -> dict[str, Any]:
    """Compute feature snapshots, store training partitions and cache serving features."""
    from ..codecs import Codec
    from ..tabular import FeaturesModel
    from ..tabular.codec import encode_frame

    stores, sizes, rep = open_stores(config), config.sizes, reporter()
    mem, rng = stores.memory, np.random.default_rng(config.seed)
    ids = data.user_ids(sizes.users)
    activity = data.make_activity(rng, sizes.users, sizes.days + 30, now)
    rep.total(sizes.days + 1 + sizes.users)
    advance = rep.advancer()
    for day in range(sizes.days):  # one training partition per day, labelled
        at = now - (sizes.days - day) * DAY
        snapshot = data.feature_snapshot(activity, sizes.users, at)
        frame = _features_frame(ids, snapshot, at, data.churn_labels(rng, snapshot))
        mem.frames.put(f"training:{_date(at)}", frame, schema=FeaturesModel,
                      tags=["training"])  # fmt: skip
        advance(1)
    today = data.feature_snapshot(activity, sizes.users, now)
    frame = _features_frame(ids, today, now)
    key = f"features:day:{_date(now)}"
    mem.frames.put(key, frame, schema=FeaturesModel, ttl=FEATURES_TTL, tags=["features"])
    raw = len(Codec().encode(encode_frame(frame, compression=None)))
    stored = mem.info(key).size  # type: ignore[union-attr]
    advance(1)
    for start in range(0, sizes.users, 1000):
        batch = {
            f"features:user:{ids[i]}": today[i]
            for i in range(start, min(start + 1000, sizes.users))
        }
        mem.set_many(batch, ttl=FEATURES_TTL, tags=["features", f"snapshot:{_date(now)}"])
        advance(len(batch))
    return {
        "raw events": len(activity),
        "training partitions": sizes.days,
        "feature table": f"{sizes.users} rows x {len(data.FEATURES)} features, "
        f"{raw / 1024:.0f} KiB -> {stored / 1024:.0f} KiB stored (Arrow + zstd, msgpack)",
        "serving vectors": sizes.users,
    }


@task(name="train-models", cache_policy=NO_CACHE)
def train_models(config: DemoConfig) -> dict[str, Any]:
    """Train ``model:v1`` (8 features, older half) and ``model:v2`` (all); promote the best."""
    import pandas as pd

    mem = open_stores(config).memory
    keys = sorted(mem.keys("training:*"))
    frames = [mem.frames.get(key) for key in keys]
    holdout, history = frames[-1], frames[:-1]
    half = pd.concat(history[: max(1, len(history) // 2)])
    full = pd.concat(history)
    models = {
        "v1": train(half[list(V1_FEATURES)].to_numpy(), half["churned"].to_numpy(),
                    features=V1_FEATURES, version="v1"),
        "v2": train(full[list(data.FEATURES)].to_numpy(), full["churned"].to_numpy(),
                    features=data.FEATURES, version="v2"),
    }  # fmt: skip
    metrics = {}
    for version, model in models.items():
        metrics[version] = evaluate(model, holdout[model["features"]].to_numpy(),
                                    holdout["churned"].to_numpy())  # fmt: skip
        model["metrics"] = metrics[version]
        model["trained_at"] = _dt.datetime.now(_dt.timezone.utc)
        model["training_partitions"] = keys[:-1]
        mem.set(f"model:{version}", model, tags=["model", "churn", "stage:candidate"])
    best = max(metrics, key=lambda v: metrics[v]["auc"])
    for version, model in models.items():  # re-tag: one production model, the others retired
        stage = "stage:production" if version == best else "stage:retired"
        mem.set(f"model:{version}", model, tags=["model", "churn", stage])
    mem.set("model:production", {"version": best}, tags=["model"])
    return {
        **{f"{v} auc / accuracy": f"{m['auc']:.3f} / {m['accuracy']:.3f}" for v, m in
           metrics.items()},
        "production": best,
        "versions": sorted(mem.keys("model:v*")),
    }  # fmt: skip


@task(
    name="predict",
    cache_policy=INPUTS + TASK_SOURCE,
    cache_expiration=_dt.timedelta(seconds=PREDICTIONS_TTL),
    persist_result=True,
)
def predict(user_id: str, model_version: str, config: DemoConfig) -> dict[str, Any]:
    """The churn probability of one user (the tutorial's ``ModelServer.predict``).

    Cached by Prefect in the result storage block the flow gives it: a second request for
    the same user and model version is answered from the cache without running this body.
    """
    mem = open_stores(config).memory
    found = mem.get_many([f"model:{model_version}", f"features:user:{user_id}"])
    model, vector = found[f"model:{model_version}"], found[f"features:user:{user_id}"]
    columns = [data.FEATURES.index(name) for name in model["features"]]
    probability = float(predict_proba(model, vector[columns])[0])
    return {"entity_id": user_id, "model_name": "churn", "model_version": model_version,
            "prediction": float(probability >= 0.5), "probability": probability}  # fmt: skip


def serve_predictions(config: DemoConfig) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Answer the requests through the cached :func:`predict`; store the predictions.

    Called from the flow itself, not from a task: a cached task run inside another task
    commits its result only when that parent task ends (Prefect 3.9 transactions), so
    repeated requests inside one parent task would all miss the cache.
    """
    import pandas as pd

    from ..tabular import PredictionsModel

    stores, sizes = open_stores(config), config.sizes
    block = stores.saved_block()
    cached_predict = predict.with_options(result_storage=block)
    version = stores.memory.get("model:production")["version"]
    rng = np.random.default_rng(config.seed + 1)
    ids = data.user_ids(sizes.users)
    picks = (rng.zipf(1.4, sizes.requests) - 1) % min(sizes.distinct_users, sizes.users)
    reporter().total(sizes.requests)
    advance = reporter().advancer()
    ts, latency, hits, answers = [], [], [], {}
    for index in picks:
        started = time.perf_counter()
        state = cached_predict(ids[index], version, config, return_state=True)
        answer = state.result()
        latency.append((time.perf_counter() - started) * 1000)
        ts.append(time.time_ns())
        hits.append(state.name == "Cached")
        answers[answer["entity_id"]] = answer
        advance(1)
    frame = pd.DataFrame(list(answers.values()))
    frame["predicted_at"] = pd.Timestamp.now(tz="UTC")
    stores.memory.frames.put(f"predictions:{_date(time.time())}", frame, schema=PredictionsModel)
    n_hits = int(sum(hits))
    events = {"ts": np.array(ts, np.int64), "latency": np.array(latency),
              "cached": np.array(hits, bool)}  # fmt: skip
    return {
        "requests": sizes.requests,
        "hits": n_hits,
        "hit_rate": n_hits / sizes.requests,
        "distinct users": len(answers),
        "stored_results": len(block.list_results()),
        "storage": f"{type(block).__name__} '{config.results_block}'",
        "ttl_seconds": float(block.ttl or 0),
    }, events


@task(name="record-events", cache_policy=NO_CACHE)
def record_events(config: DemoConfig, live: dict[str, np.ndarray], now: float) -> dict[str, Any]:
    """Record the served requests and the last 24 hours of traffic; downsample them."""
    from ..tabular import AggregatesModel

    stores, sizes = open_stores(config), config.sizes
    recorder = stores.events
    rng = np.random.default_rng(config.seed + 2)
    reporter().total(sizes.backfill_events + live["ts"].size)
    advance = reporter().advancer()
    ts, latency, cached = data.traffic(rng, sizes.backfill_events, now - DAY, now)
    recorded = recorder.record(ts, latency, cached, advance=advance)
    for key, value in recorder.record(live["ts"], live["latency"], live["cached"], live=True,
                                      advance=advance).items():  # fmt: skip
        summed = key.startswith("frames") and isinstance(value, int)
        recorded[key] = recorded.get(key, 0) + value if summed else value
    frame, report = recorder.downsample()
    stores.memory.frames.put("aggregates:latency_ms", frame, schema=AggregatesModel)
    report["events recorded"] = sizes.backfill_events + int(live["ts"].size)
    report.update({k: v for k, v in recorded.items() if k != "events"})
    return report


@task(name="migrate-tiers", cache_policy=NO_CACHE)
def migrate_tiers(config: DemoConfig, later: float) -> dict[str, Any]:
    """Move the clock ``later`` seconds on and apply the tier rules (one step per entry)."""
    stores = open_stores(config)
    stores.clock.advance(later)
    advance = reporter().advancer()
    seen = [0]

    def progress(report: Any) -> None:
        advance(report.scanned - seen[0])
        seen[0] = report.scanned

    report = stores.memory.migrate(batch_size=config.migrate_batch, progress=progress)
    return {"moved": dict(report.moved), "scanned": report.scanned,
            "bytes moved": report.bytes_moved, "tiers": stores.entries_per_tier()}  # fmt: skip


@task(name="archive-to-parquet", cache_policy=NO_CACHE)
def archive_to_parquet(config: DemoConfig, later: float) -> dict[str, Any]:
    """The nightly job: read today's tables, archive what stayed idle, compact the archive."""
    stores = open_stores(config)
    mem = stores.memory
    stores.clock.advance(later)
    for key in [*mem.keys("features:day:*"), *mem.keys("aggregates:*")]:
        mem.frames.get(key)  # the nightly report reads them: they stay warm
    moved = migrate_tiers.fn(config, 0.0)
    files_before = len(stores.archive_files())
    compaction = stores.archive.compact(mem.namespace, now=stores.clock())
    rows = stores.archive.query(mem.namespace, columns=["key", "date"])
    return {**moved, "files_before": files_before, "files": len(stores.archive_files()),
            "rows": len(rows), "compaction seconds": round(compaction.seconds, 3)}  # fmt: skip


@flow(name="ml-pipeline", log_prints=False)
def ml_pipeline(config: DemoConfig | None = None) -> dict[str, Any]:
    """The demo's pipeline (see the module docstring); returns its summary.

    Args:
        config: Stores and sizes (default: the embedded profile in ``.prefect-memory/demo``).
    """
    config = config or DemoConfig()
    stores = open_stores(config, fresh=True)
    reset(stores)
    rep, steps = reporter(), {}
    now = stores.clock()
    with rep.step("Compute and cache features", steps):
        features = compute_features(config, now)
    with rep.step("Train and version models", steps):
        models = train_models(config)
    with rep.step("Serve predictions (cached Prefect task)", steps):
        cache, live = serve_predictions(config)
    with rep.step("Record events and downsample", steps):
        events = record_events(config, live, now)
    before = stores.entries_per_tier()
    with rep.step("Migrate tiers (+2 h)", steps):
        migration = migrate_tiers(config, 2 * HOUR)
    with rep.step("Archive to Parquet and compact (+2 d)", steps):
        archived = archive_to_parquet(config, 2 * DAY - 2 * HOUR)
    history = {"before migration": before, "+2 h": migration["tiers"], "+2 d": archived["tiers"]}
    return summarize(stores, steps, features, models, cache, events, migration, archived, history)


def reset(stores: Stores) -> None:
    """Empty the demo's namespace in every tier and its analytics (a run starts clean)."""
    now = stores.clock()
    for tier in stores.memory.tiers:
        tier.backend.clear(stores.memory.namespace, now=now)
    stores.events.reset()


def summarize(stores: Stores, steps: dict[str, float], features: dict[str, Any],
              models: dict[str, Any], cache: dict[str, Any], events: dict[str, Any],
              migration: dict[str, Any], archived: dict[str, Any],
              history: dict[str, dict[str, int]]) -> dict[str, Any]:  # fmt: skip
    """The flow's result, in plain values (JSON-ready)."""
    config = stores.config
    urls = {"hot": config.hot, "warm": config.warm, "cold": config.cold}
    counts = history["+2 d"]
    downsampling = {k: events.pop(k) for k in ("engine", "frames read", "points", "buckets",
                                               "seconds") if k in events}  # fmt: skip
    notes = list(stores.notes)
    if stores.events.kind == "frames":
        notes.append(
            "no Redis in this profile: events are hourly frames in the warm tier, "
            "downsampled in numpy (PROFILE=services: Redis stream + time series)"
        )
    return {
        "profile": config.profile,
        "tiers": {name: {"store": urls[name].split("?")[0], "entries": counts[name],
                         "history": {when: c[name] for when, c in history.items()}}
                  for name in counts},
        "archive": {"files": archived["files"], "rows": archived["rows"],
                    "files_before_compaction": archived["files_before"]},
        "cache": cache,
        "models": models,
        "features": features,
        "migration": {"+2 h": migration["moved"] or "nothing", "+2 d": archived["moved"]
                      or "nothing"},
        "events": events,
        "downsampling": downsampling,
        "steps": steps,
        "notes": notes,
    }  # fmt: skip

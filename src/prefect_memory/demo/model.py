"""A small churn model in numpy: L2-regularized logistic regression fitted by Newton steps.

A model is a plain dict (weights as numpy arrays, metrics, provenance), so it is stored
as is in a memory (msgpack carries numpy arrays) and versioned by key: ``model:v1``,
``model:v2``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 3))
    >>> y = (x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=400)) > 0
    >>> model = train(x, y, features=["a", "b", "c"], version="v1")
    >>> round(evaluate(model, x, y)["accuracy"], 2) > 0.9
    True
    >>> predict_proba(model, x[:2]).shape
    (2,)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _design(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    z = (np.asarray(x, dtype=np.float64) - model["mean"]) / model["scale"]
    return np.column_stack([np.ones(z.shape[0]), z])


def train(
    x: np.ndarray,
    y: np.ndarray,
    *,
    features: Sequence[str],
    version: str,
    l2: float = 1.0,
    iterations: int = 25,
) -> dict[str, Any]:
    """Fit a logistic regression of ``y`` (bools) on the columns of ``x``.

    Args:
        x: One row per example, one column per feature.
        y: The labels.
        features: Names of the columns of ``x`` (kept with the model).
        version: Version label (``"v1"``).
        l2: Ridge penalty on the standardized weights (not on the intercept).
        iterations: Most Newton steps (stops earlier once the step is tiny).

    Returns:
        The model: ``version``, ``features``, ``mean``, ``scale``, ``weights`` and ``rows``.
    """
    x = np.asarray(x, dtype=np.float64)
    target = np.asarray(y, dtype=np.float64)
    model: dict[str, Any] = {
        "version": version,
        "features": list(features),
        "mean": x.mean(axis=0),
        "scale": x.std(axis=0) + 1e-9,
        "rows": int(x.shape[0]),
    }
    design = _design(model, x)
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    w = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - target) + penalty * w
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    model["weights"] = w
    return model


def predict_proba(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The churn probability of each row of ``x`` (columns in ``model["features"]`` order)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    return 1.0 / (1.0 + np.exp(-(_design(model, x) @ model["weights"])))


def evaluate(model: dict[str, Any], x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, log loss and ROC AUC of ``model`` on ``(x, y)``."""
    p = np.clip(predict_proba(model, x), 1e-12, 1 - 1e-12)
    truth = np.asarray(y, dtype=bool)
    logloss = -np.mean(np.where(truth, np.log(p), np.log(1 - p)))
    ranks = np.empty(p.size)
    ranks[np.argsort(p, kind="stable")] = np.arange(1, p.size + 1)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    auc = (
        (ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives)
        if positives and negatives
        else float("nan")
    )
    return {
        "accuracy": float(np.mean((p >= 0.5) == truth)),
        "logloss": float(logloss),
        "auc": float(auc),
    }

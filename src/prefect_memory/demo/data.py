"""Synthetic data of the demo: user activity, feature snapshots, churn labels, request traffic.

Everything is numpy and seeded, so two runs with the same seed compute the same features,
train the same models and make the same predictions (which is what lets a prediction
cached by an earlier run stay correct).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> activity = make_activity(rng, users=50, days=40, now=40 * 86400.0)
    >>> snapshot = feature_snapshot(activity, 50, at=40 * 86400.0)
    >>> snapshot.shape, len(FEATURES)
    ((50, 16), 16)
    >>> bool((snapshot[:, FEATURES.index("sessions_7d")] >= 0).all())
    True
    >>> user_ids(3)
    ['u00000', 'u00001', 'u00002']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86400.0

#: The feature columns, in the order of every feature vector.
FEATURES: tuple[str, ...] = (
    "sessions_7d", "minutes_7d", "views_30d", "minutes_30d", "purchases_30d", "spend_30d",
    "tickets_30d", "errors_7d", "days_since_last", "active_days_30d", "avg_order_30d",
    "minutes_per_session_7d", "trend_7d_30d", "tenure_days", "plan_tier", "mobile_share",
)  # fmt: skip

# Event kinds of the raw activity.
VIEW, PURCHASE, TICKET, ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class Activity:
    """Raw user activity: one row per event (columns as numpy arrays).

    Attributes:
        user: User index of each event.
        ts: Epoch seconds of each event.
        kind: ``VIEW``, ``PURCHASE``, ``TICKET`` or ``ERROR``.
        minutes: Minutes spent (views).
        amount: Amount spent (purchases).
        signup: Epoch seconds of each user's signup (one per user).
        plan: Plan tier of each user (0, 1, 2).
        mobile: Share of mobile sessions of each user.
    """

    user: np.ndarray
    ts: np.ndarray
    kind: np.ndarray
    minutes: np.ndarray
    amount: np.ndarray
    signup: np.ndarray
    plan: np.ndarray
    mobile: np.ndarray

    def __len__(self) -> int:
        return int(self.user.size)


def user_ids(n: int) -> list[str]:
    """The ids of ``n`` users: ``u00000``, ``u00001``..."""
    return [f"u{i:05d}" for i in range(n)]


def make_activity(
    rng: np.random.Generator, users: int, days: int, now: float, per_user: float = 20.0
) -> Activity:
    """About ``per_user`` events per user over the ``days`` days before ``now``.

    Users differ in how active they are and in how their activity fades (some are
    leaving), which is what the churn labels follow.
    """
    engagement = rng.gamma(2.0, 0.5, users)  # activity level per user
    fading = rng.beta(2.0, 5.0, users)  # share of activity lost over the period
    counts = rng.poisson(per_user * engagement).astype(np.int64)
    user = np.repeat(np.arange(users, dtype=np.int32), counts)
    # Fading users have their events pushed towards the start of the period.
    u = rng.random(user.size) ** (1.0 + 3.0 * fading[user])
    ts = now - days * DAY * (1.0 - u)
    kind = rng.choice(
        np.array([VIEW, PURCHASE, TICKET, ERROR], dtype=np.int8),
        size=user.size,
        p=[0.86, 0.08, 0.03, 0.03],
    )
    minutes = np.where(kind == VIEW, rng.gamma(2.0, 4.0, user.size), 0.0).astype(np.float32)
    amount = np.where(kind == PURCHASE, rng.lognormal(3.5, 0.6, user.size), 0.0)
    return Activity(
        user=user,
        ts=ts,
        kind=kind,
        minutes=minutes,
        amount=amount.astype(np.float32),
        signup=now - rng.uniform(days, 900, users) * DAY,
        plan=rng.choice(np.array([0, 1, 2], dtype=np.int8), size=users, p=[0.6, 0.3, 0.1]),
        mobile=rng.beta(2.0, 2.0, users).astype(np.float32),
    )


def _count(users: int, index: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=users).astype(np.float64)


def feature_snapshot(activity: Activity, users: int, at: float) -> np.ndarray:
    """The feature vectors of every user as of ``at`` (rows in user order, ``FEATURES``).

    Only events before ``at`` count: 7-day and 30-day windows, recency, tenure and the
    static attributes of each user.
    """
    a = activity
    seen = a.ts < at
    in7 = seen & (a.ts >= at - 7 * DAY)
    in30 = seen & (a.ts >= at - 30 * DAY)
    view, purchase = a.kind == VIEW, a.kind == PURCHASE
    sessions_7d = _count(users, a.user[in7 & view])
    minutes_7d = _count(users, a.user[in7 & view], a.minutes[in7 & view])
    views_30d = _count(users, a.user[in30 & view])
    minutes_30d = _count(users, a.user[in30 & view], a.minutes[in30 & view])
    purchases_30d = _count(users, a.user[in30 & purchase])
    spend_30d = _count(users, a.user[in30 & purchase], a.amount[in30 & purchase])
    tickets_30d = _count(users, a.user[in30 & (a.kind == TICKET)])
    errors_7d = _count(users, a.user[in7 & (a.kind == ERROR)])
    last = np.full(users, -np.inf)
    np.maximum.at(last, a.user[seen], a.ts[seen])
    days_since_last = np.clip((at - last) / DAY, 0.0, 60.0)
    day_index = np.floor(a.ts[in30] / DAY).astype(np.int64)
    pairs = np.unique(a.user[in30].astype(np.int64) * 1_000_000 + day_index)
    active_days_30d = _count(users, (pairs // 1_000_000).astype(np.int64))
    columns = [
        sessions_7d, minutes_7d, views_30d, minutes_30d, purchases_30d, spend_30d,
        tickets_30d, errors_7d, days_since_last, active_days_30d,
        spend_30d / np.maximum(purchases_30d, 1.0),
        minutes_7d / np.maximum(sessions_7d, 1.0),
        sessions_7d / (views_30d / 4.0 + 1.0),
        (at - a.signup) / DAY,
        a.plan.astype(np.float64),
        a.mobile.astype(np.float64),
    ]  # fmt: skip
    return np.column_stack(columns).astype(np.float32)


def churn_labels(rng: np.random.Generator, features: np.ndarray) -> np.ndarray:
    """Whether each user churns: a noisy logistic function of (some of) the features."""
    x = features.astype(np.float64)
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    col = FEATURES.index
    logit = (
        -1.2
        - 0.9 * z[:, col("sessions_7d")]
        + 1.1 * z[:, col("days_since_last")]
        + 0.6 * z[:, col("tickets_30d")]
        + 0.5 * z[:, col("errors_7d")]
        - 0.5 * z[:, col("spend_30d")]
        - 0.7 * z[:, col("trend_7d_30d")]
        - 0.3 * z[:, col("tenure_days")]
    )
    return rng.random(x.shape[0]) < 1.0 / (1.0 + np.exp(-logit))


def traffic(
    rng: np.random.Generator, n: int, start: float, end: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` prediction requests between ``start`` and ``end``, busier in daytime.

    Returns:
        ``(ts_ns, latency_ms, cached)``: epoch nanoseconds (sorted), latency of each
        request in milliseconds, and whether it was answered from the cache.
    """
    hours = (end - start) / 3600.0
    # A daily cycle: accept a uniform draw with a probability that follows the hour of day.
    draws = rng.uniform(start, end, int(n * 2.2) + 16)
    hour = (draws % DAY) / 3600.0
    keep = rng.random(draws.size) < 0.55 + 0.45 * np.sin((hour - 8.0) / 24.0 * 2.0 * np.pi)
    ts = np.sort(draws[keep][:n]) if hours > 0 else np.full(n, start)
    if ts.size < n:  # rare: top up uniformly
        ts = np.sort(np.concatenate([ts, rng.uniform(start, end, n - ts.size)]))
    cached = rng.random(n) < 0.7
    latency = np.where(cached, rng.gamma(2.0, 1.5, n), rng.gamma(3.0, 12.0, n))
    return (ts * 1e9).astype(np.int64), latency.astype(np.float64), cached

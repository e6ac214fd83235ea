"""examples/realtime_analytics.py against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


def test_stream_counters_alert_and_downsampling(
    load_example: Callable[[str], ModuleType], redis_server: Any, unique: str
) -> None:
    example = load_example("realtime_analytics")
    summary = example.main(f"{redis_server.url}?key_prefix=t{unique}", events=8000,
                           max_length=2000, error_threshold=40, verbose=False)  # fmt: skip

    assert summary["events"] == 8080  # 8000 + the burst of 80 errors
    stream = summary["stream"]
    assert 2000 <= stream["length"] < 3000  # MAXLEN ~ keeps a little more than asked
    assert stream["trimmed"] == 8080 - stream["length"]

    assert summary["alerts"], "the error burst fires the alert"
    assert {a["metric"] for a in summary["alerts"]} == {"metric:error"}
    assert all(a["value"] >= 40 for a in summary["alerts"])

    windows = summary["counters"]["page_view"]
    assert set(windows) == {"realtime", "hourly", "daily"}
    # tumbling windows restart at hour and day boundaries, so no order between them holds
    assert windows["realtime"] > 0 and windows["hourly"] > 0 and windows["daily"] > 0

    down = summary["downsampling"]
    assert down["hourly_total"] == pytest.approx(down["raw_total"], rel=1e-9)
    assert down["buckets"]["1m"] == down["minutes"] and down["buckets"]["1h"] == down["hours"]
    assert summary["consumer"] == {"read": 100, "acked": 100, "pending": 0}


def test_leaves_nothing_behind(
    load_example: Callable[[str], ModuleType], redis_server: Any, unique: str
) -> None:
    example = load_example("realtime_analytics")
    example.main(f"{redis_server.url}?key_prefix=t{unique}", events=500, verbose=False)
    client = redis_server.client()
    try:
        left = [k.decode() for k in client.scan_iter(f"t{unique}:*")]
    finally:
        client.close()
    assert all(":c:" in key or ":al:" in key for key in left), left  # counters expire

"""A counter alert reaches Prefect as an event that automations can match."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter
from prefect.events.worker import EventsWorker

from prefect_memory.analytics import Alert, Counter
from prefect_memory.analytics.alerts import EVENT_NAME


def _read_events(resource_id: str, since: dt.datetime, timeout: float = 30.0) -> list[Any]:
    """The events about ``resource_id`` stored by the Prefect API (waits for persistence)."""
    flt = EventFilter(occurred=EventOccurredFilter(since=since),
                      resource=EventResourceFilter(id=[resource_id]))  # fmt: skip
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            events = client.read_events(filter=flt, limit=10).events
            if events or time.monotonic() > deadline:
                return events
            time.sleep(0.25)


def test_a_crossed_threshold_is_a_prefect_event(redis_server: Any) -> None:
    metric = f"metric:error:{uuid.uuid4().hex[:8]}"
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    counter = Counter(redis_server.url, {"realtime": {"size": 60, "slide": 10}},
                      alerts=[Alert("metric:error:*", threshold=3, op=">=", window="realtime")],
                      key_prefix=f"t{uuid.uuid4().hex[:8]}")  # fmt: skip
    now = time.time()
    for _ in range(4):
        counter.incr(metric, 1, at=now)
    EventsWorker.drain_all()
    events = _read_events(f"prefect-memory.metric.{metric}", since)
    assert len(events) == 1, events  # fired once for the window, not on every update after
    event = events[0]
    assert event.event == EVENT_NAME
    assert event.resource.id == f"prefect-memory.metric.{metric}"
    assert event.resource["prefect-memory.alert"] == "metric:error:* >= 3 over realtime"
    assert event.payload["value"] == 3.0 and event.payload["threshold"] == 3.0
    assert event.payload["op"] == ">=" and event.payload["window"] == "realtime"

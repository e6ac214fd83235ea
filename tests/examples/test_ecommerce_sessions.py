"""examples/ecommerce_sessions.py against a real Redis and the MongoDB wire server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.mongodb, pytest.mark.timeout(120)]


def test_ecommerce_scenario(
    load_example: Callable[[str], ModuleType], redis_server: Any, mongo_server: Any,
    unique: str, tmp_path: Path,
) -> None:  # fmt: skip
    example = load_example("ecommerce_sessions")
    joiner = "&" if "?" in mongo_server.url else "?"
    mongo_url = f"{mongo_server.url}{joiner}collection=c{unique}"
    summary = example.main(
        f"{redis_server.url}?key_prefix=t{unique}", mongo_url, workdir=tmp_path, users=3,
        views=40, verbose=False,
    )  # fmt: skip

    sessions = summary["sessions"]
    assert sessions["open"] == 3 and sessions["ttl_seconds"] == 1800
    assert sessions["sliding"] is True  # a read pushed the expiry
    assert sessions["logged_out"] == 1

    products = summary["products"]
    assert products["ttl_seconds"] == 300  # the config's products.ttl (the tutorial's cache.ttl)
    assert products["invalidated"] == 1
    assert products["price_after"] == products["price_before"] + 10  # reloaded, not stale
    assert products["catalog_loads"] <= 21  # 20 products + p3 once more after the change
    assert products["cache_hits"] > products["catalog_loads"]

    carts = summary["carts"]
    assert carts["in_mongodb"] == carts["carts"] == 3  # persisted to the durable store
    assert carts["recovered_after_redis_loss"] is True
    assert carts["back_in_redis"] is True  # the miss repopulated the primary
    assert carts["ttl_seconds"] == 86400

    orders = summary["orders"]
    assert (orders["placed"], orders["paid"], orders["pending"]) == (4, 2, 2)
    assert orders["of_first_user"] == 2 and orders["oldest_first"] is True
    assert orders["carts_left"] == []


def test_orders_live_in_mongodb(
    load_example: Callable[[str], ModuleType], redis_server: Any, mongo_server: Any,
    unique: str, tmp_path: Path,
) -> None:  # fmt: skip
    example = load_example("ecommerce_sessions")
    collection = f"c{unique}"
    example.main(f"{redis_server.url}?key_prefix=t{unique}",
                 f"{mongo_server.url}&collection={collection}", workdir=tmp_path, users=2,
                 views=10, verbose=False)  # fmt: skip
    client = mongo_server.client()
    try:
        docs = list(client[mongo_server.database][collection].find({"ns": "orders"}, {"g": 1}))
    finally:
        client.close()
    assert len(docs) == 3
    assert all(any(tag.startswith("userId:") for tag in d["g"]) for d in docs)

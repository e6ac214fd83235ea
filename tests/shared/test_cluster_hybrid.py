"""A hybrid memory whose primary is a Redis Cluster: a refill overtaken by a delete is
taken back (compare-and-delete on the slot's primary), in layouts 1 and 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from hybrid_races import check_refill_overtaken_by_delete

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("strategy", ["write-through", "write-behind"])
def test_a_refill_overtaken_by_a_delete_is_taken_back_on_a_cluster(
    store: dict[str, Any], strategy: str, tmp_path: Path
) -> None:
    primary = pm.open_backend(store["url"], **store["options"])
    secondary = pm.open_backend(f"sqlite:///{tmp_path}/secondary.db")
    try:
        check_refill_overtaken_by_delete(primary, secondary, strategy, str(tmp_path / "j.db"))
    finally:
        primary.close()
        secondary.close()

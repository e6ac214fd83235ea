"""examples/safe_results.py: JSON results in a signed SQLite block, under prefect_test_harness."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(240)


def test_safe_results_refuses_a_foreign_record(
    load_example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    example = load_example("safe_results")
    summary = example.main(str(tmp_path / "results.db"), prefect_api="harness", verbose=False)

    assert summary["runs"] == ["Completed", "Cached", "Completed", "Cached"]
    assert summary["calls"] == 2  # computed, hit, refused then recomputed, hit
    assert summary["stored_as"] == {"signed": True, "serializer": "json"}
    assert summary["refused"] == "ResultSignatureError"
    assert summary["marker_created"] is False

"""Stores for the validation tests: ``open_mem(backend, namespace=..., **options)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conftest import make_opener


@pytest.fixture
def open_mem(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[..., Any]:
    return make_opener(request, tmp_path, "records")

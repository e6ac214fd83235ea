"""Fixtures of the examples' tests: the examples loaded by path, one Prefect API.

The examples are scripts in ``examples/`` (not a package); each test loads the one it
runs. The flows share one temporary Prefect API (the demo's own
:class:`~prefect_memory.demo.prefect_api.TemporaryPrefectAPI`) for the session.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def load_example() -> Callable[[str], ModuleType]:
    """``load_example("ml_pipeline")``: the module ``examples/ml_pipeline.py``."""

    def _load(name: str) -> ModuleType:
        module_name = f"pm_example_{name}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module

    return _load


@pytest.fixture
def unique() -> str:
    """A short random token, to keep each test's keys apart on the shared servers."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A temporary Prefect API for the session (``PREFECT_API_URL`` points at it)."""
    from prefect_memory.demo.prefect_api import TemporaryPrefectAPI

    api = TemporaryPrefectAPI(tmp_path_factory.mktemp("prefect-api") / "prefect.db")
    api.start(background=False)
    try:
        with api.active() as url:
            yield url
    finally:
        api.stop()

"""Fixtures of the docs snippet runner: one Prefect API for the pages that need one.

The servers (Redis, MongoDB wire server, SeaweedFS S3) come from ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="pm-docs-prefect-home-"))


@pytest.fixture(scope="session")
def docs_prefect_api() -> Iterator[None]:
    """A temporary Prefect API (``prefect_test_harness``), started by the first page that
    needs one and shared by the others."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield

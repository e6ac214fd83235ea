"""Packaging fixtures: a real ``prefect server`` whose block types the tests read back.

The tests of this folder are marked ``packaging`` (select them with ``-m packaging``).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import load_ui_helper


class PrefectApi:
    """A started ``prefect server``: its URL, a client environment, block types read back."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.api_url: str = server.api_url

    def env(self) -> dict[str, str]:
        """Environment for a client of this server (own PREFECT_HOME, no other PREFECT_*)."""
        return self.server.env()

    def block_types(self) -> dict[str, str]:
        """Block type slug -> id, read back from the server's API."""
        return {t["slug"]: t["id"] for t in self.server.post("/block_types/filter", {})}

    def delete_block_type(self, slug: str) -> None:
        block_type_id = self.block_types()[slug]
        request = urllib.request.Request(f"{self.api_url}/block_types/{block_type_id}",
                                         method="DELETE")  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 204, answer.read()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectApi]:
    """``prefect server start`` (own PREFECT_HOME, free loopback port), stopped afterwards."""
    server = load_ui_helper().PrefectServer(tmp_path_factory.mktemp("packaging-prefect-home"))
    try:
        server.start(timeout=180)
    except RuntimeError as err:
        pytest.fail(f"prefect server start failed: {err}", pytrace=False)
    yield PrefectApi(server)
    server.stop()

"""Every registered memory block passes Prefect's own ``BlockStandardTestSuite``.

The suite checks a description, a documentation URL, a description ending with a period on
every field, a code example that imports the block and loads ``"BLOCK_NAME"``, and a square
logo between 46 and 999 pixels that ``urlopen`` can fetch. The tests run offline, so here
``urlopen`` answers the logo's URL with the PNG the package holds (``LOGO_PNG``, which the
documentation site serves from ``docs/img``: checked below). The other tests keep what the
suite assumes true: it covers every block class the package registers, each documentation
URL names a heading of docs/blocks.md, and Prefect's API takes the URLs as they are.
"""

from __future__ import annotations

import inspect
import io
import pkgutil
import re
from abc import ABC
from pathlib import Path
from typing import Any

import markdown
import pytest
import yaml
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import BlockType
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect.testing.standard_test_suites import blocks as suite_module
from pydantic import ValidationError

import prefect_memory.blocks as blocks_package
from prefect_memory.blocks import BLOCKS
from prefect_memory.blocks.base import (
    BLOCKS_DOCS_URL,
    DOCS_BASE_URL,
    LOGO_PATH,
    LOGO_PNG,
    LOGO_URL,
    MemoryBlock,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


class TestMemoryBlocks(BlockStandardTestSuite):
    @pytest.fixture(params=BLOCKS, ids=lambda cls: cls.__name__)
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        return request.param

    def test_has_a_valid_image(self, block: type[Block], monkeypatch: pytest.MonkeyPatch) -> None:
        def offline_urlopen(url: str) -> io.BytesIO:
            assert url == LOGO_URL, f"{block.__name__}: the logo is {url}, not {LOGO_URL}"
            return io.BytesIO(LOGO_PNG)

        monkeypatch.setattr(suite_module, "urlopen", offline_urlopen)
        monkeypatch.setattr(suite_module, "HAS_PIL", True)
        super().test_has_a_valid_image(block)


def registered_block_classes() -> set[type[Block]]:
    """What ``prefect block register -m prefect_memory.blocks`` (and the server) registers:
    every concrete Block class of the package, found by walking its modules."""
    found: set[type[Block]] = set()
    for info in pkgutil.iter_modules(blocks_package.__path__, "prefect_memory.blocks."):
        module = __import__(info.name, fromlist=["_"])
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, Block)
                and obj.__module__.startswith("prefect_memory.")
                and ABC not in obj.__bases__
                and obj is not MemoryBlock
            ):
                found.add(obj)
    return found


def test_the_suite_covers_every_registered_block() -> None:
    assert registered_block_classes() == set(BLOCKS)
    assert len(BLOCKS) == 9


def test_documentation_urls_name_headings_of_the_blocks_page() -> None:
    html = markdown.markdown(
        (DOCS / "blocks.md").read_text(), extensions=["toc", "fenced_code", "tables"]
    )
    anchors = set(re.findall(r'<h[1-6] id="([^"]+)"', html))
    for cls in BLOCKS:
        url = str(cls._documentation_url)
        assert url == f"{BLOCKS_DOCS_URL}#{cls.get_block_type_slug()}"
        assert cls.get_block_type_slug() in anchors, f"docs/blocks.md: no heading for {url}"


def test_the_docs_base_url_is_the_site_url_of_mkdocs() -> None:
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    site_url = config.get("site_url")
    if site_url:  # none yet: DOCS_BASE_URL is where the site is to be published
        assert site_url.rstrip("/") + "/" == DOCS_BASE_URL


def test_the_logo_is_the_packaged_png_and_docs_ship_it() -> None:
    assert LOGO_URL == DOCS_BASE_URL + LOGO_PATH
    assert LOGO_PNG.startswith(b"\x89PNG\r\n\x1a\n")
    shipped = DOCS / LOGO_PATH
    assert shipped.is_file(), f"write prefect_memory.blocks.base.LOGO_PNG to {shipped}"
    assert shipped.read_bytes() == LOGO_PNG


def test_prefect_refuses_a_data_url_logo() -> None:
    """Why the logo is not a ``data:`` URL: Prefect's client types ``logo_url`` as HttpUrl.

    The server would store it (its schema takes any string), but the client refuses to
    build or read a block type with it, so registering or loading the block would fail.
    If Prefect lifts this, the logo can become a ``data:`` URL that renders offline.
    """
    with pytest.raises(ValidationError, match="URL scheme should be 'http' or 'https'"):
        BlockType(name="x", slug="x", logo_url="data:image/png;base64,iVBORw0KGgo=")


def test_the_api_registers_the_urls_as_they_are() -> None:
    for cls in BLOCKS:
        cls.register_type_and_schema()
    with get_client(sync_client=True) as client:
        for cls in BLOCKS:
            block_type = client.read_block_type_by_slug(cls.get_block_type_slug())
            assert str(block_type.logo_url) == LOGO_URL
            assert str(block_type.documentation_url) == str(cls._documentation_url)

"""The memory blocks in a real Prefect server and its UI, rendered by headless Chromium.

One ``prefect server start`` for the module (about 10 s to get healthy here). Chromium is
installed by ``scripts/install-servers.sh chromium`` when missing; if that is impossible
(no apt, no root) the tests FAIL with the installer's output, they are never skipped.
Deselect them with ``-m "not ui"``.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import load_ui_helper
from prefect_memory.blocks import BLOCKS, HybridMemoryBlock, TieredMemoryBlock

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
MEMORY_BLOCKS = {cls.get_block_type_slug(): cls for cls in BLOCKS}


ui = load_ui_helper()


def _run(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a console script of this virtualenv against the test server."""
    command = [str(Path(sys.executable).with_name(args[0])), *args[1:]]
    return subprocess.run(
        command, env=server.env(), capture_output=True, text=True, timeout=180,
        stdin=subprocess.DEVNULL, cwd=server.home,
    )  # fmt: skip


def test_server_registers_the_blocks_on_start_with_description_and_example(server: Any) -> None:
    # Nothing registered them but the server itself, through the prefect.collections entry point.
    types = {t["slug"]: t for t in server.post("/block_types/filter", {})}
    assert set(MEMORY_BLOCKS) <= set(types), server.log_tail()
    assert not {"composedblock", "memoryblock", "fileblock"} & set(types)  # no base classes
    for slug, cls in MEMORY_BLOCKS.items():
        block_type = types[slug]
        assert block_type["name"] == cls.get_block_type_name()
        assert block_type["description"] == cls.get_description()
        assert f"{cls.__name__}.load(" in block_type["code_example"]
    schemas = server.post(
        "/block_schemas/filter",
        {"block_schemas": {"block_type_id": {"any_": [types["hybrid-memory"]["id"]]}}},
    )
    references = schemas[0]["fields"]["block_schema_references"]
    assert {ref["block_type_slug"] for ref in references["primary"]} == {
        "redis-memory", "mongodb-memory", "s3-memory", "json-memory", "sqlite-memory",
        "in-process-memory", "parquet-archive-memory",
    }  # fmt: skip


def test_cli_registers_and_creates_blocks_on_the_real_server(server: Any) -> None:
    registered = _run(server, "prefect-memory", "blocks", "register")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert f"Registered {len(BLOCKS)} block types" in registered.stdout
    # the same with Prefect's own command
    prefect = _run(server, "prefect", "block", "register", "-m", "prefect_memory.blocks")
    assert prefect.returncode == 0, prefect.stdout + prefect.stderr
    assert f"Successfully registered {len(BLOCKS)} blocks" in prefect.stdout

    config = server.home / "shop.json"
    config.write_text(json.dumps({"memory": {
        "backend": "hybrid", "namespace": "carts",
        "primary": {"type": "memory"}, "secondary": {"type": "sqlite", "location": "shop.db"},
    }}))  # fmt: skip
    created = _run(server, "prefect-memory", "blocks", "create", str(config))
    assert created.returncode == 0, created.stdout + created.stderr
    document = server.get("/block_types/slug/hybrid-memory/block_documents/name/shop")
    # The parts were saved first: the server holds them as references, shown so in the UI.
    references = document["block_document_references"]
    assert {name: ref["block_document"]["name"] for name, ref in references.items()} == {
        "primary": "shop-primary",
        "secondary": "shop-secondary",
    }
    assert document["data"]["namespace"] == "carts"


def test_block_catalog_shows_the_blocks_in_headless_chromium(
    server: Any, chromium_path: str, tmp_path: Path
) -> None:
    catalog = server.url + "/blocks/catalog"
    dom = ui.chromium(chromium_path, catalog)
    assert "Blocks" in dom and "Catalog" in dom, dom[:2000]
    for cls in BLOCKS:  # every card is rendered by the UI's JavaScript from the API
        assert cls.get_block_type_name() in dom, f"{cls.get_block_type_name()} not in the catalog"

    types = server.post("/block_types/filter", {})
    shot = tmp_path / "block-catalog.png"
    ui.chromium(chromium_path, catalog, screenshot=shot, window=ui.catalog_window(len(types)))
    data = shot.read_bytes()
    assert ui.png_size(data) == ui.catalog_window(len(types))
    # An unstyled or empty page is a few tens of kB; the rendered catalog is far larger.
    assert len(data) > 300_000, f"{shot}: only {len(data)} bytes"


@pytest.mark.parametrize("cls", [HybridMemoryBlock, TieredMemoryBlock], ids=lambda c: c.__name__)
def test_block_type_page_shows_the_code_example(
    server: Any, chromium_path: str, cls: type[Any]
) -> None:
    url = f"{server.url}/blocks/catalog/{cls.get_block_type_slug()}"
    for attempt in range(5):  # the example is highlighted after the page loads: on a busy
        # machine a dump can come before it (each attempt lets the page's timers run longer)
        dom = ui.chromium(chromium_path, url, virtual_time_ms=10_000 * (attempt + 1))
        text = html.unescape(re.sub(r"<[^>]+>", "", dom))
        if f"{cls.__name__}.load(" in text:
            break
    assert cls.get_block_type_name() in text
    assert cls.get_description() in text
    assert f"from prefect_memory.blocks import {cls.__name__}" in text
    assert f"{cls.__name__}.load(" in text
    assert "&gt;" not in text and "&lt;" not in text  # nothing shown escaped

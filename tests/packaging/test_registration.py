"""`prefect block register -m prefect_memory` registers every memory block; imports stay cheap.

Prefect's CLI walks the module with ``inspect.getmembers`` (``dir()`` then ``getattr``), so
the package lists the blocks in ``dir()`` and loads them on access, without importing Prefect
on ``import prefect_memory``.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.blocks.core import Block

import prefect_memory
from prefect_memory.blocks import BLOCKS

pytestmark = pytest.mark.packaging

PREFECT = str(Path(sys.executable).with_name("prefect"))


def test_import_lists_the_blocks_without_importing_prefect() -> None:
    probe = (
        "import json, sys, prefect_memory as pm\n"
        "names = dir(pm)\n"
        "print(json.dumps({'prefect': 'prefect' in sys.modules, 'names': names}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["prefect"] is False
    assert {"RedisMemory", "SqliteMemory", "HybridMemoryBlock"} <= set(seen["names"])


def test_the_package_exposes_every_block_and_the_engines_keep_their_names() -> None:
    found = {
        cls
        for _, cls in inspect.getmembers(prefect_memory)
        if cls is not None and Block.is_block_class(cls)
    }
    assert set(BLOCKS) <= found, f"not reachable from prefect_memory: {set(BLOCKS) - found}"
    assert found - set(BLOCKS) == set()
    assert {prefect_memory.HybridMemoryBlock, prefect_memory.TieredMemoryBlock} <= set(BLOCKS)
    assert not Block.is_block_class(prefect_memory.HybridMemory)  # the engine, unchanged


@pytest.mark.parametrize("module", ["prefect_memory", "prefect_memory.blocks"])
def test_block_register_module_prefect_memory_registers_every_block(prefect_api, module) -> None:
    slugs = {cls.get_block_type_slug() for cls in BLOCKS}
    # The server registered them by itself at start (prefect.collections entry point):
    # delete them, so only the command under test can bring them back.
    for slug in slugs:
        prefect_api.delete_block_type(slug)
    assert slugs.isdisjoint(prefect_api.block_types())

    done = subprocess.run(
        [PREFECT, "block", "register", "-m", module],
        env=prefect_api.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Successfully registered {len(BLOCKS)} blocks" in done.stdout, done.stdout
    assert slugs <= set(prefect_api.block_types())

    listed = subprocess.run(
        [PREFECT, "block", "type", "ls"],
        env={**prefect_api.env(), "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for slug in slugs:
        assert slug in listed.stdout

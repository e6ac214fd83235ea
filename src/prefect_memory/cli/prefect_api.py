"""What the command asks of the Prefect API: its URL, and saved memory blocks by name.

Prefect is imported here on first use only, so ``prefect-memory --help`` and ``info URL``
start without it. An unreachable API is not handled here: its HTTP error reaches
:func:`prefect_memory.cli.failures.report`, which names the API URL.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import MissingDependencyError
from ..urls import redact_url
from .app import console
from .failures import USAGE, CommandError


def prefect_module(name: str, what: str) -> Any:
    """Import ``name`` (a Prefect module) for ``what``, or say that Prefect is missing."""
    try:
        with console(stderr=True).status("Loading Prefect..."):
            return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependencyError(
            f"{what} needs Prefect, which cannot be imported ({err}); "
            "install it with: pip install prefect"
        ) from err


def api_url() -> str:
    """The Prefect API this process talks to, for messages and table titles."""
    settings = prefect_module("prefect.settings", "the Prefect API")
    url = settings.PREFECT_API_URL.value()
    return redact_url(url) if url else "the ephemeral Prefect API (PREFECT_API_URL is not set)"


def load_memory_block(slug: str) -> Any:
    """The saved memory block ``type-slug/name``.

    Raises:
        CommandError: No such block in the API (exit 1), or it is not a memory block (2).
        MissingDependencyError: Prefect cannot be imported.
    """
    core = prefect_module("prefect.blocks.core", f"loading the saved block {slug!r}")
    exceptions = prefect_module("prefect.exceptions", "the Prefect API")
    with console(stderr=True).status(f"Loading the block {slug}..."):
        try:
            block = core.Block.load(slug)
        except ValueError as err:
            if not isinstance(err.__cause__, exceptions.ObjectNotFound):
                raise CommandError(f"{slug}: {err}", USAGE) from err
            raise CommandError(
                f"no block {slug!r} in {api_url()} (`prefect block ls` lists the saved blocks)"
            ) from err
    from ..blocks import MemoryBlock

    if not isinstance(block, MemoryBlock):
        raise CommandError(f"{slug} is a {type(block).__name__}, not a prefect-memory block", USAGE)
    return block

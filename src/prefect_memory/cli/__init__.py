"""The ``prefect-memory`` command: blocks from a config, block registration, store info.

- ``prefect-memory blocks create CONFIG [--name-prefix X] [--overwrite]``: save the blocks a
  tutorial config describes (one store, hybrid, tiers, namespaces) in the Prefect API;
- ``prefect-memory blocks register``: register the memory block types with the Prefect API;
- ``prefect-memory info TARGET``: ping a store and count its entries; TARGET is a URL
  (``redis://...``), a saved block (``redis-memory/sessions``) or a config file;
- ``prefect-memory serve CONFIG``: serve the maintenance flows on the config's schedules;
- ``prefect-memory plot URL NAME OUT``: a time series, raw against downsampled, to a PNG.

Every failure ends in one line on stderr, ``error: ...``, and a non-zero exit code (2: the
input must change, 1: it failed, 130: interrupted), never a traceback: see
:mod:`prefect_memory.cli.failures`. Prefect is imported only by what needs it, so
``prefect-memory --help`` and ``prefect-memory info URL`` start fast.

Layout: ``app.py`` (the typer apps and where failures end), ``failures.py`` (exception to
line and exit code), ``prefect_api.py`` (API URL, saved blocks), ``targets.py`` (what
``info`` opens), one module per command group.

Example:
    >>> from typer.testing import CliRunner
    >>> result = CliRunner().invoke(app, ["info", "memory://cli-doc", "-n", "sessions"])
    >>> result.exit_code, "sessions" in result.output
    (0, True)
"""

from __future__ import annotations

# Private names that tests and older code import from ``prefect_memory.cli``.
from ..urls import redact_url as _safe_url
from ..urls import split_credentials as _split_credentials
from . import blocks_command, info_command, serve_command  # noqa: F401 - they add the commands
from .app import app, blocks_app, main
from .failures import CommandError
from .targets import parts as _parts

__all__ = ["CommandError", "_parts", "_safe_url", "_split_credentials", "app", "blocks_app", "main"]

"""The ``prefect-memory`` app, its ``blocks`` group, the consoles, and where failures end.

Every command runs inside :class:`CommandGroup`: whatever it raises (our errors, the
Prefect API's, the file system's, a usage error, Ctrl-C) ends as the one line and the
exit code of :func:`prefect_memory.cli.failures.report`, with the console script and with
typer's ``CliRunner`` alike.

Example:
    >>> from typer.testing import CliRunner
    >>> result = CliRunner().invoke(app, ["info", "nosuch://x"])
    >>> result.exit_code, result.stderr.count("\\n"), result.stderr.startswith("error: ")
    (2, 1, True)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from typer.core import TyperGroup

from .failures import Interrupted, report


class CommandGroup(TyperGroup):
    """A typer group whose commands end, on any failure, in one line (see the module)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:  # typer would exit 130 without a word
            raise Interrupted("interrupted") from err

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:  # the caller handles exceptions itself
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except Exception as err:  # the one place a failure becomes a line and a code
            code = report(err, argv)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="prefect-memory",
    help="Multi-tier memory for Prefect flows: blocks from configs, store info.",
    cls=CommandGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
blocks_app = typer.Typer(
    help="Memory blocks in the Prefect API: create them from a config, register their types.",
    no_args_is_help=True,
)
app.add_typer(blocks_app, name="blocks")


def console(stderr: bool = False) -> Console:
    """A console for tables (stdout) or notes and spinners (stderr)."""
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def progress() -> Progress:
    """A transient progress bar on stderr."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    )


def main() -> None:
    """Run the command (``python -m prefect_memory.cli``; the console script calls ``app``)."""
    app()


from . import upgrade_command  # noqa: E402, F401 - registers ``upgrade`` (needs ``app`` above)

"""``prefect-memory info TARGET``: ping a store and count its entries, per part if composed.

The table goes to stdout, a row per store; when a store fails, its row says how
(``unreachable`` or the error's type) and the command ends in one line naming every
failed store and why: exit code 2 when only the input is at fault (a bad option, a
missing driver), else 1.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import BackendUnavailable, PrefectMemoryError
from ..urls import redact_url
from .app import app, console, progress
from .failures import FAILED, USAGE, CommandError, describe, one_line, scrub, secrets_in
from .targets import open_target, parts


@app.command("info")
def info(
    target: Annotated[
        str, typer.Argument(help="A store URL, a saved block (type/name) or a config file.")
    ],
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Namespace(s) to count (default: the target's)."),
    ] = None,
) -> None:
    """Ping a store and count the live entries of its namespace(s), per part if composed."""
    from ..hybrid import HybridBackend

    secrets = secrets_in([target])
    memories = open_target(target, namespace or [])
    table = Table(title=f"prefect-memory info {redact_url(target)}", title_justify="left")
    for column in ("namespace", "store", "url", "ping", "entries"):
        table.add_column(column, overflow="fold")
    failures: list[str] = []
    codes: set[int] = set()
    with progress() as bar:
        for memory in memories:
            for label, backend in parts(memory):
                url = backend.shown_url or backend.scheme
                task = bar.add_task(f"Counting {memory.namespace} in {label}", total=None)
                try:
                    started = time.perf_counter()
                    backend.ping()
                    ping = f"{(time.perf_counter() - started) * 1000:.1f} ms"
                    count = 0
                    for _key in backend.scan(memory.namespace, None, now=time.time()):
                        count += 1
                        if count % 1000 == 0:
                            bar.update(task, completed=count)
                    entries = str(count)
                except PrefectMemoryError as err:  # the store's answer is a row, not the end
                    unreachable = isinstance(err, BackendUnavailable)
                    ping = "[red]unreachable[/]" if unreachable else f"[red]{type(err).__name__}[/]"
                    entries = "-"
                    where = url if len(memories) == 1 else f"{memory.namespace} {label} {url}"
                    failures.append(f"{where}: {one_line(str(err))}")
                    codes.add(describe(err)[1])
                bar.remove_task(task)
                table.add_row(escape(memory.namespace), escape(label), escape(url), ping, entries)
            if isinstance(memory.backend, HybridBackend):
                pending = memory.backend.backlog()
                table.add_row(escape(memory.namespace), "journal", "-", "-", f"{pending} pending")
    console().print(table)
    if failures:
        count = f"{len(failures)} stores failed: " if len(failures) > 1 else ""
        code = USAGE if codes == {USAGE} else FAILED  # 2 only if the input alone is at fault
        raise CommandError(scrub(count + "; ".join(failures), secrets), code)

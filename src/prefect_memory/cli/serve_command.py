"""``prefect-memory serve CONFIG`` (the maintenance flows on schedules) and ``plot``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import EntryNotFound
from ..urls import split_credentials
from .app import app, console
from .prefect_api import load_memory_block
from .targets import check_url


@app.command("serve")
def serve(
    config: Annotated[Path, typer.Argument(help="A config with a 'maintenance' section.")],
    list_only: Annotated[
        bool, typer.Option("--list", help="List the deployments and their schedules; serve none.")
    ] = False,
) -> None:
    """Serve the maintenance flows with the schedules of a config (interval or cron).

    Each deployment has a concurrency limit of one run (a run due while the previous one
    is still working is cancelled), unless the config's ``concurrency_limit`` says otherwise.
    Before serving, every block the schedules name is loaded from the Prefect API: a block
    that does not exist (or an API that does not answer) stops the command here, not each
    run later.
    """
    from ..flows import deployments_from_config, serve_maintenance

    deployments = deployments_from_config(str(config))
    table = Table(title=escape(f"maintenance deployments of {config}"), title_justify="left")
    for column in ("deployment", "flow", "schedule", "block", "concurrency"):
        table.add_column(column, overflow="fold")
    for deployment in deployments:
        schedule = deployment.schedules[0].schedule if deployment.schedules else None
        when = getattr(schedule, "cron", None) or f"every {getattr(schedule, 'interval', '?')}"
        options = deployment.concurrency_options
        limit = (
            "no limit"
            if deployment.concurrency_limit is None
            else f"{deployment.concurrency_limit}, "
            f"{options.collision_strategy.value if options else 'ENQUEUE'}"
        )
        table.add_row(
            escape(deployment.name),
            escape(deployment.flow_name),
            escape(str(when)),
            escape(deployment.parameters["block"]),
            limit,
        )
    console().print(table)
    if list_only:
        return
    for block in sorted({deployment.parameters["block"] for deployment in deployments}):
        load_memory_block(block)
    serve_maintenance(str(config))


@app.command("plot")
def plot(
    url: Annotated[str, typer.Argument(help="The Redis holding the series (redis://...).")],
    name: Annotated[str, typer.Argument(help="Name of the time series.")],
    out: Annotated[Path, typer.Argument(help="PNG file to write.")],
    start: Annotated[str | None, typer.Option(help="First time shown (ISO or epoch).")] = None,
    end: Annotated[str | None, typer.Option(help="End time, excluded (ISO or epoch).")] = None,
    namespace: Annotated[str, typer.Option(help="Namespace of the analytics keys.")] = "analytics",
    key_prefix: Annotated[str | None, typer.Option(help="Redis key prefix.")] = None,
) -> None:
    """Plot a time series, raw points against its downsampled resolutions, to a PNG."""
    from ..analytics.plot import plot_series

    check_url(split_credentials(url)[0])  # the password may hold '/', '?', '#', '@' or '['
    options = {"key_prefix": key_prefix} if key_prefix else {}
    try:
        path = plot_series(url, name, out, start, end, namespace=namespace, **options)
    except EntryNotFound:
        raise
    except KeyError as err:  # TimeSeries.open raises a bare KeyError for a missing series
        raise EntryNotFound(err.args[0] if err.args else f"no time series {name!r}") from err
    console().print(f"wrote {escape(str(path))}", markup=True)

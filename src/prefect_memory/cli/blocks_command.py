"""``prefect-memory blocks create CONFIG`` and ``prefect-memory blocks register``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .app import blocks_app, console, progress
from .failures import USAGE, CommandError
from .prefect_api import api_url, prefect_module

if TYPE_CHECKING:
    from ..blocks import ConfigBlocks, MemoryBlock


def _store(block: MemoryBlock) -> str:
    """What a block points at, for tables."""
    from ..blocks import HybridMemoryBlock, TieredMemoryBlock
    from ..urls import redact_url

    if isinstance(block, HybridMemoryBlock):
        return f"{block.strategy}: primary + secondary"
    if isinstance(block, TieredMemoryBlock):
        return "tiers: " + ", ".join(t.name for t in block.tiers)
    return redact_url(block._memory_url())


def _references(block: MemoryBlock, names: dict[int, str]) -> str:
    found = block.parts()
    return ", ".join(f"{role}={names.get(id(part), '(inline)')}" for role, part in found.items())


def _connections(items: list[str]) -> dict[str, str]:
    connections: dict[str, str] = {}
    for item in items:
        kind, sep, url = item.partition("=")
        if not sep or not kind or not url:
            raise CommandError(f"--connection takes KIND=URL, got {item!r}", USAGE)
        connections[kind.strip().lower()] = url.strip()
    return connections


@blocks_app.command("create")
def blocks_create(
    config: Annotated[Path, typer.Argument(help="JSON config file (the tutorial's shapes).")],
    name_prefix: Annotated[
        str | None,
        typer.Option("--name-prefix", "-p", help="Block name (prefix); default: file name."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace blocks already saved with these names.")
    ] = False,
    connection: Annotated[
        list[str] | None,
        typer.Option(
            "--connection", "-c", help="KIND=URL for stores the config names without one."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the blocks without saving them.")
    ] = False,
) -> None:
    """Save the blocks a config describes (parts first, then the blocks that use them)."""
    connections = _connections(connection or [])
    prefect_module("prefect.blocks.core", "blocks create")
    with console(stderr=True).status("Reading the config..."):
        from ..blocks import blocks_from_config
        from ..blocks.from_config import default_prefix

        prefix = name_prefix or default_prefix(config)
        plan = blocks_from_config(config, name_prefix=prefix, connections=connections)
    err_console = console(stderr=True)
    for note in plan.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", markup=True)
    if not plan.blocks:
        console().print(f"{config}: the config describes no memory block, nothing to save")
        return
    if dry_run:
        console().print(_blocks_table(plan, "Blocks to save (dry run)"))
        return
    api = api_url()
    if not overwrite:
        taken = plan.conflicts()
        if taken:
            raise CommandError(
                f"already saved in {api}: {', '.join(taken)} (use --overwrite to replace)"
            )
    with progress() as bar:
        task = bar.add_task("Saving blocks", total=len(plan.blocks))

        def advance(name: str, block: MemoryBlock) -> None:
            bar.update(task, advance=1, description=f"Saved {name}")

        plan.save(overwrite=overwrite, progress=advance)
    console().print(_blocks_table(plan, f"Saved {len(plan.blocks)} block(s) in {api}"))


def _blocks_table(plan: ConfigBlocks, title: str) -> Table:
    table = Table(title=escape(title), title_justify="left")
    for column in ("block", "store", "namespace", "ttl", "references"):
        table.add_column(column, overflow="fold")
    names = {id(block): name for name, block in plan.blocks}
    for name, block in plan.blocks:
        table.add_row(
            escape(f"{block.get_block_type_slug()}/{name}"),
            escape(_store(block)),
            escape(block.namespace),
            "-" if block.ttl is None else f"{block.ttl:g}s",
            escape(_references(block, names)),
        )
    return table


@blocks_app.command("register")
def blocks_register() -> None:
    """Register the memory block types (with descriptions and code examples) in the API."""
    prefect_module("prefect.blocks.core", "blocks register")
    from ..blocks import BLOCKS

    api = api_url()
    with progress() as bar:
        task = bar.add_task("Registering block types", total=len(BLOCKS))
        for cls in BLOCKS:
            cls.register_type_and_schema()
            bar.update(task, advance=1, description=f"Registered {cls.__name__}")
    table = Table(title=escape(f"Registered {len(BLOCKS)} block types in {api}"))
    table.title_justify = "left"
    table.add_column("block type")
    table.add_column("slug")
    for cls in BLOCKS:
        table.add_row(escape(cls.get_block_type_name()), cls.get_block_type_slug())
    console().print(table)

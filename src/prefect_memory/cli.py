"""The ``prefect-memory`` command: blocks from a config, block registration, store info.

- ``prefect-memory blocks create CONFIG [--name-prefix X] [--overwrite]``: save the blocks a
  tutorial config describes (one store, hybrid, tiers, namespaces) in the Prefect API;
- ``prefect-memory blocks register``: register the memory block types with the Prefect API;
- ``prefect-memory info TARGET``: ping a store and count its entries; TARGET is a URL
  (``redis://...``), a saved block (``redis-memory/sessions``) or a config file.

Prefect is imported only by what needs it, so ``prefect-memory --help`` and
``prefect-memory info URL`` start fast.

Example:
    >>> from typer.testing import CliRunner
    >>> result = CliRunner().invoke(app, ["info", "memory://cli-doc", "-n", "sessions"])
    >>> result.exit_code, "sessions" in result.output
    (0, True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .errors import BackendUnavailable, PrefectMemoryError
from .urls import SECRET_WORDS, redact_url, split_credentials

if TYPE_CHECKING:
    from .blocks import ConfigBlocks, MemoryBlock
    from .memory import Memory
    from .plugins.base import Backend

app = typer.Typer(
    name="prefect-memory",
    help="Multi-tier memory for Prefect flows: blocks from configs, store info.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
blocks_app = typer.Typer(
    help="Memory blocks in the Prefect API: create them from a config, register their types.",
    no_args_is_help=True,
)
app.add_typer(blocks_app, name="blocks")


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(stderr=True),
        transient=True,
    )


@contextmanager
def _prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL; turn an unreachable API into a clear error."""
    with _console(stderr=True).status("Loading Prefect..."):
        from prefect.settings import PREFECT_API_URL
    api = PREFECT_API_URL.value() or "the ephemeral Prefect API (PREFECT_API_URL is not set)"
    try:
        yield api
    except (typer.Exit, PrefectMemoryError, ValueError):
        raise
    except Exception as err:  # httpx and Prefect client errors: the API is the problem
        raise _fail(f"Prefect API at {api}: {type(err).__name__}: {err}") from err


#: Schemes whose URL password ``info`` hands to the backend as the ``password`` option.
_PASSWORD_SCHEMES = ("redis", "rediss", "mongodb", "mongodb+srv")
_split_credentials = split_credentials
_safe_url = redact_url


def _secret_query(url: str) -> dict[str, str]:
    """The secret query options of ``url``: ``{name: value}``."""
    query = url.partition("?")[2].partition("#")[0]
    return {
        name: value
        for name, value in parse_qsl(query, keep_blank_values=True)
        if any(word in name.lower() for word in SECRET_WORDS)
    }


def _scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (as written, percent-encoded or decoded) masked."""
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret), unquote(secret)}:
            if len(form) >= 3:
                text = text.replace(form, "***")
    return text


def _store(block: MemoryBlock) -> str:
    """What a block points at, for tables."""
    from .blocks import HybridMemory, TieredMemory

    if isinstance(block, HybridMemory):
        return f"{block.strategy}: primary + secondary"
    if isinstance(block, TieredMemory):
        return "tiers: " + ", ".join(t.name for t in block.tiers)
    return _safe_url(block._memory_url())


def _references(block: MemoryBlock, names: dict[int, str]) -> str:
    parts = block.parts()
    return ", ".join(f"{role}={names.get(id(part), '(inline)')}" for role, part in parts.items())


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
    from .blocks.from_config import default_prefix

    connections: dict[str, str] = {}
    for item in connection or []:
        kind, sep, url = item.partition("=")
        if not sep or not kind or not url:
            raise _fail(f"--connection takes KIND=URL, got {item!r}", 2)
        connections[kind.strip().lower()] = url.strip()
    prefix = name_prefix or default_prefix(config)
    with _console(stderr=True).status("Loading Prefect and reading the config..."):
        from .blocks import blocks_from_config

        try:
            plan = blocks_from_config(config, name_prefix=prefix, connections=connections)
        except PrefectMemoryError as err:
            raise _fail(str(err), 2) from None
    err_console = _console(stderr=True)
    for note in plan.notes:
        err_console.print(f"[yellow]note:[/] {note}", markup=True)
    if not plan.blocks:
        _console().print(f"{config}: the config describes no memory block, nothing to save")
        return
    if dry_run:
        _console().print(_blocks_table(plan, "Blocks to save (dry run)"))
        return
    with _prefect_api() as api:
        if not overwrite:
            taken = plan.conflicts()
            if taken:
                raise _fail(
                    f"already saved in {api}: {', '.join(taken)} (use --overwrite to replace)"
                )
        with _progress() as progress:
            task = progress.add_task("Saving blocks", total=len(plan.blocks))

            def advance(name: str, block: MemoryBlock) -> None:
                progress.update(task, advance=1, description=f"Saved {name}")

            plan.save(overwrite=overwrite, progress=advance)
    _console().print(_blocks_table(plan, f"Saved {len(plan.blocks)} block(s) in {api}"))


def _blocks_table(plan: ConfigBlocks, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("block", "store", "namespace", "ttl", "references"):
        table.add_column(column, overflow="fold")
    names = {id(block): name for name, block in plan.blocks}
    for name, block in plan.blocks:
        table.add_row(
            f"{block.get_block_type_slug()}/{name}",
            _store(block),
            block.namespace,
            "-" if block.ttl is None else f"{block.ttl:g}s",
            _references(block, names),
        )
    return table


@blocks_app.command("register")
def blocks_register() -> None:
    """Register the memory block types (with descriptions and code examples) in the API."""
    with _console(stderr=True).status("Loading Prefect..."):
        from .blocks import BLOCKS
    with _prefect_api() as api, _progress() as progress:
        task = progress.add_task("Registering block types", total=len(BLOCKS))
        for cls in BLOCKS:
            cls.register_type_and_schema()
            progress.update(task, advance=1, description=f"Registered {cls.__name__}")
    table = Table(title=f"Registered {len(BLOCKS)} block types in {api}", title_justify="left")
    table.add_column("block type")
    table.add_column("slug")
    for cls in BLOCKS:
        table.add_row(cls.get_block_type_name(), cls.get_block_type_slug())
    _console().print(table)


def _target_options(target: str) -> tuple[str, dict[str, Any]]:
    """A URL target without its password, and the password as the backend's option.

    The backend then never sees the password inside a URL it could misread (a raw ``/``
    in it reads as the end of the host) and echo in an error.
    """
    scheme = target.partition("://")[0].lower()
    if scheme not in _PASSWORD_SCHEMES:
        return target, {}
    url, password = _split_credentials(target)
    if password is None:
        return target, {}
    from pydantic import SecretStr

    return url, {"password": SecretStr(password)}


def _open_target(target: str, namespaces: list[str]) -> list[Memory]:
    """The memories ``info`` looks at: one per namespace."""
    import prefect_memory as pm

    if "://" in target:
        url, options = _target_options(target)
        return [pm.open_memory(url, namespace=ns, **options) for ns in namespaces or ["default"]]
    if target.endswith(".json") or Path(target).is_file():
        built = pm.from_config(target)
        if isinstance(built, pm.Namespaces):
            chosen = namespaces or list(built)
            return [built[ns] for ns in chosen]
        return [built.with_namespace(ns) for ns in namespaces] or [built]
    if target.count("/") == 1:
        with _console(stderr=True).status(f"Loading the block {target}..."):
            from prefect.blocks.core import Block

            with _prefect_api():
                try:
                    block: Any = Block.load(target)
                except ValueError as err:
                    raise _fail(f"{target}: {err}") from None
        memory = block.memory
        return [memory.with_namespace(ns) for ns in namespaces] or [memory]
    raise _fail(f"{target!r} is neither a URL, a config file nor a saved block (type/name)", 2)


def _parts(memory: Memory) -> list[tuple[str, Backend]]:
    """``(label, backend)`` of a memory's stores: one, or each part of a composed one.

    The parts are the named children of the memory's backend (tiers, a hybrid's primary
    and secondary), each as it is (behind its wrapper, if any); a wrapped single store
    is one part.
    """
    from .plugins.base import walk

    parts = [(part.role, part.backend) for part in walk(memory.backend, depth=1) if part.role]
    labels = [(f"tier {role[5:]}" if role.startswith("tier:") else role, b) for role, b in parts]
    return labels or [("store", memory.backend)]


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
    from .hybrid import HybridBackend

    secrets = [*_secret_query(target).values(), *filter(None, [_split_credentials(target)[1]])]
    try:
        memories = _open_target(target, namespace or [])
    except PrefectMemoryError as err:
        raise _fail(_scrub(str(err), secrets), 2) from None
    console = _console()
    table = Table(title=f"prefect-memory info {_safe_url(target)}", title_justify="left")
    for column in ("namespace", "store", "url", "ping", "entries"):
        table.add_column(column, overflow="fold")
    failed = False
    with _progress() as progress:
        for memory in memories:
            for label, backend in _parts(memory):
                url = backend.shown_url or backend.scheme
                task = progress.add_task(f"Counting {memory.namespace} in {label}", total=None)
                try:
                    started = time.perf_counter()
                    backend.ping()
                    ping = f"{(time.perf_counter() - started) * 1000:.1f} ms"
                    count = 0
                    for _key in backend.scan(memory.namespace, None, now=time.time()):
                        count += 1
                        if count % 1000 == 0:
                            progress.update(task, completed=count)
                    entries = str(count)
                except BackendUnavailable as err:
                    failed = True
                    ping, entries = f"[red]unreachable: {escape(_scrub(str(err), secrets))}[/]", "-"
                except PrefectMemoryError as err:  # refused (credentials, ACL, TLS) or bad data
                    failed = True
                    ping, entries = (
                        f"[red]{type(err).__name__}: {escape(_scrub(str(err), secrets))}[/]",
                        "-",
                    )
                progress.remove_task(task)
                table.add_row(memory.namespace, label, url, ping, entries)
            if isinstance(memory.backend, HybridBackend):
                pending = memory.backend.backlog()
                table.add_row(memory.namespace, "journal", "-", "-", f"{pending} pending")
    console.print(table)
    if failed:
        raise typer.Exit(1)


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
    """
    from .flows import deployments_from_config, serve_maintenance

    try:
        deployments = deployments_from_config(str(config))
    except PrefectMemoryError as err:
        raise _fail(str(err), 2) from None
    table = Table(title=f"maintenance deployments of {config}", title_justify="left")
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
            deployment.name,
            deployment.flow_name,
            str(when),
            deployment.parameters["block"],
            limit,
        )
    _console().print(table)
    if not list_only:
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
    from .analytics.plot import plot_series

    options = {"key_prefix": key_prefix} if key_prefix else {}
    try:
        path = plot_series(url, name, out, start, end, namespace=namespace, **options)
    except (PrefectMemoryError, ImportError, ValueError) as err:
        raise _fail(str(err), 2) from None
    _console().print(f"wrote {path}")


def main() -> None:  # pragma: no cover - the console script calls ``app``
    """Run the command (``python -m prefect_memory.cli``)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

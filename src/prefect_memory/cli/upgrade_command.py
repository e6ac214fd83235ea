"""``prefect-memory upgrade URL --namespace NS --to 2 [--buckets B]``: move a Redis namespace
from key layout 1 (one Cluster slot) to layout 2 (spread over hash-tag buckets).

The engine is :func:`prefect_memory.plugins.redis.layout.upgrade`; this command drives it
with a progress bar and prints what it did. Stopped anywhere (Ctrl-C, killed), run it
again: it resumes, and nothing is lost or duplicated.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..urls import redact_url
from .app import app, console, progress
from .failures import USAGE, CommandError


@app.command("upgrade")
def upgrade(
    url: Annotated[str, typer.Argument(help="The Redis store: redis://... or rediss://...")],
    namespace: Annotated[
        list[str], typer.Option("--namespace", "-n", help="Namespace(s) to move.")
    ],
    to: Annotated[int, typer.Option("--to", help="The target layout (2).")] = 2,
    buckets: Annotated[
        int | None,
        typer.Option("--buckets", help="Buckets of the namespace in layout 2 (default 16)."),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", help="Entries per batch.")] = 500,
) -> None:
    """Move Redis namespace(s) to key layout 2 (resumable: run it again after a stop)."""
    from ..plugins.redis import RedisBackend
    from ..plugins.redis.layout import upgrade as run
    from ..registry import open_backend

    backend = open_backend(url)
    if not isinstance(backend, RedisBackend):
        raise CommandError(
            f"upgrade moves Redis namespaces: {redact_url(url)} is not a redis:// store", USAGE
        )
    from ..tiers.moves import TOMBSTONE_NS

    # A tiered memory keeps its tombstones in a companion namespace: it moves with its owner
    # (a layout-2 tiered memory refuses a layout-1 companion).
    names = [name for ns in namespace for name in (ns, ns + TOMBSTONE_NS)]
    out = console()
    try:
        for ns in names:
            shown = ns.replace(TOMBSTONE_NS, " (tombstones)")
            with progress() as bar:
                task = bar.add_task(f"Moving {shown} to layout {to}", total=None)

                def show(
                    event: str, done: int, total: int, task: int = task, ns: str = shown
                ) -> None:
                    if event == "count":
                        bar.update(task, total=total, completed=0)
                    elif event in ("moved", "done"):
                        bar.update(task, completed=done)
                    elif event == "tags":
                        bar.update(task, description=f"Dropping {ns}'s old tag indexes")

                report = run(backend, ns, to=to, buckets=buckets, batch=batch, progress=show)
            if report.already:
                out.print(f"{shown}: already in layout 2 ({report.buckets} buckets), nothing to do")
                continue
            resumed = " (resumed)" if report.resumed else ""
            out.print(
                f"{shown}: layout 2 over {report.buckets} buckets{resumed}: {report.moved} entries "
                f"moved, {report.expired} expired ones dropped, {report.tag_indexes} old tag "
                f"indexes removed in {report.seconds:.1f}s"
            )
    finally:
        backend.close()

"""``python -m prefect_memory.demo``: the command behind ``make demo``.

Starts what the chosen profile needs (a temporary Prefect API, and the servers for
``--profile services``) concurrently, runs :func:`~prefect_memory.demo.pipeline.ml_pipeline`
with progress bars, stops everything it started and prints the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_WORKDIR = ".prefect-memory/demo"


def _prepare_embedded(workdir: Path) -> None:
    """Remove what an earlier embedded run left (the Prefect database is kept)."""
    shutil.rmtree(workdir / "archive", ignore_errors=True)
    for name in ("warm.db", "warm.db-wal", "warm.db-shm"):
        (workdir / name).unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)


def _quiet_prefect() -> None:
    import logging

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.events"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_demo(
    profile: str = "embedded",
    *,
    workdir: str | Path = DEFAULT_WORKDIR,
    sizes: dict[str, int] | None = None,
    prefect_api: str = "temporary",
    console: Any = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the demo end to end and return its summary (with ``wall_seconds``).

    Args:
        profile: ``"embedded"`` (no servers) or ``"services"`` (Redis, MongoDB, S3 started
            here from ``tests/servers.py`` and stopped after).
        workdir: Folder of the embedded stores and of the temporary Prefect database.
        sizes: Overrides of :class:`~prefect_memory.demo.stores.DemoSizes` fields.
        prefect_api: ``"temporary"`` (a local server of our own), ``"current"`` (the
            configured ``PREFECT_API_URL``) or ``"auto"``.
        console: A ``rich`` console for progress bars (``None``: silent).
        verbose: Keep Prefect's own logs (flow and task runs).

    Raises:
        RuntimeError: A server could not start.
    """
    from .prefect_api import TemporaryPrefectAPI, configured_api, wants_temporary
    from .report import Reporter, reporting
    from .stores import DemoConfig, close_all

    if profile not in ("embedded", "services"):
        raise ValueError(f"unknown profile {profile!r} (embedded or services)")
    started = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rep, setup, after = Reporter(console), {}, {}
    with contextlib.ExitStack() as stack:
        api = None
        if wants_temporary(prefect_api):  # starts in the background while we prepare
            api = TemporaryPrefectAPI(workdir / "prefect" / "prefect.db").start()
            stack.callback(api.stop)
        if profile == "services":
            from .services import running_services

            with rep.step("Start Redis, MongoDB (wire server) and S3 (SeaweedFS)", setup):
                svc = stack.enter_context(running_services())
            config = DemoConfig.services(
                svc.redis_url, svc.mongo_url, svc.s3_url, s3_endpoint=svc.s3_endpoint,
                s3_key=svc.s3_key, s3_secret=svc.s3_secret, sizes=sizes or {},
            )  # fmt: skip
        else:
            _prepare_embedded(workdir)
            config = DemoConfig.embedded(workdir, sizes=sizes or {})
        from .pipeline import ml_pipeline  # imports prefect, pandas, pyarrow meanwhile

        if not verbose:
            _quiet_prefect()
        title = "Wait for the Prefect API (started in the background)" if api else "Prefect API"
        with rep.step(title, setup):
            stack.enter_context(api.active() if api is not None else configured_api())
        with reporting(rep):
            flow_started = time.perf_counter()
            summary = ml_pipeline(config)
            overhead = time.perf_counter() - flow_started - sum(summary["steps"].values())
            after["Prefect flow run overhead (outside the steps)"] = round(overhead, 3)
        stopping = time.perf_counter()
        close_all()
    after["Shut down (Prefect API, servers)"] = round(time.perf_counter() - stopping, 3)
    summary["setup"] = {"before": setup, "after": after}
    summary["prefect_api"] = (
        f"a temporary local server (ready {api.startup_seconds:.1f} s after start, "
        "started in the background)" if api is not None and api.startup_seconds
        else "the configured PREFECT_API_URL"
    )  # fmt: skip
    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prefect_memory.demo",
        description="The tutorial's ML pipeline on a tiered memory, as a Prefect flow.",
    )
    parser.add_argument(
        "--profile",
        choices=("embedded", "services"),
        default="embedded",
        help="embedded: no servers (default); services: Redis, MongoDB, S3",
    )
    parser.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        help=f"folder of the embedded stores (default {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--prefect-api",
        choices=("temporary", "current", "auto"),
        default="temporary",
        help="temporary: a local server of our own (default); current: "
        "PREFECT_API_URL; auto: current if set",
    )
    from .stores import SERVICES_USERS, DemoSizes

    for flag, name in (
        ("--users", "users"),
        ("--days", "days"),
        ("--requests", "requests"),
        ("--distinct-users", "distinct_users"),
        ("--events", "backfill_events"),
    ):
        field = DemoSizes.model_fields[name]
        default = f"{field.default}" + (f"; services {SERVICES_USERS}" if name == "users" else "")
        parser.add_argument(
            flag,
            dest=name,
            type=int,
            default=None,
            metavar="N",
            help=f"{field.description.rstrip('.')} (default {default})",
        )
    parser.add_argument("--json", dest="json_path", help="also write the summary to this file")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo from the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from rich.console import Console

    from .report import render_summary

    console = Console()
    sizes = {
        k: getattr(args, k)
        for k in ("users", "days", "requests", "distinct_users", "backfill_events")
        if getattr(args, k) is not None
    }
    console.print(f"[bold]prefect-memory demo[/] - profile [cyan]{args.profile}[/]")
    try:
        summary = run_demo(args.profile, workdir=args.workdir, sizes=sizes,
                           prefect_api=args.prefect_api, verbose=args.verbose,
                           console=None if args.quiet else console)  # fmt: skip
    except RuntimeError as err:
        console.print(f"[red]demo failed:[/] {err}")
        return 1
    render_summary(summary, console, wall=summary["wall_seconds"])
    console.print(f"Prefect: {summary['prefect_api']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

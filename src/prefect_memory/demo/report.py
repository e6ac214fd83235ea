"""Showing the demo: timed steps with rich progress bars, and the final summary.

The pipeline reports through :func:`reporter`; by default that is a silent one that only
times the steps, so importing and running the flow elsewhere (``examples/ml_pipeline.py``,
a deployment) prints nothing of its own.

Example:
    >>> quiet = Reporter(console=None)
    >>> timings = {}
    >>> with quiet.step("work", timings) as advance:
    ...     advance(1)
    >>> list(timings)
    ['work']
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

Advance = Callable[[int], None]


def _noop(_n: int) -> None:
    return None


class Reporter:
    """Times steps; with a console, a line per step (and, in a terminal, a progress bar).

    Args:
        console: Where to show progress (``None``: silent, timings only).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: Any = None

    @contextlib.contextmanager
    def step(self, title: str, timings: dict[str, float]) -> Iterator[Advance]:
        """Time ``title`` into ``timings``; yield ``advance(n)`` for its progress bar."""
        started = time.perf_counter()
        if self.console is None or not self.console.is_terminal:  # no live display
            try:
                yield _noop
            finally:
                seconds = time.perf_counter() - started
                timings[title] = round(seconds, 3)
            if self.console is not None:
                self.console.print(f"- {title} ({seconds:.1f} s)")
            return
        progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True,
        )  # fmt: skip
        task = progress.add_task(title, total=None)
        self._progress, self._task = progress, task
        ok = False
        with progress:
            try:
                yield lambda n: progress.advance(task, n)
                ok = True
            finally:
                self._progress = None
                seconds = time.perf_counter() - started
                timings[title] = round(seconds, 3)
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self.console.print(f"{mark} {title} [dim]({seconds:.1f} s)[/]")

    def advancer(self) -> Advance:
        """``advance(n)`` of the current step's progress bar (a no-op when silent)."""
        progress, task = self._progress, self._task
        if progress is None:
            return _noop
        return lambda n: progress.advance(task, n)

    def total(self, n: int) -> None:
        """Set the total of the current step's progress bar (it is a spinner until then)."""
        if self._progress is not None:
            self._progress.update(self._task, total=n)


_CURRENT = Reporter()


def reporter() -> Reporter:
    """The reporter the pipeline uses (silent unless the demo command set one)."""
    return _CURRENT


@contextlib.contextmanager
def reporting(new: Reporter) -> Iterator[Reporter]:
    """Use ``new`` as the pipeline's reporter inside the block."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, new
    try:
        yield new
    finally:
        _CURRENT = previous


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value)


def _table(title: str, text: list[str], numbers: list[str]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  pad_edge=False, header_style="dim")  # fmt: skip
    for column in text:
        table.add_column(column)
    for column in numbers:
        table.add_column(column, justify="right")
    return table


def render_summary(summary: dict[str, Any], console: Console, *, wall: float | None = None) -> None:
    """Print the demo's summary: what each step did, entries per tier, time per step."""
    cache, archive = summary["cache"], summary["archive"]
    facts = Table(box=None, show_header=False, pad_edge=False)
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row(
        "prediction cache",
        f"{cache['hits']}/{cache['requests']} requests answered from the cache "
        f"({cache['hit_rate']:.0%}); {cache['stored_results']} results in "
        f"{cache['storage']}, ttl {cache['ttl_seconds']:.0f} s",
    )
    facts.add_row(
        "archive",
        f"{archive['files']} Parquet file(s) ({archive['files_before_compaction']} before "
        f"compaction), {archive['rows']:,} rows",
    )
    for section in ("features", "models", "events", "downsampling", "migration"):
        for key, value in summary[section].items():
            facts.add_row(f"{section}: {key}", _fmt(value))
    for note in summary.get("notes", []):
        facts.add_row("note", note)
    console.print(Panel(facts, title=f"prefect-memory demo: {summary['profile']} profile",
                        title_align="left"))  # fmt: skip
    first = next(iter(summary["tiers"].values()))
    tiers = _table("Entries per tier", ["tier", "store"], list(first["history"]))
    for name, row in summary["tiers"].items():
        tiers.add_row(name, row["store"], *(f"{n:,}" for n in row["history"].values()))
    console.print(tiers)
    steps = _table("Time per step", ["step"], ["seconds"])
    setup = summary.get("setup", {})
    for name, seconds in setup.get("before", {}).items():
        steps.add_row(f"[dim]{name}[/]", f"[dim]{seconds:.2f}[/]")
    for name, seconds in summary["steps"].items():
        steps.add_row(name, f"{seconds:.2f}")
    for name, seconds in setup.get("after", {}).items():
        steps.add_row(f"[dim]{name}[/]", f"[dim]{seconds:.2f}[/]")
    if wall is not None:
        steps.add_row("[bold]wall time, start to end[/]", f"[bold]{wall:.2f}[/]")
    console.print(steps)

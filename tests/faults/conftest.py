"""Fault tests: private servers killed, stopped and stalled; counts reported at the end.

Each test gets a :class:`~faults.ledger.Ledger` (``ledger`` fixture). Its summary is
printed when the test ends (visible with ``-s``), collected into a table printed in the
terminal summary of every run (visible without ``-s``), and written as JSON to
``$PREFECT_MEMORY_FAULTS_REPORT`` or ``<tmp>/prefect-memory-faults.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faults.ledger import Ledger

_RESULTS = pytest.StashKey[list[dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: kills, stops or stalls real servers")
    config.stash[_RESULTS] = []


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    book = Ledger(request.node.name)
    yield book
    print("\n[faults] " + book.line())
    request.config.stash[_RESULTS].append(book.summary())


def _report_path() -> Path:
    env = os.environ.get("PREFECT_MEMORY_FAULTS_REPORT")
    return Path(env) if env else Path(tempfile.gettempdir()) / "prefect-memory-faults.json"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    tr = terminalreporter
    tr.section("prefect-memory fault tests")
    totals = {"operations": 0, "acknowledged": 0, "faults": 0, "lost": 0, "stale_reads": 0}
    for row in results:
        for name in totals:
            totals[name] += row[name]
        tr.write_line(
            f"{row['test']:<58} ops={row['operations']:>5} acked={row['acknowledged']:>5} "
            f"faults={row['faults']:>2} lost={row['lost']} stale={row['stale_reads']} "
            f"dup={row['duplicated']} max_op={row['max_op_seconds']:.2f}s {row['seconds']:.1f}s"
        )
    tr.write_line(
        f"TOTAL: {len(results)} tests, {totals['operations']} operations, "
        f"{totals['acknowledged']} acknowledged, {totals['faults']} faults injected, "
        f"{totals['lost']} entries lost, {totals['stale_reads']} stale reads"
    )
    path = _report_path()
    try:
        path.write_text(json.dumps({"tests": results, "totals": totals}, indent=1))
        tr.write_line(f"report: {path}")
    except OSError as err:
        tr.write_line(f"report not written ({err})")

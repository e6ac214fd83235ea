"""Opening memories for a test and cleaning them up afterwards (shared by the store tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import prefect_memory as pm


@contextlib.contextmanager
def memory_opener(url: str, prefix: str) -> Iterator[Callable[..., pm.Memory]]:
    """Open memories on ``url`` with keys under ``prefix``; each is cleared and closed at
    the end (a store that is gone by then is only closed)."""
    opened: list[pm.Memory] = []

    def _open(namespace: str = "ns", **options: Any) -> pm.Memory:
        options.setdefault("key_prefix", prefix)
        mem = pm.open_memory(url, namespace=namespace, **options)
        opened.append(mem)
        return mem

    try:
        yield _open
    finally:
        for mem in opened:
            with contextlib.suppress(Exception):
                mem.clear()
            mem.close()

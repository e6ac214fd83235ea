"""Pausing Python's cyclic garbage collector around batch work.

A batch (a migration's thousands of rows, a column of decoded values) allocates many
container objects at once, none of them in a reference cycle: reference counting frees
them all. Left on, the collector runs again and again while such a batch is alive and
scans every live object each time (a migration of 100k entries SQLite -> Parquet spent
a fifth of its time in it). A migration pauses it while it moves a tier's batches
(collecting the young generation once a second, for other threads' cycles); it runs
again afterwards, as usual.

Example:
    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0  # blocks in progress, in every thread
_resume = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block; the last block to end (of every
    thread: their blocks may overlap) switches it back on, if it was on before the first.

    A collector the application switched off stays off.
    """
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()

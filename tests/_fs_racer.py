"""What one racing process of ``test_fs_conditional.py`` runs (started with ``spawn``).

Each process opens its OWN :class:`FsspecBackend` on the same store, puts ``("ready", n)``
on the queue, waits for the common ``go`` event (so that all processes overlap) and plays
its role, then puts ``("done", n, keys)`` (or ``("error", n, traceback)``):

- ``put_absent``: ``put_absent_many`` of every key with the value ``b"w<n>"``, in batches
  taken in an order of its own; reports the keys it was told it wrote.
- ``delete``: ``delete_if_unchanged`` of every key with the token given; reports the keys
  it was told it deleted.
- ``overwrite``: ``put_many`` of every key with the value ``b"new"``; reports the keys.
"""

from __future__ import annotations

import random
import time
import traceback
from typing import Any


def race(
    role: str,
    n: int,
    url: str,
    options: dict[str, Any],
    ns: str,
    keys: list[str],
    tokens: dict[str, tuple[int, float]] | None,
    ready: Any,
    go: Any,
) -> None:
    from prefect_memory.plugins.base import Record
    from prefect_memory.plugins.fs import FsspecBackend

    try:
        backend = FsspecBackend.from_url(url, **options)
        backend.fs  # connect before the start line  # noqa: B018
        order = list(keys)
        random.Random(n).shuffle(order)
        batches = [order[i : i + 10] for i in range(0, len(order), 10)]
        ready.put(("ready", n, None))
        if not go.wait(120):
            raise TimeoutError("no go")
        done: set[str] = set()
        for batch in batches:
            now = time.time()
            if role == "put_absent":
                record = Record(f"w{n}".encode(), now, now, now)
                done |= backend.put_absent_many(ns, dict.fromkeys(batch, record), now=now)
            elif role == "delete":
                assert tokens is not None
                done |= backend.delete_if_unchanged(ns, {k: tokens[k] for k in batch}, now=now)
            elif role == "overwrite":
                backend.put_many(ns, dict.fromkeys(batch, Record(b"new", now, now, now)), now=now)
                done |= set(batch)
            else:
                raise ValueError(role)
        ready.put(("done", n, sorted(done)))
    except BaseException:
        ready.put(("error", n, traceback.format_exc()))

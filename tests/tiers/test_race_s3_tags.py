"""A key moving into S3 stays in a tag index at every moment (``invalidate_tags`` finds it).

On S3 an entry and its tag markers are separate objects: ``put_absent_many`` creates the
entry, then writes its markers. Two migrations of the same entry: the first creates the
copy and stalls before its markers; the second finds that very copy in S3 ("placed") and
commits, deleting the source from the hot tier. Until the first wrote its markers, the key
was in no tag index: an ``invalidate_tags`` then missed it, and the deleted key lived on
(``test_writer_during_moves[redis_to_s3]``, under load).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from prefect_memory.plugins.base import Record
from prefect_memory.plugins.fs import FsspecBackend
from prefect_memory.plugins.inprocess import InProcessBackend
from prefect_memory.tiers import Tier
from prefect_memory.tiers.moves import move
from prefect_memory.tiers.tiered import TieredBackend

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]
NS = "tags"


def test_second_mover_of_an_entry_into_s3_keeps_it_tagged(s3_server: Any) -> None:
    bucket = s3_server.make_bucket("pm-race-tags")
    url = f"s3://{bucket}/{uuid.uuid4().hex[:10]}"
    first = FsspecBackend(url, storage_options=s3_server.storage_options)
    second = FsspecBackend(url, storage_options=s3_server.storage_options)
    hot = InProcessBackend()
    now = 1_000.0
    hot.put_many(NS, {"k": Record(b"v", now, now, now, tags=("t",))}, now=now)
    read = hot.get_many(NS, ["k"], now=now)

    stalled, resume = threading.Event(), threading.Event()
    write = first._write

    def slow_markers(blobs: dict[str, bytes]) -> None:  # the first mover stalls here
        if any("/t/" in path for path in blobs):
            stalled.set()
            assert resume.wait(60)
        write(blobs)

    first._write = slow_markers  # type: ignore[method-assign]
    outcome: dict[str, Any] = {}
    mover = threading.Thread(target=lambda: outcome.update(m=move(hot, first, NS, read, now=now)))
    mover.start()
    try:
        assert stalled.wait(60), "the first mover never reached its markers"
        second_outcome = move(hot, second, NS, read, now=now)
        assert second_outcome.moved == {"k"}  # the source is gone from hot
        tiers = TieredBackend([Tier("hot", hot), Tier("warm", second)])
        assert tiers.tagged(NS, ["t"], now=now) == {"k"}  # found while the first still stalls
    finally:
        resume.set()
        mover.join(30)
    assert outcome["m"].moved == set()
    assert tiers.tagged(NS, ["t"], now=now) == {"k"}
    assert set(second.scan(NS, None, now=now)) == {"k"}

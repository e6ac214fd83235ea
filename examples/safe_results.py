"""Task results in a memory block that a stranger with write access cannot turn into code.

Prefect deserializes a stored result with the serializer named *inside* the stored record
(pickle by default), so whoever can write the store can run code in every flow that reads
it. This example stores results the safe way and shows what it stops:

1. a signing key in a Prefect ``Secret`` block, and a ``SqliteMemory`` block whose
   ``result_signing_key`` comes from it;
2. a task and a flow with ``result_serializer="json"`` and the block as ``result_storage``:
   the first run computes, the second is a cache hit read back through the signature;
3. "another client" overwrites the stored record with a pickle payload that would create a
   marker file when unpickled: the block refuses it (``ResultSignatureError``) before
   Prefect deserializes it, the next run recomputes, and the marker file never appears.

Run it (a temporary Prefect API is started with ``prefect_test_harness``)::

    python examples/safe_results.py
    python examples/safe_results.py --sqlite /tmp/results.db --prefect-api current

``main(...)`` returns a summary dict; ``tests/examples/test_safe_results.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from prefect import flow, task
from prefect.blocks.system import Secret
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.results import ResultStore
from prefect.serializers import PickleSerializer
from prefect.states import State

from prefect_memory.blocks import SqliteMemory
from prefect_memory.blocks.results import SIGNED_HEADER, ResultSignatureError


class ForeignPayload:
    """What a hostile writer stores: unpickling it creates ``marker`` (it could do anything)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def foreign_record(key: str, marker: pathlib.Path) -> bytes:
    """A Prefect result record as another client would write it, naming pickle."""
    metadata = {"storage_key": key, "expiration": None, "serializer": {"type": "pickle"}}
    result = PickleSerializer().dumps(ForeignPayload(marker)).decode()
    return json.dumps({"metadata": metadata, "result": result}).encode()


@contextlib.contextmanager
def _prefect_api(mode: Literal["harness", "current"]) -> Iterator[None]:
    if mode == "current":  # PREFECT_API_URL (or the caller's harness) is already set
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def build_pipeline(block: SqliteMemory, calls: list[str]) -> Any:
    """A flow whose task result is cached in ``block``, both serialized as JSON."""

    @task(
        cache_policy=INPUTS + TASK_SOURCE,
        result_storage=block,
        result_serializer="json",
        persist_result=True,
    )
    def score(day: str) -> dict[str, Any]:
        calls.append(day)
        return {"day": day, "score": len(day) * 7}

    @flow(result_serializer="json")
    def daily(day: str) -> State:
        return score(day, return_state=True)

    return daily


def main(
    sqlite_path: str | None = None,
    *,
    prefect_api: Literal["harness", "current"] = "harness",
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the three steps above; return what happened.

    Args:
        sqlite_path: The SQLite file of the results (default: a new temporary folder).
        prefect_api: ``"harness"`` starts a temporary Prefect API; ``"current"`` uses the
            configured one.
        verbose: Print each step.

    Returns:
        ``{"runs": [...state names], "calls": n, "stored_as": ..., "refused": ...,
        "marker_created": bool}``.
    """
    say = print if verbose else (lambda *_: None)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="safe-results-"))
    marker = folder / "code-ran-in-the-reader"
    suffix = uuid.uuid4().hex[:8]
    with _prefect_api(prefect_api):
        # 1. the key lives in a Secret block; the memory block signs with it
        Secret(value=secrets.token_urlsafe(32)).save(f"results-key-{suffix}", overwrite=True)
        SqliteMemory(
            path=sqlite_path or str(folder / "results.db"),
            namespace="results",
            result_signing_key=Secret.load(f"results-key-{suffix}"),
        ).save(f"safe-results-{suffix}", overwrite=True)
        block = SqliteMemory.load(f"safe-results-{suffix}")

        # 2. computed once, then read back (signature checked) as a cache hit
        calls: list[str] = []
        daily = build_pipeline(block, calls)
        runs = [daily("2024-06-01").name, daily("2024-06-01").name]
        [stored] = block.list_results()
        raw = block.memory.get(stored.key)  # the bytes as stored, below the block's check
        record = json.loads(raw[len(SIGNED_HEADER) + 32 :])
        say(f"runs: {runs}; stored {stored.key}: signed, serializer {record['metadata']}")

        # 3. another client (no key) overwrites the record with a pickle payload
        other_client = block.model_copy(update={"result_signing_key": None})
        other_client.memory.set(stored.key, foreign_record(stored.key, marker))
        try:
            ResultStore(result_storage=block).read(stored.key)
            refused = None
        except ResultSignatureError as err:
            refused = type(err).__name__
            say(f"refused: {err}")
        runs.append(daily("2024-06-01").name)  # a refused lookup is a miss: recomputed
        runs.append(daily("2024-06-01").name)  # and signed again: a hit
        say(f"runs: {runs}; marker file created: {marker.exists()}")

    return {
        "runs": runs,
        "calls": len(calls),
        "stored_as": {
            "signed": raw.startswith(SIGNED_HEADER),
            "serializer": record["metadata"]["serializer"]["type"],
        },
        "refused": refused,
        "marker_created": marker.exists(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", help="SQLite file of the results (default: a temp folder)")
    parser.add_argument("--prefect-api", choices=["harness", "current"], default="harness")
    args = parser.parse_args()
    main(args.sqlite, prefect_api=args.prefect_api)
